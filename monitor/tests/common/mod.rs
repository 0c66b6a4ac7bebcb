//! Helpers for the monitor's integration tests: a real ociguardd on a private socket, journal
//! and spool in a temp directory.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ociguard_monitor::protocol::{Lifecycle, Request, Response};
use ociguard_monitor::record::Identity;
use ociguard_monitor::Client;

#[path = "bins.rs"]
mod bins;
pub use bins::sibling_bin;

pub const OCIGUARDD: &str = env!("CARGO_BIN_EXE_ociguardd");

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub struct Monitor {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra: Vec<String>,
}

impl Monitor {
    pub fn new(extra: &[&str]) -> Monitor {
        let dir = tempfile::Builder::new()
            .prefix("ociguardd-it-")
            .tempdir()
            .unwrap();
        let mut m = Monitor {
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        m.start();
        m
    }
    /// A monitor that is not running yet (its paths exist).
    pub fn stopped(extra: &[&str]) -> Monitor {
        let dir = tempfile::Builder::new()
            .prefix("ociguardd-it-")
            .tempdir()
            .unwrap();
        Monitor {
            dir,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/monitor.sock")
    }
    pub fn workload_socket(&self) -> PathBuf {
        self.dir.path().join("workload/whoami.sock")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn journal(&self) -> PathBuf {
        self.state_dir().join("journal.jsonl")
    }
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("ociguardd.log")
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let child = Command::new(OCIGUARDD)
            .env("OCIGUARD_CONFIG", self.dir.path().join("no-config.toml"))
            .arg("--socket")
            .arg(self.socket())
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--spool-dir")
            .arg(self.spool())
            // The BPF enforcer's programs outlive ociguardd by design: tests of the
            // record and its socket leave none behind (shim/tests/behavior.rs loads it).
            .arg("--no-bpf")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(r) = self.request(&Request::Ping) {
                if r.ok {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "ociguardd did not come up: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    pub fn client(&self) -> Client {
        Client::connect(&self.socket(), Duration::from_secs(5)).unwrap()
    }
    pub fn request(&self, req: &Request) -> Result<Response, ociguard_monitor::ClientError> {
        ociguard_monitor::client::request(&self.socket(), req, Duration::from_secs(5))
    }
    pub fn list(&self) -> Vec<Identity> {
        let r = self.request(&Request::List).unwrap();
        assert!(r.ok, "{r:?}");
        r.containers.unwrap()
    }
    pub fn register(&self, id: Identity) -> Response {
        self.request(&Request::Register {
            event: Lifecycle::Created,
            identity: id,
        })
        .unwrap()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn ident(id: &str) -> Identity {
    Identity {
        id: id.to_owned(),
        bundle: format!("/run/test-bundles/{id}"),
        ..Default::default()
    }
}

/// A bundle dir with a minimal config.json, and the OCI state a runtime would pass a hook.
pub fn bundle_and_state(dir: &Path, id: &str, pid: u32, annotations: &str) -> (PathBuf, String) {
    let b = dir.join(format!("bundle-{id}"));
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(
        b.join("config.json"),
        format!(r#"{{"ociVersion":"1.0.2","annotations":{annotations}}}"#),
    )
    .unwrap();
    let state = format!(
        r#"{{"ociVersion":"1.0.0","id":"{id}","status":"created","pid":{pid},"bundle":"{}"}}"#,
        b.display()
    );
    (b, state)
}

/// Run a binary with `stdin` as its input.
pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The program may exit without reading its input (bad arguments): a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
