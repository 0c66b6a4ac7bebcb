//! Building the identity record from what a hook can see: the OCI state, the bundle's
//! `config.json` (annotations, including the policy ociguard wrote), and `/proc` of the
//! container's init process.
//!
//! `/proc` is read only while the process must exist (`createRuntime`, `poststart`). At
//! `poststop` the pid may already belong to someone else, so nothing is read from it: the
//! monitor keeps what it learnt earlier.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use ociguard_monitor::procfs;
use ociguard_monitor::record::{Identity, Image, Namespaces, PolicyRef, StrMap, Timestamp};
use ociguard_policy::annotations::{OWN_PREFIX, POLICY, POLICY_DIGEST, POLICY_MODE};
use ociguard_policy::digest::sha256;
use ociguard_policy::identity::HookEvent;
use ociguard_policy::select::IMAGE_ANNOTATIONS;
use serde_json::Value;

use crate::kubernetes;
use crate::state::HookState;

/// Largest config.json read.
const MAX_CONFIG: u64 = 64 * 1024 * 1024;
/// Annotation prefix of image labels engines pass through (image-spec pre-defined keys).
const IMAGE_LABEL_PREFIX: &str = "org.opencontainers.image.";

/// An identity, and what could not be found out (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub identity: Identity,
    pub warnings: Vec<String>,
}

fn read_config(bundle: &Path) -> Result<Value, String> {
    let path = bundle.join("config.json");
    let f = std::fs::File::open(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// Which engine created the container, from the marks each one leaves.
pub fn engine(ann: &BTreeMap<String, String>, bundle: &str) -> Option<String> {
    let has_prefix = |p: &str| ann.keys().any(|k| k.starts_with(p));
    let name = if ann.get("io.container.manager").map(String::as_str) == Some("libpod") {
        "podman"
    } else if has_prefix("io.kubernetes.cri-o.") {
        "cri-o"
    } else if has_prefix("io.kubernetes.cri.") {
        "containerd"
    } else if bundle.starts_with("/run/containerd/io.containerd.runtime.v2.task/moby/")
        || has_prefix("com.docker.")
    {
        "docker"
    } else if bundle.starts_with("/run/containerd/") {
        "containerd"
    } else if bundle.contains("/overlay-containers/") {
        "podman"
    } else {
        return None;
    };
    Some(name.to_owned())
}

fn image(ann: &BTreeMap<String, String>) -> Image {
    let name = IMAGE_ANNOTATIONS
        .iter()
        .find_map(|k| ann.get(*k).filter(|v| !v.is_empty()))
        .cloned();
    let digest = name
        .as_deref()
        .and_then(|n| n.split_once('@'))
        .map(|(_, d)| d.to_owned())
        .or_else(|| {
            ann.get("io.kubernetes.cri-o.ImageRef")
                .filter(|r| r.starts_with("sha256:") || r.contains("@sha256:"))
                .map(|r| r.rsplit('@').next().unwrap_or(r).to_owned())
        });
    let labels = ann
        .iter()
        .filter(|(k, _)| k.starts_with(IMAGE_LABEL_PREFIX) && k.as_str() != IMAGE_ANNOTATIONS[2])
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Image {
        name: name.map(Into::into),
        digest: digest.map(Into::into),
        labels,
    }
}

/// `seccomp` = digest of `linux.seccomp` as written; other kinds from `org.ociguard.<kind>.digest`.
fn profiles(ann: &BTreeMap<String, String>, spec: Option<&Value>) -> StrMap {
    let mut out = StrMap::new();
    if let Some(seccomp) = spec
        .and_then(|s| s.get("linux"))
        .and_then(|l| l.get("seccomp"))
        .filter(|v| !v.is_null())
    {
        // A tree that came from JSON always serialises.
        out.insert(
            "seccomp".to_owned(),
            sha256(&serde_json::to_vec(seccomp).unwrap_or_default()),
        );
    }
    for (k, v) in ann {
        if k == POLICY_DIGEST {
            continue;
        }
        if let Some(kind) = k
            .strip_prefix(OWN_PREFIX)
            .and_then(|r| r.strip_suffix(".digest"))
            .filter(|kind| !kind.is_empty() && !kind.contains('.'))
        {
            out.insert(kind.to_owned(), v.clone());
        }
    }
    out
}

/// The process facts of `pid` (start time, boot, cgroup, namespaces).
pub fn process_facts(pid: u32, id: &mut Identity, warnings: &mut Vec<String>) {
    id.pid = Some(pid);
    match procfs::stat(pid) {
        Ok(s) => id.start_time = Some(s.start_time),
        Err(e) => warnings.push(format!("/proc/{pid}/stat: {e}")),
    }
    match procfs::boot_id() {
        Ok(b) => id.boot_id = Some(b.into()),
        Err(e) => warnings.push(format!("boot id: {e}")),
    }
    match procfs::cgroup(pid) {
        Ok(cg) => id.cgroup = cg,
        Err(e) => warnings.push(format!("/proc/{pid}/cgroup: {e}")),
    }
    let ns = |kind: &str, warnings: &mut Vec<String>| match procfs::ns_inode(pid, kind) {
        Ok(i) => Some(i),
        Err(e) => {
            warnings.push(format!("/proc/{pid}/ns/{kind}: {e}"));
            None
        }
    };
    id.namespaces = Namespaces {
        pid: ns("pid", warnings),
        net: ns("net", warnings),
        mnt: ns("mnt", warnings),
    };
}

/// Everything a hook can learn about the container at `event`.
pub fn collect(state: &HookState, event: HookEvent, now: Timestamp) -> Collected {
    let mut warnings = Vec::new();
    let spec = match read_config(&state.bundle) {
        Ok(v) => Some(v),
        Err(e) => {
            warnings.push(e);
            None
        }
    };
    // config.json is what ociguard rewrote; the state's annotations are a copy of it.
    let mut ann: BTreeMap<String, String> = spec
        .as_ref()
        .and_then(|s| s.get("annotations"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &state.annotations {
        ann.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let bundle = state.bundle.display().to_string();
    let mut id = Identity {
        id: state.id.clone(),
        engine: engine(&ann, &bundle).map(Into::into),
        bundle,
        image: image(&ann),
        kubernetes: kubernetes::from_spec(&ann, spec.as_ref()),
        policy: ann.get(POLICY).map(|name| PolicyRef {
            name: name.as_str().into(),
            digest: ann.get(POLICY_DIGEST).map(|d| d.as_str().into()),
            mode: ann.get(POLICY_MODE).map(|m| m.as_str().into()),
        }),
        profiles: profiles(&ann, spec.as_ref()),
        ..Default::default()
    };
    match event {
        HookEvent::CreateRuntime | HookEvent::Poststart => match state.pid {
            Some(pid) => process_facts(pid, &mut id, &mut warnings),
            None => warnings.push(format!("OCI state at {} has no pid", event.as_str())),
        },
        HookEvent::Poststop => {}
    }
    match event {
        HookEvent::CreateRuntime => id.created = Some(now),
        HookEvent::Poststart => id.started = Some(now),
        HookEvent::Poststop => id.exited = Some(now),
    }
    Collected {
        identity: id,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn from_a_bundle_and_our_own_process() {
        let dir = tempfile::tempdir().unwrap();
        let spec = json!({
            "ociVersion": "1.0.2",
            "annotations": {
                "io.kubernetes.cri.image-name": "registry.example/app@sha256:abc",
                "io.kubernetes.cri.sandbox-namespace": "payments",
                "org.opencontainers.image.version": "1.2",
                "org.ociguard.policy": "strict",
                "org.ociguard.policy.digest": "sha256:pp",
                "org.ociguard.policy.mode": "enforce",
                "org.ociguard.apparmor.digest": "sha256:aa"
            },
            "linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO"}}
        });
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let state = HookState {
            id: "c1".into(),
            bundle: dir.path().to_owned(),
            pid: Some(std::process::id()),
            status: "created".into(),
            annotations: BTreeMap::new(),
        };
        let c = collect(&state, HookEvent::CreateRuntime, Timestamp(5));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let id = c.identity;
        assert_eq!(id.engine.as_deref(), Some("containerd"));
        assert_eq!(
            id.image.name.as_deref(),
            Some("registry.example/app@sha256:abc")
        );
        assert_eq!(id.image.digest.as_deref(), Some("sha256:abc"));
        assert_eq!(&id.image.labels["org.opencontainers.image.version"], "1.2");
        assert_eq!(
            id.policy.as_ref().unwrap().digest.as_deref(),
            Some("sha256:pp")
        );
        assert!(id.profiles["seccomp"].starts_with("sha256:"));
        assert_eq!(&id.profiles["apparmor"], "sha256:aa");
        assert!(!id.profiles.contains_key("policy"));
        assert!(id.start_time.is_some() && id.namespaces.pid.is_some());
        assert_eq!(id.created, Some(Timestamp(5)));
        assert_eq!(
            id.kubernetes.unwrap().namespace.as_deref(),
            Some("payments")
        );

        // poststop reads nothing from /proc
        let c = collect(&state, HookEvent::Poststop, Timestamp(9));
        assert_eq!(c.identity.pid, None);
        assert_eq!(c.identity.exited, Some(Timestamp(9)));
    }

    #[test]
    fn engines() {
        let mut a = BTreeMap::new();
        assert_eq!(engine(&a, "/x"), None);
        a.insert("io.container.manager".to_owned(), "libpod".to_owned());
        a.insert("io.kubernetes.cri-o.TTY".to_owned(), "false".to_owned());
        assert_eq!(engine(&a, "/x").as_deref(), Some("podman"));
        a.remove("io.container.manager");
        assert_eq!(engine(&a, "/x").as_deref(), Some("cri-o"));
        assert_eq!(
            engine(
                &BTreeMap::new(),
                "/run/containerd/io.containerd.runtime.v2.task/default/c"
            )
            .as_deref(),
            Some("containerd")
        );
    }
}
