//! End-to-end: real containers through ociguard and crun, as root.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use serde_json::{json, Value};

const NO_MKDIR: &str = r#"
name = "no-mkdir"
[match]
annotations = { "org.example.profile" = "locked" }
[seccomp]
deny = ["mkdir", "mkdirat"]
[process]
drop_capabilities = ["CAP_NET_RAW"]
no_new_privileges = true
"#;

const PROBE: &str = "grep -E '^(Seccomp|NoNewPrivs|CapBnd):' /proc/self/status; if mkdir /tmp/d 2>/tmp/err; then echo MKDIR=ok; else echo MKDIR=fail; cat /tmp/err; fi";

fn locked(mut spec: Value) -> Value {
    spec["annotations"]["org.example.profile"] = json!("locked");
    spec
}

#[test]
fn policy_denies_mkdir_that_crun_alone_allows() {
    require_containers!();
    let w = World::new();
    w.policy("no-mkdir.toml", NO_MKDIR);
    let spec = locked(spec(PROBE));

    let plain = w.bundle("plain", &spec);
    let out = w.crun(&["run", "--bundle", plain.to_str().unwrap(), "it-plain"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("MKDIR=ok"), "{text}");
    assert_eq!(status_field(&text, "Seccomp"), Some("0"), "{text}");

    let guarded = w.bundle("guarded", &spec);
    let out = w.ociguard(&["run", "--bundle", guarded.to_str().unwrap(), "it-guarded"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("MKDIR=fail"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
    assert_eq!(status_field(&text, "Seccomp"), Some("2"), "{text}");
    assert_eq!(status_field(&text, "NoNewPrivs"), Some("1"), "{text}");
    // CAP_NET_RAW is bit 13: 0x2000. The plain bundle has it, the guarded one not.
    let bnd = u64::from_str_radix(status_field(&text, "CapBnd").unwrap(), 16).unwrap();
    assert_eq!(bnd & (1 << 13), 0, "{text}");

    let d = w.last_decision();
    assert_eq!(d["result"], "applied");
    assert_eq!(d["decision"]["policy"], "no-mkdir");
    let written: Value =
        serde_json::from_slice(&std::fs::read(guarded.join("config.json")).unwrap()).unwrap();
    assert_eq!(written["annotations"]["org.ociguard.policy"], "no-mkdir");
    assert_eq!(
        written["annotations"]["org.ociguard.policy.digest"],
        d["decision"]["policy_digest"]
    );
}

#[test]
fn default_policy_injects_builtin_seccomp() {
    require_containers!();
    let w = World::new();
    let b = w.bundle("b", &spec(PROBE));
    let out = w.ociguard(&["run", "-b", b.to_str().unwrap(), "it-default"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    // Built-in profile: filtered, but ordinary things (mkdir) still work.
    assert_eq!(status_field(&text, "Seccomp"), Some("2"), "{text}");
    assert!(text.contains("MKDIR=ok"), "{text}");
    assert_eq!(w.last_decision()["decision"]["policy_source"], "built-in");
}

#[test]
fn exit_code_of_the_container_comes_back_through_run() {
    require_containers!();
    let w = World::new();
    let b = w.bundle("b", &spec("exit 42"));
    let out = w.ociguard(&["run", "--bundle", b.to_str().unwrap(), "it-exit"]);
    assert_eq!(out.status.code(), Some(42), "{}", stderr(&out));
}

#[test]
fn lifecycle_commands_behave_like_crun() {
    require_containers!();
    let w = World::new();
    let b = w.bundle("b", &spec("sleep 300"));
    let id = "it-life";
    let out = w.ociguard_detached(&["create", "--bundle", b.to_str().unwrap(), id]);
    assert!(out.status.success(), "create: {}", stderr(&out));

    let crun = *common::DELEGATE == common::Delegate::Crun;
    let ours = w.ociguard(&["state", id]);
    assert!(ours.status.success(), "{}", stderr(&ours));
    if crun {
        // ociguard passes crun's answer through byte for byte.
        let theirs = w.crun(&["state", id]);
        assert_eq!(ours.status.code(), theirs.status.code());
        assert_eq!(ours.stdout, theirs.stdout);
    }
    let state: Value = serde_json::from_slice(&ours.stdout).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id);
    assert_eq!(state["bundle"], b.to_str().unwrap());
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0, "{state}");
    assert_eq!(state["annotations"]["org.ociguard.policy"], "default");

    assert!(w.ociguard(&["start", id]).status.success());
    let ps_ours = w.ociguard(&["ps", "--format", "json", id]);
    assert!(ps_ours.status.success(), "{}", stderr(&ps_ours));
    if crun {
        let ps_theirs = w.crun(&["ps", "--format", "json", id]);
        assert_eq!(ps_ours.stdout, ps_theirs.stdout);
    }
    let pids: Vec<i64> = serde_json::from_slice(&ps_ours.stdout).unwrap();
    assert_eq!(pids, vec![pid]);

    assert!(w.ociguard(&["pause", id]).status.success());
    let state: Value = serde_json::from_slice(&w.ociguard(&["state", id]).stdout).unwrap();
    assert_eq!(state["status"], "paused");
    assert!(w.ociguard(&["resume", id]).status.success());
    let state: Value = serde_json::from_slice(&w.ociguard(&["state", id]).stdout).unwrap();
    assert_eq!(state["status"], "running");

    // Errors keep crun's exit code and text.
    let ours = w.ociguard(&["state", "no-such-container"]);
    assert_eq!(ours.status.code(), Some(1));
    if crun {
        let theirs = w.crun(&["state", "no-such-container"]);
        assert_eq!(stderr(&ours), stderr(&theirs));
    } else {
        assert!(
            stderr(&ours).contains("container no-such-container does not exist"),
            "{}",
            stderr(&ours)
        );
    }

    assert!(w.ociguard(&["kill", id, "9"]).status.success());
    for _ in 0..100 {
        let s: Value = serde_json::from_slice(&w.ociguard(&["state", id]).stdout).unwrap();
        if s["status"] == "stopped" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The container's record (for `exec`) lives until its delete, and not after.
    let record = |w: &World| {
        walk(&w.path().join("state/containers"))
            .into_iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n == format!("{id}.json").as_str())
            })
    };
    assert!(record(&w).is_some(), "create wrote no record");
    let out = w.ociguard(&["delete", id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!w.ociguard(&["state", id]).status.success());
    assert_eq!(record(&w), None, "delete left the record behind");
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn exec_cannot_regain_what_the_policy_took() {
    require_containers!();
    let w = World::new();
    w.policy("no-mkdir.toml", NO_MKDIR);
    let b = w.bundle("b", &locked(spec("sleep 300")));
    let id = "it-exec";
    let out = w.ociguard_detached(&["run", "-d", "--bundle", b.to_str().unwrap(), id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A process file asking for CAP_NET_RAW and CAP_SYS_ADMIN without no_new_privileges.
    let proc_file = w.path().join("process.json");
    let process = json!({"args": ["/bin/sh", "-c", "grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status"],
        "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}, "noNewPrivileges": false,
        "capabilities": {"bounding": ["CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_KILL"], "effective": ["CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_KILL"],
                         "permitted": ["CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_KILL"]}});
    std::fs::write(&proc_file, serde_json::to_vec(&process).unwrap()).unwrap();
    let out = w.ociguard(&["exec", "--process", proc_file.to_str().unwrap(), id]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_field(&text, "NoNewPrivs"), Some("1"), "{text}");
    // Only CAP_KILL (bit 5) is left.
    assert_eq!(
        status_field(&text, "CapBnd"),
        Some("0000000000000020"),
        "{text}"
    );

    // Flag form: --cap outside the container's set is refused, with a clear error.
    let out = w.ociguard(&["exec", "--cap", "CAP_SYS_ADMIN", id, "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--cap CAP_SYS_ADMIN is not allowed by policy \"no-mkdir\""),
        "{}",
        stderr(&out)
    );
    // Without --no-new-privs, ociguard adds it.
    let out = w.ociguard(&["exec", id, "/bin/grep", "NoNewPrivs", "/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_field(&stdout(&out), "NoNewPrivs"), Some("1"));
    // The container's seccomp filter holds in an exec'd process (libcontainer alone would
    // leave it out: see shim/src/builtin/workload.rs).
    let out = w.ociguard(&[
        "exec",
        id,
        "/bin/sh",
        "-c",
        "grep Seccomp: /proc/self/status; mkdir /tmp/x",
    ]);
    assert!(
        !out.status.success(),
        "mkdir ran in an exec: {}",
        stdout(&out)
    );
    assert_eq!(status_field(&stdout(&out), "Seccomp"), Some("2"));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn enforce_strips_unsafe_annotations() {
    require_containers!();
    let w = World::new();
    w.policy("no-mkdir.toml", NO_MKDIR);
    let mut s = locked(spec("true"));
    // If crun honoured this, it would load this (garbage) BPF instead of the policy's filter.
    s["annotations"]["run.oci.seccomp_bpf_data"] = json!("AAAAAAAAAAA=");
    s["annotations"]["run.oci.hooks.prestart"] = json!("[]");
    let b = w.bundle("b", &s);
    let out = w.ociguard(&["run", "--bundle", b.to_str().unwrap(), "it-strip"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    if *common::DELEGATE == common::Delegate::Crun {
        // ociguard's own precompiled filter replaces the workload's: same key, ociguard's
        // program.
        let bpf = written["annotations"]["run.oci.seccomp_bpf_data"]
            .as_str()
            .unwrap();
        assert_ne!(bpf, "AAAAAAAAAAA=");
        assert_eq!(
            written["annotations"]["org.ociguard.seccomp.bpf"],
            ociguard_policy::digest::sha256(bpf.as_bytes())
        );
    } else {
        // Only crun reads it: for any other delegate it is simply gone.
        assert_eq!(written["annotations"].get("run.oci.seccomp_bpf_data"), None);
    }
    assert!(written["annotations"]
        .get("run.oci.hooks.prestart")
        .is_none());
    let changes = w.last_decision()["decision"]["changes"].to_string();
    assert!(changes.contains("run.oci.seccomp_bpf_data"), "{changes}");
}

#[test]
fn podman_profile_is_narrowed_not_replaced() {
    require_containers!();
    let captured = repo().join("test-bundles/out/podman/config.json");
    let Ok(bytes) = std::fs::read(&captured) else {
        eprintln!(
            "skip: {} not captured (test-bundles/build.sh as root with podman)",
            captured.display()
        );
        return;
    };
    let podman: Value = serde_json::from_slice(&bytes).unwrap();
    let w = World::new();
    w.policy("no-mkdir.toml", NO_MKDIR);
    let mut s = locked(spec(PROBE));
    s["linux"]["seccomp"] = podman["linux"]["seccomp"].clone();
    let b = w.bundle("b", &s);
    let out = w.ociguard(&["run", "--bundle", b.to_str().unwrap(), "it-podman"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("MKDIR=fail"), "{text}");
    let written: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let before = &podman["linux"]["seccomp"];
    let after = &written["linux"]["seccomp"];
    assert_eq!(before["defaultAction"], after["defaultAction"]);
    assert_eq!(before["defaultErrnoRet"], after["defaultErrnoRet"]);
    // Every original rule is still there, minus mkdir/mkdirat, in the same order.
    let strip = |rule: &Value| {
        let mut r = rule.clone();
        if let Some(names) = r["names"].as_array_mut() {
            names.retain(|n| n != "mkdir" && n != "mkdirat");
        }
        r
    };
    let expected: Vec<Value> = before["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .map(strip)
        .filter(|r| !r["names"].as_array().unwrap().is_empty())
        .collect();
    let got = after["syscalls"].as_array().unwrap();
    assert_eq!(&got[..expected.len()], &expected[..]);
    assert_eq!(got.len(), expected.len() + 1);
    assert_eq!(
        got[expected.len()],
        json!({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1})
    );
}
