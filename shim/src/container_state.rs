//! What ociguard remembers about a container it created, so `exec` can hold new processes to
//! the container's policy (`exec` names only the container id, never the bundle).
//!
//! Records live under the state directory (tmpfs `/run/ociguard` by default), keyed by the
//! runtime `--root` and the id, since containerd namespaces reuse ids under different roots.

use std::path::{Path, PathBuf};

use ociguard_policy::digest::sha256;
use ociguard_policy::Mode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub bundle: PathBuf,
    pub policy: String,
    pub policy_digest: String,
    pub mode: Mode,
    /// `process.capabilities` as written to config.json (after the policy).
    pub capabilities: Option<Map<String, Value>>,
    pub no_new_privileges: bool,
    pub apparmor_profile: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container record: {0}")]
    Write(#[from] crate::atomic::StoreError),
    #[error("read container record {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container record {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// `<state_dir>/containers/<hash of root>/<id>.json`
pub fn record_path(state_dir: &Path, root: Option<&Path>, id: &str) -> PathBuf {
    let root = root.map_or_else(Default::default, |r| r.to_string_lossy().into_owned());
    let digest = sha256(root.as_bytes());
    // "sha256:" + 16 hex digits: short, and collisions between a node's few roots are not a concern.
    let key = &digest[7..23];
    state_dir
        .join("containers")
        .join(key)
        .join(format!("{id}.json"))
}

/// Remove container `id`'s record when the engine deletes it: records would otherwise pile
/// up, one per container the node ever ran. Removed before the runtime's `delete` runs (the
/// shim then `execve`s it): if that delete fails and the container lives on, an `exec` rebuilds
/// the record from the bundle as for any container without one. No record is not an error.
pub fn forget(state_dir: &Path, root: Option<&Path>, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(record_path(state_dir, root, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl ContainerRecord {
    /// Build the record from the rewritten config.json document.
    pub fn from_spec(
        id: &str,
        bundle: &Path,
        policy: &str,
        digest: &str,
        mode: Mode,
        spec: &Value,
    ) -> Self {
        let process = spec.get("process");
        ContainerRecord {
            id: id.to_owned(),
            bundle: bundle.to_owned(),
            policy: policy.to_owned(),
            policy_digest: digest.to_owned(),
            mode,
            capabilities: process
                .and_then(|p| p.get("capabilities"))
                .and_then(Value::as_object)
                .cloned(),
            no_new_privileges: process
                .and_then(|p| p.get("noNewPrivileges"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            apparmor_profile: process
                .and_then(|p| p.get("apparmorProfile"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        // A record is plain strings and maps: serialising it cannot fail.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("/"));
        // No fsync: a record describes a live container and none survives a crash; the next
        // create of the id rewrites it (and `exec` treats an unreadable record as a refusal).
        crate::atomic::store_cache(dir, path, &bytes)?;
        Ok(())
    }

    /// `Ok(None)` when there is no record (a container ociguard did not create).
    pub fn load(path: &Path) -> Result<Option<Self>, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Corrupt {
                        path: path.to_owned(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let spec = serde_json::json!({"process": {"noNewPrivileges": true, "capabilities": {"bounding": ["CAP_KILL"]}}});
        let r = ContainerRecord::from_spec(
            "c1",
            Path::new("/b"),
            "p",
            "sha256:x",
            Mode::Enforce,
            &spec,
        );
        assert!(r.no_new_privileges);
        let p1 = record_path(
            dir.path(),
            Some(Path::new("/run/containerd/runc/default")),
            "c1",
        );
        let p2 = record_path(
            dir.path(),
            Some(Path::new("/run/containerd/runc/k8s.io")),
            "c1",
        );
        assert_ne!(p1, p2);
        r.save(&p1).unwrap();
        assert_eq!(ContainerRecord::load(&p1).unwrap(), Some(r));
        assert_eq!(ContainerRecord::load(&p2).unwrap(), None);
        std::fs::write(&p1, "{").unwrap();
        assert!(ContainerRecord::load(&p1).is_err());
    }
}
