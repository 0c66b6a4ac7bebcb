//! The one raw syscall the monitor needs that `nix` does not wrap: a netlink socket for the
//! kernel connector (`NETLINK_CONNECTOR` is missing from nix's `SockProtocol`).
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
