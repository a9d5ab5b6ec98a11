//! The loop's side of control commands: each goes through the door (`control.rs`), is
//! decided by the policy, carried out, and answered with the box's [`Status`].

use super::EventLoop;
use crate::auth::Via;
use crate::command::{Command, Reply, Status, TimerStatus};
use crate::control::Control;
use crate::policy::{Reason, Refused};
use crate::tracker::Mode;
use crate::transport::socket::Input;
use mio::Token;
use serde_json::Value;
use std::time::Instant;

impl EventLoop {
    /// Answers what the control socket's clients sent, each on its own connection.
    pub(super) fn answer(&mut self, inputs: Vec<(Token, Input)>) {
        for (conn, input) in inputs {
            let reply = match input {
                Input::Line(line) => self.on_command(&line, Via::Socket),
                Input::TooLong => self.control.refuse(Control::too_long(Via::Socket)),
            };
            if let Some(socket) = self.socket.as_mut() {
                socket.reply(conn, &reply.to_line(), self.poll.registry());
            }
        }
    }

    /// One command from any transport: through the door, decided, carried out, answered.
    pub(super) fn on_command(&mut self, raw: &[u8], via: Via) -> Reply {
        let admitted = match self.control.admit(raw, via) {
            Ok(admitted) => admitted,
            Err(rejected) => return self.control.refuse(rejected),
        };
        let outcome = self.run_command(&admitted.command);
        self.control.answer(admitted, outcome)
    }

    /// An admitted command: the state after it, and the sample it took.
    fn run_command(&mut self, cmd: &Command) -> Result<(Status, Option<Value>), Refused> {
        if matches!(cmd, Command::Status) {
            self.look();
        }
        let actions = self.policy.command(cmd, Instant::now())?;
        if !matches!(cmd, Command::Status | Command::Sample) {
            crate::info!("command: {}", cmd.name());
        }
        let sample = self.apply(actions);
        Ok((self.status(), sample))
    }

    /// The box's state as `status` reports it.
    fn status(&self) -> Status {
        let timer = self.policy.timer();
        let elapsed = timer.elapsed(Instant::now());
        Status {
            box_id: self.box_id.clone(),
            state: self.policy.state_name(),
            pid: self.tracker.main_pid(),
            main_running: self.end.main_status.is_none(),
            processes: self.tracker.len(),
            pids: self.tracker.pids(),
            processes_started: self.tracker.processes_started(),
            processes_started_exact: self.tracker.processes_started_exact(),
            processes_peak: self.tracker.processes_peak(),
            track: match self.tracker.mode() {
                Mode::Ptrace => "ptrace",
                Mode::Subreaper => "subreaper",
            },
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            timer: TimerStatus {
                enabled: timer.enabled(),
                elapsed_seconds: elapsed.as_secs_f64(),
                timeout_seconds: timer.limit().map(|l| l.as_secs_f64()),
                remaining_seconds: timer.limit().map(|l| l.saturating_sub(elapsed).as_secs_f64()),
            },
            reason: self.policy.reason().map(Reason::as_str),
        }
    }
}
