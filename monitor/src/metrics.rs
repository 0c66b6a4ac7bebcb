//! `ociguardd --metrics-address`: `GET /metrics` in the Prometheus text format.
//!
//! Nothing is kept for the scrape: the containers are counted from the store when it asks,
//! and the counters are the ones the monitor keeps anyway ([`crate::stats`]); the
//! `prometheus-client` crate only encodes them (a [`Collector`] read at each scrape). A scrape
//! takes the store's read lock for one pass over the records and the counters' lock for a
//! copy, never the hub's: publishing an event waits at most for that copy (a few dozen series).
//!
//! The HTTP side is a few lines over a std listener (TCP, or a Unix socket for a scraper on
//! the node): one connection at a time, the request head read up to [`MAX_REQUEST`] bytes
//! within [`IO_TIMEOUT`], one answer, then the connection is closed. tiny_http would read a
//! header line of any length and start a thread per connection; hyper (in the lockfile
//! through tonic) would need its server features and an async runtime for one path. A slow
//! or hostile peer costs the metrics endpoint at most a few seconds, and nothing else.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::events::Hub;
use crate::stats::{Count, Fsync, Overflow};
use crate::store::Store;

/// Largest request head read (request line and headers); a scraper sends a few hundred bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Time a peer has to send its request, and to take the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    /// A Unix socket (an absolute path), mode 0660.
    Unix(PathBuf),
}

impl Address {
    /// `HOST:PORT` (`127.0.0.1:9464`, `[::1]:9464`, `localhost:9464`) or an absolute path.
    pub fn parse(s: &str) -> Result<Address, String> {
        if s.starts_with('/') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        s.to_socket_addrs()
            .map_err(|e| format!("{s:?}: expected HOST:PORT or an absolute socket path ({e})"))?
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| format!("{s:?}: resolves to no address"))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The metrics of one monitor, rendered at each scrape.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(store: Arc<RwLock<Store>>, hub: Arc<Hub>) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape { store, hub }));
        Metrics { registry }
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String fails only if a metric's encoding does, which ours cannot.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            log::error!("metrics: encode: {e}");
        }
        out
    }
}

#[derive(Debug)]
struct Scrape {
    store: Arc<RwLock<Store>>,
    hub: Arc<Hub>,
}

/// One family: its descriptor, then each `(labels, value)` series.
fn family<L, V>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
    metric: impl Fn(V) -> Box<dyn EncodeMetric>,
    metric_type: MetricType,
) -> Result<(), fmt::Error>
where
    L: prometheus_client::encoding::EncodeLabelSet,
{
    let mut m = enc.encode_descriptor(name, help, None, metric_type)?;
    for (labels, v) in series {
        metric(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(v: u64) -> Box<dyn EncodeMetric> {
    Box::new(ConstCounter::new(v))
}

fn gauge(v: i64) -> Box<dyn EncodeMetric> {
    Box::new(ConstGauge::new(v))
}

type Labels = Vec<(&'static str, String)>;
/// A counter family: name, help, series.
type CounterFamily = (&'static str, &'static str, Vec<(Labels, u64)>);

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        // Counted under the read lock, encoded after it.
        let mut containers: HashMap<(String, &'static str), i64> = HashMap::new();
        {
            let store = self.store.read().unwrap_or_else(|p| p.into_inner());
            for r in store.iter() {
                let policy = r.policy.as_ref().map_or("", |p| &p.name);
                *containers
                    .entry((policy.to_owned(), r.status.as_str()))
                    .or_default() += 1;
            }
        }
        let mut containers: Vec<_> = containers.into_iter().collect();
        containers.sort();
        family(
            &mut enc,
            "ociguard_containers",
            "Containers the monitor has a record of, by policy and state (exited ones are kept \
             for --retain-exited)",
            containers
                .into_iter()
                .map(|((policy, state), n)| -> (Labels, i64) {
                    (vec![("policy", policy), ("state", state.to_owned())], n)
                }),
            gauge,
            MetricType::Gauge,
        )?;

        let counts = self.hub.counters().snapshot();
        let of = |pick: &dyn Fn(&Count) -> Option<Labels>| -> Vec<(Labels, u64)> {
            counts
                .iter()
                .filter_map(|(c, n)| pick(c).map(|l| (l, *n)))
                .collect()
        };
        let families: [CounterFamily; 8] = [
            (
                "ociguard_decisions",
                "Decisions of ociguard create/run/restore read from the decision log, by result \
                 (applied, unchanged, audit-error, refused) and policy",
                of(&|c| match c {
                    Count::Decision { result, policy } => Some(vec![
                        ("result", result.as_str().to_owned()),
                        ("policy", policy.to_string()),
                    ]),
                    _ => None,
                }),
            ),
            (
                "ociguard_decision_log_skipped",
                "Decision log lines not counted, by reason (malformed, too-long)",
                of(&|c| match c {
                    Count::DecisionSkipped(why) => Some(vec![("reason", why.as_str().to_owned())]),
                    _ => None,
                }),
            ),
            (
                "ociguard_events",
                "Events the monitor published (ociguardctl events, the event export), by kind",
                of(&|c| match c {
                    Count::Event(kind) => Some(vec![("kind", kind.as_str().to_owned())]),
                    _ => None,
                }),
            ),
            (
                "ociguard_egress_denied",
                "Packets the egress rulesets of containers denied, by policy (all of them: \
                 egress-denied events are rate-limited)",
                of(&|c| match c {
                    Count::EgressDenied { policy } => Some(vec![("policy", policy.to_string())]),
                    _ => None,
                }),
            ),
            (
                "ociguard_behavior_denied",
                "Operations [behavior] rules held, by policy, rule and action (deny, kill; audit: \
                 allowed, would have been held); all of them: events are rate-limited",
                of(&|c| match c {
                    Count::Behavior {
                        policy,
                        rule,
                        action,
                    } => Some(vec![
                        ("policy", policy.to_string()),
                        ("rule", (*rule).to_owned()),
                        ("action", (*action).to_owned()),
                    ]),
                    _ => None,
                }),
            ),
            (
                "ociguard_anomalies",
                "Anomalies against learned profiles, by policy and kind",
                of(&|c| match c {
                    Count::Anomaly { policy, kind } => Some(vec![
                        ("policy", policy.to_string()),
                        ("kind", kind.to_string()),
                    ]),
                    _ => None,
                }),
            ),
            (
                "ociguard_bpf_events_lost",
                "Events of the BPF enforcer lost because its ring buffer was full (the \
                 operations were still held)",
                vec![(Vec::new(), self.hub.counters().get(&Count::BpfLost))],
            ),
            (
                "ociguard_event_overflows",
                "Times a queue overflowed and events were lost, by source (follower: a \
                 subscriber of the hub was dropped; export: the event export fell behind; \
                 nflog: a container's NFLOG socket; exit-events: the kernel's exit events)",
                [
                    Overflow::Follower,
                    Overflow::Export,
                    Overflow::Nflog,
                    Overflow::ExitEvents,
                ]
                .into_iter()
                .map(|o| {
                    (
                        vec![("source", o.as_str().to_owned())],
                        self.hub.counters().get(&Count::Overflow(o)),
                    )
                })
                .collect(),
            ),
        ];
        for (name, help, series) in families {
            family(&mut enc, name, help, series, counter, MetricType::Counter)?;
        }
        family(
            &mut enc,
            "ociguard_metric_series_dropped",
            "Counts not kept because the monitor already keeps the most series it will",
            [(Labels::new(), self.hub.counters().get(&Count::SeriesLimit))],
            counter,
            MetricType::Counter,
        )?;

        let mut m = enc.encode_descriptor(
            "ociguard_journal_fsync_seconds",
            "Latency of the journal's flushes, by operation (append: before a registration is \
             acknowledged; reserve: its zero-filled space; compact: compaction)",
            None,
            MetricType::Histogram,
        )?;
        for op in Fsync::ALL {
            let h = self.hub.counters().fsync(op).snapshot();
            let labels: Labels = vec![("op", op.as_str().to_owned())];
            m.encode_family(&labels)?
                .encode_histogram::<Labels>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }
}

/// A bound endpoint.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// The address it is bound to (a TCP port 0 resolved).
    pub fn address(&self) -> io::Result<Address> {
        match self {
            Listener::Tcp(l) => Ok(Address::Tcp(l.local_addr()?)),
            Listener::Unix(l) => l
                .local_addr()?
                .as_pathname()
                .map(|p| Address::Unix(p.to_owned()))
                .ok_or_else(|| io::Error::other("unnamed socket")),
        }
    }
}

/// Bind `addr`. A Unix socket file left by a previous run (nobody answers on it) is replaced;
/// one that is served, or a file that is not a socket, is an error.
pub fn bind(addr: &Address) -> io::Result<Listener> {
    match addr {
        Address::Tcp(a) => TcpListener::bind(a).map(Listener::Tcp),
        Address::Unix(path) => {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => {
                    if UnixStream::connect(path).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another process serves this socket",
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "exists and is not a socket",
                    ))
                }
                Err(_) => {}
            }
            let l = UnixListener::bind(path)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
            Ok(Listener::Unix(l))
        }
    }
}

/// Serve `/metrics` on `listener` forever, one connection at a time.
pub fn serve(listener: Listener, metrics: Metrics) {
    loop {
        let r = match &listener {
            Listener::Tcp(l) => l.accept().and_then(|(s, _)| {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(answer(s, &metrics))
            }),
            Listener::Unix(l) => l.accept().and_then(|(s, _)| {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(answer(s, &metrics))
            }),
        };
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("metrics: a scrape failed: {e}"),
            Err(e) => {
                log::warn!("metrics: accept: {e}");
                // EMFILE and the like: do not spin.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Ask {
    Metrics { head_only: bool },
    NotFound,
    BadMethod,
    Bad,
    TooLarge,
}

/// Read a request head (bounded in size and time) and say what it asks.
fn read_request(conn: &mut impl Read) -> io::Result<Ask> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let end = loop {
        if let Some(i) = find_head_end(&buf[..len]) {
            break i;
        }
        if len == MAX_REQUEST {
            return Ok(Ask::TooLarge);
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "request too slow"));
        }
        match conn.read(&mut buf[len..]) {
            Ok(0) => return Ok(Ask::Bad),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Ask::Bad);
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(Ask::Bad);
    }
    let path = target.split('?').next().unwrap_or("");
    Ok(match (method, path) {
        ("GET" | "HEAD", "/metrics") => Ask::Metrics {
            head_only: method == "HEAD",
        },
        ("GET" | "HEAD", _) => Ask::NotFound,
        _ => Ask::BadMethod,
    })
}

/// The end of the request head (`\r\n\r\n`, or a bare `\n\n`).
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| b.windows(2).position(|w| w == b"\n\n"))
}

fn answer(mut conn: impl Read + Write, metrics: &Metrics) -> io::Result<()> {
    let ask = read_request(&mut conn)?;
    let (status, extra, body) = match ask {
        Ask::Metrics { head_only } => {
            let text = metrics.render();
            let body = if head_only { String::new() } else { text };
            ("200 OK", format!("Content-Type: {CONTENT_TYPE}\r\n"), body)
        }
        Ask::NotFound => (
            "404 Not Found",
            String::new(),
            "not found: try /metrics\n".into(),
        ),
        Ask::BadMethod => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n".to_owned(),
            "only GET\n".into(),
        ),
        Ask::TooLarge => (
            "431 Request Header Fields Too Large",
            String::new(),
            "request too large\n".into(),
        ),
        Ask::Bad => ("400 Bad Request", String::new(), "bad request\n".into()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// Fetch `path` from a metrics endpoint (tests, the benchmark): `(status line, body)`.
pub fn get(addr: &Address, path: &str) -> io::Result<(String, String)> {
    fn exchange(mut s: impl Read + Write, path: &str) -> io::Result<(String, String)> {
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: ociguardd\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| io::Error::other("no end of head"))?;
        let status = head.lines().next().unwrap_or("").to_owned();
        Ok((status, body.to_owned()))
    }
    match addr {
        Address::Tcp(a) => {
            let s = std::net::TcpStream::connect_timeout(a, IO_TIMEOUT)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            exchange(s, path)
        }
        Address::Unix(p) => {
            let s = UnixStream::connect(p)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            exchange(s, path)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::EventKind;
    use crate::record::{Identity, PolicyRef, Status};
    use crate::stats::DecisionResult;

    fn rec(id: &str, policy: &str, status: Status) -> Identity {
        Identity {
            id: id.into(),
            bundle: format!("/b/{id}"),
            status,
            policy: Some(PolicyRef {
                name: policy.into(),
                digest: None,
                mode: None,
            }),
            ..Default::default()
        }
    }

    fn world() -> (Arc<RwLock<Store>>, Arc<Hub>) {
        let mut store = Store::new(None);
        for (id, policy, status) in [
            ("a", "web", Status::Running),
            ("b", "web", Status::Running),
            ("c", "web", Status::Exited),
            ("d", "db \"x\"", Status::Created),
        ] {
            store.apply(crate::journal::Entry::Put(rec(id, policy, status)));
        }
        (Arc::new(RwLock::new(store)), Arc::new(Hub::new()))
    }

    #[test]
    fn the_text_has_every_series_after_synthetic_events() {
        let (store, hub) = world();
        let c = hub.counters();
        c.inc(Count::Decision {
            result: DecisionResult::Refused,
            policy: "web".into(),
        });
        c.add(
            Count::EgressDenied {
                policy: "web".into(),
            },
            7,
        );
        c.inc(Count::Behavior {
            policy: "web".into(),
            rule: "shell",
            action: "kill",
        });
        c.add(Count::BpfLost, 3);
        c.fsync(Fsync::Append).observe(Duration::from_micros(300));
        hub.publish(EventKind::Anomaly, &rec("a", "web", Status::Running), None);
        let text = Metrics::new(store, Arc::clone(&hub)).render();
        for want in [
            "# HELP ociguard_containers Containers",
            "# TYPE ociguard_containers gauge",
            r#"ociguard_containers{policy="web",state="running"} 2"#,
            r#"ociguard_containers{policy="web",state="exited"} 1"#,
            r#"ociguard_containers{policy="db \"x\"",state="created"} 1"#,
            "# TYPE ociguard_decisions_total counter",
            r#"ociguard_decisions_total{result="refused",policy="web"} 1"#,
            r#"ociguard_egress_denied_total{policy="web"} 7"#,
            r#"ociguard_behavior_denied_total{policy="web",rule="shell",action="kill"} 1"#,
            r#"ociguard_events_total{kind="anomaly"} 1"#,
            "ociguard_bpf_events_lost_total 3",
            r#"ociguard_event_overflows_total{source="export"} 0"#,
            "# TYPE ociguard_journal_fsync_seconds histogram",
            r#"ociguard_journal_fsync_seconds_bucket{op="append",le="0.00025"} 0"#,
            r#"ociguard_journal_fsync_seconds_bucket{op="append",le="0.0005"} 1"#,
            r#"ociguard_journal_fsync_seconds_bucket{op="append",le="+Inf"} 1"#,
            r#"ociguard_journal_fsync_seconds_count{op="append"} 1"#,
            r#"ociguard_journal_fsync_seconds_count{op="compact"} 0"#,
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn serves_metrics_and_nothing_else_with_bounded_requests() {
        let (store, hub) = world();
        let l = bind(&Address::Tcp("127.0.0.1:0".parse().unwrap())).unwrap();
        let addr = l.address().unwrap();
        std::thread::spawn(move || serve(l, Metrics::new(store, hub)));
        let (status, body) = get(&addr, "/metrics").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("ociguard_containers{"), "{body}");
        let (status, _) = get(&addr, "/").unwrap();
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _) = get(&addr, "/metrics/../x").unwrap();
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        // A head that never ends: answered once it passes the limit, not read further.
        let Address::Tcp(a) = addr else {
            unreachable!()
        };
        let mut s = std::net::TcpStream::connect(a).unwrap();
        let _ = s.write_all(
            format!("GET /metrics HTTP/1.1\r\nX: {}", "y".repeat(MAX_REQUEST)).as_bytes(),
        );
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        let mut s = std::net::TcpStream::connect(a).unwrap();
        s.write_all(b"POST /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 405"), "{text}");
        // Still serving.
        assert_eq!(get(&addr, "/metrics").unwrap().0, "HTTP/1.1 200 OK");
    }

    #[test]
    fn serves_on_a_unix_socket_and_replaces_a_stale_one() {
        let (store, hub) = world();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.sock");
        drop(UnixListener::bind(&path).unwrap()); // a previous run's
        let addr = Address::parse(path.to_str().unwrap()).unwrap();
        let l = bind(&addr).unwrap();
        std::thread::spawn(move || serve(l, Metrics::new(store, hub)));
        assert!(bind(&addr).is_err(), "served: not taken over");
        let (status, body) = get(&addr, "/metrics").unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(body.contains("ociguard_decisions"), "{body}");
        assert!(Address::parse("not an address").is_err());
        assert_eq!(
            Address::parse("127.0.0.1:9464").unwrap(),
            Address::Tcp("127.0.0.1:9464".parse().unwrap())
        );
    }
}
