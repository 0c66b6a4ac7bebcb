//! Image labels (and image name and digest) for the container being created, from the engine's
//! image store: no engine copies them into `config.json`.
//!
//! One resolver per engine, chosen from the bundle path. What cannot be resolved is reported as
//! a reason (it becomes `labels_unresolved` in the decision), never guessed. Labels are
//! untrusted input written by the image's author: they are size-limited here and can only
//! select among the administrator's policies.

pub mod containerd;
pub mod containers_storage;
pub mod service_account;

use std::collections::BTreeMap;
use std::path::Path;

use ociguard_policy::config::LabelSources;
use ociguard_policy::select::Facts;

/// Labels larger than this are refused (the whole lookup is then unresolved): an image label is
/// metadata, and a huge one is either a mistake or an attempt to slow down every create.
pub const MAX_LABEL_VALUE: usize = 64 * 1024;
/// Upper bound on an image config blob or engine metadata file read during a lookup.
pub const MAX_METADATA_FILE: u64 = 16 * 1024 * 1024;

/// What an engine's image store says about the container's image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageInfo {
    pub name: Option<String>,
    pub digest: Option<String>,
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
    #[error("image label {key:?} is {len} bytes (limit {MAX_LABEL_VALUE})")]
    LabelTooLarge { key: String, len: usize },
    #[error("containerd: {0}")]
    Containerd(String),
}

/// Which engine laid out this bundle, and where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Engine<'a> {
    ContainersStorage(containers_storage::Location),
    Containerd { namespace: &'a str, id: &'a str },
    Unknown,
}

/// Classify a bundle path by the engines' layouts.
pub fn engine_of<'a>(bundle: &'a Path, sources: &LabelSources) -> Engine<'a> {
    if let Some(loc) = containers_storage::locate(bundle, &sources.containers_storage) {
        return Engine::ContainersStorage(loc);
    }
    if let Some((namespace, id)) = containerd::locate(bundle) {
        return Engine::Containerd { namespace, id };
    }
    Engine::Unknown
}

/// Resolve the image behind `bundle`; `cache_dir` holds lookups that outlive this process.
pub fn resolve(
    bundle: &Path,
    facts: &Facts,
    sources: &LabelSources,
    cache_dir: &Path,
) -> Result<Option<ImageInfo>, LabelError> {
    let info = match engine_of(bundle, sources) {
        Engine::ContainersStorage(loc) => containers_storage::resolve(&loc)?,
        Engine::Containerd { namespace, id } => {
            containerd::resolve(sources, namespace, id, facts.image.as_deref(), cache_dir)?
        }
        Engine::Unknown => return Ok(None),
    };
    for (k, v) in &info.labels {
        if v.len() > MAX_LABEL_VALUE {
            return Err(LabelError::LabelTooLarge {
                key: k.clone(),
                len: v.len(),
            });
        }
    }
    Ok(Some(info))
}

/// Fill `facts` from the image store (and the service-account token mount); failures become
/// `labels_unresolved`.
pub fn enrich(
    bundle: &Path,
    spec: &serde_json::Value,
    facts: &mut Facts,
    sources: &LabelSources,
    cache_dir: &Path,
) {
    match resolve(bundle, facts, sources, cache_dir) {
        Ok(Some(info)) => {
            if facts.image.is_none() {
                facts.image = info.name;
                facts.image_source = Some(info.source.clone());
            }
            facts.image_digest = info.digest;
            facts.labels = info.labels;
            facts.labels_source = Some(info.source);
        }
        Ok(None) => {
            facts.labels_unresolved = Some(format!(
                "bundle {} is not in a containers/storage or containerd layout",
                bundle.display()
            ));
        }
        Err(e) => facts.labels_unresolved = Some(e.to_string()),
    }
    if facts.service_account.is_none() {
        facts.service_account = service_account::from_spec(spec);
    }
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
