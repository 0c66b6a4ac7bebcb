//! A foreground `run` or `exec`: wait for the container's process, forwarding the signals sent
//! to ociguard, and exit as it did.
//!
//! Signals are blocked only once the process exists: a mask set before would be inherited by
//! the container's process through clone and exec (libcontainer does not reset it). A signal
//! that arrives in between has its default effect on ociguard alone.

use std::process::ExitCode;

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::BuiltinError;

/// The signals passed on to the process (SIGCHLD is ours: it ends the wait).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
];

/// Wait for `pid` (a child of this process) to end; its exit status, or 128+N for signal N.
pub(super) fn wait(pid: Pid) -> Result<ExitCode, BuiltinError> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    for s in FORWARDED {
        set.add(*s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| {
        BuiltinError::Io {
            what: "block signals".to_owned(),
            source: e.into(),
        }
    })?;
    loop {
        // Reap first: the process may have ended before SIGCHLD was blocked.
        if let Some(code) = reap(pid)? {
            return Ok(code);
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => {
                // ESRCH: it has just ended; the next reap says how.
                let _ = kill(pid, sig);
            }
            Err(e) => {
                return Err(BuiltinError::Io {
                    what: "wait for signals".to_owned(),
                    source: e.into(),
                })
            }
        }
    }
}

/// Reap every ended child; `Some` once `pid` is among them.
fn reap(pid: Pid) -> Result<Option<ExitCode>, BuiltinError> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => {
                return Ok(Some(ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))))
            }
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => {
                return Ok(Some(ExitCode::from(128u8.saturating_add(sig as u8))))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                return Err(BuiltinError::Runtime {
                    what: format!("wait for process {pid}"),
                    message: "it is not a child of ociguard (already reaped?)".to_owned(),
                })
            }
            Err(e) => {
                return Err(BuiltinError::Io {
                    what: format!("wait for process {pid}"),
                    source: e.into(),
                })
            }
        }
    }
}
