//! Egress denials reach the monitor: a real container through ociguard and crun, its egress
//! ruleset installed by `ociguard-hook egress`, a private ociguardd that listens to NFLOG in the
//! container's network namespace, and a test host the test builds itself (`ip netns` + veth,
//! 198.18.0.0/15 only). Nothing is ever sent elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::monitor::{bins, ctl, Bins, Monitor};
use common::netns::{counted_packets, Net};
use common::*;
use serde_json::{json, Value};

/// Not the default (100): shows that ociguardd takes `egress.nflog_group` from config.toml.
const GROUP: u16 = 77;
/// `nflog::RATE_PER_SEC` of the monitor.
const RATE_PER_SEC: usize = 10;
const BURST: usize = 30;

/// `Some(reason)` when this test cannot run here.
fn cannot_run() -> Result<Bins, String> {
    if let Some(why) = cannot_run_containers() {
        return Err(why);
    }
    if !Path::new("/usr/sbin/nft").exists() {
        return Err("nft not installed (scripts/host-setup.sh)".into());
    }
    if !Path::new("/usr/sbin/ip").exists() && !Path::new("/sbin/ip").exists() {
        return Err("ip not installed (scripts/host-setup.sh)".into());
    }
    Ok(bins())
}

/// `ociguard delete -f` on drop, while the monitor still runs (its poststop hook reports).
struct Container<'a> {
    w: &'a World,
    id: &'a str,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let out = self.w.ociguard(&["delete", "-f", self.id]);
        if !out.status.success() {
            eprintln!("delete {}: {}", self.id, stderr(&out));
        }
    }
}

/// The `egress-denied` events of container `id` so far.
fn denials(w: &World, b: &Bins, id: &str) -> Vec<Value> {
    let out = ctl(w, b, &["events", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "egress-denied" && e["id"] == id)
        .collect()
}

/// `N` of a summary event's "N more denied, ..." detail.
fn summarised(detail: &str) -> Option<usize> {
    detail.strip_suffix(" in total")?;
    detail.split(' ').next()?.parse().ok()
}

/// The namespaces (IPv6 off in the container's: its link then sends nothing of its own, such
/// as MLD reports, that the ruleset would deny, so every denial is one the test caused), a
/// World whose policy allows only tcp 8080 on the test host, and its monitor.
fn setup(b: &Bins, tag: &str) -> (Net, World, Monitor) {
    let net = Net::new(tag, 1);
    let out = Command::new("ip")
        .args(["netns", "exec", &net.container, "sysctl", "-qw"])
        .args([
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "sysctl: {}", stderr(&out));
    let w = World::new();
    w.write_config(&format!(
        "hook_path = \"{}\"\nmonitor_socket = \"{}\"\nspool_dir = \"{}\"\n[egress]\nnflog_group = {GROUP}\n",
        b.hook.display(),
        w.path().join("run/monitor.sock").display(),
        w.path().join("spool").display(),
    ));
    w.policy(
        "default.toml",
        &format!(
            "name = \"default\"\n[identity]\nmode = \"required\"\n[egress]\nmode = \"allowlist\"\n\
             [[egress.allow]]\ncidr = \"{}\"\nprotocol = \"tcp\"\nports = [8080]\n",
            net.hosts[0].addr
        ),
    );
    let mon = Monitor::started(&w, b, &[]);
    (net, w, mon)
}

/// `ociguard create` a container running `script` in the test network's namespace.
/// create + start, never run: crun 1.8.1 can lose a hook's SIGCHLD under `run`.
fn create<'a>(w: &'a World, net: &Net, id: &'a str, script: &str) -> Container<'a> {
    let mut s = spec(script);
    s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network", "path": net.path()}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    let bundle = w.bundle(id, &s);
    let out = w.ociguard_detached(&["create", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(out.status.success(), "create {id}: {}", stderr(&out));
    Container { w, id }
}

fn start(w: &World, id: &str) {
    let out = w.ociguard(&["start", id]);
    assert!(out.status.success(), "start {id}: {}", stderr(&out));
}

/// The monitor's "listening" log line for container `id`, once it is there. The container's
/// process runs no user code before `start`: after this line no denial of it can be missed.
fn listening(mon: &Monitor, id: &str) -> String {
    let needle = format!("egress denials of container {id}: listening");
    mon.wait_for("the monitor to listen in the container's namespace", || {
        mon.log()
            .lines()
            .find(|l| l.contains(&needle))
            .map(str::to_owned)
    })
}

fn no_longer_watched(mon: &Monitor, id: &str, denied: usize) {
    let line = format!(
        "egress denials of container {id}: no longer watched ({denied} denied while watched)"
    );
    mon.wait_for("the monitor to stop watching the container", || {
        mon.log().contains(&line).then_some(())
    });
}

#[test]
fn denied_connections_become_monitor_events() {
    let b = match cannot_run() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skip: {why}");
            return;
        }
    };
    // Dropped in reverse: the container, the monitor, the World, the namespaces.
    let (net, w, mon) = setup(&b, "nf");
    let host = &net.hosts[0].addr;

    // One denied connection, one allowed (no listener there: refused by the host, not by the
    // ruleset), then a burst of denied ones to see the rate limit; then stay alive.
    let id = "it-egress-nflog";
    let container = create(
        &w,
        &net,
        id,
        &format!(
            "nc -w 1 {host} 4444 </dev/null; nc -w 1 {host} 8080 </dev/null; \
             i=0; while [ $i -lt {BURST} ]; do nc -w 1 {host} 4445 </dev/null; i=$((i+1)); done; \
             exec sleep 60"
        ),
    );
    let line = listening(&mon, id);
    assert!(line.contains(&format!("NFLOG group {GROUP}")), "{line}");
    eprintln!("{line}");

    let started = Instant::now();
    start(&w, id);
    let first = mon.wait_for("an egress-denied event for port 4444", || {
        denials(&w, &b, id).into_iter().find(|e| {
            e["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("tcp {host}:4444 "))
        })
    });
    eprintln!(
        "start -> first egress-denied event: {:?}",
        started.elapsed()
    );
    assert_eq!(first["detail"], format!("tcp {host}:4444 uid 0"), "{first}");
    assert_eq!(first["status"], "running", "{first}");
    assert!(first["pid"].as_u64().is_some(), "{first}");

    // Every denial is accounted for, one by one or in a summary; the allowed port never shows.
    let total = 1 + BURST;
    let events = mon.wait_for("all denials to be accounted for", || {
        let ev = denials(&w, &b, id);
        let seen: usize = ev
            .iter()
            .map(|e| summarised(e["detail"].as_str().unwrap()).unwrap_or(1))
            .sum();
        (seen == total).then_some(ev)
    });
    let span = started.elapsed();
    let details: Vec<&str> = events
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(!details.iter().any(|d| d.contains(":8080")), "{details:#?}");
    let single = details.iter().filter(|d| summarised(d).is_none()).count();
    assert!(
        single <= RATE_PER_SEC * (span.as_secs() as usize + 1),
        "{single} events in {span:?}: {details:#?}"
    );
    eprintln!(
        "{total} denials: {single} events one by one, {} summaries, in {span:?}",
        details.len() - single
    );

    // `ociguardctl events` prints the new kind in its column, with the detail.
    let human = stdout(&ctl(&w, &b, &["events"]));
    assert!(
        human.lines().any(|l| l.contains(" egress-denied ")
            && l.contains(id)
            && l.ends_with(&format!("(tcp {host}:4444 uid 0)"))),
        "{human}"
    );

    // The ruleset's own counter agrees, and so does `inspect`'s live count.
    let table = net.table().expect("the ruleset is installed");
    assert_eq!(counted_packets(&table), total as u64, "{table}");
    let inspect: Value = serde_json::from_str(&stdout(&ctl(&w, &b, &["inspect", id]))).unwrap();
    assert_eq!(
        inspect["live"]["egress_denied"], total as u64,
        "{inspect:#}"
    );

    // The socket goes when the container does.
    drop(container);
    no_longer_watched(&mon, id, total);
}

#[test]
fn a_container_that_lives_milliseconds_has_its_denial_reported() {
    let b = match cannot_run() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skip: {why}");
            return;
        }
    };
    let (net, w, mon) = setup(&b, "nfs");
    let host = &net.hosts[0].addr;
    let id = "it-egress-short";
    let container = create(&w, &net, id, &format!("nc -w 1 {host} 4444 </dev/null"));
    // No waiting here: `create` returns only once ociguardd listens in the namespace (the
    // registration waits for it), so the process cannot run before.
    let needle = format!("egress denials of container {id}: listening");
    assert!(mon.log().contains(&needle), "{}", mon.log());
    let started = Instant::now();
    start(&w, id);
    let lived = mon.wait_for("the container to exit", || {
        let out = w.ociguard(&["state", id]);
        stdout(&out)
            .contains("\"stopped\"")
            .then(|| started.elapsed())
    });
    eprintln!("the container lived less than {lived:?}");
    let e = mon.wait_for("the denial of a container that has gone", || {
        denials(&w, &b, id).into_iter().find(|e| {
            e["detail"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("tcp {host}:4444 "))
        })
    });
    assert_eq!(e["detail"], format!("tcp {host}:4444 uid 0"), "{e}");
    drop(container);
    no_longer_watched(&mon, id, 1);
}

#[test]
fn containers_sharing_a_namespace_share_one_socket() {
    let b = match cannot_run() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("skip: {why}");
            return;
        }
    };
    let (net, w, mon) = setup(&b, "ns");
    let host = &net.hosts[0].addr;

    // A pod: a sandbox, then an app in the sandbox's namespace that tries a denied port.
    let (sandbox, app) = ("it-nflog-sandbox", "it-nflog-app");
    let sb = create(&w, &net, sandbox, "exec sleep 60");
    let first = listening(&mon, sandbox);
    assert!(first.contains(&format!("NFLOG group {GROUP}")), "{first}");
    start(&w, sandbox);
    let ap = create(
        &w,
        &net,
        app,
        &format!("nc -w 1 {host} 4444 </dev/null; exec sleep 60"),
    );
    // The group has one listener per namespace: the app joins the sandbox's socket.
    let second = listening(&mon, app);
    assert!(
        second.contains(&format!("shared with {sandbox}")),
        "{second}"
    );
    start(&w, app);

    let e = mon.wait_for("the app's egress-denied event", || {
        denials(&w, &b, app).into_iter().next()
    });
    assert_eq!(
        e["detail"],
        format!(
            "tcp {host}:4444 uid 0 (network namespace shared by 2 containers: attributed to the newest)"
        ),
        "{e}"
    );
    assert!(denials(&w, &b, sandbox).is_empty());

    // The socket outlives the app while the sandbox lives, and goes with the sandbox.
    drop(ap);
    no_longer_watched(&mon, app, 1);
    drop(sb);
    no_longer_watched(&mon, sandbox, 0);
    let log = mon.log();
    assert!(!log.contains("will not be reported"), "{log}");
    for l in log.lines().filter(|l| l.contains("egress")) {
        eprintln!("{l}");
    }
}
