//! What to do: the box's decisions, kept apart from the kernel.
//!
//! Policy never touches a process. It takes events (a command, a signal to proc_box, the main
//! process exiting, a measurement, the clock) and returns [`Action`]s that the event loop carries
//! out. That keeps every state machine here (the graceful stop, the timer, terminal job control,
//! the limits) testable without processes.

pub mod limits;
pub mod stop;
pub mod timer;

use crate::command::Command;
use crate::signals::{meaning, Meaning, Sig};
use limits::Limits;
use std::time::{Duration, Instant};
use stop::StopMachine;
pub use stop::{Phase, Reason};
use timer::Timer;

/// What happens to leftover descendants when the main process exits (`--on-main-exit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnMainExit {
    /// end every leftover process: the stop signal, then SIGKILL after --grace
    Kill,
    /// wait for the whole tree to exit by itself
    Wait,
}

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

/// What the loop carries out, in the order given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this signal to every process of the tree.
    Signal(Sig),
    /// Kill everything in the box's cgroup at once (`cgroup.kill`), whatever the tracker has
    /// met; comes before every tree-wide SIGKILL, and does nothing without a cgroup.
    KillCgroup,
    /// Emit a sample now.
    Sample,
    /// Emit samples at this interval, the next one an interval from now.
    SampleEvery(Duration),
    /// Give the terminal back to proc_box's own process group (the shell's job).
    TerminalToShell,
    /// Give the terminal to the job's process group.
    TerminalToJob,
    /// Stop proc_box itself (SIGSTOP), so that the shell sees a stopped job; SIGCONT (`fg`)
    /// comes back as a signal.
    StopSelf,
}

/// What the monitor tick measured, for the tree-wide limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// PSS of the whole tree.
    pub pss: u64,
    /// CPU of the whole tree; read only where a CPU limit is set.
    pub cpu: Option<Duration>,
    /// Live processes.
    pub live: usize,
    /// The cgroup's OOM kills so far; read only where the cgroup holds the memory ceiling.
    pub oom_kills: u64,
}

#[derive(Debug)]
pub struct Policy {
    stop: StopMachine,
    timer: Timer,
    suspended: bool,
    on_main_exit: OnMainExit,
    limits: Limits,
    stdout_limit: u64,
    /// proc_box runs in the foreground of a terminal (job control applies).
    terminal: bool,
    /// proc_box stopped itself for terminal job control and waits for SIGCONT.
    self_stopped: bool,
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
            limits: Limits::default(),
            stdout_limit: u64::MAX,
            terminal: false,
            self_stopped: false,
        }
    }

    /// The tree-wide limits, and `--stdoutlimit` (stop at it, kill at twice it).
    pub fn set_limits(&mut self, limits: Limits, stdout_limit: u64) {
        self.limits = limits;
        self.stdout_limit = stdout_limit;
    }

    /// proc_box holds the terminal's foreground: the job stopping itself suspends the box.
    pub fn set_terminal(&mut self, terminal: bool) {
        self.terminal = terminal;
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stdout_limit(&self) -> u64 {
        self.stdout_limit
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
            Command::Kill(Sig::KILL) => self.stop.kill_now(Reason::Killed).map_or_else(Vec::new, signal),
            Command::Kill(sig) => vec![Action::Signal(sig)],
            Command::TimerReset => self.timer_op(now, Timer::reset),
            Command::TimerStart => self.timer_op(now, Timer::start),
            Command::TimerStop => self.timer_op(now, Timer::stop),
            Command::TimerResume => self.timer_op(now, Timer::resume),
            Command::Sample => vec![Action::Sample],
            Command::ChangeSampleRate(d) => vec![Action::SampleEvery(d)],
            Command::Status => Vec::new(),
        })
    }

    /// A signal sent to proc_box, by `sender` (a pid; 0 for the kernel, `u32::MAX` unknown),
    /// by [`meaning`]'s table. SIGCHLD asks for nothing here: it is the tracker's.
    pub fn on_signal(&mut self, signo: i32, sender: u32, now: Instant) -> Vec<Action> {
        match meaning(signo) {
            Meaning::Child => Vec::new(),
            Meaning::Stop => {
                let was_stopping = self.stopping();
                let name = Sig::from_raw(signo).map_or(signo.to_string(), |s| s.to_string());
                let actions = self.stop_signal_received(sender, now);
                if actions.is_empty() {
                    crate::debug!("received {name} again at once from the same sender: one request");
                } else {
                    let what = if was_stopping { "killing" } else { "stopping" };
                    crate::info!("received {name}; {what} the whole tree");
                }
                actions
            }
            Meaning::Sample => vec![Action::Sample],
            Meaning::Suspend => self.suspend_self(now),
            Meaning::Continue if self.self_stopped => {
                self.self_stopped = false;
                let mut actions = vec![Action::TerminalToJob];
                actions.extend(self.resume(now));
                actions
            }
            // `kill -CONT proc_box` while the box is suspended: a resume, timer included.
            Meaning::Continue if self.suspended => self.resume(now),
            Meaning::Continue | Meaning::Forward => match Sig::from_raw(signo) {
                Some(sig) => {
                    crate::debug!("forwarding {sig} to the whole tree");
                    vec![Action::Signal(sig)]
                }
                None => Vec::new(),
            },
        }
    }

    /// The main process stopped itself (SIGTSTP at the terminal, or SIGSTOP): at a terminal,
    /// the whole box is suspended, as a shell's job would be; elsewhere it is the job's own affair.
    pub fn main_stopped(&mut self, sig: i32, now: Instant) -> Vec<Action> {
        if !self.terminal {
            return Vec::new();
        }
        crate::debug!("the job stopped itself with {sig}");
        self.suspend_self(now)
    }

    /// Ctrl-Z, or SIGTSTP sent to proc_box: hold the whole tree, give the terminal back to the
    /// shell, and stop proc_box itself so the shell sees a stopped job.
    fn suspend_self(&mut self, now: Instant) -> Vec<Action> {
        if self.stopping() || self.self_stopped {
            return Vec::new();
        }
        self.self_stopped = true;
        let mut actions = self.terminal_stop(now);
        actions.extend([Action::TerminalToShell, Action::StopSelf]);
        actions
    }

    fn resume(&mut self, now: Instant) -> Vec<Action> {
        self.command(&Command::Resume, now).unwrap_or_default()
    }

    /// The monitor tick: memory (by PSS, and the cgroup's OOM killer acting on the hard
    /// ceiling between two ticks), CPU and the process count, then stdout (a file output has
    /// no relay thread to wake the loop).
    pub fn on_monitor(&mut self, r: Reading, stdout: Option<u64>, now: Instant) -> Vec<Action> {
        let l = &self.limits;
        let passed = [l.memory(r.pss), l.oom(r.oom_kills), r.cpu.and_then(|c| l.cpu(c)), l.pids(r.live)];
        let mut actions = self.on_stdout(stdout, now);
        for (reason, hard) in passed.into_iter().flatten() {
            actions.extend(self.limit_exceeded(reason, hard, now));
        }
        actions
    }

    /// The job's stdout so far: a graceful stop at the limit, SIGKILL at twice it.
    pub fn on_stdout(&mut self, bytes: Option<u64>, now: Instant) -> Vec<Action> {
        match bytes {
            Some(b) if b >= self.stdout_limit => {
                let hard = b >= self.stdout_limit.saturating_mul(2);
                self.limit_exceeded(Reason::LimitStdout, hard, now)
            }
            _ => Vec::new(),
        }
    }

    /// A fork took the tree past `--pids-limit` (seen at its fork event or by a scan).
    pub fn on_pids_passed(&mut self, now: Instant) -> Vec<Action> {
        self.limit_exceeded(Reason::LimitPids, false, now)
    }

    /// The tree is gone: a main process ended by the cgroup's OOM killer left no tick to say
    /// why, so the reason is taken from the OOM count now.
    pub fn at_end(&mut self, oom_kills: u64, now: Instant) {
        if let Some((reason, hard)) = self.limits.oom(oom_kills) {
            self.limit_exceeded(reason, hard, now);
        }
    }

    /// Whether processes left when the main one exited are ended (rather than waited for).
    pub fn ends_leftovers(&self) -> bool {
        self.on_main_exit == OnMainExit::Kill || self.stopping()
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
            return self.stop.kill_now(reason).map_or_else(Vec::new, signal);
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
        let mut actions = signal(sig);
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
            actions.extend(signal(sig));
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

/// A signal to the whole tree; a SIGKILL goes to the whole cgroup first.
fn signal(sig: Sig) -> Vec<Action> {
    if sig == Sig::KILL {
        vec![Action::KillCgroup, Action::Signal(sig)]
    } else {
        vec![Action::Signal(sig)]
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
        assert_eq!(p.on_time(t0 + 110 * S), vec![Action::KillCgroup, Action::Signal(Sig::KILL)]);
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
        assert_eq!(
            p.limit_exceeded(Reason::LimitStdout, true, t0),
            vec![Action::KillCgroup, Action::Signal(Sig::KILL)]
        );
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
        assert_eq!(
            p.stop_signal_received(1, t0 + Duration::from_secs(1)),
            vec![Action::KillCgroup, Action::Signal(Sig::KILL)]
        );
        assert_eq!(p.reason(), Some(Reason::Signal));
        let mut k = policy(t0);
        assert_eq!(
            k.command(&Command::Kill(Sig::KILL), t0),
            Ok(vec![Action::KillCgroup, Action::Signal(Sig::KILL)])
        );
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

    const KILL: [Action; 2] = [Action::KillCgroup, Action::Signal(Sig::KILL)];

    #[test]
    fn terminal_job_control() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        p.set_terminal(true);
        // Ctrl-Z: the tree held, the terminal handed back, proc_box stopped; once only.
        let stop = [Action::Signal(Sig::STOP), Action::TerminalToShell, Action::StopSelf];
        assert_eq!(p.on_signal(libc::SIGTSTP, 0, t0), stop);
        assert_eq!(p.state_name(), "suspended");
        assert!(p.on_signal(libc::SIGTTIN, 0, t0).is_empty());
        assert_eq!(p.next_deadline(t0 + 100 * S), None, "the timer is paused");
        // fg: the terminal to the job, the tree resumed.
        assert_eq!(p.on_signal(libc::SIGCONT, 0, t0 + S), [Action::TerminalToJob, Action::Signal(Sig::CONT)]);
        assert_eq!(p.state_name(), "running");
        // A SIGCONT with nothing suspended is forwarded, as is any signal without a meaning.
        assert_eq!(p.on_signal(libc::SIGCONT, 0, t0), [Action::Signal(Sig::CONT)]);
        assert_eq!(
            p.on_signal(libc::SIGUSR1, 0, t0),
            [Action::Signal(Sig::from_raw(libc::SIGUSR1).unwrap())]
        );
        assert_eq!(p.on_signal(libc::SIGHUP, 0, t0), [Action::Sample]);
        assert!(p.on_signal(libc::SIGCHLD, 0, t0).is_empty());
        // The job's own Ctrl-Z suspends the box as well.
        assert_eq!(p.main_stopped(libc::SIGTSTP, t0), stop);
        assert_eq!(p.on_signal(libc::SIGCONT, 0, t0).first(), Some(&Action::TerminalToJob));
        // A suspend command, then `kill -CONT proc_box`: a resume, with no terminal hand-over.
        p.command(&Command::Suspend, t0).unwrap();
        assert_eq!(p.on_signal(libc::SIGCONT, 0, t0), [Action::Signal(Sig::CONT)]);
        // No suspend once stopping.
        p.on_signal(libc::SIGTERM, 7, t0);
        assert!(p.on_signal(libc::SIGTSTP, 0, t0).is_empty());
        assert!(p.main_stopped(libc::SIGTSTP, t0).is_empty());
    }

    #[test]
    fn without_a_terminal_the_job_stopping_itself_is_its_own_affair() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        assert!(p.main_stopped(libc::SIGSTOP, t0).is_empty());
        assert_eq!(p.state_name(), "running");
    }

    #[test]
    fn sampling_commands() {
        let t0 = Instant::now();
        let mut p = policy(t0);
        assert_eq!(p.command(&Command::Sample, t0), Ok(vec![Action::Sample]));
        let d = 5 * S;
        assert_eq!(p.command(&Command::ChangeSampleRate(d), t0), Ok(vec![Action::SampleEvery(d)]));
        assert_eq!(p.command(&Command::Status, t0), Ok(vec![]));
    }

    fn limited(t0: Instant, limits: Limits) -> Policy {
        let mut p = policy(t0);
        p.set_limits(limits, 1000);
        p
    }

    #[test]
    fn memory_limit_stop_then_kill_above_the_margin() {
        let t0 = Instant::now();
        let mib = 1 << 20;
        let mut p = limited(t0, Limits { memory: Some(100 * mib), ..Limits::default() });
        let at = |pss| Reading { pss, ..Reading::default() };
        assert!(p.on_monitor(at(99 * mib), None, t0).is_empty());
        assert_eq!(p.on_monitor(at(100 * mib), None, t0), [Action::Signal(Sig::TERM)]);
        assert!(p.on_monitor(at(110 * mib), None, t0).is_empty(), "already stopping");
        assert_eq!(p.on_monitor(at(116 * mib), None, t0), KILL);
        assert_eq!(p.reason(), Some(Reason::LimitMemory));
    }

    #[test]
    fn the_cgroup_oom_killer_is_the_memory_limit_once_written() {
        let t0 = Instant::now();
        let cg = Limits { memory: Some(1 << 30), memory_in_cgroup: true, ..Limits::default() };
        let mut p = limited(t0, cg.clone());
        assert!(p.on_monitor(Reading::default(), None, t0).is_empty());
        assert_eq!(p.on_monitor(Reading { oom_kills: 1, ..Reading::default() }, None, t0), KILL);
        // At the end, with no tick in between.
        let mut end = limited(t0, cg);
        end.at_end(1, t0);
        assert_eq!(end.reason(), Some(Reason::LimitMemory));
        // Without the cgroup holding the ceiling, an OOM kill is not the box's limit.
        let mut plain = limited(t0, Limits { memory: Some(1 << 30), ..Limits::default() });
        plain.at_end(1, t0);
        assert_eq!(plain.reason(), None);
    }

    #[test]
    fn cpu_pids_and_stdout_limits() {
        let t0 = Instant::now();
        let mut p = limited(t0, Limits { cpu: Some(10 * S), ..Limits::default() });
        let cpu = |c| Reading { cpu: Some(c), ..Reading::default() };
        assert!(p.on_monitor(cpu(9 * S), None, t0).is_empty());
        assert_eq!(p.on_monitor(cpu(10 * S), None, t0), [Action::Signal(Sig::TERM)]);
        assert_eq!(p.reason(), Some(Reason::LimitCpu));

        let mut p = limited(t0, Limits { pids: Some(3), ..Limits::default() });
        assert!(p.on_monitor(Reading { live: 3, ..Reading::default() }, None, t0).is_empty());
        assert_eq!(
            p.on_monitor(Reading { live: 4, ..Reading::default() }, None, t0),
            [Action::Signal(Sig::TERM)]
        );
        assert_eq!(p.reason(), Some(Reason::LimitPids));
        let mut p = limited(t0, Limits::default());
        assert_eq!(p.on_pids_passed(t0), [Action::Signal(Sig::TERM)]);

        // --stdoutlimit 1000: stop at it, kill at twice it; uncounted output decides nothing.
        let mut p = limited(t0, Limits::default());
        assert!(p.on_stdout(None, t0).is_empty());
        assert!(p.on_stdout(Some(999), t0).is_empty());
        assert_eq!(p.on_monitor(Reading::default(), Some(1000), t0), [Action::Signal(Sig::TERM)]);
        assert_eq!(p.on_stdout(Some(2000), t0), KILL);
        assert_eq!(p.reason(), Some(Reason::LimitStdout));
    }

    #[test]
    fn leftovers_are_ended_in_kill_mode_or_while_stopping() {
        let t0 = Instant::now();
        assert!(policy(t0).ends_leftovers());
        let mut w = Policy::new(10 * S, Sig::TERM, Duration::ZERO, OnMainExit::Wait, t0);
        assert!(!w.ends_leftovers());
        w.command(&Command::Stop, t0).unwrap();
        assert!(w.ends_leftovers());
    }
}
