//! The last steps in a container's process before it execs the workload: the engine's SIGPIPE
//! disposition, and for a process started by `exec`, the container's seccomp filter.
//!
//! SIGPIPE: ociguard keeps it ignored (Rust's default), so that a hook that exits without
//! reading the state libcontainer writes to it cannot kill ociguard mid-create. An ignored
//! signal stays ignored across execve, so the workload gets the engine's disposition back here,
//! in its own process, right before the exec.
//!
//! seccomp: crun and runc load the container's `linux.seccomp` into every process they `exec` into it.
//! libcontainer 0.7 does not: the spec its exec builds keeps the container's namespaces,
//! cgroup, personality and time offsets, not its seccomp profile, so an exec'd shell would run
//! without the filter ociguard's policy put on the container. This executor closes that gap:
//! it runs in the new process after libcontainer's own set-up, loads the container's profile
//! (read from its bundle, which ociguard checked against the container's record before the
//! exec got here), then execs the payload as libcontainer's default executor does.
//!
//! Without no_new_privileges and CAP_SYS_ADMIN, the kernel refuses a filter (EACCES). The
//! process then gets no_new_privileges and the filter is loaded again: a tightening (a
//! set-uid program in the exec'd process no longer gains privileges), never an exec without
//! the filter. A profile with a `SCMP_ACT_NOTIFY` rule or a listener is refused: its notify
//! fd would have no one to go to.

use libcontainer::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

#[derive(Clone, Debug)]
pub(super) struct WorkloadExecutor {
    seccomp: Option<LinuxSeccomp>,
}

impl WorkloadExecutor {
    /// For a container's init: libcontainer loads its seccomp filter itself.
    pub(super) fn init() -> Self {
        WorkloadExecutor { seccomp: None }
    }

    /// For a process `exec`'d into a container whose profile is `seccomp`; `Err` says why the
    /// exec is refused.
    pub(super) fn exec(seccomp: Option<LinuxSeccomp>) -> Result<Self, String> {
        if let Some(s) = &seccomp {
            let notify = s
                .syscalls()
                .iter()
                .flatten()
                .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
                || s.default_action() == LinuxSeccompAction::ScmpActNotify;
            if notify || s.listener_path().is_some() {
                return Err(
                    "the container's seccomp profile sends notifications (SCMP_ACT_NOTIFY): \
                            the builtin runtime cannot give an exec'd process a listener"
                        .to_owned(),
                );
            }
        }
        Ok(WorkloadExecutor { seccomp })
    }
}

impl Executor for WorkloadExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        crate::sys::restore_sigpipe();
        if let Some(seccomp) = &self.seccomp {
            load(seccomp)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn load(seccomp: &LinuxSeccomp) -> Result<(), ExecutorError> {
    let first = match libcontainer::seccomp::initialize_seccomp(seccomp) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if nix::sys::prctl::get_no_new_privs().unwrap_or(true) {
        return Err(ExecutorError::Other(format!(
            "load the container's seccomp filter: {}",
            super::chain(&first)
        )));
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| {
        ExecutorError::Other(format!(
            "set no_new_privileges to load the seccomp filter: {e}"
        ))
    })?;
    libcontainer::seccomp::initialize_seccomp(seccomp)
        .map(|_| ())
        .map_err(|e| {
            ExecutorError::Other(format!(
                "load the container's seccomp filter: {}",
                super::chain(&e)
            ))
        })
}
