//! What `/proc` says about a process: start time, liveness, cgroup, namespaces, boot id.
//!
//! Reads only; every function takes a host pid. The [`ProcView`] trait lets the store's lookup
//! logic be tested against a fake process table.

use std::io::{self, Read};

/// Field 22 of `/proc/<pid>/stat` and what else a lookup needs from that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Clock ticks after boot: together with the pid it names one process for a boot's life.
    pub start_time: u64,
    /// `Z` (zombie) or `X` (dead): the process has exited but may not be reaped yet.
    pub exited: bool,
    /// Field 52, the wait(2) status, meaningful only for an exited process.
    pub exit_code: Option<u32>,
    /// Field 4.
    pub ppid: u32,
}

/// Parse a `/proc/<pid>/stat` line. `comm` (field 2) may contain spaces and parentheses, so
/// fields are counted from the *last* `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state); field N is fields[N - 3].
    let state = fields.first()?;
    let start_time = fields.get(22 - 3)?.parse().ok()?;
    let exit_code = fields.get(52 - 3).and_then(|f| f.parse().ok());
    let ppid = fields.get(4 - 3).and_then(|f| f.parse().ok()).unwrap_or(0);
    Some(ProcStat {
        ppid,
        start_time,
        exited: matches!(*state, "Z" | "X" | "x"),
        exit_code,
    })
}

/// Read a small `/proc` file with as few system calls as it takes: open, one `read`, close.
/// (`read_to_string` adds an fstat and an lseek for its size hint and a second `read` for EOF;
/// at several microseconds each on a VM that doubles the cost of a `whois`.) procfs generates
/// these files whole on every read: when the content fits, one short read is all of it, so a
/// short read ends the file; only a full buffer reads on.
pub fn read_small(path: &str) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    read_whole(|buf| f.read(buf))
}

/// The whole content through `read`, as [`read_small`] describes.
fn read_whole(mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> io::Result<String> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = read(&mut buf[len..])?;
        len += n;
        if n == 0 || len < buf.len() {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// [`parse_stat`] of `pid`'s stat text, a format error naming the file.
fn stat_of(pid: u32, text: &str) -> io::Result<ProcStat> {
    parse_stat(text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: unexpected format"),
        )
    })
}

/// [`parse_ns_link`] of the link at `path`, a format error naming it.
fn ns_of(path: &str, target: &std::ffi::OsStr) -> io::Result<u64> {
    parse_ns_link(&target.to_string_lossy()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected link {}", target.to_string_lossy()),
        )
    })
}

pub fn stat(pid: u32) -> io::Result<ProcStat> {
    stat_of(pid, &read_small(&format!("/proc/{pid}/stat"))?)
}

/// The cgroup that identifies a container's processes, from `/proc/<pid>/cgroup` text: the
/// unified (v2) path when it is not the root, else the first v1 controller path that is not
/// the root (hybrid hosts, where crun creates the container's cgroup in every hierarchy).
pub fn parse_cgroup(text: &str) -> Option<String> {
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if path == "/" || path.is_empty() {
            continue;
        }
        if hier == "0" && controllers.is_empty() {
            return Some(path.to_owned());
        }
        if v1.is_none() {
            v1 = Some(path.to_owned());
        }
    }
    v1
}

pub fn cgroup(pid: u32) -> io::Result<Option<String>> {
    Ok(parse_cgroup(&read_small(&format!("/proc/{pid}/cgroup"))?))
}

/// The inode of `/proc/<pid>/ns/<kind>` (`pid`, `net`, `mnt`, ...), from the link's text
/// (`pid:[4026531836]`): reading the link costs about half of following it into nsfs to `stat`
/// the namespace (~5 us of a `whois` here).
pub fn ns_inode(pid: u32, kind: &str) -> io::Result<u64> {
    let path = format!("/proc/{pid}/ns/{kind}");
    let target = std::fs::read_link(&path)?;
    ns_of(&path, target.as_os_str())
}

/// `pid:[4026531836]` → 4026531836.
pub fn parse_ns_link(link: &str) -> Option<u64> {
    let inner = link.rsplit_once(":[")?.1.strip_suffix(']')?;
    inner.parse().ok()
}

/// One process's `/proc/<pid>` directory, opened once (`O_PATH`). Each read below resolves one
/// name under it instead of walking the whole path again, and is of that process: once it has
/// exited, reads through the directory fail instead of describing a process that reused the
/// pid — facts read through one `Process` belong to one process.
#[derive(Debug)]
pub struct Process {
    pid: u32,
    dir: std::fs::File,
}

/// An fd from `openat`, closed on drop.
struct Fd(std::os::fd::RawFd);

impl Drop for Fd {
    fn drop(&mut self) {
        let _ = nix::unistd::close(self.0);
    }
}

impl Process {
    pub fn open(pid: u32) -> io::Result<Process> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(format!("/proc/{pid}"))?;
        Ok(Process { pid, dir })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `name` under the directory, read like [`read_small`].
    fn read(&self, name: &str) -> io::Result<String> {
        use nix::fcntl::{openat, OFlag};
        use std::os::fd::AsRawFd;
        let fd = Fd(openat(
            Some(self.dir.as_raw_fd()),
            name,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?);
        read_whole(|buf| Ok(nix::unistd::read(fd.0, buf)?))
    }

    pub fn stat(&self) -> io::Result<ProcStat> {
        stat_of(self.pid, &self.read("stat")?)
    }

    pub fn cgroup(&self) -> io::Result<Option<String>> {
        Ok(parse_cgroup(&self.read("cgroup")?))
    }

    /// Like [`ns_inode`].
    pub fn ns_inode(&self, kind: &str) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let name = format!("ns/{kind}");
        let target = nix::fcntl::readlinkat(Some(self.dir.as_raw_fd()), name.as_str())?;
        ns_of(&format!("/proc/{}/{name}", self.pid), &target)
    }
}

/// This boot's id: start times restart from zero at boot, so records carry it.
pub fn boot_id() -> io::Result<String> {
    Ok(read_small("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_owned())
}

/// The view of the process table the store needs (see [`Real`]).
pub trait ProcView: Send + Sync {
    fn stat(&self, pid: u32) -> Option<ProcStat>;
    fn pid_ns(&self, pid: u32) -> Option<u64>;
    fn cgroup(&self, pid: u32) -> Option<String>;
    fn boot_id(&self) -> Option<&str>;
}

/// `/proc` of the host.
#[derive(Debug, Clone)]
pub struct Real {
    boot_id: Option<String>,
}

impl Real {
    pub fn new() -> Real {
        Real {
            boot_id: boot_id().ok(),
        }
    }
}

impl Default for Real {
    fn default() -> Self {
        Real::new()
    }
}

impl ProcView for Real {
    fn stat(&self, pid: u32) -> Option<ProcStat> {
        stat(pid).ok()
    }
    fn pid_ns(&self, pid: u32) -> Option<u64> {
        ns_inode(pid, "pid").ok()
    }
    fn cgroup(&self, pid: u32) -> Option<String> {
        cgroup(pid).ok().flatten()
    }
    fn boot_id(&self) -> Option<&str> {
        self.boot_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_directory_reads_that_process_only() {
        let me = Process::open(std::process::id()).unwrap();
        assert_eq!(me.stat().unwrap(), stat(std::process::id()).unwrap());
        assert_eq!(me.cgroup().unwrap(), cgroup(std::process::id()).unwrap());
        assert_eq!(
            me.ns_inode("net").unwrap(),
            ns_inode(std::process::id(), "net").unwrap()
        );
        // Opened while the child lived; once it has exited and been reaped, the directory
        // answers nothing (a new process with that pid is not read through it).
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = Process::open(child.id()).unwrap();
        assert!(p.stat().is_ok());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(p.stat().is_err());
        assert!(p.ns_inode("pid").is_err());
        assert!(Process::open(u32::MAX).is_err());
    }
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stat_with_hostile_comm() {
        let mut fields = vec!["0"; 50];
        fields[0] = "S";
        fields[19] = "123456";
        fields[49] = "256";
        let line = format!("42 (a) b) (c) {}\n", fields.join(" "));
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.start_time, 123456);
        assert!(!s.exited);
        assert_eq!(s.exit_code, Some(256));
        let z = parse_stat(&line.replace(") S ", ") Z ")).unwrap();
        assert!(z.exited);
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn own_process() {
        let me = std::process::id();
        let s = stat(me).unwrap();
        assert!(!s.exited);
        assert_eq!(stat(me).unwrap().start_time, s.start_time);
        let ns = ns_inode(me, "pid").unwrap();
        // the same number `stat` gives for the namespace
        assert_eq!(
            ns,
            std::fs::metadata(format!("/proc/{me}/ns/pid"))
                .unwrap()
                .ino()
        );
        assert_eq!(parse_ns_link("net:[4026531833]"), Some(4026531833));
        assert_eq!(parse_ns_link("garbage"), None);
        assert_eq!(parse_ns_link("pid:[12x]"), None);
        assert!(!boot_id().unwrap().is_empty());
    }

    #[test]
    fn cgroup_choice() {
        let hybrid = "10:hugetlb:/t3\n4:memory:/t3\n0::/t3\n";
        assert_eq!(parse_cgroup(hybrid).as_deref(), Some("/t3"));
        let v1_only = "4:memory:/process_api/x\n1:cpu:/\n0::/\n";
        assert_eq!(parse_cgroup(v1_only).as_deref(), Some("/process_api/x"));
        assert_eq!(
            parse_cgroup("0::/system.slice/crun-x.scope\n").as_deref(),
            Some("/system.slice/crun-x.scope")
        );
        assert_eq!(parse_cgroup("0::/\n"), None);
    }
}
