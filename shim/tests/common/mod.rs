//! Shared helpers for the shim's integration tests: real bundles, real crun, as root.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod containerd;
pub mod docker;
pub mod monitor;
pub mod netns;
pub mod overlay;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

/// The `ociguard` under test: `OCIGUARD_TEST_OCIGUARD` when set (`make` points it at the
/// static musl build it installs and benchmarks), else this package's own build.
pub static OCIGUARD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| match std::env::var("OCIGUARD_TEST_OCIGUARD") {
        Ok(p) if !p.is_empty() => {
            assert!(
                Path::new(&p).exists(),
                "OCIGUARD_TEST_OCIGUARD={p} does not exist"
            );
            p
        }
        _ => env!("CARGO_BIN_EXE_ociguard").to_owned(),
    });

/// The delegate the integration tests run ociguard with: `OCIGUARD_TEST_DELEGATE` is `crun`
/// (the default) or `builtin` (youki's libcontainer inside ociguard). `make test` runs the
/// container tests once with each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delegate {
    Crun,
    Builtin,
}

pub static DELEGATE: std::sync::LazyLock<Delegate> =
    std::sync::LazyLock::new(
        || match std::env::var("OCIGUARD_TEST_DELEGATE").as_deref() {
            Ok("builtin") => Delegate::Builtin,
            Ok("crun") | Ok("") | Err(_) => Delegate::Crun,
            Ok(other) => panic!("OCIGUARD_TEST_DELEGATE={other}: expected crun or builtin"),
        },
    );

impl Delegate {
    /// config.toml's `runtime` value.
    pub fn setting(self) -> &'static str {
        match self {
            Delegate::Crun => "/usr/bin/crun",
            Delegate::Builtin => "builtin",
        }
    }
}

/// `Some(reason)` when the test checks something only crun does (its precompiled-filter
/// annotation, its state layout): the caller prints `skip:` and returns.
pub fn crun_only() -> Option<String> {
    (*DELEGATE != Delegate::Crun)
        .then(|| format!("checks crun itself; delegate under test is {:?}", *DELEGATE))
}

#[macro_export]
macro_rules! require_crun_delegate {
    () => {
        if let Some(why) = common::crun_only() {
            eprintln!("skip: {}", why);
            return;
        }
    };
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn rootfs() -> PathBuf {
    repo().join("test-bundles/out/rootfs")
}

/// `Some(reason)` when real containers cannot run here; the caller prints `skip:` and returns.
pub fn cannot_run_containers() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root".into());
    }
    if !Path::new("/usr/bin/crun").exists() {
        return Some("crun not installed (scripts/host-setup.sh)".into());
    }
    if !rootfs().join("bin/busybox").exists() {
        return Some(format!(
            "{} not built (test-bundles/build.sh)",
            rootfs().display()
        ));
    }
    None
}

#[macro_export]
macro_rules! require_containers {
    () => {
        if let Some(why) = common::cannot_run_containers() {
            eprintln!("skip: {}", why);
            return;
        }
    };
}

/// A scratch world: config.toml, policy dir, decision log, runtime root, bundles.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("ociguard-it-")
            .tempdir()
            .unwrap();
        let w = World { dir };
        std::fs::create_dir_all(w.policies()).unwrap();
        std::fs::create_dir_all(w.root()).unwrap();
        w.write_config("");
        w
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn policies(&self) -> PathBuf {
        self.path().join("policies")
    }
    pub fn root(&self) -> PathBuf {
        self.path().join("runtime-root")
    }
    pub fn config(&self) -> PathBuf {
        self.path().join("config.toml")
    }
    pub fn decisions(&self) -> PathBuf {
        self.path().join("decisions.jsonl")
    }
    /// config.toml with this world's paths, then `extra`; a key `extra` sets itself replaces the
    /// default one (TOML refuses a key given twice).
    pub fn write_config(&self, extra: &str) {
        let sets = |key: &str| {
            extra
                .lines()
                .any(|l| l.split('=').next().map(str::trim) == Some(key))
        };
        let mut text = String::new();
        for (key, value) in [
            ("runtime", PathBuf::from(DELEGATE.setting())),
            ("policy_dir", self.policies()),
            ("decision_log", self.decisions()),
            ("state_dir", self.path().join("state")),
        ] {
            if !sets(key) {
                text.push_str(&format!("{key} = \"{}\"\n", value.display()));
            }
        }
        text.push_str(extra);
        std::fs::write(self.config(), text).unwrap();
    }
    pub fn policy(&self, file: &str, text: &str) {
        std::fs::write(self.policies().join(file), text).unwrap();
    }
    /// A bundle directory with `spec` as config.json.
    pub fn bundle(&self, name: &str, spec: &Value) -> PathBuf {
        let b = self.path().join(name);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(
            b.join("config.json"),
            serde_json::to_vec_pretty(spec).unwrap(),
        )
        .unwrap();
        b
    }
    /// `ociguard --root <root> args...`
    pub fn ociguard(&self, args: &[&str]) -> Output {
        let mut c = Command::new(&*OCIGUARD);
        c.env("OCIGUARD_CONFIG", self.config())
            .arg("--root")
            .arg(self.root())
            .args(args);
        c.output().unwrap()
    }
    /// Like [`World::ociguard`] for commands that leave a container running (`create`,
    /// `run -d`): the container inherits stdio, so stdout goes to /dev/null and stderr to a
    /// file (a pipe would never reach EOF while the container lives).
    pub fn ociguard_detached(&self, args: &[&str]) -> Output {
        let err_path = self.path().join("detached.stderr");
        let err = std::fs::File::create(&err_path).unwrap();
        let status = Command::new(&*OCIGUARD)
            .env("OCIGUARD_CONFIG", self.config())
            .arg("--root")
            .arg(self.root())
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .status()
            .unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr: std::fs::read(&err_path).unwrap(),
        }
    }

    /// The runtime to give an engine: `<world>/bin/ociguard`, a script that sets
    /// OCIGUARD_CONFIG (engines pass no environment of ours through conmon or the shim) and
    /// execs ociguard. Named `ociguard`, so an engine's error shows the name an operator's would.
    pub fn engine_runtime(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.path().join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ociguard");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexport OCIGUARD_CONFIG={}\nexec {} \"$@\"\n",
                self.config().display(),
                *OCIGUARD
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `crun --root <root> args...`: crun itself, on this world's containers when crun is the
    /// delegate under test.
    pub fn crun(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/crun")
            .arg("--root")
            .arg(self.root())
            .args(args)
            .output()
            .unwrap()
    }
    /// The delegate under test, on this world's containers, without ociguard's policy work:
    /// crun, or ociguard's builtin runtime (which does none for these commands).
    pub fn delegate(&self, args: &[&str]) -> Output {
        match *DELEGATE {
            Delegate::Crun => self.crun(args),
            Delegate::Builtin => self.ociguard(args),
        }
    }
    /// Ids of this world's containers, as the delegate under test keeps them.
    pub fn containers(&self) -> Vec<String> {
        match *DELEGATE {
            Delegate::Crun => String::from_utf8_lossy(&self.crun(&["list", "-q"]).stdout)
                .lines()
                .map(str::to_owned)
                .collect(),
            Delegate::Builtin => std::fs::read_dir(self.root())
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().join("state.json").exists())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
    /// `ociguard run` to completion, then `delete -f`: (exit code, stdout + stderr).
    pub fn run_to_end(&self, id: &str, spec: &Value) -> (i32, String) {
        let b = self.bundle(id, spec);
        let out = self.ociguard(&["run", "--bundle", b.to_str().unwrap(), id]);
        let _ = self.delegate(&["delete", "-f", id]);
        (
            out.status.code().unwrap_or(-1),
            format!("{}{}", stdout(&out), stderr(&out)),
        )
    }

    /// Bind-mount a directory of the World holding `file` = `content` read-only at `dest`
    /// (a secret mount, as the kubelet's service-account token).
    pub fn mount_secret(&self, spec: &mut Value, dest: &str, file: &str, content: &str) {
        let dir = self
            .path()
            .join("secret-mounts")
            .join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), content).unwrap();
        spec["mounts"].as_array_mut().unwrap().push(
            json!({"destination": dest, "type": "bind", "source": dir, "options": ["rbind", "ro"]}),
        );
    }

    pub fn last_decision(&self) -> Value {
        let text = std::fs::read_to_string(self.decisions()).unwrap();
        serde_json::from_str(text.lines().last().unwrap()).unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Best effort: leave no container behind whatever the test did.
        for id in self.containers() {
            let _ = self.delegate(&["delete", "-f", &id]);
        }
    }
}

/// A minimal runnable spec: busybox rootfs (read-only), tmpfs /tmp, `sh -c script`.
pub fn spec(script: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
                "effective": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"],
                "permitted": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
        },
        "root": {"path": rootfs(), "readonly": true},
        "hostname": "it",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=65536k"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "annotations": {},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"]
        }
    })
}

/// The change of `kind` in a decision-log record (panics, showing the record, if there is none).
pub fn change(record: &Value, kind: &str) -> Value {
    record["decision"]["changes"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["kind"] == kind))
        .unwrap_or_else(|| panic!("no {kind} change in {record}"))
        .clone()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The `Seccomp:` value from a `/proc/self/status` dump.
pub fn status_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(field)
            .map(|v| v.trim_start_matches(':').trim())
    })
}
