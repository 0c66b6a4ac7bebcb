//! The spool: where `ociguard-hook` leaves a report when the monitor cannot take it
//! (best-effort identity), and where the monitor picks it up when it starts and every few
//! seconds after.
//!
//! One file per report, `<nanoseconds>-<pid>-<n>.json`, holding the same `register` request the
//! hook would have sent. Files are written to a `.`-prefixed temp name, fsync'd and renamed, so
//! the monitor never reads half a report. Ingesting is idempotent (a report already recorded
//! changes nothing), so a crash between recording a report and deleting its file is harmless.
//! A file that does not parse is moved to `rejected/` and logged, never retried forever.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::protocol::Request;

/// Largest spool file read back.
pub const MAX_SPOOL_FILE: u64 = 1024 * 1024;
const REJECTED: &str = "rejected";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("create spool directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write spool file {path}: {step}: {source}")]
    Write {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("read spool directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Write `req` as a new spool file in `dir` (created 0700 if missing); returns its path.
pub fn write(dir: &Path, req: &Request) -> Result<PathBuf, SpoolError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| SpoolError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let name = format!(
        "{nanos:020}-{}-{}.json",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let err = |step: &'static str| {
        let path = path.clone();
        move |source| SpoolError::Write { path, step, source }
    };
    let mut bytes = serde_json::to_vec(req).map_err(|e| SpoolError::Write {
        path: path.clone(),
        step: "encode",
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("create"))?;
        f.write_all(&bytes).map_err(err("write"))?;
        f.sync_all().map_err(err("fsync"))?;
        fs::rename(&tmp, &path).map_err(err("rename"))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err("fsync directory"))
    })();
    if res.is_err() {
        // Leave no half-written temp file to fill the directory further.
        let _ = fs::remove_file(&tmp);
    }
    res.map(|()| path)
}

/// Reports waiting in `dir`, oldest first. A missing directory holds none.
pub fn pending(dir: &Path) -> Result<Vec<PathBuf>, SpoolError> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SpoolError::ReadDir {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        if name.starts_with('.') {
            // A temp file older than a minute belongs to a hook that died mid-write.
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(60));
            if old && name.ends_with(".tmp") {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if name.ends_with(".json") && entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Read and parse one spool file.
pub fn read(path: &Path) -> Result<Request, String> {
    let f = File::open(path).map_err(|e| format!("open: {e}"))?;
    let mut bytes = Vec::new();
    f.take(MAX_SPOOL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read: {e}"))?;
    if bytes.len() as u64 > MAX_SPOOL_FILE {
        return Err(format!("larger than {MAX_SPOOL_FILE} bytes"));
    }
    let req: Request = serde_json::from_slice(&bytes).map_err(|e| format!("parse: {e}"))?;
    match req {
        Request::Register { ref identity, .. } => {
            identity.validate()?;
            Ok(req)
        }
        other => Err(format!("{} is not a spoolable request", other.name())),
    }
}

/// Move a bad file out of the way, to `rejected/` beside it.
pub fn reject(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let rejected = dir.join(REJECTED);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&rejected)?;
    let dest = rejected.join(path.file_name().unwrap_or_default());
    fs::rename(path, &dest)?;
    Ok(dest)
}

/// What one pass over the spool did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestStats {
    pub ingested: usize,
    pub rejected: usize,
    /// Reports left for the next pass (the journal refused them).
    pub deferred: usize,
}

/// Hand every report in `dir` to `submit` (which returns once it is durable) and delete it.
/// Stops at the first report `submit` cannot record, so reports keep their order.
pub fn ingest(
    dir: &Path,
    mut submit: impl FnMut(Request) -> Result<(), String>,
) -> Result<IngestStats, SpoolError> {
    let files = pending(dir)?;
    let mut stats = IngestStats::default();
    for (i, path) in files.iter().enumerate() {
        match read(path) {
            Ok(req) => match submit(req) {
                Ok(()) => {
                    if let Err(e) = fs::remove_file(path) {
                        log::warn!(
                            "spool: recorded {} but cannot remove it: {e} (it will be ingested again, harmlessly)",
                            path.display()
                        );
                    }
                    stats.ingested += 1;
                }
                Err(e) => {
                    log::error!("spool: cannot record {}: {e}; will retry", path.display());
                    stats.deferred = files.len() - i;
                    break;
                }
            },
            Err(why) => {
                stats.rejected += 1;
                match reject(dir, path) {
                    Ok(dest) => log::error!(
                        "spool: {} rejected ({why}); moved to {}",
                        path.display(),
                        dest.display()
                    ),
                    Err(e) => log::error!(
                        "spool: {} rejected ({why}) and cannot be moved aside: {e}",
                        path.display()
                    ),
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Lifecycle;
    use crate::record::Identity;

    fn reg(id: &str) -> Request {
        Request::Register {
            event: Lifecycle::Created,
            identity: Identity {
                id: id.into(),
                bundle: "/b".into(),
                ..Default::default()
            },
        }
    }

    #[test]
    fn write_then_ingest_in_order_and_reject_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        for id in ["a", "b", "c"] {
            write(&spool, &reg(id)).unwrap();
        }
        fs::write(spool.join("zzz-garbage.json"), b"{not json").unwrap();
        fs::write(spool.join(".in-progress.tmp"), b"x").unwrap();
        let mut seen = Vec::new();
        let stats = ingest(&spool, |r| {
            if let Request::Register { identity, .. } = r {
                seen.push(identity.id);
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(
            stats,
            IngestStats {
                ingested: 3,
                rejected: 1,
                deferred: 0
            }
        );
        assert!(pending(&spool).unwrap().is_empty());
        assert!(spool.join("rejected/zzz-garbage.json").exists());
        // young temp files are left for their writer
        assert!(spool.join(".in-progress.tmp").exists());
    }

    #[test]
    fn failing_submit_keeps_files() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &reg("a")).unwrap();
        write(dir.path(), &reg("b")).unwrap();
        let stats = ingest(dir.path(), |_| Err("disk full".into())).unwrap();
        assert_eq!(stats.deferred, 2);
        assert_eq!(pending(dir.path()).unwrap().len(), 2);
        assert!(pending(&dir.path().join("missing")).unwrap().is_empty());
    }
}
