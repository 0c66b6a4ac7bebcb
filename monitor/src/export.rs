//! Event export: every event ociguardd publishes, as one JSON object per line, appended to a
//! file (or written to stdout with `-`) for a log shipper (Fluent Bit, Vector, promtail...).
//!
//! The line is the event as `ociguardctl events --json` prints it, with `detail` parsed into an
//! object when it is JSON (behaviour, anomaly and lost events) and kept as a string otherwise
//! (egress denials, lifecycle notes). The fields are documented in docs/monitor.md ("Event
//! export").
//!
//! Never in the way: the exporter is a subscriber like `ociguardctl events --follow`; if the
//! file cannot keep up (4,096 events behind) the hub drops it, and the exporter subscribes again
//! and writes an `export-lost` line saying so. A file moved away by logrotate is noticed (its
//! inode changed) and reopened; a failing write is logged once per minute, not retried.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::events::Hub;
use crate::protocol::{Event, EventKind};
use crate::record::Timestamp;
use crate::stats::{Count, Overflow};

/// How often the file's identity is checked (logrotate's `create` moves it away).
const REOPEN_CHECK: Duration = Duration::from_secs(5);
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    /// `-` is stdout, anything else a file path.
    pub fn parse(s: &str) -> Target {
        if s == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(s))
        }
    }
}

/// One event as an export line (newline included).
pub fn line(e: &Event) -> Vec<u8> {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let Some(detail) = e.detail.as_deref() {
        if detail.starts_with('{') {
            if let Ok(obj) = serde_json::from_str::<Value>(detail) {
                v["detail"] = obj;
            }
        }
    }
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    out.push(b'\n');
    out
}

#[derive(Debug)]
struct Sink {
    target: Target,
    file: Option<File>,
    inode: Option<(u64, u64)>,
    checked: Instant,
    error_logged: Option<Instant>,
}

impl Sink {
    fn open(&mut self) -> io::Result<()> {
        if let Target::File(path) = &self.target {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            let m = f.metadata()?;
            self.inode = Some((m.dev(), m.ino()));
            self.file = Some(f);
        }
        Ok(())
    }

    /// Reopen the file when it was moved away or removed (log rotation).
    fn check(&mut self) {
        let Target::File(path) = &self.target else {
            return;
        };
        if self.checked.elapsed() < REOPEN_CHECK && self.file.is_some() {
            return;
        }
        self.checked = Instant::now();
        let now = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        if now.is_none() || now != self.inode || self.file.is_none() {
            if let Err(e) = self.open() {
                self.failed(&e);
            }
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.check();
        let r = match &mut self.file {
            Some(f) => f.write_all(bytes),
            None if self.target == Target::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            None => return,
        };
        if let Err(e) = r {
            self.failed(&e);
        }
    }

    fn failed(&mut self, e: &io::Error) {
        if self
            .error_logged
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL)
        {
            log::error!(
                "event export to {:?}: {e}: events are not exported",
                self.target
            );
            self.error_logged = Some(Instant::now());
        }
    }
}

/// Where export lines go: a file here, syslog in `export_syslog`.
pub trait Out: Send + 'static {
    /// Write one line (newline included) of an event of `kind` (`None`: `export-lost`).
    fn write(&mut self, kind: Option<EventKind>, line: &[u8]);
    /// Nothing to write for a while: a chance to check the destination.
    fn idle(&mut self) {}
}

impl Out for Sink {
    fn write(&mut self, _: Option<EventKind>, line: &[u8]) {
        Sink::write(self, line);
    }
    fn idle(&mut self) {
        self.check();
    }
}

/// Check that `target` can be written (at start, so a bad path is an error, not a log line),
/// and return the loop to run on a thread of its own.
pub fn start(target: Target, hub: Arc<Hub>) -> io::Result<impl FnOnce() + Send + 'static> {
    let mut sink = Sink {
        target,
        file: None,
        inode: None,
        checked: Instant::now(),
        error_logged: None,
    };
    sink.open()?;
    Ok(follow(sink, hub))
}

/// The loop writing every event to `out`, to run on a thread of its own: a subscriber of the
/// hub, dropped if it falls behind, which then says so in the stream and subscribes again.
pub fn follow(mut out: impl Out, hub: Arc<Hub>) -> impl FnOnce() + Send + 'static {
    let mut rx = hub.subscribe_to(|_, _| true);
    move || loop {
        match rx.recv_timeout(REOPEN_CHECK) {
            Ok(e) => out.write(Some(e.kind), &line(&e)),
            Err(RecvTimeoutError::Timeout) => out.idle(),
            Err(RecvTimeoutError::Disconnected) => {
                // Dropped by the hub for falling behind: say so in the stream, then go on.
                log::warn!("event export fell behind: events were lost; following again");
                hub.counters().inc(Count::Overflow(Overflow::Export));
                let lost = serde_json::json!({
                    "time": Timestamp::now(),
                    "kind": "export-lost",
                    "detail": "the exporter fell 4096 events behind and was dropped; events in between are missing",
                });
                let mut bytes = serde_json::to_vec(&lost).unwrap_or_default();
                bytes.push(b'\n');
                out.write(None, &bytes);
                rx = hub.subscribe_to(|_, _| true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventKind;
    use crate::record::Identity;

    #[test]
    fn lines_parse_json_details_and_follow_a_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let hub = Arc::new(Hub::new());
        let run = start(Target::File(path.clone()), Arc::clone(&hub)).unwrap();
        std::thread::spawn(run);
        let rec = Identity {
            id: "c1".into(),
            bundle: "/b".into(),
            ..Default::default()
        };
        hub.publish(
            EventKind::Anomaly,
            &rec,
            Some(r#"{"kind":"exec","program":"/bin/id"}"#.into()),
        );
        hub.publish(
            EventKind::EgressDenied,
            &rec,
            Some("tcp 198.18.1.1:80".into()),
        );
        let read = |p: &std::path::Path, n: usize| -> Vec<Value> {
            for _ in 0..200 {
                let lines: Vec<Value> = std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                if lines.len() >= n {
                    return lines;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("fewer than {n} lines in {}", p.display());
        };
        let lines = read(&path, 2);
        assert_eq!(lines[0]["kind"], "anomaly");
        assert_eq!(lines[0]["detail"]["program"], "/bin/id");
        assert_eq!(lines[1]["detail"], "tcp 198.18.1.1:80");
        assert_eq!(lines[1]["id"], "c1");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // logrotate moves the file away: the next events go to a new file (within the check
        // interval; the moved one keeps what it had).
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        std::thread::sleep(REOPEN_CHECK + Duration::from_millis(200));
        hub.publish(EventKind::Exited, &rec, None);
        let lines = read(&path, 1);
        assert_eq!(lines[0]["kind"], "exited");
        assert!(start(Target::File(dir.path().join("no/such/dir/x")), hub).is_err());
    }
}
