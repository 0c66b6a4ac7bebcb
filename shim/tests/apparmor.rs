//! AppArmor end to end: `required` and `if-available` on a kernel without AppArmor (real crun),
//! the load path against a stand-in `apparmor_parser` that records its argv, `exec` holding new
//! processes to the container's profile, and a real-kernel test where AppArmor is enabled.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use common::*;
use ociguard_policy::change::Change;
use ociguard_policy::{decide, PolicySet};
use ociguard_shim::apparmor::{self, AppArmorError, Host, Loaded};
use ociguard_shim::container_state::{record_path, ContainerRecord};
use serde_json::{json, Value};

/// Tests here write executable scripts and spawn processes. A fork in one thread while another
/// still holds a script open for writing makes exec fail with ETXTBSY; one at a time avoids it.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn policy(mode: &str) -> String {
    format!(
        r#"
name = "aa"
[match]
annotations = {{ "org.example.profile" = "aa" }}
[apparmor]
mode = "{mode}"
deny_exec = ["/usr/bin/{{nc,ncat}}"]
secret_paths = ["/etc/app/key.pem"]
"#
    )
}

fn with_secrets(mut spec: Value, secret_file: &Path) -> Value {
    spec["annotations"]["org.example.profile"] = json!("aa");
    let mounts = spec["mounts"].as_array_mut().unwrap();
    // The rootfs is read-only: mount points for the secrets are created in a tmpfs.
    mounts.push(json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}));
    for dest in ["/run/secrets/token", "/run/secrets/db password"] {
        mounts.push(json!({"destination": dest, "type": "bind", "source": secret_file, "options": ["rbind", "ro"]}));
    }
    spec
}

fn secret_file(w: &World) -> PathBuf {
    let f = w.path().join("secret");
    std::fs::write(&f, "s3cret\n").unwrap();
    f
}

/// A delegate that records its argv and exits 0: for tests that never need a container.
fn fake_runtime(w: &World) {
    let fake = w.path().join("fake-runtime");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}/runtime-argv\n",
            w.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    w.write_config(&format!("runtime = \"{}\"\n", fake.display()));
}

#[test]
fn required_refuses_create_on_a_host_without_apparmor() {
    let _g = serial();
    if apparmor::kernel_enabled() {
        eprintln!("skip: this kernel has AppArmor; the refusal is for hosts without it");
        return;
    }
    let w = World::new();
    fake_runtime(&w);
    w.policy("aa.toml", &policy("required"));
    let b = w.bundle("b", &with_secrets(spec("true"), &secret_file(&w)));
    let before = std::fs::read(b.join("config.json")).unwrap();
    let out = w.ociguard(&["create", "--bundle", b.to_str().unwrap(), "it-aa-required"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("policy \"aa\" requires AppArmor")
            && err.contains("this host lacks it")
            && err.contains("/sys/module/apparmor/parameters/enabled"),
        "{err}"
    );
    assert!(
        !w.path().join("runtime-argv").exists(),
        "the runtime was called"
    );
    assert_eq!(std::fs::read(b.join("config.json")).unwrap(), before);
    let record = record_path(&w.path().join("state"), Some(&w.root()), "it-aa-required");
    assert!(!record.exists(), "a container record was written");
    let d = w.last_decision();
    assert_eq!(d["result"], "refused");
    assert!(
        d["error"].as_str().unwrap().contains("requires AppArmor"),
        "{d}"
    );
}

#[test]
fn if_available_runs_via_crun_without_a_profile_and_records_why() {
    let _g = serial();
    if apparmor::kernel_enabled() {
        eprintln!("skip: this kernel has AppArmor; this test is for hosts without it");
        return;
    }
    require_containers!();
    let w = World::new();
    w.policy("aa.toml", &policy("if-available"));
    let script = "cat /run/secrets/token; cat '/run/secrets/db password'; echo done";
    let b = w.bundle("b", &with_secrets(spec(script), &secret_file(&w)));
    let out = w.ociguard(&["run", "--bundle", b.to_str().unwrap(), "it-aa-ifavail"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without AppArmor nothing can deny the read; the container runs as crun alone would.
    assert_eq!(text, "s3cret\ns3cret\ndone\n");
    let written: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    assert!(
        written["process"].get("apparmorProfile").is_none(),
        "{}",
        written["process"]
    );
    let d = w.last_decision();
    assert_eq!(d["result"], "applied");
    let unavailable = change(&d, "apparmor_unavailable");
    assert!(
        unavailable["reason"]
            .as_str()
            .unwrap()
            .contains("kernel has no AppArmor"),
        "{unavailable}"
    );
}

#[test]
fn a_hostile_secret_mount_refuses_create_and_sets_nothing() {
    let _g = serial();
    let w = World::new();
    fake_runtime(&w);
    w.policy("aa.toml", &policy("if-available"));
    let mut s = with_secrets(spec("true"), &secret_file(&w));
    s["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/run/secrets/x\"}\nprofile evil flags=(unconfined) {", "type": "bind",
        "source": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~secret/x"}));
    let b = w.bundle("b", &s);
    let before = std::fs::read(b.join("config.json")).unwrap();
    let out = w.ociguard(&["create", "--bundle", b.to_str().unwrap(), "it-aa-hostile"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a secret mount but its destination contains a control character"),
        "{err}"
    );
    assert!(!w.path().join("runtime-argv").exists());
    assert_eq!(std::fs::read(b.join("config.json")).unwrap(), before);
    assert!(!w.path().join("state/apparmor").exists());
    assert_eq!(w.last_decision()["result"], "refused");
}

#[test]
fn exec_process_files_get_the_containers_profile() {
    let _g = serial();
    let w = World::new();
    fake_runtime(&w);
    let state = w.path().join("state");
    let confined = "ociguard-aa-0123456789ab";
    for (id, profile) in [("c-aa", Some(confined)), ("c-none", None)] {
        let spec = match profile {
            Some(p) => json!({"process": {"apparmorProfile": p}}),
            None => json!({"process": {}}),
        };
        let r = ContainerRecord::from_spec(
            id,
            Path::new("/b"),
            "aa",
            "sha256:x",
            ociguard_policy::Mode::Enforce,
            &spec,
        );
        assert_eq!(r.apparmor_profile.as_deref(), profile);
        r.save(&record_path(&state, Some(&w.root()), id)).unwrap();
    }
    for (id, want) in [("c-aa", Some(confined)), ("c-none", None)] {
        let file = w.path().join(format!("{id}.json"));
        std::fs::write(
            &file,
            r#"{"user":{"uid":0,"gid":0},"args":["/bin/sh"],"cwd":"/","apparmorProfile":"unconfined"}"#,
        )
        .unwrap();
        let out = w.ociguard(&["exec", "--process", file.to_str().unwrap(), id]);
        assert!(out.status.success(), "{}", stderr(&out));
        let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            doc.get("apparmorProfile").and_then(Value::as_str),
            want,
            "{doc}"
        );
    }
    let out = w.ociguard(&["exec", "--apparmor", "unconfined", "c-aa", "/bin/sh"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--apparmor unconfined"),
        "{}",
        stderr(&out)
    );
    let out = w.ociguard(&["exec", "--apparmor", confined, "c-aa", "/bin/sh"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A fake AppArmor host: `enabled` = Y, a securityfs whose `profiles` list the stand-in parser
/// appends to, and the parser recording argv and environment.
struct FakeHost {
    dir: tempfile::TempDir,
    host: Host,
}

impl FakeHost {
    fn new(parser_body: &str) -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("enabled"), "Y\n").unwrap();
        std::fs::create_dir(d.join("securityfs")).unwrap();
        std::fs::write(d.join("securityfs/profiles"), "").unwrap();
        let parser = d.join("apparmor_parser");
        std::fs::write(
            &parser,
            format!(
                "#!/bin/sh\necho \"$@\" >> {d}/argv\nenv | sort > {d}/env\nfor f; do :; done\n{parser_body}\n",
                d = d.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&parser, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = Host {
            enabled_param: d.join("enabled"),
            securityfs: d.join("securityfs"),
            parser,
            cache_dir: d.join("state/apparmor"),
        };
        FakeHost { dir, host }
    }
    /// Loads what it is given: lists the profile named in the file.
    fn loading() -> FakeHost {
        FakeHost::new(
            "name=$(sed -n 's/^profile \\([^ ]*\\) flags=.*/\\1/p' \"$f\")\necho \"$name (enforce)\" >> \"$(dirname \"$0\")/securityfs/profiles\"",
        )
    }
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("argv"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

const CONFIG: &str = r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["/app"],"cwd":"/","apparmorProfile":"docker-default"},"root":{"path":"rootfs"},"annotations":{"org.example.profile":"aa"},"mounts":[{"destination":"/run/secrets/SECRET","type":"bind","source":"/s"}]}"#;

fn policies(mode: &str, apparmor_mode: &str) -> PolicySet {
    let text = format!("mode = \"{mode}\"\n{}", policy(apparmor_mode));
    PolicySet::from_texts([(Path::new("/p/aa.toml"), text.as_str())]).unwrap()
}

/// Decide and prepare as `create::plan` does, against `host`.
fn prepare(
    host: &Host,
    set: &PolicySet,
    secret: &str,
) -> (
    ociguard_policy::Rewritten,
    Option<apparmor::AppArmorPlan>,
    Result<(), AppArmorError>,
) {
    let config = CONFIG.replace("SECRET", secret);
    let mut r = decide(config.as_bytes(), Path::new("config.json"), set).unwrap();
    let policy = set
        .get(&r.decision.policy, &r.decision.policy_digest)
        .unwrap();
    match apparmor::prepare_on(host, policy, &mut r) {
        Ok(plan) => (r, plan, Ok(())),
        Err(e) => (r, None, Err(e)),
    }
}

#[test]
fn load_path_replaces_and_caches_by_digest() {
    let _g = serial();
    let fake = FakeHost::loading();
    let h = &fake.host;
    let set = policies("enforce", "required");
    let (r, plan, res) = prepare(h, &set, "db");
    res.unwrap();
    let plan = plan.unwrap();
    assert!(plan.load);
    let p = &plan.profile;
    assert_eq!(r.document["process"]["apparmorProfile"], p.name.as_str());
    // The identity hook records the profile in effect from this annotation.
    assert_eq!(
        r.document["annotations"]["org.ociguard.apparmor.digest"],
        p.digest.as_str()
    );
    assert!(r.to_bytes() != CONFIG.replace("SECRET", "db").as_bytes());
    assert!(r.decision.changes.contains(&Change::AppArmorProfile {
        name: p.name.clone(),
        digest: p.digest.clone(),
        applied: true,
        secrets: vec![
            "/etc/app/key.pem".into(),
            "/run/secrets/db".into(),
            "/var/run/secrets/db".into()
        ],
        replaced: Some("docker-default".into()),
    }));

    assert_eq!(h.ensure_loaded(p).unwrap(), Loaded::Now);
    let hex = p.digest.strip_prefix("sha256:").unwrap();
    let file = h.cache_dir.join(format!("{hex}.profile"));
    assert_eq!(fake.calls(), [format!("-r -K {}", file.display())]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), p.text);
    assert_eq!(
        std::fs::read_to_string(h.cache_dir.join(hex)).unwrap(),
        format!("{}\n", p.name)
    );
    // The parser got absolute paths and a minimal environment, nothing of ours.
    let env = std::fs::read_to_string(fake.dir.path().join("env")).unwrap();
    let keys: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(
        keys.iter()
            .all(|k| ["LC_ALL", "PATH", "PWD", "SHLVL", "_"].contains(k)),
        "{env}"
    );
    assert!(
        env.contains("PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"),
        "{env}"
    );

    // A second container with the same policy and mounts: no parser run.
    let (_, plan2, _) = prepare(h, &set, "db");
    assert_eq!(plan2.as_ref().unwrap().profile, *p);
    assert_eq!(h.ensure_loaded(p).unwrap(), Loaded::Cached);
    assert_eq!(fake.calls().len(), 1);

    // Different secret mounts: a different profile, by name, never a replacement of the first.
    let (_, plan3, _) = prepare(h, &set, "other");
    let p3 = plan3.unwrap().profile;
    assert_ne!(p3.name, p.name);
    assert_eq!(h.ensure_loaded(&p3).unwrap(), Loaded::Now);
    assert_eq!(fake.calls().len(), 2);

    // The kernel lost its profiles (reboot, aa-teardown): the marker alone is not trusted.
    std::fs::write(h.securityfs.join("profiles"), "").unwrap();
    assert_eq!(h.ensure_loaded(p).unwrap(), Loaded::Now);
    assert_eq!(fake.calls().len(), 3);
    assert!(fake.calls()[2].starts_with("-r "));
}

#[test]
fn a_failing_parser_is_a_clear_error_and_nothing_is_cached() {
    let _g = serial();
    let fake = FakeHost::new(
        "echo \"AppArmor parser error for $f in profile $f at line 7: syntax error, unexpected TOK_ID\" >&2\nexit 1",
    );
    let h = &fake.host;
    let set = policies("enforce", "if-available");
    let (_, plan, res) = prepare(h, &set, "db");
    res.unwrap();
    let p = plan.unwrap().profile;
    let err = h.ensure_loaded(&p).unwrap_err();
    assert!(matches!(err, AppArmorError::Parser { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("could not compile and load AppArmor profile")
            && msg.contains(&p.name)
            && msg.contains("syntax error, unexpected TOK_ID"),
        "{msg}"
    );
    let hex = p.digest.strip_prefix("sha256:").unwrap();
    assert!(
        !h.cache_dir.join(hex).exists(),
        "marker written after a failure"
    );
    // Retried: the parser runs again (a failure is never cached).
    assert!(h.ensure_loaded(&p).is_err());
    assert_eq!(fake.calls().len(), 2);

    // Success without the kernel listing the profile is not trusted either.
    let fake = FakeHost::new("exit 0");
    let err = fake.host.ensure_loaded(&p).unwrap_err();
    assert!(matches!(err, AppArmorError::NotLoaded { .. }), "{err}");
    assert!(!fake.host.cache_dir.join(hex).exists());
}

#[test]
fn prepare_follows_mode_and_availability() {
    let _g = serial();
    let absent = Host {
        enabled_param: PathBuf::from("/nonexistent/enabled"),
        ..FakeHost::loading().host
    };

    // required + no AppArmor: refused, with the reason.
    let (_, _, res) = prepare(&absent, &policies("enforce", "required"), "db");
    let msg = res.unwrap_err().to_string();
    assert!(
        msg.contains("requires AppArmor") && msg.contains("/nonexistent/enabled"),
        "{msg}"
    );

    // if-available + no AppArmor: recorded, nothing set, profile still rendered for explain.
    let (r, plan, res) = prepare(&absent, &policies("enforce", "if-available"), "db");
    res.unwrap();
    let plan = plan.unwrap();
    assert!(!plan.load);
    assert_eq!(r.document["process"]["apparmorProfile"], "docker-default");
    assert!(r.document["annotations"]
        .get("org.ociguard.apparmor.digest")
        .is_none());
    assert!(r.decision.changes.iter().any(|c| matches!(
        c,
        Change::AppArmorUnavailable { reason } if reason.contains("kernel has no AppArmor")
    )));

    // Audit mode, even with AppArmor and `required`: rendered and recorded, never set or loaded.
    let fake = FakeHost::loading();
    let (r, plan, res) = prepare(&fake.host, &policies("audit", "required"), "db");
    res.unwrap();
    assert!(!plan.unwrap().load);
    assert_eq!(r.document["process"]["apparmorProfile"], "docker-default");
    assert!(r
        .decision
        .changes
        .iter()
        .any(|c| matches!(c, Change::AppArmorProfile { applied: false, .. })));
    let (_, _, res) = prepare(&absent, &policies("audit", "required"), "db");
    res.unwrap();

    // Off: nothing at all.
    let (r, plan, res) = prepare(&fake.host, &policies("enforce", "off"), "db");
    res.unwrap();
    assert!(plan.is_none());
    assert!(!r.decision.changes.iter().any(|c| matches!(
        c,
        Change::AppArmorProfile { .. } | Change::AppArmorUnavailable { .. }
    )));
    assert!(fake.calls().is_empty(), "prepare must not load anything");
}

/// The digest annotation is the identity hook's word for "this profile is in effect": one the
/// engine passed in never survives a create that sets no profile.
#[test]
fn a_forged_apparmor_digest_does_not_survive() {
    let _g = serial();
    let absent = Host {
        enabled_param: PathBuf::from("/nonexistent/enabled"),
        ..FakeHost::loading().host
    };
    let config = CONFIG.replace("SECRET", "db").replace(
        r#""org.example.profile":"aa""#,
        r#""org.example.profile":"aa","org.ociguard.apparmor.digest":"sha256:forged""#,
    );
    for (mode, aa) in [
        ("enforce", "if-available"),
        ("enforce", "off"),
        ("audit", "required"),
    ] {
        let set = policies(mode, aa);
        let mut r = decide(config.as_bytes(), Path::new("config.json"), &set).unwrap();
        let policy = set
            .get(&r.decision.policy, &r.decision.policy_digest)
            .unwrap();
        apparmor::prepare_on(&absent, policy, &mut r).unwrap();
        assert!(
            r.document["annotations"]
                .get("org.ociguard.apparmor.digest")
                .is_none(),
            "{mode} {aa}: {}",
            r.document["annotations"]
        );
    }
}

/// Where AppArmor is enabled: a real profile, loaded by the real parser, confines a real
/// container. Elsewhere it says why it did not run.
#[test]
fn real_kernel_confines_the_container() {
    let _g = serial();
    if !apparmor::kernel_enabled() {
        eprintln!("skip: this kernel has no AppArmor (/sys/module/apparmor/parameters/enabled)");
        return;
    }
    require_containers!();
    let w = World::new();
    let parser = ociguard_policy::RuntimeConfig::default().apparmor_parser;
    if !parser.exists() {
        eprintln!("skip: {} not installed", parser.display());
        return;
    }
    w.policy("aa.toml", &policy("required"));
    let script = "cat /proc/self/attr/current; if cat /run/secrets/token 2>/dev/null; then echo READ=ok; else echo READ=denied; fi";
    let b = w.bundle("b", &with_secrets(spec(script), &secret_file(&w)));
    let out = w.ociguard(&["run", "--bundle", b.to_str().unwrap(), "it-aa-real"]);
    let text = stdout(&out);
    let written: Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).unwrap()).unwrap();
    let name = written["process"]["apparmorProfile"]
        .as_str()
        .unwrap()
        .to_owned();
    // Unload what this test loaded, whatever the outcome.
    let cache = w.path().join("state/apparmor");
    for e in std::fs::read_dir(&cache).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "profile") {
            let _ = std::process::Command::new(&parser)
                .arg("-R")
                .arg(e.path())
                .output();
        }
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(name.starts_with("ociguard-aa-"), "{name}");
    assert!(text.contains(&format!("{name} (enforce)")), "{text}");
    assert!(text.contains("READ=denied"), "{text}");
}
