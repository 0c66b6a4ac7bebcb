//! Image labels (and image name and digest) for the container being created, from the engine's
//! image store: no engine copies them into `config.json`.
//!
//! One resolver per engine, chosen from the bundle path. What cannot be resolved is reported as
//! a reason (it becomes `labels_unresolved` in the decision), never guessed. Labels are
//! untrusted input written by the image's author: they are size-limited here and can only
//! select among the administrator's policies.

mod cache;
pub mod containerd;
pub mod containers_storage;
pub mod docker;

use std::collections::BTreeMap;
use std::path::Path;

use ociguard_policy::config::LabelSources;
use ociguard_policy::select::Facts;

/// Labels larger than this are refused (the whole lookup is then unresolved): an image label is
/// metadata, and a huge one is either a mistake or an attempt to slow down every create.
pub const MAX_LABEL_VALUE: usize = 64 * 1024;
/// Longest label key accepted.
pub const MAX_LABEL_KEY: usize = 1024;
/// Most labels accepted on one image (real images carry tens).
pub const MAX_LABELS: usize = 1024;
/// Most bytes (keys plus values) accepted over all of an image's labels: every create records
/// them in the decision log.
pub const MAX_LABELS_TOTAL: usize = 1024 * 1024;
/// How much of an offending key an error message shows.
const SHOWN_KEY: usize = 64;
/// Upper bound on an image config blob or engine metadata file read during a lookup.
pub const MAX_METADATA_FILE: u64 = 16 * 1024 * 1024;

/// What an engine's image store says about the container's image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: Option<String>,
    pub digest: Option<String>,
    /// Other names of the same image in the store (its tags), bounded.
    pub aliases: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Human-readable origin, e.g. `containers/storage /var/lib/containers/storage`.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is too large (over {limit} bytes)")]
    TooLarge {
        path: std::path::PathBuf,
        limit: u64,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
    #[error("{what} not found in {path}")]
    NotFound {
        what: String,
        path: std::path::PathBuf,
    },
    /// `key` is already escaped and shortened for display (see [`shown_key`]).
    #[error("image label {key} is {len} bytes (limit {MAX_LABEL_VALUE})")]
    LabelTooLarge { key: String, len: usize },
    #[error("image label key {key} is {len} bytes (limit {MAX_LABEL_KEY})")]
    LabelKeyTooLarge { key: String, len: usize },
    #[error("image label {key} {why}")]
    LabelInvalid { key: String, why: &'static str },
    #[error("image has {count} labels (limit {MAX_LABELS})")]
    TooManyLabels { count: usize },
    #[error("image labels total {total} bytes (limit {MAX_LABELS_TOTAL})")]
    LabelsTooLarge { total: usize },
    #[error("bundle annotation {annotation} names image {annotated:?} but {path} says the container runs image {stored}")]
    ImageMismatch {
        annotation: &'static str,
        annotated: String,
        stored: String,
        path: std::path::PathBuf,
    },
    #[error("containerd: {0}")]
    Containerd(String),
    #[error("docker: {0}")]
    Docker(String),
}

/// Which engine laid out this bundle, and where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine<'a> {
    ContainersStorage(containers_storage::Location),
    Containerd {
        namespace: &'a str,
        id: &'a str,
    },
    /// dockerd's containers (in its containerd namespace).
    Docker {
        namespace: &'a str,
        id: &'a str,
    },
    Unknown,
}

/// Classify a bundle path by the engines' layouts.
pub fn engine_of<'a>(bundle: &'a Path, sources: &LabelSources) -> Engine<'a> {
    if let Some(loc) = containers_storage::locate(bundle, &sources.containers_storage) {
        return Engine::ContainersStorage(loc);
    }
    if let Some((namespace, id)) = containerd::locate(bundle) {
        if namespace == sources.docker_namespace {
            return Engine::Docker { namespace, id };
        }
        return Engine::Containerd { namespace, id };
    }
    Engine::Unknown
}

/// Resolve the image behind `bundle`; `cache_dir` holds lookups that outlive this process;
/// `monitor` is ociguardd's socket, asked first for containerd's image mapping.
pub fn resolve(
    bundle: &Path,
    facts: &Facts,
    sources: &LabelSources,
    cache_dir: &Path,
    monitor: Option<&Path>,
) -> Result<Option<ImageInfo>, LabelError> {
    // containerd's own containers, and Docker's when dockerd keeps its images in containerd.
    let in_containerd = |namespace: &str, id: &str| {
        containerd::resolve(
            sources,
            namespace,
            id,
            facts.image.as_deref(),
            cache_dir,
            monitor,
        )
    };
    let info = match engine_of(bundle, sources) {
        Engine::ContainersStorage(loc) => {
            let image_ref = facts
                .annotations
                .get(containers_storage::CRIO_IMAGE_REF)
                .map(String::as_str);
            containers_storage::resolve(&loc, image_ref, cache_dir)?
        }
        Engine::Containerd { namespace, id } => in_containerd(namespace, id)?,
        // dockerd with containerd's image store keeps no records of its own: the containerd
        // container in its namespace names the image then.
        Engine::Docker { namespace, id } => docker::resolve(&sources.docker_root, id, cache_dir)
            .or_else(|docker| {
                in_containerd(namespace, id).map_err(|containerd| {
                    LabelError::Docker(format!(
                        "{docker}; and in containerd namespace {namespace}: {containerd}"
                    ))
                })
            })?,
        Engine::Unknown => return Ok(None),
    };
    // Each resolver checks before caching; checked again here whatever the path taken.
    check_labels(&info.labels)?;
    Ok(Some(info))
}

/// A label key as error messages show it: escaped (no control characters reach a log or a
/// terminal) and cut to [`SHOWN_KEY`] characters.
pub fn shown_key(key: &str) -> String {
    let mut cut: String = key.chars().take(SHOWN_KEY).collect();
    if cut.len() < key.len() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

/// Characters never accepted in a label key or value: control characters (NUL, ESC and the C1
/// range, which includes CSI) — except tab and newlines in values, which real images use in
/// descriptions. Decision records escape them, but `explain` and log lines are read on terminals.
fn bad_char(c: char, in_value: bool) -> bool {
    c.is_control() && !(in_value && matches!(c, '\t' | '\n' | '\r'))
}

/// The limits every label set must satisfy before it selects a policy or enters the cache.
/// A violation makes the whole lookup unresolved: dropping one label silently would let an
/// image author hide a label from a policy that tests for its absence.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), LabelError> {
    if labels.len() > MAX_LABELS {
        return Err(LabelError::TooManyLabels {
            count: labels.len(),
        });
    }
    let mut total = 0usize;
    for (k, v) in labels {
        if k.len() > MAX_LABEL_KEY {
            return Err(LabelError::LabelKeyTooLarge {
                key: shown_key(k),
                len: k.len(),
            });
        }
        if v.len() > MAX_LABEL_VALUE {
            return Err(LabelError::LabelTooLarge {
                key: shown_key(k),
                len: v.len(),
            });
        }
        if k.is_empty() {
            return Err(LabelError::LabelInvalid {
                key: shown_key(k),
                why: "has an empty key",
            });
        }
        if k.chars().any(|c| bad_char(c, false)) {
            return Err(LabelError::LabelInvalid {
                key: shown_key(k),
                why: "has a control character in its key",
            });
        }
        if v.chars().any(|c| bad_char(c, true)) {
            return Err(LabelError::LabelInvalid {
                key: shown_key(k),
                why: "has a control character in its value",
            });
        }
        total += k.len() + v.len();
    }
    if total > MAX_LABELS_TOTAL {
        return Err(LabelError::LabelsTooLarge { total });
    }
    Ok(())
}

/// The labels in an image config blob (`config.Labels`), checked against the limits. Invalid
/// JSON, invalid UTF-8 or lone surrogates in strings, and non-string values are parse errors.
pub fn labels_from_config(
    path: &Path,
    bytes: &[u8],
) -> Result<BTreeMap<String, String>, LabelError> {
    let config: ImageConfig =
        serde_json::from_slice(bytes).map_err(|source| LabelError::Parse {
            path: path.to_owned(),
            source,
        })?;
    let labels = config.into_labels();
    check_labels(&labels)?;
    Ok(labels)
}

/// Fill `facts` from the image store (and the service-account token mount); failures become
/// `labels_unresolved`.
pub fn enrich(
    bundle: &Path,
    spec: &serde_json::Value,
    facts: &mut Facts,
    sources: &LabelSources,
    cache_dir: &Path,
    monitor: Option<&Path>,
) {
    match resolve(bundle, facts, sources, cache_dir, monitor) {
        Ok(Some(info)) => {
            let mut names = info.name.into_iter().chain(info.aliases);
            if facts.image.is_none() {
                facts.image = names.next();
                facts.image_source = Some(info.source.clone());
            }
            let image = facts.image.clone();
            facts.image_aliases = names
                .filter(|n| Some(n) != image.as_ref())
                .take(ociguard_policy::select::MAX_IMAGE_ALIASES)
                .collect();
            facts.image_digest = info.digest;
            facts.labels = info.labels;
            facts.labels_source = Some(info.source);
        }
        Ok(None) => {
            facts.labels_unresolved = Some(format!(
                "bundle {} is not in a containers/storage, containerd or Docker layout",
                bundle.display()
            ));
        }
        Err(e) => facts.labels_unresolved = Some(bounded(e.to_string())),
    }
    if facts.service_account.is_none() {
        facts.service_account = spec.get("mounts").and_then(|mounts| {
            ociguard_policy::kubernetes::service_account(
                mounts,
                facts.kubernetes_namespace.as_deref(),
            )
        });
    }
}

/// Longest `labels_unresolved` reason kept (plus the `... (N bytes)` marker).
const MAX_REASON: usize = 480;

/// An error message cut to [`MAX_REASON`] bytes: parse errors quote the offending input (serde
/// shows an unexpected string whole), and the reason goes into every decision record.
fn bounded(text: String) -> String {
    ociguard_policy::excerpt::excerpt(&text, MAX_REASON).into_owned()
}

/// The part of an OCI image config blob we read: `config.Labels`.
#[derive(serde::Deserialize)]
pub(crate) struct ImageConfig {
    #[serde(default)]
    config: Option<ConfigSection>,
}

#[derive(serde::Deserialize)]
struct ConfigSection {
    #[serde(default, rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

impl ImageConfig {
    pub(crate) fn into_labels(self) -> BTreeMap<String, String> {
        self.config.and_then(|c| c.labels).unwrap_or_default()
    }
}

/// Read a metadata file, refusing absurd sizes.
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, LabelError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| LabelError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut buf = Vec::new();
    file.take(MAX_METADATA_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| LabelError::Read {
            path: path.to_owned(),
            source,
        })?;
    if buf.len() as u64 > MAX_METADATA_FILE {
        return Err(LabelError::TooLarge {
            path: path.to_owned(),
            limit: MAX_METADATA_FILE,
        });
    }
    Ok(buf)
}
