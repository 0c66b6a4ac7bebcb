//! The decision log, followed: every `ociguard create/run/restore` decision counted by result
//! and policy, and every refusal turned into a `refused` event.
//!
//! Decisions are made by the `ociguard` processes, not by ociguardd, and each appends one JSON
//! line to the decision log (`decision_log` of config.toml; `shim/src/decision_log.rs`). Reading
//! that file afterwards, as `tail -F` would, costs the runtime's create path nothing: ociguard
//! does not know it is followed, and a monitor that is down, slow or absent changes nothing for
//! it.
//!
//! The follower starts at the end of the file (a restart does not count old decisions again),
//! polls it, and follows it across rotation, whoever rotates: ociguard renames a full log to
//! `.1` and creates a new one, logrotate does the same (`create`) or truncates it in place
//! (`copytruncate`). A rotated file is read to its end once more on the next poll, for a
//! writer that opened it just before the rename. A line is counted only once its newline is
//! there (a line being written is read when complete); a line longer than [`MAX_LINE`] is
//! skipped whole, never buffered. A missing file is no error: it is followed from its start
//! once it appears.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ociguard_policy::excerpt::excerpt;
use serde::Deserialize;
use serde_json::json;

use crate::events::Hub;
use crate::protocol::EventKind;
use crate::record::Identity;
use crate::stats::{Count, DecisionResult, Skipped};

/// Longest line read (a decision with many policies considered and many changes is a few
/// tens of KiB; its untrusted values are bounded by ociguard).
pub const MAX_LINE: usize = 1 << 20;
/// How often the file is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Longest policy name kept as a metric label.
const MAX_POLICY_LABEL: usize = 128;
/// Longest error excerpt in a `refused` event.
const MAX_ERROR: usize = 2048;

/// A line of the file, or why one was skipped.
pub type Line<'a> = Result<&'a [u8], Skipped>;

/// One opened incarnation of the file.
#[derive(Debug)]
struct Open {
    file: File,
    id: (u64, u64),
    offset: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
    /// Inside a line too long to read (or one that started before we did): up to its newline.
    skipping: bool,
}

impl Open {
    fn new(path: &Path) -> std::io::Result<Open> {
        let file = File::open(path)?;
        let m = file.metadata()?;
        Ok(Open {
            file,
            id: (m.dev(), m.ino()),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
        })
    }

    /// Read what was appended since the last call, handing each complete line to `each`.
    fn read(&mut self, each: &mut dyn FnMut(Line<'_>)) -> std::io::Result<()> {
        let len = self.file.metadata()?.len();
        if len < self.offset {
            // Truncated in place (logrotate's copytruncate): what follows is new.
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read_at(&mut buf, self.offset) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.offset += n as u64;
            let mut rest = &buf[..n];
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = (&rest[..i], &rest[i + 1..]);
                rest = tail;
                if std::mem::take(&mut self.skipping) {
                    continue;
                }
                if self.partial.len() + head.len() > MAX_LINE {
                    self.partial.clear();
                    each(Err(Skipped::TooLong));
                } else if self.partial.is_empty() {
                    each(Ok(head));
                } else {
                    self.partial.extend_from_slice(head);
                    each(Ok(&self.partial));
                    self.partial.clear();
                }
            }
            if !self.skipping {
                if self.partial.len() + rest.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                    each(Err(Skipped::TooLong));
                } else {
                    self.partial.extend_from_slice(rest);
                }
            }
        }
    }
}

/// `tail -F` for one path.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    current: Option<Open>,
    /// The file rotated away at the last poll: read once more, then closed.
    rotated: Option<Open>,
}

impl Follower {
    /// Follow `path` from its current end (or from its start, once it appears).
    pub fn at_end(path: &Path) -> Follower {
        let current = Open::new(path).ok().map(|mut o| {
            let len = o.file.metadata().map(|m| m.len()).unwrap_or(0);
            o.offset = len;
            // Started in the middle of a line: its end is not a line of ours.
            let mut last = [0u8; 1];
            o.skipping = len > 0
                && o.file
                    .read_at(&mut last, len - 1)
                    .is_ok_and(|n| n == 1 && last[0] != b'\n');
            o
        });
        Follower {
            path: path.to_owned(),
            current,
            rotated: None,
        }
    }

    /// Whether the file was there at the start or since.
    pub fn is_open(&self) -> bool {
        self.current.is_some()
    }

    /// Hand every line completed since the last poll to `each`, in order.
    pub fn poll(&mut self, mut each: impl FnMut(Line<'_>)) {
        let each: &mut dyn FnMut(Line<'_>) = &mut each;
        if let Some(mut old) = self.rotated.take() {
            let _ = old.read(each);
        }
        let now = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if let Some(cur) = &mut self.current {
            if Some(cur.id) == now {
                if let Err(e) = cur.read(each) {
                    log::warn!("decision log {}: read: {e}", self.path.display());
                }
                return;
            }
        }
        // Rotated, removed, or not open yet: finish the old file, then the new one from 0.
        if let Some(mut old) = self.current.take() {
            let _ = old.read(each);
            self.rotated = Some(old);
        }
        if now.is_some() {
            match Open::new(&self.path) {
                Ok(mut o) => {
                    if let Err(e) = o.read(each) {
                        log::warn!("decision log {}: read: {e}", self.path.display());
                    }
                    self.current = Some(o);
                }
                Err(e) => log::warn!("decision log {}: open: {e}", self.path.display()),
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Record {
    result: String,
    #[serde(default)]
    command: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    bundle: String,
    #[serde(default)]
    decision: Option<DecisionPart>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct DecisionPart {
    #[serde(default)]
    policy: String,
}

/// Count one line of the decision log and, for a refusal, publish a `refused` event.
pub fn handle(line: Line<'_>, hub: &Hub) {
    let counters = hub.counters();
    let rec = match line.map(serde_json::from_slice::<Record>) {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => {
            counters.inc(Count::DecisionSkipped(Skipped::Malformed));
            return;
        }
        Err(why) => {
            counters.inc(Count::DecisionSkipped(why));
            return;
        }
    };
    let policy = rec.decision.map(|d| d.policy).unwrap_or_default();
    let result = DecisionResult::parse(&rec.result);
    counters.inc(Count::Decision {
        result,
        policy: excerpt(&policy, MAX_POLICY_LABEL).as_ref().into(),
    });
    if result == DecisionResult::Refused {
        let who = Identity {
            id: rec.id,
            bundle: rec.bundle,
            ..Identity::default()
        };
        let mut detail = json!({ "command": rec.command });
        if !policy.is_empty() {
            detail["policy"] = policy.into();
        }
        if let Some(e) = rec.error {
            detail["error"] = excerpt(&e, MAX_ERROR).into_owned().into();
        }
        hub.publish(EventKind::Refused, &who, Some(detail.to_string()));
    }
}

/// The loop that follows `path` into `hub`, to run on a thread of its own.
pub fn follow(path: PathBuf, hub: Arc<Hub>) -> impl FnOnce() + Send + 'static {
    move || {
        let mut f = Follower::at_end(&path);
        if !f.is_open() {
            log::info!(
                "decision log {}: absent; followed once it appears",
                path.display()
            );
        }
        loop {
            f.poll(|line| handle(line, &hub));
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn lines(f: &mut Follower) -> Vec<String> {
        let mut out = Vec::new();
        f.poll(|l| {
            out.push(match l {
                Ok(b) => String::from_utf8_lossy(b).into_owned(),
                Err(why) => format!("<{}>", why.as_str()),
            })
        });
        out
    }

    #[test]
    fn follows_from_the_end_across_rotation_and_waits_for_a_newline() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("decisions.jsonl");
        // Before the start, and a line being written as it starts: neither is ours.
        append(&log, "old-1\nold-2\nhalf-writ");
        let mut f = Follower::at_end(&log);
        assert!(lines(&mut f).is_empty());
        append(&log, "ten\na\nb");
        assert_eq!(
            lines(&mut f),
            ["a"],
            "the partial `b` waits for its newline"
        );
        append(&log, "c\n");
        assert_eq!(lines(&mut f), ["bc"]);

        // ociguard's rotation: rename to .1, a new file; a late writer still appends to .1.
        append(&log, "d\n");
        std::fs::rename(&log, dir.path().join("decisions.jsonl.1")).unwrap();
        append(&log, "e\n");
        assert_eq!(lines(&mut f), ["d", "e"]);
        append(&dir.path().join("decisions.jsonl.1"), "late\n");
        append(&log, "f\n");
        assert_eq!(lines(&mut f), ["late", "f"]);
        append(&dir.path().join("decisions.jsonl.1"), "too late\n");
        assert!(
            lines(&mut f).is_empty(),
            "a rotated file is read once more only"
        );

        // logrotate's copytruncate: the same file, shorter.
        std::fs::write(&log, "").unwrap();
        append(&log, "g\n");
        assert_eq!(lines(&mut f), ["g"]);

        // Removed, then created again: read from its start.
        std::fs::remove_file(&log).unwrap();
        assert!(lines(&mut f).is_empty());
        append(&log, "h\n");
        assert_eq!(lines(&mut f), ["h"]);
    }

    #[test]
    fn an_absent_file_is_followed_once_it_appears_and_a_long_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub/decisions.jsonl");
        let mut f = Follower::at_end(&log);
        assert!(!f.is_open());
        assert!(lines(&mut f).is_empty());
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        append(&log, "first\n");
        assert_eq!(lines(&mut f), ["first"]);
        let long = "x".repeat(MAX_LINE + 10);
        append(&log, &long);
        assert_eq!(lines(&mut f), ["<too-long>"]);
        append(&log, "still the long one\nnext\n");
        assert_eq!(lines(&mut f), ["next"]);
    }

    #[test]
    fn decisions_are_counted_and_a_refusal_is_an_event() {
        let hub = Hub::new();
        let (_, rx) = hub.subscribe();
        let applied = br#"{"time":"t","command":"create","id":"c1","bundle":"/b/c1","runtime":"/usr/bin/crun","result":"applied","decision":{"policy":"web","mode":"enforce"}}"#;
        let refused = br#"{"time":"t","command":"create","id":"c2","bundle":"/b/c2","runtime":"/usr/bin/crun","result":"refused","decision":{"policy":"web"},"error":"egress: no nft"}"#;
        let no_policy = br#"{"command":"run","id":"c3","bundle":"/b/c3","result":"refused","error":"bad annotation"}"#;
        for l in [&applied[..], refused, no_policy, b"not json"] {
            handle(Ok(l), &hub);
        }
        handle(Err(Skipped::TooLong), &hub);
        let c = hub.counters();
        let decision = |result, policy: &str| Count::Decision {
            result,
            policy: policy.into(),
        };
        assert_eq!(c.get(&decision(DecisionResult::Applied, "web")), 1);
        assert_eq!(c.get(&decision(DecisionResult::Refused, "web")), 1);
        assert_eq!(c.get(&decision(DecisionResult::Refused, "")), 1);
        assert_eq!(c.get(&Count::DecisionSkipped(Skipped::Malformed)), 1);
        assert_eq!(c.get(&Count::DecisionSkipped(Skipped::TooLong)), 1);
        let events: Vec<_> = rx.try_iter().collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventKind::Refused);
        assert_eq!(
            (events[0].id.as_str(), events[0].bundle.as_str()),
            ("c2", "/b/c2")
        );
        let d: serde_json::Value =
            serde_json::from_str(events[0].detail.as_deref().unwrap()).unwrap();
        assert_eq!(d["policy"], "web");
        assert_eq!(d["error"], "egress: no nft");
        let d: serde_json::Value =
            serde_json::from_str(events[1].detail.as_deref().unwrap()).unwrap();
        assert!(d.get("policy").is_none(), "{d}");
        assert_eq!(d["command"], "run");
    }
}
