//! Real engine-written config.json files (captured by test-bundles/build.sh) through the whole
//! decision: everything oci-spec does not model survives, errnoRet included, and a second pass
//! changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};

use ociguard_policy::{decide, PolicySet};
use serde_json::Value;

fn captured(engine: &str) -> Option<(PathBuf, Vec<u8>)> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../test-bundles/out/{engine}/config.json"));
    match std::fs::read(&p) {
        Ok(b) => Some((p, b)),
        Err(_) => {
            eprintln!(
                "skip: {} not captured (run test-bundles/build.sh as root with {engine})",
                p.display()
            );
            None
        }
    }
}

fn policies() -> PolicySet {
    let deny = "name = \"default\"\n[seccomp]\ndeny = [\"mkdir\", \"mkdirat\", \"personality\"]\n[process]\ndrop_capabilities = [\"CAP_NET_RAW\"]\n";
    PolicySet::from_texts([(Path::new("/p/default.toml"), deny)]).unwrap()
}

/// Remove what the policy legitimately changes, so the rest can be compared for equality.
fn without_policy_edits(mut v: Value) -> Value {
    if let Some(a) = v.get_mut("annotations").and_then(Value::as_object_mut) {
        a.retain(|k, _| !k.starts_with("org.ociguard."));
        if a.is_empty() {
            v.as_object_mut().unwrap().remove("annotations");
        }
    }
    v["process"]["capabilities"] = Value::Null;
    v["linux"]["seccomp"] = Value::Null;
    v
}

fn check(engine: &str) {
    let Some((path, bytes)) = captured(engine) else {
        return;
    };
    // Plain round trip: parse + serialise is lossless.
    let doc = ociguard_policy::spec::parse_config(&bytes, &path).unwrap();
    let orig: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc, orig);
    let reparsed: Value = serde_json::from_slice(&ociguard_policy::spec::to_bytes(&doc)).unwrap();
    assert_eq!(reparsed, orig);

    let set = policies();
    let r = decide(&bytes, &path, &set).unwrap();
    let rewritten = r.to_bytes();
    assert!(rewritten != bytes);
    // Everything outside what the policy edits is identical.
    assert_eq!(
        without_policy_edits(r.document.clone()),
        without_policy_edits(orig.clone())
    );
    // Every errnoRet of the original profile survives on its rule.
    if let Some(rules) = orig["linux"]["seccomp"]["syscalls"].as_array() {
        let new_rules = r.document["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap();
        for rule in rules.iter().filter(|r| r.get("errnoRet").is_some()) {
            let names = rule["names"].as_array().unwrap();
            let kept: Vec<&Value> = names
                .iter()
                .filter(|n| !["mkdir", "mkdirat", "personality"].contains(&n.as_str().unwrap()))
                .collect();
            if kept.is_empty() {
                continue;
            }
            assert!(
                new_rules.iter().any(|n| n["errnoRet"] == rule["errnoRet"]
                    && n["action"] == rule["action"]
                    && n["args"] == rule["args"]),
                "rule lost its errnoRet: {rule}"
            );
        }
        assert_eq!(
            orig["linux"]["seccomp"]["defaultErrnoRet"],
            r.document["linux"]["seccomp"]["defaultErrnoRet"]
        );
    }
    // personality had conditional allow rules in Podman's profile: all gone, one deny rule.
    let text = r.document["linux"]["seccomp"].to_string();
    let profile = &r.document["linux"]["seccomp"];
    for rule in profile["syscalls"].as_array().unwrap() {
        let names: Vec<&str> = rule["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        if names.contains(&"personality") || names.contains(&"mkdir") {
            assert_ne!(rule["action"], "SCMP_ACT_ALLOW", "{text}");
        }
    }
    // Idempotent.
    let again = decide(&rewritten, &path, &set).unwrap();
    assert!(
        again.to_bytes() == rewritten,
        "second create changed the file"
    );
}

#[test]
fn podman_config_round_trips() {
    check("podman");
}

#[test]
fn containerd_config_round_trips() {
    check("containerd");
}
