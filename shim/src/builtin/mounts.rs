//! Mount options crun and runc implement and libcontainer does not, handled before it sees them.
//!
//! `tmpcopyup` (Podman's `--tmpfs`, CRI-O's tmpfs volumes): mount a tmpfs and copy into it what
//! the image has at that path. libcontainer passes unknown options to mount(2) as data, where
//! tmpfs rejects them, and the create fails with "failed to prepare rootfs". When the image's
//! directory is absent or empty, copying up copies nothing, so the option is dropped and the
//! result is exactly crun's. When it has content, the create is refused: starting with an empty
//! tmpfs would hide files the image expects there. A path with a symlink in it is refused too:
//! where it leads is the container's business, not something to resolve from the host.

use std::path::{Component, Path};

use serde_json::Value;

const TMPCOPYUP: &str = "tmpcopyup";

/// Drop every `tmpcopyup` whose copy would be empty; the destinations it was dropped from, or
/// why the container cannot be created.
pub(super) fn drop_empty_tmpcopyup(
    document: &mut Value,
    bundle: &Path,
) -> Result<Vec<String>, String> {
    let root = match document.pointer("/root/path").and_then(Value::as_str) {
        Some(p) => bundle.join(p),
        None => return Err("config.json has no root.path".to_owned()),
    };
    let mut dropped = Vec::new();
    let Some(mounts) = document.get_mut("mounts").and_then(Value::as_array_mut) else {
        return Ok(dropped);
    };
    for mount in mounts {
        let Some(options) = mount.get("options").and_then(Value::as_array) else {
            continue;
        };
        if !options.iter().any(|o| o.as_str() == Some(TMPCOPYUP)) {
            continue;
        }
        let destination = mount
            .get("destination")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if !image_dir_is_empty(&root, &destination)? {
            return Err(format!(
                "mount {destination}: `tmpcopyup` of a directory the image fills is not \
                 supported by the builtin runtime (use crun or runc, or mount the tmpfs elsewhere)"
            ));
        }
        if let Some(options) = mount.get_mut("options").and_then(Value::as_array_mut) {
            options.retain(|o| o.as_str() != Some(TMPCOPYUP));
        }
        dropped.push(destination);
    }
    Ok(dropped)
}

/// Is `destination` under `root` absent or an empty directory, with no symlink on the way?
fn image_dir_is_empty(root: &Path, destination: &str) -> Result<bool, String> {
    let mut path = root.to_path_buf();
    for component in Path::new(destination).components() {
        match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => path.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "mount {destination}: `..` in a tmpcopyup destination"
                ))
            }
        }
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "mount {destination}: `tmpcopyup` through a symlink in the image ({}) is \
                     not supported by the builtin runtime",
                    path.display()
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(e) => return Err(format!("mount {destination}: {}: {e}", path.display())),
        }
    }
    match std::fs::read_dir(&path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) => Err(format!("mount {destination}: {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({"root": {"path": "rootfs"}, "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["rw", "tmpcopyup", "nosuid"]},
            {"destination": "/run/x", "type": "tmpfs", "source": "tmpfs",
             "options": ["tmpcopyup"]}
        ]})
    }

    #[test]
    fn empty_or_absent_directories_lose_the_option() {
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("rootfs/tmp")).unwrap();
        let mut d = doc();
        let dropped = drop_empty_tmpcopyup(&mut d, b.path()).unwrap();
        assert_eq!(dropped, ["/tmp", "/run/x"]);
        assert_eq!(d["mounts"][1]["options"], json!(["rw", "nosuid"]));
        assert_eq!(d["mounts"][2]["options"], json!([]));
        assert!(d["mounts"][0].get("options").is_none());
    }

    #[test]
    fn content_and_symlinks_are_refused() {
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("rootfs/tmp")).unwrap();
        std::fs::write(b.path().join("rootfs/tmp/keep"), "x").unwrap();
        let err = drop_empty_tmpcopyup(&mut doc(), b.path()).unwrap_err();
        assert!(err.contains("mount /tmp") && err.contains("fills"), "{err}");

        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(b.path().join("rootfs")).unwrap();
        std::os::unix::fs::symlink("/etc", b.path().join("rootfs/tmp")).unwrap();
        let err = drop_empty_tmpcopyup(&mut doc(), b.path()).unwrap_err();
        assert!(err.contains("symlink"), "{err}");
    }
}
