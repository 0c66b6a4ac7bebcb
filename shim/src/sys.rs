//! The few raw syscalls the shim needs, in one place.
//!
//! Delegation must hand crun the process exactly as the engine made it. Rust's runtime sets
//! SIGPIPE to "ignore" before `main`, and `std::process::Command` resets the signal mask and
//! SIGPIPE before exec; either would change what crun inherits. So the original SIGPIPE
//! disposition is captured from an `.init_array` constructor (which runs before Rust's runtime
//! init), restored just before a raw `execv(2)`, and the signal mask is left alone.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

static SIGPIPE_WAS_IGNORED: AtomicBool = AtomicBool::new(false);

extern "C" fn capture_sigpipe() {
    // SAFETY: sigaction with a null new action only reads the current disposition into `old`,
    // a zero-initialised, properly aligned local.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) == 0 {
            SIGPIPE_WAS_IGNORED.store(old.sa_sigaction == libc::SIG_IGN, Ordering::Relaxed);
        }
    }
}

#[used]
#[link_section = ".init_array"]
static CAPTURE_SIGPIPE: extern "C" fn() = capture_sigpipe;

/// Put SIGPIPE back to the disposition the engine gave this process: before an exec of the
/// delegate, and in a container's process right before the builtin runtime execs its workload
/// (an ignored signal stays ignored across execve, so Rust's "ignore" would reach it).
pub fn restore_sigpipe() {
    let disposition = if SIGPIPE_WAS_IGNORED.load(Ordering::Relaxed) {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: installing SIG_DFL/SIG_IGN for SIGPIPE has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, disposition);
    }
}

/// Set the `lo` interface up in the calling thread's network namespace (SIOCSIFFLAGS), as runc
/// and crun do in a network namespace they create.
#[cfg(feature = "builtin")]
pub fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `ifreq` is plain data, zero-initialised; the name fits with its NUL; the two
    // ioctls read and write only that struct, and `sock` is an open socket for their duration.
    // (`as _`: the request's type is c_ulong with glibc, c_int with musl.)
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restore SIGPIPE to what the engine gave us and execv `path` with `argv` (argv[0] included).
/// Returns only on failure.
pub fn execv(path: &CString, argv: &[CString]) -> std::io::Error {
    restore_sigpipe();
    match nix::unistd::execv(path, argv) {
        Ok(never) => match never {},
        Err(errno) => std::io::Error::from(errno),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn captured_before_main() {
        // The test harness is a normal Rust binary: SIGPIPE was default when the constructor ran.
        assert!(!super::SIGPIPE_WAS_IGNORED.load(std::sync::atomic::Ordering::Relaxed));
    }
}

/// Debian's static libseccomp is compiled with `_FORTIFY_SOURCE` against glibc: its PFC exporter
/// (`gen_pfc.o`, `seccomp_export_pfc`, which ociguard never calls) calls glibc's fortified
/// `__fprintf_chk`, which musl does not have. The musl build of `ociguard` (started on every
/// runtime call: musl skips glibc's `cpuid` probing at start) defines it as an export that
/// fails, so the archive links; nothing else in libseccomp refers to it.
#[cfg(target_env = "musl")]
#[no_mangle]
pub extern "C" fn __fprintf_chk(
    _stream: *mut libc::c_void,
    _flag: libc::c_int,
    _format: *const libc::c_char,
) -> libc::c_int {
    -1
}
