//! The runtime built into `ociguard`: youki's `libcontainer`, run in process.
//!
//! Chosen by `runtime = "builtin"` in config.toml, or when the search list (crun, runc) finds
//! nothing on the host. It takes over after the policy work is done, exactly where `execve` of
//! crun would: the same argv (as ociguard rewrote it), the same bundle (as ociguard rewrote
//! it), the same stdio and inherited fds. So everything ociguard injects — seccomp, hooks
//! (identity, egress), capabilities, no_new_privileges — reaches the container unchanged;
//! libcontainer applies `linux.seccomp` with libseccomp itself (it does not read crun's
//! precompiled-filter annotation, which ociguard therefore never sets for it).
//!
//! Contract, as runc's: stdout carries only a command's defined output (`state`, `ps`,
//! `features`, `--version`); errors go to stderr and the `--log` file in its `--log-format`;
//! exit status 0 on success, 1 on error, the container process's status for a foreground
//! `run`/`exec` (128+N when a signal ended it).
//!
//! Containers live under `--root` (default [`DEFAULT_ROOT`]), one directory each, in
//! libcontainer's layout: a `state.json` and its config summary. This is not crun's layout, so
//! containers created by one delegate are not visible to the other.

mod commands;
mod foreground;
mod mounts;
mod network;
mod workload;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::argv::Invocation;
use crate::logging::Logger;

pub use commands::state_json;

/// Where containers live when the engine passes no `--root`.
pub const DEFAULT_ROOT: &str = "/run/ociguard/builtin";

/// What a builtin command did wrong, with the container it was about.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinError {
    #[error("container {id} does not exist (root {root})")]
    NotFound { id: String, root: PathBuf },
    #[error("{what}: {message}")]
    Runtime { what: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("`{command}` is not supported by the builtin runtime{hint}")]
    Unsupported { command: String, hint: &'static str },
    #[error("{0}")]
    Usage(String),
}

impl BuiltinError {
    /// A libcontainer (or libcgroups) error, with its whole chain of causes: their
    /// messages alone are often one word ("invalid input").
    pub(crate) fn runtime(what: impl Into<String>, err: &dyn std::error::Error) -> Self {
        BuiltinError::Runtime {
            what: what.into(),
            message: chain(err),
        }
    }
}

/// `err: cause: cause...`, skipping a cause whose text its parent already says.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The in-process runtime, as a [`crate::Delegate`].
#[derive(Debug, Default)]
pub struct Builtin;

impl crate::Delegate for Builtin {
    fn run(&self, args: &[OsString], logger: &Logger) -> ExitCode {
        match run(args, logger) {
            Ok(code) => code,
            Err(e) => {
                logger.error(&e.to_string());
                ExitCode::FAILURE
            }
        }
    }
}

/// Carry out the runc command `args` (argv without argv[0]).
pub fn run(args: &[OsString], logger: &Logger) -> Result<ExitCode, BuiltinError> {
    let invocation =
        crate::argv::parse(args).map_err(|e| BuiltinError::Usage(format!("command line: {e}")))?;
    commands::dispatch(&invocation, logger)
}

/// The container directory for `id` under the invocation's root.
pub(crate) fn root_of(invocation: &Invocation) -> &Path {
    invocation
        .global
        .root
        .as_deref()
        .unwrap_or(Path::new(DEFAULT_ROOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(&'static str, #[source] Option<Box<E>>);

    #[test]
    fn the_whole_chain_without_repeats() {
        let inner = E("failed to prepare rootfs", None);
        let mid = E("exec process failed", Some(Box::new(inner)));
        assert_eq!(chain(&mid), "exec process failed: failed to prepare rootfs");
        // A transparent wrapper repeats its source's text: said once.
        let same = E(
            "failed to prepare rootfs",
            Some(Box::new(E("failed to prepare rootfs", None))),
        );
        assert_eq!(chain(&same), "failed to prepare rootfs");
    }
}
