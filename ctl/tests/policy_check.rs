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

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skip: not root");
    false
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `policy check DIR` with `$OCIGUARD_CONFIG` set to `config`: exit code and stdout.
fn check_with_config(dir: &std::path::Path, config: &std::path::Path, json: bool) -> (i32, String) {
    let mut c = Command::new(CTL);
    c.args(["policy", "check"])
        .arg(dir)
        .env("OCIGUARD_CONFIG", config);
    if json {
        c.arg("--json");
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn a_world_writable_policy_is_reported_with_its_path() {
    if !is_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("web.toml");
    std::fs::write(&file, "name = \"web\"\n[match]\nimages = [\"x\"]\n").unwrap();
    chmod(&file, 0o666);
    let no_config = d.path().join("no-config.toml");
    let (code, out) = check_with_config(d.path(), &no_config, false);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "{0}: file is group- and world-writable (mode 0666); fix: chmod go-w {0}",
            file.display()
        )),
        "{out}"
    );
    assert!(out.contains("1 error(s)"), "{out}");

    let (code, out) = check_with_config(d.path(), &no_config, true);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["file"], file.display().to_string());
    assert!(v["errors"][0]["line"].is_null());
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("world-writable"));
}

#[test]
fn the_config_is_checked_and_its_admin_uid_applies() {
    if !is_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let pol = d.path().join("policies");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("web.toml"),
        "name = \"web\"\n[match]\nimages = [\"x\"]\n",
    )
    .unwrap();
    std::os::unix::fs::chown(&pol, Some(1000), None).unwrap();
    let config = d.path().join("config.toml");
    std::fs::write(&config, format!("policy_dir = \"{}\"\n", pol.display())).unwrap();
    // Owned by uid 1000: not trusted without admin_uid.
    let (code, out) = check_with_config(&pol, &config, false);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("owned by uid 1000, not root"), "{out}");
    // With it, trusted; the config's own policy_dir is used without DIR too.
    std::fs::write(
        &config,
        format!("policy_dir = \"{}\"\nadmin_uid = 1000\n", pol.display()),
    )
    .unwrap();
    let out = Command::new(CTL)
        .args(["policy", "check"])
        .env("OCIGUARD_CONFIG", &config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 policies valid"), "{text}");
    // A config that anyone could write is itself reported, with its path, and not believed.
    chmod(&config, 0o646);
    let (code, out) = check_with_config(&pol, &config, true);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let files: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    let config_s = config.display().to_string();
    let pol_s = pol.display().to_string();
    assert_eq!(files, [config_s.as_str(), pol_s.as_str()], "{out}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("file is world-writable (mode 0646)"),
        "{out}"
    );
}
