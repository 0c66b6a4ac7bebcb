//! Container identity at `create`: put `ociguard-hook` into the bundle's hooks so ociguardd
//! learns the container before it runs, and refuse up front when identity is required and the
//! monitor is not there.
//!
//! The JSON edit itself is pure ([`ociguard_policy::identity`]); this module owns the two
//! facts that need the host: whether the hook binary is installed (crun fails a container whose
//! hook cannot be executed, so under best-effort a missing hook means "no hooks", not a broken
//! container) and whether the monitor answers (under `required` a `create` that cannot be
//! recorded fails here, with the reason in the engine's log, before crun creates anything).
//! The createRuntime hook is the second line: it fails the create if the monitor stops
//! answering in between.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
use ociguard_policy::change::Change;
use ociguard_policy::identity::{self as hooks, HookTarget};
use ociguard_policy::model::IdentityMode;
use ociguard_policy::oci_hooks::EngineLog;
use ociguard_policy::{Decision, LoadedPolicy, Rewritten};

use crate::argv::LogFormat;
use crate::Context;

/// How long `create` waits for the monitor's answer to a ping.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("identity is required by policy {policy:?}, but the identity hook {path} {reason} (install ociguard-hook or set hook_path in the ociguard config)")]
    HookUnusable {
        policy: String,
        path: PathBuf,
        reason: String,
    },
    #[error("identity is required by policy {policy:?}, but hooks cannot be added: {source}")]
    Inject {
        policy: String,
        source: hooks::IdentityError,
    },
    #[error("identity is required by policy {policy:?}, but the monitor at {socket} is not available ({reason}); start ociguardd — the container was not created")]
    MonitorDown {
        policy: String,
        socket: PathBuf,
        reason: String,
    },
}

/// Why `path` cannot serve as a hook, if it cannot.
pub(crate) fn hook_unusable(path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return Some("is not an absolute path".to_owned());
    }
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => None,
        Ok(_) => Some("is not an executable file".to_owned()),
        Err(e) => Some(format!("cannot be used ({e})")),
    }
}

/// Add (or, with identity off, remove) the identity hooks in `rewritten`'s document and record
/// the change. No side effects.
pub fn prepare(
    ctx: &Context<'_>,
    policy: &LoadedPolicy,
    rewritten: &mut Rewritten,
) -> Result<(), IdentityError> {
    let name = policy.name().to_owned();
    let mut mode = hooks::effective_mode(policy.policy.identity.mode, policy.policy.mode);
    // Required [behavior] rules are handed to ociguardd's guard by the identity hook, before
    // the container runs: it must not start unregistered.
    let b = &policy.policy.behavior;
    if b.mode == ociguard_policy::model::AppArmorMode::Required
        && policy.policy.mode == ociguard_policy::Mode::Enforce
    {
        mode = IdentityMode::Required;
    }
    let config = ctx.config;
    let engine_log = ctx.logger.path.as_deref().map(|path| EngineLog {
        path,
        json: ctx.logger.format == LogFormat::Json,
    });
    let target = HookTarget {
        hook_path: &config.hook_path,
        monitor_socket: &config.monitor_socket,
        spool_dir: &config.spool_dir,
        engine_log,
    };
    let unusable = if mode == IdentityMode::Off {
        None
    } else {
        hook_unusable(&config.hook_path)
    };
    let skip = |rewritten: &mut Rewritten, reason: String| {
        rewritten
            .decision
            .changes
            .push(Change::IdentityHooksSkipped { mode, reason });
    };
    match (mode, unusable) {
        (IdentityMode::Required, Some(reason)) => {
            return Err(IdentityError::HookUnusable {
                policy: name,
                path: config.hook_path.clone(),
                reason,
            })
        }
        (_, Some(reason)) => {
            // Best-effort: no hooks at all (and none of ours left over from an earlier create).
            // Removing cannot half-fail; a document it cannot edit is left as it is.
            let _ = hooks::inject_hooks(&mut rewritten.document, IdentityMode::Off, &target);
            let why = format!("identity hook {} {reason}", config.hook_path.display());
            ctx.logger.warn(&format!(
                "policy {name:?}: {why}; the container runs without an identity record"
            ));
            skip(rewritten, why);
        }
        (_, None) => {
            // All or nothing: under best-effort a bundle whose hooks cannot be edited keeps them.
            match hooks::inject_hooks(&mut rewritten.document, mode, &target) {
                Ok(_) => {
                    if mode != IdentityMode::Off {
                        rewritten.decision.changes.push(Change::IdentityHooks {
                            mode,
                            hook: config.hook_path.display().to_string(),
                        });
                    }
                }
                Err(source) if mode == IdentityMode::Required => {
                    return Err(IdentityError::Inject {
                        policy: name,
                        source,
                    })
                }
                Err(e) => skip(rewritten, e.to_string()),
            }
        }
    }
    Ok(())
}

/// The identity mode the decision's hooks were injected with, if any.
pub fn injected_mode(decision: &Decision) -> Option<IdentityMode> {
    decision.changes.iter().find_map(|c| match c {
        Change::IdentityHooks { mode, .. } => Some(*mode),
        _ => None,
    })
}

/// Under `required`, make sure the monitor answers before anything is created.
pub fn preflight(ctx: &Context<'_>, decision: &Decision) -> Result<(), IdentityError> {
    if injected_mode(decision) != Some(IdentityMode::Required) {
        return Ok(());
    }
    let socket = &ctx.config.monitor_socket;
    ping(socket, PREFLIGHT_TIMEOUT).map_err(|reason| IdentityError::MonitorDown {
        policy: decision.policy.clone(),
        socket: socket.clone(),
        reason,
    })
}

/// `{"op":"ping"}` → `{"ok":true}` (the monitor's protocol, see ociguard-monitor).
pub fn ping(socket: &Path, timeout: Duration) -> Result<(), String> {
    let addr = UnixAddr::new(socket).map_err(|e| format!("bad socket path: {e}"))?;
    // Non-blocking connect: a monitor whose listen queue is full must not hang `create`.
    let fd = socket_fd().map_err(|e| format!("socket: {e}"))?;
    connect(fd.as_raw_fd(), &addr).map_err(|e| format!("connect: {}", e.desc()))?;
    let stream = UnixStream::from(fd);
    let io = |e: std::io::Error| e.to_string();
    stream.set_nonblocking(false).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    (&stream)
        .write_all(b"{\"op\":\"ping\"}\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut line = String::new();
    BufReader::new(&stream)
        .take(4096)
        .read_line(&mut line)
        .map_err(|e| format!("receive: {e}"))?;
    let answer: serde_json::Value =
        serde_json::from_str(line.trim_end()).map_err(|_| format!("unexpected answer {line:?}"))?;
    if answer.get("ok") == Some(&serde_json::Value::Bool(true)) {
        Ok(())
    } else {
        Err(format!("unexpected answer {}", line.trim_end()))
    }
}

fn socket_fd() -> nix::Result<std::os::fd::OwnedFd> {
    socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn ping_answers_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("m.sock");
        let err = ping(&sock, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("connect"), "{err}");
        let listener = UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            for reply in [&b"{\"ok\":true}\n"[..], b"garbage\n"] {
                let (mut s, _) = listener.accept().unwrap();
                let mut line = String::new();
                BufReader::new(&s).read_line(&mut line).unwrap();
                assert_eq!(line, "{\"op\":\"ping\"}\n");
                s.write_all(reply).unwrap();
            }
        });
        ping(&sock, Duration::from_secs(2)).unwrap();
        assert!(ping(&sock, Duration::from_secs(2)).is_err());
        t.join().unwrap();
    }

    #[test]
    fn unusable_hooks() {
        assert!(hook_unusable(Path::new("relative")).is_some());
        assert!(hook_unusable(Path::new("/nonexistent/ociguard-hook")).is_some());
        // A regular file without execute bits (not /etc/hostname: some hosts have it 0755).
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("not-executable");
        std::fs::write(&plain, "x").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(hook_unusable(&plain).is_some());
        assert!(hook_unusable(Path::new("/bin/sh")).is_none());
    }
}
