//! Fail closed: `exec` without ociguard's record (crun, Podman, Docker), symlinked bundles,
//! unbounded input in the decision log, a decision log that must not fail a create unless the
//! policy says so, and one prefix in the engines' error messages. Real containers, root only;
//! each test skips visibly otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::docker::Docker;
use common::*;
use serde_json::Value;

/// No new privileges and no CAP_NET_RAW, for every container (and every exec in it).
const HARDENED: &str = "name = \"default\"\n[process]\nno_new_privileges = true\ndrop_capabilities = [\"CAP_NET_RAW\"]\n";
/// CAP_NET_RAW is bit 13 of the capability sets.
const NET_RAW: u64 = 1 << 13;

fn world() -> World {
    let w = World::new();
    w.policy("default.toml", HARDENED);
    w
}

fn records(w: &World) -> PathBuf {
    w.path().join("state/containers")
}

/// What `/proc/self/status` says of a process's privileges.
#[derive(Debug, PartialEq)]
struct Privileges {
    no_new_privs: bool,
    cap_eff: u64,
    cap_bnd: u64,
}

fn privileges(status: &str) -> Privileges {
    let hex = |f| {
        u64::from_str_radix(
            status_field(status, f).unwrap_or_else(|| panic!("{f} in {status}")),
            16,
        )
        .unwrap()
    };
    Privileges {
        no_new_privs: status_field(status, "NoNewPrivs") == Some("1"),
        cap_eff: hex("CapEff"),
        cap_bnd: hex("CapBnd"),
    }
}

fn held(p: &Privileges) {
    assert!(p.no_new_privs, "{p:?}");
    assert_eq!(p.cap_bnd & NET_RAW, 0, "{p:?}");
    assert_eq!(p.cap_eff & NET_RAW, 0, "{p:?}");
    // CAP_SYS_ADMIN (bit 21) was never the container's.
    assert_eq!(p.cap_eff & (1 << 21), 0, "{p:?}");
}

#[test]
fn exec_without_a_record_is_held_to_the_policy_or_refused() {
    require_containers!();
    let w = world();
    let b = w.bundle("b1", &spec("sleep 600"));
    let out = w.ociguard_detached(&["run", "-d", "--bundle", b.to_str().unwrap(), "fc1"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The record is gone (the state directory was wiped): exec is still held.
    std::fs::remove_dir_all(records(&w)).unwrap();
    let out = w.ociguard(&["exec", "fc1", "cat", "/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    held(&privileges(&stdout(&out)));
    assert!(
        stderr(&out).contains("was missing; rebuilt"),
        "{}",
        stderr(&out)
    );
    // ... and the record is back.
    let out = w.ociguard(&["exec", "--cap", "CAP_SYS_ADMIN", "fc1", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--cap CAP_SYS_ADMIN is not allowed"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("rebuilt"), "{}", stderr(&out));

    // The bundle now names another policy than the container was created with: refused.
    let config = b.join("config.json");
    let original = std::fs::read(&config).unwrap();
    let mut doc: Value = serde_json::from_slice(&original).unwrap();
    doc["annotations"]["org.ociguard.policy.digest"] = "sha256:0000".into();
    std::fs::write(&config, doc.to_string()).unwrap();
    std::fs::remove_dir_all(records(&w)).unwrap();
    let out = w.ociguard(&["exec", "fc1", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refused") && err.contains("bundle changed since create"),
        "{err}"
    );

    // Anybody may write the bundle's config: refused.
    std::fs::write(&config, &original).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = w.ociguard(&["exec", "fc1", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("writable by group or others"),
        "{}",
        stderr(&out)
    );
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    // A container the runtime does not know: refused with the runtime's own words.
    let out = w.ociguard(&["exec", "no-such-container", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("refused") && err.contains("state no-such-container failed"),
        "{err}"
    );
}

#[test]
fn a_symlinked_config_json_is_refused_and_its_target_untouched() {
    require_containers!();
    let w = world();
    let b = w.bundle("b1", &spec("true"));
    let target = w.path().join("not-a-bundle.json");
    std::fs::rename(b.join("config.json"), &target).unwrap();
    let before = std::fs::read(&target).unwrap();
    std::os::unix::fs::symlink(&target, b.join("config.json")).unwrap();
    let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), "fc2"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("config.json: is a symbolic link"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(
        !w.delegate(&["state", "fc2"]).status.success(),
        "crun created it"
    );
    assert_eq!(w.last_decision()["result"], "refused");
}

#[test]
fn a_huge_annotation_is_bounded_in_the_decision_log() {
    require_containers!();
    let w = world();
    let mut s = spec("true");
    let huge = "x".repeat(50 << 20);
    s["annotations"]["org.example.huge"] = huge.into();
    let b = w.bundle("b1", &s);
    let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), "fc3"]);
    assert!(out.status.success(), "{}", excerpt(&stderr(&out)));
    let _ = w.delegate(&["delete", "-f", "fc3"]);
    let text = std::fs::read_to_string(w.decisions()).unwrap();
    let line = text.lines().last().unwrap();
    assert!(
        line.len() < 64 * 1024,
        "decision log line of {} bytes",
        line.len()
    );
    let record: Value = serde_json::from_str(line).unwrap();
    let value = record["decision"]["facts"]["annotations"]["org.example.huge"]
        .as_str()
        .unwrap();
    assert!(
        value.ends_with(&format!("... ({} bytes)", 50 << 20)),
        "{}",
        excerpt(value)
    );
}

fn excerpt(s: &str) -> &str {
    &s[..s.len().min(2000)]
}

#[test]
fn the_decision_log_rotates_and_fails_a_create_only_when_the_policy_requires_it() {
    require_containers!();
    let w = world();
    w.write_config("decision_log_max_bytes = 20000\ndecision_log_keep = 2\n");
    let b = w.bundle("b1", &spec("true"));
    // Enough creates to rotate twice (a record's size depends on the delegate's name and
    // what the rewrite did for it).
    let rotated_twice = || Path::new(&format!("{}.2", w.decisions().display())).exists();
    let mut last = String::new();
    for i in 0..60 {
        last = format!("fc4-{i}");
        let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), &last]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(w.delegate(&["delete", "-f", &last]).status.success());
        if i >= 11 && rotated_twice() {
            break;
        }
    }
    let mut ids = Vec::new();
    for suffix in [".2", ".1", ""] {
        let p = PathBuf::from(format!("{}{suffix}", w.decisions().display()));
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(text.len() <= 20000, "{}: {} bytes", p.display(), text.len());
        for l in text.lines() {
            ids.push(
                serde_json::from_str::<Value>(l).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert!(!Path::new(&format!("{}.3", w.decisions().display())).exists());
    // Oldest records were dropped, none of the newest: they end in order at the last create.
    assert_eq!(ids.last(), Some(&last), "{ids:?}");

    // A log that cannot be written: a warning by default ...
    let unwritable = w.path().join("not-a-dir");
    std::fs::write(&unwritable, "").unwrap();
    w.write_config(&format!(
        "decision_log = \"{}/decisions.jsonl\"\n",
        unwritable.display()
    ));
    let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), "fc4-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: append decision log"),
        "{}",
        stderr(&out)
    );
    assert!(w.delegate(&["delete", "-f", "fc4-a"]).status.success());
    // ... a refusal under a policy that requires its audit trail.
    w.policy(
        "default.toml",
        &format!("decision_log = \"required\"\n{HARDENED}"),
    );
    let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), "fc4-b"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("requires its decision to be logged"), "{err}");
    assert!(
        !w.delegate(&["state", "fc4-b"]).status.success(),
        "crun created it"
    );
}

// ---------------------------------------------------------------- engines

fn podman_available() -> Option<String> {
    (!Path::new("/usr/bin/podman").exists()).then(|| "podman not installed".to_owned())
}

/// The busybox image `test-bundles/build.sh` makes, imported into Podman as `tag`.
fn podman_image(tag: &str) -> bool {
    let tar = repo().join("test-bundles/out/image.tar");
    let out = Command::new("podman")
        .args(["import"])
        .arg(&tar)
        .arg(tag)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("podman import: {}", stderr(&out));
    }
    out.status.success()
}

const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

#[test]
fn podman_exec_without_a_record_is_held_and_errors_have_one_prefix() {
    require_containers!();
    if let Some(why) = podman_available() {
        eprintln!("skip: {why}");
        return;
    }
    let w = world();
    let image = "localhost/ociguard-fc:latest";
    assert!(podman_image(image));
    let rt = w.engine_runtime();
    let name = format!("ociguard-fc-{}", std::process::id());
    let out = Command::new("podman")
        .arg("--runtime")
        .arg(&rt)
        .args(["run", "-d", "--name", &name, "--network", "none"])
        .args(ULIMITS)
        .args([image, "sleep", "600"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "podman run: {}", stderr(&out));
    let podman = |args: &[&str]| {
        Command::new("podman")
            .arg("--runtime")
            .arg(&rt)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let check = || {
        std::fs::remove_dir_all(records(&w)).unwrap();
        let out = podman(&["exec", "--privileged", &name, "cat", "/proc/self/status"]);
        assert!(out.status.success(), "podman exec: {}", stderr(&out));
        held(&privileges(&stdout(&out)));
    };
    check();
    // Held by the rebuilt record too, not only by the rebuild.
    let out = podman(&["exec", "--privileged", &name, "cat", "/proc/self/status"]);
    held(&privileges(&stdout(&out)));
    let _ = podman(&["rm", "-f", "-t", "0", &name]);

    // A refusal as Podman shows it: the runtime's name once, then ociguard's message.
    w.policy("broken.toml", "name = \"broken\"\nbogus = 1\n");
    let out = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        ULIMITS[0],
        ULIMITS[1],
        ULIMITS[2],
        ULIMITS[3],
        image,
        "true",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains(&format!("{}: create ", rt.display())), "{err}");
    assert!(
        err.contains("broken.toml:2:1: unknown field `bogus`"),
        "{err}"
    );
    assert!(
        !err.contains("ociguard: ociguard:") && !err.contains("error: create"),
        "{err}"
    );
    let _ = Command::new("podman").args(["rmi", "-f", image]).output();
}

#[test]
fn docker_exec_without_a_record_is_held_and_errors_have_one_prefix() {
    require_containers!();
    if let Some(why) = Docker::unavailable() {
        eprintln!("skip: {why}");
        return;
    }
    let w = world();
    let d = Docker::start(&w.engine_runtime()).unwrap();
    let docker = |args: &[&str]| d.docker(args).unwrap();
    let tar = repo().join("test-bundles/out/image.tar");
    let out = docker(&["import", tar.to_str().unwrap(), "ociguard-fc:latest"]);
    assert!(out.status.success(), "docker import: {}", stderr(&out));
    let out = docker(&[
        "run",
        "-d",
        "--runtime",
        "ociguard",
        "--network",
        "none",
        "--name",
        "fc",
        "ociguard-fc:latest",
        "sleep",
        "600",
    ]);
    assert!(
        out.status.success(),
        "docker run: {}\n{}",
        stderr(&out),
        d.log()
    );

    std::fs::remove_dir_all(records(&w)).unwrap();
    let out = docker(&["exec", "--privileged", "fc", "cat", "/proc/self/status"]);
    assert!(out.status.success(), "docker exec: {}", stderr(&out));
    held(&privileges(&stdout(&out)));
    let out = docker(&["exec", "--privileged", "fc", "cat", "/proc/self/status"]);
    held(&privileges(&stdout(&out)));
    let _ = docker(&["rm", "-f", "fc"]);

    // A refusal as Docker shows it: containerd's shim quotes the --log file's line.
    w.policy("broken.toml", "name = \"broken\"\nbogus = 1\n");
    let out = docker(&[
        "run",
        "--rm",
        "--runtime",
        "ociguard",
        "--network",
        "none",
        "ociguard-fc:latest",
        "true",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("OCI runtime create failed: ociguard: create "),
        "{err}"
    );
    assert!(err.contains("unknown field `bogus`"), "{err}");
    assert_eq!(err.matches("ociguard:").count(), 1, "{err}");
}
