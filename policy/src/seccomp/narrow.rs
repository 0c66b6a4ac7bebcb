//! Narrowing an engine's seccomp profile by policy: the syscalls a policy denies are denied
//! with an errno (enforce) or logged (audit), editing the profile's JSON in place.
//!
//! It must never loosen a profile: every edit either removes a syscall from a rule that would
//! let it through or adds a rule that denies or logs it.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{DenyAction, MAX_ERRNO};

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
pub(super) enum Action {
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
    pub(super) fn parse(s: &str) -> Option<Action> {
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
    pub(super) fn lets_through(self) -> bool {
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
    use serde_json::json;

    use super::*;
    use crate::seccomp::builtin_profile;
    use crate::seccomp::tests::{allowed_by_any_rule, is_conditional, names, owned, rules};

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
