//! The end of the box: what the end-of-job line and the summary need, gathered on the way
//! (the main exit, when the box began to end the job), and the loop's last steps once the
//! tree is gone: drain the outputs, count what was ended, write the summary.

use super::EventLoop;
use crate::emitter::End;
use crate::policy::{ExitRule, Reason};
use crate::relay::Output;
use crate::signals::{meaning, Meaning, Sig};
use crate::spawn::ExecReport;
use crate::tracker::{ExitStatus, Mode, Tracker};
use nix::sys::signalfd::SignalFd;
use std::io;
use std::time::{Duration, Instant};

/// How long proc_box waits, once the tree is gone, for its output pipes to drain. Only a
/// process outside the box that was handed them can keep them open that long.
const DRAIN: Duration = Duration::from_secs(2);

/// Live processes at a moment, and `processes_started` then.
type Census = (usize, u64);

/// What only the end needs.
pub(super) struct Ending {
    pub(super) report: ExecReport,
    pub(super) command_name: String,
    pub(super) exit_rule: ExitRule,
    /// `--format`: the end-of-job line as the user wrote it.
    pub(super) format: Option<crate::accounting::format::Format>,
    pub(super) argv: Vec<String>,
    pub(super) main_status: Option<ExitStatus>,
    pub(super) exec_error: Option<io::Error>,
    /// When the main process exited.
    pub(super) leftovers: Option<Census>,
    /// When the box began to end the job (a timeout, a stop, a limit), and how many were
    /// still alive when the grace period ran out.
    pub(super) stop_began: Option<Census>,
    pub(super) killed_after_grace: Option<usize>,
}

/// How the box ended.
#[derive(Debug)]
pub struct Outcome {
    pub main: Option<ExitStatus>,
    pub exec_error: Option<io::Error>,
    pub reason: Option<Reason>,
    /// SIGKILL followed the stop signal because the grace period ran out.
    pub grace_expired: bool,
    pub leftover_killed: u64,
    pub wall: Duration,
}

impl Outcome {
    /// The exit status, by the policy's table.
    pub fn exit_code(&self, rule: crate::policy::ExitRule) -> i32 {
        use crate::policy::MainEnd;
        let end = match (&self.exec_error, self.main) {
            (Some(e), _) => MainEnd::NotStarted(e.raw_os_error().unwrap_or(0)),
            (None, None) => MainEnd::Failed,
            (None, Some(ExitStatus::Exited(code))) => MainEnd::Exited(code),
            (None, Some(ExitStatus::Signaled(sig))) => MainEnd::Signaled(sig),
        };
        crate::policy::exit_code(end, self.reason, self.grace_expired, rule)
    }
}

impl EventLoop {
    pub(super) fn on_main_exit(&mut self, status: ExitStatus) {
        self.end.main_status = Some(status);
        self.end.exec_error = self.end.report.exec_error();
        if let Some(e) = &self.end.exec_error {
            crate::error!("cannot run '{}': {e}", self.end.command_name);
        }
        self.tracker.scan(self.poll.registry());
        let live = self.tracker.len();
        self.end.leftovers = Some((live, self.tracker.processes_started()));
        let how = match status {
            ExitStatus::Exited(c) => format!("exited with status {c}"),
            ExitStatus::Signaled(s) => {
                format!("was killed by {}", Sig::from_raw(s).map_or(s.to_string(), |s| s.to_string()))
            }
        };
        if live > 0 && self.policy.stopping() {
            crate::info!("main process {how}; {live} more process(es) of the tree to end");
        } else if live > 0 {
            let next = if self.policy.ends_leftovers() { "ending" } else { "waiting for" };
            crate::info!("main process {how}; {next} {live} leftover process(es)");
        } else {
            crate::debug!("main process {how}");
        }
        let actions = self.policy.main_exited(live > 0, Instant::now());
        self.apply(actions);
    }

    /// Before actions are carried out: what the end-of-job line reports, how many processes
    /// the box ended, and why.
    pub(super) fn note_stop(&mut self) {
        if self.end.stop_began.is_none() && self.policy.stopping() && self.end.main_status.is_none() {
            self.tracker.scan(self.poll.registry());
            self.end.stop_began = Some((self.tracker.len(), self.tracker.processes_started()));
        }
        if self.end.killed_after_grace.is_none() && self.policy.grace_expired() {
            self.end.killed_after_grace = Some(self.tracker.len());
        }
    }

    pub(super) fn finish(mut self) -> Outcome {
        if let Some(t) = &self.terminal {
            t.take_back();
        }
        let drain_until = Instant::now() + DRAIN;
        let registry = self.poll.registry();
        for relay in self.outputs.iter_mut().filter_map(Output::relay) {
            if !relay.finish(registry, drain_until) {
                crate::warn!("a process outside the box holds the job's output open; not waiting for it");
            }
        }
        let leftover_killed = match self.end.leftovers {
            Some((n, started)) if self.policy.ends_leftovers() => {
                n as u64 + (self.tracker.processes_started() - started)
            }
            _ => 0,
        };
        if let (Some((n, started)), Some(reason)) = (self.end.stop_began, self.policy.reason()) {
            let ended = n as u64 + (self.tracker.processes_started() - started);
            let killed = match self.end.killed_after_grace {
                Some(k) => format!("; {k} still running after the grace period got SIGKILL"),
                None => String::new(),
            };
            crate::info!("ended {ended} process(es) of the tree ({}){killed}", why_ended(reason));
        } else if leftover_killed > 0 {
            crate::info!("ended {leftover_killed} leftover process(es) after the main process exited");
        }
        let oom_kills = self.oom_kills();
        self.policy.at_end(oom_kills, Instant::now());
        let outcome = Outcome {
            main: self.end.main_status,
            exec_error: self.end.exec_error.take(),
            reason: self.policy.reason(),
            grace_expired: self.policy.grace_expired(),
            leftover_killed,
            wall: self.started.elapsed(),
        };
        self.tracker.process_events(); // the last forks, for an exact count
        let signals = &self.signals;
        let mut give_up = || stop_pending(signals);
        let enforcer = pids_enforcer(&self.tracker);
        let summary = self.emitter.finish(
            &mut self.tracker,
            End {
                argv: std::mem::take(&mut self.end.argv),
                exit_code: outcome.exit_code(self.end.exit_rule),
                main: outcome.main,
                reason: outcome.reason.map_or("exited", Reason::as_str),
                wall: outcome.wall,
                leftover_killed,
                stdout_bytes: self.outputs[0].bytes(),
                stderr_bytes: self.outputs[1].bytes(),
                limits: self.policy.limits().describe(enforcer, self.policy.stdout_limit()),
                cgroup: self.cgroup.as_ref().map(|c| c.report()),
            },
            &mut give_up,
        );
        crate::log::write_through_at_end();
        match &self.end.format {
            Some(f) => crate::log::emit_raw(&f.render(&serde_json::to_value(&summary).unwrap_or_default())),
            None => crate::info!("{}", summary.human_line()),
        }
        outcome
    }
}

/// What caps the number of processes: ptrace's birth stops, the fork events, or the tick.
pub(super) fn pids_enforcer(tracker: &Tracker) -> &'static str {
    match tracker.mode() {
        Mode::Ptrace => "ptrace",
        Mode::Subreaper if tracker.fork_events_fd().is_some() => "events",
        Mode::Subreaper => "monitor",
    }
}

/// Why the box ended the job, in the words of the end-of-job line.
fn why_ended(reason: Reason) -> &'static str {
    match reason {
        Reason::Timeout => "the wall-clock timeout expired",
        Reason::Stopped => "a stop command",
        Reason::Killed => "a kill command",
        Reason::Signal => "a stop signal to proc_box",
        Reason::LimitMemory => "the memory limit",
        Reason::LimitCpu => "the CPU limit",
        Reason::LimitPids => "the process limit",
        Reason::LimitStdout => "the stdout limit",
        Reason::Exited => "the main process exited",
    }
}

/// After the tree is gone, only a stop request (SIGINT, SIGTERM, SIGQUIT) matters: it ends any
/// wait for the broker (the summary is already in the spool).
fn stop_pending(signals: &SignalFd) -> bool {
    while let Ok(Some(info)) = signals.read_signal() {
        if meaning(info.ssi_signo as i32) == Meaning::Stop {
            return true;
        }
    }
    false
}
