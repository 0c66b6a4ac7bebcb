//! Annotations that crun and runc honour and that would bypass or weaken an injected policy.
//!
//! Engines pass pod and image annotations through to `config.json`, so a workload author can set
//! them. crun, for instance, loads a pre-compiled filter from `run.oci.seccomp_bpf_data` instead
//! of `linux.seccomp`, and runs extra hooks from `run.oci.hooks.*`.

use serde_json::{Map, Value};

/// Exact keys, and prefixes (ending in `.`), of annotations stripped under `enforce`.
pub const UNSAFE: &[&str] = &[
    "run.oci.seccomp_bpf_data",
    "run.oci.seccomp.",
    "run.oci.seccomp_fail_unknown_syscall",
    "run.oci.handler",
    "run.oci.keep_original_groups",
    "run.oci.hooks.",
    "org.criu.",
    "org.systemd.property.",
];

/// Annotation keys ociguard writes itself; policies may not select on them, so a rewritten
/// bundle selects the same policy again (idempotent create) and nobody can forge a decision.
pub const OWN_PREFIX: &str = "org.ociguard.";
pub const POLICY: &str = "org.ociguard.policy";
pub const POLICY_DIGEST: &str = "org.ociguard.policy.digest";
pub const POLICY_MODE: &str = "org.ociguard.policy.mode";
/// The image the container runs and its digest, as ociguard resolved them for the decision
/// (from an engine annotation or the engine's image store: Docker and containerd write no
/// annotation). The identity hook records these; written or removed on every create.
pub const IMAGE: &str = "org.ociguard.image";
pub const IMAGE_DIGEST: &str = "org.ociguard.image.digest";
/// `sha256:` of the egress ruleset the createRuntime hook installs.
pub const EGRESS_DIGEST: &str = "org.ociguard.egress.digest";
/// `sha256:` of the AppArmor profile set as `process.apparmorProfile`.
pub const APPARMOR_DIGEST: &str = "org.ociguard.apparmor.digest";
/// `sha256:` of the precompiled seccomp filter ociguard handed crun (self-certifying: it is
/// compared with the filter it names, see the shim's seccomp cache).
pub const SECCOMP_BPF_DIGEST: &str = "org.ociguard.seccomp.bpf";

/// The `org.ociguard.*` keys that may be in a rewritten `config.json`: each is written or
/// removed on every create by the step that owns it (the policy rewrite, egress, AppArmor, the
/// seccomp cache). Any other key under [`OWN_PREFIX`] came from the engine, the image or the
/// pod, and would be read by the identity hook as a fact about the container (a profile digest
/// in effect): the rewrite strips it.
pub const OWN_KEYS: &[&str] = &[
    POLICY,
    POLICY_DIGEST,
    POLICY_MODE,
    IMAGE,
    IMAGE_DIGEST,
    EGRESS_DIGEST,
    APPARMOR_DIGEST,
    SECCOMP_BPF_DIGEST,
];

/// A key under [`OWN_PREFIX`] that ociguard does not write: forged.
pub fn is_forged_own(key: &str) -> bool {
    key.starts_with(OWN_PREFIX) && !OWN_KEYS.contains(&key)
}

/// Set (`Some`) or remove (`None`) the annotation `key` of a `config.json` document; whether
/// that changed it. The other annotations keep their places, so a retried create writes the same
/// bytes. A missing `annotations` is created to set one; a document or `annotations` that is not
/// an object is left alone (the policy rewrite refuses such a document first).
pub fn set(document: &mut Value, key: &str, value: Option<&str>) -> bool {
    let Some(root) = document.as_object_mut() else {
        return false;
    };
    match value {
        Some(v) => {
            let ann = root
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            let new = Value::String(v.to_owned());
            match ann.as_object_mut() {
                Some(ann) => ann.insert(key.to_owned(), new.clone()) != Some(new),
                None => false,
            }
        }
        None => root
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
            .is_some_and(|ann| ann.shift_remove(key).is_some()),
    }
}

/// The [`UNSAFE`] entry that covers `key`, if any.
pub fn unsafe_entry(key: &str) -> Option<&'static str> {
    UNSAFE.iter().copied().find(|entry| {
        if entry.ends_with('.') {
            key.starts_with(entry)
        } else {
            key == *entry
        }
    })
}

/// Is `key` allowed by one of `allowed` (each an exact key or a prefix ending in `.`)?
pub fn is_allowed(key: &str, allowed: &[&str]) -> bool {
    allowed.iter().any(|a| {
        if a.ends_with('.') {
            key.starts_with(a)
        } else {
            key == *a
        }
    })
}

/// For `allow_unsafe` validation: is `entry` a key or prefix that [`UNSAFE`] covers?
pub fn is_unsafe_entry(entry: &str) -> bool {
    UNSAFE.contains(&entry) || unsafe_entry(entry).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_prefix() {
        assert_eq!(
            unsafe_entry("run.oci.seccomp_bpf_data"),
            Some("run.oci.seccomp_bpf_data")
        );
        assert_eq!(
            unsafe_entry("run.oci.hooks.prestart"),
            Some("run.oci.hooks.")
        );
        assert_eq!(
            unsafe_entry("org.systemd.property.CPUQuota"),
            Some("org.systemd.property.")
        );
        assert_eq!(unsafe_entry("run.oci.handlerx"), None);
        assert_eq!(unsafe_entry("io.kubernetes.cri.image-name"), None);
        assert!(is_allowed("org.criu.config", &["org.criu."]));
        assert!(!is_allowed("org.criu.config", &["org.criu.other"]));
        assert!(is_unsafe_entry("run.oci.hooks."));
        assert!(is_unsafe_entry("run.oci.hooks.prestart"));
        assert!(!is_unsafe_entry("run.oci.hook"));
        assert!(is_forged_own("org.ociguard.seccomp.digest"));
        assert!(is_forged_own("org.ociguard.policyx"));
        assert!(!is_forged_own(EGRESS_DIGEST));
        assert!(!is_forged_own("org.example.ociguard"));
    }

    #[test]
    fn set_and_remove_keep_the_others_in_place() {
        let mut doc = serde_json::json!({"ociVersion": "1.0.2"});
        assert!(set(&mut doc, EGRESS_DIGEST, Some("sha256:aa")));
        assert!(
            !set(&mut doc, EGRESS_DIGEST, Some("sha256:aa")),
            "unchanged"
        );
        doc["annotations"]["z"] = "1".into();
        assert!(set(&mut doc, APPARMOR_DIGEST, Some("sha256:bb")));
        assert!(set(&mut doc, EGRESS_DIGEST, None));
        assert!(!set(&mut doc, EGRESS_DIGEST, None), "already absent");
        let keys: Vec<&String> = doc["annotations"].as_object().unwrap().keys().collect();
        assert_eq!(keys, [&"z".to_owned(), &APPARMOR_DIGEST.to_owned()]);
        let mut odd = serde_json::json!({"annotations": []});
        assert!(!set(&mut odd, EGRESS_DIGEST, Some("x")));
        assert!(!set(&mut serde_json::json!([]), EGRESS_DIGEST, None));
    }
}
