//! The single writer: every change to the records goes through one thread that owns the
//! journal, so changes are applied in one order, on disk and in memory alike.
//!
//! Group commit: the writer takes every request waiting in its queue, computes the new records
//! against the store plus the changes earlier in the same batch, appends them all with one
//! `write` and one `fdatasync`, and only then updates the in-memory store, publishes events and
//! answers. A burst of registrations costs one disk flush, not one each. If the append fails
//! (disk full, I/O error) every request in the batch gets the error and memory stays as the
//! disk is: nothing is acknowledged that is not durable.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::events::Hub;
use crate::journal::{Entry, Journal};
use crate::procfs::ProcView;
use crate::protocol::{EventKind, Lifecycle};
use crate::record::{Exit, ExitSource, Identity, Key, Timestamp};
use crate::store::{self, Store};

/// What a requester learns once its change is durable (or why it is not).
pub type Reply = Result<Committed, String>;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// Journal sequence number of the last entry written for this request; `None` when the
    /// request changed nothing (the record already said so, durably).
    pub seq: Option<u64>,
    /// Records changed (reconcile, deregister).
    pub changed: usize,
}

#[derive(Debug)]
pub enum Op {
    Register {
        event: Lifecycle,
        identity: Box<Identity>,
        reply: Option<Sender<Reply>>,
    },
    Deregister {
        id: String,
        bundle: Option<String>,
        reply: Option<Sender<Reply>>,
    },
    /// The kernel reported that process `pid` (a thread-group leader) exited.
    ProcessExited {
        pid: u32,
        exit: Exit,
    },
    /// Check every active record against the process table.
    Reconcile {
        reply: Option<Sender<Reply>>,
    },
    Compact {
        reply: Option<Sender<Reply>>,
    },
}

#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Compact once this many lines were appended since the last compaction *and* the journal
    /// holds more than twice as many lines as there are records.
    pub compact_after: u64,
    /// Exited records older than this are dropped at compaction.
    pub retain_exited: Duration,
    /// Most requests per group commit.
    pub batch_max: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compact_after: 20_000,
            retain_exited: Duration::from_secs(24 * 3600),
            batch_max: 512,
        }
    }
}

pub struct Writer {
    journal: Journal,
    store: Arc<RwLock<Store>>,
    hub: Arc<Hub>,
    proc: Arc<dyn ProcView>,
    opts: WriterOptions,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

enum Pending {
    /// Reply once the batch is durable; index of this request's last entry, if any.
    Wait {
        reply: Option<Sender<Reply>>,
        last_entry: Option<usize>,
        changed: usize,
    },
    /// Reply now with an error; nothing was written for it.
    Fail {
        reply: Option<Sender<Reply>>,
        error: String,
    },
}

fn send(reply: Option<Sender<Reply>>, r: Reply) {
    if let Some(tx) = reply {
        // The requester may have given up (timeout); that is its business.
        let _ = tx.send(r);
    }
}

/// Changes computed for one batch, before they are durable.
struct Batch<'a> {
    store: &'a Store,
    overlay: HashMap<Key, Option<Identity>>,
    entries: Vec<Entry>,
    events: Vec<(EventKind, Identity, Option<String>)>,
}

impl<'a> Batch<'a> {
    fn current(&self, key: &Key) -> Option<&Identity> {
        match self.overlay.get(key) {
            Some(v) => v.as_ref(),
            None => self.store.get(key),
        }
    }

    fn put(&mut self, rec: Identity, kind: EventKind, detail: Option<String>) -> usize {
        self.overlay.insert(rec.key(), Some(rec.clone()));
        self.entries.push(Entry::Put(rec.clone()));
        self.events.push((kind, rec, detail));
        self.entries.len() - 1
    }

    fn del(&mut self, rec: Identity) -> usize {
        let key = rec.key();
        self.overlay.insert(key.clone(), None);
        self.entries.push(Entry::Del(key));
        self.events.push((EventKind::Deregistered, rec, None));
        self.entries.len() - 1
    }
}

impl Writer {
    pub fn new(
        journal: Journal,
        store: Arc<RwLock<Store>>,
        hub: Arc<Hub>,
        proc: Arc<dyn ProcView>,
        opts: WriterOptions,
    ) -> Writer {
        let mut journal = journal;
        journal.time_flushes(Arc::clone(hub.counters()));
        Writer {
            journal,
            store,
            hub,
            proc,
            opts,
        }
    }

    /// Serve `rx` until every sender is gone.
    pub fn run(mut self, rx: Receiver<Op>) {
        loop {
            let first = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    self.maybe_compact(false);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            while batch.len() < self.opts.batch_max {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let force = self.process(batch);
            self.maybe_compact(force);
            // After the replies: keep the journal's zero-filled space ahead of its records.
            if let Err(e) = self.journal.reserve() {
                log::warn!("{e}: the next registrations will extend the journal themselves");
            }
        }
    }

    /// Returns whether a compaction was asked for.
    fn process(&mut self, ops: Vec<Op>) -> bool {
        let now = Timestamp::now();
        let mut pending = Vec::with_capacity(ops.len());
        let mut compact_replies = Vec::new();
        let mut reconcile_replies = Vec::new();
        let store_guard = match self.store.read() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut b = Batch {
            store: &store_guard,
            overlay: HashMap::new(),
            entries: Vec::new(),
            events: Vec::new(),
        };
        for op in ops {
            match op {
                Op::Register {
                    event,
                    identity,
                    reply,
                } => {
                    if let Err(error) = identity.validate() {
                        pending.push(Pending::Fail { reply, error });
                        continue;
                    }
                    let key = identity.key();
                    match store::merge(b.current(&key), event, *identity, now) {
                        Some((rec, kind)) => {
                            let i = b.put(rec, kind, None);
                            pending.push(Pending::Wait {
                                reply,
                                last_entry: Some(i),
                                changed: 1,
                            });
                        }
                        None => pending.push(Pending::Wait {
                            reply,
                            last_entry: None,
                            changed: 0,
                        }),
                    }
                }
                Op::Deregister { id, bundle, reply } => {
                    let mut victims: Vec<Identity> = b
                        .store
                        .find(&id, bundle.as_deref())
                        .into_iter()
                        .filter(|r| !b.overlay.contains_key(&r.key()))
                        .collect();
                    victims.extend(
                        b.overlay
                            .values()
                            .flatten()
                            .filter(|r| {
                                r.id == id && bundle.as_deref().is_none_or(|x| r.bundle == x)
                            })
                            .cloned(),
                    );
                    if victims.is_empty() {
                        pending.push(Pending::Fail {
                            reply,
                            error: format!("no container with id {id:?}"),
                        });
                        continue;
                    }
                    let n = victims.len();
                    let mut last = None;
                    for v in victims {
                        last = Some(b.del(v));
                    }
                    pending.push(Pending::Wait {
                        reply,
                        last_entry: last,
                        changed: n,
                    });
                }
                Op::ProcessExited { pid, exit } => {
                    let in_batch = b
                        .overlay
                        .values()
                        .flatten()
                        .find(|r| r.is_active() && r.pid == Some(pid))
                        .cloned();
                    let Some(rec) = in_batch.or_else(|| {
                        b.store
                            .active_by_pid(pid)
                            .filter(|r| !b.overlay.contains_key(&r.key()))
                            .cloned()
                    }) else {
                        continue;
                    };
                    // The event may be for an earlier process with this pid, read late from the
                    // netlink queue: if the recorded process is still alive, it was not this one.
                    if let (Some(st), Some(s)) = (rec.start_time, self.proc.stat(pid)) {
                        if s.start_time == st && !s.exited {
                            continue;
                        }
                    }
                    if let Some(new) = store::mark_exited(&rec, exit, now) {
                        b.put(new, EventKind::Exited, Some("kernel exit event".to_owned()));
                    }
                }
                Op::Reconcile { reply } => reconcile_replies.push(reply),
                Op::Compact { reply } => compact_replies.push(reply),
            }
        }
        let Batch {
            entries, events, ..
        } = b;
        drop(store_guard);

        let seqs = if entries.is_empty() {
            Ok(Vec::new())
        } else {
            self.journal.append(&entries).map_err(|e| {
                log::error!(
                    "{e}: {} change(s) not recorded, requesters told",
                    entries.len()
                );
                e.to_string()
            })
        };
        let large = entries.len() > 1000;
        if seqs.is_ok() {
            if !entries.is_empty() {
                let mut store = match self.store.write() {
                    Ok(g) => g,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for e in entries {
                    store.apply(e);
                }
            }
            for (kind, rec, detail) in events {
                self.hub.publish(kind, &rec, detail);
            }
        }
        for p in pending {
            match p {
                Pending::Fail { reply, error } => send(reply, Err(error)),
                Pending::Wait {
                    reply,
                    last_entry,
                    changed,
                } => match &seqs {
                    Ok(seqs) => send(
                        reply,
                        Ok(Committed {
                            seq: last_entry.and_then(|i| seqs.get(i).copied()),
                            changed,
                        }),
                    ),
                    Err(e) => send(reply, Err(e.clone())),
                },
            }
        }
        if !reconcile_replies.is_empty() {
            let r = self.reconcile_all(now);
            for reply in reconcile_replies {
                send(reply, r.clone());
            }
        }
        if large {
            crate::sys::trim_heap();
        }
        let force = !compact_replies.is_empty();
        if force {
            let r = self.compact();
            for reply in compact_replies {
                send(reply, r.clone());
            }
        }
        force
    }

    /// Mark every active record whose process is gone as exited, a chunk at a time: after a
    /// reboot all 10,000 records may change, and copying them all at once would double the
    /// daemon's memory for a moment.
    fn reconcile_all(&mut self, now: Timestamp) -> Reply {
        const CHUNK: usize = 256;
        let mut total = 0;
        let mut last = None;
        loop {
            let found: Vec<(Identity, String)> = {
                let store = match self.store.read() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                store
                    .iter()
                    .filter(|r| r.is_active())
                    .filter_map(|r| {
                        let (exit, why) = self.vanished(r)?;
                        Some((store::mark_exited(r, exit, now)?, why))
                    })
                    .take(CHUNK)
                    .collect()
            };
            if found.is_empty() {
                break;
            }
            let entries: Vec<Entry> = found.iter().map(|(r, _)| Entry::Put(r.clone())).collect();
            let seqs = self.journal.append(&entries).map_err(|e| {
                log::error!("{e}: reconciliation not recorded");
                e.to_string()
            })?;
            last = seqs.last().copied();
            total += found.len();
            {
                let mut store = match self.store.write() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                for e in entries {
                    store.apply(e);
                }
            }
            for (rec, why) in found {
                self.hub.publish(EventKind::Reconciled, &rec, Some(why));
            }
        }
        Ok(Committed {
            seq: last,
            changed: total,
        })
    }

    /// Why `rec`'s process is no longer the container's, if it is not.
    fn vanished(&self, rec: &Identity) -> Option<(Exit, String)> {
        let gone = Exit::unknown(ExitSource::Reconciled);
        let Some((pid, start)) = rec.process() else {
            return Some((gone, "no process recorded".to_owned()));
        };
        if let (Some(a), Some(b)) = (rec.boot_id.as_deref(), self.proc.boot_id()) {
            if a != b {
                return Some((gone, "recorded in an earlier boot".to_owned()));
            }
        }
        match self.proc.stat(pid) {
            None => Some((gone, format!("process {pid} is gone"))),
            Some(s) if s.start_time != start => Some((
                gone,
                format!(
                    "pid {pid} now belongs to another process (start time {} != {start})",
                    s.start_time
                ),
            )),
            Some(s) if s.exited => Some((
                s.exit_code
                    .map_or(gone, |c| Exit::from_wait_status(c, ExitSource::Zombie)),
                format!("process {pid} exited (zombie)"),
            )),
            Some(_) => None,
        }
    }

    fn maybe_compact(&mut self, force: bool) {
        if force {
            return;
        }
        let live = self.store.read().map(|s| s.len() as u64).unwrap_or(0);
        if self.journal.appended >= self.opts.compact_after && self.journal.appended > 2 * live {
            if let Err(e) = self.compact() {
                log::error!("{e}");
            }
        }
    }

    fn compact(&mut self) -> Reply {
        let started = Instant::now();
        let cutoff = Timestamp::now()
            .0
            .saturating_sub(u64::try_from(self.opts.retain_exited.as_millis()).unwrap_or(u64::MAX));
        let mut store = match self.store.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let expired: Vec<Key> = store
            .iter()
            .filter(|r| !r.is_active() && r.exited.is_some_and(|t| t.0 < cutoff))
            .map(Identity::key)
            .collect();
        let before = self.journal.len();
        let lines = self.journal.appended;
        // Drop expired records from the new journal first; memory follows once it is in place.
        let res = self.journal.compact(
            store
                .iter()
                .filter(|r| r.is_active() || r.exited.is_none_or(|t| t.0 >= cutoff)),
        );
        match res {
            Ok(()) => {
                for k in &expired {
                    store.apply(Entry::Del(k.clone()));
                }
                crate::sys::trim_heap();
                log::info!(
                    "journal compacted: {lines} lines ({before} bytes) -> {} records ({} bytes), {} expired record(s) dropped, {:?}",
                    store.len(),
                    self.journal.len(),
                    expired.len(),
                    started.elapsed()
                );
                Ok(Committed {
                    seq: Some(self.journal.seq()),
                    changed: expired.len(),
                })
            }
            Err(e) => {
                log::error!("{e}");
                Err(e.to_string())
            }
        }
    }
}
