//! Reading and atomically rewriting files in a bundle (`config.json`, `exec --process` files).
//!
//! The bundle belongs to the engine, not to ociguard: a `config.json` that is a symlink (to
//! `/etc/shadow`, say) is refused rather than followed, so ociguard never reads, rewrites or
//! copies into an error message a file outside the bundle, and never replaces a link's target.

use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Far larger than any real config.json (a seccomp profile and its precompiled filter are ~30 KiB;
/// Kubernetes caps a pod's annotations at 256 KiB) and the hook's own limit;
/// bounds what a hostile bundle can make ociguard allocate.
pub const MAX_FILE: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "read {path}: is a symbolic link; a bundle's files must be regular files in the bundle"
    )]
    Symlink { path: PathBuf },
    #[error("read {path}: not a regular file")]
    NotRegular { path: PathBuf },
    #[error("read {path}: larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("rewrite {path}: {step}: {source}")]
    Write {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
}

/// A file read from a bundle, with the metadata of the very file that was read (its fd's
/// fstat), which a rewrite gives to the replacement.
#[derive(Debug, Clone)]
pub struct BundleFile {
    pub bytes: Vec<u8>,
    pub meta: Metadata,
}

/// `config.json` of `bundle`.
pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join("config.json")
}

/// Read `path`, which must be a regular file and not a symlink (O_NOFOLLOW: the check and the
/// read are one open, no window between them).
pub fn read(path: &Path) -> Result<BundleFile, BundleError> {
    use ociguard_policy::spec::{read_regular, ReadError};
    let path_buf = || path.to_owned();
    match read_regular(path, MAX_FILE) {
        Ok((bytes, meta)) => Ok(BundleFile { bytes, meta }),
        Err(ReadError::Io(source)) => Err(BundleError::Read {
            path: path_buf(),
            source,
        }),
        Err(ReadError::Symlink) => Err(BundleError::Symlink { path: path_buf() }),
        Err(ReadError::NotRegular) => Err(BundleError::NotRegular { path: path_buf() }),
        Err(ReadError::TooLarge(_)) => Err(BundleError::TooLarge { path: path_buf() }),
    }
}

/// Replace `path` (read earlier as `original`) with `bytes` so that a reader sees either the old
/// or the new file, never a partial one: write a temp file in the same directory, give it the
/// original's mode and owner, rename(2) it over `path`.
///
/// Neither the file nor the directory is fsynced: nothing runs from a bundle that a crash left
/// behind without a new `create`, which rewrites it. containerd's and Docker's bundles are on
/// tmpfs (gone), Podman regenerates `config.json` at every start, CRI-O's restored containers are
/// stopped and recreated. A bundle torn by a crash is at worst a create that fails (malformed
/// JSON), never one that runs unrewritten. Two flushes per create on a disk-backed bundle
/// (Podman's) protected nothing. The temp file is created with O_CREAT|O_EXCL under a random
/// name, so a name planted in the bundle (a symlink, a fifo) is never opened: creation fails
/// and the next random name is tried. rename(2) replaces the directory entry itself, never a
/// link's target.
pub fn write_atomic(path: &Path, original: &Metadata, bytes: &[u8]) -> Result<(), BundleError> {
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
    let mut tmp = tempfile::Builder::new()
        .prefix(".ociguard-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(err("create temp file"))?;
    tmp.as_file()
        .set_permissions(original.permissions())
        .map_err(err("chmod temp file"))?;
    // Rootless engines own their bundles; keep the owner so they can still read and remove it.
    std::os::unix::fs::fchown(tmp.as_file(), Some(original.uid()), Some(original.gid()))
        .map_err(err("chown temp file"))?;
    tmp.write_all(bytes).map_err(err("write temp file"))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .map_err(err("rename temp file"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_rewrite_keeps_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        fs::write(&p, b"old").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        let f = read(&p).unwrap();
        assert_eq!(f.bytes, b"old");
        write_atomic(&p, &f.meta, b"new").unwrap();
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
        let err = read(Path::new("/nonexistent-dir/config.json")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("read /nonexistent-dir/config.json"));
        let meta = fs::metadata("/").unwrap();
        let err = write_atomic(Path::new("/nonexistent-dir/config.json"), &meta, b"x").unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/config.json"));
    }

    #[test]
    fn a_symlinked_config_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"{\"root\":\"hunter2\"}").unwrap();
        let p = dir.path().join("config.json");
        std::os::unix::fs::symlink(&secret, &p).unwrap();
        let err = read(&p).unwrap_err();
        assert!(matches!(err, BundleError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        // A directory or a fifo in its place is refused without blocking.
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        assert!(matches!(read(&p), Err(BundleError::NotRegular { .. })));
        fs::remove_dir(&p).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read(&p), Err(BundleError::NotRegular { .. })));
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let f = fs::File::create(&p).unwrap();
        f.set_len(MAX_FILE + 1).unwrap();
        assert!(matches!(read(&p), Err(BundleError::TooLarge { .. })));
    }
}
