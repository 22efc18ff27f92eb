//! The Redis failure policy's clock: after a failure Redis is skipped for [`SKIP_AFTER_FAILURE`]
//! (so that an outage costs one bounded call a second, not one per request), a warning goes out
//! at most every [`WARN_EVERY`], every failure is counted, and the first success closes it again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long Redis is left alone after a failed call.
pub const SKIP_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// At most one warning per this long while Redis keeps failing.
pub const WARN_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Breaker {
    origin: Instant,
    /// Milliseconds since `origin` before which calls are skipped.
    skip_until: AtomicU64,
    /// Milliseconds since `origin` of the last warning, plus one (0: never warned).
    warned_at: AtomicU64,
    errors: AtomicU64,
    failing: AtomicBool,
}

/// What [`Breaker::failed`] asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// Log a warning: the first failure, or the first for [`WARN_EVERY`].
    Warn,
    Quiet,
}

impl Breaker {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            skip_until: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// Whether a call may go to Redis at `now`.
    pub fn allows(&self, now: Instant) -> bool {
        self.millis(now) >= self.skip_until.load(Ordering::Acquire)
    }

    /// Records a failed call at `now`: Redis is skipped until `now + SKIP_AFTER_FAILURE`.
    pub fn failed(&self, now: Instant) -> Report {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.failing.store(true, Ordering::Release);
        let at = self.millis(now);
        self.skip_until.fetch_max(at + SKIP_AFTER_FAILURE.as_millis() as u64, Ordering::AcqRel);
        let last = self.warned_at.load(Ordering::Acquire);
        let due = last == 0 || at + 1 >= last + WARN_EVERY.as_millis() as u64;
        // One of the callers failing at the same moment warns.
        if due && self.warned_at.compare_exchange(last, at + 1, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            Report::Warn
        } else {
            Report::Quiet
        }
    }

    /// Records a call that Redis answered; `true` when that ends a run of failures.
    pub fn succeeded(&self) -> bool {
        if self.failing.swap(false, Ordering::AcqRel) {
            self.skip_until.store(0, Ordering::Release);
            self.warned_at.store(0, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Failed Redis calls since start (for a metrics exporter).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_skips_redis_for_a_second_then_lets_one_try() {
        let t0 = Instant::now();
        let breaker = Breaker::new(t0);
        assert!(breaker.allows(t0));
        assert_eq!(breaker.failed(t0), Report::Warn);
        assert!(!breaker.allows(t0));
        assert!(!breaker.allows(t0 + SKIP_AFTER_FAILURE - Duration::from_millis(1)));
        assert!(breaker.allows(t0 + SKIP_AFTER_FAILURE), "tried again after the pause");
        assert!(breaker.is_failing());
        assert_eq!(breaker.errors(), 1);
    }

    #[test]
    fn warnings_are_spaced_and_every_error_counted() {
        let t0 = Instant::now();
        let breaker = Breaker::new(t0);
        assert_eq!(breaker.failed(t0), Report::Warn);
        assert_eq!(breaker.failed(t0 + Duration::from_secs(1)), Report::Quiet);
        assert_eq!(breaker.failed(t0 + WARN_EVERY - Duration::from_millis(1)), Report::Quiet);
        assert_eq!(breaker.failed(t0 + WARN_EVERY), Report::Warn);
        assert_eq!(breaker.failed(t0 + WARN_EVERY + Duration::from_secs(1)), Report::Quiet);
        assert_eq!(breaker.errors(), 5);
    }

    #[test]
    fn a_success_closes_it_at_once_and_the_next_outage_warns_again() {
        let t0 = Instant::now();
        let breaker = Breaker::new(t0);
        assert!(!breaker.succeeded(), "no run of failures to end");
        breaker.failed(t0);
        assert!(breaker.succeeded(), "the end of the outage is reported once");
        assert!(!breaker.succeeded());
        assert!(breaker.allows(t0), "not skipped any more");
        assert!(!breaker.is_failing());
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(breaker.failed(t1), Report::Warn, "a new outage warns at once");
        assert_eq!(breaker.errors(), 2);
    }

    #[test]
    fn concurrent_failures_warn_once() {
        let t0 = Instant::now();
        let breaker = std::sync::Arc::new(Breaker::new(t0));
        let warned: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| breaker.failed(t0) == Report::Warn)).collect();
            handles.into_iter().map(|h| usize::from(h.join().expect("thread"))).sum()
        });
        assert_eq!(warned, 1);
        assert_eq!(breaker.errors(), 8);
    }
}
