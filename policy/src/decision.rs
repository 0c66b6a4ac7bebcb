//! The whole create-time decision as one value: facts → policy → edits → new document.
//!
//! No I/O happens here: callers hand in the bytes of `config.json` and a loaded policy set and
//! get back what to write and why. `ociguard create` writes it; `ociguardctl explain` prints it.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use crate::change::Change;
use crate::model::{LabelRequirement, Mode};
use crate::rewrite::{self, RewriteError};
use crate::select::{self, Considered, Facts, SelectError};
use crate::set::PolicySet;
use crate::spec::{self, SpecError};

/// Why a container got its policy and what that did to its config.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub policy: String,
    pub policy_source: String,
    pub policy_digest: String,
    pub mode: Mode,
    pub reason: String,
    pub facts: Facts,
    pub considered: Vec<Considered>,
    pub changes: Vec<Change>,
}

/// A decision plus the document to write back. Later stages of `create` (AppArmor, egress,
/// identity, precompiled seccomp) edit `document` further; it is serialised once, at the end
/// ([`Rewritten::to_bytes`]): serialising a 10 KB config costs ~25 us.
#[derive(Debug, Clone)]
pub struct Rewritten {
    pub decision: Decision,
    pub document: Value,
}

impl Rewritten {
    /// The bytes to write back (canonical: a retried create yields the same bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        spec::to_bytes(&self.document)
    }
}

/// Node-level constraints on decisions, from config.toml.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecideOptions<'a> {
    /// If non-empty, only policies whose digest is listed may apply.
    pub pinned_digests: &'a [String],
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("choose policy: {0}")]
    Select(#[from] SelectError),
    #[error("policy {policy:?} ({source_path}) requires image labels, which could not be resolved: {reason}")]
    LabelsRequired {
        policy: String,
        source_path: String,
        reason: String,
    },
    #[error(
        "policy {policy:?} ({source_path}) has digest {digest}, which is not in pinned_digests"
    )]
    NotPinned {
        policy: String,
        source_path: String,
        digest: String,
    },
    #[error("apply policy {policy:?} ({source_path}): {source}")]
    Rewrite {
        policy: String,
        source_path: String,
        mode: Mode,
        source: RewriteError,
    },
}

/// Decide and rewrite `config.json` (`original` are its bytes, `path` is for messages), from
/// the facts in the document alone.
pub fn decide(original: &[u8], path: &Path, set: &PolicySet) -> Result<Rewritten, DecideError> {
    decide_with(original, path, set, &DecideOptions::default(), |_, _| {})
}

/// [`decide`], letting `enrich` add facts found outside the document (image labels from the
/// engine's store, the service account from its token) before the policy is chosen.
pub fn decide_with(
    original: &[u8],
    path: &Path,
    set: &PolicySet,
    options: &DecideOptions<'_>,
    enrich: impl FnOnce(&Value, &mut Facts),
) -> Result<Rewritten, DecideError> {
    let mut document = spec::parse_config(original, path)?;
    let mut facts = Facts::from_spec(&document);
    enrich(&document, &mut facts);
    let selection = select::select(set, &facts)?;
    let policy = selection.policy;
    if let (LabelRequirement::Required, Some(reason)) =
        (policy.policy.labels, &facts.labels_unresolved)
    {
        return Err(DecideError::LabelsRequired {
            policy: policy.name().to_owned(),
            source_path: policy.source_display(),
            reason: reason.clone(),
        });
    }
    if !options.pinned_digests.is_empty() && !options.pinned_digests.contains(&policy.digest) {
        return Err(DecideError::NotPinned {
            policy: policy.name().to_owned(),
            source_path: policy.source_display(),
            digest: policy.digest.clone(),
        });
    }
    let changes =
        rewrite::apply(&mut document, policy, &facts).map_err(|source| DecideError::Rewrite {
            policy: policy.name().to_owned(),
            source_path: policy.source_display(),
            mode: policy.policy.mode,
            source,
        })?;
    Ok(Rewritten {
        decision: Decision {
            policy: policy.name().to_owned(),
            policy_source: policy.source_display(),
            policy_digest: policy.digest.clone(),
            mode: policy.policy.mode,
            reason: selection.reason,
            facts,
            considered: selection.considered,
            changes,
        },
        document,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> PolicySet {
        PolicySet::from_texts(files.iter().map(|(p, t)| (Path::new(*p), *t))).unwrap()
    }

    #[test]
    fn decide_by_annotation_and_idempotent() {
        let s = set(&[(
            "/p/nomkdir.toml",
            "name = \"nomkdir\"\n[match]\nannotations = { \"org.example/profile\" = \"nomkdir\" }\n[seccomp]\ndeny = [\"mkdir\", \"mkdirat\"]\n",
        )]);
        let config = br#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"},"annotations":{"org.example/profile":"nomkdir"}}"#;
        let r = decide(config, Path::new("config.json"), &s).unwrap();
        let bytes = r.to_bytes();
        assert!(bytes != config);
        assert_eq!(r.decision.policy, "nomkdir");
        let again = decide(&bytes, Path::new("config.json"), &s).unwrap();
        assert_eq!(again.to_bytes(), bytes, "a second create changes nothing");
        assert_eq!(again.decision.policy_digest, r.decision.policy_digest);

        let plain = br#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#;
        let r = decide(plain, Path::new("config.json"), &s).unwrap();
        assert_eq!(r.decision.policy, "default");
        assert_eq!(r.decision.policy_source, "built-in");
    }

    #[test]
    fn errors() {
        let s = PolicySet::default();
        let err = decide(b"[", Path::new("/b/config.json"), &s).unwrap_err();
        assert!(err.to_string().contains("/b/config.json"), "{err}");
    }

    #[test]
    fn labels_required_and_pinning() {
        let s = set(&[(
            "/p/default.toml",
            "name = \"default\"\nlabels = \"required\"\n",
        )]);
        let config = br#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#;
        let err = decide_with(
            config,
            Path::new("c"),
            &s,
            &DecideOptions::default(),
            |_, f| f.labels_unresolved = Some("containerd socket absent".into()),
        )
        .unwrap_err();
        assert!(err.to_string().contains("requires image labels"), "{err}");
        assert!(
            err.to_string().contains("containerd socket absent"),
            "{err}"
        );
        assert!(decide_with(
            config,
            Path::new("c"),
            &s,
            &DecideOptions::default(),
            |_, _| {}
        )
        .is_ok());

        let pins = vec!["sha256:0000".to_owned()];
        let err = decide_with(
            config,
            Path::new("c"),
            &s,
            &DecideOptions {
                pinned_digests: &pins,
            },
            |_, _| {},
        )
        .unwrap_err();
        assert!(matches!(err, DecideError::NotPinned { .. }));
        let pins = vec![s.default.digest.clone()];
        assert!(decide_with(
            config,
            Path::new("c"),
            &s,
            &DecideOptions {
                pinned_digests: &pins
            },
            |_, _| {}
        )
        .is_ok());
    }

    #[test]
    fn image_seccomp_label_only_narrows() {
        let s = PolicySet::default();
        let config = br#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},"root":{"path":"rootfs"}}"#;
        let label = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#;
        let labelled = |label: &str| {
            decide_with(
                config,
                Path::new("c"),
                &s,
                &DecideOptions::default(),
                |_, f| {
                    f.labels
                        .insert(crate::image_seccomp::LABEL.to_owned(), label.to_owned());
                },
            )
            .unwrap()
        };
        let r = labelled(label);
        assert!(r.decision.changes.iter().any(|c| matches!(c, Change::ImageSeccompNarrowed { denied } if denied == &vec!["mkdir".to_owned()])));
        // A label that would allow everything changes nothing (never loosens).
        let loose = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}"#;
        let r2 = labelled(loose);
        let plain = decide(config, Path::new("c"), &s).unwrap();
        assert_eq!(
            r2.document["linux"]["seccomp"],
            plain.document["linux"]["seccomp"]
        );
    }
}
