//! `ociguardctl policy check`: each kind of bad policy is reported at the right file:line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::process::Command;

const CTL: &str = env!("CARGO_BIN_EXE_ociguardctl");

fn check(files: &[(&str, &str)], json: bool) -> (i32, String) {
    let d = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    let mut c = Command::new(CTL);
    c.args(["policy", "check"]).arg(d.path());
    if json {
        c.arg("--json");
    }
    let out = c.output().unwrap();
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace(&format!("{}/", d.path().display()), "");
    (out.status.code().unwrap(), text)
}

#[test]
fn valid_directory() {
    let (code, text) = check(
        &[
            ("default.toml", "name = \"default\"\n"),
            (
                "web.toml",
                "name = \"web\"\n[match]\nlabels = { \"org.ociguard.profile\" = \"web\" }\n",
            ),
        ],
        false,
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("2 policies valid"), "{text}");
    assert!(text.contains("sha256:"), "{text}");
}

#[test]
fn shipped_example_policies_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/policies");
    let out = Command::new(CTL)
        .args(["policy", "check"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("4 policies valid"), "{text}");
}

#[test]
fn every_kind_of_error_at_its_line() {
    let cases: &[(&str, &str, &str)] = &[
        ("syntax.toml", "name = \"a\"\n[match\n", "syntax.toml:2:"),
        ("unknown-key.toml", "name = \"b\"\n[match]\nimages = [\"x\"]\ncolour = 1\n", "unknown-key.toml:4:"),
        ("syscall.toml", "name = \"c\"\n[match]\nimages = [\"x\"]\n[seccomp]\ndeny = [\"mkdir\",\n  \"frobnicate\"]\n", "syscall.toml:6:"),
        ("cap.toml", "name = \"d\"\n[match]\nimages = [\"x\"]\n[process]\ndrop_capabilities = [\"CAP_TELEPORT\"]\n", "cap.toml:5:"),
        ("glob.toml", "name = \"e\"\n[match]\nimages = [\"reg/{a,b\"]\n", "glob.toml:3:"),
        ("digest.toml", "name = \"f\"\n[match]\ndigests = [\"sha256:xyz\"]\n", "digest.toml:3:"),
        ("label-not-selectable.toml", "name = \"g\"\nselectable_by_label = false\n[match]\nlabels = { tier = \"web\" }\n", "label-not-selectable.toml:4:"),
        ("mode.toml", "name = \"h\"\nmode = \"permissive\"\n[match]\nimages = [\"x\"]\n", "mode.toml:2:"),
    ];
    for (file, text, want) in cases {
        let (code, out) = check(&[(file, text)], false);
        assert_eq!(code, 1, "{file}: {out}");
        assert!(out.contains(want), "{file}: expected {want} in {out}");
    }
    // Duplicates and identical selectors across files.
    let (code, out) = check(
        &[
            ("a.toml", "name = \"same\"\n[match]\nimages = [\"x\"]\n"),
            ("b.toml", "name = \"same\"\n[match]\nimages = [\"y\"]\n"),
            ("c.toml", "name = \"c\"\n[match]\nimages = [\"x\"]\n"),
        ],
        false,
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("b.toml:1:") && out.contains("already used"),
        "{out}"
    );
    assert!(
        out.contains("c.toml:1:") && out.contains("same [match]"),
        "{out}"
    );
}

#[test]
fn json_output() {
    let (code, out) = check(
        &[(
            "x.toml",
            "name = \"x\"\n[match]\nimages = [\"x\"]\n[seccomp]\ndeny = [\"nope\"]\n",
        )],
        true,
    );
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 5);
    assert!(v["errors"][0]["file"].as_str().unwrap().ends_with("x.toml"));
}
