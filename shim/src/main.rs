//! `ociguard`: a drop-in OCI runtime. Thin: parse, let the library decide, hand the command to
//! the delegate runtime (crun/runc by execve, or the builtin one in process).

use std::io::Write;
use std::process::ExitCode;

use ociguard_shim::Outcome;

/// A run of `ociguard` is short and ends in `execve` or exit: its heap is never returned
/// (musl's allocator would unmap and remap as blocks come and go; see `ociguard_heap`).
#[global_allocator]
static HEAP: ociguard_heap::Heap = ociguard_heap::heap();

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (logger, result) = ociguard_shim::run(&args);
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            logger.error(&e.to_string());
            return ExitCode::FAILURE;
        }
    };
    let (stdout, delegate) = match outcome {
        Outcome::Exec { runtime, args } => (None, Some((runtime, args))),
        Outcome::Print { stdout } => (Some(stdout), None),
        Outcome::PrintThenExec {
            stdout,
            runtime,
            args,
        } => (Some(stdout), Some((runtime, args))),
    };
    if let Some(bytes) = stdout {
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(&bytes).and_then(|()| out.flush()) {
            logger.error(&format!("write stdout: {e}"));
            return ExitCode::FAILURE;
        }
    }
    match delegate {
        Some((runtime, args)) => ociguard_shim::delegate::for_runtime(&runtime).run(&args, &logger),
        None => ExitCode::SUCCESS,
    }
}
