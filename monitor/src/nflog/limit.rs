//! Rate limiting: per container and node-wide one-second windows, and the summary owed for
//! the denials they suppressed.

use std::time::{Duration, Instant};

use super::RATE_PER_SEC;
/// A one-second window allowing `limit` events.
#[derive(Debug, Clone)]
pub struct Window {
    limit: u32,
    start: Option<Instant>,
    used: u32,
}

impl Window {
    pub fn new(limit: u32) -> Window {
        Window {
            limit,
            start: None,
            used: 0,
        }
    }

    fn ended(&self, now: Instant) -> bool {
        self.start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
    }

    /// Take one slot at `now`, if there is one left.
    pub fn take(&mut self, now: Instant) -> bool {
        if self.ended(now) {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.limit {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

/// One container's denials: what may be published now, what is owed as a summary.
#[derive(Debug, Clone)]
pub struct Limiter {
    window: Window,
    suppressed: u64,
    total: u64,
}

/// What to do with a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admit {
    /// Publish a summary of this many suppressed denials first.
    pub summary: Option<u64>,
    /// Publish this denial.
    pub publish: bool,
}

impl Limiter {
    pub fn new(per_sec: u32) -> Limiter {
        Limiter {
            window: Window::new(per_sec),
            suppressed: 0,
            total: 0,
        }
    }

    /// Denials counted since the container was watched.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A denial at `now`; `global` is the node-wide window.
    pub fn admit(&mut self, now: Instant, global: &mut Window) -> Admit {
        self.total += 1;
        let summary = self.due(now);
        let publish = self.window.take(now) && global.take(now);
        if !publish {
            self.suppressed += 1;
        }
        Admit { summary, publish }
    }

    /// The suppressed count, once the window they fell in has ended.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        (self.suppressed > 0 && self.window.ended(now))
            .then(|| std::mem::take(&mut self.suppressed))
    }

    /// The suppressed count now (the container is going away).
    pub(super) fn drain(&mut self) -> Option<u64> {
        (self.suppressed > 0).then(|| std::mem::take(&mut self.suppressed))
    }
}

pub(super) fn summary_text(n: u64, total: u64) -> String {
    format!("{n} more denied, not shown (limit {RATE_PER_SEC}/s); {total} in total")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nflog::GLOBAL_RATE_PER_SEC;

    // ---- rate limiting ----

    #[test]
    fn ten_per_second_then_one_summary() {
        let t0 = Instant::now();
        let mut global = Window::new(GLOBAL_RATE_PER_SEC);
        let mut l = Limiter::new(RATE_PER_SEC);
        let published = (0..25)
            .filter(|i| l.admit(t0 + Duration::from_millis(*i), &mut global).publish)
            .count();
        assert_eq!(published, 10);
        assert_eq!(
            l.due(t0 + Duration::from_millis(500)),
            None,
            "window not over"
        );
        assert_eq!(l.due(t0 + Duration::from_millis(1001)), Some(15));
        assert_eq!(l.due(t0 + Duration::from_millis(1002)), None, "owed once");
        // a denial in a new window that follows suppressed ones carries the summary first
        let mut l = Limiter::new(2);
        for i in 0..5 {
            l.admit(t0 + Duration::from_millis(i), &mut global);
        }
        let a = l.admit(t0 + Duration::from_secs(2), &mut global);
        assert_eq!(
            a,
            Admit {
                summary: Some(3),
                publish: true
            }
        );
        assert_eq!(l.total(), 6);
        assert_eq!(
            summary_text(3, 6),
            "3 more denied, not shown (limit 10/s); 6 in total"
        );
    }

    #[test]
    fn the_global_window_caps_all_containers() {
        let t0 = Instant::now();
        let mut global = Window::new(3);
        let mut a = Limiter::new(10);
        let mut b = Limiter::new(10);
        let n = (0..4)
            .flat_map(|_| [a.admit(t0, &mut global), b.admit(t0, &mut global)])
            .filter(|x| x.publish)
            .count();
        assert_eq!(n, 3);
        assert_eq!(a.drain().unwrap_or(0) + b.drain().unwrap_or(0), 5);
    }
}
