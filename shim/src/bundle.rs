//! Reading and atomically rewriting files in a bundle (`config.json`, `exec --process` files).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("rewrite {path}: {step}: {source}")]
    Write {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
}

/// `config.json` of `bundle`.
pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

pub fn read(path: &Path) -> Result<Vec<u8>, BundleError> {
    fs::read(path).map_err(|source| BundleError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Replace `path` with `bytes` so that a reader sees either the old or the new file, never a
/// partial one, and a crash leaves one of the two: write a temp file in the same directory,
/// give it the original's mode and owner, fsync it, rename(2) it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let err = |step: &'static str| {
        move |source: std::io::Error| BundleError::Write {
            path: path.to_owned(),
            step,
            source,
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = fs::metadata(path).map_err(err("stat"))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".ociguard-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err("create temp file"))?;
    tmp.as_file()
        .set_permissions(meta.permissions())
        .map_err(err("chmod temp file"))?;
    // Rootless engines own their bundles; keep the owner so they can still read and remove it.
    std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()))
        .map_err(err("chown temp file"))?;
    tmp.write_all(bytes).map_err(err("write temp file"))?;
    tmp.as_file().sync_all().map_err(err("fsync temp file"))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .map_err(err("rename temp file"))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync directory"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_rewrite_keeps_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = write_atomic(Path::new("/nonexistent-dir/config.json"), b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/config.json"));
        let err = read(Path::new("/nonexistent-dir/config.json")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("read /nonexistent-dir/config.json"));
    }
}
