//! `ociguardctl ps | inspect | whois | events | deregister`: ask ociguardd about container
//! identities. Each is one request on the monitor's socket (root-only by default).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Subcommand;
use ociguard_monitor::protocol::{Event, EventKind, Request, Response};
use ociguard_monitor::record::{Identity, Status};
use ociguard_monitor::Client;
use ociguard_policy::RuntimeConfig;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args, Debug)]
pub struct Conn {
    /// The monitor's socket (default: `monitor_socket` of the ociguard config).
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Containers the monitor knows: created, running and (recently) exited.
    Ps {
        #[command(flatten)]
        conn: Conn,
        /// One JSON array of identity records.
        #[arg(long)]
        json: bool,
        /// Leave out exited containers.
        #[arg(long)]
        running: bool,
    },
    /// A container's full identity record, as JSON.
    Inspect {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// Pick one of several containers with this id.
        #[arg(long)]
        bundle: Option<String>,
    },
    /// Which container a host pid belongs to (exit 1: not a container).
    Whois {
        #[command(flatten)]
        conn: Conn,
        pid: u32,
        #[arg(long)]
        json: bool,
    },
    /// Which container the caller itself is in (any user may ask; exit 1: not a container).
    Whoami {
        #[command(flatten)]
        conn: Conn,
        #[arg(long)]
        json: bool,
    },
    /// Events: registered, started, exited, reconciled, deregistered, egress-denied,
    /// behavior-denied, behavior-audit, behavior-lost, anomaly.
    Events {
        #[command(flatten)]
        conn: Conn,
        /// Keep printing new events as they happen.
        #[arg(long, short)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Forget a container's record (all with this id, or the one with --bundle).
    Deregister {
        #[command(flatten)]
        conn: Conn,
        id: String,
        #[arg(long)]
        bundle: Option<String>,
    },
}

/// The monitor's socket: `given`, else `monitor_socket` of the ociguard config.
pub fn socket(given: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    Ok(match given {
        Some(s) => s.to_owned(),
        None => RuntimeConfig::load(&RuntimeConfig::path_from_env())?.monitor_socket,
    })
}

fn connect(conn: &Conn) -> anyhow::Result<Client> {
    Ok(Client::connect(&socket(conn.socket.as_deref())?, TIMEOUT)?)
}

/// A `whoami`/`whois` answer: the container, or why there is none (exit status 1).
fn print_identity(
    out: &mut impl Write,
    resp: &Response,
    json: bool,
    prefix: &str,
) -> anyhow::Result<ExitCode> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(resp)?)?;
    } else {
        match &resp.container {
            Some(c) => writeln!(out, "{prefix}{}", describe(c))?,
            None => writeln!(
                out,
                "{prefix}{}",
                resp.reason.as_deref().unwrap_or("not a container")
            )?,
        }
    }
    Ok(if resp.container.is_none() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn ask(conn: &Conn, req: &Request) -> anyhow::Result<Response> {
    let resp = connect(conn)?.request(req)?;
    if !resp.ok {
        bail!(
            "{}: {}",
            req.name(),
            resp.error.as_deref().unwrap_or("refused")
        );
    }
    Ok(resp)
}

pub fn run(cmd: &Cmd) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match cmd {
        Cmd::Ps {
            conn,
            json,
            running,
        } => {
            let mut list = ask(conn, &Request::List)?.containers.unwrap_or_default();
            if *running {
                list.retain(Identity::is_active);
            }
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&list)?)?;
            } else {
                out.write_all(table(&list).as_bytes())?;
            }
        }
        Cmd::Inspect { conn, id, bundle } => {
            let resp = ask(
                conn,
                &Request::Inspect {
                    id: id.clone(),
                    bundle: bundle.clone(),
                },
            )?;
            let found = inspected(resp)?;
            let text = match found.as_slice() {
                [one] => serde_json::to_string_pretty(one)?,
                many => serde_json::to_string_pretty(many)?,
            };
            writeln!(out, "{text}")?;
        }
        Cmd::Whoami { conn, json } => {
            let resp = ask(conn, &Request::Whoami)?;
            return print_identity(&mut out, &resp, *json, "");
        }
        Cmd::Whois { conn, pid, json } => {
            let resp = ask(conn, &Request::Whois { pid: *pid })?;
            return print_identity(&mut out, &resp, *json, &format!("pid {pid}: "));
        }
        Cmd::Events { conn, follow, json } => {
            let mut client = connect(conn)?;
            if *follow {
                client.set_read_timeout(None)?;
            }
            client.send(&Request::Events { follow: *follow })?;
            while let Some(resp) = client.receive().context("events")? {
                if !resp.ok {
                    bail!("events: {}", resp.error.as_deref().unwrap_or("refused"));
                }
                let Some(e) = resp.event else { continue };
                if *json {
                    writeln!(out, "{}", serde_json::to_string(&e)?)?;
                } else {
                    writeln!(out, "{}", event_line(&e))?;
                }
                out.flush()?;
            }
        }
        Cmd::Deregister { conn, id, bundle } => {
            ask(
                conn,
                &Request::Deregister {
                    id: id.clone(),
                    bundle: bundle.clone(),
                },
            )?;
            writeln!(out, "deregistered {id}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `inspect`'s records, each with what the monitor observes of it now under `"live"` (the
/// journaled record is everything else).
fn inspected(resp: Response) -> anyhow::Result<Vec<serde_json::Value>> {
    let found = resp.containers.unwrap_or_default();
    let mut live = resp.live.unwrap_or_default().into_iter();
    found
        .iter()
        .map(|rec| {
            let mut v = serde_json::to_value(rec)?;
            if let (Some(obj), Some(l)) = (v.as_object_mut(), live.next()) {
                obj.insert("live".to_owned(), serde_json::to_value(l)?);
            }
            Ok(v)
        })
        .collect()
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) => format!("{alg}:{}", &hex[..hex.len().min(12)]),
        None => d.chars().take(19).collect(),
    }
}

fn exit_text(c: &Identity) -> String {
    match (c.status, &c.exit) {
        (Status::Exited, Some(e)) => e.to_string(),
        (Status::Exited, None) => "unknown".to_owned(),
        _ => "-".to_owned(),
    }
}

/// One line about a container, for `whois`.
pub fn describe(c: &Identity) -> String {
    let mut s = format!("container {} ({}", c.id, c.status.as_str());
    if let Some(e) = &c.engine {
        s.push_str(&format!(", {e}"));
    }
    s.push(')');
    if let Some(i) = &c.image.name {
        s.push_str(&format!(" image {i}"));
    }
    if let Some(p) = &c.policy {
        s.push_str(&format!(" policy {}", p.name));
        if let Some(d) = &p.digest {
            s.push_str(&format!(" {d}"));
        }
    }
    if let Some(k) = &c.kubernetes {
        let ns = k.namespace.as_deref().unwrap_or("?");
        let pod = k.pod.as_deref().unwrap_or("?");
        s.push_str(&format!(" pod {ns}/{pod}"));
        if let Some(sa) = &k.service_account {
            s.push_str(&format!(" serviceaccount {sa}"));
        }
    }
    if let Some(pid) = c.pid {
        s.push_str(&format!(" init pid {pid}"));
    }
    s
}

/// The `ps` table.
pub fn table(list: &[Identity]) -> String {
    let header = [
        "ID", "STATUS", "PID", "IMAGE", "POLICY", "DIGEST", "CREATED", "EXIT",
    ];
    let rows: Vec<[String; 8]> = list
        .iter()
        .map(|c| {
            [
                c.id.clone(),
                c.status.as_str().to_owned(),
                c.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
                c.image.name.as_deref().unwrap_or("-").to_owned(),
                c.policy
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| p.name.to_string()),
                c.policy
                    .as_ref()
                    .and_then(|p| p.digest.as_deref())
                    .map_or_else(|| "-".to_owned(), short_digest),
                c.created.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                exit_text(c),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut s = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        s.push_str(parts.join("  ").trim_end());
        s.push('\n');
    };
    line(&mut header.iter().copied());
    for r in &rows {
        line(&mut r.iter().map(String::as_str));
    }
    s
}

fn event_line(e: &Event) -> String {
    // 13: the longest kind, "egress-denied".
    let mut s = format!("{} {:<13} {}", e.time, e.kind.as_str(), e.id);
    if let Some(pid) = e.pid {
        s.push_str(&format!(" pid={pid}"));
    }
    // A refused container never ran: it has no status.
    if e.kind != EventKind::Refused {
        s.push_str(&format!(" status={}", e.status.as_str()));
    }
    if let Some(x) = &e.exit {
        s.push_str(&format!(" exit={x}"));
    }
    if let Some(d) = &e.detail {
        s.push_str(&format!(" ({d})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ociguard_monitor::protocol::Live;
    use ociguard_monitor::record::{Exit, ExitSource, PolicyRef, Timestamp};

    #[test]
    fn event_lines() {
        let mut e = Event {
            seq: 7,
            time: Timestamp(1_700_000_000_123),
            kind: EventKind::EgressDenied,
            id: "web-1".into(),
            bundle: "/b".into(),
            pid: Some(42),
            status: Status::Running,
            exit: None,
            detail: Some("tcp 198.18.1.2:4444 uid 0".into()),
        };
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20.123Z egress-denied web-1 pid=42 status=running (tcp 198.18.1.2:4444 uid 0)"
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "egress-denied");
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), e);
        e.kind = EventKind::Started;
        e.detail = None;
        assert_eq!(
            event_line(&e),
            "2023-11-14T22:13:20.123Z started       web-1 pid=42 status=running"
        );
        e.kind = EventKind::Refused;
        e.pid = None;
        e.detail = Some(r#"{"command":"create","error":"no policy"}"#.into());
        assert_eq!(
            event_line(&e),
            r#"2023-11-14T22:13:20.123Z refused       web-1 ({"command":"create","error":"no policy"})"#
        );
    }

    #[test]
    fn ps_table() {
        let c = Identity {
            id: "web-1".into(),
            bundle: "/b".into(),
            status: Status::Exited,
            pid: Some(42),
            policy: Some(PolicyRef {
                name: "strict".into(),
                digest: Some(format!("sha256:{}", "ab".repeat(32)).into()),
                mode: None,
            }),
            exit: Some(Exit::from_wait_status(9, ExitSource::Kernel)),
            ..Default::default()
        };
        let t = table(&[c]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(
            lines[0].starts_with("ID     STATUS  PID  IMAGE  POLICY"),
            "{t}"
        );
        assert!(lines[1].contains("exited"), "{t}");
        assert!(lines[1].contains("sha256:abababababab "), "{t}");
        assert!(lines[1].ends_with("signal 9"), "{t}");
    }

    #[test]
    fn inspect_adds_live_counts_to_each_record() {
        let rec = |id: &str| Identity {
            id: id.into(),
            bundle: "/b".into(),
            status: Status::Running,
            ..Default::default()
        };
        let resp = Response {
            ok: true,
            containers: Some(vec![rec("a"), rec("b")]),
            live: Some(vec![
                Live {
                    egress_denied: Some(31),
                },
                Live::default(),
            ]),
            ..Default::default()
        };
        let v = inspected(resp).unwrap();
        assert_eq!(v[0]["id"], "a");
        assert_eq!(v[0]["live"]["egress_denied"], 31);
        assert_eq!(v[1]["live"], serde_json::json!({}));
        // An older monitor sends no `live`: the records print as they are.
        let old = Response {
            ok: true,
            containers: Some(vec![rec("a")]),
            ..Default::default()
        };
        assert!(inspected(old).unwrap()[0].get("live").is_none());
    }
}
