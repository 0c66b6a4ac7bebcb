//! The sockets: one `NETLINK_NETFILTER` socket bound to the NFLOG group, opened inside a
//! container's network namespace by a thread that enters it and returns at once.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use netlink_packet_netfilter::nflog::{config_request, ConfigCmd, ConfigMode, ConfigNla, Timeout};
use netlink_packet_netfilter::NetfilterProtoFamily;
use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

use super::packet::parse_datagram;
use super::{NflogError, COPY_RANGE};
use crate::procfs::ProcView;
/// Receive buffer per socket (the kernel caps it at `net.core.rmem_max`); what does not fit is
/// dropped by the kernel and reported to us as `ENOBUFS`.
const RCVBUF: usize = 256 * 1024;
/// The kernel batches log messages until this many are queued...
const QUEUE_THRESHOLD: u32 = 16;
/// ...or this many hundredths of a second passed: an isolated denial arrives within 100 ms.
pub(super) const FLUSH_TIMEOUT: u32 = 10;
/// Size of the kernel's batch buffer per group.
const KERNEL_BUFFER: u32 = 16 * 1024;
/// How long the bind handshake may wait for the kernel's answer.
pub(super) const ACK_TIMEOUT: Duration = Duration::from_secs(2);

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
pub(super) fn open_netns(
    proc: &dyn ProcView,
    pid: u32,
    start_time: u64,
) -> Result<(File, u64), NflogError> {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use ociguard_policy::egress::LOG_PREFIX;

    use super::*;
    use crate::procfs::ProcStat;

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
