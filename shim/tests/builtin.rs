//! The builtin delegate (youki's libcontainer inside ociguard) beyond what the shared container
//! tests check under `OCIGUARD_TEST_DELEGATE=builtin`: how it is chosen, and the commands only
//! it carries out itself (update, a foreground run's exit status and signals, console
//! sockets through Podman). Real containers, as root.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn builtin_world() -> World {
    let w = World::new();
    w.write_config("runtime = \"builtin\"\n");
    w
}

#[test]
fn a_search_list_that_finds_nothing_falls_back_to_the_builtin_runtime() {
    require_containers!();
    let w = World::new();
    w.write_config("runtime = [\"/nonexistent/crun\", \"/nonexistent/runc\"]\n");
    let out = w.ociguard(&["--version"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("ociguard version "), "{text}");
    assert!(
        text.contains("runtime: builtin (youki libcontainer"),
        "{text}"
    );

    let (code, out) = w.run_to_end(
        "bi-fallback",
        &spec("grep -E '^(Seccomp|SigIgn):' /proc/self/status"),
    );
    assert_eq!(code, 0, "{out}");
    // The default policy's filter is in place: the builtin runtime applied the profile.
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // The workload inherits ociguard's caller's SIGPIPE (default here), not the "ignore" that
    // Rust's runtime sets in ociguard: bit 13 of SigIgn is clear.
    let sig_ign = out
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(sig_ign & (1 << (13 - 1)), 0, "{out}");
    assert_eq!(w.last_decision()["runtime"], "builtin");

    let features: Value = serde_json::from_slice(&w.ociguard(&["features"]).stdout).unwrap();
    assert_eq!(features["annotations"]["org.ociguard.delegate"], "builtin");

    // A runtime named alone never falls back: the operator chose it.
    w.write_config("runtime = \"/nonexistent/crun\"\n");
    let out = w.ociguard(&["state", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no delegate runtime found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_foreground_run_exits_as_its_process_and_forwards_signals() {
    require_containers!();
    let w = builtin_world();
    let (code, out) = w.run_to_end("bi-exit", &spec("exit 42"));
    assert_eq!(code, 42, "{out}");

    // SIGTERM to ociguard reaches the container's shell, which says so and exits 3.
    let b = w.bundle(
        "bi-sig",
        &spec("trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.1; done"),
    );
    let mut child = Command::new(&*OCIGUARD)
        .env("OCIGUARD_CONFIG", w.config())
        .arg("--root")
        .arg(w.root())
        .args(["run", "--bundle", b.to_str().unwrap(), "bi-sig"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let mut buf = [0u8; 64];
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        assert!(n > 0 && Instant::now() < deadline, "no ready: {seen:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    std::io::Read::read_to_end(&mut stdout, &mut seen).unwrap();
    assert_eq!(status.code(), Some(3), "{}", String::from_utf8_lossy(&seen));
    assert!(String::from_utf8_lossy(&seen).contains("got-term"));
    // A foreground run deletes its container, as runc does.
    assert!(!w.ociguard(&["state", "bi-sig"]).status.success());
}

#[test]
fn update_ps_and_lifecycle_errors() {
    require_containers!();
    let w = builtin_world();
    let mut s = spec("sleep 300");
    let cgroup = format!("/ociguard-it/bi-update-{}", std::process::id());
    s["linux"]["cgroupsPath"] = json!(cgroup);
    let b = w.bundle("b", &s);
    let out = w.ociguard_detached(&["run", "-d", "--bundle", b.to_str().unwrap(), "bi-up"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // New limits from stdin, as containerd and CRI-O send them.
    let mut update = Command::new(&*OCIGUARD)
        .env("OCIGUARD_CONFIG", w.config())
        .arg("--root")
        .arg(w.root())
        .args(["update", "-r", "-", "bi-up"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        update.stdin.as_mut().unwrap(),
        br#"{"pids": {"limit": 77}}"#,
    )
    .unwrap();
    drop(update.stdin.take());
    let out = update.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pids_max = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .map(|root| format!("{root}{cgroup}/pids.max"))
        .find_map(|p| std::fs::read_to_string(p).ok())
        .expect("the container's pids.max");
    assert_eq!(pids_max.trim(), "77");

    let ps: Vec<i64> =
        serde_json::from_slice(&w.ociguard(&["ps", "--format", "json", "bi-up"]).stdout).unwrap();
    let state: Value = serde_json::from_slice(&w.ociguard(&["state", "bi-up"]).stdout).unwrap();
    assert_eq!(ps, vec![state["pid"].as_i64().unwrap()]);

    // Flags instead of JSON: a clear refusal, not a silent no-op.
    let out = w.ociguard(&["update", "--memory", "1000000", "bi-up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--resources"), "{}", stderr(&out));
    // A running container is not deleted without --force; unknown commands are refused.
    let out = w.ociguard(&["delete", "bi-up"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = w.ociguard(&["checkpoint", "bi-up"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not supported by the builtin runtime"),
        "{}",
        stderr(&out)
    );
    assert!(w.ociguard(&["delete", "-f", "bi-up"]).status.success());
    // `delete -f` of what is gone succeeds (runc's behaviour); without -f it is an error.
    assert!(w.ociguard(&["delete", "-f", "bi-up"]).status.success());
    assert_eq!(w.ociguard(&["delete", "bi-up"]).status.code(), Some(1));
}

#[test]
fn podman_with_a_terminal_runs_through_the_builtin_runtime() {
    require_containers!();
    if Command::new("podman").arg("--version").output().is_err() {
        eprintln!("skip: podman not installed");
        return;
    }
    let w = builtin_world();
    let rt = w.engine_runtime();
    if !Command::new("podman")
        .args(["image", "exists", "localhost/ociguard-it-plain:1"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!(
            "skip: image localhost/ociguard-it-plain:1 not imported (engines tests import it)"
        );
        return;
    }
    // -t: conmon hands the runtime a console socket; the container's stdin is a terminal.
    let out = Command::new("podman")
        .arg("--runtime")
        .arg(&rt)
        .args(["run", "--rm", "-t", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args(["localhost/ociguard-it-plain:1", "sh", "-c"])
        .arg("[ -t 0 ] && echo TTY=yes; grep Seccomp: /proc/self/status")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{}{}", text, stderr(&out));
    assert!(text.contains("TTY=yes"), "{text}");
    assert!(text.contains("Seccomp:\t2"), "{text}");
    assert_eq!(w.last_decision()["runtime"], "builtin");
}
