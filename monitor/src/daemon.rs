//! ociguardd's life: lock, replay, ingest the spool, reconcile, serve, repeat the chores.
//!
//! Startup order is what makes "never lose an identity" hold: the journal is replayed before
//! anything is answered; reports spooled while the monitor was down are ingested next; then every
//! record is checked against the live process table (pid + start time + boot id), and only then
//! do the sockets open. Hooks that run during startup spool (best-effort) or fail (required);
//! the spool is read again every few seconds.

use std::fs::{self, File};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::containerd::Containerd;
use crate::events::Hub;
use crate::exitwatch;
use crate::journal::{Journal, JournalError};
use crate::nflog;
use crate::procfs::{self, ProcView, Real};
use crate::profiles::Profiles;
use crate::protocol::Request;
use crate::server::{self, Limits, Role, Shared};
use crate::spool::{self, SpoolError};
use crate::store::Store;
use crate::writer::{Op, Writer, WriterOptions};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/ociguard/monitor";
/// Behaviour profiles, under the state directory.
pub const PROFILES_DIR: &str = "profiles";
pub const JOURNAL_FILE: &str = "journal.jsonl";
const LOCK_FILE: &str = "monitor.lock";

#[derive(Debug, Clone)]
pub struct Options {
    /// The admin socket (hooks, ociguardctl); its directory is made 0700.
    pub socket: PathBuf,
    /// An optional whoami-only socket to mount into containers (directory 0755, socket 0666).
    pub workload_socket: Option<PathBuf>,
    /// Journal and lock file.
    pub state_dir: PathBuf,
    pub spool_dir: PathBuf,
    /// uids besides root that may register, deregister and query.
    pub admin_uids: Vec<u32>,
    pub limits: Limits,
    pub writer: WriterOptions,
    pub reconcile_interval: Duration,
    pub spool_interval: Duration,
    /// Subscribe to the kernel's process-exit events for exit statuses.
    pub exit_events: bool,
    /// Report the packets containers' egress rulesets deny (NFLOG) as `egress-denied` events.
    pub egress_events: bool,
    /// Hold `[behavior]` rules with fanotify permission events (the guard).
    pub guard: bool,
    /// Also hold them with the BPF enforcer (`bpf`) when the kernel takes its programs.
    pub bpf: bool,
    /// Where the enforcer's maps and programs are pinned (one directory per ociguardd).
    pub bpf_pin_dir: PathBuf,
    /// The NFLOG group of the egress rulesets' log rule (`egress.nflog_group` of config.toml).
    pub nflog_group: u16,
    /// Follow containerd at this socket for `image_of` (`labels.containerd_socket`).
    pub containerd_socket: Option<PathBuf>,
    /// Export every event as a JSON line (`--events-file`).
    pub events_file: Option<crate::export::Target>,
    /// Also send every event's export line to syslog (`--events-syslog`).
    pub events_syslog: Option<crate::export_syslog::Syslog>,
    /// Follow ociguard's decision log (`decision_log` of config.toml): decisions counted,
    /// refusals published as `refused` events.
    pub decision_log: Option<PathBuf>,
    /// Serve `GET /metrics` here (`--metrics-address`); nothing listens without it.
    pub metrics_address: Option<crate::metrics::Address>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            socket: PathBuf::from("/run/ociguard/monitor.sock"),
            workload_socket: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            spool_dir: PathBuf::from("/var/lib/ociguard/spool"),
            admin_uids: Vec::new(),
            limits: Limits::default(),
            writer: WriterOptions::default(),
            reconcile_interval: Duration::from_secs(30),
            spool_interval: Duration::from_secs(5),
            exit_events: true,
            egress_events: true,
            guard: true,
            bpf: true,
            bpf_pin_dir: PathBuf::from(crate::bpf::PIN_ROOT),
            nflog_group: nflog::DEFAULT_GROUP,
            containerd_socket: None,
            events_file: None,
            events_syslog: None,
            decision_log: None,
            metrics_address: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another ociguardd is running (it holds {path})")]
    Locked { path: PathBuf },
    #[error("lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("socket {path}: {step}: {source}")]
    Socket {
        path: PathBuf,
        step: &'static str,
        source: std::io::Error,
    },
    #[error("spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("event export {target:?}: {source}")]
    Export {
        target: crate::export::Target,
        source: std::io::Error,
    },
    #[error("event export to syslog {}: {source}", socket.display())]
    Syslog {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("metrics address {address}: {source}")]
    Metrics {
        address: crate::metrics::Address,
        source: std::io::Error,
    },
    #[error("start thread {name}: {source}")]
    Thread {
        name: &'static str,
        source: std::io::Error,
    },
}

fn make_dir(path: &Path, mode: u32) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)?;
    let meta = fs::metadata(path)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("not a directory"));
    }
    let current = meta.permissions().mode() & 0o7777;
    if current != mode {
        log::warn!("{}: mode {current:04o}, setting {mode:04o}", path.display());
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// A socket file this process bound: removed at shutdown only if it is still this process's
/// (another monitor may have been started on the same path since).
#[derive(Debug)]
pub struct Bound {
    path: PathBuf,
}

impl Bound {
    /// Remove the socket file unless another process serves it now. (Its inode number cannot
    /// tell: a file created after ours was removed may get the same one. The kernel's word on
    /// who listens can: the peer credentials of a connection are the listener's.)
    pub fn remove(&self) {
        match server_of(&self.path) {
            Some(pid) if pid != Some(std::process::id()) => log::info!(
                "{}: another process serves it now; left in place",
                self.path.display()
            ),
            _ => {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Who serves the socket at `path`: `None` when nobody accepts a connection, else the
/// listening process as the kernel reports it (peer credentials; `Some(None)`: not known).
fn server_of(path: &Path) -> Option<Option<u32>> {
    let probe = UnixStream::connect(path).ok()?;
    let creds = nix::sys::socket::getsockopt(&probe, nix::sys::socket::sockopt::PeerCredentials);
    Some(creds.ok().and_then(|c| u32::try_from(c.pid()).ok()))
}

/// Bind `path` with a fresh socket file, in a directory of `dir_mode`, the socket itself
/// `mode`. An existing socket is removed only when nobody answers on it (a previous run's);
/// one that accepts a connection belongs to a running monitor (another state directory, same
/// socket) and is an error, never taken over.
pub fn bind(path: &Path, dir_mode: u32, mode: u32) -> Result<(UnixListener, Bound), DaemonError> {
    let err = |step: &'static str| {
        move |source| DaemonError::Socket {
            path: path.to_owned(),
            step,
            source,
        }
    };
    if let Some(dir) = path.parent() {
        make_dir(dir, dir_mode).map_err(err("prepare directory"))?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if server_of(path).is_some() {
                return Err(DaemonError::Socket {
                    path: path.to_owned(),
                    step: "check",
                    source: std::io::Error::other(
                        "another process is serving this socket (a monitor with another state \
                         directory?); refusing to take it over",
                    ),
                });
            }
            fs::remove_file(path).map_err(err("remove stale"))?
        }
        Ok(_) => {
            return Err(DaemonError::Socket {
                path: path.to_owned(),
                step: "check",
                source: std::io::Error::other("exists and is not a socket"),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(err("bind"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(err("chmod"))?;
    Ok((
        listener,
        Bound {
            path: path.to_owned(),
        },
    ))
}

fn spawn<F: FnOnce() + Send + 'static>(name: &'static str, f: F) -> Result<(), DaemonError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(|_| ())
        .map_err(|source| DaemonError::Thread { name, source })
}

fn ingest_spool(shared: &Shared, dir: &Path) {
    let res = spool::ingest(dir, |req| {
        let Request::Register { event, identity } = req else {
            return Err("not a register request".to_owned());
        };
        shared
            .commit(|reply| Op::Register {
                event,
                identity: Box::new(identity),
                reply: Some(reply),
            })
            .map(|_| ())
    });
    match res {
        Ok(s) if s.ingested + s.rejected + s.deferred > 0 => log::info!(
            "spool {}: {} report(s) ingested, {} rejected, {} deferred",
            dir.display(),
            s.ingested,
            s.rejected,
            s.deferred
        ),
        Ok(_) => {}
        Err(e) => log::error!("{e}"),
    }
}

fn reconcile(shared: &Shared) {
    if let Some(guard) = &shared.guard {
        let store = shared.store.read().unwrap_or_else(|p| p.into_inner());
        guard.prune(|key| {
            store
                .get(key)
                .is_some_and(|r| r.status != crate::record::Status::Exited)
        });
    }
    match shared.commit(|reply| Op::Reconcile { reply: Some(reply) }) {
        Ok(c) if c.changed > 0 => log::info!(
            "reconciled: {} container(s) no longer running marked exited",
            c.changed
        ),
        Ok(_) => {}
        Err(e) => log::error!("reconcile: {e}"),
    }
}

/// The guard, with the BPF enforcer when `opts.bpf` and the kernel takes it; what the node
/// has is written to `enforcers.json` beside the socket for `ociguard create`.
fn start_guard(
    opts: &Options,
    store: &Arc<RwLock<Store>>,
    hub: &Arc<Hub>,
    profiles: Option<Arc<Profiles>>,
) -> Result<Option<Arc<crate::guard::Guard>>, DaemonError> {
    let mut notes = Vec::new();
    let kernel = if opts.bpf {
        match crate::bpf::Enforcer::open(&opts.bpf_pin_dir) {
            Ok(k) => {
                log::info!(
                    "bpf: enforcer {} under {}",
                    if k.reused {
                        "kept running (pinned by an earlier ociguardd)"
                    } else {
                        "loaded and pinned"
                    },
                    opts.bpf_pin_dir.display()
                );
                Some(Arc::new(k))
            }
            Err(e) => {
                log::warn!("bpf: enforcer unavailable: {e}");
                notes.push(format!("BPF enforcer unavailable: {e}"));
                None
            }
        }
    } else {
        notes.push("BPF enforcer turned off (--no-bpf)".to_owned());
        None
    };
    let guard = match crate::guard::Guard::new(
        Arc::clone(store),
        Arc::clone(hub),
        kernel.clone(),
        profiles,
    ) {
        Ok(g) => {
            let run = Arc::clone(&g);
            spawn("ociguardd-guard", move || run.run())?;
            log::info!("guard: fanotify backend ({})", crate::guard::LIMITS);
            Some(g)
        }
        Err(e) => {
            log::warn!("guard unavailable: {e}: [behavior] rules cannot be held here");
            notes.push(format!("fanotify guard unavailable: {e}"));
            None
        }
    };
    let node = ociguard_policy::behavior::NodeEnforcers {
        enforcers: guard.as_ref().map(|g| g.enforcers()).unwrap_or_default(),
        notes,
    };
    let path = ociguard_policy::behavior::NodeEnforcers::path(&opts.socket);
    let text = serde_json::to_string(&node).unwrap_or_default();
    // The socket's directory (root-only, as `bind` makes it), which may not exist yet.
    let dir = path.parent().unwrap_or(Path::new("/"));
    if let Err(e) = make_dir(dir, 0o700).and_then(|()| crate::imagemap::write_atomic(&path, &text))
    {
        log::warn!("{}: {e}", path.display());
    }
    Ok(guard)
}

/// Run the monitor until `stop` delivers (or its sender is gone).
pub fn run(opts: &Options, stop: &Receiver<()>) -> Result<(), DaemonError> {
    crate::sys::limit_malloc_arenas();
    make_dir(&opts.state_dir, 0o700).map_err(|source| DaemonError::StateDir {
        path: opts.state_dir.clone(),
        source,
    })?;
    let lock_path = opts.state_dir.join(LOCK_FILE);
    let lock_file = File::create(&lock_path).map_err(|source| DaemonError::Lock {
        path: lock_path.clone(),
        source,
    })?;
    let _lock = match Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            return Err(DaemonError::Locked { path: lock_path })
        }
        Err((_, e)) => {
            return Err(DaemonError::Lock {
                path: lock_path,
                source: e.into(),
            })
        }
    };

    let host_pid_ns = procfs::ns_inode(std::process::id(), "pid").ok();
    let mut store = Store::new(host_pid_ns);
    let journal_path = opts.state_dir.join(JOURNAL_FILE);
    let started = Instant::now();
    let (journal, stats) = Journal::open(&journal_path, |e| store.apply(e))?;
    for (offset, why) in &stats.corrupt {
        log::error!(
            "journal {}: record at byte {offset} is corrupt ({why}) but later records are intact: skipped",
            journal_path.display()
        );
    }
    if stats.truncated > 0 {
        log::warn!(
            "journal {}: torn last record ({} bytes, never acknowledged) truncated",
            journal_path.display(),
            stats.truncated
        );
    }
    log::info!(
        "journal {}: {} records replayed into {} containers in {:?}",
        journal_path.display(),
        stats.records,
        store.len(),
        started.elapsed()
    );

    let store = Arc::new(RwLock::new(store));
    let hub = Arc::new(Hub::new());
    let proc: Arc<dyn ProcView> = Arc::new(Real::new());
    let (ops, rx) = mpsc::channel();
    let writer = Writer::new(
        journal,
        Arc::clone(&store),
        Arc::clone(&hub),
        Arc::clone(&proc),
        opts.writer.clone(),
    );
    spawn("ociguardd-writer", move || writer.run(rx))?;

    if opts.exit_events {
        match exitwatch::subscribe() {
            Ok(fd) => {
                let (s, o, c) = (Arc::clone(&store), ops.clone(), Arc::clone(hub.counters()));
                spawn("ociguardd-exits", move || exitwatch::run(fd, s, o, c))?;
            }
            Err(e) => log::warn!(
                "kernel process events unavailable ({e}): exit statuses will be recorded as unknown"
            ),
        }
    }

    if let Some(target) = &opts.events_file {
        // Before anything publishes: the export has every event of this run.
        let run = crate::export::start(target.clone(), Arc::clone(&hub)).map_err(|source| {
            DaemonError::Export {
                target: target.clone(),
                source,
            }
        })?;
        spawn("ociguardd-export", run)?;
    }
    if let Some(conf) = &opts.events_syslog {
        let sink = crate::export_syslog::Sink::open(conf.clone()).map_err(|source| {
            DaemonError::Syslog {
                socket: conf.socket.clone(),
                source,
            }
        })?;
        spawn(
            "ociguardd-syslog",
            crate::export::follow(sink, Arc::clone(&hub)),
        )?;
    }
    // A metrics socket file of ours, removed at the stop like the others.
    let mut metrics_file = None;
    if let Some(address) = &opts.metrics_address {
        let err = |source| DaemonError::Metrics {
            address: address.clone(),
            source,
        };
        let listener = crate::metrics::bind(address).map_err(err)?;
        let bound_to = listener.address().map_err(err)?;
        if let crate::metrics::Address::Unix(path) = &bound_to {
            metrics_file = Some(Bound { path: path.clone() });
        }
        let metrics = crate::metrics::Metrics::new(Arc::clone(&store), Arc::clone(&hub));
        spawn("ociguardd-metrics", move || {
            crate::metrics::serve(listener, metrics)
        })?;
        log::info!("metrics: serving GET /metrics on {bound_to}");
    }
    if let Some(path) = &opts.decision_log {
        spawn(
            "ociguardd-decisions",
            crate::decisions::follow(path.clone(), Arc::clone(&hub)),
        )?;
    }
    let profiles = match Profiles::open(
        &opts.state_dir.join(PROFILES_DIR),
        Arc::clone(&hub),
        Arc::clone(&store),
    ) {
        Ok(p) => {
            let f = Arc::clone(&p);
            spawn("ociguardd-profiles", move || f.run_flusher())?;
            Some(p)
        }
        Err(e) => {
            log::error!("behaviour profiles unavailable: {e}: learn policies record nothing, anomalies are not reported");
            None
        }
    };
    let guard = if opts.guard {
        start_guard(opts, &store, &hub, profiles.clone())?
    } else {
        None
    };
    let shared = Arc::new(Shared {
        store,
        hub,
        ops,
        proc,
        admin_uids: opts.admin_uids.clone(),
        host_pid_ns,
        limits: opts.limits.clone(),
        containerd: opts.containerd_socket.clone().and_then(|socket| {
            Containerd::start(socket, Some(crate::imagemap::dir(&opts.socket)))
                .map_err(|e| log::warn!("containerd follower not started: {e}"))
                .ok()
        }),
        egress: std::sync::OnceLock::new(),
        guard,
        profiles,
    });

    ingest_spool(&shared, &opts.spool_dir);
    if let Some(guard) = &shared.guard {
        // Before reconciling, which drops the kernel entries of containers not guarded.
        guard.restore();
        // After the restore: events that waited in the ring buffer while ociguardd was down
        // then find the container they belong to.
        if let Some(read) = guard.kernel_events() {
            spawn("ociguardd-bpf", read)?;
        }
    }
    reconcile(&shared);
    if opts.egress_events {
        // After reconciliation: only containers that are still alive get a socket.
        match nflog::open(
            opts.nflog_group,
            Arc::clone(&shared.store),
            Arc::clone(&shared.hub),
            Arc::clone(&shared.proc),
            shared.profiles.clone(),
        ) {
            Ok((binder, reader)) => {
                let _ = shared.egress.set(binder.counts());
                spawn("ociguardd-nflog-bind", move || binder.run())?;
                spawn("ociguardd-nflog", move || reader.run())?;
            }
            Err(e) => log::warn!("egress denial events unavailable: {e}"),
        }
    }
    // Replay and reconciliation of a large journal leave a lot of freed heap behind.
    crate::sys::trim_heap();

    let (admin, admin_file) = bind(&opts.socket, 0o700, 0o600)?;
    let mut bound = vec![admin_file];
    bound.extend(metrics_file);
    let s = Arc::clone(&shared);
    spawn("ociguardd-admin", move || {
        server::serve(admin, Role::Admin, s)
    })?;
    if let Some(path) = &opts.workload_socket {
        let (workload, workload_file) = bind(path, 0o755, 0o666)?;
        bound.push(workload_file);
        let s = Arc::clone(&shared);
        spawn("ociguardd-workload", move || {
            server::serve(workload, Role::Workload, s)
        })?;
    }
    log::info!("listening on {}", opts.socket.display());
    // Reports spooled while the socket was not yet open.
    ingest_spool(&shared, &opts.spool_dir);

    let mut last_spool = Instant::now();
    let mut last_reconcile = Instant::now();
    loop {
        // Asleep until the next periodic job is due or a stop signal arrives.
        let due = (last_spool + opts.spool_interval).min(last_reconcile + opts.reconcile_interval);
        match stop.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_spool.elapsed() >= opts.spool_interval {
            ingest_spool(&shared, &opts.spool_dir);
            last_spool = Instant::now();
        }
        if last_reconcile.elapsed() >= opts.reconcile_interval {
            reconcile(&shared);
            last_reconcile = Instant::now();
        }
    }
    log::info!("stopping");
    for b in &bound {
        b.remove();
    }
    if let Some(p) = &shared.profiles {
        p.stop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_socket_is_never_taken_over_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/monitor.sock");
        let (first, first_file) = bind(&path, 0o700, 0o600).unwrap();

        // Someone answers on it: refused, and the file stays theirs.
        let err = bind(&path, 0o700, 0o600).unwrap_err().to_string();
        assert!(err.contains("another process is serving"), "{err}");
        assert!(UnixStream::connect(&path).is_ok());

        // Nobody answers (the previous run is gone): stale, replaced.
        drop(first);
        let (_second, second_file) = bind(&path, 0o700, 0o600).unwrap();
        assert!(UnixStream::connect(&path).is_ok());

        // Ours (served by this process): removed. (Another process's is left in place: the
        // daemon integration tests run two monitors.)
        drop(first_file);
        second_file.remove();
        assert!(!path.exists());
    }
}
