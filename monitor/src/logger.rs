//! ociguardd's log: one line per message on stderr, `time level message`, for journald or a
//! file. The daemon's stdout is unused.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

#[derive(Debug)]
struct Stderr {
    level: LevelFilter,
}

impl Log for Stderr {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= self.level
    }
    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        let line = format!(
            "{} ociguardd {level}: {}\n",
            humantime::format_rfc3339_millis(SystemTime::now()),
            r.args()
        );
        // Nothing sensible to do if stderr is gone.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
    fn flush(&self) {}
}

/// Install the stderr logger (once per process; later calls only change nothing).
pub fn init(level: LevelFilter) {
    // Leaked once per process: the logger lives as long as the process does.
    if log::set_logger(Box::leak(Box::new(Stderr { level }))).is_ok() {
        log::set_max_level(level);
    }
}
