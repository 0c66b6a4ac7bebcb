//! containerd: bundle `<state>/io.containerd.runtime.v2.task/<namespace>/<id>` → containerd's
//! API (container → image → manifest → config blob → labels).
//!
//! Every lookup is bounded by `labels.timeout_ms`. The part that reads blobs is cached on disk by
//! the image's target digest: content-addressed, so a cache entry can never go stale, and the
//! second container of an image pays only the name → digest lookup. ociguard is a new process on
//! every call, which is why the cache lives on disk (tmpfs under the state dir).
//!
//! The name → digest lookup itself is asked of ociguardd first when it runs: it follows
//! containerd's events over one warm connection ([`ociguard_monitor::containerd`]) and usually
//! answers from memory. Whatever goes wrong there (monitor down, not following containerd, a
//! digest not in the label cache) falls through to asking containerd directly.

use std::path::{Component, Path};
use std::time::Duration;

use containerd_client::services::v1::{content_client::ContentClient, ReadContentRequest};
use ociguard_monitor::containerd::{image_aliases, image_ref, namespaced};
use ociguard_monitor::protocol::Request;
use ociguard_policy::config::LabelSources;
use ociguard_policy::select::MAX_IMAGE_ALIASES;
use serde::Deserialize;

use super::{cache, labels_from_config, ImageInfo, LabelError, MAX_METADATA_FILE};

const TASK_DIR: &str = "io.containerd.runtime.v2.task";

/// `(namespace, id)` of a containerd runc-v2 shim bundle.
pub fn locate(bundle: &Path) -> Option<(&str, &str)> {
    let comps: Vec<Component<'_>> = bundle.components().collect();
    let n = comps.len();
    if n < 3 || comps[n - 3].as_os_str() != TASK_DIR {
        return None;
    }
    let ns = comps[n - 2].as_os_str().to_str()?;
    let id = comps[n - 1].as_os_str().to_str()?;
    Some((ns, id))
}

/// A reference that pins a digest (`name@sha256:...`) rather than naming a tag.
fn pinned(name: &str) -> bool {
    ociguard_policy::select::pinned_digest(name).is_some()
}

fn err(e: impl std::fmt::Display) -> LabelError {
    LabelError::Containerd(e.to_string())
}

/// Resolve through containerd's API. `image_hint` is the image name when an annotation already
/// gave it (CRI), saving the container lookup.
pub fn resolve(
    sources: &LabelSources,
    namespace: &str,
    id: &str,
    image_hint: Option<&str>,
    cache_dir: &Path,
    monitor: Option<&Path>,
) -> Result<ImageInfo, LabelError> {
    if let Some(found) =
        monitor.and_then(|m| via_monitor(m, sources, namespace, id, image_hint, cache_dir))
    {
        return Ok(found);
    }
    if !sources.containerd_socket.exists() {
        return Err(err(format!(
            "socket {} absent",
            sources.containerd_socket.display()
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(err)?;
    let timeout = Duration::from_millis(sources.timeout_ms);
    runtime
        .block_on(async {
            tokio::time::timeout(
                timeout,
                lookup(sources, namespace, id, image_hint, cache_dir),
            )
            .await
        })
        .map_err(|_| {
            err(format!(
                "no answer from {} within {} ms",
                sources.containerd_socket.display(),
                sources.timeout_ms
            ))
        })?
}

/// The image's digest from ociguardd and its labels from the label cache; `None` when either
/// is not at hand (the caller then asks containerd itself).
fn via_monitor(
    monitor: &Path,
    sources: &LabelSources,
    namespace: &str,
    id: &str,
    image_hint: Option<&str>,
    cache_dir: &Path,
) -> Option<ImageInfo> {
    let published =
        ociguard_monitor::imagemap::read(&ociguard_monitor::imagemap::dir(monitor), namespace, id)
            .filter(|found| image_hint.is_none_or(|hint| hint == found.name));
    // Published by the follower: no round trip at all. (Its socket would give the same digest,
    // so a label-cache miss then goes straight to containerd.)
    let (found, how) = match published {
        Some(found) => (found, "published, cached"),
        None => {
            if !monitor.exists() {
                return None;
            }
            let req = Request::ImageOf {
                namespace: namespace.to_owned(),
                id: Some(id.to_owned()),
                image: image_hint.map(str::to_owned),
            };
            let timeout = Duration::from_millis(sources.timeout_ms);
            let found = ociguard_monitor::client::request(monitor, &req, timeout)
                .ok()?
                .image?;
            (found, "cached")
        }
    };
    if pinned(&found.name) {
        // Its tags are asked of containerd (the monitor knows only the names it saw).
        return None;
    }
    let path = cache::path(cache_dir, "containerd", &found.target)?;
    let labels = cache::get(&path, &found.target)?;
    Some(ImageInfo {
        name: Some(found.name),
        digest: Some(found.target),
        aliases: Vec::new(),
        labels,
        source: format!(
            "containerd {namespace} via ociguardd {} ({how})",
            monitor.display()
        ),
    })
}

async fn read_blob(
    content: &mut ContentClient<tonic::transport::Channel>,
    namespace: &str,
    digest: &str,
) -> Result<Vec<u8>, LabelError> {
    let mut stream = content
        .read(
            namespaced(
                ReadContentRequest {
                    digest: digest.to_owned(),
                    offset: 0,
                    size: 0,
                },
                namespace,
            )
            .map_err(err)?,
        )
        .await
        .map_err(|s| err(format!("read {digest}: {}", s.message())))?
        .into_inner();
    let mut data = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| err(format!("read {digest}: {}", s.message())))?
    {
        data.extend_from_slice(&chunk.data);
        if data.len() as u64 > MAX_METADATA_FILE {
            return Err(err(format!("blob {digest} over {MAX_METADATA_FILE} bytes")));
        }
    }
    Ok(data)
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(Deserialize)]
struct Descriptor {
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn lookup(
    sources: &LabelSources,
    namespace: &str,
    id: &str,
    image_hint: Option<&str>,
    cache_dir: &Path,
) -> Result<ImageInfo, LabelError> {
    let channel = containerd_client::connect(&sources.containerd_socket)
        .await
        .map_err(|e| {
            err(format!(
                "connect {}: {e}",
                sources.containerd_socket.display()
            ))
        })?;
    let found = image_ref(channel.clone(), namespace, Some(id), image_hint)
        .await
        .map_err(err)?;
    let (name, target) = (found.name, found.target);
    // Created by digest: its tags are what `[match] images` globs are written against.
    let aliases = if pinned(&name) {
        image_aliases(channel.clone(), namespace, &target, MAX_IMAGE_ALIASES + 1)
            .await
            .map_err(err)?
            .into_iter()
            .filter(|a| *a != name)
            .take(MAX_IMAGE_ALIASES)
            .collect()
    } else {
        Vec::new()
    };
    let source = format!(
        "containerd {namespace} {}",
        sources.containerd_socket.display()
    );
    let cache = cache::path(cache_dir, "containerd", &target);
    if let Some(labels) = cache.as_deref().and_then(|p| cache::get(p, &target)) {
        return Ok(ImageInfo {
            name: Some(name),
            digest: Some(target),
            aliases,
            labels,
            source: format!("{source} (cached)"),
        });
    }
    let mut content = ContentClient::new(channel);
    let parse = |d: &str, bytes: &[u8]| {
        serde_json::from_slice::<Manifest>(bytes).map_err(|e| err(format!("blob {d}: {e}")))
    };
    let mut manifest = parse(&target, &read_blob(&mut content, namespace, &target).await?)?;
    if let Some(list) = manifest.manifests.take() {
        // An index: take this host's platform.
        let pick = list
            .into_iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
            })
            .ok_or_else(|| err(format!("image {name}: no linux/{} manifest", host_arch())))?;
        manifest = parse(
            &pick.digest,
            &read_blob(&mut content, namespace, &pick.digest).await?,
        )?;
    }
    let config_digest = manifest
        .config
        .ok_or_else(|| err(format!("image {name}: manifest has no config")))?
        .digest;
    let blob = read_blob(&mut content, namespace, &config_digest).await?;
    let labels = labels_from_config(Path::new(&config_digest), &blob)?;
    if let Some(path) = &cache {
        cache::put(path, &target, &labels);
    }
    Ok(ImageInfo {
        name: Some(name),
        digest: Some(target),
        aliases,
        labels,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_bundles() {
        assert_eq!(
            locate(Path::new(
                "/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc"
            )),
            Some(("k8s.io", "abc"))
        );
        assert_eq!(locate(Path::new("/tmp/bundle")), None);
    }

    #[test]
    fn absent_socket_is_a_clear_error_without_waiting() {
        let sources = LabelSources {
            containerd_socket: "/nonexistent/containerd.sock".into(),
            // Far above the bound below: an error that waited for it would be seen.
            timeout_ms: 10_000,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        // ociguardd absent too: the direct lookup is the fallback, and its error is reported.
        let e = resolve(
            &sources,
            "default",
            "c1",
            None,
            Path::new("/tmp"),
            Some(Path::new("/nonexistent/monitor.sock")),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent/containerd.sock absent"),
            "{e}"
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }

    #[test]
    fn a_stalled_socket_hits_the_timeout() {
        // A listener that accepts nothing useful: connect succeeds, no HTTP/2 answer ever comes.
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("stall.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let sources = LabelSources {
            containerd_socket: sock,
            timeout_ms: 200,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        let e = resolve(&sources, "default", "c1", None, d.path(), None).unwrap_err();
        assert!(e.to_string().contains("within 200 ms"), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
}
