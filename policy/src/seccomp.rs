//! Seccomp in `config.json` (`linux.seccomp`): ociguard's built-in profile for bundles that
//! arrive without one, and narrowing an engine's profile by policy (enforce: deny with an
//! errno; audit: log).
//!
//! Profiles are edited as raw JSON rather than through typed structs, so every field ociguard
//! does not model (`flags`, `listenerPath`, `listenerMetadata`, `defaultErrnoRet`, engine
//! extensions, fields from a newer runtime-spec) reaches crun untouched and in its original
//! order. This module must never loosen a profile: every edit either removes a syscall from a
//! rule that would let it through or adds a rule that denies or logs it.
//!
//! Here: the errno and deny-action vocabulary and the built-in profile (its allowlist, as data,
//! in `seccomp/default_profile.rs`); narrowing, [`narrow()`], is in `seccomp/narrow.rs`.

use std::str::FromStr;

use serde_json::{json, Map, Value};

// The allowlist is data, kept in its own file so that a review of what a container may do is a
// review of one list.
mod default_profile;
mod narrow;

pub use narrow::{narrow, NarrowOutcome, SeccompError};

/// Largest errno `SCMP_ACT_ERRNO` can return: the kernel treats larger return values as
/// addresses (MAX_ERRNO in include/linux/err.h).
const MAX_ERRNO: u32 = 4095;

/// ENOSYS on every architecture ociguard supports (asm-generic and x86 agree).
const ENOSYS: u32 = 38;

/// Errno values a policy may name for denied syscalls.
///
/// Variant names are errno(3)'s so that a policy file reads `errno = "EPERM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
pub enum Errno {
    /// "Operation not permitted": what a capability check would say. The default.
    #[default]
    EPERM,
    /// "Permission denied".
    EACCES,
    /// "Function not implemented": makes libc and language runtimes fall back to older calls.
    ENOSYS,
    /// "Invalid argument".
    EINVAL,
    /// "No such file or directory".
    ENOENT,
}

impl Errno {
    /// The number the syscall returns. These are the asm-generic values, which x86_64 and
    /// aarch64 share (only alpha, mips, parisc and sparc differ).
    pub fn code(self) -> u32 {
        match self {
            Errno::EPERM => 1,
            Errno::ENOENT => 2,
            Errno::EACCES => 13,
            Errno::EINVAL => 22,
            Errno::ENOSYS => ENOSYS,
        }
    }
}

/// What happens to a syscall a policy denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// Enforce: the syscall fails with this errno (`SCMP_ACT_ERRNO`), in 1..=4095.
    Errno(u32),
    /// Audit: the syscall runs and the kernel logs it (`SCMP_ACT_LOG`).
    Log,
}

impl From<Errno> for DenyAction {
    fn from(errno: Errno) -> Self {
        DenyAction::Errno(errno.code())
    }
}

/// Whether `name` is a syscall of the host architecture, per the `syscalls` crate's table.
///
/// Policies are checked against this when loaded, so a misspelt name is a load error instead of
/// a rule libseccomp silently skips.
pub fn is_known_syscall(name: &str) -> bool {
    syscalls::Sysno::from_str(name).is_ok()
}

/// ociguard's own `linux.seccomp` object, injected when the engine supplied none (plain
/// `ctr run`, hand-made bundles).
///
/// An allowlist at least as strict as Podman's default profile: see `seccomp/default_profile.rs` for
/// what is allowed and why. With `audit`, syscalls outside the allowlist are logged and allowed
/// (`SCMP_ACT_LOG`) instead of failing with EPERM; the conditional rules stay the same.
pub fn builtin_profile(audit: bool) -> Value {
    let mut allowed: Vec<&str> = default_profile::ALLOW_COMMON
        .iter()
        .chain(default_profile::ALLOW_HOST)
        .chain(default_profile::ALLOW_OTHER_ABI)
        .copied()
        .collect();
    allowed.sort_unstable();
    allowed.dedup();

    let mut rules = vec![json!({ "names": allowed, "action": "SCMP_ACT_ALLOW" })];
    // clone(2) takes its flags in a register, so seccomp can refuse the namespace flags. The
    // index is 0 everywhere but s390, which ociguard does not target.
    rules.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{
            "index": 0,
            "value": default_profile::CLONE_NAMESPACE_FLAGS,
            "valueTwo": 0,
            "op": "SCMP_CMP_MASKED_EQ",
        }],
    }));
    for &persona in default_profile::PERSONALITY_SAFE {
        rules.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": persona, "op": "SCMP_CMP_EQ" }],
        }));
    }
    // One rule per family. The conditions of these rules never overlap, so the result does not
    // depend on how libseccomp orders overlapping rules with different actions.
    for &family in default_profile::SOCKET_FAMILIES {
        rules.push(json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": family, "op": "SCMP_CMP_EQ" }],
        }));
    }
    rules.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [
            { "index": 0, "value": default_profile::AF_NETLINK, "op": "SCMP_CMP_EQ" },
            { "index": 2, "value": default_profile::NETLINK_AUDIT, "op": "SCMP_CMP_NE" },
        ],
    }));
    let mut enosys: Vec<&str> = default_profile::ENOSYS_FALLBACK.to_vec();
    enosys.sort_unstable();
    rules.push(json!({ "names": enosys, "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }));

    let mut profile = Map::new();
    if audit {
        profile.insert("defaultAction".to_owned(), json!("SCMP_ACT_LOG"));
    } else {
        profile.insert("defaultAction".to_owned(), json!("SCMP_ACT_ERRNO"));
        profile.insert("defaultErrnoRet".to_owned(), json!(Errno::EPERM.code()));
    }
    profile.insert(
        "architectures".to_owned(),
        json!(default_profile::ARCHITECTURES),
    );
    profile.insert("syscalls".to_owned(), Value::Array(rules));
    Value::Object(profile)
}

#[cfg(test)]
// A failed unwrap is a failed test, with the value in the message.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::narrow::Action;
    use super::*;

    /// Syscalls Podman's default profile (containers/common) never allows a container with
    /// Podman's default capabilities, written down here from its documented behaviour: its
    /// explicit EPERM list, and the calls it gates on capabilities Podman does not grant by
    /// default.
    const PODMAN_DENIES: &[&str] = &[
        // Explicit EPERM list.
        "bdflush",
        "cachestat",
        "io_pgetevents",
        "io_pgetevents_time64",
        "kexec_file_load",
        "kexec_load",
        "map_shadow_stack",
        "migrate_pages",
        "move_pages",
        "nfsservctl",
        "nice",
        "oldfstat",
        "oldlstat",
        "oldolduname",
        "oldstat",
        "olduname",
        "pciconfig_iobase",
        "pciconfig_read",
        "pciconfig_write",
        "sgetmask",
        "ssetmask",
        "swapcontext",
        "swapoff",
        "swapon",
        "syscall",
        "sysfs",
        "uselib",
        "userfaultfd",
        "ustat",
        "vm86",
        "vm86old",
        "vmsplice",
        // Gated on CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_MODULE,
        // CAP_SYS_PACCT, CAP_SYS_PTRACE, CAP_SYS_RAWIO, CAP_SYS_TIME, CAP_SYS_TTY_CONFIG.
        "bpf",
        "fanotify_init",
        "lookup_dcookie",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "open_by_handle_at",
        "delete_module",
        "finit_module",
        "init_module",
        "query_module",
        "acct",
        "kcmp",
        "process_madvise",
        "ioperm",
        "iopl",
        "clock_settime",
        "clock_settime64",
        "settimeofday",
        "stime",
        "vhangup",
        // Allowed by Podman but stricter here, checked by the same test.
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "unshare",
        "keyctl",
        "add_key",
        "request_key",
        "reboot",
        "syslog",
        "ptrace",
        "process_vm_readv",
        "process_vm_writev",
    ];

    /// What the brief for this module requires never to be allowed, in any rule.
    const DANGEROUS: &[&str] = &[
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "move_mount",
        "open_tree",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
        "ptrace",
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "query_module",
        "bpf",
        "perf_event_open",
        "keyctl",
        "add_key",
        "request_key",
        "unshare",
        "setns",
        "open_by_handle_at",
        "name_to_handle_at",
        "acct",
        "swapon",
        "swapoff",
        "reboot",
        "iopl",
        "ioperm",
        "modify_ldt",
        "clock_settime",
        "clock_settime64",
        "settimeofday",
        "stime",
        "sethostname",
        "setdomainname",
        "quotactl",
        "quotactl_fd",
        "lookup_dcookie",
        "fanotify_init",
        "userfaultfd",
        "vmsplice",
        "kcmp",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "pidfd_getfd",
        "syslog",
        "vhangup",
        "uselib",
        "ustat",
        "sysfs",
        "nfsservctl",
        "io_uring_setup",
        "io_uring_enter",
        "io_uring_register",
        "clone3",
    ];

    pub(super) fn rules(profile: &Value) -> &Vec<Value> {
        profile["syscalls"].as_array().unwrap()
    }

    pub(super) fn names(rule: &Value) -> Vec<&str> {
        let mut out: Vec<&str> = rule["names"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(n) = rule["name"].as_str() {
            out.push(n);
        }
        out
    }

    pub(super) fn is_conditional(rule: &Value) -> bool {
        rule["args"].as_array().is_some_and(|a| !a.is_empty())
    }

    fn lets_through(rule: &Value) -> bool {
        Action::parse(rule["action"].as_str().unwrap())
            .unwrap()
            .lets_through()
    }

    /// Names some rule lets through, with or without conditions.
    pub(super) fn allowed_by_any_rule(profile: &Value) -> BTreeSet<String> {
        rules(profile)
            .iter()
            .filter(|r| lets_through(r))
            .flat_map(|r| names(r).into_iter().map(str::to_owned))
            .collect()
    }

    fn allowed_unconditionally(profile: &Value) -> BTreeSet<String> {
        rules(profile)
            .iter()
            .filter(|r| lets_through(r) && !is_conditional(r))
            .flat_map(|r| names(r).into_iter().map(str::to_owned))
            .collect()
    }

    pub(super) fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    // ---------------------------------------------------------------- builtin profile

    #[test]
    fn builtin_profile_shape() {
        let p = builtin_profile(false);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(p["defaultErrnoRet"], 1);
        let arches: Vec<&str> = p["architectures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                arches,
                ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
            );
        } else if cfg!(target_arch = "aarch64") {
            assert_eq!(arches, ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]);
        }
        for rule in rules(&p) {
            let n = names(rule);
            let mut sorted = n.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(n, sorted, "names must be sorted and unique: {rule}");
        }
        // Deterministic, so an injected bundle is reproducible.
        assert_eq!(p, builtin_profile(false));
    }

    #[test]
    fn builtin_audit_profile_logs_by_default() {
        let p = builtin_profile(true);
        assert_eq!(p["defaultAction"], "SCMP_ACT_LOG");
        assert!(p.get("defaultErrnoRet").is_none());
        // Same rules as the enforcing profile: only the default differs.
        assert_eq!(p["syscalls"], builtin_profile(false)["syscalls"]);
    }

    #[test]
    fn builtin_profile_never_allows_dangerous_syscalls() {
        for audit in [false, true] {
            let allowed = allowed_by_any_rule(&builtin_profile(audit));
            for name in DANGEROUS {
                assert!(!allowed.contains(*name), "{name} is allowed");
            }
        }
    }

    #[test]
    fn builtin_profile_allows_nothing_podman_denies() {
        let allowed = allowed_by_any_rule(&builtin_profile(false));
        for name in PODMAN_DENIES {
            assert!(!allowed.contains(*name), "{name} is allowed");
        }
    }

    #[test]
    fn builtin_profile_clone_is_filtered_on_namespace_flags() {
        let p = builtin_profile(false);
        assert!(!allowed_unconditionally(&p).contains("clone"));
        let clone_rules: Vec<&Value> = rules(&p)
            .iter()
            .filter(|r| names(r).contains(&"clone"))
            .collect();
        assert_eq!(clone_rules.len(), 1);
        assert_eq!(
            clone_rules[0]["args"],
            json!([{"index": 0, "value": 2_114_060_288_u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
        );
        assert_eq!(default_profile::CLONE_NAMESPACE_FLAGS, 0x7E02_0000);
        // clone3 hides its flags in memory: refused with ENOSYS so libc falls back to clone.
        let clone3: Vec<&Value> = rules(&p)
            .iter()
            .filter(|r| names(r).contains(&"clone3"))
            .collect();
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], 38);
        assert!(!is_conditional(clone3[0]));
    }

    #[test]
    fn builtin_profile_personality_only_safe_values() {
        let p = builtin_profile(false);
        assert!(!allowed_unconditionally(&p).contains("personality"));
        let mut values: Vec<u64> = Vec::new();
        for rule in rules(&p)
            .iter()
            .filter(|r| names(r).contains(&"personality"))
        {
            assert_eq!(names(rule), ["personality"]);
            assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
            let args = rule["args"].as_array().unwrap();
            assert_eq!(args.len(), 1);
            assert_eq!(args[0]["index"], 0);
            assert_eq!(args[0]["op"], "SCMP_CMP_EQ");
            values.push(args[0]["value"].as_u64().unwrap());
        }
        assert_eq!(values, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    }

    #[test]
    fn builtin_profile_socket_rules_are_disjoint_and_refuse_vsock_alg_audit() {
        let p = builtin_profile(false);
        assert!(!allowed_unconditionally(&p).contains("socket"));
        let mut families = BTreeSet::new();
        for rule in rules(&p).iter().filter(|r| names(r).contains(&"socket")) {
            assert_eq!(rule["action"], "SCMP_ACT_ALLOW");
            let args = rule["args"].as_array().unwrap();
            // Every rule pins the family, so no two rules overlap.
            assert_eq!(args[0]["index"], 0);
            assert_eq!(args[0]["op"], "SCMP_CMP_EQ");
            let family = args[0]["value"].as_u64().unwrap();
            assert!(families.insert(family), "family {family} twice");
            if family == 16 {
                assert_eq!(
                    args[1],
                    json!({"index": 2, "value": 9, "op": "SCMP_CMP_NE"})
                );
            } else {
                assert_eq!(args.len(), 1);
            }
        }
        for refused in [38, 40] {
            assert!(!families.contains(&refused), "family {refused} allowed");
        }
        assert!(families.is_superset(&BTreeSet::from([1, 2, 10, 16])));
    }

    #[test]
    fn builtin_profile_allows_what_programs_need() {
        let allowed = allowed_unconditionally(&builtin_profile(false));
        let mut needed = vec![
            "read",
            "write",
            "openat",
            "close",
            "fstat",
            "statx",
            "mmap",
            "mprotect",
            "munmap",
            "brk",
            "rt_sigaction",
            "rt_sigprocmask",
            "rt_sigreturn",
            "futex",
            "set_tid_address",
            "set_robust_list",
            "rseq",
            "getrandom",
            "execve",
            "exit_group",
            "wait4",
            "pipe2",
            "dup3",
            "fcntl",
            "ioctl",
            "ppoll",
            "epoll_pwait",
            "prctl",
            "capset",
            "setresuid",
            "setgroups",
            "close_range",
            "getdents64",
            "newfstatat",
            "mkdirat",
            "unlinkat",
            "renameat2",
            "faccessat2",
            "socketpair",
            "connect",
            "sendmsg",
            "recvmsg",
            "uname",
            "prlimit64",
            "clock_nanosleep",
            "seccomp",
            "landlock_restrict_self",
            "mknodat",
            "chroot",
        ];
        if cfg!(target_arch = "x86_64") {
            needed.extend([
                "arch_prctl",
                "open",
                "stat",
                "vfork",
                "set_thread_area",
                "mmap2",
                "socketcall",
                "_llseek",
                "clock_gettime64",
            ]);
        }
        if cfg!(target_arch = "aarch64") {
            needed.extend(["set_tls", "open", "mmap2"]);
        }
        for name in needed {
            assert!(allowed.contains(name), "{name} is not allowed");
        }
    }

    #[test]
    fn builtin_profile_names_are_known_syscalls() {
        for rule in rules(&builtin_profile(false)) {
            for name in names(rule) {
                assert!(
                    is_known_syscall(name) || default_profile::ALLOW_OTHER_ABI.contains(&name),
                    "{name} is neither a host syscall nor listed in ALLOW_OTHER_ABI"
                );
            }
        }
    }

    #[test]
    fn builtin_allowlist_has_no_duplicates() {
        let all: Vec<&str> = default_profile::ALLOW_COMMON
            .iter()
            .chain(default_profile::ALLOW_HOST)
            .chain(default_profile::ALLOW_OTHER_ABI)
            .chain(default_profile::ENOSYS_FALLBACK)
            .copied()
            .collect();
        let unique: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a name is listed twice");
        for name in default_profile::ALLOW_COMMON
            .iter()
            .chain(default_profile::ALLOW_HOST)
        {
            assert!(is_known_syscall(name), "{name} is not a host syscall");
        }
    }

    /// Checks the built-in profile against the profile Podman really generated on this host,
    /// captured by `test-bundles/build.sh`.
    #[test]
    fn builtin_profile_within_captured_podman_profile() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test-bundles/out/podman/config.json"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            eprintln!("skip: {path} not built (run test-bundles/build.sh)");
            return;
        };
        let config: Value = serde_json::from_str(&text).unwrap();
        let podman = &config["linux"]["seccomp"];
        assert!(podman.is_object(), "{path} has no linux.seccomp");
        let podman_allows = allowed_by_any_rule(podman);
        let podman_denies: BTreeSet<String> = rules(podman)
            .iter()
            .filter(|r| !lets_through(r) && !is_conditional(r))
            .flat_map(|r| names(r).into_iter().map(str::to_owned))
            .collect();
        let ours = builtin_profile(false);
        for name in allowed_unconditionally(&ours) {
            assert!(
                podman_allows.contains(&name),
                "{name}: allowed here but by no rule of {path}"
            );
        }
        for name in allowed_by_any_rule(&ours) {
            assert!(
                !podman_denies.contains(&name),
                "{name}: allowed here but denied by {path}"
            );
        }
    }

    #[test]
    fn builtin_profile_can_be_narrowed() {
        let mut p = builtin_profile(false);
        let out = narrow(&mut p, &owned(&["mkdir", "mount"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(out.newly_denied, ["mkdir", "mount"]);
        assert!(!allowed_by_any_rule(&p).contains("mkdir"));
    }

    #[test]
    fn known_syscalls() {
        assert!(is_known_syscall("read"));
        assert!(is_known_syscall("mkdirat"));
        assert!(!is_known_syscall("mkdirr"));
        assert!(!is_known_syscall(""));
        assert!(!is_known_syscall("READ"));
    }

    #[test]
    fn errno_codes() {
        assert_eq!(Errno::default(), Errno::EPERM);
        assert_eq!(Errno::EPERM.code(), 1);
        assert_eq!(Errno::ENOENT.code(), 2);
        assert_eq!(Errno::EACCES.code(), 13);
        assert_eq!(Errno::EINVAL.code(), 22);
        assert_eq!(Errno::ENOSYS.code(), 38);
        assert_eq!(DenyAction::from(Errno::EACCES), DenyAction::Errno(13));
        let e: Errno = serde_json::from_value(json!("EACCES")).unwrap();
        assert_eq!(e, Errno::EACCES);
    }
}
