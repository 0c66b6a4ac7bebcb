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

use ociguard_policy::select::MAX_IMAGE_ALIASES;

use super::{cache, labels_from_config, read_limited, ImageInfo, LabelError};

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

/// CRI-O's annotation naming the container's image: the storage image id (CRI-O 1.2x+), or a
/// repo digest reference (older releases), which says nothing about the id and is not compared.
pub const CRIO_IMAGE_REF: &str = "io.kubernetes.cri-o.ImageRef";

/// Anything with an `id`: the records of `containers.json` and `images.json`.
trait Record: serde::de::DeserializeOwned {
    fn id(&self) -> &str;
}

// Only the fields we need: serde skips the rest without allocating for it.
#[derive(Deserialize)]
struct ContainerEntry {
    id: String,
    #[serde(default)]
    image: String,
}

impl Record for ContainerEntry {
    fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Deserialize)]
struct ImageEntry {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

impl Record for ImageEntry {
    fn id(&self) -> &str {
        &self.id
    }
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, LabelError> {
    serde_json::from_slice(bytes).map_err(|source| LabelError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The record with `id` in a containers/storage JSON array (`containers.json`, `images.json`).
///
/// These files hold every container (image) of the store and are most of a lookup's cost when
/// parsed whole (about 100 us for 200 containers). containers/storage writes them with Go's
/// encoding/json: compact, with `id` as the first field of each record. So the record is found by
/// searching for `{"id":"<id>"` and only that object is parsed. The pattern cannot occur inside a
/// string (quotes there are escaped), and nothing else in these files is an object keyed `id`.
/// The fast path is taken only when the pattern occurs exactly once, is where a record starts
/// (after `[` or `,`) and parses to a record with that id; anything else — another writer's
/// formatting, a duplicate — falls back to parsing the whole file.
fn find_record<T: Record>(path: &Path, bytes: &[u8], id: &str) -> Result<Option<T>, LabelError> {
    let needle = format!("{{\"id\":\"{id}\"");
    let mut hits = memchr::memmem::find_iter(bytes, needle.as_bytes());
    if let (Some(at), None) = (hits.next(), hits.next()) {
        let starts_record = bytes[..at]
            .iter()
            .rev()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| matches!(b, b'[' | b','));
        if starts_record {
            let mut de = serde_json::Deserializer::from_slice(&bytes[at..]);
            if let Ok(record) = T::deserialize(&mut de) {
                if record.id() == id {
                    return Ok(Some(record));
                }
            }
        }
    }
    let all: Vec<T> = parse(path, bytes)?;
    Ok(all.into_iter().find(|r| r.id() == id))
}

/// Does CRI-O's `ImageRef` annotation contradict the image id from `containers.json`?
fn image_ref_mismatch(image_ref: &str, image_id: &str) -> bool {
    let r = image_ref.strip_prefix("sha256:").unwrap_or(image_ref);
    r.len() == 64 && r.bytes().all(|b| b.is_ascii_hexdigit()) && r != image_id
}

/// Resolve a containers/storage container's image. `image_ref` is CRI-O's `ImageRef` annotation,
/// if the bundle has one: when it names an image id, it must agree with `containers.json`.
pub fn resolve(
    loc: &Location,
    image_ref: Option<&str>,
    cache_dir: &Path,
) -> Result<ImageInfo, LabelError> {
    let containers_path = loc
        .graph_root
        .join(format!("{}-containers/containers.json", loc.driver));
    let image_id = find_record::<ContainerEntry>(
        &containers_path,
        &read_limited(&containers_path)?,
        &loc.container_id,
    )?
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
    if let Some(r) = image_ref.filter(|r| image_ref_mismatch(r, &image_id)) {
        // containers.json is what the engine will actually run. CRI-O copies the pod's
        // annotations into the bundle after its own, so a pod can forge this one.
        return Err(LabelError::ImageMismatch {
            annotation: CRIO_IMAGE_REF,
            annotated: r.chars().take(80).collect(),
            stored: image_id,
            path: containers_path,
        });
    }
    let images_dir = loc.graph_root.join(format!("{}-images", loc.driver));
    let images_path = images_dir.join("images.json");
    let image = find_record::<ImageEntry>(&images_path, &read_limited(&images_path)?, &image_id)?;
    let (name, aliases, digest) = match image {
        Some(i) => {
            let mut names = i.names.into_iter();
            let first = names.next();
            (first, names.take(MAX_IMAGE_ALIASES).collect(), i.digest)
        }
        None => (None, Vec::new(), None),
    };
    let source = format!("containers/storage {}", loc.graph_root.display());
    let config_digest = format!("sha256:{image_id}");
    let cache = cache::path(cache_dir, "containers-storage", &config_digest);
    if let Some(labels) = cache.as_deref().and_then(|p| cache::get(p, &config_digest)) {
        return Ok(ImageInfo {
            name,
            digest,
            aliases,
            labels,
            source: format!("{source} (cached)"),
        });
    }
    let key = base64::engine::general_purpose::STANDARD.encode(&config_digest);
    let blob_path = images_dir.join(&image_id).join(format!("={key}"));
    let blob = read_limited(&blob_path)?;
    let labels = labels_from_config(&blob_path, &blob)?;
    // Cache only what is content-addressed: an image id that is the digest of this very config
    // (true for pulled, built and imported images) can never name other labels.
    if let Some(path) = &cache {
        if ociguard_policy::digest::sha256(&blob) == config_digest {
            cache::put(path, &config_digest, &labels);
        }
    }
    Ok(ImageInfo {
        name,
        digest,
        aliases,
        labels,
        source,
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
        let info = resolve(&loc, None, d.path()).unwrap();
        assert_eq!(
            info.source,
            format!("containers/storage {}", d.path().display())
        );
        assert_eq!(info.name.as_deref(), Some("localhost/app:1"));
        assert_eq!(info.digest.as_deref(), Some("sha256:1234"));
        assert_eq!(info.labels.get("tier").map(String::as_str), Some("web"));
    }

    #[test]
    fn bad_stores_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), "[{broken", "[]", None);
        let e = resolve(&loc, None, d.path()).unwrap_err().to_string();
        assert!(e.contains("containers.json"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), r#"[{"id":"c9","image":"abcd"}]"#, "[]", None);
        assert!(resolve(&loc, None, d.path())
            .unwrap_err()
            .to_string()
            .contains("container c1 not found"));

        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), r#"[{"id":"c1","image":"abcd"}]"#, "[]", None);
        let e = resolve(&loc, None, d.path()).unwrap_err().to_string();
        assert!(e.contains("read ") && e.contains("abcd"), "{e}");

        let d = tempfile::tempdir().unwrap();
        let loc = store(d.path(), r#"[{"id":"c1","image":"../../etc"}]"#, "[]", None);
        assert!(resolve(&loc, None, d.path())
            .unwrap_err()
            .to_string()
            .contains("valid image id"));
    }

    /// A store holding container `c1` of a content-addressed image (id = sha256 of `config`,
    /// as for pulled images), or of `image_id` if given. Returns the location and the image id.
    fn cs_store(dir: &Path, config: &[u8], image_id: Option<&str>) -> (Location, String) {
        let digest = ociguard_policy::digest::sha256(config);
        let id = image_id.unwrap_or(&digest["sha256:".len()..]).to_owned();
        let containers = format!(
            r#"[{{"id":"c0","names":["x"],"image":"{other}"}},{{"id":"c1","names":["web"],"image":"{id}","metadata":"{{\"image-name\":\"x\"}}"}}]"#,
            other = "f".repeat(64)
        );
        let images =
            format!(r#"[{{"id":"{id}","digest":"sha256:1234","names":["localhost/app:1"]}}]"#);
        let c = dir.join("overlay-containers");
        std::fs::create_dir_all(c.join("c1/userdata")).unwrap();
        std::fs::write(c.join("containers.json"), containers).unwrap();
        let i = dir.join("overlay-images");
        std::fs::create_dir_all(i.join(&id)).unwrap();
        std::fs::write(i.join("images.json"), images).unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode(format!("sha256:{id}"));
        std::fs::write(i.join(&id).join(format!("={key}")), config).unwrap();
        (locate(&c.join("c1/userdata"), &[]).unwrap(), id)
    }

    const CONFIG: &[u8] = br#"{"architecture":"amd64","config":{"Labels":{"tier":"web"}}}"#;

    #[test]
    fn second_lookup_is_served_from_the_cache() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let (loc, id) = cs_store(d.path(), CONFIG, None);
        let first = resolve(&loc, None, &cache).unwrap();
        assert!(!first.source.ends_with("(cached)"), "{}", first.source);
        let entry = cache.join("containers-storage").join(format!("{id}.json"));
        assert!(entry.is_file());
        let second = resolve(&loc, None, &cache).unwrap();
        assert!(second.source.ends_with("(cached)"), "{}", second.source);
        assert_eq!(second.labels, first.labels);
        assert_eq!(second.name, first.name);
        assert_eq!(second.digest, first.digest);

        // A corrupt entry is ignored (fresh lookup, same answer) and replaced.
        let good = std::fs::read(&entry).unwrap();
        std::fs::write(&entry, &good[..good.len() / 2]).unwrap();
        let third = resolve(&loc, None, &cache).unwrap();
        assert!(!third.source.ends_with("(cached)"));
        assert_eq!(third.labels, first.labels);
        assert_eq!(std::fs::read(&entry).unwrap(), good);
        // A well-formed entry whose labels were tampered with fails its checksum.
        let forged = String::from_utf8(good)
            .unwrap()
            .replace("\"web\"", "\"pwn\"");
        std::fs::write(&entry, forged).unwrap();
        assert_eq!(resolve(&loc, None, &cache).unwrap().labels, first.labels);
    }

    #[test]
    fn ids_that_are_not_the_config_digest_are_never_cached() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let (loc, _) = cs_store(d.path(), CONFIG, Some(&"ab".repeat(32)));
        for _ in 0..2 {
            let info = resolve(&loc, None, &cache).unwrap();
            assert!(!info.source.ends_with("(cached)"));
            assert_eq!(info.labels.get("tier").map(String::as_str), Some("web"));
        }
        assert!(!cache.join("containers-storage").exists());
    }

    #[test]
    fn records_are_found_whatever_the_formatting() {
        let id = "ab".repeat(32);
        for containers in [
            // Pretty-printed, id not first, and the id repeated elsewhere: the full parse.
            format!("[\n  {{\n    \"image\": \"{id}\",\n    \"id\": \"c1\"\n  }}\n]"),
            format!(r#"[{{"id":"c1","image":"{id}"}},{{"id":"c1","image":"{id}"}}]"#),
            format!(
                r#"[{{"id":"c0","image":"{id}","names":["{{\"id\":\"c1\""]}},{{"id":"c1","image":"{id}"}}]"#
            ),
            // The fast path.
            format!(
                r#"[{{"id":"c0","image":"{}"}},{{"id":"c1","image":"{id}"}}]"#,
                "f".repeat(64)
            ),
        ] {
            let path = Path::new("containers.json");
            let c = find_record::<ContainerEntry>(path, containers.as_bytes(), "c1")
                .unwrap()
                .unwrap();
            assert_eq!(c.image, id, "{containers}");
        }
        // A lookalike inside a string value is not a record.
        let text = r#"[{"id":"c0","image":"x","metadata":"{\"id\":\"c1\",\"image\":\"evil\"}"}]"#;
        assert!(
            find_record::<ContainerEntry>(Path::new("c"), text.as_bytes(), "c1")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn crio_image_ref_must_agree_with_containers_json() {
        let d = tempfile::tempdir().unwrap();
        let (loc, id) = cs_store(d.path(), CONFIG, None);
        assert!(resolve(&loc, Some(&id), d.path()).is_ok());
        assert!(resolve(&loc, Some(&format!("sha256:{id}")), d.path()).is_ok());
        // Older CRI-O put a repo digest here: not an id, not compared.
        let repo_digest = format!("quay.io/app@sha256:{}", "0".repeat(64));
        assert!(resolve(&loc, Some(&repo_digest), d.path()).is_ok());
        let e = resolve(&loc, Some(&"0".repeat(64)), d.path()).unwrap_err();
        assert!(matches!(e, LabelError::ImageMismatch { .. }), "{e}");
        assert!(e.to_string().contains(CRIO_IMAGE_REF), "{e}");
    }

    /// Resolve through `enrich`, as `create` does: the outcome as recorded facts.
    fn enriched(config: &[u8]) -> (ociguard_policy::select::Facts, std::time::Duration) {
        let d = tempfile::tempdir().unwrap();
        let (loc, _) = cs_store(d.path(), config, None);
        let bundle = loc.graph_root.join("overlay-containers/c1/userdata");
        let mut facts = ociguard_policy::select::Facts::default();
        let t = std::time::Instant::now();
        super::super::enrich(
            &bundle,
            &serde_json::json!({}),
            &mut facts,
            &ociguard_policy::config::LabelSources::default(),
            &d.path().join("cache"),
            None,
        );
        let elapsed = t.elapsed();
        // Nothing refused is ever cached.
        if facts.labels_unresolved.is_some() {
            assert!(!d.path().join("cache/containers-storage").exists());
        }
        (facts, elapsed)
    }

    fn config_with(labels: &str) -> Vec<u8> {
        format!(r#"{{"architecture":"amd64","config":{{"Labels":{labels}}}}}"#).into_bytes()
    }

    fn assert_unresolved(config: &[u8], expect: &str) {
        let (facts, elapsed) = enriched(config);
        let why = facts.labels_unresolved.clone().unwrap_or_default();
        assert!(why.contains(expect), "expected {expect:?}, got {why:?}");
        assert!(why.len() <= 520, "reason of {} bytes", why.len());
        assert!(!why.chars().any(char::is_control), "{why:?}");
        assert!(facts.labels.is_empty() && facts.labels_source.is_none());
        assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
    }

    #[test]
    fn huge_labels_are_unresolved_not_fatal() {
        // A value of several MB (the blob itself is within the 16 MiB metadata limit).
        let big = "A".repeat(5 * 1024 * 1024);
        assert_unresolved(
            &config_with(&format!(r#"{{"tier":"web","big":"{big}"}}"#)),
            "image label \"big\" is 5242880 bytes (limit 65536)",
        );
        // A huge key: shown cut short, never whole.
        let key = "k".repeat(100_000);
        assert_unresolved(
            &config_with(&format!(r#"{{"{key}":"v"}}"#)),
            "key \"kkkkkkkk",
        );
        // Thousands of labels.
        let many: Vec<String> = (0..5000).map(|i| format!(r#""l{i}":"v""#)).collect();
        assert_unresolved(
            &config_with(&format!("{{{}}}", many.join(","))),
            "image has 5000 labels (limit 1024)",
        );
        // Many labels, each under the limit, over the total.
        let wide: Vec<String> = (0..40)
            .map(|i| format!(r#""l{i}":"{}""#, "v".repeat(60_000)))
            .collect();
        assert_unresolved(
            &config_with(&format!("{{{}}}", wide.join(","))),
            "limit 1048576",
        );
        // A config blob over the metadata limit is not even read whole.
        let mut blob = config_with(r#"{"a":"b"}"#);
        blob.extend(std::iter::repeat_n(
            b' ',
            super::super::MAX_METADATA_FILE as usize,
        ));
        assert_unresolved(&blob, "too large");
        // `Labels` that is a huge string, not a map: serde quotes it, the reason does not.
        assert_unresolved(&config_with(&format!(r#""{big}""#)), "invalid type: string");
    }

    #[test]
    fn binary_labels_are_unresolved_not_fatal() {
        assert_unresolved(
            &config_with(r#"{"k":"a\u0000b"}"#),
            "control character in its value",
        );
        assert_unresolved(
            &config_with(r#"{"k\u0000":"v"}"#),
            "control character in its key",
        );
        assert_unresolved(
            &config_with(r#"{"k":"\u001b]0;pwned\u0007"}"#),
            "control character",
        );
        assert_unresolved(&config_with(r#"{"k":"\u009b31m"}"#), "control character");
        assert_unresolved(&config_with(r#"{"":"v"}"#), "empty key");
        // Raw invalid UTF-8 and a lone surrogate: parse errors.
        let mut raw = config_with(r#"{"k":"XX"}"#);
        let at = raw.windows(2).position(|w| w == b"XX").unwrap();
        raw[at] = 0xff;
        raw[at + 1] = 0xfe;
        assert_unresolved(&raw, "parse ");
        assert_unresolved(&config_with(r#"{"k":"\ud800"}"#), "parse ");
        // Not strings.
        assert_unresolved(&config_with(r#"{"k":1}"#), "parse ");
        assert_unresolved(&config_with(r#"{"k":{"deep":"x"}}"#), "parse ");
        // Deeply nested JSON hits serde's recursion limit, not the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_unresolved(&config_with(&deep), "parse ");
        // Tabs and newlines in values are real-world (descriptions): accepted.
        let (facts, _) = enriched(&config_with(r#"{"description":"line 1\n\tline 2"}"#));
        assert_eq!(facts.labels_unresolved, None);
        assert_eq!(facts.labels["description"], "line 1\n\tline 2");
        // Labels: null is no labels.
        let (facts, _) = enriched(&config_with("null"));
        assert_eq!(facts.labels_unresolved, None);
        assert!(facts.labels.is_empty());
    }
}
