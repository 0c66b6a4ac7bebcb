//! containers/storage (Podman, CRI-O, Buildah): bundle → container → image → config labels.
//!
//! Layout: `<root>/<driver>-containers/<id>/userdata` is the bundle (under the graph root for
//! Podman, under the run root for CRI-O); `<graph>/<driver>-containers/containers.json` maps the
//! container to its image id; `<graph>/<driver>-images/images.json` gives the image's names and
//! manifest digest; the image config blob is stored as
//! `<graph>/<driver>-images/<image-id>/=<base64("sha256:<image-id>")>`.

use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use ociguard_policy::config::StorageRoots;
use serde::Deserialize;

use super::{read_limited, ImageConfig, ImageInfo, LabelError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub graph_root: PathBuf,
    pub driver: String,
    pub container_id: String,
}

/// Recognise `<root>/<driver>-containers/<id>/userdata` and map a run root to its graph root.
pub fn locate(bundle: &Path, roots: &[StorageRoots]) -> Option<Location> {
    let mut comps: Vec<Component<'_>> = bundle.components().collect();
    if comps.pop()?.as_os_str() != "userdata" {
        return None;
    }
    let id = comps.pop()?.as_os_str().to_str()?.to_owned();
    let driver_dir = comps.pop()?.as_os_str().to_str()?;
    let driver = driver_dir.strip_suffix("-containers")?.to_owned();
    if id.is_empty() || id.contains(['/', '.']) || driver.is_empty() {
        return None;
    }
    let root: PathBuf = comps.iter().collect();
    let graph_root = roots
        .iter()
        .find(|r| r.run_root == root)
        .map_or(root, |r| r.graph_root.clone());
    Some(Location {
        graph_root,
        driver,
        container_id: id,
    })
}

// Only the fields we need: serde skips the rest without allocating for it.
#[derive(Deserialize)]
struct ContainerEntry {
    id: String,
    #[serde(default)]
    image: String,
}

#[derive(Deserialize)]
struct ImageEntry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, LabelError> {
    serde_json::from_slice(bytes).map_err(|source| LabelError::Parse {
        path: path.to_owned(),
        source,
    })
}

pub fn resolve(loc: &Location) -> Result<ImageInfo, LabelError> {
    let containers_path = loc
        .graph_root
        .join(format!("{}-containers/containers.json", loc.driver));
    let containers: Vec<ContainerEntry> =
        parse(&containers_path, &read_limited(&containers_path)?)?;
    let image_id = containers
        .into_iter()
        .find(|c| c.id == loc.container_id)
        .map(|c| c.image)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| LabelError::NotFound {
            what: format!("container {}", loc.container_id),
            path: containers_path.clone(),
        })?;
    // The id names a directory below: it must be a plain hex id.
    if !image_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(LabelError::NotFound {
            what: format!("a valid image id (got {image_id:?})"),
            path: containers_path,
        });
    }
    let images_dir = loc.graph_root.join(format!("{}-images", loc.driver));
    let images_path = images_dir.join("images.json");
    let images: Vec<ImageEntry> = parse(&images_path, &read_limited(&images_path)?)?;
    let image = images.into_iter().find(|i| i.id == image_id);
    let key = base64::engine::general_purpose::STANDARD.encode(format!("sha256:{image_id}"));
    let blob_path = images_dir.join(&image_id).join(format!("={key}"));
    let config: ImageConfig = parse(&blob_path, &read_limited(&blob_path)?)?;
    let (name, digest) = match image {
        Some(i) => (i.names.into_iter().next(), i.digest),
        None => (None, None),
    };
    Ok(ImageInfo {
        name,
        digest,
        labels: config.config.and_then(|c| c.labels).unwrap_or_default(),
        source: format!("containers/storage {}", loc.graph_root.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roots() -> Vec<StorageRoots> {
        vec![StorageRoots {
            graph_root: "/var/lib/containers/storage".into(),
            run_root: "/run/containers/storage".into(),
        }]
    }

    #[test]
    fn locate_graph_and_run_root_bundles() {
        let l = locate(
            Path::new("/var/lib/containers/storage/overlay-containers/abc123/userdata"),
            &roots(),
        )
        .unwrap();
        assert_eq!(l.graph_root, PathBuf::from("/var/lib/containers/storage"));
        assert_eq!(l.driver, "overlay");
        assert_eq!(l.container_id, "abc123");
        let l = locate(
            Path::new("/run/containers/storage/overlay-containers/abc123/userdata"),
            &roots(),
        )
        .unwrap();
        assert_eq!(l.graph_root, PathBuf::from("/var/lib/containers/storage"));
        assert!(locate(
            Path::new("/run/containerd/io.containerd.runtime.v2.task/default/x"),
            &roots()
        )
        .is_none());
        assert!(locate(Path::new("/x/overlay-containers/../userdata"), &roots()).is_none());
    }

    fn store(dir: &Path, containers: &str, images: &str, config: Option<&str>) -> Location {
        let c = dir.join("overlay-containers");
        std::fs::create_dir_all(c.join("c1/userdata")).unwrap();
        std::fs::write(c.join("containers.json"), containers).unwrap();
        let i = dir.join("overlay-images");
        std::fs::create_dir_all(i.join("abcd")).unwrap();
        std::fs::write(i.join("images.json"), images).unwrap();
        if let Some(config) = config {
            let key = base64::engine::general_purpose::STANDARD.encode("sha256:abcd");
            std::fs::write(i.join("abcd").join(format!("={key}")), config).unwrap();
        }
        locate(&c.join("c1/userdata"), &[]).unwrap()
    }

    #[test]
    fn resolves_labels_name_and_digest() {
        let d = tempfile::tempdir().unwrap();
        let loc = store(
            d.path(),
            r#"[{"id":"c0","image":"ffff"},{"id":"c1","image":"abcd","names":["web"],"metadata":"x"}]"#,
            r#"[{"id":"abcd","digest":"sha256:1234","names":["localhost/app:1"],"big-data-names":[]}]"#,
            Some(r#"{"architecture":"amd64","config":{"Cmd":["sh"],"Labels":{"tier":"web"}}}"#),
        );
        let info = resolve(&loc).unwrap();
        assert_eq!(info.name.as_deref(), Some("localhost/app:1"));
        assert_eq!(info.digest.as_deref(), Some("sha256:1234"));
        assert_eq!(info.labels.get("tier").map(String::as_str), Some("web"));
    }

    #[test]
    fn bad_stores_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), "[{broken", "[]", None);
        let e = resolve(&loc).unwrap_err().to_string();
        assert!(e.contains("containers.json"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), r#"[{"id":"c9","image":"abcd"}]"#, "[]", None);
        assert!(resolve(&loc)
            .unwrap_err()
            .to_string()
            .contains("container c1 not found"));

        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), r#"[{"id":"c1","image":"abcd"}]"#, "[]", None);
        let e = resolve(&loc).unwrap_err().to_string();
        assert!(e.contains("read ") && e.contains("abcd"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), r#"[{"id":"c1","image":"../../etc"}]"#, "[]", None);
        assert!(resolve(&loc)
            .unwrap_err()
            .to_string()
            .contains("valid image id"));
    }
}
