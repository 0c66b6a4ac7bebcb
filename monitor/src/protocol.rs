//! The monitor's wire protocol: newline-delimited JSON over a Unix stream socket.
//!
//! Each request is one JSON object on one line (at most [`MAX_REQUEST`] bytes including the
//! newline); each answer is one JSON object on one line. A connection may carry any number of
//! requests in turn. `events` with `follow` turns the connection into a stream of event lines.
//!
//! ```text
//! → {"op":"whoami"}
//! ← {"ok":true,"container":{"id":"web-1","bundle":"/run/...","status":"running",...}}
//! → {"op":"whois","pid":4242}
//! ← {"ok":true,"reason":"not a container"}
//! → {"op":"register","event":"created","identity":{...}}
//! ← {"ok":true,"durable":true,"seq":118}
//! ← {"ok":false,"error":"permission denied: uid 65534 may not register"}
//! ```
//!
//! Who may ask what is decided from the peer's kernel credentials (`SO_PEERCRED`), never from
//! anything in the request.

use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

use crate::record::{Exit, Identity, Status, Timestamp};

/// Largest request line accepted, newline included.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Largest answer line a client accepts (a `list` of 10,000 containers is a few MiB).
pub const MAX_RESPONSE: usize = 256 * 1024 * 1024;

/// A lifecycle report from `ociguard-hook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// `createRuntime`: the container exists, its process has not run user code.
    Created,
    /// `poststart`
    Started,
    /// `poststop`
    Exited,
}

impl Lifecycle {
    pub fn status(self) -> Status {
        match self {
            Lifecycle::Created => Status::Created,
            Lifecycle::Started => Status::Running,
            Lifecycle::Exited => Status::Exited,
        }
    }
}

// One request lives per connection at a time; see journal::Entry for why it is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Anyone: is the monitor serving?
    Ping,
    /// Admin: record a lifecycle event; answered only once the record is durable.
    Register {
        event: Lifecycle,
        identity: Identity,
    },
    /// Admin: forget a container (all incarnations with that id, or the one with `bundle`).
    Deregister {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bundle: Option<String>,
    },
    /// Anyone: the container of the calling process, from its kernel credentials.
    Whoami,
    /// Admin: the container of any host pid.
    Whois { pid: u32 },
    /// Admin: every record.
    List,
    /// Admin: the records with this id (or the one with `bundle`).
    Inspect {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bundle: Option<String>,
    },
    /// Admin: recent events, then (with `follow`) new ones as they happen.
    Events {
        #[serde(default)]
        follow: bool,
    },
    /// Admin: the behaviour profiles whose subject `select` names (image name or digest,
    /// `NAMESPACE/SERVICEACCOUNT`, identity, profile id or a prefix of it); all without it.
    Profiles {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        select: Option<String>,
    },
    /// containerd's answer to "which image does this container (or image name) use?", from the
    /// monitor's warm connection (see [`crate::containerd`]).
    ImageOf {
        namespace: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<String>,
    },
}

impl Request {
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Register { .. } => "register",
            Request::Deregister { .. } => "deregister",
            Request::Whoami => "whoami",
            Request::Whois { .. } => "whois",
            Request::List => "list",
            Request::Inspect { .. } => "inspect",
            Request::Events { .. } => "events",
            Request::ImageOf { .. } => "image_of",
            Request::Profiles { .. } => "profiles",
        }
    }
}

/// One answer line. Fields that do not apply are absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `register`: the record is on disk (fsync'd) and will survive a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durable: Option<bool>,
    /// `register`/`deregister`: the journal sequence number of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// `whoami`/`whois`: the container; absent means "not a container" (see `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Identity>,
    /// `list`/`inspect`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<Identity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `events`: one per line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageRef>,
    /// `inspect`: what the monitor observes of each of `containers` now (same order); not
    /// journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Vec<Live>>,
    /// `profiles`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<Vec<ociguard_policy::profile::Profile>>,
    /// `profiles`: profile files set aside at start because they did not decode (file: why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<Vec<String>>,
}

/// `image_of`: a container's image, its name and the digest of its manifest (or index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    pub name: String,
    pub target: String,
}

/// Live observations of one container (`inspect`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// Packets its egress ruleset denied since the monitor began watching its network
    /// namespace; absent when it is not watched (no ruleset, exited, denial events off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_denied: Option<u64>,
}

impl Response {
    pub fn ok() -> Response {
        Response {
            ok: true,
            ..Default::default()
        }
    }
    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Default::default()
        }
    }
    /// One line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Plain structs of strings and numbers always serialise; the fallback is still valid JSON.
        let mut v = serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"ok":false,"error":"internal: encode"}"#.to_vec());
        v.push(b'\n');
        v
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Registered,
    Started,
    Exited,
    Reconciled,
    Deregistered,
    /// The container's egress ruleset denied a packet (NFLOG); `detail` names it. Kept in
    /// memory only, like every event, and rate-limited (see `nflog`).
    #[serde(rename = "egress-denied")]
    EgressDenied,
    /// The guard refused (or killed) an exec or a secret read under `[behavior]`; `detail` is
    /// a JSON object (rule, action, pid, exe, argv, parent, image, policy, count).
    #[serde(rename = "behavior-denied")]
    BehaviorDenied,
    /// What the guard would have refused under an `audit` policy; the operation went ahead.
    #[serde(rename = "behavior-audit")]
    BehaviorAudit,
    /// The BPF enforcer's ring buffer was full: `detail` says how many events were lost (the
    /// operations were still held). Not about one container: `id` is empty.
    #[serde(rename = "behavior-lost")]
    BehaviorLost,
    /// Under `[profile] on_anomaly`: the container did something its learned profile does not
    /// have (`detail.kind` exec, secret, egress), or has no profile to compare with
    /// (`no-profile`, once per container), or no image to tie one to (`no-image`).
    Anomaly,
    /// `ociguard create` (or `run`, `restore`) refused a container: a `refused` record of the
    /// decision log, which ociguardd follows. `detail` is a JSON object (command, policy, error
    /// excerpt); `bundle` is the container's, and it has no record (it never started).
    Refused,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Registered => "registered",
            EventKind::Started => "started",
            EventKind::Exited => "exited",
            EventKind::Reconciled => "reconciled",
            EventKind::Deregistered => "deregistered",
            EventKind::EgressDenied => "egress-denied",
            EventKind::BehaviorDenied => "behavior-denied",
            EventKind::BehaviorAudit => "behavior-audit",
            EventKind::BehaviorLost => "behavior-lost",
            EventKind::Anomaly => "anomaly",
            EventKind::Refused => "refused",
        }
    }
}

/// Something that happened to a container record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic within one monitor run.
    pub seq: u64,
    pub time: Timestamp,
    pub kind: EventKind,
    pub id: String,
    pub bundle: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<Exit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("line longer than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("connection closed in the middle of a line")]
    Truncated,
    #[error("read: {0}")]
    Io(#[from] io::Error),
}

/// Read one newline-terminated line of at most `limit` bytes (newline included) and return it
/// without the newline; `None` on a clean end of stream. Never buffers more than `limit` bytes,
/// so an endless line costs the reader nothing but time (bounded by the socket's timeout).
pub fn read_frame(r: &mut impl BufRead, limit: usize) -> Result<Option<Vec<u8>>, FrameError> {
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if buf.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if line.len() + chunk.len() + usize::from(done.is_some()) > limit {
            return Err(FrameError::TooLarge { limit });
        }
        line.extend_from_slice(chunk);
        match done {
            Some(n) => {
                r.consume(n);
                return Ok(Some(line));
            }
            None => {
                let n = chunk.len();
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    #[test]
    fn frames() {
        let data = b"{\"op\":\"ping\"}\nsecond\npartial";
        let mut r = BufReader::with_capacity(4, &data[..]);
        assert_eq!(
            read_frame(&mut r, 64).unwrap().unwrap(),
            b"{\"op\":\"ping\"}"
        );
        assert_eq!(read_frame(&mut r, 64).unwrap().unwrap(), b"second");
        assert!(matches!(read_frame(&mut r, 64), Err(FrameError::Truncated)));
        let mut r = BufReader::new(&b""[..]);
        assert!(read_frame(&mut r, 64).unwrap().is_none());
        let big = [b'x'; 100];
        let mut r = BufReader::new(&big[..]);
        assert!(matches!(
            read_frame(&mut r, 64),
            Err(FrameError::TooLarge { limit: 64 })
        ));
        // exactly at the limit, newline included
        let mut exact = vec![b'y'; 63];
        exact.push(b'\n');
        let mut r = BufReader::new(&exact[..]);
        assert_eq!(read_frame(&mut r, 64).unwrap().unwrap().len(), 63);
    }

    #[test]
    fn request_json() {
        let r: Request = serde_json::from_str(r#"{"op":"whois","pid":12}"#).unwrap();
        assert_eq!(r, Request::Whois { pid: 12 });
        let r: Request = serde_json::from_str(r#"{"op":"events"}"#).unwrap();
        assert_eq!(r, Request::Events { follow: false });
        assert!(serde_json::from_str::<Request>(r#"{"op":"format-disk"}"#).is_err());
        assert_eq!(
            String::from_utf8(Response::error("x").to_line()).unwrap(),
            "{\"ok\":false,\"error\":\"x\"}\n"
        );
    }
}
