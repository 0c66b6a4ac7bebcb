//! A private containerd for the integration tests and `make bench`: its own root, state and
//! socket in a temp directory under /run, the CRI plugin disabled, stopped by the pid it started
//! (SIGTERM) and its directory removed when dropped. Never the node's containerd.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

#[derive(Debug)]
pub struct Containerd {
    child: Child,
    pub sock: PathBuf,
    namespace: &'static str,
    dir: Option<tempfile::TempDir>,
}

impl Containerd {
    /// Start it and wait (up to 10 s) until it answers; `ctr` works in `namespace`.
    pub fn start(namespace: &'static str) -> std::io::Result<Containerd> {
        let dir = tempfile::Builder::new()
            .prefix("ociguard-ctd-")
            .tempdir_in("/run")?;
        let sock = dir.path().join("containerd.sock");
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "version = 2\nroot = \"{r}/root\"\nstate = \"{r}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n",
                r = dir.path().display(),
                s = sock.display()
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        let c = Containerd {
            child,
            sock,
            namespace,
            dir: Some(dir),
        };
        for _ in 0..100 {
            if c.ctr(&["version"])?.status.success() {
                return Ok(c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "containerd did not answer within 10 s",
        ))
    }

    /// Its state directory (where task bundles go).
    pub fn state(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.path().join("state"))
    }

    /// `ctr --address SOCK -n NAMESPACE args...`
    pub fn ctr(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.sock)
            .args(["-n", self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Only the process started here, by its pid: SIGTERM, SIGKILL if that fails.
        let termed = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        if !termed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(dir) = self.dir.take() {
            // Snapshots are plain directories (no task ever ran): nothing is mounted.
            let _ = dir.close();
        }
    }
}
