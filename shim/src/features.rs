//! `features`: the OCI runtime features document.
//!
//! crun 1.8.1 has no `features` command; runc does. When the delegate answers with a valid
//! document, ociguard passes it on, adding what ociguard strips to
//! `potentiallyUnsafeConfigAnnotations` and marking itself in `annotations`; otherwise it answers
//! with its own conservative document. Either way the result is checked against oci-spec's
//! `Features` type before it is printed.

use std::process::{Command, Stdio};

use ociguard_policy::annotations::UNSAFE;
use ociguard_policy::config::Runtime;
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    #[error("features document does not match the OCI schema: {0}")]
    Schema(serde_json::Error),
}

/// Ask the delegate (spawned with a minimal environment; this is not the create hot path).
/// The builtin runtime has no document of its own: ociguard's is what it implements.
pub fn delegate_features(runtime: &Runtime) -> Option<Value> {
    let out = Command::new(runtime.path()?)
        .arg("features")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
    serde_json::from_value::<oci_spec::runtime::Features>(doc.clone()).ok()?;
    Some(doc)
}

fn own_features(apparmor: bool) -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "cgroup": {"v1": true, "v2": true},
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"]
            },
            "apparmor": {"enabled": apparmor},
            "selinux": {"enabled": false}
        }
    })
}

/// Is AppArmor enabled in this kernel?
pub fn apparmor_enabled() -> bool {
    crate::apparmor::kernel_enabled()
}

/// The document `ociguard features` prints.
pub fn document(delegate: Option<Value>, runtime: &Runtime) -> Result<Vec<u8>, FeaturesError> {
    let mut doc = delegate.unwrap_or_else(|| own_features(apparmor_enabled()));
    if let Some(obj) = doc.as_object_mut() {
        let unsafe_list = obj
            .entry("potentiallyUnsafeConfigAnnotations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = unsafe_list {
            for key in UNSAFE {
                let v = Value::String((*key).to_owned());
                if !list.contains(&v) {
                    list.push(v);
                }
            }
        }
        let ann = obj
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(ann) = ann {
            ann.insert(
                "org.ociguard.version".to_owned(),
                Value::String(env!("CARGO_PKG_VERSION").to_owned()),
            );
            ann.insert(
                "org.ociguard.delegate".to_owned(),
                Value::String(runtime.to_string()),
            );
        }
    }
    serde_json::from_value::<oci_spec::runtime::Features>(doc.clone())
        .map_err(FeaturesError::Schema)?;
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(FeaturesError::Schema)?;
    bytes.push(b'\n');
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_document_is_valid_and_lists_stripped_annotations() {
        let bytes = document(None, &Runtime::Exec("/usr/bin/crun".into())).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let list = v["potentiallyUnsafeConfigAnnotations"].as_array().unwrap();
        assert!(list.contains(&json!("run.oci.seccomp_bpf_data")));
        assert_eq!(v["annotations"]["org.ociguard.delegate"], "/usr/bin/crun");
    }

    #[test]
    fn merges_with_delegate() {
        let runc = json!({"ociVersionMin": "1.0.0", "ociVersionMax": "1.1.0",
            "potentiallyUnsafeConfigAnnotations": ["bpf", "run.oci.handler"],
            "annotations": {"io.github.seccomp.libseccomp.version": "2.5.4"}});
        let bytes = document(Some(runc), &Runtime::Exec("/usr/bin/runc".into())).unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let list = v["potentiallyUnsafeConfigAnnotations"].as_array().unwrap();
        assert_eq!(list.iter().filter(|x| *x == "run.oci.handler").count(), 1);
        assert!(list.contains(&json!("bpf")));
        assert_eq!(
            v["annotations"]["io.github.seccomp.libseccomp.version"],
            "2.5.4"
        );
    }
}
