//! The on-disk label cache: an image's labels keyed by an immutable content digest, so that a
//! later `create` (a new process every time) skips reading and parsing the image's blobs.
//!
//! One file per image under `state_dir/labels/<engine>/<hex>.json`. The key is a content digest
//! (containerd: the image's target digest; containers/storage: the image id, cached only when it
//! is the sha256 of the config blob), so an entry can never go stale — only be missing or damaged.
//!
//! File format: one line `ociguard-labels/v1 <sha256 hex of the body>`, then the body, a JSON
//! object `{"key": "sha256:<hex>", "labels": {...}}`. Writes go to a temp file renamed into place
//! (so a reader never sees a half-written file) without fsync: this is a pure cache, and a file
//! torn by a crash fails the checksum on read and is treated as a miss, never trusted.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{check_labels, MAX_LABELS_TOTAL};

const MAGIC: &str = "ociguard-labels/v1 ";
/// Far above any entry that `check_labels` accepts; bounds what a damaged file can make us read.
const MAX_ENTRY: u64 = 2 * MAX_LABELS_TOTAL as u64 + 4096;

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    labels: BTreeMap<String, String>,
}

/// `<cache_dir>/<engine>/<hex>.json` for a well-formed `sha256:<64 hex>` digest, else `None`
/// (the digest comes from engine metadata and becomes a file name: nothing else is let through).
pub(crate) fn path(cache_dir: &Path, engine: &str, digest: &str) -> Option<PathBuf> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| cache_dir.join(engine).join(format!("{hex}.json")))
}

fn body_digest(body: &[u8]) -> String {
    let d = ociguard_policy::digest::sha256(body);
    d.strip_prefix("sha256:").unwrap_or(&d).to_owned()
}

/// The cached labels for `key`, if `path` holds an intact entry for exactly that key. Anything
/// else (absent, truncated, checksum mismatch, another key, labels over the limits) is a miss.
pub(crate) fn get(path: &Path, key: &str) -> Option<BTreeMap<String, String>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_ENTRY + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_ENTRY {
        return None;
    }
    let nl = memchr::memchr(b'\n', &bytes)?;
    let header = std::str::from_utf8(&bytes[..nl]).ok()?;
    let body = &bytes[nl + 1..];
    if header.strip_prefix(MAGIC)? != body_digest(body) {
        return None;
    }
    let entry: Entry = serde_json::from_slice(body).ok()?;
    (entry.key == key && check_labels(&entry.labels).is_ok()).then_some(entry.labels)
}

/// Store `labels` for `key`. Best effort: a failed write only costs the next create a lookup.
pub(crate) fn put(path: &Path, key: &str, labels: &BTreeMap<String, String>) {
    let Some(dir) = path.parent() else { return };
    let Ok(body) = serde_json::to_vec(&Entry {
        key: key.to_owned(),
        labels: labels.clone(),
    }) else {
        return;
    };
    let mut bytes = format!("{MAGIC}{}\n", body_digest(&body)).into_bytes();
    bytes.extend_from_slice(&body);
    // rename(2) over the old entry, so a concurrent reader sees the old file or the new one;
    // no fsync: `get` checks the digest line, so a torn entry is a miss.
    let _ = crate::atomic::store_cache(dir, path, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    fn labels() -> BTreeMap<String, String> {
        [("tier".to_owned(), "web".to_owned())].into()
    }

    #[test]
    fn paths_only_for_real_digests() {
        assert!(path(Path::new("/c"), "x", &key()).is_some());
        assert!(path(Path::new("/c"), "x", "sha256:../../etc").is_none());
        assert!(path(Path::new("/c"), "x", &"a".repeat(64)).is_none());
        assert!(path(Path::new("/c"), "x", &format!("sha256:{}", "A".repeat(64))).is_none());
    }

    #[test]
    fn round_trip_and_key_mismatch() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "e", &key()).unwrap();
        assert_eq!(get(&p, &key()), None);
        put(&p, &key(), &labels());
        assert_eq!(get(&p, &key()), Some(labels()));
        // An entry copied (or renamed) under another key is not trusted for that key.
        assert_eq!(get(&p, &format!("sha256:{}", "cd".repeat(32))), None);
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn damaged_entries_are_misses() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "e", &key()).unwrap();
        put(&p, &key(), &labels());
        let good = std::fs::read(&p).unwrap();
        // Torn at every length: never trusted.
        for n in 0..good.len() {
            std::fs::write(&p, &good[..n]).unwrap();
            assert_eq!(get(&p, &key()), None, "torn at {n}");
        }
        // A flipped byte in the body (same length, still valid JSON) fails the checksum.
        let text = String::from_utf8(good.clone())
            .unwrap()
            .replace("web", "wob");
        std::fs::write(&p, text).unwrap();
        assert_eq!(get(&p, &key()), None);
        // Garbage, and an oversized file.
        std::fs::write(&p, b"\0\xff\n\xfe").unwrap();
        assert_eq!(get(&p, &key()), None);
        std::fs::write(&p, vec![b'x'; MAX_ENTRY as usize + 10]).unwrap();
        assert_eq!(get(&p, &key()), None);
        // A rewrite repairs it.
        put(&p, &key(), &labels());
        assert_eq!(get(&p, &key()), Some(labels()));
    }

    #[test]
    fn entries_over_the_label_limits_are_misses() {
        let d = tempfile::tempdir().unwrap();
        let p = path(d.path(), "e", &key()).unwrap();
        let mut big = labels();
        big.insert("x".into(), "y".repeat(super::super::MAX_LABEL_VALUE + 1));
        put(&p, &key(), &big);
        assert_eq!(get(&p, &key()), None);
    }
}
