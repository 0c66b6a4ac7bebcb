//! Docker: bundle `.../io.containerd.runtime.v2.task/<docker namespace>/<id>` → Docker's own
//! records under its data root. dockerd (20.10) keeps its images itself, so the containerd
//! container it creates names no image, and the bundle carries no image annotation.
//!
//! ```text
//! <root>/containers/<id>/config.v2.json           Config.Image (as typed), Image (image ID), Driver
//! <root>/image/<driver>/imagedb/content/sha256/<hex>   the image config (its sha256 is the ID)
//! <root>/image/<driver>/repositories.json          tags and repository digests → image ID
//! ```
//!
//! The image config is content-addressed: it is read only if it hashes to the image ID, and
//! its labels are cached under that ID (an entry never goes stale). The name is what the user
//! typed (`docker run NAME`); every tag of the image is an alias for `[match] images`. The
//! digest is the repository digest when the image was pulled, else the image ID (an image that
//! was built or loaded has no other): `docker images --digests --no-trunc` shows both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ociguard_policy::select::MAX_IMAGE_ALIASES;
use serde::Deserialize;

use super::{cache, labels_from_config, read_limited, ImageInfo, LabelError};

#[derive(Deserialize)]
struct ContainerRecord {
    #[serde(rename = "ID")]
    id: String,
    /// The image ID, `sha256:<config digest>`.
    #[serde(rename = "Image")]
    image: String,
    #[serde(rename = "Driver")]
    driver: String,
    #[serde(rename = "Config")]
    config: ContainerConfig,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Image", default)]
    image: String,
}

#[derive(Deserialize)]
struct Repositories {
    #[serde(rename = "Repositories", default)]
    repositories: BTreeMap<String, BTreeMap<String, String>>,
}

fn not_found(what: impl Into<String>, path: &Path) -> LabelError {
    LabelError::NotFound {
        what: what.into(),
        path: path.to_owned(),
    }
}

/// A name Docker uses as a path component: a container id, a storage driver.
fn component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, LabelError> {
    let bytes = read_limited(path)?;
    serde_json::from_slice(&bytes).map_err(|source| LabelError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Resolve container `id` from Docker's records under `root`.
pub fn resolve(root: &Path, id: &str, cache_dir: &Path) -> Result<ImageInfo, LabelError> {
    let containers = root.join("containers");
    if !component(id) {
        return Err(not_found(format!("container {id:?}"), &containers));
    }
    let record_path = containers.join(id).join("config.v2.json");
    let record: ContainerRecord = parse(&record_path)?;
    if record.id != id {
        return Err(not_found(format!("container {id}"), &record_path));
    }
    let image_dir = if component(&record.driver) {
        root.join("image").join(&record.driver)
    } else {
        return Err(not_found(
            format!("a storage driver (got {:?})", record.driver),
            &record_path,
        ));
    };
    let image_id = record.image;
    let labels = match cache::path(cache_dir, "docker", &image_id) {
        Some(entry) => match cache::get(&entry, &image_id) {
            Some(labels) => labels,
            None => {
                let labels = image_labels(&image_dir, &image_id)?;
                cache::put(&entry, &image_id, &labels);
                labels
            }
        },
        // Not a sha256 image ID: nothing to verify the config against.
        None => {
            return Err(not_found(
                format!("a sha256 image ID (got {image_id:?})"),
                &record_path,
            ))
        }
    };
    let (aliases, repo_digest) = names(&image_dir.join("repositories.json"), &image_id)?;
    let typed = record.config.image;
    let name = if typed.is_empty() {
        aliases.first().cloned()
    } else {
        Some(typed)
    };
    Ok(ImageInfo {
        aliases: aliases
            .into_iter()
            .filter(|a| Some(a) != name.as_ref())
            .take(MAX_IMAGE_ALIASES)
            .collect(),
        name,
        digest: Some(repo_digest.unwrap_or(image_id)),
        labels,
        source: format!("docker {}", root.display()),
    })
}

/// The labels of image `image_id` (`sha256:<hex>`), from its config, which must hash to it.
fn image_labels(image_dir: &Path, image_id: &str) -> Result<BTreeMap<String, String>, LabelError> {
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    let path: PathBuf = image_dir.join("imagedb/content/sha256").join(hex);
    let bytes = read_limited(&path)?;
    if ociguard_policy::digest::sha256(&bytes) != image_id {
        return Err(not_found(
            format!("an image config whose digest is {image_id}"),
            &path,
        ));
    }
    labels_from_config(&path, &bytes)
}

/// The tags of `image_id` (sorted) and its repository digest, if it was pulled. A missing
/// `repositories.json` (no image tagged yet) is no tags.
fn names(path: &Path, image_id: &str) -> Result<(Vec<String>, Option<String>), LabelError> {
    let repos: Repositories = match parse(path) {
        Err(LabelError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), None))
        }
        other => other?,
    };
    let mut tags = Vec::new();
    let mut digest = None;
    for (reference, id) in repos.repositories.values().flatten() {
        if id != image_id {
            continue;
        }
        match reference.split_once('@') {
            Some((_, d)) => {
                digest.get_or_insert_with(|| d.to_owned());
            }
            None => tags.push(reference.clone()),
        }
    }
    tags.sort();
    Ok((tags, digest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0068b66369f9c7ff2e1c7031301805364b3c83b8a3e1438608bbfbb1f8c9b94f";

    /// A data root as dockerd 20.10 lays it out, with one image and one container of it.
    fn root(typed: &str) -> (tempfile::TempDir, String) {
        let d = tempfile::tempdir().unwrap();
        let config = json!({"architecture": "amd64", "os": "linux",
            "config": {"Labels": {"org.ociguard.profile": "locked"}}})
        .to_string();
        let image_id = ociguard_policy::digest::sha256(config.as_bytes());
        let images = d.path().join("image/overlay2");
        let content = images.join("imagedb/content/sha256");
        std::fs::create_dir_all(&content).unwrap();
        std::fs::write(
            content.join(image_id.strip_prefix("sha256:").unwrap()),
            &config,
        )
        .unwrap();
        let repo_digest = format!("sha256:{}", "d".repeat(64));
        std::fs::write(
            images.join("repositories.json"),
            json!({"Repositories": {
                "localhost/bb": {"localhost/bb:1": image_id, "localhost/bb:2": image_id,
                    format!("localhost/bb@{repo_digest}"): image_id},
                "other": {"other:latest": format!("sha256:{}", "e".repeat(64))}}})
            .to_string(),
        )
        .unwrap();
        let c = d.path().join("containers").join(ID);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("config.v2.json"),
            json!({"ID": ID, "Image": image_id, "Driver": "overlay2",
                "Config": {"Image": typed, "Labels": {"org.ociguard.profile": "from-run"}}})
            .to_string(),
        )
        .unwrap();
        (d, image_id)
    }

    #[test]
    fn name_tags_digest_and_the_image_s_own_labels() {
        let (d, _) = root("localhost/bb:1");
        let cache = d.path().join("cache");
        let info = resolve(d.path(), ID, &cache).unwrap();
        assert_eq!(info.name.as_deref(), Some("localhost/bb:1"));
        assert_eq!(info.aliases, ["localhost/bb:2"]);
        assert_eq!(info.digest, Some(format!("sha256:{}", "d".repeat(64))));
        // The image's labels, never `docker run --label`'s (Config.Labels mixes both).
        assert_eq!(info.labels["org.ociguard.profile"], "locked");
        assert!(info.source.starts_with("docker "));
        // Second lookup: from the cache (the config blob may even be gone).
        std::fs::remove_dir_all(d.path().join("image/overlay2/imagedb")).unwrap();
        assert_eq!(resolve(d.path(), ID, &cache).unwrap(), info);
    }

    #[test]
    fn started_by_image_id_the_tags_name_it_and_an_untagged_image_has_its_id() {
        let (d, image_id) = root("");
        let info = resolve(d.path(), ID, &d.path().join("c")).unwrap();
        assert_eq!(info.name.as_deref(), Some("localhost/bb:1"));
        assert_eq!(info.aliases, ["localhost/bb:2"]);
        std::fs::remove_file(d.path().join("image/overlay2/repositories.json")).unwrap();
        let info = resolve(d.path(), ID, &d.path().join("c")).unwrap();
        assert_eq!(info.name, None);
        assert_eq!(info.digest.as_deref(), Some(image_id.as_str()));
    }

    #[test]
    fn what_cannot_be_verified_is_an_error_naming_the_file() {
        let (d, image_id) = root("localhost/bb:1");
        let blob = d
            .path()
            .join("image/overlay2/imagedb/content/sha256")
            .join(image_id.strip_prefix("sha256:").unwrap());
        // A config that does not hash to the image ID is not believed.
        std::fs::write(
            &blob,
            r#"{"config":{"Labels":{"org.ociguard.profile":"open"}}}"#,
        )
        .unwrap();
        let e = resolve(d.path(), ID, &d.path().join("c")).unwrap_err();
        assert!(e.to_string().contains(&image_id), "{e}");
        // Unknown container, hostile id, a record naming another container.
        let e = resolve(d.path(), &"f".repeat(64), &d.path().join("c")).unwrap_err();
        assert!(e.to_string().contains("config.v2.json"), "{e}");
        assert!(resolve(d.path(), "../x", &d.path().join("c")).is_err());
        let other = d.path().join("containers").join("abc");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::copy(
            d.path().join("containers").join(ID).join("config.v2.json"),
            other.join("config.v2.json"),
        )
        .unwrap();
        assert!(resolve(d.path(), "abc", &d.path().join("c")).is_err());
    }
}
