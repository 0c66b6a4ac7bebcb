//! The containerd follower's container → image answers, published as files so that
//! `ociguard create` reads them without a round trip to any daemon.
//!
//! Layout, in a directory only root can enter (next to the monitor's socket):
//!
//! ```text
//! <dir>/session          "<pid> <start time> <nonce>\n"   while the follower follows containerd
//! <dir>/<ns>/<id>        "<nonce>\n<image name>\n<manifest digest>\n"
//! ```
//!
//! A container's file is written once its create event has been applied and its image's digest
//! is known, removed with its delete event. The whole directory is emptied when the follower
//! starts or stops following (events may have been missed in between), and every file names the
//! session it belongs to: a reader trusts a file only if its nonce is the session's and the
//! session's process is alive with the recorded start time. So a monitor that was killed, or
//! restarted, or lost containerd, leaves nothing a reader would believe. Files are replaced by
//! rename (never read half-written); on tmpfs, so nothing is fsynced.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::procfs;
use crate::protocol::ImageRef;

const SESSION: &str = "session";
/// Longest file read (names are bounded by containerd; this bounds a hostile file).
const MAX_FILE: u64 = 8 * 1024;

/// Can `s` name a file in the directory (a containerd namespace or container id)?
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Replace `path` by a file holding `text` (a temp file in the same directory, renamed).
pub(crate) fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path).map(drop).map_err(|e| e.error)
}

fn read_bounded(path: &Path) -> Option<String> {
    use io::Read;
    let mut s = String::new();
    fs::File::open(path)
        .ok()?
        .take(MAX_FILE)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

/// Where the follower publishes: next to the monitor's admin socket, in its root-only
/// directory (`ociguard` derives the same path from its `monitor_socket`).
pub fn dir(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or(Path::new("/run/ociguard"))
        .join("containerd-images")
}

/// The monitor's side: one per following session.
#[derive(Debug)]
pub struct Publisher {
    dir: PathBuf,
    nonce: String,
}

impl Publisher {
    /// Empty `dir` (creating it 0700) and start session `serial` of this process.
    pub fn begin(dir: &Path, serial: u64) -> io::Result<Publisher> {
        wipe(dir)?;
        std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)?;
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let pid = std::process::id();
        let start = procfs::stat(pid)?.start_time;
        let nonce = format!("{pid}-{start}-{serial}");
        write_atomic(&dir.join(SESSION), &format!("{pid} {start} {nonce}\n"))?;
        Ok(Publisher {
            dir: dir.to_owned(),
            nonce,
        })
    }

    /// Publish container `id`'s image (ignored for names that cannot be files).
    pub fn put(&self, ns: &str, id: &str, image: &ImageRef) -> io::Result<()> {
        if !plain(ns) || !plain(id) || image.name.contains('\n') || image.target.contains('\n') {
            return Ok(());
        }
        let d = self.dir.join(ns);
        fs::create_dir_all(&d)?;
        write_atomic(
            &d.join(id),
            &format!("{}\n{}\n{}\n", self.nonce, image.name, image.target),
        )
    }

    pub fn remove(&self, ns: &str, id: &str) {
        if plain(ns) && plain(id) {
            let _ = fs::remove_file(self.dir.join(ns).join(id));
        }
    }

    /// The session ends: nothing published stays believable.
    pub fn end(&self) {
        if let Err(e) = wipe(&self.dir) {
            log::warn!("empty {}: {e}", self.dir.display());
        }
    }
}

/// Remove the session file first (readers stop believing), then everything else.
fn wipe(dir: &Path) -> io::Result<()> {
    match fs::remove_file(dir.join(SESSION)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `ociguard create`'s side: the published image of container `id` in `ns`, if a live
/// following session published it.
pub fn read(dir: &Path, ns: &str, id: &str) -> Option<ImageRef> {
    if !plain(ns) || !plain(id) {
        return None;
    }
    let entry = read_bounded(&dir.join(ns).join(id))?;
    let session = read_bounded(&dir.join(SESSION))?;
    let mut s = session.split_ascii_whitespace();
    let (pid, start, nonce) = (
        s.next()?.parse::<u32>().ok()?,
        s.next()?.parse::<u64>().ok()?,
        s.next()?,
    );
    let mut lines = entry.lines();
    if lines.next()? != nonce {
        return None;
    }
    let (name, target) = (lines.next()?, lines.next()?);
    if name.is_empty() || !target.starts_with("sha256:") {
        return None;
    }
    // The session's process must still be the one that wrote it.
    let st = procfs::stat(pid).ok()?;
    if st.start_time != start || st.exited {
        return None;
    }
    Some(ImageRef {
        name: name.to_owned(),
        target: target.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageRef {
        ImageRef {
            name: "docker.io/x:1".into(),
            target: format!("sha256:{}", "ab".repeat(32)),
        }
    }

    #[test]
    fn published_while_the_session_lives() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("containerd");
        let p = Publisher::begin(&dir, 1).unwrap();
        assert_eq!(read(&dir, "k8s.io", "c1"), None);
        p.put("k8s.io", "c1", &image()).unwrap();
        assert_eq!(read(&dir, "k8s.io", "c1"), Some(image()));
        assert_eq!(read(&dir, "default", "c1"), None);
        p.remove("k8s.io", "c1");
        assert_eq!(read(&dir, "k8s.io", "c1"), None);
        // hostile names are neither written nor read
        p.put("..", "c1", &image()).unwrap();
        p.put("k8s.io", "../session", &image()).unwrap();
        assert_eq!(read(&dir, "..", "c1"), None);
        assert!(!d.path().join("c1").exists());
        // a new session does not believe the old one's files
        p.put("k8s.io", "c2", &image()).unwrap();
        let stale = fs::read_to_string(dir.join("k8s.io/c2")).unwrap();
        let p2 = Publisher::begin(&dir, 2).unwrap();
        assert_eq!(
            read(&dir, "k8s.io", "c2"),
            None,
            "begin empties the directory"
        );
        fs::create_dir_all(dir.join("k8s.io")).unwrap();
        fs::write(dir.join("k8s.io/c2"), stale).unwrap();
        assert_eq!(read(&dir, "k8s.io", "c2"), None, "another session's nonce");
        p2.put("k8s.io", "c2", &image()).unwrap();
        assert_eq!(read(&dir, "k8s.io", "c2"), Some(image()));
        // a session whose process is gone is not believed
        let text = fs::read_to_string(dir.join(SESSION)).unwrap();
        let fields: Vec<&str> = text.split_whitespace().collect();
        fs::write(
            dir.join(SESSION),
            format!("{} 1 {}\n", fields[0], fields[2]),
        )
        .unwrap();
        assert_eq!(read(&dir, "k8s.io", "c2"), None, "start time differs");
        p2.end();
        assert!(!dir.exists());
    }
}
