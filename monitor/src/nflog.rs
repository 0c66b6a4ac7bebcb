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
//!
//! Here: which container each socket speaks for, and the binder and reader threads. Parsing
//! what the kernel sends is [`packet`]'s, opening and binding the sockets [`socket`]'s, and the
//! per-second windows [`limit`]'s.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{recv, MsgFlags};
use ociguard_policy::Mode;

mod limit;
mod packet;
mod socket;

use limit::summary_text;
pub use limit::{Admit, Limiter, Window};
pub use packet::{decode_ip, parse_datagram, Datagram, Denial};
pub use socket::{bind_group, bind_in_netns};
use socket::{open_netns, ACK_TIMEOUT};

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

/// Full comparison of records and sockets (events trigger one sooner for the records they name).
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);
/// A departed container's socket is read for this long after it exits before it is closed:
/// the kernel flushes what it batched within [`FLUSH_TIMEOUT`](socket::FLUSH_TIMEOUT) (our
/// socket keeps the namespace alive meanwhile), so a container that lived 5 ms still has its
/// denials reported.
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
        let in_scope = |k: &Key| keys.is_none_or(|ks| ks.contains(k));
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
                    if watch
                        .lost_logged
                        .is_none_or(|t| now.saturating_duration_since(t) >= LOST_LOG_INTERVAL)
                    {
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
    use crate::record::{Namespaces, PolicyRef};

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
}
