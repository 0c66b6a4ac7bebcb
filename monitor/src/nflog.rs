//! Egress denials as monitor events: the NFLOG messages of each container's egress ruleset.
//!
//! `ociguard create` installs the table `inet ociguard` in the container's own network
//! namespace; its last rule before the reject logs every denied packet to NFLOG group G
//! (`egress.nflog_group` of config.toml) with the prefix [`LOG_PREFIX`]. NFLOG, like every
//! netfilter facility, is per network namespace: a listener in the node's namespace hears nothing
//! of a container's. So for every live container whose record carries an egress ruleset
//! (profile `egress`), the binder thread opens `/proc/<pid>/ns/net` (and then checks the pid's
//! start time against the record, so a reused pid is never followed into someone else's
//! namespace), enters it with `setns(2)` — which moves only the calling thread — opens a
//! `NETLINK_NETFILTER` socket there, binds group G, and returns at once to the monitor's own
//! namespace through an fd kept for that. A socket stays in the namespace it was created in for
//! its whole life, so the reader thread can epoll all of them from the node's namespace.
//!
//! One socket per namespace: the kernel allows one listener per group and namespace, and the
//! containers of a pod share theirs; a denial there is attributed to the most recently created
//! live container of the namespace, and the event says so. The socket is closed when the last of
//! them exits or is deregistered.
//!
//! Bounded, and never durable: events go only to the in-memory [`Hub`] (no journal line, no
//! fsync per packet); at most [`RATE_PER_SEC`] events per container and [`GLOBAL_RATE_PER_SEC`]
//! in all per second, the rest counted into one "N more denied" summary; the kernel copies only
//! the first [`COPY_RANGE`] bytes of a packet; socket buffers are capped, and what the kernel
//! drops when they are full is logged. A malformed message is counted and skipped, never a panic.
//!
//! It must never attribute a packet by a pid alone, leave a thread in a container's namespace
//! (binding stops for good if the way back fails), or change anything in a container's
//! namespace: it only listens.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla, Timeout, ULogMessage,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use ociguard_policy::egress::{LOG_PREFIX, OBSERVE_PREFIX};
use ociguard_policy::Mode;

use crate::events::Hub;
use crate::procfs::ProcView;
use crate::profiles::Profiles;
use crate::protocol::{Event, EventKind};
use crate::record::{Identity, Key, Status, Timestamp};
use crate::stats::{policy_label, Count, Overflow};
use crate::store::Store;

/// NFLOG group when neither config.toml nor `--nflog-group` says otherwise.
pub const DEFAULT_GROUP: u16 = 100;
/// Bytes of each denied packet the kernel copies to us: an IPv4 header with options or an IPv6
/// header with a few extension headers, plus the start of the TCP/UDP/ICMP header.
pub const COPY_RANGE: u32 = 128;
/// Events per container per second; the rest are summed up in one summary event.
pub const RATE_PER_SEC: u32 = 10;
/// Events per second for all containers together (a node-wide flood stays a trickle of events).
pub const GLOBAL_RATE_PER_SEC: u32 = 500;
/// The record's profile that carries the egress ruleset digest.
pub const EGRESS_PROFILE: &str = "egress";

/// Receive buffer per socket (the kernel caps it at `net.core.rmem_max`); what does not fit is
/// dropped by the kernel and reported to us as `ENOBUFS`.
const RCVBUF: usize = 256 * 1024;
/// The kernel batches log messages until this many are queued...
const QUEUE_THRESHOLD: u32 = 16;
/// ...or this many hundredths of a second passed: an isolated denial arrives within 100 ms.
const FLUSH_TIMEOUT: u32 = 10;
/// Size of the kernel's batch buffer per group.
const KERNEL_BUFFER: u32 = 16 * 1024;
/// How long the bind handshake may wait for the kernel's answer.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Full comparison of records and sockets (events trigger one sooner for the records they name).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// A departed container's socket is read for this long after it exits before it is closed:
/// the kernel flushes what it batched within [`FLUSH_TIMEOUT`] (our socket keeps the namespace
/// alive meanwhile), so a container that lived 5 ms still has its denials reported.
const CLOSE_GRACE: Duration = Duration::from_millis(300);
/// How long a registration waits for its container's namespace to be watched (the hook's
/// answer, and so the container's start, waits with it).
pub const WATCH_WAIT: Duration = Duration::from_secs(1);
/// The reader wakes at least this often to publish summaries whose window ended.
const TICK: Duration = Duration::from_millis(250);
/// Datagrams read from one socket before the others get their turn.
const DATAGRAMS_PER_TURN: usize = 64;
/// Kernel overflow warnings per namespace at most this often.
const LOST_LOG_INTERVAL: Duration = Duration::from_secs(10);

const NLMSG_HDRLEN: usize = 16;
/// `nlmsg_type` of an NFLOG packet: `NFNL_SUBSYS_ULOG << 8 | NFULNL_MSG_PACKET`.
const NFLOG_PACKET: u16 = (libc::NFNL_SUBSYS_ULOG as u16) << 8 | libc::NFULNL_MSG_PACKET as u16;
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;

#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("netlink socket: {step}: {source}")]
    Socket { step: &'static str, source: Errno },
    /// The kernel allows one listener per group and namespace: another socket has it (`EPERM`;
    /// `EBUSY` when it is this one). The monitor shares its own socket among the containers of
    /// a namespace, so this is somebody else's (or a root without `CAP_NET_ADMIN` there).
    #[error(
        "NFLOG group {group} already has another listener in this network namespace ({source})"
    )]
    Busy { group: u16, source: Errno },
    #[error("bind NFLOG group {group}: kernel refused: {source}")]
    Config { group: u16, source: Errno },
    #[error("bind NFLOG group {group}: no answer from the kernel within {ACK_TIMEOUT:?}")]
    NoAnswer { group: u16 },
    #[error("enter network namespace: {0}")]
    EnterNetns(Errno),
    #[error("return to the monitor's network namespace: {0}")]
    RestoreNetns(Errno),
    #[error("open {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("pid {pid} is no longer the container's process ({why})")]
    Process { pid: u32, why: String },
    #[error("pid {pid} shares the monitor's network namespace: nothing to listen to")]
    HostNetns { pid: u32 },
    #[error("epoll: {0}")]
    Epoll(Errno),
    #[error("no namespace is entered any more (returning from one failed earlier)")]
    Stopped,
}

// ---------------------------------------------------------------------------------------------
// What the kernel sends: NFLOG packet messages, and the IP + L4 headers they carry.

/// One denied packet, as far as its first [`COPY_RANGE`] bytes tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub dst: IpAddr,
    /// IP protocol number (after IPv6 extension headers).
    pub protocol: u8,
    /// TCP/UDP/SCTP/UDP-Lite destination port, when the header was there (not for a later
    /// fragment, nor a truncated copy).
    pub port: Option<u16>,
    /// ICMP/ICMPv6 type and code.
    pub icmp: Option<(u8, u8)>,
    /// The sending socket's file owner (fsuid), as the host sees it, when the packet had one.
    pub uid: Option<u32>,
}

fn protocol_name(p: u8) -> Option<&'static str> {
    Some(match p {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => return None,
    })
}

impl fmt::Display for Denial {
    /// `tcp 198.18.1.2:4444 uid 0`, `udp [2001:db8::1]:53`, `icmp 198.18.1.2 type 8 code 0`,
    /// `proto 47 198.18.1.2`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match protocol_name(self.protocol) {
            Some(name) => f.write_str(name)?,
            None => write!(f, "proto {}", self.protocol)?,
        }
        match (self.port, self.dst) {
            (Some(p), IpAddr::V4(a)) => write!(f, " {a}:{p}")?,
            (Some(p), IpAddr::V6(a)) => write!(f, " [{a}]:{p}")?,
            (None, a) => write!(f, " {a}")?,
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " type {t} code {c}")?;
        }
        if let Some(uid) = self.uid {
            write!(f, " uid {uid}")?;
        }
        Ok(())
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The destination and transport of an IPv4 or IPv6 packet (its version nibble decides).
/// `None` when not even the IP header is there.
pub fn decode_ip(p: &[u8]) -> Option<Denial> {
    let (dst, protocol, l4) = match p.first()? >> 4 {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let dst: [u8; 4] = p.get(16..20)?.try_into().ok()?;
            if ihl < 20 {
                return None;
            }
            // A fragment other than the first carries no transport header.
            let first_fragment = be16(p, 6)? & 0x1fff == 0;
            let l4 = if first_fragment { p.get(ihl..) } else { None };
            (IpAddr::V4(Ipv4Addr::from(dst)), *p.get(9)?, l4)
        }
        6 => {
            let dst: [u8; 16] = p.get(24..40)?.try_into().ok()?;
            let mut next = *p.get(6)?;
            let mut at = 40;
            let mut l4 = None;
            // Skip extension headers (bounded: a copy of 128 bytes holds few of them).
            for _ in 0..8 {
                match next {
                    // hop-by-hop, routing, destination options: length in 8-octet units
                    0 | 43 | 60 => {
                        next = *p.get(at)?;
                        at += (usize::from(*p.get(at + 1)?) + 1) * 8;
                    }
                    // fragment: fixed 8 bytes; only the first fragment has the L4 header
                    44 => {
                        let offset = be16(p, at + 2)? >> 3;
                        next = *p.get(at)?;
                        at += 8;
                        if offset != 0 {
                            break;
                        }
                    }
                    // authentication header: length in 4-octet units, minus 2
                    51 => {
                        next = *p.get(at)?;
                        at += (usize::from(*p.get(at + 1)?) + 2) * 4;
                    }
                    _ => {
                        l4 = p.get(at..);
                        break;
                    }
                }
            }
            (IpAddr::V6(Ipv6Addr::from(dst)), next, l4)
        }
        _ => return None,
    };
    let l4 = l4.unwrap_or_default();
    let (port, icmp) = match protocol {
        6 | 17 | 132 | 136 => (be16(l4, 2), None),
        1 | 58 => (
            None,
            l4.get(0..2).and_then(|b| Some((*b.first()?, *b.get(1)?))),
        ),
        _ => (None, None),
    };
    Some(Denial {
        dst,
        protocol,
        port,
        icmp,
        uid: None,
    })
}

/// What one datagram from an NFLOG socket held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Packets logged with [`LOG_PREFIX`].
    pub denials: Vec<Denial>,
    /// First packets of new connections, logged with [`OBSERVE_PREFIX`] (for profiles).
    pub observed: Vec<Denial>,
    /// Packets some other rule logged to the same group (ignored).
    pub foreign: usize,
    /// Messages that could not be decoded (skipped).
    pub malformed: usize,
    /// `NLMSG_ERROR` answers: 0 is an acknowledgement, else a negative errno.
    pub answers: Vec<i32>,
}

/// Decode every netlink message in `buf`; never panics, whatever the bytes.
pub fn parse_datagram(buf: &[u8]) -> Datagram {
    let mut d = Datagram::default();
    let mut at = 0;
    while at < buf.len() {
        let Some(len) = buf
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
        else {
            d.malformed += 1;
            break;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > buf.len() - at {
            d.malformed += 1;
            break;
        }
        // Only NFLOG packets and netlink answers are ours to decode. netlink-packet-netfilter
        // also parses other subsystems' messages (nftables), and panics on some malformed ones
        // (an attribute shorter than its header); a socket bound to an NFLOG group carries
        // none, so they are skipped unparsed.
        let kind = buf
            .get(at + 4..at + 6)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_ne_bytes);
        if !matches!(kind, Some(NFLOG_PACKET | NLMSG_ERROR)) {
            at = at.saturating_add((len + 3) & !3);
            continue;
        }
        match NetlinkMessage::<NetfilterMessage>::deserialize(&buf[at..at + len]) {
            Ok(msg) => classify(msg.payload, &mut d),
            Err(e) => {
                log::debug!("nflog: undecodable message: {e}");
                d.malformed += 1;
            }
        }
        // NLMSG_ALIGN
        at = at.saturating_add((len + 3) & !3);
    }
    d
}

fn classify(payload: NetlinkPayload<NetfilterMessage>, d: &mut Datagram) {
    match payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
            ..
        }) => packet(&nlas, d),
        NetlinkPayload::Error(e) => d.answers.push(e.raw_code()),
        _ => {}
    }
}

fn packet(nlas: &[PacketNla], d: &mut Datagram) {
    let mut ours = None;
    let mut payload = None;
    let mut uid = None;
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => {
                let p = p.to_bytes();
                ours = if p == LOG_PREFIX.as_bytes() {
                    Some(false)
                } else if p == OBSERVE_PREFIX.as_bytes() {
                    Some(true)
                } else {
                    None
                };
            }
            PacketNla::Payload(p) => payload = Some(p.as_slice()),
            PacketNla::Uid(u) => uid = Some(*u),
            _ => {}
        }
    }
    let Some(observed) = ours else {
        d.foreign += 1;
        return;
    };
    match payload.and_then(decode_ip) {
        Some(p) if observed => d.observed.push(Denial { uid, ..p }),
        Some(denial) => d.denials.push(Denial { uid, ..denial }),
        None => d.malformed += 1,
    }
}

// ---------------------------------------------------------------------------------------------
// The sockets.

/// Open a `NETLINK_NETFILTER` socket in the calling thread's network namespace and bind NFLOG
/// group `group` to it, copying the first [`COPY_RANGE`] bytes of each packet. Since Linux 3.17
/// no per-family `PF_BIND` is needed first.
pub fn bind_group(group: u16) -> Result<OwnedFd, NflogError> {
    let step = |step| move |source| NflogError::Socket { step, source };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
    .map_err(step("socket"))?;
    // Best effort: the kernel may cap it; the buffer is bounded either way.
    let _ = setsockopt(&fd, sockopt::RcvBuf, &RCVBUF);
    let timeout = TimeVal::new(
        ACK_TIMEOUT.as_secs().try_into().unwrap_or(2),
        ACK_TIMEOUT.subsec_micros().into(),
    );
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout).map_err(step("SO_RCVTIMEO"))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(step("bind"))?;

    // An `inet` table logs IPv4 and IPv6 packets alike: the family is not what binds.
    let req = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(COPY_RANGE).into(),
            ConfigNla::QThresh(QUEUE_THRESHOLD),
            Timeout::new(FLUSH_TIMEOUT).into(),
            ConfigNla::NlBufSiz(KERNEL_BUFFER),
        ],
    );
    let mut out = vec![0u8; req.buffer_len()];
    req.serialize(&mut out);
    send(fd.as_raw_fd(), &out, MsgFlags::empty()).map_err(step("send"))?;

    // The acknowledgement. Log messages that came first (the group is live as soon as the
    // kernel processed the request) are dropped: a few microseconds' worth at most.
    let mut buf = vec![0u8; 16 * 1024];
    for _ in 0..16 {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Err(NflogError::NoAnswer { group }),
            Err(e) => {
                return Err(NflogError::Socket {
                    step: "recv",
                    source: e,
                })
            }
        };
        match parse_datagram(&buf[..n]).answers.first() {
            None => continue,
            Some(0) => return Ok(fd),
            Some(&code) if matches!(Errno::from_raw(-code), Errno::EBUSY | Errno::EPERM) => {
                return Err(NflogError::Busy {
                    group,
                    source: Errno::from_raw(-code),
                })
            }
            Some(&code) => {
                return Err(NflogError::Config {
                    group,
                    source: Errno::from_raw(-code),
                })
            }
        }
    }
    Err(NflogError::NoAnswer { group })
}

/// [`bind_group`] inside the network namespace `netns`; the calling thread returns to `home`
/// before this returns. `RestoreNetns` means it could not: the thread must bind nothing more.
pub fn bind_in_netns(netns: impl AsFd, home: impl AsFd, group: u16) -> Result<OwnedFd, NflogError> {
    setns(netns, CloneFlags::CLONE_NEWNET).map_err(NflogError::EnterNetns)?;
    let bound = bind_group(group);
    setns(home, CloneFlags::CLONE_NEWNET).map_err(NflogError::RestoreNetns)?;
    bound
}

/// `/proc/<pid>/ns/net` of the process `(pid, start_time)` and its inode. The start time is
/// checked *after* the open: if the process is still the same then, it was at the open too.
fn open_netns(proc: &dyn ProcView, pid: u32, start_time: u64) -> Result<(File, u64), NflogError> {
    let path = format!("/proc/{pid}/ns/net");
    let open = |source| NflogError::Open {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(open)?;
    let inode = file.metadata().map_err(open)?.ino();
    match proc.stat(pid) {
        Some(s) if s.start_time == start_time && !s.exited => Ok((file, inode)),
        Some(s) if s.exited => Err(NflogError::Process {
            pid,
            why: "exited".into(),
        }),
        Some(_) => Err(NflogError::Process {
            pid,
            why: "start time differs: the pid was reused".into(),
        }),
        None => Err(NflogError::Process {
            pid,
            why: "gone".into(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limiting.

/// A one-second window allowing `limit` events.
#[derive(Debug, Clone)]
pub struct Window {
    limit: u32,
    start: Option<Instant>,
    used: u32,
}

impl Window {
    pub fn new(limit: u32) -> Window {
        Window {
            limit,
            start: None,
            used: 0,
        }
    }

    fn ended(&self, now: Instant) -> bool {
        self.start.map_or(true, |s| {
            now.saturating_duration_since(s) >= Duration::from_secs(1)
        })
    }

    /// Take one slot at `now`, if there is one left.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.ended(now) {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

/// One container's denials: what may be published now, what is owed as a summary.
#[derive(Debug, Clone)]
pub struct Limiter {
    window: Window,
    suppressed: u64,
    total: u64,
}

/// What to do with a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Publish a summary of this many suppressed denials first.
    pub summary: Option<u64>,
    /// Publish this denial.
    pub publish: bool,
}

impl Limiter {
    pub fn new(per_sec: u32) -> Limiter {
        Limiter {
            window: Window::new(per_sec),
            suppressed: 0,
            total: 0,
        }
    }

    /// Denials counted since the container was watched.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A denial at `now`; `global` is the node-wide window.
    pub fn admit(&mut self, now: Instant, global: &mut Window) -> Admit {
        self.total += 1;
        let summary = self.due(now);
        let publish = self.window.take(now) && global.take(now);
        if !publish {
            self.suppressed += 1;
        }
        Admit { summary, publish }
    }

    /// The suppressed count, once the window they fell in has ended.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        (self.suppressed > 0 && self.window.ended(now))
            .then(|| std::mem::take(&mut self.suppressed))
    }

    /// The suppressed count now (the container is going away).
    fn drain(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }
}

fn summary_text(n: u64, total: u64) -> String {
    format!("{n} more denied, not shown (limit {RATE_PER_SEC}/s); {total} in total")
}

// ---------------------------------------------------------------------------------------------
// Which container a socket speaks for.

/// A container attached to a namespace's socket.
#[derive(Debug)]
struct Member {
    key: Key,
    process: (u32, u64),
    created: Option<Timestamp>,
    /// The record when attached: published with the event if the store lost it since.
    rec: Identity,
    limiter: Limiter,
    /// Exited or deregistered: read until then, then removed.
    leaving: Option<Instant>,
}

/// One network namespace's socket and the containers in it.
#[derive(Debug)]
struct Watch {
    sock: OwnedFd,
    members: Vec<Member>,
    lost: u64,
    lost_logged: Option<Instant>,
    malformed_logged: bool,
}

impl Watch {
    /// The container a denial in this namespace is attributed to: the most recently created.
    fn newest(&mut self) -> Option<&mut Member> {
        self.members
            .iter_mut()
            .max_by(|a, b| (a.created, &a.key).cmp(&(b.created, &b.key)))
    }

    fn ids(&self) -> String {
        let ids: Vec<&str> = self.members.iter().map(|m| m.key.id.as_str()).collect();
        ids.join(", ")
    }
}

/// The process whose namespace to watch for `rec`, if it should be watched. Pure: a live record
/// with an egress ruleset, a process named by pid *and* start time, from this boot, not (as
/// recorded) in the monitor's own namespace.
fn target(rec: &Identity, home_netns: u64, boot_id: Option<&str>) -> Option<(u32, u64)> {
    if !matches!(rec.status, Status::Created | Status::Running)
        || !rec.profiles.contains_key(EGRESS_PROFILE)
        || rec.namespaces.net == Some(home_netns)
    {
        return None;
    }
    if let (Some(rec_boot), Some(boot)) = (rec.boot_id.as_deref(), boot_id) {
        if rec_boot != boot {
            return None;
        }
    }
    rec.process()
}

/// The events the binder acts on: lifecycle changes of containers with an egress ruleset
/// (others it would only look up and skip; the periodic sweep covers anything missed).
fn lifecycle_of_egress(kind: EventKind, rec: &Identity) -> bool {
    kind != EventKind::EgressDenied && rec.profiles.contains_key(EGRESS_PROFILE)
}

/// An event to publish once no lock of this module is held.
#[derive(Debug)]
struct Outgoing {
    key: Key,
    fallback: Identity,
    detail: String,
}

fn lock(w: &Mutex<Watches>) -> MutexGuard<'_, Watches> {
    match w.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

#[derive(Debug, Default)]
struct Watches {
    by_netns: HashMap<u64, Watch>,
    /// Containers the binder could not watch (for a registration waiting on it).
    failed: HashSet<Key>,
}

impl Watches {
    /// Containers watched now (not those leaving).
    fn attached(&self) -> HashMap<Key, (u32, u64)> {
        self.by_netns
            .values()
            .flat_map(|w| w.members.iter())
            .filter(|m| m.leaving.is_none())
            .map(|m| (m.key.clone(), m.process))
            .collect()
    }

    /// Mark `key` as leaving: its socket is still read for [`CLOSE_GRACE`], then
    /// [`Watches::reap`] removes it.
    fn detach(&mut self, key: &Key, now: Instant) {
        for w in self.by_netns.values_mut() {
            for m in w.members.iter_mut().filter(|m| m.key == *key) {
                m.leaving.get_or_insert(now + CLOSE_GRACE);
            }
        }
    }

    /// Namespaces with a member whose grace has ended.
    fn due(&self, now: Instant) -> Vec<u64> {
        self.by_netns
            .iter()
            .filter(|(_, w)| {
                w.members
                    .iter()
                    .any(|m| m.leaving.is_some_and(|t| t <= now))
            })
            .map(|(ns, _)| *ns)
            .collect()
    }

    /// Remove the members of `ns` whose grace ended (the caller read the socket a last time);
    /// returns the socket to close when they were the namespace's last (closed by the caller
    /// after removing it from epoll), and the final summaries owed.
    fn reap(&mut self, ns: u64, now: Instant, out: &mut Vec<Outgoing>) -> Option<Watch> {
        let watch = self.by_netns.get_mut(&ns)?;
        let (gone, stay): (Vec<Member>, Vec<Member>) = std::mem::take(&mut watch.members)
            .into_iter()
            .partition(|m| m.leaving.is_some_and(|t| t <= now));
        watch.members = stay;
        for mut m in gone {
            log::info!(
                "egress denials of container {}: no longer watched ({} denied while watched)",
                m.key.id,
                m.limiter.total()
            );
            out.extend(m.limiter.drain().map(|n| Outgoing {
                detail: summary_text(n, m.limiter.total()),
                key: m.key,
                fallback: m.rec,
            }));
        }
        if watch.members.is_empty() {
            self.by_netns.remove(&ns)
        } else {
            None
        }
    }
}

fn publish(out: Vec<Outgoing>, store: &RwLock<Store>, hub: &Hub) {
    if out.is_empty() {
        return;
    }
    let store = match store.read() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    for o in out {
        let rec = store.get(&o.key).unwrap_or(&o.fallback);
        hub.publish(EventKind::EgressDenied, rec, Some(o.detail));
    }
}

// ---------------------------------------------------------------------------------------------
// The threads.

/// Attaches containers to sockets and detaches them: the only thread that changes namespace.
pub struct Binder {
    group: u16,
    /// The monitor's own network namespace, to come back to.
    home: File,
    home_inode: u64,
    store: Arc<RwLock<Store>>,
    hub: Arc<Hub>,
    proc: Arc<dyn ProcView>,
    watches: Arc<Mutex<Watches>>,
    epoll: Arc<Epoll>,
    events: Receiver<Event>,
    /// Incarnations that could not be watched (logged once, not retried).
    failed: HashMap<Key, (u32, u64)>,
    /// False once returning to `home` failed: never enter a namespace again.
    can_bind: bool,
}

impl fmt::Debug for Binder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binder")
            .field("group", &self.group)
            .field("home_inode", &self.home_inode)
            .finish_non_exhaustive()
    }
}

/// The denial counts, for `inspect`, and the wait of a registration (a handle on the threads'
/// shared state).
#[derive(Clone)]
pub struct Counts(Arc<Mutex<Watches>>, u64);

impl fmt::Debug for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counts").finish_non_exhaustive()
    }
}

impl Counts {
    /// The container the registration of `rec` should wait for (see [`Counts::wait_watched`]):
    /// `None` for a record without a ruleset or in the node's own namespace.
    pub fn to_watch(&self, rec: &Identity) -> Option<Key> {
        target(rec, self.1, None).map(|_| rec.key())
    }

    /// Wait (at most `timeout`) until the binder watches the namespace of container `key`, or
    /// could not: its denials are then reported from its first packet on, even if it lives
    /// 5 ms. True when watched.
    pub fn wait_watched(&self, key: &Key, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let w = lock(&self.0);
                if w.failed.contains(key) {
                    return false;
                }
                let watched = w.by_netns.values().any(|watch| {
                    watch
                        .members
                        .iter()
                        .any(|m| m.key == *key && m.leaving.is_none())
                });
                if watched {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                log::warn!(
                    "container {}: its namespace was not watched within {timeout:?}: its first egress denials may go unreported",
                    key.id
                );
                return false;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// Denied packets attributed to `key` since the monitor began watching it (reported one
    /// by one or in summaries alike); `None` while it is not watched. Memory only: a restart
    /// starts again at 0 (the ruleset's nft counter has the container's whole count).
    pub fn denied(&self, key: &Key) -> Option<u64> {
        lock(&self.0)
            .by_netns
            .values()
            .flat_map(|w| w.members.iter())
            .find(|m| m.key == *key)
            .map(|m| m.limiter.total())
    }
}

/// Reads every socket and publishes the denials.
pub struct Reader {
    store: Arc<RwLock<Store>>,
    hub: Arc<Hub>,
    watches: Arc<Mutex<Watches>>,
    epoll: Arc<Epoll>,
    profiles: Option<Arc<Profiles>>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// Prepare both threads (run each with `run` on a thread of its own). Called on a thread in the
/// monitor's own network namespace; `Err` says why denial events are unavailable.
pub fn open(
    group: u16,
    store: Arc<RwLock<Store>>,
    hub: Arc<Hub>,
    proc: Arc<dyn ProcView>,
    profiles: Option<Arc<Profiles>>,
) -> Result<(Binder, Reader), NflogError> {
    let path = "/proc/thread-self/ns/net";
    let open = |source| NflogError::Open {
        path: path.to_owned(),
        source,
    };
    let home = File::open(path).map_err(open)?;
    let home_inode = home.metadata().map_err(open)?.ino();
    let epoll = Arc::new(Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(NflogError::Epoll)?);
    let watches = Arc::new(Mutex::new(Watches::default()));
    // Subscribed before the first sweep, so no registration falls between the two.
    let events = hub.subscribe_to(lifecycle_of_egress);
    let binder = Binder {
        group,
        home,
        home_inode,
        store: Arc::clone(&store),
        hub: Arc::clone(&hub),
        proc,
        watches: Arc::clone(&watches),
        epoll: Arc::clone(&epoll),
        events,
        failed: HashMap::new(),
        can_bind: true,
    };
    let reader = Reader {
        store,
        hub,
        watches,
        epoll,
        profiles,
    };
    Ok((binder, reader))
}

impl Binder {
    /// A handle for reading the counts while the threads run.
    pub fn counts(&self) -> Counts {
        Counts(Arc::clone(&self.watches), self.home_inode)
    }

    /// Follow the records forever: at once for those an event names, all of them every
    /// [`SWEEP_INTERVAL`].
    pub fn run(mut self) {
        log::info!("egress denial events: NFLOG group {}", self.group);
        self.sync(None);
        // The first pass and the burst of events a restart's reconciliation publishes allocate
        // on this thread's heap: give it back, as the daemon does after replay.
        let mut trim_after = true;
        let mut last_sweep = Instant::now();
        loop {
            let wait = SWEEP_INTERVAL.saturating_sub(last_sweep.elapsed());
            match self.events.recv_timeout(wait) {
                Ok(first) => {
                    // One pass for everything queued (a burst of registrations).
                    let mut keys = HashSet::new();
                    for e in std::iter::once(first).chain(self.events.try_iter()) {
                        if e.kind != EventKind::EgressDenied {
                            keys.insert(Key {
                                id: e.id,
                                bundle: e.bundle,
                            });
                        }
                    }
                    if !keys.is_empty() {
                        self.sync(Some(&keys));
                    }
                    if std::mem::take(&mut trim_after) || keys.len() > 1000 {
                        crate::sys::trim_heap();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // The hub dropped us for lagging: subscribe again; the sweep catches up.
                    log::warn!("egress denial events: lifecycle events were missed; resyncing");
                    self.events = self.hub.subscribe_to(lifecycle_of_egress);
                    self.sync(None);
                    last_sweep = Instant::now();
                }
            }
            if last_sweep.elapsed() >= SWEEP_INTERVAL {
                self.sync(None);
                last_sweep = Instant::now();
            }
        }
    }

    /// Bring sockets in line with the records `keys` (all records when `None`).
    fn sync(&mut self, keys: Option<&HashSet<Key>>) {
        // Never hold the store's lock and ours together (the reader takes ours, then the
        // store's): snapshot one, then work under the other.
        let attached = lock(&self.watches).attached();
        let in_scope = |k: &Key| keys.map_or(true, |ks| ks.contains(k));
        let (gone, new) = {
            let store = match self.store.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let (home, boot_id) = (self.home_inode, self.proc.boot_id());
            let want = |k: &Key| store.get(k).and_then(|r| target(r, home, boot_id));
            let gone: Vec<Key> = attached
                .iter()
                .filter(|(k, p)| in_scope(k) && want(k) != Some(**p))
                .map(|(k, _)| k.clone())
                .collect();
            self.failed
                .retain(|k, p| !in_scope(k) || want(k) == Some(*p));
            let kept: HashSet<Key> = self.failed.keys().cloned().collect();
            lock(&self.watches).failed.retain(|k| kept.contains(k));
            // Only records not watched yet are copied (a sweep passes over every record).
            let failed = &self.failed;
            let fresh = |r: &&Identity| {
                target(r, home, boot_id).is_some_and(|p| {
                    let k = r.key();
                    attached.get(&k) != Some(&p) && failed.get(&k) != Some(&p)
                })
            };
            let new: Vec<Identity> = match keys {
                None => store.iter().filter(fresh).cloned().collect(),
                Some(ks) => ks
                    .iter()
                    .filter_map(|k| store.get(k))
                    .filter(fresh)
                    .cloned()
                    .collect(),
            };
            (gone, new)
        };
        for key in &gone {
            self.detach(key);
        }
        for rec in new {
            let Some(process) = rec.process() else {
                continue;
            };
            let key = rec.key();
            if let Err(e) = self.attach(rec) {
                log::warn!(
                    "container {}: egress denials will not be reported: {e}",
                    key.id
                );
                lock(&self.watches).failed.insert(key.clone());
                self.failed.insert(key, process);
            }
        }
    }

    /// The reader closes the socket once what the kernel still batches has arrived.
    fn detach(&mut self, key: &Key) {
        lock(&self.watches).detach(key, Instant::now());
    }

    fn attach(&mut self, rec: Identity) -> Result<(), NflogError> {
        let Some((pid, start)) = rec.process() else {
            return Ok(());
        };
        let (ns, inode) = open_netns(self.proc.as_ref(), pid, start)?;
        if inode == self.home_inode {
            return Err(NflogError::HostNetns { pid });
        }
        let member = Member {
            key: rec.key(),
            process: (pid, start),
            created: rec.created,
            rec,
            limiter: Limiter::new(RATE_PER_SEC),
            leaving: None,
        };
        {
            let mut w = lock(&self.watches);
            if let Some(watch) = w.by_netns.get_mut(&inode) {
                log::info!(
                    "egress denials of container {}: listening (netns {inode} shared with {})",
                    member.key.id,
                    watch.ids()
                );
                watch.members.push(member);
                return Ok(());
            }
        }
        if !self.can_bind {
            return Err(NflogError::Stopped);
        }
        let started = Instant::now();
        let sock = match bind_in_netns(&ns, &self.home, self.group) {
            Ok(s) => s,
            Err(e @ NflogError::RestoreNetns(_)) => {
                log::error!("egress denial events: {e}; no more namespaces will be entered");
                self.can_bind = false;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let took = started.elapsed();
        self.epoll
            .add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, inode))
            .map_err(NflogError::Epoll)?;
        log::info!(
            "egress denials of container {}: listening (netns {inode}, NFLOG group {}, bound in {took:?})",
            member.key.id,
            self.group
        );
        lock(&self.watches).by_netns.insert(
            inode,
            Watch {
                sock,
                members: vec![member],
                lost: 0,
                lost_logged: None,
                malformed_logged: false,
            },
        );
        Ok(())
    }
}

impl Reader {
    /// Read denials forever.
    pub fn run(self) {
        let mut ready = vec![EpollEvent::empty(); 64];
        let mut buf = vec![0u8; 64 * 1024];
        let mut global = Window::new(GLOBAL_RATE_PER_SEC);
        let mut last_tick = Instant::now();
        // TICK is well under u16::MAX milliseconds.
        let tick = EpollTimeout::try_from(TICK).unwrap_or(EpollTimeout::from(250u16));
        loop {
            let n = match self.epoll.wait(&mut ready, tick) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    log::error!(
                        "egress denial events: epoll: {e}; no more denials will be reported"
                    );
                    return;
                }
            };
            let now = Instant::now();
            let mut out = Vec::new();
            {
                let mut w = lock(&self.watches);
                for ev in &ready[..n] {
                    self.drain(&mut w, ev.data(), &mut buf, now, &mut global, &mut out);
                }
                if now.saturating_duration_since(last_tick) >= TICK {
                    for ns in w.due(now) {
                        // A last read with the departed container still attached.
                        self.drain(&mut w, ns, &mut buf, now, &mut global, &mut out);
                        if let Some(closed) = w.reap(ns, now, &mut out) {
                            let _ = self.epoll.delete(&closed.sock);
                            log::debug!("nflog: netns {ns}: socket closed");
                        }
                    }
                    due_summaries(&mut w, now, &mut out);
                    last_tick = now;
                }
            }
            publish(out, &self.store, &self.hub);
        }
    }

    fn drain(
        &self,
        w: &mut Watches,
        ns: u64,
        buf: &mut [u8],
        now: Instant,
        global: &mut Window,
        out: &mut Vec<Outgoing>,
    ) {
        // Gone: detached between epoll_wait and taking the lock.
        let Some(watch) = w.by_netns.get_mut(&ns) else {
            return;
        };
        for _ in 0..DATAGRAMS_PER_TURN {
            let n = match recv(watch.sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(Errno::ENOBUFS) => {
                    watch.lost += 1;
                    self.hub.counters().inc(Count::Overflow(Overflow::Nflog));
                    if watch.lost_logged.map_or(true, |t| {
                        now.saturating_duration_since(t) >= LOST_LOG_INTERVAL
                    }) {
                        log::warn!(
                            "egress denials of container(s) {}: the kernel's queue overflowed \
                             ({} time(s)); some denials were not reported (the nft counter has them all)",
                            watch.ids(),
                            watch.lost
                        );
                        watch.lost_logged = Some(now);
                    }
                    continue;
                }
                Err(e) => {
                    log::error!(
                        "egress denials of container(s) {}: recv: {e}; this namespace is no longer read",
                        watch.ids()
                    );
                    let _ = self.epoll.delete(&watch.sock);
                    return;
                }
            };
            let d = parse_datagram(&buf[..n]);
            if d.malformed > 0 && !watch.malformed_logged {
                log::warn!(
                    "egress denials of container(s) {}: {} malformed NFLOG message(s) skipped",
                    watch.ids(),
                    d.malformed
                );
                watch.malformed_logged = true;
            }
            if d.foreign > 0 {
                log::debug!(
                    "nflog: netns {ns}: {} packet(s) logged by other rules to this group ignored",
                    d.foreign
                );
            }
            let shared = watch.members.len();
            let Some(m) = watch.newest() else {
                continue;
            };
            if let Some(p) = &self.profiles {
                // A denied destination is compared too (an enforced allowlist drops it, the
                // profile says whether the identity ever went there).
                for o in d.observed.iter().chain(&d.denials) {
                    p.egress(&m.key, o.protocol, o.dst, o.port);
                }
            }
            if !d.denials.is_empty() {
                // Every denial, before rate limiting (the events are a sample of them).
                self.hub.counters().add(
                    Count::EgressDenied {
                        policy: policy_label(m.rec.policy.as_ref()),
                    },
                    d.denials.len() as u64,
                );
            }
            for denial in d.denials {
                let admit = m.limiter.admit(now, global);
                if let Some(n) = admit.summary {
                    out.push(Outgoing {
                        key: m.key.clone(),
                        fallback: m.rec.clone(),
                        detail: summary_text(n, m.limiter.total()),
                    });
                }
                if admit.publish {
                    out.push(Outgoing {
                        key: m.key.clone(),
                        fallback: m.rec.clone(),
                        detail: denial_text(&denial, &m.rec, shared),
                    });
                }
            }
        }
    }
}

/// The event detail for one denial of `rec`'s container, in a namespace of `shared` containers.
fn denial_text(d: &Denial, rec: &Identity, shared: usize) -> String {
    let mut s = d.to_string();
    if rec
        .policy
        .as_ref()
        .and_then(|p| p.mode.as_deref())
        .is_some_and(|m| !Mode::parse_or_enforce(m).enforces())
    {
        s.push_str(" (audit: not blocked)");
    }
    if shared > 1 {
        s.push_str(&format!(
            " (network namespace shared by {shared} containers: attributed to the newest)"
        ));
    }
    s
}

fn due_summaries(w: &mut Watches, now: Instant, out: &mut Vec<Outgoing>) {
    for m in w.by_netns.values_mut().flat_map(|w| w.members.iter_mut()) {
        if let Some(n) = m.limiter.due(now) {
            out.push(Outgoing {
                key: m.key.clone(),
                fallback: m.rec.clone(),
                detail: summary_text(n, m.limiter.total()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::ProcStat;
    use crate::record::{Namespaces, PolicyRef};

    // ---- building NFLOG datagrams as the kernel writes them ----

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// One `NFULNL_MSG_PACKET` message (nlmsghdr + nfgenmsg + attributes).
    fn nflog_message(family: u8, prefix: &str, uid: Option<u32>, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![family, 0];
        body.extend_from_slice(&100u16.to_be_bytes()); // res_id: the group
        let hw = if family == 10 { 0x86ddu16 } else { 0x0800 };
        let mut hdr = hw.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[3, 0]); // hook NF_INET_LOCAL_OUT, pad
        body.extend(nla(libc::NFULA_PACKET_HDR as u16, &hdr));
        body.extend(nla(libc::NFULA_MARK as u16, &0u32.to_be_bytes()));
        body.extend(nla(libc::NFULA_IFINDEX_OUTDEV as u16, &2u32.to_be_bytes()));
        let mut p = prefix.as_bytes().to_vec();
        p.push(0);
        body.extend(nla(libc::NFULA_PREFIX as u16, &p));
        if let Some(u) = uid {
            body.extend(nla(libc::NFULA_UID as u16, &u.to_be_bytes()));
            body.extend(nla(libc::NFULA_GID as u16, &u.to_be_bytes()));
        }
        body.extend(nla(libc::NFULA_PAYLOAD as u16, payload));
        let mut m = Vec::new();
        let len = (NLMSG_HDRLEN + body.len()) as u32;
        m.extend_from_slice(&len.to_ne_bytes());
        m.extend_from_slice(&((4u16 << 8) | libc::NFULNL_MSG_PACKET as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    fn ipv4(proto: u8, dst: [u8; 4], l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 60, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
        p.extend_from_slice(&[198, 18, 1, 2]);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = sport.to_be_bytes().to_vec();
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0; 16]);
        t[12] = 0x50;
        t[13] = 0x02; // SYN
        t
    }

    fn ipv6(next: u8, dst: Ipv6Addr, rest: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(rest.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(rest);
        p
    }

    /// Found by fuzzing: an nftables message whose nested attribute is shorter than its
    /// header made netlink-packet-netfilter panic (subtract with overflow) in the reader.
    #[test]
    fn other_subsystems_are_skipped_unparsed() {
        let m = include_bytes!("../../fuzz/regressions/nflog/nftables-short-attribute");
        let d = parse_datagram(m);
        assert!(d.denials.is_empty() && d.observed.is_empty() && d.answers.is_empty());
    }

    #[test]
    fn ipv4_tcp_denial() {
        let m = nflog_message(
            2,
            LOG_PREFIX,
            Some(0),
            &ipv4(6, [198, 18, 1, 2], &tcp(40000, 4444)),
        );
        let d = parse_datagram(&m);
        assert_eq!((d.malformed, d.foreign), (0, 0));
        assert_eq!(d.denials.len(), 1);
        assert_eq!(d.denials[0].to_string(), "tcp 198.18.1.2:4444 uid 0");
    }

    #[test]
    fn batched_messages_and_other_prefixes() {
        let mut dg = nflog_message(
            2,
            LOG_PREFIX,
            Some(1000),
            &ipv4(17, [198, 18, 3, 1], &[0x9c, 0x40, 0x00, 0x35, 0, 8, 0, 0]),
        );
        // an odd-length payload makes the next message start after padding
        dg.extend(nflog_message(
            2,
            "someone-else ",
            None,
            &ipv4(6, [198, 18, 3, 1], &tcp(1, 2)),
        ));
        dg.extend(nflog_message(
            2,
            LOG_PREFIX,
            None,
            &ipv4(1, [198, 18, 3, 1], &[8, 0, 0, 0, 0, 1, 0, 1]),
        ));
        // A new connection an observing ruleset logged: not a denial.
        dg.extend(nflog_message(
            2,
            OBSERVE_PREFIX,
            None,
            &ipv4(6, [198, 18, 3, 2], &tcp(40000, 443)),
        ));
        let d = parse_datagram(&dg);
        assert_eq!(d.observed.len(), 1);
        assert_eq!(d.observed[0].to_string(), "tcp 198.18.3.2:443");
        let texts: Vec<String> = d.denials.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "udp 198.18.3.1:53 uid 1000",
                "icmp 198.18.3.1 type 8 code 0"
            ]
        );
        assert_eq!((d.foreign, d.malformed), (1, 0));
    }

    #[test]
    fn ipv6_with_extension_headers() {
        let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let m = nflog_message(10, LOG_PREFIX, Some(0), &ipv6(6, dst, &tcp(5, 443)));
        assert_eq!(
            parse_datagram(&m).denials[0].to_string(),
            "tcp [2001:db8::1]:443 uid 0"
        );
        // hop-by-hop options (8 bytes) then UDP
        let mut rest = vec![17, 0, 1, 4, 0, 0, 0, 0];
        rest.extend_from_slice(&[0x9c, 0x40, 0x11, 0x5c, 0, 8, 0, 0]);
        let d = decode_ip(&ipv6(0, dst, &rest)).unwrap();
        assert_eq!(d.to_string(), "udp [2001:db8::1]:4444");
        // ICMPv6 echo request
        let d = decode_ip(&ipv6(58, dst, &[128, 0, 0, 0])).unwrap();
        assert_eq!(d.to_string(), "icmpv6 2001:db8::1 type 128 code 0");
        // a later fragment: no port
        let frag = [6, 0, 0x00, 0x08, 0, 0, 0, 1];
        let d = decode_ip(&ipv6(44, dst, &frag)).unwrap();
        assert_eq!(d.to_string(), "tcp 2001:db8::1");
    }

    #[test]
    fn ipv4_edge_cases() {
        // options: IHL 6
        let mut p = ipv4(6, [198, 18, 1, 2], &[1, 1, 1, 1]);
        p[0] = 0x46;
        p.extend(tcp(1, 8080));
        assert_eq!(decode_ip(&p).unwrap().port, Some(8080));
        // later fragment
        let mut p = ipv4(17, [198, 18, 1, 2], &[0, 0, 0, 53]);
        p[6] = 0x00;
        p[7] = 0x10;
        assert_eq!(decode_ip(&p).unwrap().port, None);
        // truncated transport header: address only
        let p = ipv4(6, [198, 18, 1, 2], &[0x9c]);
        assert_eq!(decode_ip(&p).unwrap().to_string(), "tcp 198.18.1.2");
        // GRE: no ports
        let p = ipv4(47, [198, 18, 1, 2], &[0; 8]);
        assert_eq!(decode_ip(&p).unwrap().to_string(), "proto 47 198.18.1.2");
        // bad IHL, short header, unknown version
        let mut p = ipv4(6, [198, 18, 1, 2], &tcp(1, 2));
        p[0] = 0x42;
        assert!(decode_ip(&p).is_none());
        assert!(decode_ip(&p[..19]).is_none());
        assert!(decode_ip(&[0x50; 40]).is_none());
        assert!(decode_ip(&[]).is_none());
    }

    #[test]
    fn truncated_and_garbage_input_never_panics() {
        let good = nflog_message(
            2,
            LOG_PREFIX,
            Some(0),
            &ipv4(6, [198, 18, 1, 2], &tcp(1, 4444)),
        );
        for cut in 0..good.len() {
            let d = parse_datagram(&good[..cut]);
            assert!(d.denials.is_empty(), "cut at {cut}");
        }
        // every single-byte corruption
        for i in 0..good.len() {
            for b in [0u8, 0xff, 0x7f, 0x01] {
                let mut bad = good.clone();
                bad[i] = b;
                let _ = parse_datagram(&bad);
            }
        }
        // pseudo-random bytes (xorshift: deterministic)
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..2000usize {
            let mut v = Vec::with_capacity(len % 300);
            for _ in 0..len % 300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if v.len() >= 4 {
                // make the length field plausible now and then
                let l = (v.len() as u32).to_ne_bytes();
                if len % 2 == 0 {
                    v[..4].copy_from_slice(&l);
                }
            }
            let _ = parse_datagram(&v);
            let _ = decode_ip(&v);
        }
        // a payload attribute holding garbage: counted, not published
        let m = nflog_message(2, LOG_PREFIX, None, &[0x45, 0, 0]);
        let d = parse_datagram(&m);
        assert_eq!((d.denials.len(), d.malformed), (0, 1));
    }

    #[test]
    fn acknowledgements() {
        // NLMSG_ERROR with error 0 (ack) and -EBUSY, each followed by the request header
        let ack = |code: i32| {
            let mut m = Vec::new();
            m.extend_from_slice(&36u32.to_ne_bytes());
            m.extend_from_slice(&2u16.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.extend_from_slice(&code.to_ne_bytes());
            m.extend_from_slice(&[0; 16]);
            m
        };
        assert_eq!(parse_datagram(&ack(0)).answers, vec![0]);
        assert_eq!(parse_datagram(&ack(-16)).answers, vec![-16]);
    }

    // ---- rate limiting ----

    #[test]
    fn ten_per_second_then_one_summary() {
        let t0 = Instant::now();
        let mut global = Window::new(GLOBAL_RATE_PER_SEC);
        let mut l = Limiter::new(RATE_PER_SEC);
        let published = (0..25)
            .filter(|i| l.admit(t0 + Duration::from_millis(*i), &mut global).publish)
            .count();
        assert_eq!(published, 10);
        assert_eq!(
            l.due(t0 + Duration::from_millis(500)),
            None,
            "window not over"
        );
        assert_eq!(l.due(t0 + Duration::from_millis(1001)), Some(15));
        assert_eq!(l.due(t0 + Duration::from_millis(1002)), None, "owed once");
        // a denial in a new window that follows suppressed ones carries the summary first
        let mut l = Limiter::new(2);
        for i in 0..5 {
            l.admit(t0 + Duration::from_millis(i), &mut global);
        }
        let a = l.admit(t0 + Duration::from_secs(2), &mut global);
        assert_eq!(
            a,
            Admit {
                summary: Some(3),
                publish: true
            }
        );
        assert_eq!(l.total(), 6);
        assert_eq!(
            summary_text(3, 6),
            "3 more denied, not shown (limit 10/s); 6 in total"
        );
    }

    #[test]
    fn the_global_window_caps_all_containers() {
        let t0 = Instant::now();
        let mut global = Window::new(3);
        let mut a = Limiter::new(10);
        let mut b = Limiter::new(10);
        let n = (0..4)
            .flat_map(|_| [a.admit(t0, &mut global), b.admit(t0, &mut global)])
            .filter(|x| x.publish)
            .count();
        assert_eq!(n, 3);
        assert_eq!(a.drain().unwrap_or(0) + b.drain().unwrap_or(0), 5);
    }

    // ---- which records are watched, and who a denial is attributed to ----

    fn rec(id: &str, created: u64) -> Identity {
        let mut r = Identity {
            id: id.into(),
            bundle: format!("/b/{id}"),
            status: Status::Running,
            pid: Some(100),
            start_time: Some(5),
            boot_id: Some("boot".into()),
            created: Some(Timestamp(created)),
            namespaces: Namespaces {
                net: Some(4000),
                ..Default::default()
            },
            ..Default::default()
        };
        r.profiles.insert(EGRESS_PROFILE.into(), "sha256:ab".into());
        r
    }

    #[test]
    fn which_records_are_watched() {
        assert!(target(&rec("a", 1), 1, Some("boot")).is_some());
        let mut r = rec("a", 1);
        r.profiles = Default::default();
        assert!(target(&r, 1, Some("boot")).is_none(), "no egress ruleset");
        let mut r = rec("a", 1);
        r.status = Status::Exited;
        assert!(target(&r, 1, Some("boot")).is_none());
        assert!(
            target(&rec("a", 1), 4000, Some("boot")).is_none(),
            "host netns"
        );
        assert!(
            target(&rec("a", 1), 1, Some("other")).is_none(),
            "other boot"
        );
        let mut r = rec("a", 1);
        r.start_time = None;
        assert!(
            target(&r, 1, Some("boot")).is_none(),
            "pid alone never names it"
        );
    }

    fn member(id: &str, created: u64) -> Member {
        let r = rec(id, created);
        Member {
            key: r.key(),
            process: (100, 5),
            created: r.created,
            rec: r,
            limiter: Limiter::new(RATE_PER_SEC),
            leaving: None,
        }
    }

    fn watch(members: Vec<Member>) -> Watch {
        Watch {
            sock: File::open("/dev/null").unwrap().into(),
            members,
            lost: 0,
            lost_logged: None,
            malformed_logged: false,
        }
    }

    #[test]
    fn shared_namespace_attributes_to_the_newest_and_closes_with_the_last() {
        let mut w = Watches::default();
        w.by_netns.insert(
            4000,
            watch(vec![
                member("pause", 1),
                member("app", 5),
                member("side", 3),
            ]),
        );
        assert_eq!(
            w.by_netns.get_mut(&4000).unwrap().newest().unwrap().key.id,
            "app"
        );
        let d = Denial {
            dst: "198.18.1.2".parse().unwrap(),
            protocol: 6,
            port: Some(4444),
            icmp: None,
            uid: Some(0),
        };
        let mut r = rec("app", 5);
        assert_eq!(
            denial_text(&d, &r, 3),
            "tcp 198.18.1.2:4444 uid 0 (network namespace shared by 3 containers: attributed to the newest)"
        );
        r.policy = Some(PolicyRef {
            name: "p".into(),
            digest: None,
            mode: Some("audit".into()),
        });
        assert_eq!(
            denial_text(&d, &r, 1),
            "tcp 198.18.1.2:4444 uid 0 (audit: not blocked)"
        );

        // a summary still owed is published when the container goes
        let t0 = Instant::now();
        let mut global = Window::new(100);
        let m = w.by_netns.get_mut(&4000).unwrap().newest().unwrap();
        for _ in 0..12 {
            m.limiter.admit(t0, &mut global);
        }
        // Leaving: still attributed to (its late packets are its own) until its grace ends.
        w.detach(&rec("app", 5).key(), t0);
        assert!(!w.attached().contains_key(&rec("app", 5).key()));
        assert!(w.due(t0).is_empty());
        let later = t0 + CLOSE_GRACE;
        assert_eq!(w.due(later), vec![4000]);
        let mut out = Vec::new();
        assert!(w.reap(4000, later, &mut out).is_none());
        assert!(out[0].detail.starts_with("2 more denied"), "{out:?}");
        assert_eq!(
            w.by_netns.get_mut(&4000).unwrap().newest().unwrap().key.id,
            "side"
        );
        w.detach(&rec("side", 3).key(), later);
        w.detach(&rec("pause", 1).key(), later);
        let mut out = Vec::new();
        let closed = w.reap(4000, later + CLOSE_GRACE, &mut out);
        assert!(closed.is_some());
        assert!(out.is_empty());
        assert!(w.by_netns.is_empty());
        assert!(w.reap(4000, later + CLOSE_GRACE, &mut out).is_none());
    }

    #[test]
    fn open_netns_checks_the_start_time() {
        struct P(u64);
        impl ProcView for P {
            fn stat(&self, _: u32) -> Option<ProcStat> {
                Some(ProcStat {
                    ppid: 0,
                    start_time: self.0,
                    exited: false,
                    exit_code: None,
                })
            }
            fn pid_ns(&self, _: u32) -> Option<u64> {
                None
            }
            fn cgroup(&self, _: u32) -> Option<String> {
                None
            }
            fn boot_id(&self) -> Option<&str> {
                None
            }
        }
        let me = std::process::id();
        assert!(open_netns(&P(7), me, 7).is_ok());
        assert!(matches!(
            open_netns(&P(8), me, 7),
            Err(NflogError::Process { .. })
        ));
    }

    // ---- the kernel, as root: bind in a namespace, log a packet, read it back ----

    struct Netns(String);

    impl Netns {
        fn new(tag: &str) -> Option<Netns> {
            let name = format!("ogm-{tag}-{}", std::process::id());
            let ok = |args: &[&str]| {
                std::process::Command::new("ip")
                    .args(args)
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            if !ok(&["netns", "add", &name]) {
                return None;
            }
            let n = Netns(name);
            let all = ok(&["-n", &n.0, "link", "set", "lo", "up"])
                && ok(&[
                    "-n", &n.0, "link", "add", "d0", "type", "veth", "peer", "name", "d1",
                ])
                && ok(&["-n", &n.0, "link", "set", "d1", "up"])
                && ok(&["-n", &n.0, "addr", "add", "198.18.250.1/24", "dev", "d0"])
                && ok(&[
                    "-n",
                    &n.0,
                    "addr",
                    "add",
                    "2001:db8:250::1/64",
                    "dev",
                    "d0",
                    "nodad",
                ])
                && ok(&["-n", &n.0, "link", "set", "d0", "up"]);
            all.then_some(n)
        }
        fn file(&self) -> File {
            File::open(format!("/run/netns/{}", self.0)).unwrap()
        }
        fn nft(&self, rules: &str) -> bool {
            use std::io::Write;
            let mut c = std::process::Command::new("ip")
                .args(["netns", "exec", &self.0, "nft", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
            c.wait().is_ok_and(|s| s.success())
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .output();
        }
    }

    fn root_with_tools() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("not root".into());
        }
        for tool in ["/usr/sbin/nft", "/usr/sbin/ip"] {
            if !std::path::Path::new(tool).exists()
                && !std::path::Path::new(&tool.replace("/usr", "")).exists()
            {
                return Some(format!("{tool} missing"));
            }
        }
        None
    }

    #[test]
    fn kernel_delivers_a_denial_to_a_socket_bound_in_the_namespace() {
        if let Some(why) = root_with_tools() {
            eprintln!("skip: {why}");
            return;
        }
        let Some(ns) = Netns::new("nflog") else {
            eprintln!("skip: cannot create a network namespace with a veth link");
            return;
        };
        // Only addresses assigned in this private namespace are ever sent to.
        let rules = format!(
            "table inet ogtest {{\n chain output {{\n  type filter hook output priority filter; policy accept;\n  \
             ip daddr 198.18.250.1 tcp dport 4444 counter log prefix \"{LOG_PREFIX}\" group 77 drop\n  \
             ip6 daddr 2001:db8:250::1 udp dport 4445 counter log prefix \"{LOG_PREFIX}\" group 77 drop\n }}\n}}\n"
        );
        if !ns.nft(&rules) {
            eprintln!("skip: nft could not load a table in the test namespace");
            return;
        }
        let f = ns.file();
        let (sock, took, busy) = std::thread::spawn(move || {
            let home = File::open("/proc/thread-self/ns/net").unwrap();
            let t = Instant::now();
            let sock = bind_in_netns(&f, &home, 77).unwrap();
            let took = t.elapsed();
            // A second listener for the same group in the same namespace is refused.
            let busy = bind_in_netns(&f, &home, 77);
            // ...and the thread is back home either way.
            let now = File::open("/proc/thread-self/ns/net").unwrap();
            assert_eq!(
                now.metadata().unwrap().ino(),
                home.metadata().unwrap().ino()
            );
            (sock, took, busy)
        })
        .join()
        .unwrap();
        eprintln!("bind in a namespace (setns, socket, bind, ack, setns back): {took:?}");
        assert!(
            matches!(busy, Err(NflogError::Busy { group: 77, .. })),
            "{busy:?}"
        );

        let f = ns.file();
        std::thread::spawn(move || {
            setns(&f, CloneFlags::CLONE_NEWNET).unwrap();
            let _ = std::net::TcpStream::connect_timeout(
                &"198.18.250.1:4444".parse().unwrap(),
                Duration::from_millis(200),
            );
            let u = std::net::UdpSocket::bind("[2001:db8:250::1]:0").unwrap();
            let _ = u.send_to(b"x", "[2001:db8:250::1]:4445");
        })
        .join()
        .unwrap();

        let mut buf = vec![0u8; 64 * 1024];
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.len() < 2 && Instant::now() < deadline {
            match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => seen.extend(parse_datagram(&buf[..n]).denials),
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => panic!("recv: {e}"),
            }
        }
        let texts: Vec<String> = seen.iter().map(ToString::to_string).collect();
        assert!(
            texts.iter().any(|t| t == "tcp 198.18.250.1:4444 uid 0"),
            "{texts:?}"
        );
        assert!(
            texts
                .iter()
                .any(|t| t == "udp [2001:db8:250::1]:4445 uid 0"),
            "{texts:?}"
        );
    }
}
