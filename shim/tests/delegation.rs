//! Delegation and bad input, against a stand-in runtime that records what it was given.
//! Needs no root: the stand-in is a shell script.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

/// A World whose delegate is a script: prints its argv (one per line) to stdout, records
/// env and fds, exits with $FAKE_EXIT.
fn fake_world() -> (World, PathBuf) {
    let w = World::new();
    let fake = w.path().join("fake-runtime");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\nenv > {dir}/env\nls /proc/$$/fd > {dir}/fds\ncat > {dir}/stdin\necho fake-stderr >&2\nexit ${{FAKE_EXIT:-0}}\n",
            dir = w.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.write_config(&format!("runtime = \"{}\"\n", fake.display()));
    (w, fake)
}

fn run(w: &World, args: &[&str], exit: i32) -> std::process::Output {
    Command::new(&*OCIGUARD)
        .env("OCIGUARD_CONFIG", w.config())
        .env("FAKE_EXIT", exit.to_string())
        .env("ENGINE_VAR", "kept")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn non_intercepted_commands_are_forwarded_untouched() {
    let (w, _) = fake_world();
    let shapes: &[&[&str]] = &[
        &[
            "--root",
            "/run/containerd/runc/default",
            "--log",
            "/x/log.json",
            "--log-format",
            "json",
            "start",
            "c1",
        ],
        &["--root", "/r", "kill", "--all", "c1", "9"],
        &[
            "--systemd-cgroup",
            "--root=/run/runc",
            "kill",
            "-a",
            "c1",
            "15",
        ],
        &["delete", "--force", "c1"],
        &["state", "c1"],
        &["ps", "--format", "json", "c1"],
        &["update", "--resources=-", "c1"],
        &["update", "--resources", "-", "c1"],
        &["pause", "c1"],
        &["resume", "c1"],
        &["events", "--stats", "c1"],
        &["list"],
        &["some-future-command", "--weird", "x", "y"],
    ];
    for shape in shapes {
        let out = run(&w, shape, 3);
        assert_eq!(out.status.code(), Some(3), "{shape:?}: {}", stderr(&out));
        let forwarded: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(&forwarded, shape, "argv changed");
        assert_eq!(stderr(&out), "fake-stderr\n", "{shape:?}");
    }
    let env = std::fs::read_to_string(w.path().join("env")).unwrap();
    assert!(env.contains("ENGINE_VAR=kept"));
}

#[test]
fn inherited_fds_and_stdin_reach_the_runtime() {
    let (w, _) = fake_world();
    let script = format!(
        "exec 7</etc/hostname; echo payload | OCIGUARD_CONFIG={} {} --root /r state c1 >/dev/null",
        w.config().display(),
        *OCIGUARD
    );
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let fds = std::fs::read_to_string(w.path().join("fds")).unwrap();
    assert!(fds.lines().any(|l| l == "7"), "fd 7 not inherited: {fds}");
    assert_eq!(
        std::fs::read_to_string(w.path().join("stdin")).unwrap(),
        "payload\n"
    );
}

#[test]
fn create_rewrites_then_forwards_engine_argv() {
    let (w, _) = fake_world();
    let b = w.bundle("b", &spec("true"));
    let b = b.to_str().unwrap();
    let log = w.path().join("log.json");
    let log = log.to_str().unwrap();
    let shapes: Vec<Vec<&str>> = vec![
        // containerd runc.v2 shim
        vec![
            "--root",
            "/run/containerd/runc/default",
            "--log",
            log,
            "--log-format",
            "json",
            "create",
            "--bundle",
            b,
            "--pid-file",
            "/x/init.pid",
            "--console-socket",
            "/x/pty.sock",
            "--no-pivot",
            "--no-new-keyring",
            "c1",
        ],
        // CRI-O via conmon
        vec![
            "--systemd-cgroup",
            "--root=/run/runc",
            "create",
            "--bundle",
            b,
            "--pid-file",
            "/x/pidfile",
            "--no-pivot",
            "c2",
        ],
        // Podman via conmon
        vec![
            "--log-format=json",
            "--log",
            log,
            "--cgroup-manager",
            "disabled",
            "create",
            "--bundle",
            b,
            "--pid-file",
            "/x/p",
            "--preserve-fds",
            "2",
            "c3",
        ],
    ];
    for shape in &shapes {
        let out = run(&w, shape, 0);
        assert!(out.status.success(), "{shape:?}: {}", stderr(&out));
        let forwarded: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(&forwarded, shape);
        assert_eq!(w.last_decision()["bundle"], *b);
    }
    let bundle_eq = format!("--bundle={b}");
    let out = run(&w, &["create", &bundle_eq, "c5"], 0);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(w.last_decision()["id"], "c5");
}

#[test]
fn features_is_valid_json_listing_stripped_annotations() {
    let (w, fake) = fake_world();
    // The fake runtime's `features` prints its argv, which is not JSON: ociguard answers alone.
    let out = run(&w, &["features"], 0);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["potentiallyUnsafeConfigAnnotations"]
        .as_array()
        .unwrap()
        .contains(&json!("run.oci.seccomp_bpf_data")));
    assert_eq!(
        v["annotations"]["org.ociguard.delegate"],
        fake.to_str().unwrap()
    );
}

/// Every bad input: non-zero exit, a message naming the thing, config.json byte-for-byte unchanged,
/// the delegate never called, and the error in the engine's --log (json).
fn assert_refused(w: &World, bundle: &std::path::Path, expect: &str) {
    let before = std::fs::read(bundle.join("config.json")).ok();
    let log = w.path().join("engine-log.json");
    let _ = std::fs::remove_file(&log);
    let out = run(
        w,
        &[
            "--log",
            log.to_str().unwrap(),
            "--log-format",
            "json",
            "create",
            "--bundle",
            bundle.to_str().unwrap(),
            "bad1",
        ],
        0,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected refusal for {expect}: {}",
        stderr(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "delegate was called: {}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(expect),
        "stderr lacks {expect:?}: {}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(bundle.join("config.json")).ok(),
        before,
        "config.json changed"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(logged.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["msg"].as_str().unwrap().contains(expect), "{logged}");
    assert!(last["time"].is_string());
}

#[test]
fn bad_inputs_are_refused_and_change_nothing() {
    let (w, _) = fake_world();
    // Malformed JSON.
    let b = w.path().join("malformed");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("config.json"), b"{\"ociVersion\": \"1.0.2\", ").unwrap();
    assert_refused(&w, &b, &format!("{}:1:", b.join("config.json").display()));

    // Wrong type: process.args as a string.
    let mut s = spec("true");
    s["process"]["args"] = json!("/bin/sh -c true");
    let b = w.bundle("wrongtype", &s);
    assert_refused(&w, &b, "invalid type: string");

    // Missing config.json.
    let b = w.path().join("empty-bundle");
    std::fs::create_dir_all(&b).unwrap();
    assert_refused(&w, &b, &format!("read {}", b.join("config.json").display()));

    // Bad policy file: names file and line.
    let good = w.bundle("good", &spec("true"));
    w.policy(
        "broken.toml",
        "name = \"broken\"\n[match]\nimages = [\"x\"]\n[seccomp]\ndeny = [\"no_such_syscall\"]\n",
    );
    assert_refused(
        &w,
        &good,
        &format!("{}:5:", w.policies().join("broken.toml").display()),
    );
    std::fs::remove_file(w.policies().join("broken.toml")).unwrap();

    // A policy anyone may write (no root needed: the owner is trusted, the mode never is).
    w.policy("open.toml", "name = \"open\"\n[match]\nimages = [\"x\"]\n");
    let open = w.policies().join("open.toml");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_refused(
        &w,
        &good,
        &format!(
            "{}: file is group- and world-writable (mode 0666); fix: chmod go-w",
            open.display()
        ),
    );
    std::fs::remove_file(&open).unwrap();

    // Conflicting policies (same selector, same priority).
    w.policy(
        "a.toml",
        "name = \"a\"\n[match]\nannotations = { team = \"x\" }\n",
    );
    w.policy(
        "b.toml",
        "name = \"b\"\n[match]\nannotations = { team = \"x\" }\n",
    );
    assert_refused(&w, &good, "same [match] and priority");
    std::fs::remove_file(w.policies().join("b.toml")).unwrap();

    // Ambiguous at decision time: equally specific, both match.
    w.policy(
        "c.toml",
        "name = \"c\"\n[match]\nannotations = { tier = \"web\" }\n",
    );
    let mut s = spec("true");
    s["annotations"] = json!({"team": "x", "tier": "web"});
    let both = w.bundle("both", &s);
    assert_refused(&w, &both, "both match with equal specificity");
    std::fs::remove_file(w.policies().join("a.toml")).unwrap();
    std::fs::remove_file(w.policies().join("c.toml")).unwrap();

    // A policy that needs process but the spec has none.
    w.policy("np.toml", "name = \"np\"\n[match]\nannotations = { team = \"x\" }\n[process]\nno_new_privileges = true\n");
    let b = w.bundle(
        "noprocess",
        &json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "annotations": {"team": "x"}}),
    );
    assert_refused(&w, &b, "process");
    std::fs::remove_file(w.policies().join("np.toml")).unwrap();

    // Ambiguous unknown flag: cannot tell its value from the id.
    let out = run(
        &w,
        &[
            "create",
            "--bundle",
            good.to_str().unwrap(),
            "--mystery",
            "c1",
        ],
        0,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--mystery"), "{}", stderr(&out));

    // Missing delegate runtime.
    w.write_config("runtime = \"/nonexistent/crun\"\n");
    assert_refused(&w, &good, "/nonexistent/crun");

    // Malformed config.toml.
    w.write_config("runtime = [\n");
    assert_refused(&w, &good, &format!("{}:", w.config().display()));
}

#[test]
fn unreadable_bundle_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: needs root to drop to nobody");
        return;
    }
    // Root can read anything; run ociguard as nobody against a root-only bundle.
    let (w, _) = fake_world();
    let b = w.bundle("private", &spec("true"));
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(w.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "nobody", "--regid", "nogroup", "--clear-groups"])
        .arg(&*OCIGUARD)
        .env("OCIGUARD_CONFIG", w.config())
        .args(["create", "--bundle", b.to_str().unwrap(), "c1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}
