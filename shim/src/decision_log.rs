//! The decision log: one JSON object per line for every create/run/restore, whatever happened.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ociguard_policy::Decision;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct DecisionRecord<'a> {
    pub time: String,
    pub command: &'a str,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub runtime: &'a Path,
    /// `applied`, `unchanged` (already rewritten), `audit-error` (started anyway), `refused`.
    pub result: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'a Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DecisionRecord<'_> {
    pub fn now() -> String {
        humantime::format_rfc3339_micros(SystemTime::now()).to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("append decision log {path}: {source}")]
pub struct DecisionLogError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Append one record (a single write(2) with O_APPEND, so concurrent creates don't interleave).
pub fn append(path: &Path, record: &DecisionRecord<'_>) -> Result<(), DecisionLogError> {
    let err = |source| DecisionLogError {
        path: path.to_owned(),
        source,
    };
    let mut line = serde_json::to_vec(record).map_err(|e| err(e.into()))?;
    line.push(b'\n');
    let open = || OpenOptions::new().create(true).append(true).open(path);
    let mut file = match open() {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            open().map_err(err)?
        }
        Err(e) => return Err(err(e)),
    };
    file.write_all(&line).map_err(err)
}
