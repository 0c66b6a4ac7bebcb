//! A private ociguardd for a test's World (its config, `run/monitor.sock`, its own state), the
//! other workspace binaries the monitor tests drive, and `ociguardctl` against that World.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::World;

#[path = "../../../monitor/tests/common/bins.rs"]
mod bins;
pub use bins::sibling_bin;

#[derive(Debug, Clone)]
pub struct Bins {
    pub ociguardd: PathBuf,
    pub hook: PathBuf,
    pub ctl: PathBuf,
}

/// The monitor's binaries, or why they are missing.
pub fn bins() -> Bins {
    Bins {
        ociguardd: sibling_bin("ociguardd"),
        hook: sibling_bin("ociguard-hook"),
        ctl: sibling_bin("ociguardctl"),
    }
}

/// A World whose config runs crun with this build's hook and a private ociguardd (socket
/// `run/monitor.sock`, spool `spool/`), plus `extra` config lines.
pub fn monitored_world(b: &Bins, extra: &str) -> World {
    let w = World::new();
    w.write_config(&format!(
        "hook_path = \"{}\"\nmonitor_socket = \"{}\"\nspool_dir = \"{}\"\n{extra}",
        b.hook.display(),
        w.path().join("run/monitor.sock").display(),
        w.path().join("spool").display()
    ));
    w
}

/// `ociguardctl args...` with the World's config.
pub fn ctl(w: &World, b: &Bins, args: &[&str]) -> Output {
    Command::new(&b.ctl)
        .env("OCIGUARD_CONFIG", w.config())
        .args(args)
        .output()
        .unwrap()
}

/// Events of container `id` whose kind `wants` (their details parsed from JSON where they are
/// JSON), from `ociguardctl events`, waiting up to 5 s for at least `want`.
pub fn events_where(
    w: &World,
    b: &Bins,
    id: &str,
    wants: impl Fn(&str) -> bool,
    want: usize,
) -> Vec<serde_json::Value> {
    use serde_json::Value;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = ctl(w, b, &["events", "--json"]);
        assert!(out.status.success(), "{}", super::stderr(&out));
        let got: Vec<Value> = super::stdout(&out)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["id"] == id && wants(e["kind"].as_str().unwrap_or("")))
            .map(|mut e| {
                let raw = e["detail"].as_str().unwrap_or("{}").to_owned();
                e["detail"] = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
                e
            })
            .collect();
        if got.len() >= want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Does the monitor at `sock` answer a ping?
pub fn ping(sock: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"{\"op\":\"ping\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).is_ok() && line.contains("\"ok\":true")
}

/// An ociguardd for one World (socket `run/monitor.sock` of the World's config), started and
/// stopped by the test, SIGKILLed on drop. Its log accumulates across restarts.
#[derive(Debug)]
pub struct Monitor {
    bin: PathBuf,
    root: PathBuf,
    /// The BPF enforcer's pins (bpffs): the test's own, removed on drop, which detaches its
    /// programs (they outlive ociguardd by design).
    bpf_pins: PathBuf,
    config: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl Monitor {
    pub fn new(w: &World, b: &Bins, extra: &[&str]) -> Monitor {
        let name = w
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Monitor {
            bin: b.ociguardd.clone(),
            bpf_pins: PathBuf::from(format!("/sys/fs/bpf/ociguard-test-{name}")),
            root: w.path().to_owned(),
            config: w.config(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        }
    }

    /// `new` + `start`.
    pub fn started(w: &World, b: &Bins, extra: &[&str]) -> Monitor {
        let mut m = Monitor::new(w, b, extra);
        m.start();
        m
    }

    pub fn bpf_pins(&self) -> &Path {
        &self.bpf_pins
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("run/monitor.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("ociguardd.log")).unwrap_or_default()
    }

    /// Start it and wait until it answers.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("ociguardd.log"))
            .unwrap();
        self.child = Some(
            Command::new(&self.bin)
                .env("OCIGUARD_CONFIG", &self.config)
                .arg("--state-dir")
                .arg(self.root.join("monitor-state"))
                .arg("--bpf-pin-dir")
                .arg(&self.bpf_pins)
                .args(&self.extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let sock = self.socket();
        self.wait_for("the monitor to answer", || ping(&sock).then_some(()));
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Poll `f` until it has an answer; fail with the monitor's log after 15 s.
    pub fn wait_for<T>(&self, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; ociguardd log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.bpf_pins);
    }
}
