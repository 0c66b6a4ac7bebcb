//! An image's own seccomp profile (Podman's `io.containers.seccomp.profile` label convention),
//! honoured only as a further narrowing of the profile ociguard already decided.
//!
//! The label is written by whoever built the image, so it is untrusted: it can take syscalls
//! away, never give any back. Concretely, the syscalls it would deny are computed and fed to the
//! same [`crate::seccomp::narrow`] the policy's own deny list goes through.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::seccomp;

/// The image label that carries a seccomp profile (JSON).
pub const LABEL: &str = "io.containers.seccomp.profile";

const ALLOWING: &[&str] = &["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"];

fn rules(profile: &Value) -> impl Iterator<Item = (&str, bool, Vec<&str>)> {
    profile
        .get("syscalls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|r| {
            let action = r.get("action").and_then(Value::as_str).unwrap_or("");
            let conditional = r
                .get("args")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            let names = r
                .get("names")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .chain(r.get("name").and_then(Value::as_str))
                .collect();
            (action, conditional, names)
        })
}

/// Syscalls `current` lets through by some rule.
fn allowed(profile: &Value) -> BTreeSet<&str> {
    rules(profile)
        .filter(|(a, _, _)| ALLOWING.contains(a))
        .flat_map(|(_, _, n)| n)
        .collect()
}

/// The syscalls the image profile denies that the current profile allows, sorted.
/// `Err` when the label is not a usable profile (the caller records it and ignores the label:
/// ignoring an image's request to narrow never loosens anything ociguard decided).
pub fn extra_denies(current: &Value, image_profile: &str) -> Result<Vec<String>, String> {
    let image: Value = serde_json::from_str(image_profile).map_err(|e| format!("not JSON: {e}"))?;
    let default = image
        .get("defaultAction")
        .and_then(Value::as_str)
        .ok_or("no defaultAction")?;
    let ours = allowed(current);
    let extra: BTreeSet<&str> = if ALLOWING.contains(&default) {
        // Allow-by-default image profile: only its unconditional denials narrow.
        rules(&image)
            .filter(|(a, cond, _)| !ALLOWING.contains(a) && !cond)
            .flat_map(|(_, _, n)| n)
            .filter(|n| ours.contains(n))
            .collect()
    } else {
        // Deny-by-default: whatever it never allows (even conditionally) is denied.
        let theirs = allowed(&image);
        ours.difference(&theirs).copied().collect()
    };
    Ok(extra
        .into_iter()
        .filter(|n| seccomp::is_known_syscall(n))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current() -> Value {
        json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "write", "mkdir", "chmod"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]}]})
    }

    #[test]
    fn deny_default_image_profile_narrows_to_its_allowlist() {
        let img = json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
            {"names": ["read", "write", "ptrace"], "action": "SCMP_ACT_ALLOW"}]});
        let extra = extra_denies(&current(), &img.to_string()).unwrap();
        // ptrace is in the image's allowlist but not ours: it stays denied (never loosened).
        assert_eq!(extra, vec!["chmod", "mkdir", "personality"]);
    }

    #[test]
    fn allow_default_image_profile_only_adds_its_denials() {
        let img = json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "ptrace"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 1, "op": "SCMP_CMP_EQ"}]}]});
        assert_eq!(
            extra_denies(&current(), &img.to_string()).unwrap(),
            vec!["mkdir"]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(extra_denies(&current(), "{not json").is_err());
        assert!(extra_denies(&current(), "{}").is_err());
    }
}
