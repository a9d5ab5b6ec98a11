//! The one loop that owns the tree. It waits, turns each wake-up into a typed event (a
//! [`Source`], a signal and its sender, a command, a due tick), asks the policy, and carries
//! out the [`Action`]s it returns. Decisions are the policy's; this file only waits and acts.
//!
//! Sources (their tokens are `tokens.rs`'s): a signalfd (SIGCHLD and every signal proc_box acts
//! on), one pidfd per process, the control socket, the fault pipe, the fork events, the job's
//! output pipes, and a `Waker` for transport threads and relays. The [`Schedule`] and the
//! policy's deadlines become the poll timeout; nothing sleeps.

mod commands;
mod end;
mod setup;
mod wake;

use crate::auth::Via;
use crate::cgroup::Cgroup;
use crate::control::Control;
use crate::emitter::{Emitter, Live};
use crate::policy::{Action, Policy, Reading};
use crate::relay::Output;
use crate::schedule::Schedule;
use crate::signals::{meaning, Meaning, Sig};
use crate::sys::pidfd;
use crate::terminal::Terminal;
use crate::tokens::{self, Source};
use crate::tracker::{Event, Mode, Tracker};
use crate::transport::socket::ControlSocket;
use crate::transport::{Inbox, Request};
use end::Ending;
pub use end::Outcome;
use mio::{Events, Poll, Token};
use nix::sys::signalfd::SignalFd;
use serde_json::Value;
pub use setup::{EmitterParts, Parts};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct EventLoop {
    poll: Poll,
    signals: SignalFd,
    /// The read end of the fault handler's pipe (see `fault.rs`).
    sent_faults: OwnedFd,
    tracker: Tracker,
    policy: Policy,
    schedule: Schedule,
    control: Control,
    socket: Option<ControlSocket>,
    terminal: Option<Terminal>,
    inbox: Inbox,
    requests: Receiver<Request>,
    emitter: Emitter,
    outputs: [Output; 2],
    cgroup: Option<Arc<Cgroup>>,
    box_id: String,
    started: Instant,
    end: Ending,
}

impl EventLoop {
    /// The handle through which transport threads (AMQP) send commands to this loop.
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Samples and the summary also go to the broker, every `sint`.
    pub fn set_amqp(&mut self, amqp: crate::transport::amqp::Amqp, msgtimeout: Option<Duration>) {
        self.emitter.set_amqp(amqp, msgtimeout);
        self.schedule.start_sampling(Instant::now());
    }

    pub fn run(mut self) -> Outcome {
        let mut events = Events::with_capacity(256);
        while !self.tracker.finished() {
            self.tracker.set_birth_signal(self.policy.birth_signal());
            let now = Instant::now();
            // A client with input left over from the last turn's budget: no waiting.
            let socket_has_more = self.socket.as_ref().is_some_and(ControlSocket::has_more);
            let wake = if socket_has_more { now } else { self.schedule.next(self.policy.next_deadline(now)) };
            match self.poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::error!("event loop failed: {e}; killing the whole tree");
                    self.tracker.signal_tree(Sig::KILL, self.poll.registry());
                    break;
                }
            }
            for ev in events.iter() {
                self.dispatch(ev.token(), ev.is_readable());
            }
            if socket_has_more {
                if let Some(inputs) = self.socket.as_mut().map(|s| s.serve_more(self.poll.registry())) {
                    self.answer(inputs);
                }
            }
            self.on_clock(Instant::now());
        }
        self.finish()
    }

    fn dispatch(&mut self, token: Token, readable: bool) {
        match tokens::source(token) {
            Source::Signals => {
                // Read first, then reap once: the signalfd is edge-triggered and empty after
                // the read, so a SIGCHLD raised during the reap wakes the loop again, and one
                // raised before it is what the reap serves.
                let signals = wake::signals(&self.signals, self.tracker.self_pid());
                if signals.iter().any(|&(signo, _)| meaning(signo) == Meaning::Child) {
                    self.on_sigchld();
                }
                for (signo, sender) in signals {
                    if meaning(signo) != Meaning::Child {
                        self.on_signal(signo, sender);
                    }
                }
            }
            Source::SentFaults => {
                for (signo, sender) in wake::sent_faults(&self.sent_faults) {
                    self.on_signal(signo, sender);
                }
            }
            Source::ForkEvents => {
                self.tracker.process_events();
                self.check_pids();
            }
            Source::Waker => {
                let actions = self.policy.on_stdout(self.outputs[0].bytes(), Instant::now());
                self.apply(actions);
                while let Ok(req) = self.requests.try_recv() {
                    let reply = self.on_command(&req.raw, Via::Broker);
                    (req.respond)(reply);
                }
            }
            // Data to relay; a bare hang-up (the job wrote nothing) is left to `finish`.
            Source::Output(i) if readable => {
                if let Some(r) = self.outputs[i].relay() {
                    r.start(self.poll.registry());
                }
            }
            Source::Output(_) | Source::Unknown => {}
            Source::Listener | Source::Conn(_) => {
                if let Some(socket) = self.socket.as_mut() {
                    let inputs = socket.ready(token, self.poll.registry());
                    self.answer(inputs);
                }
            }
            Source::Pidfd => {
                if let Some(pid) = self.tracker.pidfd_ready(token, self.poll.registry()) {
                    self.emitter.accounting.departed(pid, &mut self.tracker);
                }
            }
        }
    }

    /// The policy's deadlines, then the schedule's ticks.
    fn on_clock(&mut self, now: Instant) {
        let actions = self.policy.on_time(now);
        self.apply(actions);
        let due = self.schedule.due(now);
        if due.scan {
            if let Some(socket) = self.socket.as_mut() {
                socket.sweep(self.poll.registry(), now);
            }
            self.tracker.scan(self.poll.registry());
        }
        if due.monitor {
            let pss = self.emitter.accounting.monitor(&mut self.tracker);
            let limits = self.policy.limits();
            let cpu = limits.cpu.map(|_| self.emitter.accounting.cpu_now(&self.tracker));
            let reading = Reading { pss, cpu, live: self.tracker.len(), oom_kills: self.oom_kills() };
            let actions = self.policy.on_monitor(reading, self.outputs[0].bytes(), Instant::now());
            self.apply(actions);
        }
        self.check_pids();
        if due.sample {
            self.sample();
        }
    }

    /// The cgroup's OOM kills, read only where the cgroup holds the memory ceiling.
    fn oom_kills(&self) -> u64 {
        match &self.cgroup {
            Some(cg) if self.policy.limits().memory_in_cgroup => cg.oom_kills(),
            _ => 0,
        }
    }

    fn check_pids(&mut self) {
        if self.tracker.take_over_limit() {
            let actions = self.policy.on_pids_passed(Instant::now());
            self.apply(actions);
        }
    }

    fn on_signal(&mut self, signo: i32, sender: u32) {
        if meaning(signo) == Meaning::Child {
            return self.on_sigchld();
        }
        let actions = self.policy.on_signal(signo, sender, Instant::now());
        self.apply(actions);
    }

    fn on_sigchld(&mut self) {
        let events = self.tracker.reap(self.poll.registry());
        if self.tracker.mode() == Mode::Subreaper {
            // Orphans were just reparented to us, or a member forked: look now, not next tick.
            self.tracker.scan(self.poll.registry());
        }
        for ev in events {
            match ev {
                Event::MainExited(status) => self.on_main_exit(status),
                Event::MainStopped(sig) => {
                    let actions = self.policy.main_stopped(sig, Instant::now());
                    self.apply(actions);
                }
                Event::AutoReaped(r) => self.emitter.accounting.auto_reaped(&r),
                Event::Left(pid) => self.emitter.accounting.departed(pid, &mut self.tracker),
            }
        }
    }

    /// Carries out the policy's actions, in order; returns the sample one of them took.
    fn apply(&mut self, actions: Vec<Action>) -> Option<Value> {
        self.note_stop();
        let mut sample = None;
        for action in actions {
            match action {
                Action::Signal(sig) => {
                    self.tracker.set_birth_signal(self.policy.birth_signal());
                    self.tracker.signal_tree(sig, self.poll.registry());
                }
                Action::KillCgroup => {
                    if let Some(cg) = &self.cgroup {
                        cg.kill();
                    }
                }
                Action::Sample => sample = Some(self.sample()),
                Action::SampleEvery(every) => self.schedule.set_sample_interval(every, Instant::now()),
                Action::TerminalToShell => self.terminal.iter().for_each(Terminal::take_back),
                Action::TerminalToJob => self.terminal.iter().for_each(Terminal::give_to_job),
                Action::StopSelf => {
                    crate::info!("job suspended with the whole tree; 'fg' or SIGCONT resumes it");
                    // Said before proc_box stops, not after `fg`: the log's writer thread stops
                    // with it. Bounded: a stalled stderr must not keep the box from stopping.
                    crate::log::sync(Duration::from_millis(200));
                    if let Err(e) = pidfd::signal_self(Sig::STOP) {
                        crate::warn!("cannot stop proc_box itself: {e}");
                    }
                }
            }
        }
        sample
    }

    /// A fork raises no signal: in subreaper mode a command or sample that comes between two
    /// ticks would miss the newest children without a look of its own.
    fn look(&mut self) {
        if self.tracker.mode() == Mode::Subreaper {
            self.tracker.scan(self.poll.registry());
        }
    }

    /// Emits a sample now; returns it.
    fn sample(&mut self) -> Value {
        self.look();
        let live = Live {
            state: self.policy.state_name(),
            elapsed: self.started.elapsed(),
            timer_elapsed: self.policy.timer().elapsed(Instant::now()),
            stdout_bytes: self.outputs[0].bytes(),
            stderr_bytes: self.outputs[1].bytes(),
        };
        self.emitter.sample(&mut self.tracker, live)
    }
}
