//! Handing the command to the real runtime.
//!
//! The shim's library never execs: it returns an [`Outcome`] saying what to run, and `main`
//! performs it through a [`Delegate`]: [`Execve`] for a runtime binary (crun, runc), or the
//! runtime built into ociguard ([`crate::builtin::Builtin`], when compiled in). Tests
//! substitute a delegate that records argv.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ociguard_policy::config::Runtime;

use crate::logging::Logger;

/// What `main` must do once the library has done its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Delegate to the runtime with these arguments (argv[0] excluded).
    Exec {
        runtime: Runtime,
        args: Vec<OsString>,
    },
    /// Write `stdout` (the command's protocol output) and exit 0.
    Print { stdout: Vec<u8> },
    /// Write `stdout`, then delegate (used by `--version`: our line, then the runtime's).
    PrintThenExec {
        stdout: Vec<u8>,
        runtime: Runtime,
        args: Vec<OsString>,
    },
}

/// Something that carries out a runc command line.
pub trait Delegate {
    /// Carry out `args` (argv without argv[0]) and say how the process must exit. A delegate
    /// that replaces the process returns only when it could not.
    fn run(&self, args: &[OsString], logger: &Logger) -> ExitCode;
}

/// Whether this `ociguard` has the builtin runtime compiled in.
pub const HAS_BUILTIN: bool = cfg!(feature = "builtin");

/// The delegate for a resolved runtime.
pub fn for_runtime(runtime: &Runtime) -> Box<dyn Delegate> {
    match runtime {
        Runtime::Exec(path) => Box::new(Execve(path.clone())),
        #[cfg(feature = "builtin")]
        Runtime::Builtin => Box::new(crate::builtin::Builtin),
        // Never resolved without the feature (`resolve_runtime` is told it is absent).
        #[cfg(not(feature = "builtin"))]
        Runtime::Builtin => Box::new(Missing),
    }
}

#[cfg(not(feature = "builtin"))]
#[derive(Debug)]
struct Missing;

#[cfg(not(feature = "builtin"))]
impl Delegate for Missing {
    fn run(&self, _: &[OsString], logger: &Logger) -> ExitCode {
        logger.error("this ociguard was built without the builtin runtime");
        ExitCode::FAILURE
    }
}

/// A runtime binary, by `execv(2)`: keeps environment, fds, signal mask and SIGPIPE
/// disposition.
#[derive(Debug)]
pub struct Execve(pub PathBuf);

impl Delegate for Execve {
    fn run(&self, args: &[OsString], logger: &Logger) -> ExitCode {
        let err = exec(&self.0, args);
        logger.error(&format!("exec {}: {err}", self.0.display()));
        // 127/126 like a shell: "not found" vs "found but could not run".
        ExitCode::from(if err.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        })
    }
}

/// Replace the current process with `runtime args...`; returns only on failure.
fn exec(runtime: &Path, args: &[OsString]) -> std::io::Error {
    let to_c = |s: &[u8]| {
        CString::new(s).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "argument contains NUL")
        })
    };
    let path = match to_c(runtime.as_os_str().as_bytes()) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut argv = Vec::with_capacity(args.len() + 1);
    argv.push(path.clone());
    for a in args {
        match to_c(a.as_bytes()) {
            Ok(c) => argv.push(c),
            Err(e) => return e,
        }
    }
    crate::sys::execv(&path, &argv)
}
