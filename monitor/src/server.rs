//! The sockets: accept connections, learn who the peer is from the kernel, answer requests.
//!
//! One thread per connection (bounded per socket), each with an idle timeout so a peer that
//! connects and stalls holds one slot for a few seconds and blocks nobody else. A malformed or
//! oversized request gets an error line and the connection is closed: after garbage the framing
//! cannot be trusted.
//!
//! Authorisation uses only `SO_PEERCRED` (uid and pid as the kernel recorded them at
//! `connect(2)`): `ping` and `whoami` are open to every peer; everything else needs an admin uid
//! (root, or one given with `--admin-uid`), a caller in the host's pid namespace that is not
//! itself inside a registered container (a container's root is uid 0 too when it has no user
//! namespace), and the admin socket — the workload socket answers only `whoami` and `ping`.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};

use crate::containerd::Containerd;
use crate::events::Hub;
use crate::nflog;
use crate::procfs::{self, ProcView};
use crate::protocol::{read_frame, FrameError, Live, Request, Response, MAX_REQUEST};
use crate::store::{Lookup, Store};
use crate::writer::{Op, Reply};

/// Which socket a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The root-only socket (`/run/ociguard/monitor.sock`): hooks, `ociguardctl`.
    Admin,
    /// A socket meant to be mounted into containers: `whoami` and `ping` only.
    Workload,
}

#[derive(Debug, Clone)]
pub struct Limits {
    /// A peer that sends nothing for this long is disconnected.
    pub idle_timeout: Duration,
    /// Longest wait for the journal to make a change durable.
    pub commit_timeout: Duration,
    pub max_connections: usize,
    /// Longest wait for containerd on an `image_of` the follower's maps cannot answer.
    pub containerd_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(10),
            commit_timeout: Duration::from_secs(10),
            max_connections: 256,
            containerd_timeout: Duration::from_millis(500),
        }
    }
}

/// What every connection thread shares.
pub struct Shared {
    pub store: Arc<RwLock<Store>>,
    pub hub: Arc<Hub>,
    pub ops: Sender<Op>,
    pub proc: Arc<dyn ProcView>,
    pub admin_uids: Vec<u32>,
    pub host_pid_ns: Option<u64>,
    pub limits: Limits,
    /// The containerd follower, when the monitor runs one.
    pub containerd: Option<Containerd>,
    /// Egress denial counts, once the NFLOG threads run.
    pub egress: OnceLock<nflog::Counts>,
    /// The behaviour guard, when fanotify could be set up.
    pub guard: Option<Arc<crate::guard::Guard>>,
    /// Behaviour profiles, when their directory could be opened.
    pub profiles: Option<Arc<crate::profiles::Profiles>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("admin_uids", &self.admin_uids)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn whois(&self, pid: u32) -> Lookup {
        let store = match self.store.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        store.whois(pid, self.proc.as_ref())
    }

    /// Send `op` to the writer and wait until it is durable.
    pub fn commit(&self, make: impl FnOnce(Sender<Reply>) -> Op) -> Reply {
        let (tx, rx) = mpsc::channel();
        self.ops
            .send(make(tx))
            .map_err(|_| "monitor is shutting down".to_owned())?;
        match rx.recv_timeout(self.limits.commit_timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "journal did not confirm within {:?}",
                self.limits.commit_timeout
            )),
            Err(RecvTimeoutError::Disconnected) => Err("journal writer stopped".to_owned()),
        }
    }
}

/// The peer as the kernel describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Threads kept waiting in `accept(2)` at most; more exit after their connection (each holds
/// a stack).
const MAX_IDLE_ACCEPTORS: usize = 2;

/// The threads that serve one socket. Each waits in `accept(2)` itself and serves the
/// connection it gets: a connecting peer wakes the thread that answers it, with no hand-over
/// (most connections are one short request: a hook's registration, ociguard's image lookup,
/// where a thread start or a second wake-up per connection cost more than the answer).
struct Acceptors {
    listener: UnixListener,
    role: Role,
    shared: Arc<Shared>,
    /// Threads in `accept(2)`.
    idle: AtomicUsize,
    /// Connections being served.
    active: AtomicUsize,
}

impl Acceptors {
    /// Accept and serve until the listener fails; `permanent`: never leave (the first thread).
    fn run(self: Arc<Self>, permanent: bool) {
        loop {
            self.idle.fetch_add(1, Ordering::AcqRel);
            let conn = self.listener.accept();
            let idle = self.idle.fetch_sub(1, Ordering::AcqRel) - 1;
            let mut stream = match conn {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::error!("accept: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            if idle == 0 {
                // Someone must be accepting while this thread serves.
                self.spawn();
            }
            let limit = self.shared.limits.max_connections;
            if self.active.load(Ordering::Acquire) >= limit {
                log::warn!(
                    "{:?} socket: {limit} connections open, refusing another",
                    self.role
                );
                let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                let _ = stream.write_all(&Response::error("too many connections").to_line());
                continue;
            }
            self.active.fetch_add(1, Ordering::AcqRel);
            handle(stream, self.role, &self.shared);
            self.active.fetch_sub(1, Ordering::AcqRel);
            if !permanent && self.idle.load(Ordering::Acquire) >= MAX_IDLE_ACCEPTORS {
                return;
            }
        }
    }

    fn spawn(self: &Arc<Self>) {
        let me = Arc::clone(self);
        if let Err(e) = std::thread::Builder::new()
            .name("ociguardd-conn".into())
            .stack_size(256 * 1024)
            .spawn(move || me.run(false))
        {
            log::error!("cannot start a connection thread: {e}");
        }
    }
}

/// Serve `listener` on this thread and as many more as connections need, until it fails for
/// good; each connection on a thread of its own, threads reused.
pub fn serve(listener: UnixListener, role: Role, shared: Arc<Shared>) {
    Arc::new(Acceptors {
        listener,
        role,
        shared,
        idle: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
    })
    .run(true);
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = getsockopt(stream, sockopt::PeerCredentials).map_err(std::io::Error::from)?;
    Ok(Peer {
        pid: u32::try_from(cred.pid()).unwrap_or(0),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// Why a peer may not make admin requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    WorkloadSocket,
    Uid(u32),
    Other(String),
}

impl Denied {
    pub fn message(&self, op: &str) -> String {
        match self {
            Denied::WorkloadSocket => format!(
                "permission denied: {op} is not available on the workload socket (only whoami, ping)"
            ),
            Denied::Uid(uid) => format!("permission denied: uid {uid} may not {op}"),
            Denied::Other(why) => format!("permission denied: {why}; may not {op}"),
        }
    }
}

/// May `peer` make admin requests (everything but `ping` and `whoami`)? Decided once per
/// connection: the credentials are the kernel's, fixed at `connect(2)`.
pub fn admin_check(role: Role, peer: &Peer, shared: &Shared) -> Result<(), Denied> {
    if role == Role::Workload {
        return Err(Denied::WorkloadSocket);
    }
    if peer.uid != 0 && !shared.admin_uids.contains(&peer.uid) {
        return Err(Denied::Uid(peer.uid));
    }
    if peer.pid == 0 {
        return Err(Denied::Other(
            "the caller's pid is not visible to the monitor".to_owned(),
        ));
    }
    if let Some(host) = shared.host_pid_ns {
        match procfs::ns_inode(peer.pid, "pid") {
            Ok(ns) if ns == host => {}
            Ok(_) => {
                return Err(Denied::Other(format!(
                    "pid {} is not in the host's pid namespace",
                    peer.pid
                )))
            }
            Err(e) => {
                return Err(Denied::Other(format!(
                    "cannot check pid {}'s namespace ({e})",
                    peer.pid
                )))
            }
        }
    }
    if let Lookup::Container(c) = shared.whois(peer.pid) {
        return Err(Denied::Other(format!(
            "the caller (pid {}) is inside container {}",
            peer.pid, c.id
        )));
    }
    Ok(())
}

/// Why `peer` may not make `req`, if it may not (`cache` holds this connection's admin check).
pub fn authorize(
    req: &Request,
    role: Role,
    peer: &Peer,
    shared: &Shared,
    cache: &mut Option<Result<(), Denied>>,
) -> Result<(), String> {
    if matches!(req, Request::Ping | Request::Whoami) {
        return Ok(());
    }
    cache
        .get_or_insert_with(|| admin_check(role, peer, shared))
        .clone()
        .map_err(|d| d.message(req.name()))
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn handle(stream: UnixStream, role: Role, shared: &Shared) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{role:?} socket: cannot read peer credentials: {e}; closing");
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(shared.limits.idle_timeout));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            log::error!("clone connection: {e}");
            return;
        }
    };
    let mut reader = BufReader::with_capacity(8192, stream);
    let mut admin = None;
    loop {
        let line = match read_frame(&mut reader, MAX_REQUEST) {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(FrameError::TooLarge { limit }) => {
                log::warn!(
                    "peer pid {} uid {}: request larger than {limit} bytes; closing",
                    peer.pid,
                    peer.uid
                );
                let _ = writer.write_all(
                    &Response::error(format!("request larger than {limit} bytes")).to_line(),
                );
                return;
            }
            Err(FrameError::Io(e)) if is_timeout(&e) => {
                log::warn!(
                    "peer pid {} uid {}: idle for {:?} in the middle of the conversation; closing",
                    peer.pid,
                    peer.uid,
                    shared.limits.idle_timeout
                );
                return;
            }
            Err(e) => {
                log::debug!("peer pid {}: {e}", peer.pid);
                return;
            }
        };
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                log::warn!(
                    "peer pid {} uid {}: bad request ({e}); closing",
                    peer.pid,
                    peer.uid
                );
                let _ = writer.write_all(&Response::error(format!("bad request: {e}")).to_line());
                return;
            }
        };
        if let Err(why) = authorize(&req, role, &peer, shared, &mut admin) {
            log::warn!("peer pid {} uid {}: {why}", peer.pid, peer.uid);
            if writer.write_all(&Response::error(why).to_line()).is_err() {
                return;
            }
            continue;
        }
        if let Request::Events { follow } = req {
            stream_events(&mut writer, &mut reader, follow, shared);
            return;
        }
        if req == Request::List {
            if write_list(&mut writer, shared).is_err() {
                return;
            }
            continue;
        }
        let resp = answer(req, &peer, shared);
        if writer.write_all(&resp.to_line()).is_err() {
            return;
        }
    }
}

fn lookup_response(l: Lookup) -> Response {
    match l {
        Lookup::Container(c) => Response {
            ok: true,
            container: Some(*c),
            ..Default::default()
        },
        Lookup::NotAContainer => Response {
            ok: true,
            reason: Some("not a container".to_owned()),
            ..Default::default()
        },
        Lookup::NoSuchProcess => Response {
            ok: true,
            reason: Some("not a container (no such process)".to_owned()),
            ..Default::default()
        },
    }
}

/// The answer to an authorised request (not `events`).
pub fn answer(req: Request, peer: &Peer, shared: &Shared) -> Response {
    match req {
        Request::Ping => Response::ok(),
        Request::Whoami => lookup_response(shared.whois(peer.pid)),
        Request::Whois { pid } => lookup_response(shared.whois(pid)),
        Request::List => {
            let store = match shared.store.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            Response {
                ok: true,
                containers: Some(store.list()),
                ..Default::default()
            }
        }
        Request::Inspect { id, bundle } => {
            let found = match shared.store.read() {
                Ok(g) => g.find(&id, bundle.as_deref()),
                Err(p) => p.into_inner().find(&id, bundle.as_deref()),
            };
            if found.is_empty() {
                Response::error(format!("no container with id {id:?}"))
            } else {
                let live = found
                    .iter()
                    .map(|r| Live {
                        egress_denied: shared.egress.get().and_then(|c| c.denied(&r.key())),
                    })
                    .collect();
                Response {
                    ok: true,
                    containers: Some(found),
                    live: Some(live),
                    ..Default::default()
                }
            }
        }
        Request::Register { event, identity } => {
            if let Some(guard) = &shared.guard {
                match event {
                    // Before the record is acknowledged: the hook lets the container's
                    // process go on only after this answer.
                    crate::protocol::Lifecycle::Created => match guard.add(&identity) {
                        Ok(_) => {}
                        Err((true, e)) => {
                            let msg = format!(
                                "the behavior rules of container {:?} cannot be held: {e}",
                                identity.id
                            );
                            log::error!("guard: refused: {msg}");
                            return Response::error(msg);
                        }
                        Err((false, e)) => log::warn!(
                            "guard: container {:?} runs without its behavior rules (if-available): {e}",
                            identity.id
                        ),
                    },
                    crate::protocol::Lifecycle::Exited => guard.remove(&identity.key()),
                    crate::protocol::Lifecycle::Started => {}
                }
            } else if event == crate::protocol::Lifecycle::Created
                && crate::guard::requires_guard(&identity)
            {
                return Response::error(format!(
                    "the behavior rules of container {:?} cannot be held: this ociguardd runs without its guard",
                    identity.id
                ));
            }
            // Egress denials are read from the container's namespace before its process runs.
            let watch = shared
                .egress
                .get()
                .filter(|_| event == crate::protocol::Lifecycle::Created)
                .and_then(|counts| Some((counts, counts.to_watch(&identity)?)));
            let r = shared.commit(|reply| Op::Register {
                event,
                identity: Box::new(identity),
                reply: Some(reply),
            });
            if let (Ok(_), Some((counts, key))) = (&r, watch) {
                counts.wait_watched(&key, crate::nflog::WATCH_WAIT);
            }
            committed(r)
        }
        Request::Deregister { id, bundle } => {
            if let Some(guard) = &shared.guard {
                let found = match shared.store.read() {
                    Ok(g) => g.find(&id, bundle.as_deref()),
                    Err(p) => p.into_inner().find(&id, bundle.as_deref()),
                };
                for r in found {
                    guard.remove(&r.key());
                }
            }
            let r = shared.commit(|reply| Op::Deregister {
                id,
                bundle,
                reply: Some(reply),
            });
            committed(r)
        }
        Request::Events { .. } => Response::error("events: internal: not handled here"),
        Request::Profiles { select } => match &shared.profiles {
            None => Response::error("this monitor keeps no behaviour profiles (see its log)"),
            Some(p) => {
                let (found, quarantined) = p.find(select.as_deref());
                Response {
                    ok: true,
                    profiles: Some(found),
                    quarantined: (!quarantined.is_empty()).then(|| {
                        quarantined
                            .into_iter()
                            .map(|(file, why)| format!("{file}: {why}"))
                            .collect()
                    }),
                    ..Default::default()
                }
            }
        },
        Request::ImageOf {
            namespace,
            id,
            image,
        } => match &shared.containerd {
            None => Response::error("this monitor does not follow containerd"),
            Some(c) => match c.image_of(
                &namespace,
                id.as_deref(),
                image.as_deref(),
                shared.limits.containerd_timeout,
            ) {
                Ok(found) => Response {
                    ok: true,
                    image: Some(found),
                    ..Default::default()
                },
                Err(e) => Response::error(e),
            },
        },
    }
}

fn committed(r: Reply) -> Response {
    match r {
        Ok(c) => Response {
            ok: true,
            durable: Some(true),
            seq: c.seq,
            ..Default::default()
        },
        Err(e) => Response::error(format!("not recorded: {e}")),
    }
}

/// `list`, written in chunks: 10,000 records are ~10 MiB of JSON, and neither a full copy of
/// the records nor a long hold of the store's lock (which would stall registrations) is wanted.
fn write_list(writer: &mut UnixStream, shared: &Shared) -> std::io::Result<()> {
    let keys = match shared.store.read() {
        Ok(g) => g.keys_by_age(),
        Err(p) => p.into_inner().keys_by_age(),
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    out.write_all(b"{\"ok\":true,\"containers\":[")?;
    let mut first = true;
    let mut buf = Vec::with_capacity(256 * 1024);
    for chunk in keys.chunks(256) {
        buf.clear();
        {
            let store = match shared.store.read() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            for k in chunk {
                if let Some(rec) = store.get(k) {
                    if !first {
                        buf.push(b',');
                    }
                    first = false;
                    serde_json::to_writer(&mut buf, rec).map_err(std::io::Error::other)?;
                }
            }
        }
        out.write_all(&buf)?;
    }
    out.write_all(b"]}\n")?;
    out.flush()?;
    drop(out);
    if keys.len() > 1000 {
        crate::sys::trim_heap();
    }
    Ok(())
}

fn stream_events(
    writer: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    follow: bool,
    shared: &Shared,
) {
    let (recent, rx) = if follow {
        let (r, rx) = shared.hub.subscribe();
        (r, Some(rx))
    } else {
        (shared.hub.recent(), None)
    };
    let line = |e| {
        Response {
            ok: true,
            event: Some(e),
            ..Default::default()
        }
        .to_line()
    };
    for e in recent {
        if writer.write_all(&line(e)).is_err() {
            return;
        }
    }
    let Some(rx) = rx else {
        return;
    };
    // Nothing more is read from a follower, but its hang-up must end the thread even when no
    // event comes: check for end-of-stream between events.
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1)));
    loop {
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(e) => {
                if writer.write_all(&line(e)).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => match reader.fill_buf() {
                Ok([]) => return,
                Ok(buf) => {
                    let n = buf.len();
                    reader.consume(n);
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            },
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}
