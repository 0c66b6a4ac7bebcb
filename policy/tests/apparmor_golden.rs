//! Generated AppArmor profiles: golden files (reviewed like code) and the real parser.
//!
//! Every profile rendered here, including those built from hostile strings that ociguard
//! accepts, is compiled with `apparmor_parser -Q -K` (compile everything, load nothing), which
//! works on kernels without AppArmor. Regenerate the golden files after an intended change with
//! `OCIGUARD_BLESS=1 cargo test -p ociguard-policy --test apparmor_golden` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ociguard_policy::apparmor::{check_exec_glob, render, Profile};
use ociguard_policy::load::parse_policy;
use ociguard_policy::LoadedPolicy;
use serde_json::{json, Value};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/apparmor")
}

fn parser() -> Option<PathBuf> {
    ["/sbin/apparmor_parser", "/usr/sbin/apparmor_parser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// `apparmor_parser -Q -K` on `text`; `Err(stderr)` if it does not compile. `None`: no parser.
fn compile(text: &str) -> Option<Result<(), String>> {
    let parser = parser()?;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("profile");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(parser)
        .args(["-Q", "-K"])
        .arg(&file)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Some(if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    })
}

fn assert_compiles(what: &str, text: &str) {
    match compile(text) {
        None => eprintln!("skip: apparmor_parser not installed; {what} not compiled"),
        Some(Ok(())) => {}
        Some(Err(stderr)) => panic!("{what} does not compile:\n{stderr}\n--- profile ---\n{text}"),
    }
}

fn policy(name: &str, body: &str) -> LoadedPolicy {
    let text = format!("name = \"{name}\"\n[match]\nimages = [\"x\"]\n{body}");
    parse_policy(Path::new("/etc/ociguard/policies/t.toml"), &text)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn spec(mounts: Value) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/app/server"], "cwd": "/"},
        "root": {"path": "rootfs"},
        "mounts": mounts
    })
}

fn bind(destination: &str, source: &str) -> Value {
    json!({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "ro"]})
}

/// Compare with (or, under OCIGUARD_BLESS=1, write) the golden file, then compile.
fn golden(case: &str, profile: &Profile) {
    let path = golden_dir().join(format!("{case}.profile"));
    if std::env::var_os("OCIGUARD_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, &profile.text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with OCIGUARD_BLESS=1 to create it)",
            path.display()
        )
    });
    assert!(
        want == profile.text,
        "{} differs from the rendered profile (OCIGUARD_BLESS=1 to update, then review):\n{}",
        path.display(),
        profile.text
    );
    assert_compiles(case, &profile.text);
}

#[test]
fn minimal() {
    let p = policy("web", "[apparmor]\nmode = \"if-available\"\n");
    let s = spec(json!([{"destination": "/proc", "type": "proc", "source": "proc"}]));
    let prof = render(&p, &s, false).unwrap();
    assert!(prof.secrets.is_empty());
    golden("minimal", &prof);
}

#[test]
fn kubernetes_pod() {
    let p = policy(
        "payments",
        r#"
[apparmor]
mode = "required"
deny_exec = ["/bin/{ba,da,}sh", "/usr/bin/{ba,da,z,}sh", "/{usr/,}bin/nc{,.openbsd,.traditional}",
             "/usr/bin/{apt,apt-get,dpkg,apk,yum,dnf}"]
secret_readers = ["/usr/local/bin/vault-agent"]
"#,
    );
    let pod = "/var/lib/kubelet/pods/1c7a0e2e-4b4b-4f55-9d7e-2f6f4d1b0e11/volumes";
    let s = spec(json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        bind("/etc/hosts", "/var/lib/kubelet/pods/1c7a/etc-hosts"),
        bind(
            "/var/run/secrets/kubernetes.io/serviceaccount",
            &format!("{pod}/kubernetes.io~projected/kube-api-access-7xk2p")
        ),
        bind("/etc/tls", &format!("{pod}/kubernetes.io~secret/payments-tls")),
        bind("/etc/payments", &format!("{pod}/kubernetes.io~configmap/payments-config")),
    ]));
    let prof = render(&p, &s, true).unwrap();
    assert_eq!(
        prof.secrets,
        [
            "/etc/tls",
            "/run/secrets/kubernetes.io/serviceaccount",
            "/var/run/secrets/kubernetes.io/serviceaccount"
        ]
    );
    golden("kubernetes-pod", &prof);
}

#[test]
fn allowed_exec_with_readers() {
    let p = policy(
        "locked",
        r#"
[apparmor]
mode = "if-available"
allowed_exec = ["/app/server", "/usr/bin/vault", "/bin/busybox"]
deny_exec = ["/bin/sh"]
secret_paths = ["/etc/app/key.pem"]
secret_readers = ["/usr/bin/vault"]
"#,
    );
    let s = spec(json!([bind(
        "/run/secrets/token",
        "/var/lib/docker/secrets/x"
    )]));
    golden("allowed-exec", &render(&p, &s, false).unwrap());
}

#[test]
fn hostile_but_accepted_strings() {
    let p = policy(
        "hostile",
        r#"
[apparmor]
mode = "required"
deny_exec = ["/opt/my tools/{run,go} now", "/usr/bin/[^a-z]*,#x", "/x/^y"]
secret_paths = ["/etc/my keys/a@b^c,#d", "/srv/ünïcode"]
secret_readers = ["/opt/reader with space"]
"#,
    );
    let s = spec(json!([
        bind("/run/secrets/db password", "/s1"),
        bind("/run/secrets/q\"uote\" r, /** ix,", "/s2"),
        bind("/run/secrets/back\\slash\\", "/s3"),
        bind("/run/secrets/{a,b}[c]*?^", "/s4"),
        bind("/run/secrets/@{HOME}/x", "/s5"),
        bind("/run/secrets/} profile evil { /** rwix, ", "/s6"),
        bind("/run/secrets/#comment", "/s7"),
        bind("/data/sec ret", "/v/kubernetes.io~secret/x y"),
    ]));
    let prof = render(&p, &s, true).unwrap();
    // Every hostile mount became exactly one quoted, escaped literal (plus its /var/run alias).
    assert_eq!(prof.secrets.len(), 2 + 1 + 2 * 7, "{:?}", prof.secrets);
    golden("hostile-accepted", &prof);
}

/// A deterministic generator (xorshift) of strings over an alphabet rich in AppArmor syntax.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn string(&mut self, pieces: &[&str], len: usize) -> String {
        let mut s = String::from("/");
        for _ in 0..len {
            s.push_str(pieces[(self.next() % pieces.len() as u64) as usize]);
        }
        s
    }
}

const HOSTILE: &[&str] = &[
    "a", "b", "bin", "/", "/", " ", "\"", "\\", "*", "**", "?", "[", "]", "[^", "{", "}", ",", "@",
    "@{", "#", "^", "$", "'", "(", ")", "..", ".", "-", "~", "\n", "\t", "\r", "\0", "é", "x,y",
    "{a,b}", "[ab]", "}\n", "->", "ix,", "deny", "profile",
];

#[test]
fn generated_hostile_mount_paths_are_refused_or_compile() {
    let p = policy("fuzz", "[apparmor]\nmode = \"required\"\n");
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    let mut batch = Vec::new();
    for i in 0..600 {
        let len = 1 + (g.next() % 12) as usize;
        let dest = format!("/run/secrets{}", g.string(HOSTILE, len));
        let s = spec(json!([bind(&dest, "/s")]));
        match render(&p, &s, false) {
            Ok(_) => {
                accepted += 1;
                batch.push(bind(&dest, &format!("/s{i}")));
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().contains("refusing"), "{e}");
                assert!(
                    dest.contains(|c: char| c.is_control()) || dest.contains(".."),
                    "refused without cause: {dest:?}: {e}"
                );
            }
        }
    }
    assert!(accepted > 100 && refused > 100, "{accepted} {refused}");
    // All accepted paths in one profile: one parser run.
    let prof = render(&p, &spec(Value::Array(batch)), false).unwrap();
    assert_compiles(
        "profile with every accepted generated mount path",
        &prof.text,
    );
}

#[test]
fn generated_hostile_exec_globs_are_refused_or_compile() {
    let mut g = Gen(0xd1b5_4a32_d192_ed03);
    let mut accepted = Vec::new();
    for _ in 0..3000 {
        let len = 1 + (g.next() % 8) as usize;
        let glob = g.string(HOSTILE, len);
        if check_exec_glob(&glob).is_ok() {
            accepted.push(glob);
        }
    }
    assert!(accepted.len() > 50, "only {} accepted", accepted.len());
    for chunk in accepted.chunks(100) {
        let list: Vec<String> = chunk
            .iter()
            .map(|g| serde_json::to_string(g).unwrap())
            .collect();
        let p = policy(
            "fuzz",
            &format!(
                "[apparmor]\nmode = \"required\"\ndeny_exec = [{}]\n",
                list.join(", ")
            ),
        );
        let prof = render(&p, &spec(json!([])), false).unwrap();
        assert_compiles("profile with generated deny_exec globs", &prof.text);
    }
}

#[test]
fn a_broken_profile_is_caught_by_the_parser() {
    // The compile check itself must be able to fail, or the tests above prove nothing.
    match compile("abi <abi/3.0>,\nprofile x {\n  deny \"/a\" rw\n}\n") {
        None => eprintln!("skip: apparmor_parser not installed"),
        Some(r) => assert!(r.is_err()),
    }
}
