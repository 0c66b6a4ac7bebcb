//! Applying a chosen policy to a `config.json` document.
//!
//! Works on the JSON tree (`serde_json` with `preserve_order`), not on oci-spec's typed `Spec`:
//! engines send fields that oci-spec does not model (and newer spec fields appear all the time),
//! and every one of them must reach crun unchanged. The typed `Spec` is used to validate the
//! input (see [`crate::spec`]).
//!
//! Every edit is idempotent: applying the same policy to an already rewritten document yields
//! the same bytes, so a retried `create` is harmless.

use serde_json::{Map, Value};

use crate::annotations;
use crate::capabilities;
use crate::change::Change;
use crate::image_seccomp;
use crate::model::Mode;
use crate::seccomp::{self, DenyAction};
use crate::select::Facts;
use crate::set::LoadedPolicy;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("config.json is not a JSON object")]
    NotAnObject,
    #[error("config.json field {field}: {reason}")]
    Shape { field: &'static str, reason: String },
    #[error("config.json linux.seccomp: {source}")]
    Seccomp { source: seccomp::SeccompError },
}

fn object_field<'a>(
    parent: &'a mut Map<String, Value>,
    key: &'static str,
    field: &'static str,
) -> Result<&'a mut Map<String, Value>, RewriteError> {
    let v = parent
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    v.as_object_mut().ok_or(RewriteError::Shape {
        field,
        reason: "expected an object".to_owned(),
    })
}

/// Apply `policy` to `spec` (a whole `config.json` document).
pub fn apply(
    spec: &mut Value,
    policy: &LoadedPolicy,
    facts: &Facts,
) -> Result<Vec<Change>, RewriteError> {
    let enforce = policy.policy.mode == Mode::Enforce;
    let root = spec.as_object_mut().ok_or(RewriteError::NotAnObject)?;
    let mut changes = Vec::new();

    apply_annotations(root, policy, enforce, facts, &mut changes)?;
    apply_seccomp(root, policy, enforce, &mut changes)?;
    apply_image_seccomp(root, policy, enforce, facts, &mut changes)?;
    apply_process(root, policy, enforce, &mut changes)?;
    Ok(changes)
}

fn apply_annotations(
    root: &mut Map<String, Value>,
    policy: &LoadedPolicy,
    enforce: bool,
    facts: &Facts,
    changes: &mut Vec<Change>,
) -> Result<(), RewriteError> {
    let allowed: Vec<&str> = policy
        .policy
        .annotations
        .allow_unsafe
        .iter()
        .map(|s| s.get_ref().as_str())
        .collect();
    let ann = object_field(root, "annotations", "annotations")?;
    ann.retain(|key, _| {
        if annotations::is_forged_own(key) {
            // Not the workload's to set, in any mode: it would be recorded as ociguard's.
            changes.push(Change::AnnotationStripped {
                key: key.clone(),
                applied: true,
            });
            return false;
        }
        if annotations::unsafe_entry(key).is_none() {
            return true;
        }
        if annotations::is_allowed(key, &allowed) {
            changes.push(Change::AnnotationAllowed { key: key.clone() });
            return true;
        }
        changes.push(Change::AnnotationStripped {
            key: key.clone(),
            applied: enforce,
        });
        !enforce
    });
    ann.insert(
        annotations::POLICY.to_owned(),
        Value::String(policy.name().to_owned()),
    );
    ann.insert(
        annotations::POLICY_DIGEST.to_owned(),
        Value::String(policy.digest.clone()),
    );
    ann.insert(
        annotations::POLICY_MODE.to_owned(),
        Value::String(policy.policy.mode.as_str().to_owned()),
    );
    // What the decision knew of the image, for the identity record; an engine's or a pod's
    // value under these keys never survives (set here, or removed).
    for (key, value) in [
        (annotations::IMAGE, &facts.image),
        (annotations::IMAGE_DIGEST, &facts.image_digest),
    ] {
        match value {
            Some(v) => ann.insert(key.to_owned(), Value::String(v.clone())),
            None => ann.remove(key),
        };
    }
    Ok(())
}

fn apply_seccomp(
    root: &mut Map<String, Value>,
    policy: &LoadedPolicy,
    enforce: bool,
    changes: &mut Vec<Change>,
) -> Result<(), RewriteError> {
    let rules = &policy.policy.seccomp;
    let linux = object_field(root, "linux", "linux")?;
    let has_profile = matches!(linux.get("seccomp"), Some(v) if !v.is_null());
    if !has_profile {
        if !rules.inject_default && rules.deny.is_empty() {
            return Ok(());
        }
        let profile = seccomp::builtin_profile(!enforce);
        changes.push(Change::SeccompInjected {
            default_action: profile
                .get("defaultAction")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
        linux.insert("seccomp".to_owned(), profile);
    }
    if rules.deny.is_empty() {
        return Ok(());
    }
    let deny: Vec<String> = rules.deny.iter().map(|s| s.get_ref().clone()).collect();
    let action = if enforce {
        DenyAction::Errno(rules.errno.code())
    } else {
        DenyAction::Log
    };
    let profile = linux.get_mut("seccomp").ok_or(RewriteError::Shape {
        field: "linux.seccomp",
        reason: "missing".to_owned(),
    })?;
    let out = seccomp::narrow(profile, &deny, &action)
        .map_err(|source| RewriteError::Seccomp { source })?;
    changes.push(Change::SeccompNarrowed {
        action: match action {
            DenyAction::Errno(n) => format!("SCMP_ACT_ERRNO({n})"),
            DenyAction::Log => "SCMP_ACT_LOG".to_owned(),
        },
        denied: out.newly_denied,
        already_denied: out.already_denied,
        not_audited: out.not_audited,
    });
    Ok(())
}

/// The image's own seccomp label may only narrow what was decided above.
fn apply_image_seccomp(
    root: &mut Map<String, Value>,
    policy: &LoadedPolicy,
    enforce: bool,
    facts: &Facts,
    changes: &mut Vec<Change>,
) -> Result<(), RewriteError> {
    let Some(label) = facts.labels.get(image_seccomp::LABEL) else {
        return Ok(());
    };
    let Some(profile) = root
        .get_mut("linux")
        .and_then(|l| l.get_mut("seccomp"))
        .filter(|p| !p.is_null())
    else {
        // No profile at all (inject_default = false and nothing denied): there is nothing an
        // image profile could narrow without ociguard inventing a whole profile from a label.
        changes.push(Change::ImageSeccompIgnored {
            reason: "the container has no seccomp profile to narrow".to_owned(),
        });
        return Ok(());
    };
    let extra = match image_seccomp::extra_denies(profile, label) {
        Ok(extra) => extra,
        Err(reason) => {
            changes.push(Change::ImageSeccompIgnored { reason });
            return Ok(());
        }
    };
    if extra.is_empty() {
        return Ok(());
    }
    let action = if enforce {
        DenyAction::Errno(policy.policy.seccomp.errno.code())
    } else {
        DenyAction::Log
    };
    let out = seccomp::narrow(profile, &extra, &action)
        .map_err(|source| RewriteError::Seccomp { source })?;
    changes.push(Change::ImageSeccompNarrowed {
        denied: out.newly_denied,
    });
    Ok(())
}

fn apply_process(
    root: &mut Map<String, Value>,
    policy: &LoadedPolicy,
    enforce: bool,
    changes: &mut Vec<Change>,
) -> Result<(), RewriteError> {
    let rules = &policy.policy.process;
    let drops = policy.drop_all_capabilities || !policy.drop_capabilities.is_empty();
    if !drops && !rules.no_new_privileges {
        return Ok(());
    }
    let Some(process) = root.get_mut("process") else {
        return Err(RewriteError::Shape {
            field: "process",
            reason: format!(
                "missing, but policy {:?} sets process restrictions",
                policy.name()
            ),
        });
    };
    let process = process.as_object_mut().ok_or(RewriteError::Shape {
        field: "process",
        reason: "expected an object".to_owned(),
    })?;
    if drops {
        let drop: Vec<String> = policy
            .drop_capabilities
            .iter()
            .map(|c| capabilities::capability_name(*c))
            .collect();
        match process.get_mut("capabilities") {
            Some(Value::Object(caps)) => {
                if enforce {
                    let removed =
                        capabilities::drop_from(caps, &drop, policy.drop_all_capabilities);
                    if !removed.is_empty() {
                        changes.push(Change::CapabilitiesDropped {
                            capabilities: removed,
                            applied: true,
                        });
                    }
                } else {
                    let mut scratch = caps.clone();
                    let removed =
                        capabilities::drop_from(&mut scratch, &drop, policy.drop_all_capabilities);
                    if !removed.is_empty() {
                        changes.push(Change::CapabilitiesDropped {
                            capabilities: removed,
                            applied: false,
                        });
                    }
                }
            }
            Some(other) if !other.is_null() => {
                return Err(RewriteError::Shape {
                    field: "process.capabilities",
                    reason: "expected an object".to_owned(),
                })
            }
            _ if enforce => {
                let caps = capabilities::default_minus(&drop, policy.drop_all_capabilities);
                let kept = caps
                    .get("bounding")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                process.insert("capabilities".to_owned(), Value::Object(caps));
                changes.push(Change::CapabilitiesDefaulted { capabilities: kept });
            }
            _ => {}
        }
    }
    if rules.no_new_privileges && process.get("noNewPrivileges") != Some(&Value::Bool(true)) {
        if enforce {
            process.insert("noNewPrivileges".to_owned(), Value::Bool(true));
        }
        changes.push(Change::NoNewPrivileges { applied: enforce });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_policy;
    use serde_json::json;
    use std::path::Path;

    fn policy(text: &str) -> LoadedPolicy {
        parse_policy(Path::new("/p/t.toml"), text).unwrap()
    }

    fn bare_spec() -> Value {
        json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"]}},
            "root": {"path": "rootfs"},
            "x-unknown-engine-field": {"keep": [1, 2, 3]},
            "linux": {"namespaces": [{"type": "pid"}], "x-unknown": true},
            "annotations": {"run.oci.seccomp_bpf_data": "AAAA", "run.oci.keep_original_groups": "1", "a": "b"}
        })
    }

    const STRICT: &str = r#"
name = "strict"
[match]
images = ["x"]
[seccomp]
deny = ["mkdir", "mkdirat"]
[process]
drop_capabilities = ["NET_RAW"]
no_new_privileges = true
[annotations]
allow_unsafe = ["run.oci.keep_original_groups"]
"#;

    #[test]
    fn enforce_applies_everything_and_is_idempotent() {
        let p = policy(STRICT);
        let mut spec = bare_spec();
        let changes = apply(&mut spec, &p, &Facts::default()).unwrap();
        assert!(changes.contains(&Change::AnnotationStripped {
            key: "run.oci.seccomp_bpf_data".into(),
            applied: true
        }));
        assert!(changes.contains(&Change::AnnotationAllowed {
            key: "run.oci.keep_original_groups".into()
        }));
        assert!(changes.contains(&Change::CapabilitiesDropped {
            capabilities: vec!["CAP_NET_RAW".into()],
            applied: true
        }));
        assert!(changes.contains(&Change::NoNewPrivileges { applied: true }));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::SeccompInjected { .. })));
        assert_eq!(spec["annotations"]["org.ociguard.policy"], "strict");
        assert_eq!(
            spec["annotations"]["org.ociguard.policy.digest"],
            p.digest.as_str()
        );
        assert!(spec["annotations"]
            .get("run.oci.seccomp_bpf_data")
            .is_none());
        assert_eq!(spec["x-unknown-engine-field"], json!({"keep": [1, 2, 3]}));
        assert_eq!(spec["linux"]["x-unknown"], true);
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        let seccomp_text = spec["linux"]["seccomp"].to_string();
        assert!(seccomp_text.contains("mkdir"));

        let first = serde_json::to_vec(&spec).unwrap();
        let again = apply(&mut spec, &p, &Facts::default()).unwrap();
        assert_eq!(
            serde_json::to_vec(&spec).unwrap(),
            first,
            "second apply changed the document"
        );
        assert!(!again.iter().any(|c| matches!(
            c,
            Change::SeccompInjected { .. }
                | Change::CapabilitiesDropped { .. }
                | Change::NoNewPrivileges { .. }
        )));
    }

    #[test]
    fn audit_changes_nothing_that_denies() {
        let p = policy(&format!("mode = \"audit\"\n{STRICT}"));
        let mut spec = bare_spec();
        let changes = apply(&mut spec, &p, &Facts::default()).unwrap();
        assert!(spec["annotations"]
            .get("run.oci.seccomp_bpf_data")
            .is_some());
        assert_eq!(
            spec["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert!(spec["process"].get("noNewPrivileges").is_none());
        assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_LOG");
        assert!(changes.contains(&Change::NoNewPrivileges { applied: false }));
        assert!(changes.contains(&Change::CapabilitiesDropped {
            capabilities: vec!["CAP_NET_RAW".into()],
            applied: false
        }));
        assert_eq!(spec["annotations"]["org.ociguard.policy.mode"], "audit");
    }

    /// Keys under ociguard's prefix that ociguard does not write are stripped in every mode;
    /// its own are rewritten (policy) or left to the step that owns them.
    #[test]
    fn forged_own_annotations_are_stripped_in_every_mode() {
        for mode in ["enforce", "audit"] {
            let p = policy(&format!("mode = \"{mode}\"\n{STRICT}"));
            let mut spec = bare_spec();
            let ann = spec["annotations"].as_object_mut().unwrap();
            ann.insert("org.ociguard.seccomp.digest".into(), json!("sha256:forged"));
            ann.insert("org.ociguard.secret.digest".into(), json!("sha256:forged"));
            ann.insert("org.ociguard.policy.digest".into(), json!("sha256:forged"));
            ann.insert("org.ociguard.egress.digest".into(), json!("sha256:owned"));
            ann.insert("org.ociguard.image".into(), json!("trusted/forged:1"));
            ann.insert("org.ociguard.image.digest".into(), json!("sha256:forged"));
            let changes = apply(&mut spec, &p, &Facts::default()).unwrap();
            let ann = &spec["annotations"];
            // Nothing resolved the image: the forged ones are gone.
            assert!(ann.get("org.ociguard.image").is_none(), "{mode}");
            assert!(ann.get("org.ociguard.image.digest").is_none(), "{mode}");
            let facts = Facts {
                image: Some("localhost/bb:1".into()),
                ..Default::default()
            };
            let mut again = spec.clone();
            apply(&mut again, &p, &facts).unwrap();
            assert_eq!(again["annotations"]["org.ociguard.image"], "localhost/bb:1");
            assert!(again["annotations"]
                .get("org.ociguard.image.digest")
                .is_none());
            assert!(ann.get("org.ociguard.seccomp.digest").is_none(), "{mode}");
            assert!(ann.get("org.ociguard.secret.digest").is_none(), "{mode}");
            assert_eq!(ann["org.ociguard.policy.digest"], p.digest.as_str());
            // The egress step sets or removes it on every create.
            assert_eq!(ann["org.ociguard.egress.digest"], "sha256:owned");
            assert!(changes.contains(&Change::AnnotationStripped {
                key: "org.ociguard.seccomp.digest".into(),
                applied: true
            }));
        }
    }

    #[test]
    fn existing_profile_is_narrowed_not_replaced() {
        let p = policy(STRICT);
        let mut spec = bare_spec();
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
            "syscalls": [{"names": ["read", "mkdir", "write"], "action": "SCMP_ACT_ALLOW"}]
        });
        let changes = apply(&mut spec, &p, &Facts::default()).unwrap();
        assert!(!changes
            .iter()
            .any(|c| matches!(c, Change::SeccompInjected { .. })));
        assert_eq!(spec["linux"]["seccomp"]["defaultErrnoRet"], 38);
        assert_eq!(
            spec["linux"]["seccomp"]["syscalls"][0]["names"],
            json!(["read", "write"])
        );
    }

    #[test]
    fn missing_capabilities_get_the_spec_default_minus_drops() {
        let p = policy("name = \"d\"\n[match]\nimages=[\"x\"]\n[process]\ndrop_capabilities = [\"CAP_KILL\"]\n");
        let mut spec = json!({"process": {"args": ["sh"]}});
        apply(&mut spec, &p, &Facts::default()).unwrap();
        assert_eq!(
            spec["process"]["capabilities"]["bounding"],
            json!(["CAP_AUDIT_WRITE", "CAP_NET_BIND_SERVICE"])
        );
    }

    #[test]
    fn shape_errors() {
        let p = policy(STRICT);
        assert!(matches!(
            apply(&mut json!([1]), &p, &Facts::default()),
            Err(RewriteError::NotAnObject)
        ));
        let err = apply(&mut json!({"annotations": []}), &p, &Facts::default()).unwrap_err();
        assert!(err.to_string().contains("annotations"));
        let err = apply(&mut json!({"annotations": {}}), &p, &Facts::default()).unwrap_err();
        assert!(err.to_string().contains("process"), "{err}");
    }
}
