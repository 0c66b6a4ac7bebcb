//! The monitor's counters: what happened since it started, by kind and policy, for
//! `ociguardd --metrics-address` (`metrics` renders them in the Prometheus text format).
//!
//! Plain data with no encoding and no dependency: the threads that see something happen (the
//! hub, the guard, the NFLOG reader, the decision log follower, the journal) add to it; the
//! scrape reads a copy. A count is one short lock and a hash lookup, never I/O, so counting
//! costs the paths it sits on nothing measurable. It must never hold anything a scrape could
//! make grow without bound: the number of series is capped ([`MAX_SERIES`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::protocol::EventKind;
use crate::record::Text;

/// Distinct label sets kept; past it a new one is not counted (and that is counted).
pub const MAX_SERIES: usize = 4096;

/// A decision's `result` in the decision log (`shim/src/decision_log.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecisionResult {
    Applied,
    Unchanged,
    AuditError,
    Refused,
    /// Anything else (a newer ociguard's result): counted, not lost.
    Other,
}

impl DecisionResult {
    pub fn parse(s: &str) -> DecisionResult {
        match s {
            "applied" => DecisionResult::Applied,
            "unchanged" => DecisionResult::Unchanged,
            "audit-error" => DecisionResult::AuditError,
            "refused" => DecisionResult::Refused,
            _ => DecisionResult::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionResult::Applied => "applied",
            DecisionResult::Unchanged => "unchanged",
            DecisionResult::AuditError => "audit-error",
            DecisionResult::Refused => "refused",
            DecisionResult::Other => "other",
        }
    }
}

/// A queue that overflowed, losing events (each overflow counts once: how many events it cost
/// is not known, except for the BPF ring buffer, counted apart in events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Overflow {
    /// A follower of the hub (`ociguardctl events --follow`, the exporters) fell behind and
    /// was dropped.
    Follower,
    /// The event export fell behind and wrote an `export-lost` line.
    Export,
    /// A container's NFLOG socket queue (`ENOBUFS`): egress denials not reported.
    Nflog,
    /// The kernel's process-exit event queue (`ENOBUFS`): a reconciliation follows.
    ExitEvents,
}

impl Overflow {
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Follower => "follower",
            Overflow::Export => "export",
            Overflow::Nflog => "nflog",
            Overflow::ExitEvents => "exit-events",
        }
    }
}

/// Why a decision log line was not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skipped {
    /// Not a JSON object with a `result`.
    Malformed,
    /// Longer than the follower reads (`decisions::MAX_LINE`).
    TooLong,
}

impl Skipped {
    pub fn as_str(self) -> &'static str {
        match self {
            Skipped::Malformed => "malformed",
            Skipped::TooLong => "too-long",
        }
    }
}

/// One counter series: what is counted and its labels. An empty policy is "no policy".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Count {
    /// A decision of `ociguard create/run/restore`, read from the decision log.
    Decision {
        result: DecisionResult,
        policy: Text,
    },
    /// A decision log line that was not counted.
    DecisionSkipped(Skipped),
    /// An event the hub published.
    Event(EventKind),
    /// A packet a container's egress ruleset denied (before events are rate-limited).
    EgressDenied {
        policy: Text,
    },
    /// An operation the guard or the BPF enforcer held under `[behavior]` (before events are
    /// rate-limited); `action` is `deny`, `kill` or `audit` (allowed, would have been held).
    Behavior {
        policy: Text,
        rule: &'static str,
        action: &'static str,
    },
    /// Something a container did that its learned profile does not have.
    Anomaly {
        policy: Text,
        kind: Text,
    },
    /// Events the BPF enforcer's ring buffer had no room for.
    BpfLost,
    Overflow(Overflow),
    /// A series not counted because [`MAX_SERIES`] were kept already.
    SeriesLimit,
}

/// Upper bounds (seconds) of the fsync latency buckets: 50 us to 1 s.
pub const FSYNC_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

/// A latency histogram with fixed buckets, lock-free to observe.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket of [`FSYNC_BUCKETS`] (not cumulative), plus one for above the last.
    buckets: [AtomicU64; FSYNC_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

/// A copy of a [`Histogram`]: cumulative bucket counts, as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub sum: f64,
    pub count: u64,
    /// `(upper bound, observations <= it)`, the last bound being +Inf.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = FSYNC_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(FSYNC_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0;
        let buckets = FSYNC_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(bound, n)| {
                acc += n.load(Ordering::Relaxed);
                (bound, acc)
            })
            .collect();
        HistogramSnapshot {
            sum: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            // The buckets' total, not `count`: a scrape between the two adds stays consistent.
            count: acc,
            buckets,
        }
    }
}

/// Which journal flush a latency is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fdatasync` before a registration is acknowledged: the one a hook waits for.
    Append,
    /// Making the journal's zero-filled space durable (off the acknowledgement path).
    Reserve,
    /// Compaction: the new journal and its directory.
    Compact,
}

impl Fsync {
    pub const ALL: [Fsync; 3] = [Fsync::Append, Fsync::Reserve, Fsync::Compact];

    pub fn as_str(self) -> &'static str {
        match self {
            Fsync::Append => "append",
            Fsync::Reserve => "reserve",
            Fsync::Compact => "compact",
        }
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    counts: Mutex<HashMap<Count, u64>>,
    fsync: [Histogram; 3],
}

impl Counters {
    pub fn new() -> Counters {
        Counters::default()
    }

    pub fn add(&self, what: Count, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = counts.get_mut(&what) {
            *v += n;
        } else if counts.len() < MAX_SERIES {
            counts.insert(what, n);
        } else {
            *counts.entry(Count::SeriesLimit).or_default() += n;
        }
    }

    pub fn inc(&self, what: Count) {
        self.add(what, 1);
    }

    /// Every series and its value, sorted (a stable order for the scrape).
    pub fn snapshot(&self) -> Vec<(Count, u64)> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(Count, u64)> = counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        drop(counts);
        v.sort();
        v
    }

    /// The value of one series (0 when never counted).
    pub fn get(&self, what: &Count) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(what).copied().unwrap_or(0)
    }

    pub fn fsync(&self, which: Fsync) -> &Histogram {
        &self.fsync[which as usize]
    }
}

/// The policy label of a record's policy (empty: none).
pub fn policy_label(p: Option<&crate::record::PolicyRef>) -> Text {
    p.map(|p| p.name.clone()).unwrap_or_else(|| Text::from(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_series_and_caps_them() {
        let c = Counters::new();
        let web = || Count::EgressDenied {
            policy: Text::from("web"),
        };
        c.inc(web());
        c.add(web(), 2);
        assert_eq!(c.get(&web()), 3);
        for i in 0..MAX_SERIES + 5 {
            c.inc(Count::EgressDenied {
                policy: Text::from(format!("p{i}").as_str()),
            });
        }
        assert_eq!(
            c.snapshot().len(),
            MAX_SERIES + 1,
            "the cap plus its own count"
        );
        assert_eq!(c.get(&Count::SeriesLimit), 6);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(40));
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_secs(2));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.000_05, 1));
        assert_eq!(s.buckets[3], (0.000_5, 2));
        assert_eq!(*s.buckets.last().unwrap(), (f64::INFINITY, 3));
        assert!((s.sum - 2.000_34).abs() < 1e-6, "{}", s.sum);
    }
}
