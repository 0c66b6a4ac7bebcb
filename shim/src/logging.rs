//! Where ociguard's own messages go: stderr, and the engine's `--log` file in its `--log-format`.
//!
//! stdout is never written: for a runtime it is protocol (`state`, `ps --format json`, `features`).
//! The json format matches runc's (logrus): one object per line with `level`, `msg`, `time`,
//! which is what containerd's shim reads back from `log.json` to report a failed create.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::argv::LogFormat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warning",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Logger {
    pub path: Option<PathBuf>,
    pub format: LogFormat,
    pub debug: bool,
}

impl Logger {
    pub fn new(path: Option<PathBuf>, format: LogFormat, debug: bool) -> Self {
        Logger {
            path,
            format,
            debug,
        }
    }

    /// Warnings and errors go to stderr and the log file; info only to the log file; debug only
    /// with `--debug`.
    pub fn log(&self, level: Level, msg: &str) {
        if level == Level::Debug && !self.debug {
            return;
        }
        // A message may quote untrusted input (an annotation in an error): bounded, so that an
        // engine's log and the terminal get a few KiB, not the 50 MB a pod author wrote.
        let msg = ociguard_policy::excerpt::excerpt(msg, 4 * ociguard_policy::excerpt::MAX_VALUE);
        let msg = msg.as_ref();
        if level >= Level::Warn {
            // Nothing sensible to do if stderr is closed.
            let _ = std::io::stderr().write_all(stderr_line(level, msg).as_bytes());
        }
        if let Some(path) = &self.path {
            let line = format_line(self.format, level, msg, SystemTime::now());
            // O_APPEND: crun appends to the same file; whole-line writes do not interleave.
            let res = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = res {
                let _ = std::io::stderr().write_all(
                    stderr_line(
                        Level::Warn,
                        &format!("cannot write log {}: {e}", path.display()),
                    )
                    .as_bytes(),
                );
            }
        }
    }

    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg)
    }
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warn, msg)
    }
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }
}

/// A line for stderr, as crun writes it: an error is its bare message. Engines put the
/// runtime's name in front of what it printed (Podman: `Error: OCI runtime error: ociguard:
/// ...`), so a prefix of our own would show twice. Warnings say that they are warnings.
fn stderr_line(level: Level, msg: &str) -> String {
    match level {
        Level::Error => format!("{msg}\n"),
        _ => format!("{}: {msg}\n", level.as_str()),
    }
}

/// A line for the engine's `--log` file, which crun writes to as well: ociguard's own lines
/// say who wrote them (containerd's shim shows an error line's `msg` after "OCI runtime create
/// failed: ", with no runtime name of its own).
fn format_line(format: LogFormat, level: Level, msg: &str, at: SystemTime) -> String {
    let time = humantime::format_rfc3339_micros(at).to_string();
    let msg = format!("ociguard: {msg}");
    let msg = msg.as_str();
    match format {
        LogFormat::Json => {
            let obj = serde_json::json!({"level": level.as_str(), "msg": msg, "time": time});
            format!("{obj}\n")
        }
        LogFormat::Text => {
            // logrus text style, as runc writes it; Debug-quoting escapes quotes and newlines.
            format!("time={time:?} level={} msg={msg:?}\n", level.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn json_lines() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = format_line(LogFormat::Json, Level::Error, "bad \"thing\"\nhere", at);
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "error");
        assert_eq!(v["msg"], "ociguard: bad \"thing\"\nhere");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn text_lines() {
        let at = UNIX_EPOCH;
        let line = format_line(LogFormat::Text, Level::Warn, "a \"b\"", at);
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00.000000Z\" level=warning msg=\"ociguard: a \\\"b\\\"\"\n"
        );
    }

    #[test]
    fn messages_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let l = Logger::new(Some(path.clone()), LogFormat::Json, false);
        l.info(&"a".repeat(1 << 20));
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.len() < 17 * 1024 && text.contains("(1048576 bytes)"),
            "{}",
            text.len()
        );
    }

    #[test]
    fn stderr_has_no_prefix_of_its_own() {
        assert_eq!(
            stderr_line(Level::Error, "create c1: bad"),
            "create c1: bad\n"
        );
        assert_eq!(stderr_line(Level::Warn, "slow"), "warning: slow\n");
    }

    #[test]
    fn writes_to_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        let l = Logger::new(Some(path.clone()), LogFormat::Json, false);
        l.info("one");
        l.debug("hidden");
        l.error("two");
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.lines().last().unwrap().contains("\"level\":\"error\""));
    }
}
