//! Whole-file writes that a reader never sees half-done: a temp file in the same directory,
//! renamed over the target, so concurrent writers each rename a complete file. Whether it is
//! also fsynced first is the caller's choice, by what a crash would leave behind:
//!
//! - [`store`] (fsynced) for files trusted once present *across* a crash: the AppArmor profile
//!   cache, whose entry a later create reuses as it is.
//! - [`store_cache`] (no fsync) for everything whose readers check what they read, or which no
//!   one reads after a crash: the label cache and the egress rulesets (content-addressed, checked
//!   against their digest by create and by the hook), and the container records (they describe
//!   live containers, and no container survives a crash: the next create rewrites its record).
//!   An fsync costs a disk flush per create on a disk-backed state directory and protects none
//!   of these.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write {path} ({step}): {source}")]
    Write {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
}

/// Write `bytes` to `path` (mode 0600) in `dir`, created 0700 if missing, fsynced before the
/// rename: for files trusted as they are once present, even after a crash.
pub fn store(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write(dir, path, bytes, true)
}

/// [`store`] without the fsync, for files whose readers verify what they read (a torn entry
/// after a crash is a miss) or that nothing reads after a crash.
pub fn store_cache(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write(dir, path, bytes, false)
}

fn write(dir: &Path, path: &Path, bytes: &[u8], fsync: bool) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    let err = |step: &'static str| {
        move |source: std::io::Error| StoreError::Write {
            path: path.to_owned(),
            step,
            source,
        }
    };
    // tempfile creates the file with mode 0600.
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(err("create temp file"))?;
    tmp.write_all(bytes).map_err(err("write"))?;
    // Without it a crash could leave a renamed but empty or short file on a disk-backed state
    // directory.
    if fsync {
        tmp.as_file().sync_all().map_err(err("fsync"))?;
    }
    tmp.persist(path)
        .map(drop)
        .map_err(|e| err("rename")(e.error))
}
