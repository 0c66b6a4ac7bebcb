//! Handing the command to the real runtime.
//!
//! The shim's library never execs: it returns an [`Outcome`] saying what to run, and `main`
//! performs it through a [`Delegate`]. Tests substitute a delegate that records argv.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// What `main` must do once the library has done its work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// execve the runtime with these arguments (argv[0] excluded).
    Exec {
        runtime: PathBuf,
        args: Vec<OsString>,
    },
    /// Write `stdout` (the command's protocol output) and exit 0.
    Print { stdout: Vec<u8> },
    /// Write `stdout`, then exec (used by `--version`: our line, then the runtime's).
    PrintThenExec {
        stdout: Vec<u8>,
        runtime: PathBuf,
        args: Vec<OsString>,
    },
}

pub trait Delegate {
    /// Replace the current process with `runtime args...`; returns only on failure.
    fn exec(&self, runtime: &Path, args: &[OsString]) -> std::io::Error;
}

/// The real thing: `execv(2)`, keeping environment, fds, signal mask and SIGPIPE disposition.
#[derive(Debug, Default)]
pub struct Execve;

impl Delegate for Execve {
    fn exec(&self, runtime: &Path, args: &[OsString]) -> std::io::Error {
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
}
