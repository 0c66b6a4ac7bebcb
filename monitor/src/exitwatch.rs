//! Exit statuses from the kernel: the netlink process connector reports every process exit
//! with its wait(2) status, even for processes that are not our children.
//!
//! OCI state has no exit status and `poststop` runs long after the engine reaped the process,
//! so this is the only place a node-level observer can learn how a container ended. It needs
//! `CAP_NET_ADMIN` in the initial user namespace; without it (or on a kernel without
//! `CONFIG_PROC_EVENTS`) the monitor still records exits, from `poststop` and reconciliation,
//! with an unknown status.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};

use nix::errno::Errno;
use nix::sys::socket::{bind, recv, send, setsockopt, sockopt, MsgFlags, NetlinkAddr};

use crate::record::{Exit, ExitSource};
use crate::stats::{Count, Counters, Overflow};
use crate::store::Store;
use crate::sys;
use crate::writer::Op;

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
/// `proc_event.what` of an exec.
pub const PROC_EVENT_EXEC: u32 = 0x0000_0002;
/// `proc_event.what` of an exit.
pub const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;

/// The subscription message: nlmsghdr + cn_msg + `PROC_CN_MCAST_LISTEN`.
fn listen_message() -> Vec<u8> {
    let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
    m.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
    m.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cn_msg.id.idx
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cn_msg.id.val
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&4u16.to_ne_bytes()); // len
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
}

/// The netlink messages in one datagram (whole ones; a truncated tail ends the walk).
fn messages(datagram: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let len = u32_at(datagram, off)? as usize;
        if len < NLMSG_HDRLEN || off + len > datagram.len() {
            return None;
        }
        let msg = &datagram[off..off + len];
        // NLMSG_ALIGN
        off += (len + 3) & !3;
        Some(msg)
    })
}

/// Where `proc_event` starts in a message: what(4) cpu(4) timestamp_ns(8), then event_data.
const EVENT: usize = NLMSG_HDRLEN + CN_MSG_LEN;

/// Exit events in one datagram: `(pid, tgid, wait status)`.
pub fn parse_exits(datagram: &[u8]) -> Vec<(u32, u32, u32)> {
    parse_events(datagram)
        .into_iter()
        .filter_map(|e| Some((e.pid, e.tgid, e.exit_code?)))
        .collect()
}

/// A socket filter passing only process (not thread) exits: every fork, exec, comm change and
/// thread exit on the node would otherwise wake the reader, several times per process started
/// (each hook, each `ociguard` call), on the cores the registrations need.
///
/// The connector sends one event per datagram; offsets are from the netlink header. `BPF_ABS`
/// loads are big-endian, the event's fields native: constants are compared in load order. A
/// datagram too short for a load is dropped by the kernel.
pub fn exit_filter() -> [sys::BpfInsn; 10] {
    use libc::{
        BPF_ABS, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_MISC, BPF_RET, BPF_TAX, BPF_W, BPF_X,
    };
    let as_loaded = |v: u32| u32::from_be_bytes(v.to_ne_bytes());
    let ins = |code: u32, jt: u8, jf: u8, k: u32| sys::BpfInsn {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let ev = EVENT as u32;
    [
        // cn_msg.id.idx == CN_IDX_PROC
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, NLMSG_HDRLEN as u32),
        ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 7, as_loaded(CN_IDX_PROC)),
        // proc_event.what == PROC_EVENT_EXIT
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, ev),
        ins(BPF_JMP | BPF_JEQ | BPF_K, 0, 5, as_loaded(PROC_EVENT_EXIT)),
        // exit.process_pid == exit.process_tgid (a process, not one of its threads)
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, ev + 16),
        ins(BPF_MISC | BPF_TAX, 0, 0, 0),
        ins(BPF_LD | BPF_W | BPF_ABS, 0, 0, ev + 20),
        ins(BPF_JMP | BPF_JEQ | BPF_X, 0, 1, 0),
        ins(BPF_RET | BPF_K, 0, 0, u32::MAX),
        ins(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

/// Subscribe to process exits; `Err` says why exit statuses will be unknown.
pub fn subscribe() -> std::io::Result<OwnedFd> {
    listen(Some(&exit_filter()))
}

/// Subscribe to every process event (forks, execs, exits of every thread on the node): for
/// measurements (`ociguard-monitor-bench` times hooks by the kernel's exec and exit events).
pub fn subscribe_all() -> std::io::Result<OwnedFd> {
    listen(None)
}

fn listen(filter: Option<&[sys::BpfInsn]>) -> std::io::Result<OwnedFd> {
    let fd = sys::connector_socket()?;
    // A burst of exits on a busy node must not overflow the queue before we read it.
    let _ = setsockopt(&fd, sockopt::RcvBuf, &(4 << 20));
    // Before bind: no unfiltered event can be queued.
    if let Some(filter) = filter {
        sys::attach_filter(&fd, filter)?;
    }
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, CN_IDX_PROC)).map_err(std::io::Error::from)?;
    send(fd.as_raw_fd(), &listen_message(), MsgFlags::empty()).map_err(std::io::Error::from)?;
    Ok(fd)
}

/// One process event as the kernel stamped it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEvent {
    /// `PROC_EVENT_*`.
    pub what: u32,
    /// `process_pid` of the exec/exit/... event (the thread).
    pub pid: u32,
    /// `process_tgid` (the process).
    pub tgid: u32,
    /// When, in the kernel's monotonic clock (`CLOCK_MONOTONIC`), nanoseconds.
    pub time_ns: u64,
    /// An exit's wait status; `None` for an exec.
    pub exit_code: Option<u32>,
}

/// The exec and exit events in one datagram (other kinds are skipped: their pid fields sit
/// elsewhere).
pub fn parse_events(datagram: &[u8]) -> Vec<ProcEvent> {
    messages(datagram)
        .filter_map(|msg| {
            let what =
                u32_at(msg, EVENT).filter(|w| matches!(*w, PROC_EVENT_EXEC | PROC_EVENT_EXIT))?;
            let time_ns = msg
                .get(EVENT + 8..EVENT + 16)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_ne_bytes)?;
            let exit_code = match what {
                PROC_EVENT_EXIT => Some(u32_at(msg, EVENT + 24)?),
                _ => None,
            };
            Some(ProcEvent {
                what,
                pid: u32_at(msg, EVENT + 16)?,
                tgid: u32_at(msg, EVENT + 20)?,
                time_ns,
                exit_code,
            })
        })
        .collect()
}

/// Read exit events forever, passing those of registered containers' init processes to the
/// writer. On queue overflow (`ENOBUFS`) events were lost: ask for a reconciliation.
pub fn run(fd: OwnedFd, store: Arc<RwLock<Store>>, ops: Sender<Op>, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(Errno::ENOBUFS) => {
                log::warn!("exit events: kernel queue overflowed, events lost; reconciling");
                counters.inc(Count::Overflow(Overflow::ExitEvents));
                if ops.send(Op::Reconcile { reply: None }).is_err() {
                    return;
                }
                continue;
            }
            Err(e) => {
                log::error!("exit events: recv: {e}; exit statuses will be unknown from now on");
                return;
            }
        };
        for (pid, tgid, code) in parse_exits(&buf[..n]) {
            if pid != tgid {
                continue; // a thread, not a process
            }
            let ours = store
                .read()
                .map(|s| s.active_by_pid(pid).is_some())
                .unwrap_or(false);
            if ours {
                let exit = Exit::from_wait_status(code, ExitSource::Kernel);
                if ops.send(Op::ProcessExited { pid, exit }).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_one_exit() {
        let mut d = vec![0u8; 16 + 20 + 16 + 24];
        let len = d.len() as u32;
        d[0..4].copy_from_slice(&len.to_ne_bytes());
        d[36..40].copy_from_slice(&PROC_EVENT_EXIT.to_ne_bytes());
        d[52..56].copy_from_slice(&77u32.to_ne_bytes());
        d[56..60].copy_from_slice(&77u32.to_ne_bytes());
        d[60..64].copy_from_slice(&(42u32 << 8).to_ne_bytes());
        assert_eq!(parse_exits(&d), vec![(77, 77, 42 << 8)]);
        d[44..52].copy_from_slice(&123_456u64.to_ne_bytes());
        assert_eq!(
            parse_events(&d),
            vec![ProcEvent {
                what: PROC_EVENT_EXIT,
                pid: 77,
                tgid: 77,
                time_ns: 123_456,
                exit_code: Some(42 << 8),
            }]
        );
        // a fork event is ignored, truncated input does not panic
        d[36..40].copy_from_slice(&1u32.to_ne_bytes());
        assert!(parse_exits(&d).is_empty());
        assert!(parse_events(&d).is_empty());
        d[36..40].copy_from_slice(&PROC_EVENT_EXEC.to_ne_bytes());
        assert_eq!(parse_events(&d)[0].what, PROC_EVENT_EXEC);
        assert!(parse_exits(&d[..10]).is_empty());
        assert_eq!(listen_message().len(), 40);
    }

    /// The filter program run by the kernel on crafted datagrams (a Unix datagram socket runs
    /// socket filters on the same data a netlink socket would: the datagram from byte 0).
    #[test]
    fn filter_passes_only_process_exits() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (tx, rx) = socketpair(
            AddressFamily::Unix,
            SockType::Datagram,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )
        .unwrap();
        sys::attach_filter(&rx, &exit_filter()).unwrap();
        let event = |idx: u32, what: u32, pid: u32, tgid: u32| {
            let mut d = vec![0u8; 16 + 20 + 16 + 24];
            let len = d.len() as u32;
            d[0..4].copy_from_slice(&len.to_ne_bytes());
            d[16..20].copy_from_slice(&idx.to_ne_bytes());
            d[36..40].copy_from_slice(&what.to_ne_bytes());
            d[52..56].copy_from_slice(&pid.to_ne_bytes());
            d[56..60].copy_from_slice(&tgid.to_ne_bytes());
            d[60..64].copy_from_slice(&(3u32 << 8).to_ne_bytes());
            d
        };
        let sent = [
            (event(CN_IDX_PROC, PROC_EVENT_EXIT, 10, 10), true),
            (event(CN_IDX_PROC, PROC_EVENT_EXIT, 11, 10), false), // a thread
            (event(CN_IDX_PROC, 1, 12, 12), false),               // fork
            (event(CN_IDX_PROC, 2, 13, 13), false),               // exec
            (event(2, PROC_EVENT_EXIT, 14, 14), false),           // another connector
            (
                event(CN_IDX_PROC, PROC_EVENT_EXIT, 15, 15)[..50].to_vec(),
                false,
            ), // short
            (event(CN_IDX_PROC, PROC_EVENT_EXIT, 16, 16), true),
        ];
        for (d, _) in &sent {
            send(tx.as_raw_fd(), d, MsgFlags::empty()).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = recv(rx.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            got.push((n, parse_exits(&buf[..n]).first().map(|e| e.0)));
        }
        let want: Vec<_> = sent
            .iter()
            .filter(|(_, pass)| *pass)
            .map(|(d, _)| (d.len(), parse_exits(d).first().map(|e| e.0)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(want, vec![(76, Some(10)), (76, Some(16))]);
    }

    /// A connector socket from `open` with a 5 s receive timeout; `None` (the test is skipped,
    /// saying why) without root or a proc connector.
    fn kernel_socket(open: fn() -> std::io::Result<OwnedFd>) -> Option<OwnedFd> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skip: proc connector needs root");
            return None;
        }
        let fd = open()
            .map_err(|e| eprintln!("skip: proc connector unavailable: {e}"))
            .ok()?;
        let _ = nix::sys::socket::setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(5, 0),
        );
        Some(fd)
    }

    #[test]
    fn kernel_stamps_a_childs_exec_and_exit() {
        let Some(fd) = kernel_socket(subscribe_all) else {
            return;
        };
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let (mut exec, mut exit) = (None, None);
        while exit.is_none() {
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            for e in parse_events(&buf[..n])
                .into_iter()
                .filter(|e| e.tgid == pid)
            {
                match e.what {
                    PROC_EVENT_EXEC => exec = Some(e.time_ns),
                    _ => exit = Some(e.time_ns),
                }
            }
        }
        let (exec, exit) = (exec.expect("an exec event before the exit"), exit.unwrap());
        assert!(
            exec <= exit && exit - exec < 10_000_000_000,
            "{exec} {exit}"
        );
    }

    #[test]
    fn kernel_reports_a_childs_exit_status() {
        let Some(fd) = kernel_socket(subscribe) else {
            return;
        };
        // A thread's exit is filtered out in the kernel; so are forks and execs.
        std::thread::spawn(|| ()).join().unwrap();
        let child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 42"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut child = child;
        child.wait().unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            let exits = parse_exits(&buf[..n]);
            assert_eq!(
                exits.len(),
                1,
                "the filter passed a non-exit: {:?}",
                &buf[..n]
            );
            assert_eq!(exits[0].0, exits[0].1, "the filter passed a thread's exit");
            if let Some(&(_, _, code)) = exits.iter().find(|e| e.0 == pid) {
                assert_eq!(
                    Exit::from_wait_status(code, ExitSource::Kernel).code,
                    Some(42)
                );
                break;
            }
        }
    }
}
