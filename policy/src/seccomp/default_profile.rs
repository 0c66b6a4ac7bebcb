//! The data behind `seccomp::builtin_profile`: which syscalls ociguard's own profile lets a
//! container make, grouped by what needs them.
//!
//! Rule for editing: a name may be allowed here only if Podman's default profile
//! (containers/common) allows it too, since ociguard promises to be at least as strict as the
//! engine default it stands in for. The tests in `seccomp.rs` check this against a fixed list of
//! what Podman denies and, when `test-bundles/build.sh` has captured one, against a real Podman
//! `config.json`. Anything not listed falls to the default action (EPERM, or a log entry in
//! audit mode).
//!
//! Deliberately left out although Podman allows them (an ociguard container gets less):
//! `mount`/`umount2`/`pivot_root`/`unshare`/`setns` and the new mount API (Podman leaves these to
//! capabilities; we do not rely on the engine's capability set, because a bare bundle may keep
//! CAP_SYS_ADMIN), `ptrace`/`process_vm_*`/`pidfd_getfd` (cross-process memory and fd access),
//! `keyctl` (the kernel keyring is not namespaced), `io_uring_*` (a large, repeatedly exploited
//! kernel surface, and its operations bypass seccomp entirely), `syslog`, `reboot`,
//! `name_to_handle_at`, `fanotify_mark`, `modify_ldt` (CVE-2015-5157 class of LDT bugs),
//! `get_mempolicy`/`mbind`/`set_mempolicy` and `memfd_secret`/`process_mrelease`, which
//! ordinary programs do not need.

/// Allowed unconditionally on every architecture: names that the x86_64 table and the generic
/// table (aarch64, riscv64) share.
pub(super) const ALLOW_COMMON: &[&str] = &[
    // Process lifetime. `clone` and `clone3` get their own rules in `seccomp.rs`.
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "restart_syscall",
    "wait4",
    "waitid",
    // Threads and their synchronisation; glibc registers rseq and the robust futex list at
    // every thread start.
    "futex",
    "get_robust_list",
    "gettid",
    "membarrier",
    "rseq",
    "sched_yield",
    "set_robust_list",
    "set_tid_address",
    // Memory. mlock is bounded by RLIMIT_MEMLOCK, not by the filter.
    "brk",
    "madvise",
    "memfd_create",
    "mincore",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    // Signals. pidfd_open/pidfd_send_signal only reach processes `kill` could reach.
    "kill",
    "pidfd_open",
    "pidfd_send_signal",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "tgkill",
    "tkill",
    // Credentials and sessions. Changing ids still needs CAP_SETUID/CAP_SETGID, which the
    // kernel checks; a filter cannot tell a harmless setuid from a harmful one.
    "capget",
    "capset",
    "getegid",
    "geteuid",
    "getgid",
    "getgroups",
    "getpgid",
    "getpid",
    "getppid",
    "getresgid",
    "getresuid",
    "getsid",
    "getuid",
    "setfsgid",
    "setfsuid",
    "setgid",
    "setgroups",
    "setpgid",
    "setregid",
    "setresgid",
    "setresuid",
    "setreuid",
    "setsid",
    "setuid",
    // Process attributes, limits and accounting. prctl is needed by crun's init (no_new_privs,
    // PR_SET_KEEPCAPS) and by most language runtimes.
    "getcpu",
    "getpriority",
    "getrlimit",
    "getrusage",
    "ioprio_get",
    "ioprio_set",
    "prctl",
    "prlimit64",
    "setpriority",
    "setrlimit",
    "sysinfo",
    "times",
    "umask",
    "uname",
    // Scheduling. Raising priority or real-time policies still needs CAP_SYS_NICE.
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    // Clocks and timers. adjtimex/clock_adjtime only read the clock without CAP_SYS_TIME;
    // setting it (clock_settime, settimeofday) is not allowed.
    "adjtimex",
    "clock_adjtime",
    "clock_getres",
    "clock_gettime",
    "clock_nanosleep",
    "getitimer",
    "gettimeofday",
    "nanosleep",
    "setitimer",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_settime",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_settime",
    // File descriptors and I/O.
    "close",
    "close_range",
    "copy_file_range",
    "dup",
    "dup3",
    "fcntl",
    "flock",
    "ioctl",
    "lseek",
    "openat",
    "openat2",
    "pipe2",
    "pread64",
    "preadv",
    "preadv2",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readv",
    "sendfile",
    "splice",
    "tee",
    "write",
    "writev",
    // Persisting and preallocating file data.
    "fadvise64",
    "fallocate",
    "fdatasync",
    "fsync",
    "ftruncate",
    "readahead",
    "sync",
    "syncfs",
    "truncate",
    // File metadata and directory traversal. chroot is allowed as Podman does with its default
    // CAP_SYS_CHROOT (sshd's privilege separation needs it); it cannot leave the container's
    // mount namespace.
    "chdir",
    "chroot",
    "faccessat",
    "faccessat2",
    "fchdir",
    "fstat",
    "fstatfs",
    "getcwd",
    "getdents64",
    "readlinkat",
    "statfs",
    "statx",
    "utimensat",
    // Creating, changing and removing files. mknod of device nodes is governed by the device
    // cgroup and CAP_MKNOD, not here.
    "fchmod",
    "fchmodat",
    "fchown",
    "fchownat",
    "linkat",
    "mkdirat",
    "mknodat",
    "renameat",
    "renameat2",
    "symlinkat",
    "unlinkat",
    // Extended attributes (security.* and trusted.* are checked by the kernel).
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lsetxattr",
    "removexattr",
    "setxattr",
    // Waiting for events.
    "epoll_create1",
    "epoll_ctl",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    "inotify_add_watch",
    "inotify_init1",
    "inotify_rm_watch",
    "ppoll",
    "pselect6",
    "signalfd4",
    // Sockets. `socket` itself is allowed per address family, see `SOCKET_FAMILIES`.
    "accept",
    "accept4",
    "bind",
    "connect",
    "getpeername",
    "getsockname",
    "getsockopt",
    "listen",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "shutdown",
    "socketpair",
    // System V and POSIX IPC; both are namespaced by the container's IPC namespace.
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedsend",
    "mq_unlink",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    // Linux AIO (databases use it). io_uring is left out, see the module comment.
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_setup",
    "io_submit",
    // Randomness and self-sandboxing: seccomp and landlock can only restrict the caller
    // further, never lift this filter.
    "getrandom",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "seccomp",
];

/// x86_64 only: the pre-`*at` calls the generic syscall table dropped (glibc and musl on x86_64
/// still use several of them, busybox most), x86 TLS setup, and `newfstatat`/`sync_file_range`,
/// which the syscalls crate's aarch64 table spells differently (so they cannot be common).
#[cfg(target_arch = "x86_64")]
pub(super) const ALLOW_HOST: &[&str] = &[
    // Thread-local storage: arch_prctl(ARCH_SET_FS) for 64-bit, *_thread_area for 32-bit.
    "arch_prctl",
    "get_thread_area",
    "set_thread_area",
    // Process creation without flags to filter.
    "fork",
    "vfork",
    // Legacy path and descriptor calls.
    "access",
    "chmod",
    "chown",
    "creat",
    "dup2",
    "futimesat",
    "getdents",
    "lchown",
    "link",
    "lstat",
    "mkdir",
    "mknod",
    "newfstatat",
    "open",
    "pipe",
    "readlink",
    "rename",
    "rmdir",
    "stat",
    "symlink",
    "sync_file_range",
    "unlink",
    "utime",
    "utimes",
    // Legacy event, time and signal calls.
    "alarm",
    "epoll_create",
    "epoll_wait",
    "eventfd",
    "getpgrp",
    "inotify_init",
    "pause",
    "poll",
    "select",
    "signalfd",
    "time",
];

/// Names for the 32-bit x86 ABI (`SCMP_ARCH_X86`), which x86_64 kernels run unless
/// IA32_EMULATION is off. libseccomp resolves them for that sub-architecture; they are not in
/// the x86_64 table, which is why the tests accept exactly this list besides the host table.
#[cfg(target_arch = "x86_64")]
pub(super) const ALLOW_OTHER_ABI: &[&str] = &[
    // Large-file and 32-bit-uid variants of calls allowed above.
    "_llseek",
    "chown32",
    "fadvise64_64",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat64",
    "fstatfs64",
    "ftruncate64",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "lchown32",
    "lstat64",
    "mmap2",
    "sendfile64",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "stat64",
    "statfs64",
    "truncate64",
    "ugetrlimit",
    // Multiplexers and old entry points i386 libcs still call: socketcall and ipc carry the
    // socket and SysV IPC calls on older kernels; sigreturn returns from non-SA_SIGINFO
    // handlers; waitpid is used by old static binaries.
    "_newselect",
    "ipc",
    "sigreturn",
    "socketcall",
    "waitpid",
    // 64-bit time_t variants (y2038) of calls allowed above.
    "clock_adjtime64",
    "clock_getres_time64",
    "clock_gettime64",
    "clock_nanosleep_time64",
    "futex_time64",
    "mq_timedreceive_time64",
    "mq_timedsend_time64",
    "ppoll_time64",
    "pselect6_time64",
    "recvmmsg_time64",
    "rt_sigtimedwait_time64",
    "sched_rr_get_interval_time64",
    "semtimedop_time64",
    "timer_gettime64",
    "timer_settime64",
    "timerfd_gettime64",
    "timerfd_settime64",
    "utimensat_time64",
];

/// aarch64: nothing beyond the common set under the syscalls crate's spelling.
#[cfg(target_arch = "aarch64")]
pub(super) const ALLOW_HOST: &[&str] = &[];

/// Names the syscalls crate's aarch64 table does not carry but libseccomp resolves: two native
/// calls that the crate spells differently (`fstatat`, `sync_file_range2`), and the 32-bit ARM
/// EABI (`SCMP_ARCH_ARM`) names for calls allowed above.
#[cfg(target_arch = "aarch64")]
pub(super) const ALLOW_OTHER_ABI: &[&str] = &[
    // Native aarch64, libseccomp's (and the kernel's) spelling.
    "newfstatat",
    "sync_file_range",
    // ARM EABI: TLS setup (every 32-bit program) and cache flushing (JIT compilers).
    "cacheflush",
    "set_tls",
    // ARM EABI: process creation and legacy path and descriptor calls.
    "access",
    "chmod",
    "chown",
    "creat",
    "dup2",
    "epoll_create",
    "epoll_wait",
    "eventfd",
    "fork",
    "futimesat",
    "getdents",
    "getpgrp",
    "inotify_init",
    "lchown",
    "link",
    "lstat",
    "mkdir",
    "mknod",
    "open",
    "pause",
    "pipe",
    "poll",
    "readlink",
    "rename",
    "rmdir",
    "signalfd",
    "stat",
    "symlink",
    "unlink",
    "utimes",
    "vfork",
    // ARM EABI: large-file, 32-bit-uid and ARM-specific variants of calls allowed above.
    "_llseek",
    "_newselect",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "chown32",
    "fchown32",
    "fcntl64",
    "fstat64",
    "fstatat64",
    "fstatfs64",
    "ftruncate64",
    "getegid32",
    "geteuid32",
    "getgid32",
    "getgroups32",
    "getresgid32",
    "getresuid32",
    "getuid32",
    "lchown32",
    "lstat64",
    "mmap2",
    "recv",
    "send",
    "sendfile64",
    "setfsgid32",
    "setfsuid32",
    "setgid32",
    "setgroups32",
    "setregid32",
    "setresgid32",
    "setresuid32",
    "setreuid32",
    "setuid32",
    "sigreturn",
    "stat64",
    "statfs64",
    "truncate64",
    "ugetrlimit",
];

/// Other architectures get the common set only; ociguard is built and tested for x86_64 and
/// aarch64, and guessing another table's legacy names would be untested.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const ALLOW_HOST: &[&str] = &[];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const ALLOW_OTHER_ABI: &[&str] = &[];

/// The `architectures` of the profile: the host's and the compat ABIs its kernel can run.
/// libseccomp kills a process that enters the kernel through an ABI the filter does not list,
/// so without these a 32-bit binary could not run at all; listed, it gets the same allowlist.
#[cfg(target_arch = "x86_64")]
pub(super) const ARCHITECTURES: &[&str] = &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];

#[cfg(target_arch = "aarch64")]
pub(super) const ARCHITECTURES: &[&str] = &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];

/// Elsewhere only the native ABI (an empty list means "native" to crun).
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const ARCHITECTURES: &[&str] = &[];

/// Namespace flags `clone` must not carry: CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS |
/// CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET. Creating namespaces is the usual
/// first step of container escapes through kernel bugs reachable only with (user-)namespaced
/// capabilities. CLONE_NEWTIME is not here because in clone(2) that bit is part of the exit
/// signal; only clone3 can ask for it, and clone3 is refused below.
pub(super) const CLONE_NAMESPACE_FLAGS: u64 = 0x0002_0000 // CLONE_NEWNS
    | 0x0200_0000 // CLONE_NEWCGROUP
    | 0x0400_0000 // CLONE_NEWUTS
    | 0x0800_0000 // CLONE_NEWIPC
    | 0x1000_0000 // CLONE_NEWUSER
    | 0x2000_0000 // CLONE_NEWPID
    | 0x4000_0000; // CLONE_NEWNET

/// Syscalls refused with ENOSYS rather than the default EPERM, because libc probes them and
/// falls back to an older call only on ENOSYS:
/// - clone3 passes its flags in memory, where seccomp cannot see the namespace flags, so it is
///   refused and glibc retries with clone, whose flags are filtered.
/// - fchmodat2 (Linux 6.6) is newer than Podman's profile; glibc 2.39+ tries it for
///   fchmodat(AT_SYMLINK_NOFOLLOW) and would fail with EPERM instead of falling back.
pub(super) const ENOSYS_FALLBACK: &[&str] = &["clone3", "fchmodat2"];

/// personality(2) values allowed (argument 0), as in Podman: everything else can turn on
/// READ_IMPLIES_EXEC or ADDR_NO_RANDOMIZE and weaken exploit mitigations.
pub(super) const PERSONALITY_SAFE: &[u64] = &[
    0x0000_0000, // PER_LINUX
    0x0000_0008, // PER_LINUX32 (setarch i686 / linux32)
    0x0002_0000, // PER_LINUX | UNAME26
    0x0002_0008, // PER_LINUX32 | UNAME26
    0xffff_ffff, // query the current persona without changing it
];

/// Address families a container may open sockets in (argument 0 of socket(2)). An allowlist,
/// so newly added or rarely used families (AF_VSOCK and AF_ALG, which Podman now blocks,
/// AF_KEY, AF_BLUETOOTH, AF_XDP, ...) stay closed. Raw AF_PACKET and AF_INET sockets still need
/// CAP_NET_RAW.
pub(super) const SOCKET_FAMILIES: &[u64] = &[
    1,  // AF_UNIX
    2,  // AF_INET
    10, // AF_INET6
    17, // AF_PACKET
];

/// AF_NETLINK is allowed for every protocol but NETLINK_AUDIT: routing (getaddrinfo,
/// iproute2), uevents and netfilter work, while writing to the host's audit log does not
/// (Podman blocks it unless the container has CAP_AUDIT_WRITE).
pub(super) const AF_NETLINK: u64 = 16;
pub(super) const NETLINK_AUDIT: u64 = 9;
