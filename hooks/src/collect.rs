//! Building the identity record from what a hook can see: the OCI state, the bundle's
//! `config.json` (annotations, including the policy ociguard wrote), and `/proc` of the
//! container's init process.
//!
//! `/proc` is read only while the process must exist (`createRuntime`, `poststart`). At
//! `poststop` the pid may already belong to someone else, so nothing is read from it: the
//! monitor keeps what it learnt earlier.

use std::collections::BTreeMap;
use std::path::Path;

use ociguard_monitor::procfs;
use ociguard_monitor::record::{Identity, Image, Namespaces, PolicyRef, StrMap, Timestamp};
use ociguard_policy::annotations::{
    APPARMOR_DIGEST, EGRESS_DIGEST, POLICY, POLICY_DIGEST, POLICY_MODE,
};
use ociguard_policy::digest;
use ociguard_policy::identity::HookEvent;
use ociguard_policy::select::IMAGE_ANNOTATIONS;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

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

/// `config.json`, read with one `read(2)` into a buffer of its size. Like the shim, never
/// through a symlink (a bundle's config.json linked to another file is not the container's).
fn read_config(path: &Path) -> Result<Vec<u8>, String> {
    ociguard_policy::spec::read_regular(path, MAX_CONFIG)
        .map(|(bytes, _)| bytes)
        .map_err(|e| format!("read {}: {e}", path.display()))
}

/// The parts of `config.json` the record is made of. The rest is skipped by the parser without
/// building anything: most of a config ociguard rewrote is a seccomp profile and the filter
/// precompiled from it (a 10 KiB annotation). Annotation values stay raw until used.
#[derive(Debug, Default, Deserialize)]
struct SpecView<'a> {
    #[serde(default, borrow)]
    annotations: BTreeMap<String, &'a RawValue>,
    #[serde(default)]
    mounts: Option<Value>,
    #[serde(default, borrow)]
    linux: Option<LinuxView<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct LinuxView<'a> {
    #[serde(default, borrow)]
    seccomp: Option<&'a RawValue>,
}

/// Annotations the record never uses: crun's own directives (`run.oci.*`, among them the
/// precompiled seccomp filter).
fn unused_annotation(key: &str) -> bool {
    key.starts_with("run.oci.")
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
    use ociguard_policy::annotations::{IMAGE, IMAGE_DIGEST};
    let nonempty = |k: &str| ann.get(k).filter(|v| !v.is_empty());
    // What ociguard's decision resolved (from an annotation or the engine's image store; the
    // create rewrite sets or removes these keys, so they are never the workload's), else the
    // engine's own annotations for a bundle ociguard did not rewrite.
    let name = nonempty(IMAGE)
        .or_else(|| IMAGE_ANNOTATIONS.iter().find_map(|k| nonempty(k)))
        .cloned();
    let digest = nonempty(IMAGE_DIGEST).cloned().or_else(|| {
        name.as_deref()
            .and_then(ociguard_policy::select::pinned_digest)
            .map(str::to_owned)
            .or_else(|| {
                ann.get("io.kubernetes.cri-o.ImageRef")
                    .filter(|r| r.starts_with("sha256:") || r.contains("@sha256:"))
                    .map(|r| r.rsplit('@').next().unwrap_or(r).to_owned())
            })
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

/// The profiles in effect: `seccomp` = digest of `linux.seccomp` as written (compact, keys in
/// the file's order); `apparmor` and `egress` from the digests ociguard wrote next to what it
/// set (any other `org.ociguard.*` key was stripped at create, and none is read here).
fn profiles(ann: &BTreeMap<String, String>, seccomp: Option<&RawValue>) -> StrMap {
    let mut out = StrMap::new();
    if let Some(digest) = seccomp.and_then(compact_digest) {
        out.insert("seccomp".to_owned(), digest);
    }
    for (kind, key) in [("apparmor", APPARMOR_DIGEST), ("egress", EGRESS_DIGEST)] {
        if let Some(digest) = ann.get(key) {
            out.insert(kind.to_owned(), digest.clone());
        }
    }
    out
}

/// `sha256:` of `raw` re-serialised compactly (what `serde_json::to_vec` of its parsed value
/// gives), streamed from the parser into the hash: no tree, no copy of the text.
fn compact_digest(raw: &RawValue) -> Option<String> {
    let mut hash = Sha256::new();
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut hash)).ok()?;
    Some(digest::prefixed(&hash.finalize()))
}

/// The process facts of `pid` (start time, boot, cgroup, namespaces).
pub fn process_facts(pid: u32, id: &mut Identity, warnings: &mut Vec<String>) {
    id.pid = Some(pid);
    match procfs::boot_id() {
        Ok(b) => id.boot_id = Some(b.into()),
        Err(e) => warnings.push(format!("boot id: {e}")),
    }
    // One open of /proc/<pid>: the facts below are all of the process it named then.
    let proc = match procfs::Process::open(pid) {
        Ok(p) => p,
        Err(e) => {
            warnings.push(format!("/proc/{pid}: {e}"));
            return;
        }
    };
    match proc.stat() {
        Ok(s) => id.start_time = Some(s.start_time),
        Err(e) => warnings.push(format!("/proc/{pid}/stat: {e}")),
    }
    match proc.cgroup() {
        Ok(cg) => id.cgroup = cg,
        Err(e) => warnings.push(format!("/proc/{pid}/cgroup: {e}")),
    }
    let ns = |kind: &str, warnings: &mut Vec<String>| match proc.ns_inode(kind) {
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
    let path = state.bundle.join("config.json");
    let bytes = read_config(&path).map_err(|e| warnings.push(e)).ok();
    let spec: SpecView<'_> = bytes
        .as_deref()
        .and_then(|b| {
            serde_json::from_slice(b)
                .map_err(|e| warnings.push(format!("parse {}: {e}", path.display())))
                .ok()
        })
        .unwrap_or_default();
    // config.json is what ociguard rewrote; the state's annotations are a copy of it.
    let mut ann: BTreeMap<String, String> = spec
        .annotations
        .iter()
        .filter(|(k, _)| !unused_annotation(k))
        .filter_map(|(k, v)| Some((k.clone(), serde_json::from_str(v.get()).ok()?)))
        .collect();
    for (k, v) in &state.annotations {
        ann.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let bundle = state.bundle.display().to_string();
    let mut id = Identity {
        id: state.id.clone(),
        engine: engine(&ann, &bundle).map(Into::into),
        bundle,
        image: image(&ann),
        kubernetes: kubernetes::from_spec(&ann, spec.mounts.as_ref()),
        policy: ann.get(POLICY).map(|name| PolicyRef {
            name: name.as_str().into(),
            digest: ann.get(POLICY_DIGEST).map(|d| d.as_str().into()),
            mode: ann.get(POLICY_MODE).map(|m| m.as_str().into()),
        }),
        profiles: profiles(&ann, spec.linux.and_then(|l| l.seccomp)),
        ..Default::default()
    };
    match event {
        HookEvent::CreateRuntime | HookEvent::Poststart => match state.pid {
            Some(pid) => process_facts(pid, &mut id, &mut warnings),
            None => warnings.push(format!("OCI state at {} has no pid", event.as_str())),
        },
        HookEvent::Poststop => {}
    }
    // Everything above came from annotations a pod or image author may have written.
    id.bound_untrusted();
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
    use ociguard_policy::digest::sha256;
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
        assert_eq!(
            id.profiles["seccomp"],
            sha256(br#"{"defaultAction":"SCMP_ACT_ERRNO"}"#)
        );
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

    /// Docker and containerd's `ctr` write no image annotation: the image ociguard resolved
    /// from their stores, written by its create rewrite, is the record's.
    #[test]
    fn the_image_ociguard_resolved_is_recorded() {
        let ann = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let i = image(&ann(&[
            ("org.ociguard.image", "localhost/bb:1"),
            ("org.ociguard.image.digest", "sha256:dd"),
        ]));
        assert_eq!(i.name.as_deref(), Some("localhost/bb:1"));
        assert_eq!(i.digest.as_deref(), Some("sha256:dd"));
        // Preferred over the engine's annotation (the same name, or the store's answer).
        let i = image(&ann(&[
            ("io.kubernetes.cri.image-name", "app@sha256:ee"),
            ("org.ociguard.image", "app@sha256:ee"),
        ]));
        assert_eq!(i.digest.as_deref(), Some("sha256:ee"));
        assert_eq!(image(&ann(&[])).name, None);
    }

    /// A config as ociguard writes it, but pretty-printed, with escapes, a precompiled filter, a
    /// non-string annotation and fields the record does not use: the same facts and digests.
    #[test]
    fn only_the_used_parts_of_a_config_count() {
        let dir = tempfile::tempdir().unwrap();
        let seccomp = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]
        });
        let spec = json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sh"], "env": ["PATH=/bin"]},
            "annotations": {
                "run.oci.seccomp_bpf_data": "A".repeat(10_000),
                "io.kubernetes.cri-o.Labels": "{\"io.kubernetes.pod.namespace\":\"ns1\",\"io.kubernetes.pod.name\":\"pé\"}",
                "org.opencontainers.image.title": "café",
                "not.a.string": {"x": 1},
                "org.ociguard.seccomp.digest": "sha256:never-read",
                "org.ociguard.egress.digest": "sha256:ee"
            },
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {"seccomp": seccomp, "namespaces": [{"type": "pid"}]}
        });
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_string_pretty(&spec).unwrap(),
        )
        .unwrap();
        let state = HookState {
            id: "c2".into(),
            bundle: dir.path().to_owned(),
            pid: None,
            status: "created".into(),
            annotations: BTreeMap::new(),
        };
        let c = collect(&state, HookEvent::Poststop, Timestamp(1));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let id = c.identity;
        assert_eq!(
            id.profiles["seccomp"],
            sha256(&serde_json::to_vec(&seccomp).unwrap())
        );
        assert_eq!(&id.profiles["egress"], "sha256:ee");
        assert_eq!(id.profiles.len(), 2, "{:?}", id.profiles);
        assert_eq!(id.engine.as_deref(), Some("cri-o"));
        assert_eq!(&id.image.labels["org.opencontainers.image.title"], "café");
        let k = id.kubernetes.unwrap();
        assert_eq!(
            (k.namespace.as_deref(), k.pod.as_deref()),
            (Some("ns1"), Some("pé"))
        );

        // Not JSON: no facts from it, and a warning naming the file.
        std::fs::write(dir.path().join("config.json"), "{\"annotations\": ").unwrap();
        let c = collect(&state, HookEvent::Poststop, Timestamp(1));
        assert!(c.identity.profiles.is_empty());
        assert!(
            c.warnings[0].starts_with("parse ") && c.warnings[0].contains("config.json"),
            "{:?}",
            c.warnings
        );
    }

    /// The streamed digest is the digest of the compact serialisation of the parsed value, for
    /// the built-in profile written compactly or pretty-printed, with escapes and numbers.
    #[test]
    fn seccomp_digest_is_that_of_the_compact_form() {
        let builtin = ociguard_policy::seccomp::builtin_profile(false);
        let odd =
            json!({"s": "tab\there \"q\" é \u{1}", "n": [-1, 0, 1.5, 1e300, u64::MAX], "e": {}});
        for v in [builtin, odd] {
            let want = sha256(&serde_json::to_vec(&v).unwrap());
            for text in [v.to_string(), serde_json::to_string_pretty(&v).unwrap()] {
                let raw: Box<RawValue> = serde_json::from_str(&text).unwrap();
                assert_eq!(compact_digest(&raw).as_deref(), Some(want.as_str()));
            }
        }
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
