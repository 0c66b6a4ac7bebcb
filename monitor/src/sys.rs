//! The raw syscalls the monitor needs that `nix` does not wrap: a netlink socket for the kernel
//! connector (`NETLINK_CONNECTOR` is missing from nix's `SockProtocol`), a classic BPF socket
//! filter (`SO_ATTACH_FILTER`), and two allocator tunables.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// `NETLINK_CONNECTOR` from `<linux/netlink.h>`.
const NETLINK_CONNECTOR: libc::c_int = 11;

/// A close-on-exec `AF_NETLINK`/`NETLINK_CONNECTOR` datagram socket.
pub fn connector_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes only integer arguments and touches no memory of ours.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_CONNECTOR,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid, and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One classic BPF instruction.
pub type BpfInsn = libc::sock_filter;

/// Attach `program` to `fd` (`SO_ATTACH_FILTER`): the kernel runs it on every datagram before
/// queueing it, so what it drops never wakes the reader.
pub fn attach_filter(fd: &OwnedFd, program: &[BpfInsn]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = u16::try_from(program.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    let prog = libc::sock_fprog {
        len,
        // The kernel copies the program and never writes through this pointer.
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies
    // `len` instructions from it and validates them before attaching.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// glibc's malloc keeps one arena per thread that ever allocated (up to 8 per core) and returns
/// little to the kernel: a daemon with a thread per connection then holds far more memory than
/// it uses. Two arenas are plenty for one writer and a few readers.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator tunable; called before the daemon's threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Give freed heap memory back to the kernel (after replay, compaction, large answers).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}
