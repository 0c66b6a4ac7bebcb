//! `ociguardd --events-syslog`: the event export's JSON lines as syslog messages.
//!
//! Each event's export line (the same JSON object as `--events-file` writes) is one RFC 3164
//! message, `<PRI>Mmm dd hh:mm:ss ociguardd[PID]: {...}`, sent as one datagram to the local
//! syslog socket (`/dev/log`, which journald and rsyslog serve) or to another datagram socket
//! path. Severity says what kind of event it is: warning for denials, anomalies, refusals and
//! lost events, notice for audited ones, info for lifecycle events.
//!
//! Same design as the file export ([`crate::export::follow`]): a subscriber of the hub on a
//! thread of its own, so a slow syslog daemon only makes this exporter fall behind (and be
//! dropped, and say so with an `export-lost` line), never the hub. A datagram that cannot be
//! sent within [`SEND_TIMEOUT`] (the daemon's queue is full) is dropped; a socket whose daemon
//! restarted is reconnected (at most once per [`RECONNECT_INTERVAL`]); failures are logged
//! once a minute.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

use crate::export::Out;
use crate::protocol::EventKind;

/// The local syslog socket.
pub const DEV_LOG: &str = "/dev/log";
/// Longest a send may wait for room in the syslog daemon's queue.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(1);
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Where and as what events go to syslog.
#[derive(Debug, Clone)]
pub struct Syslog {
    /// A datagram socket (`/dev/log`).
    pub socket: PathBuf,
    pub facility: Facility,
}

impl Default for Syslog {
    fn default() -> Self {
        Syslog {
            socket: PathBuf::from(DEV_LOG),
            facility: Facility::LOG_DAEMON,
        }
    }
}

/// `daemon`, `local0`..`local7`, `user`, ... (as syslog.conf names them).
pub fn parse_facility(s: &str) -> Result<Facility, String> {
    s.parse()
        .map_err(|()| format!("{s:?}: not a syslog facility (daemon, user, local0..local7, ...)"))
}

/// How urgent an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Warning,
    Notice,
    Info,
}

fn severity(kind: Option<EventKind>) -> Severity {
    match kind {
        None
        | Some(
            EventKind::EgressDenied
            | EventKind::BehaviorDenied
            | EventKind::BehaviorLost
            | EventKind::Anomaly
            | EventKind::Refused,
        ) => Severity::Warning,
        Some(EventKind::BehaviorAudit) => Severity::Notice,
        Some(
            EventKind::Registered
            | EventKind::Started
            | EventKind::Exited
            | EventKind::Reconciled
            | EventKind::Deregistered,
        ) => Severity::Info,
    }
}

type Conn = Logger<LoggerBackend, Formatter3164>;

/// The syslog destination of the export.
pub struct Sink {
    conf: Syslog,
    conn: Option<Conn>,
    tried: Instant,
    error_logged: Option<Instant>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("conf", &self.conf)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

fn connect(conf: &Syslog) -> io::Result<Conn> {
    let formatter = Formatter3164 {
        facility: conf.facility,
        hostname: None,
        process: "ociguardd".into(),
        pid: std::process::id(),
    };
    let conn = syslog::unix_custom(formatter, &conf.socket)
        .map_err(|e| io::Error::other(e.to_string()))?;
    match &conn.backend {
        LoggerBackend::Unix(s) => s.set_write_timeout(Some(SEND_TIMEOUT))?,
        // A stream socket (some syslog daemons): the same bound on a stalled peer.
        LoggerBackend::UnixStream(s) => s.get_ref().set_write_timeout(Some(SEND_TIMEOUT))?,
        _ => {}
    }
    Ok(conn)
}

impl Sink {
    /// Connect to `conf.socket` (at start: a socket that cannot be reached is an error).
    pub fn open(conf: Syslog) -> io::Result<Sink> {
        let conn = connect(&conf)?;
        Ok(Sink {
            conf,
            conn: Some(conn),
            tried: Instant::now(),
            error_logged: None,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.conf.socket
    }

    fn failed(&mut self, e: &dyn std::fmt::Display) {
        if self
            .error_logged
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL)
        {
            log::error!(
                "event export to syslog {}: {e}: events are not exported",
                self.conf.socket.display()
            );
            self.error_logged = Some(Instant::now());
        }
    }
}

impl Out for Sink {
    fn write(&mut self, kind: Option<EventKind>, line: &[u8]) {
        if self.conn.is_none() && self.tried.elapsed() >= RECONNECT_INTERVAL {
            self.tried = Instant::now();
            match connect(&self.conf) {
                Ok(c) => self.conn = Some(c),
                Err(e) => self.failed(&e),
            }
        }
        let Some(conn) = &mut self.conn else {
            return;
        };
        // serde_json writes UTF-8; a line is one message, without its newline.
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line));
        let text: &str = &text;
        let r = match severity(kind) {
            Severity::Warning => conn.warning(text),
            Severity::Notice => conn.notice(text),
            Severity::Info => conn.info(text),
        };
        if let Err(e) = r {
            let refused = matches!(&e, syslog::Error::Write(io) if matches!(
                io.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotConnected
            ));
            if refused {
                // The daemon restarted (its socket is a new one): connect again.
                self.conn = None;
            }
            self.failed(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Hub;
    use crate::record::Identity;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Arc;

    #[test]
    fn every_event_is_one_rfc3164_message_with_its_export_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let hub = Arc::new(Hub::new());
        let sink = Sink::open(Syslog {
            socket: path.clone(),
            facility: Facility::LOG_LOCAL3,
        })
        .unwrap();
        std::thread::spawn(crate::export::follow(sink, Arc::clone(&hub)));
        let rec = Identity {
            id: "c1".into(),
            bundle: "/b".into(),
            ..Default::default()
        };
        hub.publish(EventKind::Registered, &rec, None);
        hub.publish(
            EventKind::Refused,
            &rec,
            Some(r#"{"command":"create","error":"no"}"#.into()),
        );
        let mut buf = vec![0u8; 64 * 1024];
        let mut recv = || {
            let n = server.recv(&mut buf).unwrap();
            String::from_utf8(buf[..n].to_vec()).unwrap()
        };
        let pid = std::process::id();
        // local3 = 19: info 19*8+6 = 158, warning 19*8+4 = 156.
        for (pri, kind) in [("<158>", "registered"), ("<156>", "refused")] {
            let msg = recv();
            assert!(msg.starts_with(pri), "{msg}");
            let (head, json) = msg
                .split_once(&format!(" ociguardd[{pid}]: "))
                .unwrap_or_else(|| panic!("{msg}"));
            assert_eq!(head.len(), pri.len() + "Dec 07 08:13:06".len(), "{msg}");
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            assert_eq!(v["kind"], kind);
            assert_eq!(v["id"], "c1");
            assert!(!json.ends_with('\n'));
        }

        // The syslog daemon restarts (a new socket at the same path): messages flow again.
        drop(server);
        std::fs::remove_file(&path).unwrap();
        hub.publish(EventKind::Exited, &rec, None); // refused: the sink reconnects later
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            hub.publish(EventKind::Started, &rec, None);
            if let Ok(n) = server.recv(&mut buf) {
                break String::from_utf8_lossy(&buf[..n]).into_owned();
            }
            assert!(Instant::now() < deadline, "not reconnected");
        };
        assert!(got.contains(r#""kind":"started""#), "{got}");

        assert!(Sink::open(Syslog {
            socket: dir.path().join("absent"),
            ..Syslog::default()
        })
        .is_err());
        assert!(matches!(parse_facility("local0"), Ok(Facility::LOG_LOCAL0)));
        assert!(parse_facility("nope").is_err());
    }
}
