//! Writing to the engine's own log file (runc's `--log`, in its `--log-format`).
//!
//! crun discards a hook's stdout and stderr and reports a failed hook only as "error executing
//! hook ... (exit code: 1)". The reason must reach the operator where the engine looks for it:
//! containerd reads the runtime's `log.json` after a failed create. One line per message, O_APPEND
//! (crun appends to the same file; whole-line writes do not interleave).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

/// One log line in runc's format: JSON `{"level","msg","time"}` or logrus text.
pub fn format_line(json: bool, level: &str, msg: &str, at: SystemTime) -> String {
    let time = humantime::format_rfc3339_micros(at).to_string();
    if json {
        format!(
            "{}\n",
            serde_json::json!({"level": level, "msg": msg, "time": time})
        )
    } else {
        format!("time={time:?} level={level} msg={msg:?}\n")
    }
}

pub fn append(path: &Path, json: bool, level: &str, msg: &str) -> std::io::Result<()> {
    let line = format_line(json, level, msg, SystemTime::now());
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let at = SystemTime::UNIX_EPOCH;
        let j = format_line(true, "error", "a \"b\"", at);
        let v: serde_json::Value = serde_json::from_str(j.trim_end()).unwrap();
        assert_eq!(
            (v["level"].as_str(), v["msg"].as_str()),
            (Some("error"), Some("a \"b\""))
        );
        assert_eq!(
            format_line(false, "warning", "x", at),
            "time=\"1970-01-01T00:00:00.000000Z\" level=warning msg=\"x\"\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log.json");
        append(&p, true, "error", "one").unwrap();
        append(&p, true, "error", "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 2);
    }
}
