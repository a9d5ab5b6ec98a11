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

#[derive(Debug)]
pub struct StopMachine {
    phase: Phase,
    reason: Option<Reason>,
    grace: Duration,
    stop_signal: Sig,
}

impl StopMachine {
    pub fn new(grace: Duration, stop_signal: Sig) -> StopMachine {
        StopMachine { phase: Phase::Running, reason: None, grace, stop_signal }
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
            Phase::Stopping { kill_at } if kill_at <= now => self.kill(),
            _ => None,
        }
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
    fn zero_grace_kills_at_once() {
        let mut m = StopMachine::new(Duration::ZERO, Sig::TERM);
        assert_eq!(m.request(Reason::Stopped, Instant::now()), Some(Sig::KILL));
    }
}
