//! The wall-clock stopwatch behind `--timeout` and the `timer_*` commands.
//!
//! It counts while it is enabled and the tree is not suspended. Pure state: the caller passes
//! `now`, so every transition is testable without waiting.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Timer {
    limit: Option<Duration>,
    enabled: bool,
    paused: bool,
    /// Time counted before the current running segment.
    banked: Duration,
    /// Start of the current running segment, if counting now.
    since: Option<Instant>,
    fired: bool,
}

impl Timer {
    /// A timer enabled from `now`; a zero limit means it counts but never expires.
    pub fn new(limit: Duration, now: Instant) -> Timer {
        Timer {
            limit: (!limit.is_zero()).then_some(limit),
            enabled: true,
            paused: false,
            banked: Duration::ZERO,
            since: Some(now),
            fired: false,
        }
    }

    pub fn elapsed(&self, now: Instant) -> Duration {
        self.banked + self.since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    fn settle(&mut self, now: Instant) {
        self.banked = self.elapsed(now);
        self.since = (self.enabled && !self.paused).then_some(now);
    }

    pub fn start(&mut self, now: Instant) {
        self.enabled = true;
        self.banked = Duration::ZERO;
        self.since = None;
        self.settle(now);
    }

    pub fn stop(&mut self, now: Instant) {
        self.settle(now);
        self.enabled = false;
        self.settle(now);
    }

    pub fn resume(&mut self, now: Instant) {
        self.settle(now);
        self.enabled = true;
        self.settle(now);
    }

    pub fn reset(&mut self, now: Instant) {
        self.enabled = false;
        self.banked = Duration::ZERO;
        self.since = None;
        self.settle(now);
    }

    /// Suspension of the tree pauses the count; it does not change `enabled`.
    pub fn set_paused(&mut self, paused: bool, now: Instant) {
        self.settle(now);
        self.paused = paused;
        self.settle(now);
    }

    /// When the limit will be reached if nothing changes; `None` when it cannot expire now.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        let limit = self.limit?;
        if self.fired || self.since.is_none() {
            return None;
        }
        Some(now + limit.saturating_sub(self.elapsed(now)))
    }

    /// True exactly once, when the limit is first reached.
    pub fn take_expiry(&mut self, now: Instant) -> bool {
        match self.deadline(now) {
            Some(d) if d <= now => {
                self.fired = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn counts_and_expires_once() {
        let t0 = Instant::now();
        let mut t = Timer::new(10 * S, t0);
        assert_eq!(t.deadline(t0), Some(t0 + 10 * S));
        assert!(!t.take_expiry(t0 + 9 * S));
        assert!(t.take_expiry(t0 + 10 * S));
        assert!(!t.take_expiry(t0 + 11 * S));
        assert_eq!(t.deadline(t0 + 11 * S), None);
    }

    #[test]
    fn paused_while_suspended() {
        let t0 = Instant::now();
        let mut t = Timer::new(10 * S, t0);
        t.set_paused(true, t0 + 4 * S);
        assert_eq!(t.elapsed(t0 + 100 * S), 4 * S);
        assert_eq!(t.deadline(t0 + 100 * S), None);
        t.set_paused(false, t0 + 100 * S);
        assert_eq!(t.deadline(t0 + 100 * S), Some(t0 + 106 * S));
    }

    #[test]
    fn commands() {
        let t0 = Instant::now();
        let mut t = Timer::new(10 * S, t0);
        t.stop(t0 + 3 * S);
        assert!(!t.enabled());
        assert_eq!(t.elapsed(t0 + 50 * S), 3 * S);
        assert_eq!(t.deadline(t0 + 50 * S), None);
        t.resume(t0 + 50 * S);
        assert_eq!(t.elapsed(t0 + 52 * S), 5 * S);
        t.reset(t0 + 52 * S);
        assert_eq!(t.elapsed(t0 + 60 * S), Duration::ZERO);
        assert!(!t.enabled());
        t.start(t0 + 60 * S);
        assert_eq!(t.deadline(t0 + 60 * S), Some(t0 + 70 * S));
        // A stop while suspended, then resume while still suspended, keeps counting paused.
        t.set_paused(true, t0 + 61 * S);
        t.stop(t0 + 62 * S);
        t.resume(t0 + 63 * S);
        assert_eq!(t.elapsed(t0 + 80 * S), S);
        t.set_paused(false, t0 + 80 * S);
        assert_eq!(t.elapsed(t0 + 81 * S), 2 * S);
    }

    #[test]
    fn zero_limit_never_expires() {
        let t0 = Instant::now();
        let mut t = Timer::new(Duration::ZERO, t0);
        assert_eq!(t.deadline(t0), None);
        assert!(!t.take_expiry(t0 + 1000 * S));
        assert_eq!(t.elapsed(t0 + 5 * S), 5 * S);
    }
}
