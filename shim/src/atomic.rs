//! Whole-file writes that never leave a torn file behind: a temp file in the same directory,
//! fsynced, renamed over the target. Concurrent writers each rename a complete file.

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
/// rename: for records that are trusted once present.
pub fn store(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write(dir, path, bytes, true)
}

/// [`store`] without the fsync, for caches whose readers verify what they read (a torn entry
/// after a crash is a miss): a cache must not add a disk flush to every create.
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
