//! `[behavior]` at `create`: compile the policy's rules for this bundle into the
//! `org.ociguard.behavior` annotation ociguardd's guard reads at createRuntime, and make the
//! container's scratch filesystems `noexec` under `drop_exec` (the guard watches the rootfs;
//! a tmpfs mounted by the runtime is held by the kernel this way).
//!
//! Edits of the document, and one read of ociguardd's `enforcers.json` to say which enforcer
//! holds each rule (see [`NodeEnforcers`]); the identity hook (made `required` by a `required` rule set,
//! see `crate::identity`) is what hands the container to the guard before it runs.

use ociguard_policy::annotations;
use std::path::Path;

use ociguard_policy::behavior::{self, Compiled, Enforcer, NodeEnforcers, OnAnomaly};
use ociguard_policy::change::Change;
use ociguard_policy::model::Mode;
use ociguard_policy::{LoadedPolicy, Rewritten};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BehaviorError {
    #[error("policy {policy:?} requires [behavior] rule {rule}, which only the {needs} enforcer holds and this node has none of ({reason})")]
    NotHeld {
        policy: String,
        rule: &'static str,
        needs: String,
        reason: String,
    },
}

pub fn prepare(
    policy: &LoadedPolicy,
    monitor_socket: &Path,
    rewritten: &mut Rewritten,
) -> Result<(), BehaviorError> {
    let doc = &mut rewritten.document;
    let Some(compiled) = Compiled::from_policy(&policy.policy, &policy.digest, doc) else {
        annotations::set(doc, behavior::ANNOTATION, None);
        return Ok(());
    };
    let node = NodeEnforcers::read(monitor_socket);
    let mut rules = Vec::new();
    let mut not_held = Vec::new();
    for rule in compiled.rules() {
        let held = match &node {
            Some(n) => rule.held_by(&n.enforcers),
            // ociguardd has not said what it has: its registration decides.
            None => rule.enforcers().to_vec(),
        };
        if held.is_empty() {
            let reason = node
                .as_ref()
                .map(|n| n.notes.join("; "))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "no enforcer on this node holds it".to_owned());
            if compiled.required {
                return Err(BehaviorError::NotHeld {
                    policy: policy.name().to_owned(),
                    rule: rule.as_str(),
                    needs: enforcer_names(rule.enforcers()),
                    reason,
                });
            }
            not_held.push(format!("{}: {reason}", rule.as_str()));
        } else {
            rules.push(format!("{}: {}", rule.as_str(), enforcer_names(&held)));
        }
    }
    if compiled.learn {
        rules.push(
            "learn: ociguardd records execs, secret reads and connections into the profile of the image and service identity".to_owned(),
        );
    }
    if compiled.on_anomaly != OnAnomaly::Off {
        rules.push(format!(
            "on_anomaly = {}: what the container does outside its learned profile is an anomaly event",
            compiled.on_anomaly.as_str()
        ));
    }
    let mut noexec = Vec::new();
    if compiled.drop_exec && policy.policy.mode == Mode::Enforce {
        noexec = noexec_scratch_mounts(doc);
    }
    // Serialising a struct of strings and bools cannot fail.
    let text = serde_json::to_string(&compiled).unwrap_or_default();
    annotations::set(doc, behavior::ANNOTATION, Some(&text));
    rewritten.decision.changes.push(Change::Behavior {
        enforcer: match &node {
            Some(n) => format!("ociguardd ({})", enforcer_names(&n.enforcers)),
            None => "ociguardd (its enforcers are not known yet: it has not run here)".to_owned(),
        },
        rules,
        not_held,
        noexec,
    });
    Ok(())
}

fn enforcer_names(list: &[Enforcer]) -> String {
    let names: Vec<&str> = list.iter().map(|e| e.as_str()).collect();
    names.join("+")
}

/// Add `noexec` to the spec's tmpfs mounts (`/dev`, `/dev/shm`, a tmpfs `/tmp`...): nothing
/// in an image is on them, so whatever is executed there was written after start.
fn noexec_scratch_mounts(doc: &mut Value) -> Vec<String> {
    let mut changed = Vec::new();
    let Some(mounts) = doc.get_mut("mounts").and_then(Value::as_array_mut) else {
        return changed;
    };
    for m in mounts {
        if m.get("type").and_then(Value::as_str) != Some("tmpfs") {
            continue;
        }
        let dest = m
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        let opts = obj
            .entry("options")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = opts.as_array_mut() {
            let has = |o: &str| list.iter().any(|v| v.as_str() == Some(o));
            if !has("noexec") {
                if has("exec") {
                    list.retain(|v| v.as_str() != Some("exec"));
                }
                list.push(Value::String("noexec".to_owned()));
                changed.push(dest);
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tmpfs_mounts_become_noexec_once() {
        let mut doc = json!({"mounts": [
            {"destination": "/dev", "type": "tmpfs", "options": ["nosuid"]},
            {"destination": "/tmp", "type": "tmpfs", "options": ["exec"]},
            {"destination": "/proc", "type": "proc"},
            {"destination": "/dev/shm", "type": "tmpfs", "options": ["noexec"]}
        ]});
        assert_eq!(noexec_scratch_mounts(&mut doc), vec!["/dev", "/tmp"]);
        assert_eq!(doc["mounts"][1]["options"], json!(["noexec"]));
        assert!(noexec_scratch_mounts(&mut doc).is_empty());
    }
}
