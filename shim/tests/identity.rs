//! Container identity end to end: real containers through ociguard and crun, ociguard-hook
//! injected as OCI hooks, a real ociguardd on a private socket, queried with ociguardctl.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::monitor::{bins, ctl, Bins, Monitor};
use common::*;
use serde_json::{json, Value};

const IMAGE: &str = "registry.example/payments/api:1.4";

/// A workspace binary of another package (built by `cargo test --workspace`).
macro_rules! require_identity {
    () => {{
        if let Some(why) = common::cannot_run_containers() {
            eprintln!("skip: {}", why);
            return;
        }
        bins()
    }};
}

/// A World whose policy `ident` (selected by annotation) has `[identity] mode = mode`.
fn world(b: &Bins, mode: &str, hook_path: Option<&Path>) -> World {
    let w = World::new();
    let hook = hook_path.unwrap_or(&b.hook);
    w.write_config(&format!(
        "hook_path = \"{}\"\nmonitor_socket = \"{}\"\nspool_dir = \"{}\"\n",
        hook.display(),
        w.path().join("run/monitor.sock").display(),
        w.path().join("spool").display()
    ));
    w.policy(
        "ident.toml",
        &format!(
            "name = \"ident\"\n[match]\nannotations = {{ \"org.example.identity\" = \"on\" }}\n[identity]\nmode = \"{mode}\"\n"
        ),
    );
    w
}

fn id_spec(script: &str) -> Value {
    let mut s = spec(script);
    s["annotations"]["org.example.identity"] = json!("on");
    s["annotations"]["io.kubernetes.cri.image-name"] = json!(IMAGE);
    s
}

fn ps(w: &World, b: &Bins) -> Vec<Value> {
    let out = ctl(w, b, &["ps", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

fn record(w: &World, b: &Bins, id: &str) -> Option<Value> {
    ps(w, b).into_iter().find(|c| c["id"] == id)
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn crun_state(w: &World, id: &str) -> Option<Value> {
    let out = w.delegate(&["state", id]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// `run -d` a container of `id_spec(script)` through ociguard; it must start.
fn start(w: &World, script: &str, id: &str) {
    let bundle = w.bundle("b", &id_spec(script));
    let out = w.ociguard_detached(&["run", "-d", "--bundle", bundle.to_str().unwrap(), id]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn stop(w: &World, id: &str) {
    let _ = w.ociguard(&["kill", id, "KILL"]);
    wait_for("container stopped", || {
        (crun_state(w, id).is_none_or(|s| s["status"] == "stopped")).then_some(())
    });
}

#[test]
fn ps_shows_running_then_exited_with_status() {
    let b = require_identity!();
    let w = world(&b, "required", None);
    let mut mon = Monitor::new(&w, &b, &[]);
    mon.start();
    let id = "it-id-run";
    start(&w, "sleep 300", id);
    let pid = crun_state(&w, id).unwrap()["pid"].as_u64().unwrap();

    let rec = wait_for("running", || {
        record(&w, &b, id).filter(|r| r["status"] == "running")
    });
    assert_eq!(rec["pid"].as_u64(), Some(pid));
    assert_eq!(rec["image"]["name"], IMAGE);
    assert_eq!(rec["policy"]["name"], "ident");
    let digest = w.last_decision()["decision"]["policy_digest"].clone();
    assert!(digest.as_str().unwrap().starts_with("sha256:"));
    assert_eq!(rec["policy"]["digest"], digest);
    assert!(rec["start_time"].as_u64().is_some());
    assert!(rec["namespaces"]["pid"].as_u64().is_some());
    assert!(rec["profiles"]["seccomp"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    let table = stdout(&ctl(&w, &b, &["ps"]));
    let line = table.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(line.contains("running") && line.contains(IMAGE), "{table}");
    let inspect: Value = serde_json::from_slice(&ctl(&w, &b, &["inspect", id]).stdout).unwrap();
    assert_eq!(inspect["bundle"], w.path().join("b").to_str().unwrap());

    stop(&w, id);
    let out = w.ociguard(&["delete", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rec = wait_for("exited", || {
        record(&w, &b, id).filter(|r| r["status"] == "exited")
    });
    if rec["exit"]["source"] == "kernel" {
        assert_eq!(rec["exit"]["signal"], 9, "{rec}");
    } else {
        eprintln!("note: exit status unknown here (no kernel exit events): {rec}");
    }

    // A container that exits by itself, in the foreground.
    let bundle = w.bundle("b42", &id_spec("exit 42"));
    let out = w.ociguard(&["run", "--bundle", bundle.to_str().unwrap(), "it-id-42"]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
    let rec = wait_for("exited 42", || {
        record(&w, &b, "it-id-42").filter(|r| r["status"] == "exited")
    });
    if rec["exit"]["source"] == "kernel" {
        assert_eq!(rec["exit"]["code"], 42, "{rec}");
    }
    let table = stdout(&ctl(&w, &b, &["ps"]));
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("it-id-42") && l.contains("exited")),
        "{table}"
    );

    let events = stdout(&ctl(&w, &b, &["events"]));
    for kind in ["registered", "started", "exited"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(&format!(" {id} ")) && l.contains(kind)),
            "{kind}: {events}"
        );
    }
}

/// Children of `pid` (its main thread's), from /proc.
fn children(pid: u64) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn whois_finds_processes_inside_and_not_the_host() {
    let b = require_identity!();
    let w = world(&b, "best-effort", None);
    let mut mon = Monitor::new(&w, &b, &[]);
    mon.start();
    let id = "it-id-whois";
    start(&w, "sleep 300 & wait", id);
    let init = crun_state(&w, id).unwrap()["pid"].as_u64().unwrap();
    let child = wait_for("the sleep inside", || children(init).first().copied());
    wait_for("running", || {
        record(&w, &b, id).filter(|r| r["status"] == "running")
    });
    for pid in [init, child] {
        let out = ctl(&w, &b, &["whois", &pid.to_string()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(text.contains(&format!("container {id} ")), "{text}");
        assert!(text.contains("policy ident sha256:"), "{text}");
    }
    let me = std::process::id().to_string();
    let out = ctl(&w, &b, &["whois", &me]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("pid {me}: not a container"));
    let out = ctl(&w, &b, &["whois", "--json", &me]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.get("container").is_none());
    stop(&w, id);
}

#[test]
fn required_identity_with_monitor_down_refuses_the_container() {
    let b = require_identity!();
    let w = world(&b, "required", None);
    let bundle = w.bundle("b", &id_spec("sleep 300"));
    let log = w.path().join("engine-log.json");
    let out = w.ociguard_detached(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "run",
        "-d",
        "--bundle",
        bundle.to_str().unwrap(),
        "it-id-down",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("identity is required by policy \"ident\", but the monitor at")
            && err.contains("is not available"),
        "{err}"
    );
    let engine_log = std::fs::read_to_string(&log).unwrap();
    assert!(engine_log.contains("is not available"), "{engine_log}");
    assert!(w.containers().is_empty());
    assert!(!std::fs::read(bundle.join("config.json"))
        .unwrap()
        .windows(13)
        .any(|x| x == b"ociguard-hook"));
}

/// A "monitor" that is up (answers ping) but cannot record anything durably.
fn broken_monitor(sock: &Path) -> std::thread::JoinHandle<()> {
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(sock).unwrap();
    listener.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        for conn in listener.incoming() {
            let Ok(s) = conn else { break };
            let mut line = String::new();
            let _ = BufReader::new(&s).read_line(&mut line);
            let answer: &[u8] = if line.contains("\"ping\"") {
                b"{\"ok\":true}\n"
            } else {
                b"{\"ok\":false,\"error\":\"not recorded: append to journal: No space left on device\"}\n"
            };
            let _ = (&s).write_all(answer);
            if line.contains("\"register\"") || Instant::now() > deadline {
                break;
            }
        }
    })
}

#[test]
fn required_identity_the_hook_fails_the_create_when_not_recorded() {
    let b = require_identity!();
    let w = world(&b, "required", None);
    let server = broken_monitor(&w.path().join("run/monitor.sock"));
    let bundle = w.bundle("b", &id_spec("sleep 300"));
    let log = w.path().join("engine-log.json");
    let out = w.ociguard_detached(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        bundle.to_str().unwrap(),
        "it-id-hookfail",
    ]);
    server.join().unwrap();
    assert!(!out.status.success(), "create succeeded");
    let engine_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        engine_log.contains("identity of container it-id-hookfail is required by policy \\\"ident\\\" but was not recorded")
            && engine_log.contains("No space left on device"),
        "{engine_log}"
    );
    // Nothing left running.
    let list: String = w
        .containers()
        .iter()
        .map(|id| stdout(&w.delegate(&["state", id])))
        .collect();
    assert!(
        !list.contains("running") && !list.contains("created"),
        "{list}"
    );
}

#[test]
fn best_effort_with_monitor_down_runs_and_is_listed_once_it_starts() {
    let b = require_identity!();
    let w = world(&b, "best-effort", None);
    let id = "it-id-spool";
    start(&w, "sleep 300", id);
    assert_eq!(crun_state(&w, id).unwrap()["status"], "running");
    let spooled = std::fs::read_dir(w.path().join("spool")).unwrap().count();
    assert_eq!(spooled, 2, "createRuntime and poststart reports");
    let mut mon = Monitor::new(&w, &b, &[]);
    mon.start();
    let rec = record(&w, &b, id).unwrap();
    assert_eq!(rec["status"], "running");
    assert_eq!(
        rec["pid"].as_u64(),
        crun_state(&w, id).unwrap()["pid"].as_u64()
    );
    assert!(mon.log().contains("2 report(s) ingested"), "{}", mon.log());
    stop(&w, id);
}

/// Make the next process this test forks get pid `pid` (root, host pid namespace).
fn spawn_with_pid(pid: u64) -> Option<Child> {
    for _ in 0..200 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).is_err() {
            return None;
        }
        let c = Command::new("/bin/sleep").arg("30").spawn().ok()?;
        if u64::from(c.id()) == pid {
            return Some(c);
        }
        let mut c = c;
        let _ = c.kill();
        let _ = c.wait();
    }
    None
}

#[test]
fn a_reused_pid_is_not_attributed_to_the_exited_container() {
    let b = require_identity!();
    let w = world(&b, "best-effort", None);
    let mut mon = Monitor::new(&w, &b, &[]);
    mon.start();
    let id = "it-id-reuse";
    start(&w, "sleep 300", id);
    let pid = crun_state(&w, id).unwrap()["pid"].as_u64().unwrap();
    wait_for("running", || {
        record(&w, &b, id).filter(|r| r["status"] == "running")
    });
    // The monitor goes down; the container dies without `delete` (no poststop hook): the
    // journal still says "running, pid P".
    mon.kill9();
    stop(&w, id);
    wait_for("pid reaped", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let Some(mut host) = spawn_with_pid(pid) else {
        eprintln!("skip: could not make a host process take pid {pid}");
        return;
    };
    mon.start();
    let out = ctl(&w, &b, &["whois", &pid.to_string()]);
    let _ = host.kill();
    let _ = host.wait();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("not a container"));
    let rec = record(&w, &b, id).unwrap();
    assert_eq!(rec["status"], "exited", "{rec}");
    assert_eq!(rec["exit"]["source"], "reconciled", "{rec}");
    let events = stdout(&ctl(&w, &b, &["events"]));
    assert!(
        events
            .lines()
            .any(|l| l.contains("reconciled") && l.contains(id) && l.contains("another process")),
        "{events}"
    );
}

const WHOAMI_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
/* whoami SOCKET [REQUEST]: send one request line, print the answer line. */
int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "/run/ociguard/whoami.sock";
    const char *req = argc > 2 ? argv[2] : "{\"op\":\"whoami\"}";
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, path, sizeof a.sun_path - 1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) { perror(path); return 2; }
    dprintf(fd, "%s\n", req);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        if (memchr(buf, '\n', (size_t)n)) break;
    }
    return 0;
}
"#;

#[test]
fn a_workload_attests_itself_through_the_mounted_socket() {
    let b = require_identity!();
    let w = world(&b, "required", None);
    let tools = w.path().join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::write(tools.join("whoami.c"), WHOAMI_C).unwrap();
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(tools.join("whoami"))
        .arg(tools.join("whoami.c"))
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        eprintln!("skip: cannot build a static test client (gcc, libc6-dev)");
        return;
    }
    let wdir = w.path().join("workload");
    let mut mon = Monitor::new(
        &w,
        &b,
        &[
            "--workload-socket",
            wdir.join("whoami.sock").to_str().unwrap(),
        ],
    );
    mon.start();
    let mut s = id_spec(
        "/root/whoami /run/ociguard/whoami.sock; /root/whoami /run/ociguard/whoami.sock '{\"op\":\"deregister\",\"id\":\"it-id-whoami\"}'",
    );
    let mounts = s["mounts"].as_array_mut().unwrap();
    // The directory, not the socket file: a restarted monitor's new socket is then visible too.
    mounts.push(json!({"destination": "/run/ociguard", "type": "bind", "source": wdir, "options": ["rbind", "ro"]}));
    mounts.push(json!({"destination": "/root", "type": "bind", "source": tools, "options": ["rbind", "ro"]}));
    // /run/ociguard must exist in the read-only rootfs: mount a tmpfs on /run first.
    mounts.insert(
        mounts.len() - 2,
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=755"]}),
    );
    let bundle = w.bundle("b", &s);
    let out = w.ociguard(&["run", "--bundle", bundle.to_str().unwrap(), "it-id-whoami"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let me: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(me["ok"], true, "{text}");
    assert_eq!(me["container"]["id"], "it-id-whoami", "{text}");
    assert_eq!(me["container"]["image"]["name"], IMAGE);
    assert_eq!(me["container"]["policy"]["name"], "ident");
    let denied: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(denied["ok"], false);
    assert!(denied["error"]
        .as_str()
        .unwrap()
        .contains("not available on the workload socket"));
    assert!(record(&w, &b, "it-id-whoami").is_some());
}

#[test]
fn hooks_are_added_once_and_a_missing_hook_binary_is_handled() {
    let b = require_identity!();
    // Retried create: same bundle, hooks not duplicated.
    let w = world(&b, "best-effort", None);
    let mut mon = Monitor::new(&w, &b, &[]);
    mon.start();
    let mut s = id_spec("true");
    s["hooks"] = json!({"createRuntime": [{"path": "/bin/true", "args": ["true"]}]});
    let bundle = w.bundle("b", &s);
    for _ in 0..2 {
        let out = w.ociguard_detached(&[
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "it-id-twice",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let _ = w.ociguard(&["delete", "-f", "it-id-twice"]);
    }
    let doc: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let cr = doc["hooks"]["createRuntime"].as_array().unwrap();
    assert_eq!(cr.len(), 2, "{cr:?}");
    assert_eq!(cr[0]["path"], "/bin/true");
    assert_eq!(cr[1]["args"][0], "ociguard-hook");
    for e in ["poststart", "poststop"] {
        assert_eq!(doc["hooks"][e].as_array().unwrap().len(), 1);
    }
    assert_eq!(cr[1]["env"], json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]));

    // No hook binary: best-effort runs without hooks; required refuses.
    let missing = Path::new("/nonexistent/ociguard-hook");
    let w = world(&b, "best-effort", Some(missing));
    let bundle = w.bundle("b", &id_spec("true"));
    let out = w.ociguard(&["run", "--bundle", bundle.to_str().unwrap(), "it-id-nohook"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let changes = w.last_decision()["decision"]["changes"].to_string();
    assert!(changes.contains("identity_hooks_skipped"), "{changes}");
    let w = world(&b, "required", Some(missing));
    let bundle = w.bundle("b", &id_spec("true"));
    let out = w.ociguard(&["run", "--bundle", bundle.to_str().unwrap(), "it-id-nohook2"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("identity is required by policy \"ident\", but the identity hook /nonexistent/ociguard-hook"),
        "{}",
        stderr(&out)
    );
}
