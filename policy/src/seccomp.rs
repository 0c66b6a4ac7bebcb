//! Seccomp in `config.json` (`linux.seccomp`): ociguard's built-in profile for bundles that
//! arrive without one, and narrowing an engine's profile by policy (enforce: deny with an
//! errno; audit: log).
//!
//! Profiles are edited as raw JSON rather than through typed structs, so every field ociguard
//! does not model (`flags`, `listenerPath`, `listenerMetadata`, `defaultErrnoRet`, engine
//! extensions, fields from a newer runtime-spec) reaches crun untouched and in its original
//! order. This module must never loosen a profile: every edit either removes a syscall from a
//! rule that would let it through or adds a rule that denies or logs it.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde_json::{json, Map, Value};

// The allowlist is data, kept in its own file so that a review of what a container may do is a
// review of one list. `#[path]` because this module is a single file, not a directory.
#[path = "seccomp_default.rs"]
mod default_profile;

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

/// What [`narrow`] did with each denied syscall. Every list is sorted and free of duplicates.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NarrowOutcome {
    /// Denied (enforce) or logged (audit) by the rule ociguard appended.
    pub newly_denied: Vec<String>,
    /// Already denied by the engine's profile (in audit mode: already denied or logged), so
    /// nothing was added for them.
    pub already_denied: Vec<String>,
    /// Audit mode only: allowed only under conditions (argument filters) or handed to a tracer
    /// or notifier. Turning those into a plain log rule could loosen them, so they are left as
    /// they are.
    pub not_audited: Vec<String>,
}

/// Why a seccomp profile could not be narrowed. The profile is left untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("expected a JSON object, found {found}")]
    NotAnObject { found: &'static str },
    #[error("{field}: {reason}")]
    BadField { field: &'static str, reason: String },
    #[error("syscalls[{index}]: {reason}")]
    BadRule { index: usize, reason: String },
    #[error("errno {errno} cannot deny a syscall: SCMP_ACT_ERRNO needs 1..={MAX_ERRNO}")]
    BadErrno { errno: u32 },
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
/// An allowlist at least as strict as Podman's default profile: see `seccomp_default.rs` for
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

/// Make an engine-supplied profile stricter so that the syscalls in `deny` are denied
/// (`DenyAction::Errno`) or logged (`DenyAction::Log`), editing `profile` in place.
///
/// Enforce: each name is removed from every rule that lets it through (`SCMP_ACT_ALLOW`,
/// `_LOG`, `_TRACE`, `_NOTIFY`) and from every conditional rule (non-empty `args`), whatever
/// its action: left next to the new unconditional rule, a conditional rule of another action
/// for the same syscall would leave the outcome to how libseccomp merges overlapping rules.
/// Names an unconditional deny rule already covers keep that rule; the rest get one appended
/// `SCMP_ACT_ERRNO` rule.
///
/// Audit never loosens: only syscalls the profile allows unconditionally (by an
/// `SCMP_ACT_ALLOW` rule, or by an `SCMP_ACT_ALLOW` default when no rule names them) move to one
/// appended `SCMP_ACT_LOG` rule.
///
/// Both are idempotent: narrowing a narrowed profile again changes nothing. The profile is
/// validated before anything is changed, so on error it is left as it was.
pub fn narrow(
    profile: &mut Value,
    deny: &[String],
    action: &DenyAction,
) -> Result<NarrowOutcome, SeccompError> {
    let found = json_type(profile);
    let profile = profile
        .as_object_mut()
        .ok_or(SeccompError::NotAnObject { found })?;
    let default = default_action(profile)?;
    let rules = parse_rules(profile)?;
    let deny: BTreeSet<&str> = deny.iter().map(String::as_str).collect();
    match *action {
        DenyAction::Errno(errno) => enforce(profile, &rules, &deny, errno),
        DenyAction::Log => Ok(audit(profile, &rules, default, &deny)),
    }
}

fn enforce(
    profile: &mut Map<String, Value>,
    rules: &[Rule],
    deny: &BTreeSet<&str>,
    errno: u32,
) -> Result<NarrowOutcome, SeccompError> {
    // errnoRet 0 would make the syscall "succeed" without running, which is no denial.
    if !(1..=MAX_ERRNO).contains(&errno) {
        return Err(SeccompError::BadErrno { errno });
    }
    let mut out = NarrowOutcome::default();
    for &name in deny {
        let covered = rules
            .iter()
            .any(|r| !r.conditional && r.action.denies() && r.mentions(name));
        if covered {
            out.already_denied.push(name.to_owned());
        } else {
            out.newly_denied.push(name.to_owned());
        }
    }
    strip_names(profile, rules, deny, |r| {
        r.action.lets_through() || r.conditional
    });
    if !out.newly_denied.is_empty() {
        append_rule(
            profile,
            json!({ "names": out.newly_denied, "action": "SCMP_ACT_ERRNO", "errnoRet": errno }),
        );
    }
    Ok(out)
}

fn audit(
    profile: &mut Map<String, Value>,
    rules: &[Rule],
    default: Action,
    deny: &BTreeSet<&str>,
) -> NarrowOutcome {
    let mut out = NarrowOutcome::default();
    // Names to take out of unconditional SCMP_ACT_ALLOW rules, so that the LOG rule is the only
    // unconditional rule left for them.
    let mut move_to_log = BTreeSet::new();
    for &name in deny {
        let unconditional: Vec<Action> = rules
            .iter()
            .filter(|r| !r.conditional && r.mentions(name))
            .map(|r| r.action)
            .collect();
        let conditional: Vec<Action> = rules
            .iter()
            .filter(|r| r.conditional && r.mentions(name))
            .map(|r| r.action)
            .collect();
        let list = if unconditional.iter().any(|a| a.denies()) {
            &mut out.already_denied
        } else if unconditional.contains(&Action::Log) {
            // Already logged; an ALLOW rule next to it would only compete with the LOG rule.
            if unconditional.contains(&Action::Allow) {
                move_to_log.insert(name);
            }
            &mut out.already_denied
        } else if unconditional.contains(&Action::Allow) {
            move_to_log.insert(name);
            &mut out.newly_denied
        } else if !unconditional.is_empty() {
            // SCMP_ACT_TRACE / SCMP_ACT_NOTIFY: a supervisor decides, and may deny. Logging
            // instead would hand the syscall to the container unchecked.
            &mut out.not_audited
        } else if !conditional.is_empty() {
            if default.denies() && conditional.iter().all(|a| a.denies()) {
                &mut out.already_denied
            } else {
                &mut out.not_audited
            }
        } else {
            match default {
                Action::Allow => {
                    move_to_log.insert(name);
                    &mut out.newly_denied
                }
                Action::Log => &mut out.already_denied,
                a if a.denies() => &mut out.already_denied,
                _ => &mut out.not_audited,
            }
        };
        list.push(name.to_owned());
    }
    strip_names(profile, rules, &move_to_log, |r| {
        !r.conditional && r.action == Action::Allow
    });
    if !out.newly_denied.is_empty() {
        append_rule(
            profile,
            json!({ "names": out.newly_denied, "action": "SCMP_ACT_LOG" }),
        );
    }
    out
}

/// A seccomp action, as runtime-spec's `LinuxSeccompAction` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    Log,
    Trace,
    Notify,
    Errno,
    Trap,
    Kill,
    KillThread,
    KillProcess,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "SCMP_ACT_ALLOW" => Action::Allow,
            "SCMP_ACT_LOG" => Action::Log,
            "SCMP_ACT_TRACE" => Action::Trace,
            "SCMP_ACT_NOTIFY" => Action::Notify,
            "SCMP_ACT_ERRNO" => Action::Errno,
            "SCMP_ACT_TRAP" => Action::Trap,
            "SCMP_ACT_KILL" => Action::Kill,
            "SCMP_ACT_KILL_THREAD" => Action::KillThread,
            "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
            _ => return None,
        })
    }

    /// The syscall may run: allowed outright, logged, or left to a tracer or notifier that
    /// can let it through.
    fn lets_through(self) -> bool {
        matches!(
            self,
            Action::Allow | Action::Log | Action::Trace | Action::Notify
        )
    }

    /// The syscall never runs: it fails, traps or kills.
    fn denies(self) -> bool {
        !self.lets_through()
    }
}

/// What narrowing needs to know about one entry of `syscalls`, read before any edit.
#[derive(Debug)]
struct Rule {
    /// `names`, plus the pre-1.0 runtime-spec `name` if present.
    names: Vec<String>,
    action: Action,
    /// Has a non-empty `args`: applies only when the arguments match.
    conditional: bool,
}

impl Rule {
    fn mentions(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }
}

fn default_action(profile: &Map<String, Value>) -> Result<Action, SeccompError> {
    let bad = |reason: String| SeccompError::BadField {
        field: "defaultAction",
        reason,
    };
    match profile.get("defaultAction") {
        None | Some(Value::Null) => Err(bad("missing".to_owned())),
        Some(Value::String(s)) => {
            Action::parse(s).ok_or_else(|| bad(format!("unknown action {s:?}")))
        }
        Some(v) => Err(bad(format!("expected a string, found {}", json_type(v)))),
    }
}

fn parse_rules(profile: &Map<String, Value>) -> Result<Vec<Rule>, SeccompError> {
    let list = match profile.get("syscalls") {
        // runtime-spec makes `syscalls` optional: a profile of only a default action.
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(v) => {
            return Err(SeccompError::BadField {
                field: "syscalls",
                reason: format!("expected an array, found {}", json_type(v)),
            })
        }
    };
    list.iter()
        .enumerate()
        .map(|(index, v)| parse_rule(v).map_err(|reason| SeccompError::BadRule { index, reason }))
        .collect()
}

fn parse_rule(v: &Value) -> Result<Rule, String> {
    let rule = v
        .as_object()
        .ok_or_else(|| format!("expected an object, found {}", json_type(v)))?;
    let mut names = Vec::new();
    let has_names = match rule.get("names") {
        None | Some(Value::Null) => false,
        Some(Value::Array(list)) => {
            for (j, n) in list.iter().enumerate() {
                let n = n.as_str().ok_or_else(|| {
                    format!("names[{j}]: expected a string, found {}", json_type(n))
                })?;
                names.push(n.to_owned());
            }
            true
        }
        Some(v) => return Err(format!("names: expected an array, found {}", json_type(v))),
    };
    let has_name = match rule.get("name") {
        None | Some(Value::Null) => false,
        Some(Value::String(n)) => {
            names.push(n.clone());
            true
        }
        Some(v) => return Err(format!("name: expected a string, found {}", json_type(v))),
    };
    if !has_names && !has_name {
        return Err("no \"names\"".to_owned());
    }
    let action = match rule.get("action") {
        Some(Value::String(s)) => {
            Action::parse(s).ok_or_else(|| format!("unknown action {s:?}"))?
        }
        None | Some(Value::Null) => return Err("no \"action\"".to_owned()),
        Some(v) => return Err(format!("action: expected a string, found {}", json_type(v))),
    };
    let conditional = match rule.get("args") {
        None | Some(Value::Null) => false,
        Some(Value::Array(args)) => !args.is_empty(),
        Some(v) => return Err(format!("args: expected an array, found {}", json_type(v))),
    };
    Ok(Rule {
        names,
        action,
        conditional,
    })
}

/// Remove `names` from every rule `select` picks, dropping rules left without a name. Rules
/// that were empty before are kept: they were not ours to drop.
fn strip_names(
    profile: &mut Map<String, Value>,
    rules: &[Rule],
    names: &BTreeSet<&str>,
    select: impl Fn(&Rule) -> bool,
) {
    if names.is_empty() {
        return;
    }
    let Some(Value::Array(list)) = profile.get_mut("syscalls") else {
        return;
    };
    let old = std::mem::take(list);
    // `rules` was parsed from this very array, so the two line up index for index.
    for (mut value, rule) in old.into_iter().zip(rules) {
        let touched = select(rule) && rule.names.iter().any(|n| names.contains(n.as_str()));
        if touched {
            if let Value::Object(obj) = &mut value {
                if let Some(Value::Array(list)) = obj.get_mut("names") {
                    list.retain(|n| !n.as_str().is_some_and(|n| names.contains(n)));
                }
                if obj
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| names.contains(n))
                {
                    // shift_remove keeps the other keys in their order (remove would swap).
                    obj.shift_remove("name");
                }
                let names_left = obj
                    .get("names")
                    .and_then(Value::as_array)
                    .is_some_and(|l| !l.is_empty());
                if !names_left && !obj.contains_key("name") {
                    continue;
                }
            }
        }
        list.push(value);
    }
}

fn append_rule(profile: &mut Map<String, Value>, rule: Value) {
    match profile.get_mut("syscalls") {
        Some(Value::Array(list)) => list.push(rule),
        // Absent or null (validated by parse_rules): start the list.
        _ => {
            profile.insert("syscalls".to_owned(), Value::Array(vec![rule]));
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
// A failed unwrap is a failed test, with the value in the message.
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
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

    fn rules(profile: &Value) -> &Vec<Value> {
        profile["syscalls"].as_array().unwrap()
    }

    fn names(rule: &Value) -> Vec<&str> {
        let mut out: Vec<&str> = rule["names"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(n) = rule["name"].as_str() {
            out.push(n);
        }
        out
    }

    fn is_conditional(rule: &Value) -> bool {
        rule["args"].as_array().is_some_and(|a| !a.is_empty())
    }

    fn lets_through(rule: &Value) -> bool {
        Action::parse(rule["action"].as_str().unwrap())
            .unwrap()
            .lets_through()
    }

    /// Names some rule lets through, with or without conditions.
    fn allowed_by_any_rule(profile: &Value) -> BTreeSet<String> {
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

    fn owned(names: &[&str]) -> Vec<String> {
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

    // ---------------------------------------------------------------- narrow: enforce

    /// Shaped like what Podman writes into config.json, plus fields ociguard must carry over.
    fn podman_like() -> Value {
        json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 38,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
            "syscalls": [
                {"names": ["kexec_load", "swapon"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
                {"names": ["getpid", "mkdir", "mkdirat", "read"], "action": "SCMP_ACT_ALLOW",
                 "x-engine-note": {"keep": true}},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                 "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                          {"index": 2, "value": 9, "op": "SCMP_CMP_EQ"}]},
                {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 2, "value": 9, "op": "SCMP_CMP_NE"}]}
            ]
        })
    }

    #[test]
    fn enforce_on_podman_like_profile() {
        let mut p = podman_like();
        let out = narrow(&mut p, &owned(&["mkdir", "mkdirat"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(
            out,
            NarrowOutcome {
                newly_denied: owned(&["mkdir", "mkdirat"]),
                ..Default::default()
            }
        );
        let mut expected = podman_like();
        let list = expected["syscalls"].as_array_mut().unwrap();
        list[1]["names"] = json!(["getpid", "read"]);
        list.push(
            json!({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}),
        );
        assert_eq!(p, expected);
        // Key order survives too (preserve_order), not just content.
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
    }

    #[test]
    fn enforce_is_idempotent() {
        let mut p = podman_like();
        let list = owned(&["mkdir", "personality", "socket", "kexec_load", "mount"]);
        let first = narrow(&mut p, &list, &DenyAction::Errno(13)).unwrap();
        assert_eq!(
            first.newly_denied,
            ["mkdir", "mount", "personality", "socket"]
        );
        assert_eq!(first.already_denied, ["kexec_load"]);
        let once = serde_json::to_string(&p).unwrap();
        let second = narrow(&mut p, &list, &DenyAction::Errno(13)).unwrap();
        assert!(second.newly_denied.is_empty());
        assert_eq!(
            second.already_denied,
            ["kexec_load", "mkdir", "mount", "personality", "socket"]
        );
        assert_eq!(serde_json::to_string(&p).unwrap(), once);
    }

    #[test]
    fn enforce_removes_conditional_rules_of_any_action() {
        let mut p = podman_like();
        narrow(
            &mut p,
            &owned(&["personality", "socket"]),
            &DenyAction::Errno(1),
        )
        .unwrap();
        for rule in rules(&p) {
            if is_conditional(rule) {
                assert!(!names(rule).contains(&"personality"), "{rule}");
                assert!(!names(rule).contains(&"socket"), "{rule}");
            }
        }
        let last = rules(&p).last().unwrap();
        assert_eq!(
            *last,
            json!({"names": ["personality", "socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
        );
        // Only the four conditional rules went; the others are untouched.
        assert_eq!(
            rules(&p).len(),
            podman_like()["syscalls"].as_array().unwrap().len() - 4 + 1
        );
    }

    #[test]
    fn enforce_with_allow_default() {
        let mut p = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["reboot"], "action": "SCMP_ACT_ERRNO"}
            ]
        });
        let out = narrow(
            &mut p,
            &owned(&["ptrace", "unshare", "reboot", "unshare"]),
            &DenyAction::Errno(1),
        )
        .unwrap();
        assert_eq!(out.newly_denied, ["ptrace", "unshare"]);
        assert_eq!(out.already_denied, ["reboot"]);
        assert_eq!(
            p,
            json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["reboot"], "action": "SCMP_ACT_ERRNO"},
                    {"names": ["ptrace", "unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
                ]
            })
        );
    }

    #[test]
    fn enforce_keeps_a_stricter_kill_rule() {
        let original = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mount", "umount2"], "action": "SCMP_ACT_KILL_PROCESS"}]
        });
        let mut p = original.clone();
        let out = narrow(&mut p, &owned(&["mount"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(out.already_denied, ["mount"]);
        assert!(out.newly_denied.is_empty());
        assert_eq!(p, original);
    }

    #[test]
    fn enforce_removes_from_log_trace_notify_rules() {
        let mut p = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "listenerPath": "/run/agent.sock",
            "syscalls": [
                {"names": ["mkdir", "getpid"], "action": "SCMP_ACT_LOG"},
                {"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                {"names": ["mkdir"], "action": "SCMP_ACT_TRACE", "errnoRet": 5}
            ]
        });
        narrow(&mut p, &owned(&["mkdir"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(
            p,
            json!({
                "defaultAction": "SCMP_ACT_ERRNO",
                "listenerPath": "/run/agent.sock",
                "syscalls": [
                    {"names": ["getpid"], "action": "SCMP_ACT_LOG"},
                    {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
                ]
            })
        );
    }

    #[test]
    fn enforce_handles_the_old_singular_name_field() {
        let mut p = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"name": "mkdir", "action": "SCMP_ACT_ALLOW"},
                {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
                {"name": "rmdir", "names": ["mkdir"], "action": "SCMP_ACT_ALLOW"}
            ]
        });
        let out = narrow(&mut p, &owned(&["mkdir"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(out.newly_denied, ["mkdir"]);
        assert_eq!(
            p["syscalls"],
            json!([
                {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
                {"name": "rmdir", "names": [], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
            ])
        );
    }

    #[test]
    fn enforce_creates_missing_syscalls_and_keeps_empty_rules() {
        let mut p = json!({"defaultAction": "SCMP_ACT_ALLOW"});
        narrow(&mut p, &owned(&["bpf"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(
            p,
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]})
        );

        let mut p = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": null});
        narrow(&mut p, &owned(&["bpf"]), &DenyAction::Errno(1)).unwrap();
        assert_eq!(rules(&p).len(), 1);

        // An empty rule the engine wrote is not ours to drop.
        let original = json!({"defaultAction": "SCMP_ACT_ALLOW",
                              "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]});
        let mut p = original.clone();
        let out = narrow(&mut p, &[], &DenyAction::Errno(1)).unwrap();
        assert_eq!(out, NarrowOutcome::default());
        assert_eq!(p, original);
    }

    // ---------------------------------------------------------------- narrow: audit

    #[test]
    fn audit_never_loosens_a_default_deny_profile() {
        let mut p = podman_like();
        let out = narrow(
            &mut p,
            &owned(&["mkdir", "personality", "kexec_load", "mount", "socket"]),
            &DenyAction::Log,
        )
        .unwrap();
        assert_eq!(
            out,
            NarrowOutcome {
                newly_denied: owned(&["mkdir"]),
                already_denied: owned(&["kexec_load", "mount"]),
                not_audited: owned(&["personality", "socket"]),
            }
        );
        let mut expected = podman_like();
        let list = expected["syscalls"].as_array_mut().unwrap();
        list[1]["names"] = json!(["getpid", "mkdirat", "read"]);
        list.push(json!({"names": ["mkdir"], "action": "SCMP_ACT_LOG"}));
        assert_eq!(p, expected);
        assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed = allowed_by_any_rule(&p);
        assert!(!allowed.contains("kexec_load"));
        assert!(!allowed.contains("mount"));
    }

    #[test]
    fn audit_is_idempotent() {
        let mut p = podman_like();
        let list = owned(&["mkdir", "read", "personality", "swapon"]);
        let first = narrow(&mut p, &list, &DenyAction::Log).unwrap();
        assert_eq!(first.newly_denied, ["mkdir", "read"]);
        let once = serde_json::to_string(&p).unwrap();
        let second = narrow(&mut p, &list, &DenyAction::Log).unwrap();
        assert!(second.newly_denied.is_empty());
        assert_eq!(second.already_denied, ["mkdir", "read", "swapon"]);
        assert_eq!(second.not_audited, ["personality"]);
        assert_eq!(serde_json::to_string(&p).unwrap(), once);
    }

    #[test]
    fn audit_with_allow_default_logs_unmentioned_names() {
        let mut p = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["reboot"], "action": "SCMP_ACT_KILL"},
                {"names": ["chmod"], "action": "SCMP_ACT_LOG"},
                {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                 "args": [{"index": 0, "value": 5, "op": "SCMP_CMP_EQ"}]},
                {"names": ["keyctl"], "action": "SCMP_ACT_NOTIFY"}
            ]
        });
        let out = narrow(
            &mut p,
            &owned(&["unshare", "reboot", "chmod", "bpf", "keyctl"]),
            &DenyAction::Log,
        )
        .unwrap();
        assert_eq!(out.newly_denied, ["unshare"]);
        assert_eq!(out.already_denied, ["chmod", "reboot"]);
        assert_eq!(out.not_audited, ["bpf", "keyctl"]);
        assert_eq!(
            *rules(&p).last().unwrap(),
            json!({"names": ["unshare"], "action": "SCMP_ACT_LOG"})
        );
        assert_eq!(rules(&p).len(), 5);
    }

    #[test]
    fn audit_of_a_fully_denied_conditional_name_is_already_denied() {
        let mut p = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                          "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]}]
        });
        let original = p.clone();
        let out = narrow(&mut p, &owned(&["socket"]), &DenyAction::Log).unwrap();
        assert_eq!(out.already_denied, ["socket"]);
        assert_eq!(p, original);
    }

    #[test]
    fn audit_drops_an_allow_rule_that_competes_with_a_log_rule() {
        let mut p = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_LOG"}
            ]
        });
        let out = narrow(&mut p, &owned(&["mkdir"]), &DenyAction::Log).unwrap();
        assert_eq!(out.already_denied, ["mkdir"]);
        assert_eq!(
            p["syscalls"],
            json!([{"names": ["mkdir"], "action": "SCMP_ACT_LOG"}])
        );
    }

    // ---------------------------------------------------------------- narrow: errors

    fn narrow_err(mut p: Value, action: DenyAction) -> SeccompError {
        let original = p.clone();
        let err = narrow(&mut p, &owned(&["mkdir"]), &action).unwrap_err();
        assert_eq!(p, original, "profile changed despite {err}");
        err
    }

    #[test]
    fn rejects_a_profile_that_is_not_an_object() {
        for p in [json!(null), json!([]), json!("SCMP_ACT_ALLOW")] {
            let err = narrow_err(p, DenyAction::Errno(1));
            assert!(matches!(err, SeccompError::NotAnObject { .. }), "{err}");
        }
    }

    #[test]
    fn rejects_bad_fields() {
        let cases = [
            (json!({"syscalls": []}), "defaultAction"),
            (json!({"defaultAction": 1}), "defaultAction"),
            (json!({"defaultAction": "SCMP_ACT_MAYBE"}), "defaultAction"),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}),
                "syscalls",
            ),
        ];
        for (p, want) in cases {
            match narrow_err(p, DenyAction::Log) {
                SeccompError::BadField { field, .. } => assert_eq!(field, want),
                err => panic!("unexpected {err}"),
            }
        }
    }

    #[test]
    fn rejects_bad_rules() {
        let ok = json!({"names": ["read"], "action": "SCMP_ACT_ALLOW"});
        let bad = [
            json!("read"),
            json!({"action": "SCMP_ACT_ALLOW"}),
            json!({"names": "mkdir", "action": "SCMP_ACT_ALLOW"}),
            json!({"names": ["mkdir", 3], "action": "SCMP_ACT_ALLOW"}),
            json!({"name": 3, "action": "SCMP_ACT_ALLOW"}),
            json!({"names": ["mkdir"]}),
            json!({"names": ["mkdir"], "action": "SCMP_ACT_SOMETIMES"}),
            json!({"names": ["mkdir"], "action": "SCMP_ACT_ALLOW", "args": {}}),
        ];
        for rule in bad {
            let p = json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ok, rule]});
            match narrow_err(p, DenyAction::Errno(1)) {
                SeccompError::BadRule { index, reason } => {
                    assert_eq!(index, 1);
                    assert!(!reason.is_empty());
                }
                err => panic!("unexpected {err}"),
            }
        }
    }

    #[test]
    fn rejects_an_errno_that_does_not_deny() {
        for errno in [0, 4096] {
            let err = narrow_err(builtin_profile(false), DenyAction::Errno(errno));
            assert!(matches!(err, SeccompError::BadErrno { .. }), "{err}");
        }
    }

    #[test]
    fn error_messages_name_the_place() {
        let mut p = json!({"defaultAction": "SCMP_ACT_ERRNO",
                           "syscalls": [{"names": ["read", 3], "action": "SCMP_ACT_ALLOW"}]});
        let err = narrow(&mut p, &owned(&["mkdir"]), &DenyAction::Errno(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "syscalls[0]: names[1]: expected a string, found a number"
        );
    }
}
