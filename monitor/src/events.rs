//! Lifecycle events: a short in-memory history plus live subscribers (`ociguardctl events`).
//!
//! Also the egress denials `nflog` reports. Nothing here is durable: an event is a log line and
//! an entry in memory, never a journal write, so a flood of denials costs no disk flushes.
//!
//! Publishing never blocks the writer: a subscriber whose queue is full is dropped (and told
//! so by the connection closing), it never slows down registrations.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use crate::protocol::{Event, EventKind};
use crate::record::{Identity, Timestamp};
use crate::stats::{Count, Counters, Overflow};

/// Events kept for `events` without `--follow` (and sent first to a new follower).
pub const HISTORY: usize = 1024;
/// Events a follower may lag behind before it is dropped.
pub const SUBSCRIBER_QUEUE: usize = 4096;

/// Which events a subscriber wants (decided before the event is copied to it).
pub type Filter = fn(EventKind, &Identity) -> bool;

#[derive(Debug)]
struct Subscriber {
    tx: SyncSender<Event>,
    wants: Option<Filter>,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    recent: VecDeque<Event>,
    subscribers: Vec<Subscriber>,
}

#[derive(Debug, Default)]
pub struct Hub {
    inner: Mutex<Inner>,
    /// What happened since the start (`--metrics-address`): the hub counts what it publishes,
    /// the threads that publish to it count what they see besides.
    counters: Arc<Counters>,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn publish(&self, kind: EventKind, rec: &Identity, detail: Option<String>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        self.counters.inc(Count::Event(kind));
        inner.seq += 1;
        let event = Event {
            seq: inner.seq,
            time: Timestamp::now(),
            kind,
            id: rec.id.clone(),
            bundle: rec.bundle.clone(),
            pid: rec.pid,
            status: rec.status,
            exit: rec.exit,
            detail,
        };
        log::info!(
            "event {} {} pid={} {}",
            kind.as_str(),
            rec.id,
            rec.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            event.detail.as_deref().unwrap_or("")
        );
        inner.subscribers.retain(|s| {
            if s.wants.is_some_and(|wants| !wants(kind, rec)) {
                return true; // not for this one
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    log::warn!("events: a follower fell {SUBSCRIBER_QUEUE} events behind: dropped");
                    self.counters.inc(Count::Overflow(Overflow::Follower));
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            }
        });
        if inner.recent.len() == HISTORY {
            inner.recent.pop_front();
        }
        inner.recent.push_back(event);
    }

    pub fn recent(&self) -> Vec<Event> {
        self.inner
            .lock()
            .map(|i| i.recent.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The history and a receiver for everything after it (no gap, no duplicate).
    pub fn subscribe(&self) -> (Vec<Event>, Receiver<Event>) {
        self.subscribe_where(None)
    }

    /// A receiver for the events `wants` accepts from now on: a thread interested in a few
    /// containers is not woken by every registration on the node.
    pub fn subscribe_to(&self, wants: Filter) -> Receiver<Event> {
        self.subscribe_where(Some(wants)).1
    }

    fn subscribe_where(&self, wants: Option<Filter>) -> (Vec<Event>, Receiver<Event>) {
        let (tx, rx) = mpsc::sync_channel(SUBSCRIBER_QUEUE);
        match self.inner.lock() {
            Ok(mut inner) => {
                let recent = match wants {
                    None => inner.recent.iter().cloned().collect(),
                    Some(_) => Vec::new(),
                };
                inner.subscribers.push(Subscriber { tx, wants });
                (recent, rx)
            }
            Err(_) => (Vec::new(), rx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_and_followers() {
        let hub = Hub::new();
        let rec = Identity {
            id: "a".into(),
            bundle: "/b".into(),
            ..Default::default()
        };
        hub.publish(EventKind::Registered, &rec, None);
        let (recent, rx) = hub.subscribe();
        assert_eq!(recent.len(), 1);
        hub.publish(EventKind::Started, &rec, None);
        let e = rx.try_recv().unwrap();
        assert_eq!((e.seq, e.kind), (2, EventKind::Started));
        drop(rx);
        hub.publish(EventKind::Exited, &rec, None);
        assert_eq!(hub.recent().len(), 3);
    }

    #[test]
    fn a_filtered_subscriber_gets_only_what_it_wants() {
        let hub = Hub::new();
        let rx = hub.subscribe_to(|kind, rec| kind == EventKind::Exited && rec.id == "b");
        let (_, all) = hub.subscribe();
        for id in ["a", "b"] {
            let rec = Identity {
                id: id.into(),
                bundle: "/b".into(),
                ..Default::default()
            };
            hub.publish(EventKind::Registered, &rec, None);
            hub.publish(EventKind::Exited, &rec, None);
        }
        let got: Vec<(u64, String)> = rx.try_iter().map(|e| (e.seq, e.id)).collect();
        assert_eq!(got, vec![(4, "b".to_owned())]);
        assert_eq!(all.try_iter().count(), 4);
    }
}
