//! The BPF enforcer: `bpf/enforcer.bpf.c`, compiled by clang at build time (see `build.rs`),
//! loaded by ociguardd with libbpf (CO-RE: relocated against the running kernel's BTF) and
//! pinned under [`PIN_ROOT`], so that its programs keep holding every container's rules while
//! ociguardd restarts and the events they report wait in the ring buffer meanwhile.
//!
//! What it holds, in the kernel, with no round trip to ociguardd (see the C file for why these
//! hooks): shells and reverse shells (a shell with a socket on stdio, or `-i` without a
//! terminal), executables not part of the image (changed after start, unlinked, memfd), the
//! dynamic loader run as a program, and reads of another process's environment or memory
//! (`/proc/PID/environ`, `/proc/PID/mem`, ptrace attach, process_vm_readv/writev). Every
//! enforced match is a SIGKILL delivered before the process runs another instruction; under
//! `audit` it is only reported. The fanotify guard (`guard`) answers exec and secret rules
//! with EPERM first; this enforcer sees what the guard let through, or everything while the
//! guard is not there.
//!
//! A container's rules are keyed by its mount namespace: ociguardd writes them when the
//! createRuntime hook registers the container (before its process runs) and deletes them
//! when it exits; [`Enforcer::retain`] clears what a crash left behind.
//!
//! This module owns the maps' byte layouts (kept in step with the C structs) and nothing of
//! the container records: events are handed to the guard, which knows whose they are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use libbpf_rs::{Link, MapCore as _, MapFlags, MapHandle, ObjectBuilder, RingBufferBuilder};
use ociguard_policy::behavior::{expand_braces, Compiled, Rule, LOADERS, MULTI_CALL};

/// The object clang built (empty where the enforcer is not built: not x86_64).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/enforcer.bpf.o"));

/// Where the maps (by name) and the program links (under `prog-<digest>/`) are pinned by
/// default. Two ociguardd on one node need two directories: each prunes what it does not
/// hold.
pub const PIN_ROOT: &str = "/sys/fs/bpf/ociguard";
const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const PROGS: [&str; 3] = ["og_exec", "og_sys_exit", "og_sys_enter"];
const MAP_CONTAINERS: &str = "og_containers";
const MAP_NAMES: &str = "og_names";
const MAP_EVENTS: &str = "og_events";
const MAP_STATS: &str = "og_stats";

// cfg.rules, as in the C file.
const R_SHELL: u32 = 1 << 0;
const R_REVERSE: u32 = 1 << 1;
const R_DROP: u32 = 1 << 2;
const R_ENVIRON: u32 = 1 << 3;
const R_LOADER: u32 = 1 << 4;
/// Not a rule: every exec is reported (to learn or compare a profile).
const R_OBSERVE: u32 = 1 << 5;
// og_names values.
const N_SHELL: u32 = 1;
const N_LOADER: u32 = 2;
const N_MULTI: u32 = 4;
// event.flags
const EV_SOCKET_STDIO: u32 = 1;
const EV_NOT_IN_IMAGE: u32 = 2;
const EV_INTERACTIVE: u32 = 4;

const NAME_LEN: usize = 32;
const NAME_KEY_LEN: usize = 8 + NAME_LEN;
const CFG_LEN: usize = 32;
/// `struct event`: 48 bytes of numbers, comm[16], pcomm[16], path[256], argv[256], file[32].
pub const EVENT_LEN: usize = 48 + 16 + 16 + 256 + 256 + NAME_LEN;

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("the BPF enforcer is not built for this architecture (x86_64 only)")]
    NotBuilt,
    #[error("no kernel BTF at /sys/kernel/btf/vmlinux: the enforcer's CO-RE relocations need a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoBtf,
    #[error("bpffs at {path}: {source}")]
    Bpffs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("load the BPF enforcer (a verifier rejection, or an incompatible map pinned by an earlier build: remove the pin directory to start afresh; libbpf's log is in ociguardd's): {0}")]
    Load(libbpf_rs::Error),
    #[error("attach {prog}: {source}")]
    Attach {
        prog: String,
        source: libbpf_rs::Error,
    },
    #[error("pin {path}: {source}")]
    Pin {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("pinned map {path}: {source}")]
    Open {
        path: PathBuf,
        source: libbpf_rs::Error,
    },
    #[error("write map {map} (full? {map} holds at most {max} entries): {source}")]
    Write {
        map: &'static str,
        max: u32,
        source: libbpf_rs::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// What one container asks of the kernel enforcer, derived from its compiled rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    rules: u32,
    audit: bool,
    /// File names (last path component) and what they are.
    names: Vec<(String, u32)>,
    /// Shell globs whose file name is a pattern: the kernel matches names, not patterns.
    pub unmatched: Vec<String>,
}

impl Plan {
    pub fn new(c: &Compiled) -> Plan {
        let mut p = Plan {
            audit: c.audit,
            ..Plan::default()
        };
        let mut on = |yes: bool, bit: u32| {
            if yes {
                p.rules |= bit;
            }
        };
        on(c.deny_shells, R_SHELL);
        on(c.reverse_shell, R_REVERSE);
        on(c.drop_exec, R_DROP);
        on(c.environ, R_ENVIRON);
        on(c.guards_exec(), R_LOADER);
        on(c.observes(), R_OBSERVE);
        let mut names: HashMap<String, u32> = HashMap::new();
        if c.deny_shells || c.reverse_shell {
            for glob in &c.shells {
                for alt in expand_braces(glob) {
                    let name = alt.rsplit('/').next().unwrap_or(&alt);
                    if name.is_empty() || name.len() >= NAME_LEN {
                        continue;
                    }
                    if name.contains(['*', '?', '[']) {
                        p.unmatched.push(alt.clone());
                        continue;
                    }
                    *names.entry(name.to_owned()).or_default() |= N_SHELL;
                }
            }
            for m in MULTI_CALL {
                *names.entry((*m).to_owned()).or_default() |= N_MULTI;
            }
        }
        if p.rules & R_LOADER != 0 {
            for l in LOADERS {
                *names.entry((*l).to_owned()).or_default() |= N_LOADER;
            }
        }
        p.names = names.into_iter().collect();
        p.names.sort();
        p
    }

    /// Does the kernel enforcer hold anything of these rules?
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }
}

/// The per-container entry (`struct cfg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cfg {
    /// CLOCK_REALTIME ns: a file whose ctime is at or after this was not in the image.
    start_ns: u64,
    /// The container's pid namespace (`stat /proc/PID/ns/pid`: st_dev, st_ino).
    pidns: (u64, u64),
    rules: u32,
    audit: bool,
}

impl Cfg {
    fn to_bytes(self) -> [u8; CFG_LEN] {
        let mut b = [0u8; CFG_LEN];
        b[0..8].copy_from_slice(&self.start_ns.to_ne_bytes());
        b[8..16].copy_from_slice(&self.pidns.0.to_ne_bytes());
        b[16..24].copy_from_slice(&self.pidns.1.to_ne_bytes());
        b[24..28].copy_from_slice(&self.rules.to_ne_bytes());
        b[28..32].copy_from_slice(&u32::from(self.audit).to_ne_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Option<Cfg> {
        Some(Cfg {
            start_ns: u64::from_ne_bytes(b.get(0..8)?.try_into().ok()?),
            pidns: (
                u64::from_ne_bytes(b.get(8..16)?.try_into().ok()?),
                u64::from_ne_bytes(b.get(16..24)?.try_into().ok()?),
            ),
            rules: u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?),
            audit: u32::from_ne_bytes(b.get(28..32)?.try_into().ok()?) != 0,
        })
    }
}

fn name_key(mntns: u64, name: &str) -> [u8; NAME_KEY_LEN] {
    let mut k = [0u8; NAME_KEY_LEN];
    k[..8].copy_from_slice(&mntns.to_ne_bytes());
    let n = name.len().min(NAME_LEN - 1);
    k[8..8 + n].copy_from_slice(&name.as_bytes()[..n]);
    k
}

/// One event from the ring buffer, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelEvent {
    pub mntns: u64,
    pub pid: u32,
    pub ppid: u32,
    /// The other process (environ, ptrace, process_vm): the host's pid for an open, the
    /// caller's namespace pid for ptrace and process_vm_*.
    pub target: u32,
    /// `None`: not a rule's match but an exec observed for a profile.
    pub rule: Option<Rule>,
    pub audit: bool,
    pub hook: &'static str,
    pub socket_stdio: bool,
    pub not_in_image: bool,
    pub interactive: bool,
    pub comm: String,
    pub parent_comm: String,
    /// exec: the path asked for; open: `environ` or `mem`.
    pub path: String,
    pub argv: Vec<String>,
    /// exec: the name of the file it resolved to.
    pub file: String,
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl KernelEvent {
    /// `None` for a record that is not an event of this build (wrong size, unknown rule).
    pub fn decode(b: &[u8]) -> Option<KernelEvent> {
        if b.len() < EVENT_LEN {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let rule = match u32_at(28) {
            R_SHELL => Some(Rule::Shell),
            R_REVERSE => Some(Rule::ReverseShell),
            R_DROP => Some(Rule::DropExec),
            R_ENVIRON => Some(Rule::Environ),
            R_LOADER => Some(Rule::Loader),
            R_OBSERVE => None,
            _ => return None,
        };
        let hook = match u32_at(36) {
            1 => "exec",
            2 => "open",
            3 => "ptrace",
            4 => "process_vm",
            _ => return None,
        };
        let flags = u32_at(44);
        let argv_len = (u32_at(40) as usize).min(255);
        let argv_bytes = &b[336..336 + argv_len];
        let argv = argv_bytes
            .split(|&c| c == 0)
            .filter(|a| !a.is_empty())
            .take(32)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(KernelEvent {
            mntns: u64::from_ne_bytes(b[0..8].try_into().ok()?),
            pid: u32_at(16),
            ppid: u32_at(20),
            target: u32_at(24),
            rule,
            audit: u32_at(32) != 0,
            hook,
            socket_stdio: flags & EV_SOCKET_STDIO != 0,
            not_in_image: flags & EV_NOT_IN_IMAGE != 0,
            interactive: flags & EV_INTERACTIVE != 0,
            comm: c_str(&b[48..64]),
            parent_comm: c_str(&b[64..80]),
            path: c_str(&b[80..336]),
            argv,
            file: c_str(&b[592..592 + NAME_LEN]),
        })
    }
}

/// The loaded (or reused) enforcer.
#[derive(Debug)]
pub struct Enforcer {
    containers: MapHandle,
    names: MapHandle,
    events: MapHandle,
    stats: MapHandle,
    /// Name keys written per container, to delete them with it.
    held: Mutex<HashMap<u64, Vec<[u8; NAME_KEY_LEN]>>>,
    /// Programs of an earlier ociguardd kept running (pinned links reused).
    pub reused: bool,
}

impl Enforcer {
    /// Reuse the programs an earlier ociguardd of this build pinned under `root` (bpffs),
    /// or load and attach them, pin them, and detach the programs of any other build.
    pub fn open(root: &Path) -> Result<Enforcer, BpfError> {
        if OBJECT.is_empty() {
            return Err(BpfError::NotBuilt);
        }
        if !Path::new("/sys/kernel/btf/vmlinux").exists() {
            return Err(BpfError::NoBtf);
        }
        ensure_bpffs(Path::new(BPFFS))?;
        std::fs::create_dir_all(root).map_err(|source| BpfError::Bpffs {
            path: root.to_owned(),
            source,
        })?;
        let digest = ociguard_policy::digest::sha256(OBJECT);
        let digest = digest.trim_start_matches("sha256:");
        let links = root.join(format!("prog-{}", &digest[..16.min(digest.len())]));
        let reused = PROGS.iter().all(|p| links.join(p).exists())
            && [MAP_CONTAINERS, MAP_NAMES, MAP_EVENTS, MAP_STATS]
                .iter()
                .all(|m| root.join(m).exists());
        if !reused {
            Self::load(root, &links)?;
        }
        let open = |name: &str| {
            let path = root.join(name);
            MapHandle::from_pinned_path(&path).map_err(|source| BpfError::Open { path, source })
        };
        Ok(Enforcer {
            containers: open(MAP_CONTAINERS)?,
            names: open(MAP_NAMES)?,
            events: open(MAP_EVENTS)?,
            stats: open(MAP_STATS)?,
            held: Mutex::new(HashMap::new()),
            reused,
        })
    }

    fn load(root: &Path, links: &Path) -> Result<(), BpfError> {
        forward_libbpf_log();
        let mut builder = ObjectBuilder::default();
        builder.pin_root_path(root).map_err(BpfError::Load)?;
        let open = builder.open_memory(OBJECT).map_err(BpfError::Load)?;
        // Maps pinned by name under `root` are reused (their entries survive an upgrade).
        let object = open.load().map_err(BpfError::Load)?;
        let _ = std::fs::remove_dir_all(links);
        std::fs::create_dir_all(links).map_err(|source| BpfError::Bpffs {
            path: links.to_owned(),
            source,
        })?;
        let mut attached: Vec<Link> = Vec::new();
        for prog in object.progs_mut() {
            let name = prog.name().to_string_lossy().into_owned();
            let mut link = prog.attach().map_err(|source| BpfError::Attach {
                prog: name.clone(),
                source,
            })?;
            let path = links.join(&name);
            link.pin(&path)
                .map_err(|source| BpfError::Pin { path, source })?;
            attached.push(link);
        }
        // Only now that this build's programs hold: detach any other build's.
        if let Ok(dir) = std::fs::read_dir(root) {
            for e in dir.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("prog-") && p != links {
                    let _ = std::fs::remove_dir_all(&p);
                    log::info!("bpf: detached the programs of an earlier build ({name})");
                }
            }
        }
        Ok(())
    }

    /// Hold `plan` for the container whose mount namespace is `mntns` and pid namespace
    /// `pidns` (st_dev, st_ino), started at `start_ns` (CLOCK_REALTIME). An entry already
    /// there (ociguardd restarted while the container ran) keeps its start time.
    pub fn add(
        &self,
        mntns: u64,
        start_ns: u64,
        pidns: (u64, u64),
        plan: &Plan,
    ) -> Result<(), BpfError> {
        let mut cfg = Cfg {
            start_ns,
            pidns,
            rules: plan.rules,
            audit: plan.audit,
        };
        let key = mntns.to_ne_bytes();
        if let Ok(Some(old)) = self.containers.lookup(&key, MapFlags::ANY) {
            if let Some(old) = Cfg::from_bytes(&old) {
                cfg.start_ns = cfg.start_ns.min(old.start_ns);
            }
        }
        let mut keys = Vec::with_capacity(plan.names.len());
        let written = plan
            .names
            .iter()
            .try_for_each(|(name, bits)| {
                let k = name_key(mntns, name);
                self.names.update(&k, &bits.to_ne_bytes(), MapFlags::ANY)?;
                keys.push(k);
                Ok(())
            })
            .map_err(|source| BpfError::Write {
                map: MAP_NAMES,
                max: 262_144,
                source,
            })
            // The container entry last: the programs act on a namespace only once it is
            // there, and by then its names are.
            .and_then(|()| {
                self.containers
                    .update(&key, &cfg.to_bytes(), MapFlags::ANY)
                    .map_err(|source| BpfError::Write {
                        map: MAP_CONTAINERS,
                        max: 16_384,
                        source,
                    })
            });
        if let Err(e) = written {
            self.delete_names(&keys);
            return Err(e);
        }
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(mntns, keys);
        Ok(())
    }

    fn delete_names(&self, keys: &[[u8; NAME_KEY_LEN]]) {
        for k in keys {
            let _ = self.names.delete(k);
        }
    }

    /// Stop holding anything for `mntns`.
    pub fn remove(&self, mntns: u64) {
        let _ = self.containers.delete(&mntns.to_ne_bytes());
        let keys = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&mntns);
        match keys {
            Some(keys) => self.delete_names(&keys),
            // Written by an earlier ociguardd: find them.
            None => {
                delete_where(&self.names, |ns| ns == mntns);
            }
        }
    }

    /// Delete every entry whose namespace `keep` refuses (what an earlier ociguardd left for
    /// containers that are gone); returns how many containers were dropped.
    pub fn retain(&self, keep: impl Fn(u64) -> bool) -> usize {
        let dropped = delete_where(&self.containers, |ns| !keep(ns));
        delete_where(&self.names, |ns| {
            !self
                .containers
                .lookup(&ns.to_ne_bytes(), MapFlags::ANY)
                .is_ok_and(|v| v.is_some())
        });
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|ns, _| keep(*ns));
        dropped
    }

    /// Events the ring buffer had no room for, since the maps were made (summed over CPUs;
    /// the programs also count kills and audits, for `bpftool map dump`).
    fn lost(&self) -> u64 {
        self.stats
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .ok()
            .flatten()
            .map(|cpus| {
                cpus.iter()
                    .filter_map(|v| Some(u64::from_ne_bytes(v.get(..8)?.try_into().ok()?)))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Hand every event to `on_event`, and every second the number lost since the last call
    /// to `on_lost`. Returns only when the ring buffer fails.
    pub fn run(
        &self,
        mut on_event: impl FnMut(KernelEvent),
        mut on_lost: impl FnMut(u64),
    ) -> Result<(), BpfError> {
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&self.events, |bytes: &[u8]| {
                match KernelEvent::decode(bytes) {
                    Some(ev) => on_event(ev),
                    None => log::warn!("bpf: an event of {} bytes not of this build", bytes.len()),
                }
                0
            })
            .map_err(|e| BpfError::Setup(format!("ring buffer {MAP_EVENTS}: {e}")))?;
        let ring = builder
            .build()
            .map_err(|e| BpfError::Setup(format!("ring buffer {MAP_EVENTS}: {e}")))?;
        let mut lost = self.lost();
        loop {
            match ring.poll(Duration::from_secs(1)) {
                Ok(()) => {}
                Err(e) if e.kind() == libbpf_rs::ErrorKind::Interrupted => {}
                Err(e) => return Err(BpfError::Setup(format!("ring buffer {MAP_EVENTS}: {e}"))),
            }
            let now = self.lost();
            if now > lost {
                on_lost(now - lost);
                lost = now;
            }
        }
    }
}

/// Delete the entries of `map` whose key starts with a namespace `gone` picks; how many.
fn delete_where(map: &MapHandle, gone: impl Fn(u64) -> bool) -> usize {
    let doomed: Vec<Vec<u8>> = map
        .keys()
        .filter(|k| {
            k.get(..8)
                .and_then(|b| b.try_into().ok())
                .is_some_and(|b| gone(u64::from_ne_bytes(b)))
        })
        .collect();
    doomed.iter().filter(|k| map.delete(k).is_ok()).count()
}

/// bpffs at `path`, mounted if it is not (systemd mounts it; a bare host may not have).
fn ensure_bpffs(path: &Path) -> Result<(), BpfError> {
    let fail = |source| BpfError::Bpffs {
        path: path.to_owned(),
        source,
    };
    // __fsword_t is not i64 on every libc.
    #[allow(clippy::unnecessary_cast)]
    let is_bpffs = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .map(|s| s.filesystem_type().0 as i64 == BPF_FS_MAGIC)
            .unwrap_or(false)
    };
    if is_bpffs(path) {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(fail)?;
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| fail(e.into()))?;
    log::info!("bpf: mounted bpffs at {}", path.display());
    Ok(())
}

/// libbpf's messages (a verifier log among them) into ociguardd's log.
fn forward_libbpf_log() {
    fn print(level: libbpf_rs::PrintLevel, msg: String) {
        let msg = msg.trim_end();
        match level {
            libbpf_rs::PrintLevel::Warn => log::warn!("libbpf: {msg}"),
            libbpf_rs::PrintLevel::Info => log::info!("libbpf: {msg}"),
            libbpf_rs::PrintLevel::Debug => log::debug!("libbpf: {msg}"),
        }
    }
    libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Info, print)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ociguard_policy::behavior::DEFAULT_SHELLS;

    fn compiled() -> Compiled {
        Compiled {
            shells: DEFAULT_SHELLS.iter().map(|s| (*s).to_owned()).collect(),
            ..Compiled::default()
        }
    }

    #[test]
    fn a_plan_names_the_shells_loaders_and_multi_call_binaries() {
        let mut c = compiled();
        c.deny_shells = true;
        c.environ = true;
        let p = Plan::new(&c);
        assert_eq!(p.rules, R_SHELL | R_ENVIRON | R_LOADER);
        let bits = |n: &str| p.names.iter().find(|(k, _)| k == n).map(|(_, b)| *b);
        assert_eq!(bits("sh"), Some(N_SHELL));
        assert_eq!(bits("bash"), Some(N_SHELL));
        assert_eq!(bits("busybox"), Some(N_MULTI));
        assert_eq!(bits("ld-linux-x86-64.so.2"), Some(N_LOADER));
        assert_eq!(bits("ls"), None);
        assert!(p.unmatched.is_empty());
    }

    #[test]
    fn environ_alone_needs_no_names_and_pattern_shells_are_reported() {
        let mut c = compiled();
        c.environ = true;
        let p = Plan::new(&c);
        assert_eq!(p.rules, R_ENVIRON);
        assert!(p.names.is_empty());
        c.reverse_shell = true;
        c.shells = vec!["/opt/*/bin/sh".to_owned(), "/usr/bin/py*".to_owned()];
        let p = Plan::new(&c);
        assert_eq!(p.unmatched, vec!["/usr/bin/py*".to_owned()]);
        assert!(p.names.iter().any(|(n, b)| n == "sh" && *b == N_SHELL));
    }

    #[test]
    fn cfg_and_keys_have_the_c_layout() {
        let c = Cfg {
            start_ns: 7,
            pidns: (3, 4026531836),
            rules: R_DROP,
            audit: true,
        };
        let b = c.to_bytes();
        assert_eq!(b.len(), 32);
        assert_eq!(Cfg::from_bytes(&b), Some(c));
        let k = name_key(42, "sh");
        assert_eq!(&k[..8], &42u64.to_ne_bytes());
        assert_eq!(&k[8..11], b"sh\0");
        // A name the kernel would cut is cut the same way (31 bytes and a NUL).
        let long = "x".repeat(40);
        assert_eq!(name_key(1, &long)[8 + 31], 0);
    }

    #[test]
    fn events_decode_and_foreign_records_do_not() {
        let mut b = vec![0u8; EVENT_LEN];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[16..20].copy_from_slice(&100u32.to_ne_bytes());
        b[20..24].copy_from_slice(&99u32.to_ne_bytes());
        b[28..32].copy_from_slice(&R_REVERSE.to_ne_bytes());
        b[36..40].copy_from_slice(&1u32.to_ne_bytes());
        b[44..48].copy_from_slice(&EV_SOCKET_STDIO.to_ne_bytes());
        b[48..50].copy_from_slice(b"sh");
        b[80..87].copy_from_slice(b"/bin/sh");
        let argv = b"sh\0-i\0";
        b[40..44].copy_from_slice(&(argv.len() as u32).to_ne_bytes());
        b[336..336 + argv.len()].copy_from_slice(argv);
        let ev = KernelEvent::decode(&b).unwrap();
        assert_eq!(ev.mntns, 5);
        assert_eq!(ev.pid, 100);
        assert_eq!(ev.rule, Some(Rule::ReverseShell));
        assert_eq!(ev.hook, "exec");
        assert!(ev.socket_stdio && !ev.not_in_image);
        assert_eq!(ev.path, "/bin/sh");
        assert_eq!(ev.argv, vec!["sh", "-i"]);
        assert_eq!(KernelEvent::decode(&b[..100]), None);
        // An observed exec: no rule, the resolved file's name.
        b[28..32].copy_from_slice(&R_OBSERVE.to_ne_bytes());
        b[592..599].copy_from_slice(b"busybox");
        let ev = KernelEvent::decode(&b).unwrap();
        assert_eq!((ev.rule, ev.file.as_str()), (None, "busybox"));
        b[28..32].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(KernelEvent::decode(&b), None);
    }

    #[test]
    fn the_object_is_built_with_its_programs_and_maps() {
        if OBJECT.is_empty() {
            eprintln!("skip: the enforcer is not built for this architecture");
            return;
        }
        // An ELF object for BPF (e_machine 247) naming every program and map used above.
        assert_eq!(&OBJECT[..4], b"\x7fELF");
        assert_eq!(u16::from_le_bytes([OBJECT[18], OBJECT[19]]), 247);
        let text = String::from_utf8_lossy(OBJECT);
        for name in PROGS
            .iter()
            .chain(&[MAP_CONTAINERS, MAP_NAMES, MAP_EVENTS, MAP_STATS])
        {
            assert!(text.contains(name), "{name} missing from the object");
        }
    }
}
