//! What to do: the box's decisions, kept apart from the kernel.
//!
//! Policy never touches a process. It takes events (a command, a signal to proc_box, the main
//! process exiting, the clock) and returns [`Action`]s that the event loop carries out. That
//! keeps every state machine here testable without processes.

pub mod limits;
pub mod stop;
pub mod timer;

use crate::command::Command;
use crate::config::OnMainExit;
use crate::signals::Sig;
use std::time::{Duration, Instant};
use stop::StopMachine;
pub use stop::{Phase, Reason};
use timer::Timer;

/// How the box's end maps to proc_box's exit status (the contract's table, plus options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRule {
    /// `--preserve-status`: on a timeout, the command's own status instead of 124.
    pub preserve_status: bool,
    /// `--kill-status`: on a timeout whose grace period ran out, 137 instead of 124.
    pub kill_status: bool,
}

/// How the main process ended, as far as the exit status cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MainEnd {
    /// It could not be started: exec failed with this errno.
    NotStarted(i32),
    /// proc_box failed before it ran.
    Failed,
    Exited(i32),
    Signaled(i32),
}

/// The exit status: the main process's own (128 + N for signal N); 124 for a timeout (137 with
/// `kill_status` where SIGKILL had to follow, the command's own with `preserve_status`); 125
/// when proc_box failed, 126 when the command could not run, 127 when it was not found.
pub fn exit_code(end: MainEnd, reason: Option<Reason>, grace_expired: bool, rule: ExitRule) -> i32 {
    let own = match end {
        MainEnd::NotStarted(errno) => return if errno == libc::ENOENT { 127 } else { 126 },
        MainEnd::Failed => return 125,
        MainEnd::Exited(code) => code,
        MainEnd::Signaled(sig) => 128 + sig,
    };
    match reason {
        Some(Reason::Timeout) if rule.preserve_status => own,
        Some(Reason::Timeout) if rule.kill_status && grace_expired => 128 + libc::SIGKILL,
        Some(Reason::Timeout) => 124,
        _ => own,
    }
}

/// A command the box refuses in its present state (it is well formed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the box is stopping; suspend refused")]
    Stopping,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this signal to every process of the tree.
    Signal(Sig),
}

#[derive(Debug)]
pub struct Policy {
    stop: StopMachine,
    timer: Timer,
    suspended: bool,
    on_main_exit: OnMainExit,
}

impl Policy {
    pub fn new(
        grace: Duration,
        stop_signal: Sig,
        timeout: Duration,
        on_main_exit: OnMainExit,
        now: Instant,
    ) -> Policy {
        Policy {
            stop: StopMachine::new(grace, stop_signal),
            timer: Timer::new(timeout, now),
            suspended: false,
            on_main_exit,
        }
    }

    /// Applies a control command; `Err` is the reason it was refused (nothing is done then).
    pub fn command(&mut self, cmd: &Command, now: Instant) -> Result<Vec<Action>, Refused> {
        Ok(match *cmd {
            Command::Stop => self.request_stop(Reason::Stopped, now),
            Command::Suspend | Command::Kill(Sig::STOP) => {
                if self.stopping() {
                    return Err(Refused::Stopping);
                }
                self.set_suspended(true, now);
                vec![Action::Signal(Sig::STOP)]
            }
            Command::Resume | Command::Kill(Sig::CONT) => {
                self.set_suspended(false, now);
                vec![Action::Signal(Sig::CONT)]
            }
            Command::Kill(Sig::KILL) => {
                self.stop.kill_now(Reason::Killed).map(Action::Signal).into_iter().collect()
            }
            Command::Kill(sig) => vec![Action::Signal(sig)],
            Command::TimerReset => self.timer_op(now, Timer::reset),
            Command::TimerStart => self.timer_op(now, Timer::start),
            Command::TimerStop => self.timer_op(now, Timer::stop),
            Command::TimerResume => self.timer_op(now, Timer::resume),
            Command::Status | Command::Sample | Command::ChangeSampleRate(_) => Vec::new(),
        })
    }

    fn timer_op(&mut self, now: Instant, op: fn(&mut Timer, Instant)) -> Vec<Action> {
        op(&mut self.timer, now);
        Vec::new()
    }

    /// SIGINT, SIGTERM or SIGQUIT sent to proc_box by `sender` (a pid; 0 for the kernel): a
    /// graceful stop, escalating when sent again (not when one signal arrives twice at once).
    pub fn stop_signal_received(&mut self, sender: u32, now: Instant) -> Vec<Action> {
        let Some(sig) = self.stop.signal_request(sender, now) else {
            return Vec::new();
        };
        self.stop_actions(sig, now)
    }

    /// A limit was passed: a graceful stop at the limit, SIGKILL at the hard limit.
    pub fn limit_exceeded(&mut self, reason: Reason, hard: bool, now: Instant) -> Vec<Action> {
        if hard {
            if self.stop.phase() == Phase::Killing {
                return Vec::new();
            }
            crate::warn!("hard limit passed ({}); killing the whole tree", reason.as_str());
            return self.stop.kill_now(reason).map(Action::Signal).into_iter().collect();
        }
        if self.stopping() {
            return Vec::new();
        }
        crate::warn!("limit passed ({}); stopping the job", reason.as_str());
        self.request_stop(reason, now)
    }

    /// The main process is gone; `leftovers` says whether any descendant is still alive.
    pub fn main_exited(&mut self, leftovers: bool, now: Instant) -> Vec<Action> {
        if leftovers && self.on_main_exit == OnMainExit::Kill && !self.stopping() {
            self.request_stop(Reason::Exited, now)
        } else {
            Vec::new()
        }
    }

    /// The job stopped itself at the terminal (Ctrl-Z): hold the whole tree, pause the timer.
    pub fn terminal_stop(&mut self, now: Instant) -> Vec<Action> {
        if self.stopping() {
            return Vec::new();
        }
        self.set_suspended(true, now);
        vec![Action::Signal(Sig::STOP)]
    }

    fn request_stop(&mut self, reason: Reason, now: Instant) -> Vec<Action> {
        let Some(sig) = self.stop.request(reason, now) else {
            return Vec::new();
        };
        self.stop_actions(sig, now)
    }

    fn stop_actions(&mut self, sig: Sig, now: Instant) -> Vec<Action> {
        let mut actions = vec![Action::Signal(sig)];
        if self.suspended && sig != Sig::KILL {
            // A stopped process cannot act on SIGTERM; let it run so it can clean up.
            actions.push(Action::Signal(Sig::CONT));
        }
        self.set_suspended(false, now);
        actions
    }

    fn set_suspended(&mut self, suspended: bool, now: Instant) {
        self.suspended = suspended;
        self.timer.set_paused(suspended, now);
    }

    /// Fires whatever deadline has passed: the wall-clock timeout, the end of the grace period.
    pub fn on_time(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.timer.take_expiry(now) {
            crate::info!("wall-clock timeout reached; stopping the job");
            actions.extend(self.request_stop(Reason::Timeout, now));
        }
        if let Some(sig) = self.stop.on_time(now) {
            crate::info!("grace period over; sending SIGKILL to the whole tree");
            actions.push(Action::Signal(sig));
        }
        actions
    }

    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        [self.timer.deadline(now), self.stop.deadline()].into_iter().flatten().min()
    }

    /// The signal a newly found process must get at once to match the tree's state.
    pub fn birth_signal(&self) -> Option<Sig> {
        match self.stop.phase() {
            Phase::Killing => Some(Sig::KILL),
            _ if self.suspended => Some(Sig::STOP),
            _ => None,
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.phase() != Phase::Running
    }

    pub fn suspended(&self) -> bool {
        self.suspended
    }

    pub fn reason(&self) -> Option<Reason> {
        self.stop.reason()
    }

    /// Whether SIGKILL followed the stop signal because the grace period ran out.
    pub fn grace_expired(&self) -> bool {
        self.stop.grace_expired()
    }

    pub fn timer(&self) -> &Timer {
        &self.timer
    }

    /// The contract's `state`: "running" | "suspended" | "stopping".
    pub fn state_name(&self) -> &'static str {
        if self.stopping() {
            "stopping"
        } else if self.suspended {
            "suspended"
        } else {
            "running"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn policy(now: Instant) -> Policy {
        Policy::new(10 * S, Sig::TERM, 60 * S, OnMainExit::Kill, now)
    }

    #[test]
    fn suspend_pauses_timer_and_stop_wakes_the_tree() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        assert_eq!(p.command(&Command::Suspend, t0 + S), Ok(vec![Action::Signal(Sig::STOP)]));
        assert_eq!(p.state_name(), "suspended");
        assert_eq!(p.birth_signal(), Some(Sig::STOP));
        assert_eq!(p.next_deadline(t0 + 100 * S), None);
        assert_eq!(
            p.command(&Command::Stop, t0 + 100 * S),
            Ok(vec![Action::Signal(Sig::TERM), Action::Signal(Sig::CONT)])
        );
        assert_eq!(p.state_name(), "stopping");
        assert!(p.command(&Command::Suspend, t0 + 101 * S).is_err());
        assert_eq!(p.on_time(t0 + 110 * S), vec![Action::Signal(Sig::KILL)]);
        assert_eq!(p.birth_signal(), Some(Sig::KILL));
        assert_eq!(p.reason(), Some(Reason::Stopped));
    }

    #[test]
    fn timeout_fires_once_counting_only_unsuspended_time() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        p.command(&Command::Suspend, t0 + 10 * S).unwrap();
        p.command(&Command::Resume, t0 + 30 * S).unwrap();
        assert_eq!(p.next_deadline(t0 + 30 * S), Some(t0 + 80 * S));
        assert!(p.on_time(t0 + 79 * S).is_empty());
        assert_eq!(p.on_time(t0 + 80 * S), vec![Action::Signal(Sig::TERM)]);
        assert_eq!(p.reason(), Some(Reason::Timeout));
        assert_eq!(p.next_deadline(t0 + 80 * S), Some(t0 + 90 * S));
    }

    #[test]
    fn main_exit_ends_leftovers_only_in_kill_mode() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        assert_eq!(p.main_exited(true, t0), vec![Action::Signal(Sig::TERM)]);
        assert_eq!(p.reason(), Some(Reason::Exited));
        let mut w = Policy::new(10 * S, Sig::TERM, Duration::ZERO, OnMainExit::Wait, t0);
        assert!(w.main_exited(true, t0).is_empty());
        assert!(!w.stopping());
    }

    #[test]
    fn limits_stop_then_kill() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        assert_eq!(p.limit_exceeded(Reason::LimitStdout, false, t0), vec![Action::Signal(Sig::TERM)]);
        assert!(p.limit_exceeded(Reason::LimitStdout, false, t0).is_empty());
        assert_eq!(p.limit_exceeded(Reason::LimitStdout, true, t0), vec![Action::Signal(Sig::KILL)]);
        assert!(p.limit_exceeded(Reason::LimitStdout, true, t0).is_empty());
        assert_eq!(p.reason(), Some(Reason::LimitStdout));
    }

    #[test]
    fn kill_command_and_signals() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        assert_eq!(p.command(&Command::Kill(Sig::TERM), t0), Ok(vec![Action::Signal(Sig::TERM)]));
        assert!(!p.stopping());
        assert_eq!(p.stop_signal_received(1, t0), vec![Action::Signal(Sig::TERM)]);
        assert_eq!(p.stop_signal_received(1, t0), Vec::new());
        assert_eq!(p.stop_signal_received(1, t0 + Duration::from_secs(1)), vec![Action::Signal(Sig::KILL)]);
        assert_eq!(p.reason(), Some(Reason::Signal));
        let mut k = policy(t0);
        assert_eq!(k.command(&Command::Kill(Sig::KILL), t0), Ok(vec![Action::Signal(Sig::KILL)]));
        assert_eq!(k.reason(), Some(Reason::Killed));
    }

    #[test]
    fn exit_status_table() {
        let plain = ExitRule::default();
        let code = |end, reason, grace_expired, rule| exit_code(end, reason, grace_expired, rule);
        assert_eq!(code(MainEnd::Exited(3), Some(Reason::Exited), false, plain), 3);
        assert_eq!(code(MainEnd::Signaled(15), Some(Reason::Signal), false, plain), 143);
        assert_eq!(code(MainEnd::Signaled(9), Some(Reason::LimitMemory), true, plain), 137);
        assert_eq!(code(MainEnd::NotStarted(libc::ENOENT), None, false, plain), 127);
        assert_eq!(code(MainEnd::NotStarted(libc::EACCES), None, false, plain), 126);
        assert_eq!(code(MainEnd::Failed, None, false, plain), 125);
        // A timeout: 124, the command's own with --preserve-status, 137 with --kill-status
        // only where the grace period ran out.
        let timeout = Some(Reason::Timeout);
        assert_eq!(code(MainEnd::Signaled(15), timeout, false, plain), 124);
        assert_eq!(code(MainEnd::Signaled(9), timeout, true, plain), 124);
        let kill = ExitRule { kill_status: true, ..plain };
        assert_eq!(code(MainEnd::Signaled(9), timeout, true, kill), 137);
        assert_eq!(code(MainEnd::Exited(0), timeout, true, kill), 137);
        assert_eq!(code(MainEnd::Signaled(15), timeout, false, kill), 124);
        let preserve = ExitRule { preserve_status: true, kill_status: true };
        assert_eq!(code(MainEnd::Signaled(15), timeout, true, preserve), 143);
    }
}
