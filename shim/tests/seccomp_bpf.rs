//! Precompiled seccomp programs against real crun, as root.
//!
//! The oracle is crun itself: after `crun create` it keeps the program it compiled from
//! `linux.seccomp` in `<root>/<id>/seccomp.bpf` until `delete`. ociguard's compile must produce
//! the same bytes for every profile it may hand over, or the annotation would change what the
//! container runs under.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use ociguard_policy::seccomp::{builtin_profile, narrow, DenyAction};
use ociguard_policy::seccomp_bpf::compile;
use ociguard_shim::seccomp_cache::{bpf_for, BPF_ANNOTATION};
use serde_json::{json, Value};

/// `crun --root <root> create` with stdio that cannot hold the caller up: the container keeps
/// its stdio open while it lives, so a pipe would never reach EOF.
fn crun_create(w: &World, bundle: &Path, id: &str) {
    let err_path = w.path().join(format!("{id}.stderr"));
    let status = Command::new("/usr/bin/crun")
        .arg("--root")
        .arg(w.root())
        .args(["create", "--bundle", bundle.to_str().unwrap(), id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .status()
        .unwrap();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(status.success(), "crun create {id}: {err}");
}

/// The program crun compiles for `profile`.
fn crun_bpf(w: &World, name: &str, profile: &Value) -> Vec<u8> {
    let mut s = spec("sleep 300");
    s["linux"]["seccomp"] = profile.clone();
    let bundle = w.bundle(name, &s);
    let id = format!("oracle-{name}");
    crun_create(w, &bundle, &id);
    let bpf = std::fs::read(w.root().join(&id).join("seccomp.bpf"));
    let out = w.crun(&["delete", "-f", &id]);
    assert!(out.status.success(), "delete {id}: {}", stderr(&out));
    bpf.unwrap()
}

fn narrowed() -> Value {
    let mut p = builtin_profile(false);
    narrow(
        &mut p,
        &["mkdir".into(), "mkdirat".into()],
        &DenyAction::Errno(1),
    )
    .unwrap();
    p
}

/// crun's translation quirks in one profile: a rule with the default action (skipped), unknown
/// names (skipped), ERRNO/TRACE without errnoRet (EPERM), an errnoRet past 16 bits (masked),
/// KILL vs KILL_THREAD, two conditions on one argument (ORed), valueTwo on a non-masked
/// operator (ignored), more than six conditions (the rest dropped), an empty `args`, and
/// architecture names in every spelling crun accepts. Only syscalls crun's init and `sleep`
/// never make are touched, so the container still starts.
fn quirks() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "x86", "SCMP_ARCH_x32", "X86"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["no_such_syscall", "mknodat"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["acct"], "action": "SCMP_ACT_TRACE"},
            {"names": ["swapon"], "action": "SCMP_ACT_TRAP"},
            {"names": ["swapoff"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["vhangup"], "action": "SCMP_ACT_KILL"},
            {"names": ["quotactl"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["syslog"], "action": "SCMP_ACT_LOG"},
            {"names": ["lookup_dcookie"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["uselib"], "action": "SCMP_ACT_ERRNO", "errnoRet": 65_538},
            {"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "args": []},
            {"names": ["setdomainname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22, "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
            {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97, "args": [
                {"index": 0, "value": 40, "valueTwo": 7, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 255, "valueTwo": 3, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["kcmp"], "action": "SCMP_ACT_ERRNO", "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_GT"},
                {"index": 0, "value": 9, "op": "SCMP_CMP_LT"},
                {"index": 1, "value": 2, "op": "SCMP_CMP_GE"},
                {"index": 2, "value": 3, "op": "SCMP_CMP_LE"},
                {"index": 3, "value": 4, "op": "SCMP_CMP_NE"},
                {"index": 4, "value": 5, "op": "SCMP_CMP_EQ"},
                {"index": 5, "value": 6, "op": "SCMP_CMP_EQ"}]}
        ]
    })
}

#[test]
fn compile_matches_what_crun_compiles() {
    require_containers!();
    require_crun_delegate!();
    let w = World::new();
    let mut cases = vec![
        ("builtin", builtin_profile(false)),
        ("narrowed", narrowed()),
        ("audit", builtin_profile(true)),
        ("quirks", quirks()),
    ];
    let podman = repo().join("test-bundles/out/podman/config.json");
    match std::fs::read(&podman) {
        Ok(bytes) => {
            let doc: Value = serde_json::from_slice(&bytes).unwrap();
            cases.push(("podman", doc["linux"]["seccomp"].clone()));
        }
        Err(e) => eprintln!("skip: podman profile: {}: {e}", podman.display()),
    }
    // containerd's captured spec carries no seccomp profile (ctr adds none by default).
    let containerd = repo().join("test-bundles/out/containerd/config.json");
    if let Ok(bytes) = std::fs::read(&containerd) {
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let p = &doc["linux"]["seccomp"];
        if p.is_null() {
            eprintln!("skip: containerd profile: none in {}", containerd.display());
        } else {
            cases.push(("containerd", p.clone()));
        }
    }
    for (name, profile) in &cases {
        let ours = compile(profile).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = crun_bpf(&w, name, profile);
        assert!(
            ours == theirs,
            "{name}: ours {} bytes, crun's {} bytes; first difference at byte {:?}",
            ours.len(),
            theirs.len(),
            ours.iter().zip(&theirs).position(|(a, b)| a != b)
        );
        eprintln!("{name}: {} instructions, identical", ours.len() / 8);
    }
}

#[test]
fn crun_loads_the_annotation_instead_of_compiling() {
    require_containers!();
    require_crun_delegate!();
    let w = World::new();
    let bpf = compile(&narrowed()).unwrap();
    let mut s = spec(
        "grep '^Seccomp:' /proc/self/status; if mkdir /tmp/x 2>/tmp/err; then echo MKDIR=ok; else echo MKDIR=fail; cat /tmp/err; fi",
    );
    // No linux.seccomp at all: whatever filter the container gets came from the annotation.
    assert!(s["linux"].get("seccomp").is_none());
    s["annotations"][BPF_ANNOTATION] =
        json!(base64::engine::general_purpose::STANDARD.encode(&bpf));
    let b = w.bundle("annotated", &s);
    let out = w.crun(&["run", "--bundle", b.to_str().unwrap(), "it-bpf-data"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status_field(&text, "Seccomp"), Some("2"), "{text}");
    assert!(text.contains("MKDIR=fail"), "{text}");
    assert!(text.contains("Operation not permitted"), "{text}");
}

const NO_MKDIR: &str = r#"
name = "no-mkdir"
[match]
annotations = { "org.example.profile" = "locked" }
[seccomp]
deny = ["mkdir", "mkdirat"]
"#;

/// Through ociguard (needs the `seccomp_cache::precompile` call in `create`): the final
/// profile's program is handed to crun, a workload's own program is not, and a retried create
/// writes the same bytes.
#[test]
fn ociguard_hands_crun_the_final_profile() {
    require_containers!();
    require_crun_delegate!();
    let w = World::new();
    w.policy("no-mkdir.toml", NO_MKDIR);
    let mut s = spec(
        "grep '^Seccomp:' /proc/self/status; if mkdir /tmp/x 2>/tmp/err; then echo MKDIR=ok; else echo MKDIR=fail; cat /tmp/err; fi",
    );
    s["annotations"]["org.example.profile"] = json!("locked");
    // A workload's own (allow-everything) program: enforce strips it.
    let allow_all = compile(&json!({"defaultAction": "SCMP_ACT_ALLOW"})).unwrap();
    s["annotations"][BPF_ANNOTATION] =
        json!(base64::engine::general_purpose::STANDARD.encode(&allow_all));
    let b = w.bundle("b", &s);

    for (attempt, id) in ["it-pre-1", "it-pre-2"].into_iter().enumerate() {
        let before = std::fs::read(b.join("config.json")).unwrap();
        let out = w.ociguard(&["run", "--bundle", b.to_str().unwrap(), id]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(status_field(&text, "Seccomp"), Some("2"), "{text}");
        assert!(text.contains("MKDIR=fail"), "{text}");
        assert!(text.contains("Operation not permitted"), "{text}");

        let after = std::fs::read(b.join("config.json")).unwrap();
        let written: Value = serde_json::from_slice(&after).unwrap();
        let want = compile(&written["linux"]["seccomp"]).unwrap();
        let got = base64::engine::general_purpose::STANDARD
            .decode(written["annotations"][BPF_ANNOTATION].as_str().unwrap())
            .unwrap();
        assert_eq!(got, want, "annotation is not the final profile's program");
        if attempt == 1 {
            assert_eq!(before, after, "a retried create rewrote config.json");
        }
    }
    let cache = w.path().join("state/seccomp-cache");
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Not a pass/fail benchmark: prints the numbers (`--nocapture`) and checks only that a cache
/// hit is cheaper than compiling, which is the point of the cache.
#[test]
fn timings() {
    const RUNS: usize = 200;
    let profile = builtin_profile(false);
    let compile_times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let bpf = compile(&profile).unwrap();
            let d = t.elapsed();
            assert!(!bpf.is_empty());
            d
        })
        .collect();
    let state = tempfile::tempdir().unwrap();
    let (_, hit) = bpf_for(state.path(), &profile).unwrap();
    assert!(!hit);
    let hit_times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            let (b64, hit) = bpf_for(state.path(), &profile).unwrap();
            let d = t.elapsed();
            assert!(hit && !b64.is_empty());
            d
        })
        .collect();
    let (c, h) = (median(compile_times), median(hit_times));
    eprintln!("builtin profile, median of {RUNS}: compile {c:?}, cache hit {h:?}");
    assert!(h < c, "cache hit {h:?} not faster than compile {c:?}");
}
