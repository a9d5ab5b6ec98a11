//! The loop's recurring deadlines in one place: the children-list scan, the monitor tick
//! (memory peaks and the limits) and the sample interval. Together with the policy's own
//! deadlines (the wall-clock timeout, the end of the grace period) they make the poll timeout.

use std::time::{Duration, Instant};

#[derive(Debug)]
struct Every {
    period: Duration,
    next: Instant,
}

impl Every {
    fn new(period: Duration, now: Instant) -> Every {
        Every { period, next: now + period }
    }

    /// Due at `now`: re-armed one period from `now`.
    fn take(&mut self, now: Instant) -> bool {
        let due = now >= self.next;
        if due {
            self.next = now + self.period;
        }
        due
    }
}

/// Which ticks are due, handled in this order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Due {
    pub scan: bool,
    pub monitor: bool,
    pub sample: bool,
}

#[derive(Debug)]
pub struct Schedule {
    scan: Every,
    monitor: Every,
    sample_every: Duration,
    /// None while nothing takes samples (no sink, no broker).
    sample: Option<Instant>,
}

impl Schedule {
    pub fn new(now: Instant, scan: Duration, monitor: Duration, sample_every: Duration) -> Schedule {
        Schedule {
            scan: Every::new(scan, now),
            monitor: Every::new(monitor, now),
            sample_every,
            sample: None,
        }
    }

    /// Samples from now on, the first one an interval from now (kept if already sampling).
    pub fn start_sampling(&mut self, now: Instant) {
        self.sample.get_or_insert(now + self.sample_every);
    }

    /// `change_sample_rate`: the new interval, counted from now.
    pub fn set_sample_interval(&mut self, every: Duration, now: Instant) {
        self.sample_every = every;
        if self.sample.is_some() {
            self.sample = Some(now + every);
        }
    }

    /// When the loop must wake at the latest: the first of these deadlines and `other`.
    pub fn next(&self, other: Option<Instant>) -> Instant {
        [other, self.sample, Some(self.monitor.next)].into_iter().flatten().fold(self.scan.next, Instant::min)
    }

    /// What is due at `now`; each is re-armed from `now`.
    pub fn due(&mut self, now: Instant) -> Due {
        let sample = self.sample.is_some_and(|t| now >= t);
        if sample {
            self.sample = Some(now + self.sample_every);
        }
        Due { scan: self.scan.take(now), monitor: self.monitor.take(now), sample }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn each_tick_fires_at_its_period_and_is_rearmed_from_now() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 100 * MS, 250 * MS, 1000 * MS);
        assert_eq!(s.next(None), t0 + 100 * MS);
        assert_eq!(s.next(Some(t0 + 50 * MS)), t0 + 50 * MS);
        assert_eq!(s.due(t0 + 99 * MS), Due::default());
        assert_eq!(s.due(t0 + 100 * MS), Due { scan: true, ..Due::default() });
        assert_eq!(s.next(None), t0 + 200 * MS);
        // Late: fires once, re-armed from the late instant, not caught up.
        assert_eq!(s.due(t0 + 600 * MS), Due { scan: true, monitor: true, sample: false });
        assert_eq!(s.next(None), t0 + 700 * MS);
    }

    #[test]
    fn sampling_starts_and_changes_interval() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0, 10_000 * MS, 10_000 * MS, 1000 * MS);
        // Not sampling: an interval change only takes effect once sampling starts.
        s.set_sample_interval(500 * MS, t0);
        assert_eq!(s.next(None), t0 + 10_000 * MS);
        s.start_sampling(t0);
        assert_eq!(s.next(None), t0 + 500 * MS);
        s.start_sampling(t0 + 100 * MS);
        assert_eq!(s.next(None), t0 + 500 * MS, "a second start keeps the running interval");
        assert!(s.due(t0 + 500 * MS).sample);
        s.set_sample_interval(200 * MS, t0 + 600 * MS);
        assert_eq!(s.next(None), t0 + 800 * MS);
    }
}
