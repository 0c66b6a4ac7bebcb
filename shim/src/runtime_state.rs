//! What the delegate runtime knows about a container: `<runtime> [--root R] state ID`, the
//! runc command every OCI runtime implements (crun and runc both print the bundle and the
//! annotations the container was created with).
//!
//! Only asked when ociguard's own record of a container is missing (see [`crate::exec`]): it is
//! a process start (~1 ms), so never on the create path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ociguard_policy::config::Runtime;
use std::process::{Command, Stdio};

use serde::Deserialize;

/// The parts of the runtime's `state` output that ociguard uses.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuntimeState {
    pub id: String,
    #[serde(default)]
    pub status: String,
    pub bundle: PathBuf,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeStateError {
    #[error("run {runtime} state {id}: {source}")]
    Spawn {
        runtime: String,
        id: String,
        source: std::io::Error,
    },
    #[error("{runtime} state {id} failed{}: {stderr}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Failed {
        runtime: String,
        id: String,
        status: Option<std::process::ExitStatus>,
        stderr: String,
    },
    #[error("{runtime} state {id}: unexpected output: {source}")]
    Parse {
        runtime: String,
        id: String,
        source: serde_json::Error,
    },
}

/// Ask `runtime` for the state of container `id` under `root`: the builtin runtime answers
/// in process, a runtime binary by `state`.
pub fn query(
    runtime: &Runtime,
    root: Option<&Path>,
    id: &str,
) -> Result<RuntimeState, RuntimeStateError> {
    let stdout = match runtime {
        Runtime::Exec(path) => run_state(path, root, id)?,
        #[cfg(feature = "builtin")]
        Runtime::Builtin => {
            crate::builtin::state_json(root, id).map_err(|e| RuntimeStateError::Failed {
                runtime: runtime.to_string(),
                id: id.to_owned(),
                status: None,
                stderr: e.to_string(),
            })?
        }
        #[cfg(not(feature = "builtin"))]
        Runtime::Builtin => {
            return Err(RuntimeStateError::Failed {
                runtime: runtime.to_string(),
                id: id.to_owned(),
                status: None,
                stderr: "this ociguard was built without the builtin runtime".to_owned(),
            })
        }
    };
    serde_json::from_slice(&stdout).map_err(|source| RuntimeStateError::Parse {
        runtime: runtime.to_string(),
        id: id.to_owned(),
        source,
    })
}

fn run_state(runtime: &Path, root: Option<&Path>, id: &str) -> Result<Vec<u8>, RuntimeStateError> {
    let mut cmd = Command::new(runtime);
    // A minimal, explicit environment: nothing of the engine's (or a container's) leaks in.
    cmd.env_clear().env(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    if let Some(root) = root {
        cmd.arg("--root").arg(root);
    }
    let out = cmd
        .arg("state")
        .arg(id)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RuntimeStateError::Spawn {
            runtime: runtime.display().to_string(),
            id: id.to_owned(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(RuntimeStateError::Failed {
            runtime: runtime.display().to_string(),
            id: id.to_owned(),
            status: Some(out.status),
            stderr: ociguard_policy::excerpt::excerpt(stderr.trim(), 1024).into_owned(),
        });
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_runtime(dir: &Path, script: &str) -> PathBuf {
        let p = dir.join("rt");
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn parses_crun_state_and_passes_root() {
        let dir = tempfile::tempdir().unwrap();
        let rt = fake_runtime(
            dir.path(),
            r#"[ "$1 $2 $3 $4" = "--root /r state c1" ] || { echo "bad args: $*" >&2; exit 1; }
echo '{"ociVersion":"1.0.0","id":"c1","pid":7,"status":"running","bundle":"/b","rootfs":"/b/rootfs","created":"x","owner":"root","annotations":{"org.ociguard.policy":"p"}}'"#,
        );
        let s = query(&Runtime::Exec(rt), Some(Path::new("/r")), "c1").unwrap();
        assert_eq!(s.bundle, PathBuf::from("/b"));
        assert_eq!(s.status, "running");
        assert_eq!(s.annotations["org.ociguard.policy"], "p");
    }

    #[test]
    fn failure_and_garbage_are_errors_naming_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let rt = fake_runtime(dir.path(), "echo 'container does not exist' >&2; exit 1");
        let err = query(&Runtime::Exec(rt.clone()), None, "c1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("state c1 failed"), "{err}");
        assert!(err.contains("container does not exist"), "{err}");
        let rt = fake_runtime(dir.path(), "echo not-json");
        let err = query(&Runtime::Exec(rt.clone()), None, "c1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unexpected output"), "{err}");
    }
}
