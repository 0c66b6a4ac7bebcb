//! `ociguard-hook egress`: install a container's egress ruleset in its network namespace, at
//! createRuntime (the namespaces exist, the workload has not run a single instruction).
//!
//! The ruleset was rendered by `ociguard create` ([`ociguard_policy::egress::Program`]) and stored
//! under its digest; the hook refuses a file whose content does not match the digest in its argv.
//! It enters `/proc/<pid>/ns/net` and installs the ruleset there in one nf_tables transaction,
//! so either the whole ruleset is in place or none of it is: by default as a netlink batch it
//! sends itself ([`crate::nfnl`]), or with `--installer nft` through `nft -j -f -`. It never
//! touches the namespace it runs in itself (the node's): a container that turns out to share it
//! is refused.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use ociguard_policy::config::Installer;
use ociguard_policy::digest::sha256;
use ociguard_policy::egress::{netlink, nft_json, Program};
use ociguard_policy::excerpt::excerpt;

use crate::state::{self, StateError};

/// Largest ruleset file accepted (100,000 entries render to a few MB).
pub const MAX_RULESET: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct EgressArgs {
    pub ruleset: PathBuf,
    /// `sha256:...` the file must have.
    pub digest: String,
    pub installer: Installer,
    /// For `Installer::Nft`.
    pub nft: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum EgressHookError {
    #[error("{0}")]
    State(#[from] StateError),
    #[error(
        "container {id}: the OCI state has no pid, so there is no network namespace to restrict"
    )]
    NoPid { id: String },
    #[error("container {id}: read egress ruleset {path}: {source}")]
    Ruleset {
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id}: egress ruleset {path} is larger than {MAX_RULESET} bytes")]
    TooLarge { id: String, path: PathBuf },
    #[error("container {id}: egress ruleset {path} is not a ruleset ociguard wrote: {reason}")]
    Malformed {
        id: String,
        path: PathBuf,
        reason: String,
    },
    #[error("container {id}: egress ruleset {path} has digest {actual}, expected {expected}: refusing to install a ruleset that is not the one create decided")]
    Digest {
        id: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("container {id}: network namespace of pid {pid} is gone ({source}): the container exited before its egress rules could be installed")]
    Gone {
        id: String,
        pid: u32,
        source: std::io::Error,
    },
    #[error("container {id}: pid {pid} shares the node's network namespace: refusing to install egress rules there")]
    HostNamespace { id: String, pid: u32 },
    #[error("container {id}: enter the network namespace of pid {pid}: {source}")]
    Setns {
        id: String,
        pid: u32,
        source: nix::Error,
    },
    #[error("container {id}: {nft} failed to install the egress ruleset (nothing was installed): {reason}")]
    Nft {
        id: String,
        nft: PathBuf,
        reason: String,
    },
    #[error(
        "container {id}: installing the egress ruleset failed (nothing was installed): {source}"
    )]
    Netlink {
        id: String,
        source: crate::nfnl::NfnlError,
    },
}

/// The container whose rules were installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub id: String,
    pub pid: u32,
}

/// Read the OCI state from `input` and install the ruleset in the container's namespace.
/// On return (either way) this process may be in the container's network namespace: the hook
/// exits right after.
pub fn run(args: &EgressArgs, input: &mut impl Read) -> Result<Installed, EgressHookError> {
    let state = state::read(input)?;
    let id = state.id;
    let pid = state
        .pid
        .ok_or_else(|| EgressHookError::NoPid { id: id.clone() })?;
    let text = read_ruleset(&id, &args.ruleset, &args.digest)?;
    let program: Program = serde_json::from_str(&text)
        .map_err(|e| e.to_string())
        .and_then(|p: Program| p.check().map(|()| p))
        .map_err(|reason| EgressHookError::Malformed {
            id: id.clone(),
            path: args.ruleset.clone(),
            reason: excerpt(&reason, 500).into_owned(),
        })?;
    // Built before entering the namespace: the time in there is only the kernel's.
    let batch = (args.installer == Installer::Netlink).then(|| netlink::batch(&program));
    let ns_path = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let ns = std::fs::File::open(&ns_path).map_err(|source| EgressHookError::Gone {
        id: id.clone(),
        pid,
        source,
    })?;
    let target = ns.metadata().map_err(|source| EgressHookError::Gone {
        id: id.clone(),
        pid,
        source,
    })?;
    for own in ["/proc/self/ns/net", "/proc/1/ns/net"] {
        if let Ok(m) = std::fs::metadata(own) {
            if (m.dev(), m.ino()) == (target.dev(), target.ino()) {
                return Err(EgressHookError::HostNamespace { id, pid });
            }
        }
    }
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| EgressHookError::Setns {
        id: id.clone(),
        pid,
        source,
    })?;
    match batch {
        Some(batch) => crate::nfnl::apply(&batch).map_err(|source| EgressHookError::Netlink {
            id: id.clone(),
            source,
        })?,
        None => install(&nft_json(&program), &args.nft).map_err(|reason| EgressHookError::Nft {
            id: id.clone(),
            nft: args.nft.clone(),
            reason,
        })?,
    }
    Ok(Installed { id, pid })
}

fn read_ruleset(id: &str, path: &Path, expected: &str) -> Result<String, EgressHookError> {
    let err = |source| EgressHookError::Ruleset {
        id: id.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(MAX_RULESET + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_RULESET {
        return Err(EgressHookError::TooLarge {
            id: id.to_owned(),
            path: path.to_owned(),
        });
    }
    let actual = sha256(text.as_bytes());
    if actual != expected {
        return Err(EgressHookError::Digest {
            id: id.to_owned(),
            path: path.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(text)
}

/// `nft -j -f -` with `json` in the current network namespace (one transaction).
pub fn install(json: &str, nft: &Path) -> Result<(), String> {
    nftables::helper::apply_ruleset_raw(json, Some(nft), &[] as &[&str])
        .map(drop)
        .map_err(|e| match e {
            // nft echoes the whole JSON input around an error; keep the message readable.
            nftables::helper::NftablesError::NftFailed { stderr, .. } => {
                excerpt(stderr.trim(), 2000).into_owned()
            }
            other => other.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DENY_ALL: &str = r#"{"enforce":true,"on_deny":"reject","nflog_group":100,"accepts":[]}"#;

    /// A valid (deny-all) ruleset file and the arguments naming it.
    fn deny_all_ruleset() -> (tempfile::TempDir, EgressArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, DENY_ALL).unwrap();
        let args = EgressArgs {
            ruleset: path,
            digest: sha256(DENY_ALL.as_bytes()),
            installer: Installer::Netlink,
            nft: "/usr/sbin/nft".into(),
        };
        (dir, args)
    }

    #[test]
    fn refuses_a_file_that_is_not_a_program() {
        let (dir, mut args) = deny_all_ruleset();
        let state = r#"{"ociVersion":"1.0.0","id":"c","status":"creating","bundle":"/b","pid":1}"#;
        for bad in [
            "{}",
            r#"{"enforce":true,"on_deny":"reject","nflog_group":1,"accepts":[{"v6":true,"nets":["10.0.0.0/8"]}]}"#,
            r#"{"enforce":true,"on_deny":"reject","nflog_group":1,"accepts":[{"v6":false,"nets":["10.0.0.0/8"],"ports":[[0,5]]}]}"#,
        ] {
            std::fs::write(&args.ruleset, bad).unwrap();
            args.digest = sha256(bad.as_bytes());
            let err = run(&args, &mut state.as_bytes()).unwrap_err();
            assert!(
                matches!(err, EgressHookError::Malformed { .. }),
                "{bad}: {err}"
            );
        }
        drop(dir);
    }

    #[test]
    fn refuses_a_ruleset_that_is_not_the_decided_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, "{\"nftables\":[]}").unwrap();
        let good = sha256(b"{\"nftables\":[]}");
        assert_eq!(
            read_ruleset("c", &path, &good).unwrap(),
            "{\"nftables\":[]}"
        );
        let err = read_ruleset("c", &path, "sha256:00")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected sha256:00"), "{err}");
        let err = read_ruleset("c", &dir.path().join("missing"), &good)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn state_without_pid_or_with_a_dead_pid() {
        let args = EgressArgs {
            ruleset: "/nonexistent".into(),
            digest: "sha256:x".into(),
            installer: Installer::Netlink,
            nft: "/usr/sbin/nft".into(),
        };
        let err = run(
            &args,
            &mut &br#"{"ociVersion":"1.0.0","id":"c","status":"creating","bundle":"/b"}"#[..],
        )
        .unwrap_err();
        assert!(matches!(err, EgressHookError::NoPid { .. }), "{err}");
        let (_dir, args) = deny_all_ruleset();
        // pid_max is at most 2^22: this pid cannot exist.
        let err = run(&args, &mut &br#"{"ociVersion":"1.0.0","id":"c","status":"creating","bundle":"/b","pid":99999999}"#[..]).unwrap_err();
        assert!(matches!(err, EgressHookError::Gone { .. }), "{err}");
        assert!(err.to_string().contains("exited before"), "{err}");
    }

    #[test]
    fn never_the_nodes_namespace() {
        let (_dir, args) = deny_all_ruleset();
        let me = std::process::id();
        let state = format!(
            r#"{{"ociVersion":"1.0.0","id":"c","status":"creating","bundle":"/b","pid":{me}}}"#
        );
        let err = run(&args, &mut state.as_bytes()).unwrap_err();
        assert!(
            matches!(err, EgressHookError::HostNamespace { .. }),
            "{err}"
        );
    }
}
