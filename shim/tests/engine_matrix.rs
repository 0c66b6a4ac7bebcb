//! One policy, three engines: Podman and Docker configured by `ociguardctl setup ENGINE
//! --default` (Podman reading the containers.conf it wrote; a private dockerd reading the
//! daemon.json it merged) and containerd (`ctr --runc-binary`, a private containerd), each running the same
//! busybox image through ociguard with a private ociguardd. For each engine: the policy is
//! chosen by the image's *name* (a tag glob) and its label, which ociguard resolves from that
//! engine's own store (Docker and `ctr` write no image annotation; containerd's container is
//! started by digest, so the tag glob matches through the image's other names); it is in effect
//! in the container and in an `exec`; `ociguardctl ps` names the image; and a refusal reaches the
//! engine's own error text. Root only; each engine skips visibly when it is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::containerd::Containerd;
use common::docker::Docker;
use common::monitor::{bins, ctl, monitored_world, Bins, Monitor};
use common::*;
use serde_json::Value;

const POLICY: &str = r#"name = "mx"
[match]
images = ["localhost/ociguard-mx-*:*"]
labels = { "org.ociguard.profile" = "locked" }
[seccomp]
deny = ["mkdir", "mkdirat"]
[process]
no_new_privileges = true
drop_capabilities = ["CAP_NET_RAW"]
"#;
const LABEL: &str = "org.ociguard.profile=locked";
/// Prints the effective capabilities and whether mkdir works.
const PROBE: &str = "grep '^CapEff:' /proc/self/status; if mkdir /tmp/d 2>/dev/null; then echo MKDIR=ok; else echo MKDIR=fail; fi";
/// CAP_NET_RAW is bit 13 of the capability sets.
const NET_RAW: u64 = 1 << 13;
const ULIMITS: &[&str] = &[
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// What the matrix needs of an engine.
trait Engine {
    fn name(&self) -> &'static str;
    /// How the decision names where the labels came from (prefix).
    fn store(&self) -> &'static str;
    /// Import the busybox image labelled `LABEL`; the reference to run it by.
    fn import(&self, w: &World) -> String;
    /// `run` with `flag` (`--rm`: to the end, removing the container; `-d`: detached).
    fn launch(&self, flag: &str, image: &str, name: &str, cmd: &[&str]) -> Output;
    /// Run `sh -c script` to the end, removing the container.
    fn run(&self, image: &str, name: &str, script: &str) -> Output {
        self.launch("--rm", image, name, &["sh", "-c", script])
    }
    /// Start `sleep 600` detached.
    fn start(&self, image: &str, name: &str) -> Output {
        self.launch("-d", image, name, &["sleep", "600"])
    }
    /// Run `sh -c script` in the running container, privileged where the engine can.
    fn exec(&self, name: &str, script: &str) -> Output;
    /// The container's id as the runtime sees it.
    fn runtime_id(&self, name: &str) -> String;
    fn remove(&self, name: &str);
}

/// Podman with the containers.conf `ociguardctl setup podman --default` wrote as its only
/// config (`CONTAINERS_CONF`): ociguard is its default runtime, no `--runtime` flag.
struct Podman {
    conf: std::path::PathBuf,
}

/// The busybox image labelled `LABEL`, imported into Podman as `image`.
fn podman_import(image: &str) {
    let tar = repo().join("test-bundles/out/image.tar");
    let out = Command::new("podman")
        .args(["import", "--change", &format!("LABEL {LABEL}")])
        .arg(&tar)
        .arg(image)
        .output()
        .unwrap();
    assert!(out.status.success(), "podman import: {}", stderr(&out));
}

impl Podman {
    fn podman(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", &self.conf)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Engine for Podman {
    fn name(&self) -> &'static str {
        "podman"
    }
    fn store(&self) -> &'static str {
        "containers/storage "
    }
    fn import(&self, _: &World) -> String {
        let image = "localhost/ociguard-mx-podman:1";
        podman_import(image);
        image.to_owned()
    }
    fn launch(&self, flag: &str, image: &str, name: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["run", flag, "--name", name, "--network", "none"];
        args.extend_from_slice(ULIMITS);
        args.extend_from_slice(&["--tmpfs", "/tmp", image]);
        args.extend_from_slice(cmd);
        self.podman(&args)
    }
    fn exec(&self, name: &str, script: &str) -> Output {
        self.podman(&["exec", "--privileged", name, "sh", "-c", script])
    }
    fn runtime_id(&self, name: &str) -> String {
        stdout(&self.podman(&["inspect", "--format", "{{.Id}}", name]))
            .trim()
            .to_owned()
    }
    fn remove(&self, name: &str) {
        let _ = self.podman(&["rm", "-f", "-t", "0", name]);
    }
}

struct DockerEngine(Docker);

impl Engine for DockerEngine {
    fn name(&self) -> &'static str {
        "docker"
    }
    fn store(&self) -> &'static str {
        "docker "
    }
    fn import(&self, _: &World) -> String {
        let image = "localhost/ociguard-mx-docker:1";
        let tar = repo().join("test-bundles/out/image.tar");
        let out = self
            .0
            .docker(&[
                "import",
                "--change",
                &format!("LABEL {LABEL}"),
                tar.to_str().unwrap(),
                image,
            ])
            .unwrap();
        assert!(out.status.success(), "docker import: {}", stderr(&out));
        image.to_owned()
    }
    fn launch(&self, flag: &str, image: &str, name: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["run", flag, "--network", "none", "--name", name];
        args.extend_from_slice(&["--tmpfs", "/tmp", image]);
        args.extend_from_slice(cmd);
        self.0.docker(&args).unwrap()
    }
    fn exec(&self, name: &str, script: &str) -> Output {
        self.0
            .docker(&["exec", "--privileged", name, "sh", "-c", script])
            .unwrap()
    }
    fn runtime_id(&self, name: &str) -> String {
        stdout(
            &self
                .0
                .docker(&["inspect", "--format", "{{.Id}}", name])
                .unwrap(),
        )
        .trim()
        .to_owned()
    }
    fn remove(&self, name: &str) {
        let _ = self.0.docker(&["rm", "-f", name]);
    }
}

struct Ctr {
    ctd: Containerd,
    runtime: std::path::PathBuf,
}

impl Ctr {
    fn ctr(&self, args: &[&str]) -> Output {
        self.ctd.ctr(args).unwrap()
    }
}

impl Engine for Ctr {
    fn name(&self) -> &'static str {
        "containerd"
    }
    fn store(&self) -> &'static str {
        "containerd "
    }
    fn import(&self, w: &World) -> String {
        // containerd imports OCI archives: Podman makes one of the same labelled image.
        let base = "localhost/ociguard-mx-ctr";
        let staged = format!("{base}:1");
        podman_import(&staged);
        let archive = w.path().join("mx.tar");
        let out = Command::new("podman")
            .args(["save", "--format", "oci-archive", "-o"])
            .arg(&archive)
            .arg(&staged)
            .output()
            .unwrap();
        assert!(out.status.success(), "podman save: {}", stderr(&out));
        let _ = Command::new("podman").args(["rmi", "-f", &staged]).output();
        // Once by tag, once by digest: the container is started by the digest reference,
        // whose only tag glob match is the image's other name.
        for extra in [&[][..], &["--digests"][..]] {
            let mut args = vec!["image", "import", "--base-name", base];
            args.extend_from_slice(extra);
            args.push(archive.to_str().unwrap());
            let out = self.ctr(&args);
            assert!(out.status.success(), "ctr import: {}", stderr(&out));
        }
        let names = stdout(&self.ctr(&["image", "ls", "-q"]));
        assert!(names.lines().any(|l| l == format!("{base}:1")), "{names}");
        names
            .lines()
            .find(|l| l.starts_with(&format!("{base}@sha256:")))
            .unwrap_or_else(|| panic!("no digest reference among {names}"))
            .to_owned()
    }
    fn launch(&self, flag: &str, image: &str, name: &str, cmd: &[&str]) -> Output {
        let rt = self.runtime.to_str().unwrap();
        let mut args = vec!["run", flag, "--runc-binary", rt, image, name];
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }
    fn exec(&self, name: &str, script: &str) -> Output {
        self.ctr(&["task", "exec", "--exec-id", "mx", name, "sh", "-c", script])
    }
    fn runtime_id(&self, name: &str) -> String {
        name.to_owned()
    }
    fn remove(&self, name: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", name]);
        for _ in 0..50 {
            if self.ctr(&["task", "rm", "-f", name]).status.success() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.ctr(&["container", "rm", name]);
    }
}

fn cap_eff(text: &str) -> u64 {
    let hex = text
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {text:?}"));
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

fn decision_for(w: &World, runtime_id: &str) -> Value {
    let text = std::fs::read_to_string(w.decisions()).unwrap();
    text.lines()
        .rev()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|d| d["id"] == runtime_id)
        .unwrap_or_else(|| panic!("no decision for {runtime_id}"))
}

/// The whole matrix row for one engine.
fn exercise(engine: &dyn Engine, w: &World, b: &Bins) {
    let which = engine.name();
    let monitor = Monitor::started(w, b, &[]);
    let image = engine.import(w);

    // 1. Chosen by name and label, in effect in the container.
    let name = format!("mx-{which}-run");
    let out = engine.run(&image, &name, PROBE);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{which} run: {}{}",
        text,
        stderr(&out)
    );
    assert!(text.contains("MKDIR=fail"), "{which}: {text}");
    assert_eq!(cap_eff(&text) & NET_RAW, 0, "{which}: {text}");
    let d = w.last_decision();
    let facts = &d["decision"]["facts"];
    assert_eq!(d["decision"]["policy"], "mx", "{which}: {d}");
    assert_eq!(facts["image"], image.as_str(), "{which}: {d}");
    assert!(
        facts["image_digest"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:")),
        "{which}: {d}"
    );
    assert!(
        facts["labels_source"]
            .as_str()
            .is_some_and(|s| s.starts_with(engine.store())),
        "{which}: {d}"
    );

    // 2. Held in an exec (privileged where the engine has the flag), and the monitor knows
    //    the container by its image.
    let name = format!("mx-{which}-exec");
    let out = engine.start(&image, &name);
    assert!(out.status.success(), "{which} start: {}", stderr(&out));
    let id = engine.runtime_id(&name);
    assert_eq!(decision_for(w, &id)["decision"]["policy"], "mx");
    let out = engine.exec(&name, PROBE);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{which} exec: {}{}",
        text,
        stderr(&out)
    );
    assert!(text.contains("MKDIR=fail"), "{which} exec: {text}");
    assert_eq!(cap_eff(&text) & NET_RAW, 0, "{which} exec: {text}");
    let rec = monitor.wait_for("the container's record", || {
        let out = ctl(w, b, &["ps", "--json"]);
        serde_json::from_slice::<Vec<Value>>(&out.stdout)
            .ok()?
            .into_iter()
            .find(|r| r["id"] == id.as_str())
    });
    assert_eq!(rec["image"]["name"], image.as_str(), "{which}: {rec}");
    assert_eq!(
        rec["image"]["digest"], facts["image_digest"],
        "{which}: {rec}"
    );
    let table = stdout(&ctl(w, b, &["ps"]));
    let short: String = id.chars().take(12).collect();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&short) && l.contains(image.as_str())),
        "{which}: IMAGE column: {table}"
    );
    engine.remove(&name);

    // 3. A refusal, in the engine's own words.
    w.policy("broken.toml", "name = \"broken\"\nbogus = 1\n");
    let out = engine.run(&image, &format!("mx-{which}-refused"), "true");
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{which}: a broken policy must refuse"
    );
    assert!(err.contains("unknown field `bogus`"), "{which}: {err}");
    assert!(err.contains("broken.toml"), "{which}: {err}");
    std::fs::remove_file(w.policies().join("broken.toml")).unwrap();
    engine.remove(&format!("mx-{which}-refused"));
    if which == "podman" {
        let _ = Command::new("podman").args(["rmi", "-f", &image]).output();
    }
}

/// A monitored World with the matrix's policy; `labels` is its `[labels]` table's body.
fn world(b: &Bins, labels: &str) -> World {
    let w = monitored_world(b, &format!("[labels]\n{labels}"));
    w.policy("mx.toml", POLICY);
    w
}

/// `ociguardctl setup ENGINE --default` with the World's runtime wrapper as the binary.
fn setup(w: &World, b: &Bins, engine: &str, config: &Path) {
    let out = ctl(
        w,
        b,
        &[
            "setup",
            engine,
            "--default",
            "--binary",
            w.engine_runtime().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "setup {engine}: {}", stderr(&out));
}

fn available(tool: &str) -> bool {
    ["/usr/bin", "/usr/sbin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

#[test]
fn podman() {
    require_containers!();
    if !available("podman") {
        eprintln!("skip: podman not installed");
        return;
    }
    let b = bins();
    let w = world(&b, "");
    let conf = w.path().join("containers.conf");
    setup(&w, &b, "podman", &conf);
    exercise(&Podman { conf }, &w, &b);
}

#[test]
fn docker() {
    require_containers!();
    if let Some(why) = Docker::unavailable() {
        eprintln!("skip: {why}");
        return;
    }
    let b = bins();
    // The data root is known once dockerd runs, and dockerd needs the runtime's path first:
    // the World's config is written again with it (the wrapper reads it on every call).
    let w = world(&b, "");
    let daemon_json = w.path().join("daemon.json");
    std::fs::write(&daemon_json, r#"{"log-level": "warn"}"#).unwrap();
    setup(&w, &b, "docker", &daemon_json);
    let d = Docker::start_with_config(&daemon_json).unwrap();
    let w2 = format!("docker_root = \"{}\"\n", d.data_root().display());
    let text = std::fs::read_to_string(w.config()).unwrap();
    std::fs::write(w.config(), format!("{text}{w2}")).unwrap();
    exercise(&DockerEngine(d), &w, &b);
}

#[test]
fn containerd() {
    require_containers!();
    if !available("ctr") || !available("podman") {
        eprintln!("skip: ctr, or podman (to build the OCI archive), not installed");
        return;
    }
    let ctd = Containerd::start("ociguard-mx").unwrap();
    let b = bins();
    let w = world(
        &b,
        &format!("containerd_socket = \"{}\"\n", ctd.sock.display()),
    );
    let runtime = w.engine_runtime();
    exercise(&Ctr { ctd, runtime }, &w, &b);
}
