//! The decision log: one JSON object per line for every create/run/restore, whatever happened.
//!
//! Bounded twice: every untrusted value in a record is cut at serialisation
//! ([`ociguard_policy::excerpt`]), and the file rotates by size. Rotation is done by whichever
//! `ociguard` process finds the file full, under an exclusive `flock(2)` of the log's
//! directory so that concurrent creates rotate once. Every append opens the log by its path,
//! so logrotate (with `create`, no `copytruncate`, no signal) works too: there is no
//! long-lived process holding the old file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ociguard_policy::config::Runtime;
use ociguard_policy::excerpt;
use ociguard_policy::Decision;
use serde::{Serialize, Serializer};

#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    pub time: String,
    pub command: &'a str,
    #[serde(serialize_with = "bounded")]
    pub id: &'a str,
    pub bundle: &'a Path,
    #[serde(serialize_with = "display")]
    pub runtime: &'a Runtime,
    /// `applied`, `unchanged` (already rewritten), `audit-error` (started anyway), `refused`.
    pub result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'a Decision>,
    /// An error may quote what it could not use (an annotation, a policy's text): bounded.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "bounded_error"
    )]
    pub error: Option<String>,
}

fn display<S: Serializer>(v: &&Runtime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn bounded<S: Serializer>(v: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&excerpt::bounded(v))
}

fn bounded_error<S: Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        // An error names a few paths and one cause; four values' worth is plenty.
        Some(v) => s.serialize_some(&excerpt::excerpt(v, 4 * excerpt::MAX_VALUE)),
        None => s.serialize_none(),
    }
}

impl DecisionRecord<'_> {
    pub fn now() -> String {
        humantime::format_rfc3339_micros(SystemTime::now()).to_string()
    }
}

/// Size-based rotation (`config.toml`'s `decision_log_max_bytes` and `decision_log_keep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before an append would take the file past this; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept (`.1` is the newest); 0 discards the full log.
    pub keep: u32,
}

impl Rotation {
    pub fn of(config: &ociguard_policy::RuntimeConfig) -> Rotation {
        Rotation {
            max_bytes: config.decision_log_max_bytes,
            keep: config.decision_log_keep,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("append decision log {path}: {step}: {source}")]
pub struct DecisionLogError {
    pub path: PathBuf,
    pub step: &'static str,
    pub source: std::io::Error,
}

/// Append one record (a single write(2) with O_APPEND, so concurrent creates don't interleave).
pub fn append(
    path: &Path,
    rotation: Rotation,
    record: &DecisionRecord<'_>,
) -> Result<(), DecisionLogError> {
    let err = |step: &'static str| {
        move |source| DecisionLogError {
            path: path.to_owned(),
            step,
            source,
        }
    };
    let mut line = serde_json::to_vec(record).map_err(|e| err("serialise")(e.into()))?;
    line.push(b'\n');
    let mut file = open(path).map_err(err("open"))?;
    let size = file.metadata().map_err(err("stat"))?.len();
    if rotation.max_bytes > 0 && size > 0 && size + line.len() as u64 > rotation.max_bytes {
        file = rotate(path, &file, rotation, line.len() as u64).map_err(err("rotate"))?;
    }
    file.write_all(&line).map_err(err("write"))
}

fn open(path: &Path) -> std::io::Result<File> {
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            // Annotations and image names of every container: not for every local user.
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
    };
    match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open()
        }
        other => other,
    }
}

/// `path.N` for the N-th rotated log.
fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Rotate the log that `current` (opened at `path`) is, unless another process already has;
/// returns the file to append to.
fn rotate(path: &Path, current: &File, rotation: Rotation, need: u64) -> std::io::Result<File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Held until the guard is dropped at return: one rotation at a time.
    let _lock = nix::fcntl::Flock::lock(File::open(dir)?, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| std::io::Error::from(errno))?;
    let ours = current.metadata()?;
    match std::fs::symlink_metadata(path) {
        // Another process rotated between our open and our lock: append to its new file
        // unless that one is full already.
        Ok(now) if now.ino() != ours.ino() || now.dev() != ours.dev() => {
            if now.len() + need <= rotation.max_bytes {
                return open(path);
            }
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return open(path),
        Err(e) => return Err(e),
    }
    if rotation.keep == 0 {
        std::fs::remove_file(path)?;
    } else {
        for n in (1..rotation.keep).rev() {
            match std::fs::rename(rotated(path, n), rotated(path, n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(path, rotated(path, 1))?;
    }
    open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    static CRUN: std::sync::LazyLock<Runtime> =
        std::sync::LazyLock::new(|| Runtime::Exec(PathBuf::from("/usr/bin/crun")));

    fn record<'a>(id: &'a str, error: Option<String>) -> DecisionRecord<'a> {
        DecisionRecord {
            time: "t".into(),
            command: "create",
            id,
            bundle: Path::new("/b"),
            runtime: &CRUN,
            result: "refused",
            decision: None,
            error,
        }
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.jsonl");
        let rotation = Rotation {
            max_bytes: 1000,
            keep: 2,
        };
        for i in 0..100 {
            append(&log, rotation, &record(&format!("c{i:03}"), None)).unwrap();
        }
        for p in [&log, &rotated(&log, 1), &rotated(&log, 2)] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len > 0 && len <= 1000, "{}: {len}", p.display());
        }
        assert!(!rotated(&log, 3).exists());
        // The newest record is last in the live file; .1 ends where it begins.
        let live = std::fs::read_to_string(&log).unwrap();
        assert!(live.trim_end().ends_with("}") && live.contains("\"c099\""));
        let one = std::fs::read_to_string(rotated(&log, 1)).unwrap();
        let last_of_one: serde_json::Value =
            serde_json::from_str(one.lines().last().unwrap()).unwrap();
        let first_live: serde_json::Value =
            serde_json::from_str(live.lines().next().unwrap()).unwrap();
        let n = |v: &serde_json::Value| v["id"].as_str().unwrap()[1..].parse::<u32>().unwrap();
        assert_eq!(n(&last_of_one) + 1, n(&first_live));
    }

    #[test]
    fn concurrent_appends_lose_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.jsonl");
        let rotation = Rotation {
            max_bytes: 4000,
            keep: 100,
        };
        std::thread::scope(|s| {
            for t in 0..4 {
                let log = &log;
                s.spawn(move || {
                    for i in 0..100 {
                        append(log, rotation, &record(&format!("t{t}-{i}"), None)).unwrap();
                    }
                });
            }
        });
        let mut lines = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for l in text.lines() {
                serde_json::from_str::<serde_json::Value>(l).unwrap();
                lines += 1;
            }
        }
        assert_eq!(lines, 400);
    }

    #[test]
    fn untrusted_values_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("d.jsonl");
        let huge = "x".repeat(50 << 20);
        let rotation = Rotation {
            max_bytes: 0,
            keep: 0,
        };
        append(
            &log,
            rotation,
            &record(&huge, Some(format!("bad annotation {huge}"))),
        )
        .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.len() < 32 * 1024, "{} bytes", text.len());
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert!(v["id"]
            .as_str()
            .unwrap()
            .ends_with(&format!("... ({} bytes)", 50 << 20)));
        assert!(v["error"].as_str().unwrap().contains("bytes)"));
    }

    #[test]
    fn a_symlinked_log_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let log = dir.path().join("d.jsonl");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        let rotation = Rotation {
            max_bytes: 0,
            keep: 0,
        };
        let err = append(&log, rotation, &record("c1", None)).unwrap_err();
        assert_eq!(err.step, "open");
        assert_eq!(std::fs::read(&target).unwrap(), b"");
    }
}
