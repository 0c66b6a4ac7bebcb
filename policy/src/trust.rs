//! Whether a configuration path may be believed: who could have written what ociguard reads.
//!
//! `config.toml` and the policy directory decide every container's seccomp profile, capabilities
//! and AppArmor profile. If anyone but root (or the user ociguard runs as, or a configured admin)
//! could write the file, the directory it is in, or any directory above it, that person could
//! choose the policy of every container. So, like sudo for `sudoers` and sshd's `StrictModes`,
//! ociguard refuses to read such a path and says which component is wrong and how to fix it.
//!
//! The check walks the path from `/` one component at a time with `lstat(2)`, following symlinks
//! itself (so every directory a link leads through is checked too, not only the link's target).
//! It owns no policy: it answers "may this be trusted", the callers decide what to do with it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{File, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed on one path before giving up: the kernel's limit for `ELOOP`.
pub const MAX_SYMLINKS: usize = 40;

const GROUP_WRITE: u32 = 0o020;
const WORLD_WRITE: u32 = 0o002;
const STICKY: u32 = 0o1000;

/// Who may own a trusted path: root, the process's effective uid, and optionally an admin uid.
///
/// The effective uid is trusted because a rootless engine runs ociguard as its user, whose
/// configuration is their own: that user could run any runtime they like anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trust {
    euid: u32,
    admin_uid: Option<u32>,
}

impl Trust {
    /// Root, this process's effective uid, and `admin_uid` if set.
    pub fn new(admin_uid: Option<u32>) -> Trust {
        Trust {
            euid: nix::unistd::geteuid().as_raw(),
            admin_uid,
        }
    }

    /// Root and this process's effective uid only (for `config.toml`, which names the admin uid
    /// itself and so cannot vouch for its own owner).
    pub fn root_and_self() -> Trust {
        Trust::new(None)
    }

    /// The admin uid this trust includes, if any.
    pub fn admin_uid(&self) -> Option<u32> {
        self.admin_uid
    }

    /// Whether `uid` may own a trusted path.
    pub fn trusts(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid || self.admin_uid == Some(uid)
    }

    /// Check `path` and everything it is reached through; the path it resolves to (absolute, no
    /// symlinks, no `.` or `..`) on success.
    ///
    /// A component that does not exist is [`TrustError::Missing`] (see
    /// [`TrustError::is_missing`]), but only once every component before it has passed: an
    /// untrusted parent of a missing file is still reported as untrusted.
    pub fn check_path(&self, path: &Path, kind: Kind) -> Result<PathBuf, TrustError> {
        let absolute;
        let path_abs = if path.is_absolute() {
            path
        } else {
            let cwd = std::env::current_dir().map_err(|source| TrustError::Cwd {
                path: path.to_owned(),
                source,
            })?;
            absolute = cwd.join(path);
            &absolute
        };
        let root = PathBuf::from("/");
        let meta = lstat(&root)?;
        self.check_component(&root, &meta)?;
        Walk::new(path, root, path_abs, Some(meta)).run(self, kind)
    }

    /// Check `name`, an entry of `dir`, where `dir` is a path [`Trust::check_path`] returned (so
    /// everything up to it has been checked already and is not walked again). `shown` is the
    /// path to name in errors (the entry as the caller spells it). Symlinks are followed and
    /// checked as in [`Trust::check_path`], including ones that lead out of `dir`.
    pub fn check_entry(
        &self,
        dir: &Path,
        name: &OsStr,
        shown: &Path,
        kind: Kind,
    ) -> Result<PathBuf, TrustError> {
        Walk::new(shown, dir.to_owned(), Path::new(name), None).run(self, kind)
    }

    /// Check an open file by its descriptor (`fstat(2)`): owner, not group- or world-writable, a
    /// regular file. Checking what was opened, not the name, leaves no window between check and
    /// read for the name to be pointed elsewhere. `path` is only for the error.
    pub fn check_file(&self, path: &Path, file: &File) -> Result<(), TrustError> {
        let meta = file.metadata().map_err(|source| TrustError::Fstat {
            path: path.to_owned(),
            source,
        })?;
        self.check_component(path, &meta)?;
        check_final(path, &meta, Kind::File)
    }

    /// [`Trust::check_path`] for a regular file, then open what it resolved to and
    /// [`Trust::check_file`] the descriptor.
    pub fn open_file(&self, path: &Path) -> Result<File, TrustError> {
        let resolved = self.check_path(path, Kind::File)?;
        let file = open_regular(&resolved).map_err(|source| TrustError::Open {
            path: path.to_owned(),
            source,
        })?;
        self.check_file(path, &file)?;
        Ok(file)
    }

    /// Owner and, allowing the sticky exception, write bits of one component on the way.
    fn check_component(&self, path: &Path, meta: &Metadata) -> Result<(), TrustError> {
        let what = describe(meta);
        if !self.trusts(meta.uid()) {
            return Err(TrustError::Owner {
                path: path.to_owned(),
                via: None,
                what,
                uid: meta.uid(),
                trusted: *self,
            });
        }
        // A symlink's own mode is always 0777 on Linux and means nothing; what can replace it
        // is the directory it is in, checked already, and its owner, checked above (the owner
        // may unlink it even from a sticky directory).
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.mode();
        // A sticky directory that others may write (`/tmp`) is fine to pass through: with the
        // sticky bit only the owner of an entry (or the directory's owner) may rename or unlink
        // it, and the next component's owner is checked in turn. So nobody untrusted can swap
        // what the path names below it. This applies to traversal only; see `check_final`.
        let sticky_dir = meta.is_dir() && mode & STICKY != 0;
        if mode & (GROUP_WRITE | WORLD_WRITE) != 0 && !sticky_dir {
            return Err(TrustError::Writable {
                path: path.to_owned(),
                via: None,
                what,
                mode: mode & 0o7777,
            });
        }
        Ok(())
    }
}

impl fmt::Display for Trust {
    /// Who is trusted, in words: "root", "root or the admin uid 1001", ...
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let own = self.euid != 0;
        let admin = self.admin_uid.filter(|&a| a != 0 && a != self.euid);
        match (own, admin) {
            (false, None) => f.write_str("root"),
            (false, Some(a)) => write!(f, "root or the admin uid {a}"),
            (true, None) => write!(f, "root or ociguard's own uid {}", self.euid),
            (true, Some(a)) => write!(
                f,
                "root, ociguard's own uid {} or the admin uid {a}",
                self.euid
            ),
        }
    }
}

/// What the final object of a path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
        })
    }
}

/// How a path was reached when symlinks were followed: the path asked about and what it
/// resolves to as far as the walk got (components not yet walked are shown as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub original: PathBuf,
    pub resolved: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{path}: relative path, and the current directory is unknown: {source}")]
    Cwd {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}{path}: cannot inspect: {source}", prefix(.via))]
    Lstat {
        path: PathBuf,
        via: Option<Box<Via>>,
        source: std::io::Error,
    },
    #[error("{}{path}: does not exist", prefix(.via))]
    Missing {
        path: PathBuf,
        via: Option<Box<Via>>,
    },
    #[error("{}{path}: cannot read the symlink: {source}", prefix(.via))]
    ReadLink {
        path: PathBuf,
        via: Option<Box<Via>>,
        source: std::io::Error,
    },
    #[error("{}{path}: is a {found}, but the path goes on below it", prefix(.via))]
    NotADirectory {
        path: PathBuf,
        via: Option<Box<Via>>,
        found: &'static str,
    },
    #[error("{}{path}: {what} is owned by uid {uid}, not {trusted}; fix: chown root {path}", prefix(.via))]
    Owner {
        path: PathBuf,
        via: Option<Box<Via>>,
        what: &'static str,
        uid: u32,
        trusted: Trust,
    },
    #[error("{}{path}: {what} is {}-writable (mode {mode:04o}); fix: chmod {}-w {path}", prefix(.via), who_writes(.mode), chmod_letters(.mode))]
    Writable {
        path: PathBuf,
        via: Option<Box<Via>>,
        what: &'static str,
        mode: u32,
    },
    #[error("{}{path}: is a {found}, not a {expected}", prefix(.via))]
    WrongKind {
        path: PathBuf,
        via: Option<Box<Via>>,
        found: &'static str,
        expected: Kind,
    },
    #[error("{path}: is a symlink chain longer than {MAX_SYMLINKS} (a loop?)")]
    Loop { path: PathBuf },
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot inspect the open file: {source}")]
    Fstat {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl TrustError {
    /// The path does not exist (after every existing component before it passed).
    pub fn is_missing(&self) -> bool {
        matches!(self, TrustError::Missing { .. })
    }

    /// The same error, saying how its path was reached through symlinks.
    fn with_via(mut self, how: Via) -> TrustError {
        match &mut self {
            TrustError::Lstat { via, .. }
            | TrustError::Missing { via, .. }
            | TrustError::ReadLink { via, .. }
            | TrustError::NotADirectory { via, .. }
            | TrustError::Owner { via, .. }
            | TrustError::Writable { via, .. }
            | TrustError::WrongKind { via, .. } => *via = Some(Box::new(how)),
            TrustError::Cwd { .. }
            | TrustError::Loop { .. }
            | TrustError::Open { .. }
            | TrustError::Fstat { .. } => {}
        }
        self
    }

    /// The offending path: the component that failed, or the path asked about.
    pub fn path(&self) -> &Path {
        match self {
            TrustError::Cwd { path, .. }
            | TrustError::Lstat { path, .. }
            | TrustError::Missing { path, .. }
            | TrustError::ReadLink { path, .. }
            | TrustError::NotADirectory { path, .. }
            | TrustError::Owner { path, .. }
            | TrustError::Writable { path, .. }
            | TrustError::WrongKind { path, .. }
            | TrustError::Loop { path }
            | TrustError::Open { path, .. }
            | TrustError::Fstat { path, .. } => path,
        }
    }
}

fn prefix(via: &Option<Box<Via>>) -> String {
    match via {
        Some(v) => format!("{} -> {}: ", v.original.display(), v.resolved.display()),
        None => String::new(),
    }
}

/// Who may write, in words.
fn who_writes(mode: &u32) -> &'static str {
    match (mode & GROUP_WRITE != 0, mode & WORLD_WRITE != 0) {
        (true, true) => "group- and world",
        (true, false) => "group",
        _ => "world",
    }
}

/// The `chmod` letters that take the write bits in [`who_writes`] away.
fn chmod_letters(mode: &u32) -> &'static str {
    match (mode & GROUP_WRITE != 0, mode & WORLD_WRITE != 0) {
        (true, true) => "go",
        (true, false) => "g",
        _ => "o",
    }
}

fn describe(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "file"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_char_device() {
        "character device"
    } else {
        "special file"
    }
}

/// Open a file that is meant to be a regular file for reading: `O_NOFOLLOW`, so a name that was
/// turned into a symlink since it was checked fails instead of being followed unchecked, and
/// `O_NONBLOCK`, so a fifo put in its place cannot hang the caller (fstat then rejects both).
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    use nix::fcntl::OFlag;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits())
        .open(path)
}

fn lstat(path: &Path) -> Result<Metadata, TrustError> {
    std::fs::symlink_metadata(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TrustError::Missing {
                path: path.to_owned(),
                via: None,
            }
        } else {
            TrustError::Lstat {
                path: path.to_owned(),
                via: None,
                source,
            }
        }
    })
}

/// The final object: of the expected kind, and never writable by group or world, sticky or not
/// (a sticky bit protects the entries of a directory from each other, not its contents from
/// whoever may add to it).
fn check_final(path: &Path, meta: &Metadata, kind: Kind) -> Result<(), TrustError> {
    let right_kind = match kind {
        Kind::File => meta.is_file(),
        Kind::Dir => meta.is_dir(),
    };
    if !right_kind {
        return Err(TrustError::WrongKind {
            path: path.to_owned(),
            via: None,
            found: describe(meta),
            expected: kind,
        });
    }
    let mode = meta.mode();
    if mode & (GROUP_WRITE | WORLD_WRITE) != 0 {
        return Err(TrustError::Writable {
            path: path.to_owned(),
            via: None,
            what: describe(meta),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// One walk: `resolved` is always a chain of real directories from `/`, each checked, so `..`
/// is simply its parent (the parent of where a symlink led, not of the symlink's name).
struct Walk<'a> {
    original: &'a Path,
    resolved: PathBuf,
    /// Components still to walk, the next one last.
    pending: Vec<OsString>,
    /// `lstat` of `resolved`, when known (not after `..`).
    current: Option<Metadata>,
    links: usize,
}

impl<'a> Walk<'a> {
    fn new(
        original: &'a Path,
        start: PathBuf,
        rest: &Path,
        start_meta: Option<Metadata>,
    ) -> Walk<'a> {
        let mut walk = Walk {
            original,
            resolved: start,
            pending: Vec::with_capacity(8),
            current: start_meta,
            links: 0,
        };
        walk.push(rest);
        walk
    }

    /// Queue `path`'s components to be walked next. An absolute path restarts at `/`, which
    /// was checked first and is the only way back there.
    fn push(&mut self, path: &Path) {
        let at = self.pending.len();
        for c in path.components() {
            match c {
                Component::RootDir => {
                    self.resolved.clear();
                    self.resolved.push("/");
                    self.current = None;
                }
                Component::Normal(name) => self.pending.push(name.to_owned()),
                Component::ParentDir => self.pending.push(OsString::from("..")),
                Component::CurDir | Component::Prefix(_) => {}
            }
        }
        self.pending[at..].reverse();
    }

    /// Say how `e`'s path was reached, if a symlink was followed: where the original path leads
    /// as far as known. Built only on failure, so a passing walk allocates nothing for it.
    fn attach(&self, e: TrustError) -> TrustError {
        if self.links == 0 {
            return e;
        }
        let mut resolved = self.resolved.clone();
        for c in self.pending.iter().rev() {
            resolved.push(c);
        }
        e.with_via(Via {
            original: self.original.to_owned(),
            resolved,
        })
    }

    fn run(mut self, trust: &Trust, kind: Kind) -> Result<PathBuf, TrustError> {
        while let Some(name) = self.pending.pop() {
            if name == ".." {
                self.resolved.pop();
                self.current = None;
                continue;
            }
            self.resolved.push(&name);
            let meta = lstat(&self.resolved).map_err(|e| self.attach(e))?;
            if meta.file_type().is_symlink() {
                trust
                    .check_component(&self.resolved, &meta)
                    .map_err(|e| self.attach(e))?;
                self.links += 1;
                if self.links > MAX_SYMLINKS {
                    return Err(TrustError::Loop {
                        path: self.original.to_owned(),
                    });
                }
                let target = std::fs::read_link(&self.resolved).map_err(|source| {
                    self.attach(TrustError::ReadLink {
                        path: self.resolved.clone(),
                        via: None,
                        source,
                    })
                })?;
                // A relative target continues from the link's directory.
                self.resolved.pop();
                self.current = None;
                self.push(&target);
                continue;
            }
            trust
                .check_component(&self.resolved, &meta)
                .map_err(|e| self.attach(e))?;
            // Anything still to walk (even a `..`) must go through a directory, as in the kernel.
            if !self.pending.is_empty() && !meta.is_dir() {
                return Err(self.attach(TrustError::NotADirectory {
                    path: self.resolved.clone(),
                    via: None,
                    found: describe(&meta),
                }));
            }
            self.current = Some(meta);
        }
        let meta = match self.current.take() {
            Some(meta) => meta,
            // After `..` or a link to `/`: a directory of the checked chain, seen again for its
            // kind and mode as the final object.
            None => lstat(&self.resolved).map_err(|e| self.attach(e))?,
        };
        check_final(&self.resolved, &meta, kind).map_err(|e| self.attach(e))?;
        Ok(self.resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink, PermissionsExt};

    fn is_root() -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        eprintln!("skip: not root");
        false
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A tempdir under `/tmp` (root-owned, sticky, world-writable) holding a trusted tree:
    /// `pol/` (0755) with `pol/a.toml` (0644).
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir_in("/tmp").unwrap();
        chmod(d.path(), 0o755);
        let pol = d.path().join("pol");
        std::fs::create_dir(&pol).unwrap();
        chmod(&pol, 0o755);
        std::fs::write(pol.join("a.toml"), "name = \"a\"\n").unwrap();
        chmod(&pol.join("a.toml"), 0o644);
        (d, pol)
    }

    fn root() -> Trust {
        Trust {
            euid: 0,
            admin_uid: None,
        }
    }

    fn err(r: Result<PathBuf, TrustError>) -> (TrustError, String) {
        let e = r.unwrap_err();
        let s = e.to_string();
        (e, s)
    }

    #[test]
    fn a_trusted_tree_passes_through_sticky_tmp() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        let canon = pol.canonicalize().unwrap();
        assert_eq!(root().check_path(&pol, Kind::Dir).unwrap(), canon);
        assert_eq!(
            root().check_path(&pol.join("a.toml"), Kind::File).unwrap(),
            canon.join("a.toml")
        );
    }

    #[test]
    fn owner_not_trusted() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        chown(&pol, Some(1000), None).unwrap();
        let (e, s) = err(root().check_path(&pol.join("a.toml"), Kind::File));
        assert!(matches!(e, TrustError::Owner { uid: 1000, .. }), "{s}");
        assert_eq!(
            s,
            format!(
                "{0}: directory is owned by uid 1000, not root; fix: chown root {0}",
                pol.display()
            )
        );
        // The admin uid makes it trusted.
        let admin = Trust {
            euid: 0,
            admin_uid: Some(1000),
        };
        assert!(admin.check_path(&pol.join("a.toml"), Kind::File).is_ok());
        // A file owned by someone else.
        chown(&pol, Some(0), None).unwrap();
        chown(pol.join("a.toml"), Some(1001), None).unwrap();
        let (_, s) = err(admin.check_path(&pol.join("a.toml"), Kind::File));
        assert!(
            s.contains("file is owned by uid 1001, not root or the admin uid 1000"),
            "{s}"
        );
    }

    #[test]
    fn group_writable_file_and_dir() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        let file = pol.join("a.toml");
        chmod(&file, 0o664);
        let (e, s) = err(root().check_path(&file, Kind::File));
        assert!(matches!(e, TrustError::Writable { mode: 0o664, .. }), "{s}");
        assert_eq!(
            s,
            format!(
                "{0}: file is group-writable (mode 0664); fix: chmod g-w {0}",
                file.display()
            )
        );
        chmod(&file, 0o644);
        chmod(&pol, 0o775);
        let (_, s) = err(root().check_path(&file, Kind::File));
        assert!(s.starts_with(&format!("{}: directory is group-writable", pol.display())));
    }

    #[test]
    fn world_writable_file() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        let file = pol.join("a.toml");
        chmod(&file, 0o666);
        let (_, s) = err(root().check_path(&file, Kind::File));
        assert_eq!(
            s,
            format!(
                "{0}: file is group- and world-writable (mode 0666); fix: chmod go-w {0}",
                file.display()
            )
        );
        // And through the descriptor.
        let f = File::open(&file).unwrap();
        let e = root().check_file(&file, &f).unwrap_err();
        assert!(matches!(e, TrustError::Writable { .. }), "{e}");
        chmod(&file, 0o602);
        let e = root().check_file(&file, &f).unwrap_err().to_string();
        assert!(
            e.contains("world-writable (mode 0602); fix: chmod o-w"),
            "{e}"
        );
    }

    #[test]
    fn world_writable_dir() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        chmod(&pol, 0o777);
        for path in [pol.clone(), pol.join("a.toml")] {
            let kind = if path == pol { Kind::Dir } else { Kind::File };
            let (_, s) = err(root().check_path(&path, kind));
            assert_eq!(
                s,
                format!(
                    "{0}: directory is group- and world-writable (mode 0777); fix: chmod go-w {0}",
                    pol.display()
                )
            );
        }
        chmod(&pol, 0o757);
        let (_, s) = err(root().check_path(&pol, Kind::Dir));
        assert!(
            s.contains("directory is world-writable (mode 0757); fix: chmod o-w"),
            "{s}"
        );
    }

    #[test]
    fn sticky_world_writable_dir_is_accepted_for_traversal_only() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        chmod(&pol, 0o1777);
        assert!(root().check_path(&pol.join("a.toml"), Kind::File).is_ok());
        // As the final object it is still writable by anyone.
        let (_, s) = err(root().check_path(&pol, Kind::Dir));
        assert!(s.contains("(mode 1777)"), "{s}");
        // And the sticky bit does not excuse its owner.
        chown(&pol, Some(1000), None).unwrap();
        let (e, _) = err(root().check_path(&pol.join("a.toml"), Kind::File));
        assert!(matches!(e, TrustError::Owner { .. }));
        // Nor an entry in it owned by someone else.
        chown(&pol, Some(0), None).unwrap();
        chown(pol.join("a.toml"), Some(1000), None).unwrap();
        let (e, _) = err(root().check_path(&pol.join("a.toml"), Kind::File));
        assert!(matches!(e, TrustError::Owner { uid: 1000, .. }));
    }

    #[test]
    fn symlink_to_an_untrusted_dir() {
        if !is_root() {
            return;
        }
        let (d, pol) = tree();
        let bob = d.path().join("home/bob");
        std::fs::create_dir_all(bob.join("pol")).unwrap();
        chmod(&d.path().join("home"), 0o755);
        chmod(&bob, 0o755);
        chmod(&bob.join("pol"), 0o755);
        chown(&bob, Some(1000), None).unwrap();
        let link = pol.join("policies");
        symlink(bob.join("pol"), &link).unwrap();
        let (e, s) = err(root().check_path(&link, Kind::Dir));
        assert!(matches!(e, TrustError::Owner { uid: 1000, .. }), "{s}");
        let canon_bob = d.path().canonicalize().unwrap().join("home/bob");
        assert_eq!(
            s,
            format!(
                "{} -> {}: {}: directory is owned by uid 1000, not root; fix: chown root {2}",
                link.display(),
                canon_bob.join("pol").display(),
                canon_bob.display(),
            )
        );
        // A symlink owned by someone else in a trusted dir: they may replace it at will.
        let theirs = pol.join("theirs");
        symlink("a.toml", &theirs).unwrap();
        std::os::unix::fs::lchown(&theirs, Some(1000), None).unwrap();
        let (_, s) = err(root().check_path(&theirs, Kind::File));
        assert!(s.contains("symlink is owned by uid 1000"), "{s}");
    }

    #[test]
    fn relative_and_absolute_symlink_chains() {
        if !is_root() {
            return;
        }
        let (d, pol) = tree();
        let canon = pol.canonicalize().unwrap();
        // Kubernetes ConfigMap volume: x.toml -> ..data/x.toml, ..data -> ..2024_01_01.
        let ts = pol.join("..2024_01_01");
        std::fs::create_dir(&ts).unwrap();
        chmod(&ts, 0o755);
        std::fs::write(ts.join("x.toml"), "").unwrap();
        chmod(&ts.join("x.toml"), 0o644);
        symlink("..2024_01_01", pol.join("..data")).unwrap();
        symlink("..data/x.toml", pol.join("x.toml")).unwrap();
        assert_eq!(
            root().check_path(&pol.join("x.toml"), Kind::File).unwrap(),
            canon.join("..2024_01_01/x.toml")
        );
        // Absolute links, chained through a second directory.
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        chmod(&other, 0o755);
        symlink(&pol, other.join("to-pol")).unwrap();
        symlink(other.join("to-pol").join("a.toml"), d.path().join("abs")).unwrap();
        assert_eq!(
            root()
                .check_path(&d.path().join("abs"), Kind::File)
                .unwrap(),
            canon.join("a.toml")
        );
        // check_entry from an already checked directory gives the same answer.
        assert_eq!(
            root()
                .check_entry(
                    &canon,
                    OsStr::new("x.toml"),
                    &pol.join("x.toml"),
                    Kind::File
                )
                .unwrap(),
            canon.join("..2024_01_01/x.toml")
        );
        // A bad mode at the end of the chain names the original path and where it led.
        chmod(&ts.join("x.toml"), 0o646);
        let (_, s) = err(root().check_path(&pol.join("x.toml"), Kind::File));
        assert!(
            s.starts_with(&format!(
                "{} -> {}: {}: file is world-writable",
                pol.join("x.toml").display(),
                canon.join("..2024_01_01/x.toml").display(),
                canon.join("..2024_01_01/x.toml").display()
            )),
            "{s}"
        );
    }

    #[test]
    fn dot_dot_in_the_path_and_in_a_link_target() {
        if !is_root() {
            return;
        }
        let (d, pol) = tree();
        let canon = pol.canonicalize().unwrap();
        let sub = pol.join("sub");
        std::fs::create_dir(&sub).unwrap();
        chmod(&sub, 0o755);
        assert_eq!(
            root()
                .check_path(&sub.join("../a.toml"), Kind::File)
                .unwrap(),
            canon.join("a.toml")
        );
        assert_eq!(
            root().check_path(&sub.join("./.."), Kind::Dir).unwrap(),
            canon
        );
        // `..` after a symlink is the parent of where it led, not of the link's own directory:
        // other/deep -> pol/sub, so other/deep/../a.toml is pol/a.toml.
        let other = d.path().join("other");
        std::fs::create_dir(&other).unwrap();
        chmod(&other, 0o755);
        symlink(&sub, other.join("deep")).unwrap();
        assert_eq!(
            root()
                .check_path(&other.join("deep/../a.toml"), Kind::File)
                .unwrap(),
            canon.join("a.toml")
        );
        // In a link target: sub/up -> ../a.toml.
        symlink("../a.toml", sub.join("up")).unwrap();
        assert_eq!(
            root().check_path(&sub.join("up"), Kind::File).unwrap(),
            canon.join("a.toml")
        );
        // A `..` that leads into an untrusted directory is caught there.
        chown(&pol, Some(1000), None).unwrap();
        let (e, _) = err(root().check_path(&other.join("deep/../a.toml"), Kind::File));
        assert!(matches!(e, TrustError::Owner { .. }));
        // `..` below a file is not a directory, as for the kernel.
        chown(&pol, Some(0), None).unwrap();
        let (e, s) = err(root().check_path(&pol.join("a.toml/.."), Kind::Dir));
        assert!(matches!(e, TrustError::NotADirectory { .. }), "{s}");
    }

    #[test]
    fn link_loop() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        symlink("b", pol.join("a")).unwrap();
        symlink("a", pol.join("b")).unwrap();
        let (e, s) = err(root().check_path(&pol.join("a"), Kind::File));
        assert!(matches!(e, TrustError::Loop { .. }), "{s}");
        assert_eq!(
            s,
            format!(
                "{}: is a symlink chain longer than 40 (a loop?)",
                pol.join("a").display()
            )
        );
        // 40 links are fine, 41 are not.
        let mut prev = "a.toml".to_owned();
        for i in 0..41 {
            let name = format!("l{i}");
            symlink(&prev, pol.join(&name)).unwrap();
            prev = name;
        }
        assert!(root().check_path(&pol.join("l39"), Kind::File).is_ok());
        let (e, _) = err(root().check_path(&pol.join("l40"), Kind::File));
        assert!(matches!(e, TrustError::Loop { .. }));
    }

    #[test]
    fn wrong_kind() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        let (e, s) = err(root().check_path(&pol, Kind::File));
        assert!(matches!(e, TrustError::WrongKind { .. }), "{s}");
        assert_eq!(
            s,
            format!("{}: is a directory, not a regular file", pol.display())
        );
        let (_, s) = err(root().check_path(&pol.join("a.toml"), Kind::Dir));
        assert!(s.ends_with("is a file, not a directory"), "{s}");
        let fifo = pol.join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let (_, s) = err(root().check_path(&fifo, Kind::File));
        assert!(s.ends_with("is a fifo, not a regular file"), "{s}");
        // Opened without blocking, and rejected by its descriptor.
        let f = open_regular(&fifo).unwrap();
        let e = root().check_file(&fifo, &f).unwrap_err().to_string();
        assert!(e.ends_with("is a fifo, not a regular file"), "{e}");
    }

    #[test]
    fn missing_is_told_apart_but_only_after_the_existing_parents_pass() {
        if !is_root() {
            return;
        }
        let (_d, pol) = tree();
        let e = root()
            .check_path(&pol.join("nope/x.toml"), Kind::File)
            .unwrap_err();
        assert!(e.is_missing(), "{e}");
        assert_eq!(e.path(), pol.canonicalize().unwrap().join("nope"));
        chmod(&pol, 0o777);
        let e = root().check_path(&pol.join("nope"), Kind::Dir).unwrap_err();
        assert!(matches!(e, TrustError::Writable { .. }), "{e}");
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        if !is_root() {
            return;
        }
        // The cwd of the test process is the crate directory, which the runner owns.
        let cwd = std::env::current_dir().unwrap();
        let got = root().check_path(Path::new("src/trust.rs"), Kind::File);
        match got {
            Ok(p) => assert_eq!(p, cwd.canonicalize().unwrap().join("src/trust.rs")),
            // A checkout not owned by root (or group-writable) is reported, with a full path.
            Err(e) => assert!(e.path().is_absolute(), "{e}"),
        }
    }

    #[test]
    fn who_is_trusted_in_words() {
        let t = |euid, admin_uid| Trust { euid, admin_uid }.to_string();
        assert_eq!(t(0, None), "root");
        assert_eq!(t(0, Some(1001)), "root or the admin uid 1001");
        assert_eq!(t(1000, None), "root or ociguard's own uid 1000");
        assert_eq!(
            t(1000, Some(1001)),
            "root, ociguard's own uid 1000 or the admin uid 1001"
        );
        let rootless = Trust {
            euid: 1000,
            admin_uid: None,
        };
        assert!(rootless.trusts(0) && rootless.trusts(1000) && !rootless.trusts(1001));
    }
}
