//! The durable record: an append-only journal of identity records, one per line.
//!
//! Line format: `<len> <crc32 as 8 hex digits> <json>\n`, where `len` is the byte length of
//! `json` and the CRC (IEEE) covers it. `json` is `{"seq":N,"put":{identity}}` or
//! `{"seq":N,"del":{"id":..,"bundle":..}}`; replay applies them in order, last one wins.
//!
//! A crash can leave the last line torn (a prefix of it, or a full-length line whose bytes never
//! all reached the disk): such a tail fails its length or CRC check and is truncated away on
//! replay. It was never acknowledged — a registration is acknowledged only after `fdatasync`
//! returned — so nothing acknowledged is lost. A bad line *followed by good ones* is not a crash
//! artefact (disk corruption, a foreign write): it is skipped and reported, and the good lines
//! after it are kept.
//!
//! Compaction writes the live records to a temp file, fsyncs it, renames it over the journal
//! and fsyncs the directory, so a crash at any point leaves either the old or the new journal.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::record::{Identity, Key};

// Entries are built, serialised and dropped one at a time; boxing the large variant would only
// add an allocation per registration.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entry {
    Put(Identity),
    Del(Key),
}

#[derive(Deserialize)]
struct Line {
    seq: u64,
    #[serde(flatten)]
    entry: Entry,
}

#[derive(Serialize)]
struct LineRef<'a> {
    seq: u64,
    #[serde(flatten)]
    entry: &'a Entry,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("open journal {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read journal {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("truncate torn tail of journal {path}: {source}")]
    Truncate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("append to journal {path}: {step}: {source}")]
    Append {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("compact journal {path}: {step}: {source}")]
    Compact {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
}

/// What replay found, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayStats {
    pub records: u64,
    /// Bad lines before the last good one: `(byte offset, reason)`.
    pub corrupt: Vec<(u64, String)>,
    /// Bytes of torn tail truncated away.
    pub truncated: u64,
}

#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    len: u64,
    seq: u64,
    /// Lines appended since the journal was last compacted (or opened).
    pub appended: u64,
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE 802.3), as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Encode one journal line.
pub fn encode(seq: u64, entry: &Entry, out: &mut Vec<u8>) {
    let line = LineRef { seq, entry };
    // Identity and Key are plain data and always serialise.
    let json = serde_json::to_vec(&line).unwrap_or_default();
    let _ = write!(out, "{} {:08x} ", json.len(), crc32(&json));
    out.extend_from_slice(&json);
    out.push(b'\n');
}

/// Decode the line at the start of `data`: `(bytes consumed, seq, entry)`.
fn decode(data: &[u8]) -> Result<(usize, u64, Entry), String> {
    let sp = data
        .iter()
        .take(12)
        .position(|&b| b == b' ')
        .ok_or("no length field")?;
    let len: usize = std::str::from_utf8(&data[..sp])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("bad length field")?;
    let crc_start = sp + 1;
    let json_start = crc_start + 9;
    if data.len() < json_start || data[json_start - 1] != b' ' {
        return Err("incomplete header".to_owned());
    }
    let crc = std::str::from_utf8(&data[crc_start..crc_start + 8])
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or("bad crc field")?;
    let end = json_start.checked_add(len).ok_or("length overflows")?;
    if data.len() <= end {
        return Err(format!(
            "record of {len} bytes cut short ({} present)",
            data.len().saturating_sub(json_start)
        ));
    }
    if data[end] != b'\n' {
        return Err("record not terminated by a newline".to_owned());
    }
    let json = &data[json_start..end];
    if crc32(json) != crc {
        return Err("crc mismatch".to_owned());
    }
    let line: Line = serde_json::from_slice(json).map_err(|e| format!("bad record: {e}"))?;
    Ok((end + 1, line.seq, line.entry))
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Open (creating if needed) the journal at `path` and replay it through `apply`, in order.
    pub fn open(
        path: &Path,
        mut apply: impl FnMut(Entry),
    ) -> Result<(Journal, ReplayStats), JournalError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| JournalError::Open {
                path: path.to_owned(),
                source,
            })?;
        if !existed {
            sync_dir(path).map_err(|source| JournalError::Open {
                path: path.to_owned(),
                source,
            })?;
        }
        // Streamed line by line: the journal may be much larger than the records it holds.
        let read_err = |source| JournalError::Read {
            path: path.to_owned(),
            source,
        };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(read_err)?);
        let mut stats = ReplayStats::default();
        let mut line = Vec::new();
        let mut pos = 0u64;
        let mut good_end = 0u64;
        let mut seq = 0u64;
        let mut pending_corrupt = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(read_err)?;
            if n == 0 {
                break;
            }
            match decode(&line) {
                Ok((used, s, entry)) if used == n => {
                    apply(entry);
                    stats.records += 1;
                    seq = seq.max(s);
                    good_end = pos + n as u64;
                    // Bad lines followed by a good one are corruption, not a torn tail.
                    stats.corrupt.append(&mut pending_corrupt);
                }
                Ok(_) => pending_corrupt.push((pos, "trailing bytes after the record".to_owned())),
                Err(reason) => pending_corrupt.push((pos, reason)),
            }
            pos += n as u64;
        }
        let file_len = pos;
        if good_end < file_len {
            stats.truncated = file_len - good_end;
            file.set_len(good_end)
                .and_then(|()| file.sync_all())
                .map_err(|source| JournalError::Truncate {
                    path: path.to_owned(),
                    source,
                })?;
        }
        Ok((
            Journal {
                path: path.to_owned(),
                file,
                len: good_end,
                seq,
                appended: stats.records,
            },
            stats,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last sequence number written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `entries` and make them durable (`fdatasync`) before returning their sequence
    /// numbers. On failure nothing is considered written: the file is cut back to its old length.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Vec<u64>, JournalError> {
        let mut buf = Vec::with_capacity(entries.len() * 512);
        let mut seqs = Vec::with_capacity(entries.len());
        let mut seq = self.seq;
        for e in entries {
            seq += 1;
            encode(seq, e, &mut buf);
            seqs.push(seq);
        }
        let err = |step: &'static str| {
            let path = self.path.clone();
            move |source| JournalError::Append { path, step, source }
        };
        let res = self
            .file
            .write_all(&buf)
            .map_err(err("write"))
            .and_then(|()| self.file.sync_data().map_err(err("fdatasync")));
        if let Err(e) = res {
            // Best effort: a partial line left behind would be a torn tail on replay anyway.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.seq = seq;
        self.appended += entries.len() as u64;
        Ok(seqs)
    }

    /// Replace the journal by one `put` per record in `live`.
    pub fn compact<'a>(
        &mut self,
        live: impl Iterator<Item = &'a Identity>,
    ) -> Result<(), JournalError> {
        let err = |step: &'static str| {
            let path = self.path.clone();
            move |source| JournalError::Compact { path, step, source }
        };
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".journal-")
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(err("create temp file"))?;
        let mut buf = Vec::new();
        let mut seq = self.seq;
        let mut count = 0u64;
        for rec in live {
            seq += 1;
            count += 1;
            encode(seq, &Entry::Put(rec.clone()), &mut buf);
            if buf.len() > 1 << 20 {
                tmp.write_all(&buf).map_err(err("write temp file"))?;
                buf.clear();
            }
        }
        tmp.write_all(&buf).map_err(err("write temp file"))?;
        tmp.as_file().sync_all().map_err(err("fsync temp file"))?;
        let file = tmp
            .persist(&self.path)
            .map_err(|e| e.error)
            .map_err(err("rename temp file"))?;
        sync_dir(&self.path).map_err(err("fsync directory"))?;
        let len = file.metadata().map_err(err("stat"))?.len();
        // The persisted handle was opened for writing at its end; reopen for appending.
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(err("reopen"))?;
        self.len = len;
        self.seq = seq;
        self.appended = count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(id: &str, pid: u32) -> Identity {
        Identity {
            id: id.into(),
            bundle: format!("/b/{id}"),
            pid: Some(pid),
            ..Default::default()
        }
    }

    fn replay(path: &Path) -> (Vec<Entry>, ReplayStats, Journal) {
        let mut out = Vec::new();
        let (j, stats) = Journal::open(path, |e| out.push(e)).unwrap();
        (out, stats, j)
    }

    #[test]
    fn crc_vector() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn append_replay_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let (_, _, mut j) = replay(&p);
        let seqs = j
            .append(&[Entry::Put(ident("a", 1)), Entry::Put(ident("b", 2))])
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        j.append(&[Entry::Del(ident("a", 1).key())]).unwrap();
        let good_len = j.len();
        drop(j);
        // A crash in the middle of the next append: half a line.
        let mut partial = Vec::new();
        encode(4, &Entry::Put(ident("c", 3)), &mut partial);
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&partial[..partial.len() / 2]).unwrap();
        drop(f);

        let (entries, stats, mut j) = replay(&p);
        assert_eq!(entries.len(), 3);
        assert_eq!(stats.truncated, (partial.len() / 2) as u64);
        assert!(stats.corrupt.is_empty());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), good_len);
        assert_eq!(j.seq(), 3);
        assert_eq!(j.append(&[Entry::Put(ident("d", 4))]).unwrap(), vec![4]);
        let (entries, stats, _) = replay(&p);
        assert_eq!(entries.len(), 4);
        assert_eq!(stats.truncated, 0);
    }

    #[test]
    fn full_length_garbage_tail_and_middle_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let (_, _, mut j) = replay(&p);
        j.append(&[Entry::Put(ident("a", 1))]).unwrap();
        j.append(&[Entry::Put(ident("b", 2))]).unwrap();
        drop(j);
        // Flip a byte inside the first record's JSON: CRC mismatch, but a good line follows.
        let mut data = std::fs::read(&p).unwrap();
        let i = data.iter().position(|&b| b == b'{').unwrap() + 3;
        data[i] ^= 0x20;
        // And a tail that has the right shape but garbage content.
        data.extend_from_slice(b"12 00000000 {\"seq\":9}xx\n");
        std::fs::write(&p, &data).unwrap();
        let (entries, stats, _) = replay(&p);
        assert_eq!(entries.len(), 1, "the good line after the bad one is kept");
        assert_eq!(stats.corrupt.len(), 1);
        assert_eq!(stats.corrupt[0].0, 0);
        assert!(stats.truncated > 0);
    }

    #[test]
    fn compaction_keeps_only_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.jsonl");
        let (_, _, mut j) = replay(&p);
        for i in 0..50 {
            j.append(&[Entry::Put(ident("a", i + 1))]).unwrap();
        }
        let before = j.len();
        let live = [ident("a", 50), ident("z", 9)];
        j.compact(live.iter()).unwrap();
        assert!(j.len() < before);
        j.append(&[Entry::Put(ident("y", 8))]).unwrap();
        drop(j);
        let (entries, stats, j) = replay(&p);
        assert_eq!(entries.len(), 3);
        assert_eq!(
            stats,
            ReplayStats {
                records: 3,
                ..Default::default()
            }
        );
        assert_eq!(j.seq(), 53);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
