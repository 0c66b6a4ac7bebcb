//! The guard: holds a container's `[behavior]` rules while it runs, with fanotify permission
//! events answered before the kernel lets the operation proceed.
//!
//! - Exec: `FAN_OPEN_EXEC_PERM` on the container's root filesystem (`FAN_MARK_FILESYSTEM` on
//!   the rootfs mount, the overlay every engine mounts per container). For each exec by a
//!   process in a guarded container's mount namespace the guard reads what the process asked
//!   for (`/proc/PID/syscall`: execve's path and argv, from the process's memory; the process
//!   is blocked in execve meanwhile), the file it resolved to (the event's fd), the types of
//!   its stdin/stdout/stderr, and whether the file changed after the container started. The
//!   decision is [`Compiled::decide_exec`].
//! - Secrets: `FAN_OPEN_PERM` on the inodes of the container's secret mounts (and the
//!   directories below them), allowed only to `secret_readers` (by the process's exe).
//!
//! A container is guarded from its createRuntime registration, before its process runs its
//! entrypoint, until it exits. Every other process passes after one `stat` of its mount
//! namespace. What this backend cannot do: see [`LIMITS`]; while ociguardd is down nothing is
//! held by it (the kernel drops a closed group's marks and lets pending operations proceed).
//!
//! With the BPF enforcer (`crate::bpf`), the guard also writes each container's kernel rules
//! (same key: the mount namespace) and turns the enforcer's events into events naming the
//! container: the enforcer holds what fanotify cannot (another process's environ or memory,
//! memfd execs) and keeps holding shells, reverse shells, dropped binaries and the loader
//! while ociguardd is down.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::fanotify::{
    EventFFlags, Fanotify, FanotifyResponse, InitFlags, MarkFlags, MaskFlags, Response,
};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use ociguard_policy::behavior::{self, Action, Compiled, Enforcer, ExecFacts, Rule};
use serde_json::{json, Value};

use crate::bpf::{KernelEvent, Plan};
use crate::events::Hub;
use crate::profiles::{Profiles, Verdict};
use crate::protocol::EventKind;
use crate::record::{Identity, Key};
use crate::stats::Count;
use crate::store::Store;

/// What the fanotify backend cannot hold, for `explain` and the decision.
pub const LIMITS: &str = "fanotify guard: no /proc/PID/environ rule (procfs refuses permission events; the BPF enforcer holds it), exec from other filesystems than the rootfs (memfd) is not seen unless they are noexec; nothing is held by it while ociguardd is down";

/// How long a released container's identity still names the kernel enforcer's events: one
/// that waited in the ring buffer while the container exited (it lived milliseconds) is
/// reported as its own, not dropped.
const DEPARTED_FOR: Duration = Duration::from_secs(10);
/// Events per container and rule per second before they are counted instead of sent.
const EVENTS_PER_SECOND: u32 = 20;
/// Directory entries marked below one secret mount.
const MAX_SECRET_MARKS: usize = 4096;
/// Bytes of argv kept per exec.
const MAX_ARGV: usize = 1024;
const MAX_ARGS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("fanotify: {0}")]
    Init(nix::Error),
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug)]
struct Guarded {
    key: Key,
    mntns: u64,
    rules: Compiled,
    /// The container's rootfs on the host, as config.json names it.
    root: PathBuf,
    /// CLOCK_REALTIME ns: a file whose ctime is at or after this was not in the image.
    start_ns: i128,
    /// Inode marks to remove when the container goes.
    marks: Vec<PathBuf>,
    /// Secret sources on the host → where the container sees them.
    secret_map: Vec<(PathBuf, String)>,
    limiter: Mutex<HashMap<Rule, Window>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Window {
    start: Option<Instant>,
    sent: u32,
    suppressed: u64,
}

#[derive(Debug)]
pub struct Guard {
    fan: Fanotify,
    kernel: Option<Arc<crate::bpf::Enforcer>>,
    by_mntns: RwLock<HashMap<u64, Arc<Guarded>>>,
    /// Released containers, for [`DEPARTED_FOR`] (oldest first).
    departed: Mutex<std::collections::VecDeque<(Instant, u64, Arc<Guarded>)>>,
    host_mntns: Option<u64>,
    store: Arc<RwLock<Store>>,
    hub: Arc<Hub>,
    profiles: Option<Arc<Profiles>>,
}

fn err(what: impl std::fmt::Display) -> GuardError {
    GuardError::Setup(what.to_string())
}

impl Guard {
    pub fn new(
        store: Arc<RwLock<Store>>,
        hub: Arc<Hub>,
        kernel: Option<Arc<crate::bpf::Enforcer>>,
        profiles: Option<Arc<Profiles>>,
    ) -> Result<Arc<Guard>, GuardError> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_CONTENT
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_UNLIMITED_QUEUE
                | InitFlags::FAN_UNLIMITED_MARKS,
            EventFFlags::O_RDONLY | EventFFlags::O_LARGEFILE | EventFFlags::O_CLOEXEC,
        )
        .map_err(GuardError::Init)?;
        Ok(Arc::new(Guard {
            fan,
            kernel,
            by_mntns: RwLock::new(HashMap::new()),
            departed: Mutex::new(std::collections::VecDeque::new()),
            host_mntns: crate::procfs::ns_inode(std::process::id(), "mnt").ok(),
            store,
            hub,
            profiles,
        }))
    }

    /// The enforcers this guard has.
    pub fn enforcers(&self) -> Vec<Enforcer> {
        let mut out = vec![Enforcer::Fanotify];
        if self.kernel.is_some() {
            out.push(Enforcer::Bpf);
        }
        out
    }

    /// Guard the container `identity` registers, if its config.json carries rules. `Ok(None)`:
    /// nothing to guard. An error under rules that are `required` must refuse the container.
    pub fn add(&self, identity: &Identity) -> Result<Option<Compiled>, (bool, GuardError)> {
        self.add_as(identity, false)
    }

    /// `again`: a container guarded before ociguardd restarted (its profile has counted it).
    fn add_as(
        &self,
        identity: &Identity,
        again: bool,
    ) -> Result<Option<Compiled>, (bool, GuardError)> {
        let bundle = Path::new(&identity.bundle);
        let config = bundle.join("config.json");
        if is_missing(&config) {
            // Not a bundle on this node (a record replayed or registered by hand).
            return Ok(None);
        }
        let spec = read_config(&config).map_err(|e| (true, e))?;
        let Some(text) = spec
            .pointer("/annotations")
            .and_then(|a| a.get(behavior::ANNOTATION))
            .and_then(Value::as_str)
        else {
            return Ok(None);
        };
        let rules: Compiled = serde_json::from_str(text).map_err(|e| {
            (
                true,
                err(format!(
                    "{}: annotation {}: {e}",
                    config.display(),
                    behavior::ANNOTATION
                )),
            )
        })?;
        let required = rules.required;
        self.guard(identity, &spec, bundle, rules.clone(), again)
            .map_err(|e| (required, e))?;
        Ok(Some(rules))
    }

    fn guard(
        &self,
        identity: &Identity,
        spec: &Value,
        bundle: &Path,
        rules: Compiled,
        again: bool,
    ) -> Result<(), GuardError> {
        let pid = identity
            .pid
            .ok_or_else(|| err("the container has no pid to guard"))?;
        let mntns = crate::procfs::ns_inode(pid, "mnt")
            .map_err(|e| err(format!("mount namespace of pid {pid}: {e}")))?;
        if Some(mntns) == self.host_mntns {
            return Err(err(
                "the container shares the host's mount namespace: its processes cannot be told from the host's",
            ));
        }
        let have = self.enforcers();
        let not_held: Vec<&str> = rules
            .rules()
            .into_iter()
            .filter(|r| r.held_by(&have).is_empty())
            .map(Rule::as_str)
            .collect();
        if !not_held.is_empty() {
            let msg = format!(
                "rule(s) {} need the BPF enforcer, which this ociguardd does not have (see its log)",
                not_held.join(", ")
            );
            if rules.required {
                return Err(err(msg));
            }
            log::warn!("guard: {}: {msg}", identity.id);
        }
        let root = spec
            .pointer("/root/path")
            .and_then(Value::as_str)
            .ok_or_else(|| err("config.json has no root.path"))?;
        let root = bundle.join(root);
        // Exec permission events cost a round trip to ociguardd per exec in the container:
        // only where a rule needs them (an EPERM answer, or globs over whole paths).
        let exec_mark = self.needs_exec_mark(&rules);
        if exec_mark {
            let meta =
                std::fs::metadata(&root).map_err(|e| err(format!("{}: {e}", root.display())))?;
            let parent = root
                .parent()
                .map(std::fs::metadata)
                .transpose()
                .map_err(|e| err(format!("{}: {e}", root.display())))?;
            if parent.is_some_and(|p| p.dev() == meta.dev()) {
                return Err(err(format!(
                    "rootfs {} is not a filesystem of its own (engines mount an overlay per container): the guard would have to watch every exec on the host's filesystem",
                    root.display()
                )));
            }
            self.fan
                .mark(
                    MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                    MaskFlags::FAN_OPEN_EXEC_PERM,
                    None,
                    Some(&root),
                )
                .map_err(|e| err(format!("fanotify mark of rootfs {}: {e}", root.display())))?;
        }
        let mut marks = Vec::new();
        let mut secret_map = Vec::new();
        if rules.watches_secrets() {
            let mut sources: Vec<(PathBuf, String)> =
                ociguard_policy::apparmor::secret_mounts(spec)
                    .into_iter()
                    .filter(|(_, src)| src.starts_with('/'))
                    .map(|(dest, src)| (PathBuf::from(src), dest))
                    .collect();
            for p in &rules.secrets {
                // Secrets of the image itself (not mounts): under the rootfs, not followed out.
                let inside = root.join(p.trim_start_matches('/'));
                if let Ok(real) = inside.canonicalize() {
                    if real.starts_with(&root) {
                        sources.push((real, p.clone()));
                    }
                }
            }
            for (src, dest) in sources {
                secret_map.push((src.clone(), dest));
                if let Err(e) = self.mark_secret(&src, &mut marks) {
                    for m in &marks {
                        let _ = self.unmark(m);
                    }
                    return Err(e);
                }
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // The kernel stamps ctime from a coarse clock (up to a tick, 4 ms at HZ=250, behind):
        // a file dropped right after this must still count as new.
        let start_ns = now.as_nanos() as i128 - 5_000_000;
        if let Some(kernel) = &self.kernel {
            if let Err(e) = self.hold_in_kernel(kernel, pid, mntns, &rules, start_ns) {
                if rules.required {
                    for m in &marks {
                        let _ = self.unmark(m);
                    }
                    return Err(e);
                }
                log::warn!("guard: {}: BPF enforcer: {e}", identity.id);
            }
        }
        let g = Arc::new(Guarded {
            key: identity.key(),
            mntns,
            rules,
            root,
            start_ns,
            marks,
            secret_map,
            limiter: Mutex::new(HashMap::new()),
        });
        if let Some(p) = &self.profiles {
            // Before the container's process runs its first instruction (createRuntime).
            p.watch(identity, &g.rules, again);
        }
        let old = self
            .by_mntns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(mntns, g);
        if let Some(old) = old {
            self.release(&old);
        }
        log::info!(
            "guard: {} (mnt ns {mntns}) under policy {:?}",
            identity.id,
            identity.policy.as_ref().map(|p| p.name.as_ref())
        );
        Ok(())
    }

    /// Does any exec rule of `rules` need fanotify's exec permission events? Not when the
    /// BPF enforcer holds every one and none answers with EPERM (`kill` and `audit` it does
    /// in the kernel, at no cost per exec).
    fn needs_exec_mark(&self, rules: &Compiled) -> bool {
        // Observing a profile: the kernel enforcer reports every exec, else only fanotify sees them.
        (rules.observes() && self.kernel.is_none() && self.profiles.is_some())
            || rules.rules().into_iter().any(|r| {
                let exec = !matches!(r, Rule::Secret | Rule::Environ);
                exec && (self.kernel.is_none()
                    || !r.enforcers().contains(&Enforcer::Bpf)
                    || rules.action_of(r) == Action::Deny)
            })
    }

    fn hold_in_kernel(
        &self,
        kernel: &crate::bpf::Enforcer,
        pid: u32,
        mntns: u64,
        rules: &Compiled,
        start_ns: i128,
    ) -> Result<(), GuardError> {
        let plan = Plan::new(rules);
        if plan.is_empty() {
            return Ok(());
        }
        for glob in &plan.unmatched {
            log::warn!("guard: shell pattern {glob:?} is matched by the fanotify guard only (the kernel matches file names)");
        }
        let pidns = std::fs::metadata(format!("/proc/{pid}/ns/pid"))
            .map_err(|e| err(format!("pid namespace of pid {pid}: {e}")))?;
        let start_ns = u64::try_from(start_ns).unwrap_or(0);
        kernel
            .add(mntns, start_ns, (pidns.dev(), pidns.ino()), &plan)
            .map_err(|e| err(format!("BPF enforcer: {e}")))
    }

    fn mark_secret(&self, src: &Path, marks: &mut Vec<PathBuf>) -> Result<(), GuardError> {
        let mut stack = vec![(src.to_path_buf(), 0usize)];
        while let Some((p, depth)) = stack.pop() {
            if marks.len() >= MAX_SECRET_MARKS {
                return Err(err(format!(
                    "secret mount {} has more than {MAX_SECRET_MARKS} entries",
                    src.display()
                )));
            }
            let meta = std::fs::symlink_metadata(&p)
                .map_err(|e| err(format!("secret {}: {e}", p.display())))?;
            if meta.file_type().is_symlink() {
                continue; // its target is marked where it lies inside the mount
            }
            let mask = if meta.is_dir() {
                MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_EVENT_ON_CHILD | MaskFlags::FAN_ONDIR
            } else {
                MaskFlags::FAN_OPEN_PERM
            };
            self.fan
                .mark(
                    MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_DONT_FOLLOW,
                    mask,
                    None,
                    Some(&p),
                )
                .map_err(|e| err(format!("fanotify mark of secret {}: {e}", p.display())))?;
            marks.push(p.clone());
            if meta.is_dir() && depth < 8 {
                let entries = std::fs::read_dir(&p)
                    .map_err(|e| err(format!("secret {}: {e}", p.display())))?;
                for e in entries.flatten() {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
        Ok(())
    }

    fn unmark(&self, p: &Path) -> nix::Result<()> {
        self.fan.mark(
            MarkFlags::FAN_MARK_REMOVE | MarkFlags::FAN_MARK_DONT_FOLLOW,
            MaskFlags::FAN_OPEN_PERM | MaskFlags::FAN_EVENT_ON_CHILD | MaskFlags::FAN_ONDIR,
            None,
            Some(p),
        )
    }

    fn release(&self, g: &Guarded) {
        if let Some(kernel) = &self.kernel {
            kernel.remove(g.mntns);
        }
        for m in &g.marks {
            let _ = self.unmark(m);
        }
        // The rootfs mark goes with its filesystem; removed here too for a rootfs that stays.
        let _ = self.fan.mark(
            MarkFlags::FAN_MARK_REMOVE | MarkFlags::FAN_MARK_FILESYSTEM,
            MaskFlags::FAN_OPEN_EXEC_PERM,
            None,
            Some(&g.root),
        );
    }

    /// Stop guarding the container `key` (it exited or was forgotten).
    pub fn remove(&self, key: &Key) {
        let mut map = self.by_mntns.write().unwrap_or_else(|p| p.into_inner());
        let gone: Vec<u64> = map
            .iter()
            .filter(|(_, g)| &g.key == key)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(g) = map.remove(&k) {
                self.release(&g);
                if let Some(p) = &self.profiles {
                    p.unwatch(key);
                }
                log::info!("guard: {} released", key.id);
                if self.kernel.is_some() {
                    let now = Instant::now();
                    let mut d = self.departed.lock().unwrap_or_else(|p| p.into_inner());
                    while d
                        .front()
                        .is_some_and(|(t, _, _)| now.duration_since(*t) > DEPARTED_FOR)
                    {
                        d.pop_front();
                    }
                    d.push_back((now, k, g));
                }
            }
        }
    }

    /// Stop guarding every container `alive` says is gone (exited without a poststop hook).
    pub fn prune(&self, alive: impl Fn(&Key) -> bool) {
        let gone: Vec<Key> = self
            .by_mntns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|g| !alive(&g.key))
            .map(|g| g.key.clone())
            .collect();
        for k in gone {
            self.remove(&k);
        }
        if let Some(kernel) = &self.kernel {
            // What an earlier ociguardd held for containers that have gone since.
            let held = self.by_mntns.read().unwrap_or_else(|p| p.into_inner());
            let dropped = kernel.retain(|ns| held.contains_key(&ns));
            if dropped > 0 {
                log::info!("bpf: {dropped} entr(ies) of containers that are gone removed");
            }
        }
    }

    /// Guard again the containers that were running when ociguardd stopped (their records are
    /// in the store): fanotify's marks died with the old process; the BPF enforcer's entries
    /// did not, and keep their start time.
    pub fn restore(&self) {
        let live: Vec<Identity> = self
            .store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| r.status != crate::record::Status::Exited && r.pid.is_some())
            .cloned()
            .collect();
        for identity in live {
            match self.add_as(&identity, true) {
                Ok(Some(_)) => log::info!("guard: {} guarded again after a restart", identity.id),
                Ok(None) => {}
                Err((_, e)) => log::warn!("guard: {} not guarded again: {e}", identity.id),
            }
        }
    }

    /// Containers guarded now.
    pub fn len(&self) -> usize {
        self.by_mntns.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answer permission events until the group fails.
    pub fn run(self: Arc<Guard>) {
        loop {
            let events = match self.fan.read_events() {
                Ok(ev) => ev,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("guard: reading fanotify events: {e}: no longer guarding");
                    return;
                }
            };
            for ev in events {
                let Some(fd) = ev.fd() else {
                    log::error!("guard: fanotify queue overflow");
                    continue;
                };
                let allow = self.decide(ev.pid(), ev.mask(), fd);
                let response = if allow {
                    Response::FAN_ALLOW
                } else {
                    Response::FAN_DENY
                };
                if let Err(e) = self.fan.write_response(FanotifyResponse::new(fd, response)) {
                    log::error!("guard: answering pid {}: {e}", ev.pid());
                }
            }
        }
    }

    fn guarded(&self, pid: i32) -> Option<Arc<Guarded>> {
        let pid = u32::try_from(pid).ok()?;
        let map = self.by_mntns.read().ok()?;
        if map.is_empty() {
            return None;
        }
        let ns = crate::procfs::ns_inode(pid, "mnt").ok()?;
        map.get(&ns).cloned()
    }

    fn decide(&self, pid: i32, mask: MaskFlags, fd: BorrowedFd<'_>) -> bool {
        let Some(g) = self.guarded(pid) else {
            return true;
        };
        let host_path = fd_path(fd);
        let resolved = inside(&g.root, &host_path);
        if mask.contains(MaskFlags::FAN_OPEN_EXEC_PERM) {
            let exec = read_exec(pid);
            let stdio: Vec<String> = (0..3)
                .map(|n| link(&format!("/proc/{pid}/fd/{n}")))
                .collect();
            let not_in_image = nix::sys::stat::fstat(fd.as_raw_fd())
                .map(|st| {
                    st.st_nlink == 0
                        || (st.st_ctime as i128) * 1_000_000_000 + st.st_ctime_nsec as i128
                            >= g.start_ns
                })
                .unwrap_or(true);
            // An applet of a multi-call binary is named by argv[0] (or argv[1]).
            let asked = behavior::program_name(&exec.path, &resolved, &exec.argv);
            // With the kernel enforcer, it reports this exec to the profiles itself.
            if g.rules.observes() && self.kernel.is_none() {
                if let Some(p) = &self.profiles {
                    let pid_u = u32::try_from(pid).unwrap_or(0);
                    let resolved = || resolved.clone();
                    if p.exec(&g.key, &asked, resolved, not_in_image, pid_u, &exec.argv)
                        == Verdict::Kill
                    {
                        sigkill(pid);
                        return false;
                    }
                }
            }
            let facts = ExecFacts {
                asked: &asked,
                resolved: &resolved,
                socket_stdio: stdio.iter().any(|l| l.starts_with("socket:")),
                interactive: behavior::interactive(&exec.argv),
                stdin_tty: stdio.first().is_some_and(|l| is_tty(l)),
                not_in_image,
            };
            match g.rules.decide_exec(&facts) {
                None => true,
                // The BPF enforcer sees this exec too and reports it.
                Some((rule, Action::Audit))
                    if self.kernel.is_some() && rule.enforcers().contains(&Enforcer::Bpf) =>
                {
                    true
                }
                Some((rule, action)) => {
                    let detail = json!({
                        "hook": "exec",
                        "asked": exec.path,
                        "path": resolved,
                        "argv": exec.argv,
                        "stdio": stdio,
                        "not_in_image": not_in_image,
                    });
                    self.act(&g, pid, rule, action, detail)
                }
            }
        } else {
            let exe = inside(&g.root, &link(&format!("/proc/{pid}/exe")));
            if g.rules.observes() {
                if let Some(p) = &self.profiles {
                    let path = g.container_path(&host_path);
                    let pid_u = u32::try_from(pid).unwrap_or(0);
                    if p.secret(&g.key, &path, &exe, pid_u) == Verdict::Kill {
                        sigkill(pid);
                        return false;
                    }
                }
            }
            match g.rules.decide_secret(&exe) {
                None => true,
                Some((rule, action)) => {
                    let detail = json!({"hook": "open", "path": host_path, "exe": exe});
                    self.act(&g, pid, rule, action, detail)
                }
            }
        }
    }

    /// Report (rate-limited) and carry out `action`; true to allow.
    fn act(&self, g: &Guarded, pid: i32, rule: Rule, action: Action, mut detail: Value) -> bool {
        if action == Action::Kill {
            sigkill(pid);
        }
        self.count(g, rule, action);
        if let Some(count) = g.admit(rule) {
            let ppid = crate::procfs::read_small(&format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| crate::procfs::parse_stat(&s))
                .map(|s| s.ppid);
            if let Value::Object(m) = &mut detail {
                m.insert(
                    "exe".into(),
                    inside(&g.root, &link(&format!("/proc/{pid}/exe"))).into(),
                );
                if let Some(ppid) = ppid {
                    m.insert("ppid".into(), ppid.into());
                    m.insert(
                        "parent_exe".into(),
                        inside(&g.root, &link(&format!("/proc/{ppid}/exe"))).into(),
                    );
                }
            }
            self.publish(g, pid, rule, action, count, Enforcer::Fanotify, detail);
        }
        action == Action::Audit
    }

    /// An event of the BPF enforcer (which has already killed, or only reported under
    /// `audit`): the container's identity added, rate-limited like the guard's own.
    pub fn kernel_event(&self, ev: KernelEvent) {
        let live = self
            .by_mntns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ev.mntns)
            .cloned();
        let g = live.or_else(|| {
            let d = self.departed.lock().unwrap_or_else(|p| p.into_inner());
            d.iter()
                .rev()
                .find(|(_, ns, _)| *ns == ev.mntns)
                .map(|(_, _, g)| Arc::clone(g))
        });
        let Some(g) = g else {
            log::warn!(
                "bpf: {} by pid {} ({}) in mount namespace {}, which no guarded container has now",
                ev.rule.map_or("an observed exec", Rule::as_str),
                ev.pid,
                ev.comm,
                ev.mntns
            );
            return;
        };
        if ev.hook == "exec" && g.rules.observes() && (ev.rule.is_none() || ev.audit) {
            self.observed_exec(&g, &ev);
        }
        let Some(rule) = ev.rule else {
            return;
        };
        let action = if ev.audit {
            Action::Audit
        } else {
            Action::Kill
        };
        self.count(&g, rule, action);
        let Some(count) = g.admit(rule) else {
            return;
        };
        let alive_or = |path: String, or: &str| {
            let p = inside(&g.root, &link(&path));
            if p.is_empty() {
                or.to_owned()
            } else {
                p
            }
        };
        let path = match ev.hook {
            "open" => format!("/proc/{}/{}", ns_pid(ev.target), ev.path),
            _ => ev.path.clone(),
        };
        let exe_fallback = if ev.hook == "exec" {
            &ev.path
        } else {
            &ev.comm
        };
        let detail = json!({
            "hook": ev.hook,
            "path": path,
            "argv": ev.argv,
            "comm": ev.comm,
            "exe": alive_or(format!("/proc/{}/exe", ev.pid), exe_fallback),
            "ppid": ev.ppid,
            "parent_comm": ev.parent_comm,
            "parent_exe": alive_or(format!("/proc/{}/exe", ev.ppid), &ev.parent_comm),
            "target_pid": (ev.target != 0).then_some(ev.target),
            "socket_stdio": ev.socket_stdio,
            "interactive": ev.interactive,
            "not_in_image": ev.not_in_image,
        });
        self.publish(
            &g,
            i32::try_from(ev.pid).unwrap_or(0),
            rule,
            action,
            count,
            Enforcer::Bpf,
            detail,
        );
    }

    /// An exec the kernel enforcer reported for the container's profile.
    fn observed_exec(&self, g: &Guarded, ev: &KernelEvent) {
        let Some(p) = &self.profiles else {
            return;
        };
        // The program's name needs only the resolved file's name (a multi-call binary is
        // told by it), which the event carries.
        let program = behavior::program_name(&ev.path, &ev.file, &ev.argv);
        // The file it resolved to, for the profile's first sight of the program: the
        // process's exe while it lives, else the asked path when its name is the file's, else
        // the file's name in the asked path's directory.
        let resolved = || {
            let exe = inside(&g.root, &link(&format!("/proc/{}/exe", ev.pid)));
            let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
            if !exe.is_empty() && base(&exe) == ev.file {
                exe
            } else if ev.file.is_empty() || base(&ev.path) == ev.file {
                ev.path.clone()
            } else {
                match ev.path.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{}", ev.file),
                    None => ev.file.clone(),
                }
            }
        };
        if p.exec(
            &g.key,
            &program,
            resolved,
            ev.not_in_image,
            ev.pid,
            &ev.argv,
        ) == Verdict::Kill
        {
            // After the fact: the program has started (a tracepoint cannot refuse it). An
            // `allowed_exec` list refuses before it runs.
            sigkill(i32::try_from(ev.pid).unwrap_or(0));
        }
    }

    /// The loop that reads the BPF enforcer's events into [`Guard::kernel_event`], to run on
    /// a thread of its own; `None` without the enforcer.
    pub fn kernel_events(self: &Arc<Self>) -> Option<impl FnOnce() + Send + 'static> {
        let kernel = Arc::clone(self.kernel.as_ref()?);
        let guard = Arc::clone(self);
        Some(move || {
            let lost = Arc::clone(&guard);
            if let Err(e) = kernel.run(|ev| guard.kernel_event(ev), |n| lost.kernel_lost(n)) {
                log::error!("bpf: {e}: its events are no longer read (the programs still hold)");
            }
        })
    }

    /// The BPF enforcer's ring buffer had no room for `n` events.
    pub fn kernel_lost(&self, n: u64) {
        log::warn!("bpf: {n} event(s) lost (the ring buffer was full)");
        self.hub.counters().add(Count::BpfLost, n);
        self.hub.publish(
            EventKind::BehaviorLost,
            &Identity::default(),
            Some(json!({"enforcer": "bpf", "lost": n}).to_string()),
        );
    }

    /// Count one held operation (every one: events are rate-limited, the count is not).
    fn count(&self, g: &Guarded, rule: Rule, action: Action) {
        self.hub.counters().inc(Count::Behavior {
            policy: g.rules.policy.as_str().into(),
            rule: rule.as_str(),
            action: action.as_str(),
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn publish(
        &self,
        g: &Guarded,
        pid: i32,
        rule: Rule,
        action: Action,
        count: u64,
        enforcer: Enforcer,
        mut detail: Value,
    ) {
        let store = self.store.read().unwrap_or_else(|p| p.into_inner());
        let rec = store.get(&g.key).cloned().unwrap_or_else(|| Identity {
            id: g.key.id.clone(),
            bundle: g.key.bundle.clone(),
            ..Identity::default()
        });
        drop(store);
        if let Value::Object(m) = &mut detail {
            m.insert("rule".into(), rule.as_str().into());
            m.insert("action".into(), action.as_str().into());
            m.insert("enforcer".into(), enforcer.as_str().into());
            m.insert("pid".into(), pid.into());
            m.insert("count".into(), count.into());
            m.insert("policy".into(), g.rules.policy.clone().into());
            m.insert("policy_digest".into(), g.rules.policy_digest.clone().into());
            rec.describe_image(m);
        }
        let kind = if action == Action::Audit {
            EventKind::BehaviorAudit
        } else {
            EventKind::BehaviorDenied
        };
        self.hub.publish(kind, &rec, Some(detail.to_string()));
    }
}

impl Guarded {
    /// Where the container sees the host path `host` of one of its secrets.
    fn container_path(&self, host: &str) -> String {
        for (src, dest) in &self.secret_map {
            if let Ok(rest) = Path::new(host).strip_prefix(src) {
                let rest = rest.to_string_lossy();
                return if rest.is_empty() {
                    dest.clone()
                } else {
                    format!("{}/{rest}", dest.trim_end_matches('/'))
                };
            }
        }
        inside(&self.root, host)
    }

    /// Count one match of `rule`: `Some(n)` to report it (n: it and the ones suppressed
    /// since the last report), `None` past [`EVENTS_PER_SECOND`].
    fn admit(&self, rule: Rule) -> Option<u64> {
        let mut lim = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
        let w = lim.entry(rule).or_default();
        let now = Instant::now();
        if w.start
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            w.start = Some(now);
            w.sent = 0;
        }
        if w.sent >= EVENTS_PER_SECOND {
            w.suppressed += 1;
            None
        } else {
            w.sent += 1;
            Some(std::mem::take(&mut w.suppressed) + 1)
        }
    }
}

/// Kill `pid` (a guarded container's process) with SIGKILL; one that is gone already is fine.
fn sigkill(pid: i32) {
    if pid > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// A host pid as its own pid namespace numbers it (the last of `NSpid`), or the host pid
/// when the process has gone.
fn ns_pid(pid: u32) -> u32 {
    crate::procfs::read_small(&format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last().and_then(|n| n.parse().ok()))
        })
        .unwrap_or(pid)
}

/// Does the container `identity` registers carry `required` rules (for a monitor without a
/// guard, which must then refuse it)? An unreadable config counts as yes.
pub fn requires_guard(identity: &Identity) -> bool {
    let config = Path::new(&identity.bundle).join("config.json");
    if is_missing(&config) {
        return false;
    }
    match read_config(&config) {
        Err(_) => true,
        Ok(spec) => spec
            .pointer("/annotations")
            .and_then(|a| a.get(behavior::ANNOTATION))
            .and_then(Value::as_str)
            .is_some_and(|t| serde_json::from_str::<Compiled>(t).map_or(true, |c| c.required)),
    }
}

fn is_missing(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// config.json of a bundle (a regular file, not a symlink), parsed.
fn read_config(path: &Path) -> Result<Value, GuardError> {
    let (bytes, _) = ociguard_policy::spec::read_regular(path, 64 << 20)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&bytes).map_err(|e| err(format!("{}: {e}", path.display())))
}

fn link(p: &str) -> String {
    std::fs::read_link(p)
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn fd_path(fd: BorrowedFd<'_>) -> String {
    link(&format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
}

/// A host path as the container sees it: below its rootfs, or as the kernel printed it for a
/// mount this process cannot reach (already relative to the container's root).
fn inside(root: &Path, path: &str) -> String {
    match Path::new(path).strip_prefix(root) {
        Ok(rest) => format!("/{}", rest.display()),
        Err(_) => path.to_owned(),
    }
}

fn is_tty(link: &str) -> bool {
    link.starts_with("/dev/pts/") || link.starts_with("/dev/tty") || link == "/dev/console"
}

#[derive(Debug, Default)]
struct ExecCall {
    path: String,
    argv: Vec<String>,
}

/// What a process blocked in execve asked for: `/proc/PID/syscall` names the call and its
/// arguments; the strings are read from the process's memory (it cannot run meanwhile, but
/// another of its threads could change them: the path is what the kernel resolved already).
fn read_exec(pid: i32) -> ExecCall {
    // The kernel shows a task's syscall only once it is off the CPU: a read that races with
    // the task going to sleep for our answer gets "running". It is about to block (it waits
    // for this very answer), so asking again soon succeeds; an empty path and argv would
    // make an allowed program look like no program at all.
    let mut line = String::new();
    for attempt in 0..200 {
        match crate::procfs::read_small(&format!("/proc/{pid}/syscall")) {
            Ok(l) if l.starts_with("running") => {
                line = l;
                std::thread::sleep(Duration::from_micros(if attempt < 20 { 20 } else { 200 }));
            }
            Ok(l) => {
                line = l;
                break;
            }
            Err(_) => return ExecCall::default(),
        }
    }
    let mut it = line.split_whitespace();
    let nr: i64 = it.next().and_then(|n| n.parse().ok()).unwrap_or(-1);
    let args: Vec<u64> = it
        .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).unwrap_or(0))
        .collect();
    let (path_at, argv_at) = match nr {
        n if n == libc::SYS_execve => (args.first(), args.get(1)),
        n if n == libc::SYS_execveat => (args.get(1), args.get(2)),
        _ => return ExecCall::default(),
    };
    let pid = Pid::from_raw(pid);
    let path = path_at
        .map(|&a| read_string(pid, a, 4096))
        .unwrap_or_default();
    let mut argv = Vec::new();
    if let Some(&base) = argv_at {
        let mut ptrs = [0u8; 8 * MAX_ARGS];
        if read_mem(pid, base, &mut ptrs) {
            let mut total = 0;
            for chunk in ptrs.chunks_exact(8) {
                let p = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
                if p == 0 || total >= MAX_ARGV {
                    break;
                }
                let s = read_string(pid, p, 256);
                total += s.len();
                argv.push(s);
            }
        }
    }
    ExecCall { path, argv }
}

fn read_mem(pid: Pid, addr: u64, buf: &mut [u8]) -> bool {
    let len = buf.len();
    let remote = [RemoteIoVec {
        base: addr as usize,
        len,
    }];
    process_vm_readv(pid, &mut [IoSliceMut::new(buf)], &remote).is_ok_and(|n| n > 0)
}

/// A NUL-terminated string at `addr`, at most `max` bytes, read page by page (a string may
/// end just before an unmapped page).
fn read_string(pid: Pid, addr: u64, max: usize) -> String {
    let mut out = Vec::new();
    let mut at = addr;
    while out.len() < max {
        let to_page = 4096 - (at % 4096) as usize;
        let mut buf = vec![0u8; to_page.min(max - out.len())];
        if !read_mem(pid, at, &mut buf) {
            break;
        }
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            out.extend_from_slice(&buf[..end]);
            break;
        }
        at += buf.len() as u64;
        out.extend_from_slice(&buf);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_shown_as_the_container_sees_them() {
        assert_eq!(
            inside(Path::new("/b/rootfs"), "/b/rootfs/bin/sh"),
            "/bin/sh"
        );
        assert_eq!(
            inside(Path::new("/b/rootfs"), "/bin/busybox"),
            "/bin/busybox"
        );
        assert!(is_tty("/dev/pts/3"));
        assert!(!is_tty("pipe:[123]"));
    }

    #[test]
    fn exec_arguments_of_a_process_blocked_in_execve_are_read_from_its_memory() {
        // This process's own memory stands in for the blocked one.
        let s = std::ffi::CString::new("/bin/sh").unwrap();
        let got = read_string(Pid::this(), s.as_ptr() as u64, 4096);
        assert_eq!(got, "/bin/sh");
    }
}
