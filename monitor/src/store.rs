//! The monitor's in-memory state: every identity record, plus the indexes that make `whois`
//! a couple of hash lookups and one or two small `/proc` reads.
//!
//! Nothing here does I/O except through a [`ProcView`]; merging and lookups are plain functions
//! of their inputs, tested against a fake process table.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::journal::Entry;
use crate::procfs::ProcView;
use crate::protocol::{EventKind, Lifecycle};
use crate::record::{Exit, ExitSource, Identity, Key, Status, Text, Timestamp};

/// The answer to "which container is this pid?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Container(Box<Identity>),
    NotAContainer,
    NoSuchProcess,
}

#[derive(Debug, Default)]
pub struct Store {
    /// Boxed: a table slot is then 16 bytes, not a whole record, and a table is never full.
    records: HashMap<Arc<Key>, Box<Identity>>,
    /// Active records by init pid.
    by_pid: HashMap<u32, Arc<Key>>,
    /// Active records by pid-namespace inode (only those not in the host's pid namespace).
    by_pidns: HashMap<u64, Arc<Key>>,
    /// Active records by cgroup path.
    by_cgroup: HashMap<String, Arc<Key>>,
    host_pid_ns: Option<u64>,
    /// Active records in the host's pid namespace (or with none recorded): only these can hold
    /// a process that is in the host's pid namespace.
    host_ns_active: usize,
    /// One copy of each shared string value ([`Text`]) the records hold.
    texts: HashSet<Text>,
}

impl Store {
    pub fn new(host_pid_ns: Option<u64>) -> Store {
        Store {
            host_pid_ns,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, key: &Key) -> Option<&Identity> {
        self.records.get(key).map(|b| &**b)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Identity> {
        self.records.values().map(|b| &**b)
    }

    /// Every record, oldest first.
    pub fn list(&self) -> Vec<Identity> {
        let mut v: Vec<Identity> = self.records.values().map(|b| (**b).clone()).collect();
        v.sort_by(|a, b| (a.created, &a.id, &a.bundle).cmp(&(b.created, &b.id, &b.bundle)));
        v
    }

    /// Records with `id` (and `bundle`, if given).
    pub fn find(&self, id: &str, bundle: Option<&str>) -> Vec<Identity> {
        let mut v: Vec<Identity> = self
            .records
            .values()
            .filter(|r| r.id == id && bundle.is_none_or(|b| r.bundle == b))
            .map(|b| (**b).clone())
            .collect();
        v.sort_by_key(|r| r.created);
        v
    }

    /// Apply a journal entry (replay, or after it was made durable).
    pub fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Put(rec) => self.put(rec),
            Entry::Del(key) => self.remove(&key),
        }
    }

    /// Replace `slot`'s value by the store's copy of it (adding it if new).
    fn intern(texts: &mut HashSet<Text>, slot: &mut Text) {
        match texts.get(&**slot) {
            Some(t) => *slot = Arc::clone(t),
            None => {
                texts.insert(Arc::clone(slot));
            }
        }
    }

    /// Share the values records have in common (boot id, engine, image, policy, namespace,
    /// service account): a record arrives with copies of its own, from JSON.
    fn share(&mut self, rec: &mut Identity) {
        let texts = &mut self.texts;
        let mut slots: Vec<&mut Text> = Vec::with_capacity(9);
        slots.extend(rec.engine.as_mut());
        slots.extend(rec.boot_id.as_mut());
        slots.extend(rec.image.name.as_mut());
        slots.extend(rec.image.digest.as_mut());
        if let Some(k) = rec.kubernetes.as_mut() {
            slots.extend(k.namespace.as_mut());
            slots.extend(k.service_account.as_mut());
        }
        if let Some(p) = rec.policy.as_mut() {
            slots.push(&mut p.name);
            slots.extend(p.digest.as_mut());
            slots.extend(p.mode.as_mut());
        }
        for slot in slots {
            Store::intern(texts, slot);
        }
        // Values no record holds any more (only the set does) go, now and then.
        if texts.len() > 64 + 4 * self.records.len() {
            texts.retain(|t| Arc::strong_count(t) > 1);
        }
    }

    fn put(&mut self, mut rec: Identity) {
        self.share(&mut rec);
        let key = rec.key();
        self.remove(&key);
        let key = Arc::new(key);
        if rec.is_active() {
            if self.shares_host_ns(&rec) {
                self.host_ns_active += 1;
            }
            if let Some(pid) = rec.pid {
                self.by_pid.insert(pid, Arc::clone(&key));
            }
            if let Some(ns) = rec
                .namespaces
                .pid
                .filter(|ns| Some(*ns) != self.host_pid_ns)
            {
                self.by_pidns.insert(ns, Arc::clone(&key));
            }
            if let Some(cg) = &rec.cgroup {
                self.by_cgroup.insert(cg.clone(), Arc::clone(&key));
            }
        }
        self.records.insert(key, Box::new(rec));
    }

    fn remove(&mut self, key: &Key) {
        let Some(old) = self.records.remove(key) else {
            return;
        };
        if old.is_active() && self.shares_host_ns(&old) {
            self.host_ns_active -= 1;
        }
        // Only drop index entries that still point at this record (a newer container may have
        // taken over the pid or cgroup path).
        if let Some(pid) = old.pid {
            if self.by_pid.get(&pid).is_some_and(|k| **k == *key) {
                self.by_pid.remove(&pid);
            }
        }
        if let Some(ns) = old.namespaces.pid {
            if self.by_pidns.get(&ns).is_some_and(|k| **k == *key) {
                self.by_pidns.remove(&ns);
            }
        }
        if let Some(cg) = &old.cgroup {
            if self.by_cgroup.get(cg).is_some_and(|k| **k == *key) {
                self.by_cgroup.remove(cg);
            }
        }
    }

    fn shares_host_ns(&self, rec: &Identity) -> bool {
        rec.namespaces.pid.is_none() || rec.namespaces.pid == self.host_pid_ns
    }

    /// Keys of every record, oldest first (for answers built in chunks).
    pub fn keys_by_age(&self) -> Vec<Arc<Key>> {
        let mut v: Vec<(Option<Timestamp>, Arc<Key>)> = self
            .records
            .iter()
            .map(|(k, r)| (r.created, Arc::clone(k)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// The active record whose init process is `pid`, if any.
    pub fn active_by_pid(&self, pid: u32) -> Option<&Identity> {
        self.by_pid.get(&pid).and_then(|k| self.get(k))
    }

    /// Which container `pid` belongs to, checked against the live process table:
    /// 1. `pid` is a container's init and its start time matches the record;
    /// 2. `pid` is in a container's own pid namespace, and that container's init is alive
    ///    (while it lives the namespace, and so its inode number, cannot be reused);
    /// 3. `pid` is in a container's cgroup (or below it), started no earlier than the
    ///    container's init, and that init is alive (containers sharing the host pid namespace).
    pub fn whois(&self, pid: u32, proc: &dyn ProcView) -> Lookup {
        // Each /proc read costs several microseconds: read the stat line only when an answer
        // depends on the start time (the pid namespace link alone tells a live host process).
        let stat_cell = std::cell::OnceCell::new();
        let stat = || *stat_cell.get_or_init(|| proc.stat(pid));
        let alive = |rec: &Identity| -> bool {
            let (Some((p, st)), true) = (rec.process(), self.same_boot(rec, proc)) else {
                return false;
            };
            proc.stat(p)
                .is_some_and(|s| s.start_time == st && !s.exited)
        };
        if let Some(rec) = self.active_by_pid(pid) {
            let Some(stat) = stat() else {
                return Lookup::NoSuchProcess;
            };
            if rec.start_time == Some(stat.start_time) && self.same_boot(rec, proc) {
                return Lookup::Container(Box::new(rec.clone()));
            }
        }
        let ns = proc.pid_ns(pid);
        if ns.is_none() && stat().is_none() {
            return Lookup::NoSuchProcess;
        }
        if let Some(ns) = ns.filter(|ns| Some(*ns) != self.host_pid_ns) {
            if let Some(rec) = self.by_pidns.get(&ns).and_then(|k| self.get(k)) {
                if alive(rec) {
                    return Lookup::Container(Box::new(rec.clone()));
                }
            }
        }
        // A process in the host's pid namespace can only be in a container that shares it;
        // one in another namespace may be nested inside a container: check its cgroup.
        let in_host_ns = ns.is_some() && ns == self.host_pid_ns;
        if !(self.by_cgroup.is_empty() || in_host_ns && self.host_ns_active == 0) {
            if let Some(cg) = proc.cgroup(pid) {
                let mut path = cg.as_str();
                loop {
                    if let Some(rec) = self.by_cgroup.get(path).and_then(|k| self.get(k)) {
                        let Some(stat) = stat() else {
                            return Lookup::NoSuchProcess;
                        };
                        if rec.start_time.is_some_and(|st| stat.start_time >= st) && alive(rec) {
                            return Lookup::Container(Box::new(rec.clone()));
                        }
                        break;
                    }
                    match path.rfind('/') {
                        Some(i) if i > 0 => path = &path[..i],
                        _ => break,
                    }
                }
            }
        }
        Lookup::NotAContainer
    }

    fn same_boot(&self, rec: &Identity, proc: &dyn ProcView) -> bool {
        match (rec.boot_id.as_deref(), proc.boot_id()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// Is `incoming` a later incarnation than `current` (same id and bundle, another process)?
fn is_newer(current: &Identity, incoming: &Identity) -> bool {
    if current.boot_id.is_some()
        && incoming.boot_id.is_some()
        && current.boot_id != incoming.boot_id
    {
        return incoming.created.or(incoming.started) >= current.created.or(current.started);
    }
    match (incoming.start_time, current.start_time) {
        (Some(a), Some(b)) => a > b,
        _ => incoming.created >= current.created,
    }
}

fn same_incarnation(current: &Identity, incoming: &Identity) -> bool {
    match (current.process(), incoming.process()) {
        (Some(a), Some(b)) => a == b && current.boot_id == incoming.boot_id,
        // poststop no longer sees the process: a report without one belongs to the record.
        _ => true,
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, from: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(from);
    }
}

fn kind_for(status: Status) -> EventKind {
    match status {
        Status::Created => EventKind::Registered,
        Status::Running => EventKind::Started,
        Status::Exited => EventKind::Exited,
    }
}

/// The record after lifecycle report `event` with facts `incoming`, given the current record
/// for the same key. `None` when nothing changes (a retried hook, a spool file ingested twice),
/// or when `incoming` is an older incarnation than the one recorded.
pub fn merge(
    current: Option<&Identity>,
    event: Lifecycle,
    incoming: Identity,
    now: Timestamp,
) -> Option<(Identity, EventKind)> {
    let status = event.status();
    let current = match current {
        Some(c) if same_incarnation(c, &incoming) => Some(c),
        Some(c) if !is_newer(c, &incoming) => return None,
        _ => None,
    };
    let Some(current) = current else {
        let mut rec = incoming;
        rec.status = status;
        if rec.created.is_none() {
            rec.created = Some(now);
        }
        if status == Status::Running && rec.started.is_none() {
            rec.started = Some(now);
        }
        if status == Status::Exited {
            rec.exited = rec.exited.or(Some(now));
            rec.exit = rec.exit.or(Some(Exit::unknown(ExitSource::Hook)));
        }
        return Some((rec, kind_for(status)));
    };
    let mut rec = current.clone();
    fill(&mut rec.engine, &incoming.engine);
    fill(&mut rec.pid, &incoming.pid);
    fill(&mut rec.start_time, &incoming.start_time);
    fill(&mut rec.boot_id, &incoming.boot_id);
    fill(&mut rec.cgroup, &incoming.cgroup);
    fill(&mut rec.namespaces.pid, &incoming.namespaces.pid);
    fill(&mut rec.namespaces.net, &incoming.namespaces.net);
    fill(&mut rec.namespaces.mnt, &incoming.namespaces.mnt);
    fill(&mut rec.image.name, &incoming.image.name);
    fill(&mut rec.image.digest, &incoming.image.digest);
    if rec.image.labels.is_empty() {
        rec.image.labels = incoming.image.labels;
    }
    fill(&mut rec.kubernetes, &incoming.kubernetes);
    fill(&mut rec.policy, &incoming.policy);
    for (k, v) in incoming.profiles {
        rec.profiles.insert_if_absent(k, v);
    }
    fill(&mut rec.created, &incoming.created);
    if status >= Status::Running && rec.started.is_none() && event == Lifecycle::Started {
        rec.started = incoming.started.or(Some(now));
    }
    if status == Status::Exited {
        fill(&mut rec.exited, &incoming.exited.or(Some(now)));
        if rec.exit.is_none() {
            rec.exit = incoming.exit.or(Some(Exit::unknown(ExitSource::Hook)));
        }
    }
    rec.status = rec.status.max(status);
    if rec == *current {
        return None;
    }
    let kind = if rec.status != current.status {
        kind_for(rec.status)
    } else {
        EventKind::Registered
    };
    Some((rec, kind))
}

/// The record after the kernel (or `/proc`) showed its process gone.
pub fn mark_exited(current: &Identity, exit: Exit, now: Timestamp) -> Option<Identity> {
    if current.status == Status::Exited && current.exit.is_some_and(|e| e.is_known()) {
        return None;
    }
    let mut rec = current.clone();
    rec.status = Status::Exited;
    rec.exited = rec.exited.or(Some(now));
    match rec.exit {
        Some(e) if e.is_known() => {}
        _ => rec.exit = Some(exit),
    }
    (rec != *current).then_some(rec)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::procfs::ProcStat;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct FakeProc {
        pub procs: HashMap<u32, (ProcStat, u64, Option<String>)>,
    }

    impl FakeProc {
        pub fn add(&mut self, pid: u32, start: u64, ns: u64, cg: Option<&str>) {
            self.procs.insert(
                pid,
                (
                    ProcStat {
                        ppid: 0,
                        start_time: start,
                        exited: false,
                        exit_code: None,
                    },
                    ns,
                    cg.map(str::to_owned),
                ),
            );
        }
    }

    impl ProcView for FakeProc {
        fn stat(&self, pid: u32) -> Option<ProcStat> {
            self.procs.get(&pid).map(|p| p.0)
        }
        fn pid_ns(&self, pid: u32) -> Option<u64> {
            self.procs.get(&pid).map(|p| p.1)
        }
        fn cgroup(&self, pid: u32) -> Option<String> {
            self.procs.get(&pid).and_then(|p| p.2.clone())
        }
        fn boot_id(&self) -> Option<&str> {
            Some("boot-1")
        }
    }

    const HOST_NS: u64 = 1000;

    pub fn container(id: &str, pid: u32, start: u64) -> Identity {
        Identity {
            id: id.into(),
            bundle: format!("/run/b/{id}"),
            pid: Some(pid),
            start_time: Some(start),
            boot_id: Some("boot-1".into()),
            cgroup: Some(format!("/{id}")),
            namespaces: crate::record::Namespaces {
                pid: Some(5000 + u64::from(pid)),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn registered(store: &mut Store, rec: Identity, event: Lifecycle) {
        let cur = store.get(&rec.key()).cloned();
        let (m, _) = merge(cur.as_ref(), event, rec, Timestamp(1)).unwrap();
        store.apply(Entry::Put(m));
    }

    #[test]
    fn whois_by_init_pidns_and_cgroup() {
        let mut store = Store::new(Some(HOST_NS));
        registered(&mut store, container("c1", 100, 777), Lifecycle::Created);
        let mut proc = FakeProc::default();
        proc.add(100, 777, 5100, Some("/c1"));
        proc.add(101, 800, 5100, Some("/c1")); // a child in the container's pid ns
        proc.add(300, 900, 7777, Some("/c1/sub")); // in a pid ns nested inside the container
        proc.add(301, 900, HOST_NS, Some("/c1")); // host pid ns: cannot be in c1 (own pid ns)
        proc.add(400, 10, HOST_NS, Some("/c1")); // older than the container: not it
        proc.add(500, 950, HOST_NS, Some("/user.slice")); // a host process

        let id = |l: Lookup| match l {
            Lookup::Container(r) => r.id.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(id(store.whois(100, &proc)), "c1");
        assert_eq!(id(store.whois(101, &proc)), "c1");
        assert_eq!(id(store.whois(300, &proc)), "c1");
        assert_eq!(store.whois(301, &proc), Lookup::NotAContainer);
        // A container sharing the host's pid namespace: found by its cgroup.
        let mut shared = container("c2", 600, 100);
        shared.namespaces.pid = Some(HOST_NS);
        registered(&mut store, shared, Lifecycle::Started);
        proc.add(600, 100, HOST_NS, Some("/c2"));
        proc.add(601, 200, HOST_NS, Some("/c2"));
        assert_eq!(id(store.whois(601, &proc)), "c2");
        assert_eq!(store.whois(400, &proc), Lookup::NotAContainer);
        assert_eq!(store.whois(500, &proc), Lookup::NotAContainer);
        assert_eq!(store.whois(999, &proc), Lookup::NoSuchProcess);
    }

    #[test]
    fn records_share_their_common_values() {
        let mut store = Store::new(Some(1));
        for i in 0..100 {
            // As from JSON: every record with its own copies.
            let mut rec = container(&format!("c{i}"), 1000 + i, 5);
            rec.image.name = Some("registry.example/app:1".into());
            rec.boot_id = Some("boot".into());
            store.apply(Entry::Put(rec));
        }
        let key = store.find("c1", None).remove(0).key();
        let name = store.get(&key).unwrap().image.name.clone().unwrap();
        // the set, the 100 records, and `name` itself
        assert_eq!(Arc::strong_count(&name), 102);
        for i in 0..100 {
            store.apply(Entry::Del(container(&format!("c{i}"), 0, 0).key()));
        }
        drop(name);
        store.apply(Entry::Put(container("other", 1, 1)));
        assert!(store.texts.len() <= 64 + 4, "{}", store.texts.len());
    }

    #[test]
    fn reused_pid_is_not_attributed() {
        let mut store = Store::new(Some(HOST_NS));
        registered(&mut store, container("c1", 100, 777), Lifecycle::Started);
        let mut proc = FakeProc::default();
        // The container's init is gone; a host process got pid 100 (and, worst case, even the
        // recycled pid-namespace inode and a leftover cgroup path).
        proc.add(100, 999, 5100, Some("/c1"));
        assert_eq!(store.whois(100, &proc), Lookup::NotAContainer);
    }

    #[test]
    fn other_boot_is_not_attributed() {
        let mut store = Store::new(Some(HOST_NS));
        let mut rec = container("c1", 100, 777);
        rec.boot_id = Some("boot-0".into());
        registered(&mut store, rec, Lifecycle::Started);
        let mut proc = FakeProc::default();
        proc.add(100, 777, 5100, Some("/c1"));
        assert_eq!(store.whois(100, &proc), Lookup::NotAContainer);
    }

    #[test]
    fn lifecycle_merge() {
        let now = Timestamp(50);
        let (rec, kind) = merge(None, Lifecycle::Created, container("c", 1, 2), now).unwrap();
        assert_eq!((rec.status, kind), (Status::Created, EventKind::Registered));
        assert_eq!(rec.created, Some(now));
        // retried hook: nothing to do
        assert!(merge(Some(&rec), Lifecycle::Created, container("c", 1, 2), now).is_none());
        let (run, kind) = merge(
            Some(&rec),
            Lifecycle::Started,
            container("c", 1, 2),
            Timestamp(60),
        )
        .unwrap();
        assert_eq!((run.status, kind), (Status::Running, EventKind::Started));
        assert_eq!(run.started, Some(Timestamp(60)));
        // a late (spooled) createRuntime report does not move it back
        assert!(merge(Some(&run), Lifecycle::Created, container("c", 1, 2), now).is_none());
        // poststop sees no process: pid/start unknown, still the same incarnation
        let stop = Identity {
            id: "c".into(),
            bundle: "/run/b/c".into(),
            ..Default::default()
        };
        let (ex, kind) = merge(Some(&run), Lifecycle::Exited, stop, Timestamp(70)).unwrap();
        assert_eq!((ex.status, kind), (Status::Exited, EventKind::Exited));
        assert_eq!(ex.exit, Some(Exit::unknown(ExitSource::Hook)));
        assert_eq!(ex.pid, Some(1));
        // the kernel's exit status beats the hook's "unknown"
        let k = mark_exited(
            &ex,
            Exit::from_wait_status(42 << 8, ExitSource::Kernel),
            now,
        )
        .unwrap();
        assert_eq!(k.exit.unwrap().code, Some(42));
        assert_eq!(k.exited, Some(Timestamp(70)));
        assert!(mark_exited(&k, Exit::unknown(ExitSource::Reconciled), now).is_none());
        // ...and a poststop after the kernel event keeps the status
        let stop2 = Identity {
            id: "c".into(),
            bundle: "/run/b/c".into(),
            ..Default::default()
        };
        assert!(merge(Some(&k), Lifecycle::Exited, stop2, now).is_none());
    }

    #[test]
    fn incarnations() {
        let (old, _) = merge(None, Lifecycle::Started, container("c", 1, 2), Timestamp(5)).unwrap();
        // same id and bundle, new process: a new incarnation replaces the record
        let (new, kind) = merge(
            Some(&old),
            Lifecycle::Created,
            container("c", 9, 20),
            Timestamp(9),
        )
        .unwrap();
        assert_eq!(
            (new.pid, new.status, kind),
            (Some(9), Status::Created, EventKind::Registered)
        );
        assert_eq!(new.started, None);
        // a spooled report of the old incarnation arriving late is ignored
        assert!(merge(
            Some(&new),
            Lifecycle::Started,
            container("c", 1, 2),
            Timestamp(10)
        )
        .is_none());
    }

    #[test]
    fn indexes_follow_status() {
        let mut store = Store::new(Some(HOST_NS));
        registered(&mut store, container("c1", 100, 777), Lifecycle::Started);
        assert!(store.active_by_pid(100).is_some());
        let cur = store
            .get(&container("c1", 100, 777).key())
            .cloned()
            .unwrap();
        let ex = mark_exited(&cur, Exit::unknown(ExitSource::Reconciled), Timestamp(3)).unwrap();
        store.apply(Entry::Put(ex));
        assert!(store.active_by_pid(100).is_none());
        assert_eq!(store.len(), 1);
        // a new container that took pid 100 is not unindexed when the old record goes
        registered(&mut store, container("c2", 100, 900), Lifecycle::Started);
        store.apply(Entry::Del(container("c1", 100, 777).key()));
        assert_eq!(store.active_by_pid(100).unwrap().id, "c2");
        assert_eq!(store.find("c2", None).len(), 1);
        assert_eq!(store.list().len(), 1);
    }
}
