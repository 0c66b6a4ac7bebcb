//! An overlay rootfs as engines mount one per container: the busybox image (plus a second
//! busybox at [`READER`], a program that is not `/bin/busybox`) as the lower layer, a writable
//! upper layer, unmounted when dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{rootfs, World};

/// A second busybox binary in the image: a program other tests can tell from `/bin/busybox`.
pub const READER: &str = "/usr/local/bin/busybox";

/// An overlay rootfs: the busybox image (plus a second busybox at READER, the one allowed
/// secret reader) as the lower layer, a writable upper layer; unmounted when dropped.
pub struct Overlay {
    pub merged: PathBuf,
}

impl Overlay {
    pub fn new(w: &World, name: &str) -> Overlay {
        Overlay::with(w, name, |_| {})
    }

    /// With a dynamic loader, the C library and dash of the host in the image, as
    /// distribution images have them: `ld.so /bin/dash` runs a shell without exec'ing it.
    pub fn with_loader(w: &World, name: &str) -> Overlay {
        Overlay::with(w, name, |lower| {
            for (from, to) in [
                ("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2"),
                (
                    "/lib/x86_64-linux-gnu/libc.so.6",
                    "lib/x86_64-linux-gnu/libc.so.6",
                ),
                ("/bin/dash", "bin/dash"),
            ] {
                let to = lower.join(to);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                // cp -L: the host's loader path is a symlink into /lib/x86_64-linux-gnu.
                let st = Command::new("cp")
                    .arg("-L")
                    .arg(from)
                    .arg(&to)
                    .status()
                    .unwrap();
                assert!(st.success(), "copy {from}");
            }
        })
    }

    pub fn with(w: &World, name: &str, extra: impl Fn(&std::path::Path)) -> Overlay {
        let base = w.path().join(format!("ovl-{name}"));
        let (lower, upper, work, merged) = (
            base.join("lower"),
            base.join("upper"),
            base.join("work"),
            base.join("merged"),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let cp = Command::new("cp")
            .arg("-a")
            .arg(rootfs())
            .arg(&lower)
            .status()
            .unwrap();
        assert!(cp.success());
        std::fs::create_dir_all(lower.join("usr/local/bin")).unwrap();
        std::fs::copy(lower.join("bin/busybox"), lower.join(&READER[1..])).unwrap();
        extra(&lower);
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(st.success(), "mount overlay");
        // An image is unpacked well before its container starts: what the copy just wrote
        // must not look as if it had been written after start (drop-exec compares ctimes).
        std::thread::sleep(Duration::from_millis(50));
        Overlay { merged }
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.merged).status();
    }
}
