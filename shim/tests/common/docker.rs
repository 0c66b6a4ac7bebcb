//! A private dockerd for the integration tests: its own data root, exec root and socket in a
//! temp directory under /run, `--add-runtime ociguard=<wrapper>`, no iptables and no bridge
//! (the tests use `--network none`), stopped by the pid it started (SIGTERM, then SIGKILL) and
//! its directory removed when dropped. Never the node's dockerd. dockerd starts its own
//! containerd under the exec root when none runs at the default socket; that one stops with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[derive(Debug)]
pub struct Docker {
    child: Child,
    pub sock: PathBuf,
    dir: Option<tempfile::TempDir>,
}

impl Docker {
    /// `None` (with the reason) when dockerd is not installed here.
    pub fn unavailable() -> Option<String> {
        ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
            .iter()
            .all(|p| !Path::new(p).exists())
            .then(|| "dockerd not installed (docker.io; scripts/host-setup.sh test)".to_owned())
    }

    /// Start dockerd with `runtime` registered as runtime `ociguard` (`--add-runtime`) and wait
    /// (up to 30 s) until it answers.
    pub fn start(runtime: &Path) -> std::io::Result<Docker> {
        Docker::start_with(&[
            "--add-runtime".into(),
            format!("ociguard={}", runtime.display()).into(),
        ])
    }

    /// Start dockerd with its runtimes from `daemon.json` at `config` (`--config-file`).
    pub fn start_with_config(config: &Path) -> std::io::Result<Docker> {
        Docker::start_with(&["--config-file".into(), config.into()])
    }

    fn start_with(extra: &[std::ffi::OsString]) -> std::io::Result<Docker> {
        // Short: dockerd's containerd puts sockets under the exec root (108-byte limit).
        let dir = tempfile::Builder::new().prefix("ogd-").tempdir_in("/run")?;
        let sock = dir.path().join("d.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("x"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(extra)
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let d = Docker {
            child,
            sock,
            dir: Some(dir),
        };
        for _ in 0..300 {
            if d.docker(&["version"])?.status.success() {
                return Ok(d);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("dockerd did not answer within 30 s: {}", d.log()),
        ))
    }

    /// `docker -H unix://SOCK args...`
    pub fn docker(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args)
            .stdin(Stdio::null())
            .env(
                "DOCKER_CONFIG",
                self.dir.as_ref().map_or(Path::new("/"), |d| d.path()),
            )
            .output()
    }

    /// Its `--data-root` (containers' and images' records).
    pub fn data_root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.path().join("data"))
    }

    /// dockerd's own log (for failure messages).
    pub fn log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.path().join("dockerd.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Only the process started here, by its pid: SIGTERM, SIGKILL if it has not gone in 20 s.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take() {
            // Mounts dockerd left behind (it unmounts its own on a clean stop).
            let _ = Command::new("umount")
                .arg("-R")
                .arg("-l")
                .arg(dir.path().join("x"))
                .output();
            let _ = dir.close();
        }
    }
}
