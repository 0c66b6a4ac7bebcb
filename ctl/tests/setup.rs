//! `ociguardctl setup containerd` against a real containerd: Debian 12's shipped config (with a
//! private root, state and socket) is registered, and containerd then loads its CRI plugin with
//! the ociguard runtime; the snippet that was pasted by hand before (a `runtimes` table without
//! runc) is shown to break the CRI plugin, so the check can fail.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CTL: &str = env!("CARGO_BIN_EXE_ociguardctl");

fn debian_config(dir: &Path) -> String {
    format!(
        "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\n[grpc]\n  address = \"{d}/c.sock\"\n\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\n\
         [plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"{d}/opt\"\n",
        d = dir.display()
    )
}

/// containerd's status of its CRI plugin (`ok`, `error`) with `config`.
fn cri_status(dir: &Path, config: &Path) -> String {
    let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
    let mut child = Command::new("containerd")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let sock = dir.join("c.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&sock)
            .args(["plugins", "ls"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("io.containerd.grpc.v1") && l.contains(" cri "))
        {
            break line.split_whitespace().last().unwrap_or("").to_owned();
        }
        assert!(Instant::now() < deadline, "containerd did not answer");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Stopped by the pid this test started.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    );
    let _ = child.wait();
    status
}

#[test]
fn containerd_loads_cri_with_the_runtime_setup_registered() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skip: needs root to run containerd");
        return;
    }
    if Command::new("containerd")
        .arg("--version")
        .output()
        .is_err()
        || Command::new("ctr").arg("--version").output().is_err()
    {
        eprintln!("skip: containerd/ctr not installed (scripts/host-setup.sh test)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("ociguard-setup-")
        .tempdir_in("/run")
        .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, debian_config(dir.path())).unwrap();

    let setup = |extra: &[&str]| {
        Command::new(CTL)
            .args(["setup", "containerd", "--config"])
            .arg(&config)
            .args(extra)
            .output()
            .unwrap()
    };
    // --dry-run: a diff, nothing written.
    let before = std::fs::read_to_string(&config).unwrap();
    let out = setup(&["--dry-run"]);
    assert!(out.status.success());
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("+[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ociguard]"),
        "{diff}"
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    let out = setup(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(&config).unwrap();
    let out = setup(&[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to change"));
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        after,
        "idempotent"
    );
    assert_eq!(cri_status(dir.path(), &config), "ok", "{after}");

    // The hand-pasted snippet of before: CRI does not load.
    let mut pasted = debian_config(dir.path());
    pasted.push_str(
        "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ociguard]\n  runtime_type = \"io.containerd.runc.v2\"\n",
    );
    std::fs::write(&config, pasted).unwrap();
    assert_eq!(cri_status(dir.path(), &config), "error");
    // ... and setup repairs it.
    assert!(setup(&[]).status.success());
    assert_eq!(cri_status(dir.path(), &config), "ok");
}
