//! Graceful stop as an explicit state machine:
//! `Running → Stopping(kill_at) → Killing`, where a second request or the grace deadline
//! escalates. The tree being empty is the loop's business; this only says which signal to send.

use crate::signals::Sig;
use std::time::{Duration, Instant};

/// Why the box is ending the job; becomes the summary's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Exited,
    Timeout,
    Stopped,
    Killed,
    Signal,
    LimitMemory,
    LimitCpu,
    LimitPids,
    LimitStdout,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Exited => "exited",
            Reason::Timeout => "timeout",
            Reason::Stopped => "stopped",
            Reason::Killed => "killed",
            Reason::Signal => "signal",
            Reason::LimitMemory => "limit_memory",
            Reason::LimitCpu => "limit_cpu",
            Reason::LimitPids => "limit_pids",
            Reason::LimitStdout => "limit_stdout",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    Stopping { kill_at: Instant },
    Killing,
}

/// Within this time, a stop signal from the sender of the previous one is the same request
/// delivered again, not a second one. `timeout(1)` signals its child and then its process
/// group, so proc_box gets one request twice within microseconds; a person or a program that
/// means "now" sends again later.
pub const ECHO: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct StopMachine {
    phase: Phase,
    reason: Option<Reason>,
    grace: Duration,
    stop_signal: Sig,
    /// The last stop signal taken: its sender's pid (0 for the kernel, as for a terminal's ^C)
    /// and when it came.
    last_signal: Option<(u32, Instant)>,
    /// SIGKILL was sent because the grace period ran out (`timeout -k`'s case).
    grace_expired: bool,
}

impl StopMachine {
    pub fn new(grace: Duration, stop_signal: Sig) -> StopMachine {
        StopMachine {
            phase: Phase::Running,
            reason: None,
            grace,
            stop_signal,
            last_signal: None,
            grace_expired: false,
        }
    }

    /// A stop signal sent to proc_box by `sender`: a request, unless it is an echo of the last
    /// one (same sender, within [`ECHO`]), which changes nothing.
    pub fn signal_request(&mut self, sender: u32, now: Instant) -> Option<Sig> {
        let echo = self
            .last_signal
            .is_some_and(|(from, at)| from == sender && now.saturating_duration_since(at) < ECHO);
        if echo && self.phase != Phase::Running {
            return None;
        }
        self.last_signal = Some((sender, now));
        self.request(Reason::Signal, now)
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The first reason given sticks: a timeout that fires during a stop is still a stop.
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// A graceful stop; a second one while stopping escalates to SIGKILL at once.
    /// Returns the signal to send to the tree, if any.
    pub fn request(&mut self, reason: Reason, now: Instant) -> Option<Sig> {
        self.reason.get_or_insert(reason);
        match self.phase {
            Phase::Running if self.grace.is_zero() || self.stop_signal == Sig::KILL => self.kill(),
            Phase::Running => {
                self.phase = Phase::Stopping { kill_at: now + self.grace };
                Some(self.stop_signal)
            }
            Phase::Stopping { .. } => self.kill(),
            Phase::Killing => None,
        }
    }

    /// An immediate SIGKILL of the whole tree (the `kill` command with SIGKILL).
    pub fn kill_now(&mut self, reason: Reason) -> Option<Sig> {
        self.reason.get_or_insert(reason);
        self.kill()
    }

    fn kill(&mut self) -> Option<Sig> {
        self.phase = Phase::Killing;
        Some(Sig::KILL)
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Stopping { kill_at } => Some(kill_at),
            _ => None,
        }
    }

    /// The grace period is over: escalate.
    pub fn on_time(&mut self, now: Instant) -> Option<Sig> {
        match self.phase {
            Phase::Stopping { kill_at } if kill_at <= now => {
                self.grace_expired = true;
                self.kill()
            }
            _ => None,
        }
    }

    /// Whether the grace period ran out, so that SIGKILL had to follow the stop signal.
    pub fn grace_expired(&self) -> bool {
        self.grace_expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graceful_then_kill_after_grace() {
        let t0 = Instant::now();
        let mut m = StopMachine::new(Duration::from_secs(10), Sig::TERM);
        assert_eq!(m.request(Reason::Timeout, t0), Some(Sig::TERM));
        assert_eq!(m.deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(m.on_time(t0 + Duration::from_secs(9)), None);
        assert_eq!(m.on_time(t0 + Duration::from_secs(10)), Some(Sig::KILL));
        assert_eq!(m.phase(), Phase::Killing);
        assert!(m.grace_expired());
        assert_eq!(m.deadline(), None);
        assert_eq!(m.reason(), Some(Reason::Timeout));
    }

    #[test]
    fn second_request_escalates_and_reason_sticks() {
        let t0 = Instant::now();
        let mut m = StopMachine::new(Duration::from_secs(10), Sig::INT);
        assert_eq!(m.request(Reason::Signal, t0), Some(Sig::INT));
        assert_eq!(m.request(Reason::Stopped, t0), Some(Sig::KILL));
        assert_eq!(m.request(Reason::Stopped, t0), None);
        assert_eq!(m.reason(), Some(Reason::Signal));
    }

    #[test]
    fn a_signal_delivered_twice_at_once_is_one_request() {
        let t0 = Instant::now();
        let mut m = StopMachine::new(Duration::from_secs(10), Sig::TERM);
        assert_eq!(m.signal_request(42, t0), Some(Sig::TERM));
        // The same sender a moment later (timeout(1): child, then group): no escalation.
        assert_eq!(m.signal_request(42, t0 + Duration::from_micros(50)), None);
        assert_eq!(m.phase(), Phase::Stopping { kill_at: t0 + Duration::from_secs(10) });
        // Sent again a second later: a real second request.
        assert_eq!(m.signal_request(42, t0 + ECHO), Some(Sig::KILL));
        // Another sender at once is a second request too.
        let mut m = StopMachine::new(Duration::from_secs(10), Sig::TERM);
        assert_eq!(m.signal_request(0, t0), Some(Sig::TERM));
        assert_eq!(m.signal_request(7, t0), Some(Sig::KILL));
    }

    #[test]
    fn zero_grace_kills_at_once() {
        let mut m = StopMachine::new(Duration::ZERO, Sig::TERM);
        assert_eq!(m.request(Reason::Stopped, Instant::now()), Some(Sig::KILL));
    }
}
