//! Behaviour profiles, kept by ociguardd: recorded under `learn` policies, compared under
//! policies with `[profile] on_anomaly` (the model is `ociguard_policy::profile`).
//!
//! The guard and the BPF enforcer report each exec and secret read of an observed container,
//! the NFLOG reader each new connection (the egress ruleset logs them with `OBSERVE_PREFIX`).
//! Each observation is looked at once per container (a bounded set of what this container was
//! already seen doing), so a loop that runs the same program 10,000 times costs one hash lookup
//! per exec after the first.
//!
//! Durable: each profile is one file under `<state_dir>/profiles/<id>.json`, rewritten whole
//! (temporary file, fsync, rename, directory fsync) by a flusher thread at most every
//! [`FLUSH_EVERY`] while it has changes, and when ociguardd stops. A SIGKILL loses at most what
//! was learned in the last [`FLUSH_EVERY`]. A file that does not decode (changed, cut short,
//! another format) is moved aside to `<id>.json.corrupt` and reported; its subject starts a new
//! profile (never a half-read one).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ociguard_policy::behavior::{Compiled, OnAnomaly};
use ociguard_policy::profile::{protocol_name, Profile, Subject};
use serde_json::{json, Value};

use crate::events::Hub;
use crate::protocol::EventKind;
use crate::record::{Identity, Key};
use crate::stats::{policy_label, Count};
use crate::store::Store;

/// How often changed profiles are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Observations remembered per container (past this each is looked up in the profile again).
const SEEN_PER_CONTAINER: usize = 8192;
/// How long a departed container's observations are still attributed (late NFLOG and ring
/// buffer records).
const DEPARTED_FOR: Duration = Duration::from_secs(10);
/// Profiles kept in memory (and on disk); a new subject past this is not recorded.
pub const MAX_PROFILES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("profile directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug)]
struct Slot {
    profile: Profile,
    dirty: bool,
}

#[derive(Debug)]
struct Watched {
    subject: Subject,
    id: String,
    learn: bool,
    on_anomaly: OnAnomaly,
    policy: String,
    seen: HashSet<u64>,
    gone: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    profiles: HashMap<String, Slot>,
    watched: HashMap<Key, Watched>,
    /// Files moved aside at start: (file, why).
    quarantined: Vec<(String, String)>,
    dirty: bool,
    stopping: bool,
}

/// What a caller does after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// `on_anomaly = "kill"`: kill the process.
    Kill,
}

#[derive(Debug)]
pub struct Profiles {
    dir: PathBuf,
    inner: Mutex<Inner>,
    wake: Condvar,
    hub: Arc<Hub>,
    store: Arc<RwLock<Store>>,
    /// Held from taking the changed profiles to their rename: a later state is never
    /// overwritten by an earlier one.
    writing: Mutex<()>,
}

/// An observation, for the per-container "seen" set.
fn seen_key(kind: u8, a: &str, b: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (kind, a, b).hash(&mut h);
    h.finish()
}

impl Profiles {
    /// Load the profiles under `dir` (created 0700 if missing).
    pub fn open(
        dir: &Path,
        hub: Arc<Hub>,
        store: Arc<RwLock<Store>>,
    ) -> Result<Arc<Profiles>, ProfilesError> {
        let err = |source| ProfilesError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        let mut inner = Inner::default();
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp-") {
                // A write interrupted by a crash; the previous file is intact.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            let loaded = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| Profile::decode(&b).map_err(|e| e.to_string()))
                .and_then(|p| {
                    if p.subject.id() == id {
                        Ok(p)
                    } else {
                        Err(format!("it holds the profile {}, not {id}", p.subject.id()))
                    }
                });
            match loaded {
                Ok(p) => {
                    inner.profiles.insert(
                        id.to_owned(),
                        Slot {
                            profile: p,
                            dirty: false,
                        },
                    );
                }
                Err(why) => {
                    let aside = path.with_extension("json.corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    log::error!(
                        "profile {}: {why}: moved aside to {} (its subject starts a new profile)",
                        path.display(),
                        aside.display()
                    );
                    inner.quarantined.push((path.display().to_string(), why));
                }
            }
        }
        log::info!(
            "profiles: {} loaded from {}",
            inner.profiles.len(),
            dir.display()
        );
        Ok(Arc::new(Profiles {
            dir: dir.to_owned(),
            inner: Mutex::new(inner),
            wake: Condvar::new(),
            hub,
            store,
            writing: Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start observing the container `rec` registers, under its compiled `rules` (`again`: it
    /// was observed before ociguardd restarted, and counted then).
    pub fn watch(&self, rec: &Identity, rules: &Compiled, again: bool) {
        if !rules.observes() {
            return;
        }
        let k8s = rec.kubernetes.as_ref();
        let subject = Subject::of(
            rec.image.name.as_deref(),
            rec.image.digest.as_deref(),
            k8s.and_then(|k| k.namespace.as_deref()),
            k8s.and_then(|k| k.service_account.as_deref()),
        );
        let Some(subject) = subject else {
            self.announce(
                rec,
                json!({
                    "kind": "no-image",
                    "reason": "no engine named the container's image: there is no profile to record into or compare with",
                    "policy": rules.policy,
                }),
            );
            return;
        };
        let id = subject.id();
        let now = now_secs();
        let mut inner = self.lock();
        // The same registration again (a retried hook): counted and announced once.
        let already = inner
            .watched
            .get(&rec.key())
            .is_some_and(|w| w.gone.is_none());
        let again = again || already;
        let mut missing = None;
        if rules.learn {
            if !inner.profiles.contains_key(&id) && inner.profiles.len() >= MAX_PROFILES {
                log::warn!(
                    "profiles: {MAX_PROFILES} profiles kept already: {} ({}) is not recorded",
                    id,
                    subject.identity
                );
            } else {
                let slot = inner.profiles.entry(id.clone()).or_insert_with(|| Slot {
                    profile: Profile::new(subject.clone(), now),
                    dirty: true,
                });
                if !again {
                    slot.profile.add_container(&rules.policy, now);
                }
                slot.dirty = true;
                inner.dirty = true;
                self.wake.notify_one();
            }
        } else if !already && !inner.profiles.contains_key(&id) {
            missing = Some(subject.clone());
        }
        inner.watched.insert(
            rec.key(),
            Watched {
                subject,
                id: id.clone(),
                learn: rules.learn,
                on_anomaly: rules.on_anomaly,
                policy: rules.policy.clone(),
                seen: HashSet::new(),
                gone: None,
            },
        );
        drop(inner);
        if let Some(s) = missing {
            // Said once for the container, not for each of its actions.
            self.announce(
                rec,
                json!({
                    "kind": "no-profile",
                    "reason": "no profile was learned for this image and identity: nothing to compare with",
                    "profile": id,
                    "identity": s.identity,
                    "image_digest": s.digest,
                    "policy": rules.policy,
                }),
            );
        }
    }

    /// The container is gone; its late observations are still attributed for a while.
    pub fn unwatch(&self, key: &Key) {
        let mut inner = self.lock();
        let now = Instant::now();
        if let Some(w) = inner.watched.get_mut(key) {
            w.gone = Some(now);
            w.seen = HashSet::new();
        }
        inner
            .watched
            .retain(|_, w| w.gone.is_none_or(|t| now.duration_since(t) < DEPARTED_FOR));
    }

    /// Is the container observed?
    pub fn watches(&self, key: &Key) -> bool {
        self.lock().watched.contains_key(key)
    }

    /// One observation: `kind` (exec, secret, egress), its `what` for the seen set and the
    /// anomaly event, `record` to add it to a profile, `known` to compare with one.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        key: &Key,
        kind: &'static str,
        a: &str,
        b: &str,
        record: impl FnOnce(&mut Profile, u64),
        known: impl FnOnce(&Profile) -> bool,
        detail: impl FnOnce() -> Value,
        pid: Option<u32>,
    ) -> Verdict {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(w) = inner.watched.get_mut(key) else {
            return Verdict::Allow;
        };
        let h = seen_key(kind.as_bytes()[0], a, b);
        if w.seen.contains(&h) {
            return Verdict::Allow;
        }
        if w.seen.len() < SEEN_PER_CONTAINER {
            w.seen.insert(h);
        }
        if w.learn {
            if let Some(slot) = inner.profiles.get_mut(&w.id) {
                record(&mut slot.profile, now_secs());
                slot.dirty = true;
                inner.dirty = true;
                self.wake.notify_one();
            }
            return Verdict::Allow;
        }
        if w.on_anomaly == OnAnomaly::Off {
            return Verdict::Allow;
        }
        let Some(slot) = inner.profiles.get(&w.id) else {
            // Said once, at registration.
            return Verdict::Allow;
        };
        if known(&slot.profile) {
            return Verdict::Allow;
        }
        let p = &slot.profile;
        let mut d = detail();
        if let Value::Object(m) = &mut d {
            m.insert("kind".into(), kind.into());
            m.insert("profile".into(), w.id.clone().into());
            m.insert("identity".into(), w.subject.identity.clone().into());
            m.insert("image_digest".into(), w.subject.digest.clone().into());
            m.insert(
                "profile_age_s".into(),
                now_secs().saturating_sub(p.first_seen).into(),
            );
            m.insert("profile_containers".into(), p.containers.into());
            m.insert("policy".into(), w.policy.clone().into());
            m.insert("action".into(), w.on_anomaly.as_str().into());
            if let Some(pid) = pid {
                m.insert("pid".into(), pid.into());
            }
        }
        let verdict = if w.on_anomaly == OnAnomaly::Kill && pid.is_some() {
            Verdict::Kill
        } else {
            Verdict::Allow
        };
        drop(guard);
        self.publish(key, d);
        verdict
    }

    /// A container ran `program` (as the guard names it); `resolved` gives the file it
    /// resolved to, called only when the container runs the program for the first time (it
    /// may cost a readlink, and a loop runs the same program thousands of times).
    pub fn exec(
        &self,
        key: &Key,
        program: &str,
        resolved: impl Fn() -> String,
        not_in_image: bool,
        pid: u32,
        argv: &[String],
    ) -> Verdict {
        self.observe(
            key,
            "exec",
            program,
            "",
            |p, now| {
                p.add_exec(program, &resolved(), not_in_image, now);
            },
            |p| p.has_exec(program),
            || json!({"program": program, "path": resolved(), "argv": argv}),
            Some(pid),
        )
    }

    /// `exe` in a container opened the secret `path` (inside the container).
    pub fn secret(&self, key: &Key, path: &str, exe: &str, pid: u32) -> Verdict {
        self.observe(
            key,
            "secret",
            path,
            exe,
            |p, now| {
                p.add_secret(path, exe, now);
            },
            |p| p.has_secret_reader(path, exe),
            || json!({"path": path, "exe": exe}),
            Some(pid),
        )
    }

    /// A container opened a connection to `addr` (first packet), or had one denied.
    pub fn egress(&self, key: &Key, protocol: u8, addr: IpAddr, port: Option<u16>) {
        let text = match port {
            Some(p) => format!(
                "{} {}",
                protocol_name(protocol),
                std::net::SocketAddr::new(addr, p)
            ),
            None => format!("{} {addr}", protocol_name(protocol)),
        };
        self.observe(
            key,
            "egress",
            &text,
            "",
            |p, now| p.add_destination(protocol, addr, port, now),
            |p| p.covers_destination(protocol, addr, port),
            || json!({"destination": text}),
            None,
        );
    }

    fn publish(&self, key: &Key, detail: Value) {
        let rec = self
            .store
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
            .unwrap_or_else(|| Identity {
                id: key.id.clone(),
                bundle: key.bundle.clone(),
                ..Identity::default()
            });
        self.announce(&rec, detail);
    }

    fn announce(&self, rec: &Identity, mut detail: Value) {
        if let Value::Object(m) = &mut detail {
            rec.describe_image(m);
        }
        self.hub.counters().inc(Count::Anomaly {
            policy: policy_label(rec.policy.as_ref()),
            kind: detail["kind"].as_str().unwrap_or("").into(),
        });
        self.hub
            .publish(EventKind::Anomaly, rec, Some(detail.to_string()));
    }

    /// Profiles whose subject `sel` names (all with `None`), and the files set aside at start.
    pub fn find(&self, sel: Option<&str>) -> (Vec<Profile>, Vec<(String, String)>) {
        let inner = self.lock();
        let mut found: Vec<Profile> = inner
            .profiles
            .values()
            .filter(|s| sel.is_none_or(|sel| s.profile.subject.matches(sel)))
            .map(|s| s.profile.clone())
            .collect();
        found.sort_by(|a, b| a.subject.cmp(&b.subject));
        (found, inner.quarantined.clone())
    }

    /// The profile a container with this image and identity is compared with, if any.
    pub fn of(&self, subject: &Subject) -> Option<Profile> {
        self.lock()
            .profiles
            .get(&subject.id())
            .map(|s| s.profile.clone())
    }

    /// Write changed profiles until [`Profiles::stop`]; on a thread of its own.
    pub fn run_flusher(&self) {
        loop {
            let (batch, stopping) = {
                let mut inner = self.lock();
                while !inner.dirty && !inner.stopping {
                    inner = self.wake.wait(inner).unwrap_or_else(|p| p.into_inner());
                }
                let stopping = inner.stopping;
                drop(inner);
                if !stopping {
                    // Let a burst of observations (a container starting) land in one write.
                    std::thread::sleep(FLUSH_EVERY);
                }
                (
                    self.writing.lock().unwrap_or_else(|p| p.into_inner()),
                    stopping,
                )
            };
            let w = batch;
            self.write(self.take_dirty());
            drop(w);
            if stopping {
                return;
            }
        }
    }

    fn take_dirty(&self) -> Vec<(String, Vec<u8>)> {
        let mut inner = self.lock();
        inner.dirty = false;
        inner
            .profiles
            .iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(id, s)| {
                s.dirty = false;
                (id.clone(), s.profile.encode())
            })
            .collect()
    }

    fn write(&self, batch: Vec<(String, Vec<u8>)>) {
        if batch.is_empty() {
            return;
        }
        for (id, bytes) in &batch {
            let path = self.dir.join(format!("{id}.json"));
            if let Err(e) = write_atomic(&self.dir, &path, bytes) {
                log::error!("profile {}: {e}: kept in memory, retried", path.display());
                let mut inner = self.lock();
                if let Some(s) = inner.profiles.get_mut(id) {
                    s.dirty = true;
                }
                inner.dirty = true;
            }
        }
        // One directory fsync for the batch: the renames are durable after it.
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Write what is left and end the flusher.
    pub fn stop(&self) {
        let w = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.write(self.take_dirty());
        drop(w);
        let mut inner = self.lock();
        inner.stopping = true;
        self.wake.notify_all();
    }
}

/// Temporary file in the same directory, fsync, rename over `path`.
fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Image;

    fn rec(id: &str) -> Identity {
        Identity {
            id: id.into(),
            bundle: format!("/b/{id}"),
            image: Image {
                name: Some("localhost/app@sha256:abc".into()),
                digest: Some("sha256:abc".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn rules(learn: bool, on_anomaly: OnAnomaly) -> Compiled {
        Compiled {
            policy: "p".into(),
            learn,
            on_anomaly,
            ..Default::default()
        }
    }

    fn open(dir: &Path) -> (Arc<Profiles>, Arc<Hub>) {
        let hub = Arc::new(Hub::new());
        let store = Arc::new(RwLock::new(Store::new(None)));
        (Profiles::open(dir, Arc::clone(&hub), store).unwrap(), hub)
    }

    fn anomalies(hub: &Hub) -> Vec<Value> {
        hub.recent()
            .into_iter()
            .filter(|e| e.kind == EventKind::Anomaly)
            .map(|e| serde_json::from_str(e.detail.as_deref().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn learn_then_compare_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (p, _) = open(dir.path());
        let a = rec("a");
        p.watch(&a, &rules(true, OnAnomaly::Off), false);
        for _ in 0..3 {
            p.exec(
                &a.key(),
                "/bin/ls",
                || "/bin/busybox".into(),
                false,
                10,
                &[],
            );
        }
        p.secret(&a.key(), "/run/secrets/t", "/bin/cat", 10);
        p.egress(&a.key(), 6, "198.18.1.1".parse().unwrap(), Some(80));
        p.stop();
        let (found, _) = p.find(Some("localhost/app"));
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].execs["/bin/ls"].containers, 1,
            "once per container"
        );

        // A new ociguardd reads it back and compares.
        let (p, hub) = open(dir.path());
        let b = rec("b");
        p.watch(&b, &rules(false, OnAnomaly::Kill), false);
        assert_eq!(
            p.exec(&b.key(), "/bin/ls", String::new, false, 11, &[]),
            Verdict::Allow
        );
        p.egress(&b.key(), 6, "198.18.1.1".parse().unwrap(), Some(80));
        assert!(anomalies(&hub).is_empty());
        assert_eq!(
            p.exec(&b.key(), "/bin/wget", String::new, false, 12, &[]),
            Verdict::Kill
        );
        // Once per container and program.
        assert_eq!(
            p.exec(&b.key(), "/bin/wget", String::new, false, 13, &[]),
            Verdict::Allow
        );
        p.egress(&b.key(), 6, "198.18.1.9".parse().unwrap(), Some(80));
        p.secret(&b.key(), "/run/secrets/t", "/bin/wget", 12);
        let got = anomalies(&hub);
        let kinds: Vec<&str> = got.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["exec", "egress", "secret"]);
        assert_eq!(got[0]["image_digest"], "sha256:abc");
        assert_eq!(got[0]["identity"], "image:localhost/app");
        assert_eq!(got[1]["destination"], "tcp 198.18.1.9:80");
    }

    #[test]
    fn a_missing_profile_is_said_once_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let s = Subject::of(
            Some("localhost/app@sha256:abc"),
            Some("sha256:abc"),
            None,
            None,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{}.json", s.id())),
            b"{\"format\":1,",
        )
        .unwrap();
        let (p, hub) = open(dir.path());
        let (found, quarantined) = p.find(None);
        assert!(found.is_empty());
        assert_eq!(quarantined.len(), 1);
        assert!(dir.path().join(format!("{}.json.corrupt", s.id())).exists());
        let c = rec("c");
        p.watch(&c, &rules(false, OnAnomaly::Report), false);
        p.exec(&c.key(), "/bin/ls", String::new, false, 1, &[]);
        p.exec(&c.key(), "/bin/cat", String::new, false, 1, &[]);
        let got = anomalies(&hub);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["kind"], "no-profile");
    }

    #[test]
    fn a_container_without_an_image_is_said_once() {
        let dir = tempfile::tempdir().unwrap();
        let (p, hub) = open(dir.path());
        let mut r = rec("d");
        r.image = Image::default();
        p.watch(&r, &rules(true, OnAnomaly::Off), false);
        p.exec(&r.key(), "/bin/ls", String::new, false, 1, &[]);
        let got = anomalies(&hub);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["kind"], "no-image");
        assert!(p.find(None).0.is_empty());
    }
}
