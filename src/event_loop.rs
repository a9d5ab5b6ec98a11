//! The one loop that owns the tree.
//!
//! mio sources: a signalfd (SIGCHLD and every signal proc_box acts on), one pidfd per process,
//! the control socket, and a `Waker` for transport threads. Deadlines (grace, wall-clock
//! timeout, the children-list tick) become the poll timeout; nothing sleeps.

use crate::accounting::{Accounting, OwnIo};
use crate::auth::Via;
use crate::command::{Command, Reply, Status, TimerStatus};
use crate::control::Control;
use crate::emitter::{Emitter, End, Live};
use crate::policy::{Action, Policy, Reason, Refused};
use crate::relay::{Output, Plan};
use crate::signals::{meaning, Meaning, Sig};
use crate::spawn::ExecReport;
use crate::sys::pidfd;
use crate::terminal::Terminal;
use crate::tokens::{Source, FORK_EVENTS, OUTPUTS, SENT_FAULTS, SIGNALS, WAKER};
use crate::tracker::{Event, ExitStatus, Mode, Tracker};
use crate::transport::socket::{ControlSocket, Input};
use crate::transport::{Inbox, Request};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::signalfd::SignalFd;
use serde_json::Value;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the children lists are walked when no event asks for it. In subreaper mode this
/// bounds how long a new process can go unseen; in ptrace mode it is only the backstop for
/// `clone(CLONE_UNTRACED)`.
const TICK_SUBREAPER: Duration = Duration::from_millis(100);
const TICK_PTRACE: Duration = Duration::from_secs(1);

/// Everything the loop starts with.
pub struct Parts {
    pub signals: SignalFd,
    /// The read end of the fault handler's pipe (see `fault.rs`).
    pub sent_faults: std::os::fd::OwnedFd,
    pub main: crate::spawn::Spawned,
    pub policy: Policy,
    pub socket: Option<ControlSocket>,
    pub terminal: Option<Terminal>,
    pub box_id: String,
    pub command_name: String,
    pub kill_leftovers: bool,
    pub emitter: EmitterParts,
    /// How the job's stdout and stderr are counted.
    pub outputs: [Plan; 2],
    pub stdout_limit: u64,
    pub exit_rule: crate::policy::ExitRule,
    /// `--format`: the end-of-job line as the user wrote it.
    pub format: Option<crate::accounting::format::Format>,
    pub argv: Vec<String>,
    /// Every command must be signed with this key (`--control-token`).
    pub guard: Option<crate::auth::Guard>,
    pub limits: crate::policy::limits::Limits,
    /// The box's cgroup, where one was made.
    pub cgroup: Option<Arc<crate::cgroup::Cgroup>>,
    /// Fork events, subscribed to before the job started (subreaper mode).
    pub connector: Option<crate::tracker::connector::Connector>,
}

/// What the loop needs to build its emitter once the tracking mode is known.
pub struct EmitterParts {
    pub identity: crate::accounting::report::Identity,
    pub stats: Option<crate::transport::sinks::StatsFile>,
    pub summary_file: Option<crate::transport::sinks::SummaryFile>,
    pub sint: Duration,
    pub monitor: Duration,
    pub own_io: OwnIo,
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

pub struct EventLoop {
    poll: Poll,
    signals: SignalFd,
    sent_faults: std::os::fd::OwnedFd,
    tracker: Tracker,
    policy: Policy,
    socket: Option<ControlSocket>,
    terminal: Option<Terminal>,
    report: ExecReport,
    inbox: Inbox,
    requests: Receiver<Request>,
    box_id: String,
    command_name: String,
    kill_leftovers: bool,
    started: Instant,
    tick: Duration,
    next_tick: Instant,
    main_status: Option<ExitStatus>,
    exec_error: Option<io::Error>,
    /// proc_box stopped itself for terminal job control and waits for SIGCONT.
    self_stopped: bool,
    /// Live processes when the main one exited, and `processes_started` at that moment.
    leftovers: Option<(usize, u64)>,
    /// The same when the box began to end the job (a timeout, a stop, a limit), and how many
    /// were still alive when the grace period ran out: for the end-of-job line.
    stop_began: Option<(usize, u64)>,
    killed_after_grace: Option<usize>,
    emitter: Emitter,
    sint: Duration,
    next_sample: Option<Instant>,
    monitor: Duration,
    next_monitor: Instant,
    outputs: [Output; 2],
    stdout_limit: u64,
    exit_rule: crate::policy::ExitRule,
    format: Option<crate::accounting::format::Format>,
    argv: Vec<String>,
    control: Control,
    limits: crate::policy::limits::Limits,
    cgroup: Option<Arc<crate::cgroup::Cgroup>>,
}

/// How long proc_box waits, once the tree is gone, for its output pipes to drain. Only a
/// process outside the box that was handed them can keep them open that long.
const DRAIN: Duration = Duration::from_secs(2);

impl EventLoop {
    pub fn new(parts: Parts) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let registry = poll.registry();
        registry.register(&mut SourceFd(&parts.signals.as_raw_fd()), SIGNALS, Interest::READABLE)?;
        registry.register(&mut SourceFd(&parts.sent_faults.as_raw_fd()), SENT_FAULTS, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(registry, WAKER)?);
        let (tx, requests) = channel();
        let mut socket = parts.socket;
        if let Some(s) = socket.as_mut() {
            s.register(registry)?;
        }
        let mode = parts.main.mode;
        let mut tracker = Tracker::new(mode, parts.main.pidfd, registry);
        tracker.set_pids_limit(parts.limits.pids);
        tracker.set_cgroup(parts.cgroup.clone());
        if let Some(c) = parts.connector {
            if mode == Mode::Subreaper {
                tracker.set_connector(c);
            }
        }
        if let Some(fd) = tracker.fork_events_fd() {
            registry.register(&mut SourceFd(&fd), FORK_EVENTS, Interest::READABLE)?;
        }
        let tick = if mode == Mode::Ptrace { TICK_PTRACE } else { TICK_SUBREAPER };
        let mut terminal = parts.terminal;
        if let Some(t) = terminal.as_mut() {
            t.set_job(tracker.main_pid());
        }
        let now = Instant::now();
        let ep = parts.emitter;
        // A memory limit is only as good as how often memory is read.
        let monitor = if parts.limits.memory.is_some() {
            ep.monitor.min(crate::policy::limits::MEMORY_TICK)
        } else {
            ep.monitor
        };
        let limits_text = parts.limits.describe(pids_enforcer(&tracker), parts.stdout_limit);
        crate::debug!("limits: {limits_text}");
        let mut accounting = Accounting::new(mode, now, ep.own_io.clone());
        accounting.set_cgroup(parts.cgroup.clone());
        let emitter = Emitter::new(accounting, ep.identity, ep.stats, ep.summary_file);
        let limit = parts.stdout_limit;
        let [out, err] = parts.outputs;
        let outputs = [
            Output::start(
                out,
                "stdout",
                &waker,
                vec![limit, limit.saturating_mul(2)],
                Some(limit.saturating_mul(2)),
                &ep.own_io,
            )?,
            Output::start(err, "stderr", &waker, Vec::new(), None, &ep.own_io)?,
        ];
        for (output, token) in outputs.iter().zip(OUTPUTS) {
            if let Output::Relay(r) = output {
                r.register(registry, token)?;
            }
        }
        Ok(EventLoop {
            next_sample: emitter.has_sink().then_some(now + ep.sint),
            emitter,
            sint: ep.sint,
            monitor,
            next_monitor: now + monitor,
            outputs,
            stdout_limit: limit,
            exit_rule: parts.exit_rule,
            format: parts.format,
            argv: parts.argv,
            control: Control::new(parts.guard),
            limits: parts.limits,
            cgroup: parts.cgroup,
            signals: parts.signals,
            sent_faults: parts.sent_faults,
            tracker,
            policy: parts.policy,
            socket,
            terminal,
            report: parts.main.report,
            inbox: Inbox::new(tx, waker),
            requests,
            box_id: parts.box_id,
            command_name: parts.command_name,
            kill_leftovers: parts.kill_leftovers,
            started: now,
            tick,
            next_tick: now + tick,
            main_status: None,
            exec_error: None,
            self_stopped: false,
            leftovers: None,
            stop_began: None,
            killed_after_grace: None,
            poll,
        })
    }

    /// The handle through which transport threads (AMQP) send commands to this loop.
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// Samples and the summary also go to the broker, every `sint`.
    pub fn set_amqp(&mut self, amqp: crate::transport::amqp::Amqp, msgtimeout: Option<Duration>) {
        self.emitter.set_amqp(amqp, msgtimeout);
        if self.next_sample.is_none() {
            self.next_sample = Some(Instant::now() + self.sint);
        }
    }

    pub fn run(mut self) -> Outcome {
        let mut events = Events::with_capacity(256);
        while !self.tracker.finished() {
            self.tracker.set_birth_signal(self.policy.birth_signal());
            let now = Instant::now();
            let mut wake = [self.policy.next_deadline(now), self.next_sample, Some(self.next_monitor)]
                .into_iter()
                .flatten()
                .fold(self.next_tick, Instant::min);
            let socket_has_more = self.socket.as_ref().is_some_and(ControlSocket::has_more);
            if socket_has_more {
                wake = now; // a client has input left over from the last turn's budget
            }
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
            let now = Instant::now();
            let actions = self.policy.on_time(now);
            self.apply(actions);
            if now >= self.next_tick {
                if let Some(socket) = self.socket.as_mut() {
                    socket.sweep(self.poll.registry(), now);
                }
                self.tracker.scan(self.poll.registry());
                self.next_tick = now + self.tick;
            }
            if now >= self.next_monitor {
                let pss = self.emitter.accounting.monitor(&self.tracker);
                self.check_limits(); // a file output has no thread to wake us
                self.check_tree_limits(pss);
                self.next_monitor = now + self.monitor;
            }
            if self.tracker.take_over_limit() {
                let actions = self.policy.limit_exceeded(Reason::LimitPids, false, Instant::now());
                self.apply(actions);
            }
            if self.next_sample.is_some_and(|t| now >= t) {
                self.sample();
                self.next_sample = Some(now + self.sint);
            }
        }
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
        let leftover_killed = match self.leftovers {
            Some((n, started)) if self.kill_leftovers || self.policy.stopping() => {
                n as u64 + (self.tracker.processes_started() - started)
            }
            _ => 0,
        };
        if let (Some((n, started)), Some(reason)) = (self.stop_began, self.policy.reason()) {
            let ended = n as u64 + (self.tracker.processes_started() - started);
            let killed = match self.killed_after_grace {
                Some(k) => format!("; {k} still running after the grace period got SIGKILL"),
                None => String::new(),
            };
            crate::info!("ended {ended} process(es) of the tree ({}){killed}", why_ended(reason));
        } else if leftover_killed > 0 {
            crate::info!("ended {leftover_killed} leftover process(es) after the main process exited");
        }
        // A main process ended by the cgroup's OOM killer left no tick to say why.
        if self.limits.memory_in_cgroup && self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0) {
            self.policy.limit_exceeded(Reason::LimitMemory, true, Instant::now());
        }
        let outcome = Outcome {
            main: self.main_status,
            exec_error: self.exec_error.take(),
            reason: self.policy.reason(),
            grace_expired: self.policy.grace_expired(),
            leftover_killed,
            wall: self.started.elapsed(),
        };
        self.tracker.process_events(); // the last forks, for an exact count
        let signals = &self.signals;
        let mut give_up = || stop_pending(signals);
        let summary = self.emitter.finish(
            &self.tracker,
            End {
                argv: std::mem::take(&mut self.argv),
                exit_code: outcome.exit_code(self.exit_rule),
                main: outcome.main,
                reason: outcome.reason.map_or("exited", Reason::as_str),
                wall: outcome.wall,
                leftover_killed,
                stdout_bytes: self.relay_bytes(0),
                stderr_bytes: self.relay_bytes(1),
                limits: self.limits.describe(pids_enforcer(&self.tracker), self.stdout_limit),
                cgroup: self.cgroup.as_ref().map(|c| c.report()),
            },
            &mut give_up,
        );
        match &self.format {
            Some(f) => crate::log::emit_raw(&f.render(&serde_json::to_value(&summary).unwrap_or_default())),
            None => crate::info!("{}", summary.human_line()),
        }
        outcome
    }

    fn relay_bytes(&self, i: usize) -> Option<u64> {
        self.outputs[i].bytes()
    }

    /// A fork raises no signal: in subreaper mode a command or sample that comes between two
    /// ticks would miss the newest children without a look of its own.
    fn look(&mut self) {
        if self.tracker.mode() == Mode::Subreaper {
            self.tracker.scan(self.poll.registry());
        }
    }

    /// Emits a sample now; returns it.
    fn sample(&mut self) -> serde_json::Value {
        self.look();
        let live = Live {
            state: self.policy.state_name(),
            elapsed: self.started.elapsed(),
            timer_elapsed: self.policy.timer().elapsed(Instant::now()),
            stdout_bytes: self.relay_bytes(0),
            stderr_bytes: self.relay_bytes(1),
        };
        self.emitter.sample(&self.tracker, live)
    }

    /// The monitor tick: memory, CPU and (by count) processes of the whole tree.
    fn check_tree_limits(&mut self, pss: u64) {
        let cpu = self.limits.cpu.map(|_| self.emitter.accounting.cpu_now(&self.tracker));
        // The cgroup's OOM killer acted on the hard ceiling between two ticks: that was the limit.
        let oom = (self.limits.memory_in_cgroup && self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0))
            .then_some((Reason::LimitMemory, true));
        let passed = [
            self.limits.memory(pss),
            oom,
            cpu.and_then(|c| self.limits.cpu(c)),
            self.limits.pids(self.tracker.len()),
        ];
        for (reason, hard) in passed.into_iter().flatten() {
            let actions = self.policy.limit_exceeded(reason, hard, Instant::now());
            self.apply(actions);
        }
    }

    /// The relays woke us: has stdout passed its limit (stop) or twice it (kill)?
    fn check_limits(&mut self) {
        let Some(bytes) = self.relay_bytes(0) else {
            return;
        };
        if bytes >= self.stdout_limit {
            let hard = bytes >= self.stdout_limit.saturating_mul(2);
            let actions = self.policy.limit_exceeded(Reason::LimitStdout, hard, Instant::now());
            self.apply(actions);
        }
    }

    fn dispatch(&mut self, token: Token, readable: bool) {
        match crate::tokens::source(token) {
            Source::Signals => self.on_signals(),
            Source::ForkEvents => {
                self.tracker.process_events();
                if self.tracker.take_over_limit() {
                    let actions = self.policy.limit_exceeded(Reason::LimitPids, false, Instant::now());
                    self.apply(actions);
                }
            }
            Source::SentFaults => {
                let mut sigs = [0u8; 64];
                loop {
                    // SAFETY: reading into a local buffer from the non-blocking pipe we own.
                    let n = unsafe {
                        libc::read(self.sent_faults.as_raw_fd(), sigs.as_mut_ptr().cast(), sigs.len())
                    };
                    if n <= 0 {
                        break;
                    }
                    for &sig in &sigs[..n as usize] {
                        // The handler does not pass the sender on.
                        self.on_signal(sig as i32, u32::MAX);
                    }
                }
            }
            Source::Waker => {
                self.check_limits();
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
            Source::Listener | Source::Conn(_) => self.on_socket(token),
            Source::Pidfd => {
                if let Some(pid) = self.tracker.pidfd_ready(token, self.poll.registry()) {
                    self.emitter.accounting.departed(pid, &self.tracker);
                }
            }
        }
    }

    fn on_signals(&mut self) {
        // Stopped tracees wait on us: restart them before anything else. A SIGCHLD read below
        // drains again, so none that arrives meanwhile is missed.
        self.on_sigchld();
        const BATCH: usize = 16;
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        loop {
            // SAFETY: signalfd_siginfo is plain data; all-zero is a valid value.
            let mut infos: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
            // SAFETY: reading into a local array of the size given.
            let n = unsafe { libc::read(self.signals.as_raw_fd(), infos.as_mut_ptr().cast(), size * BATCH) };
            if n <= 0 {
                break;
            }
            let count = n as usize / size;
            for info in &infos[..count] {
                // A write of proc_box's own to a closed pipe is not a signal for the tree.
                let own_sigpipe = info.ssi_signo as i32 == libc::SIGPIPE
                    && info.ssi_pid as i32 == self.tracker.self_pid()
                    && info.ssi_code == libc::SI_USER;
                if !own_sigpipe {
                    self.on_signal(info.ssi_signo as i32, info.ssi_pid);
                }
            }
            // Fewer than asked: the queue is empty, and epoll (edge-triggered) reports the next.
            if count < BATCH {
                break;
            }
        }
    }

    fn on_signal(&mut self, signo: i32, sender: u32) {
        match meaning(signo) {
            Meaning::Child => self.on_sigchld(),
            Meaning::Stop => {
                let was_stopping = self.policy.stopping();
                let name = Sig::from_raw(signo).map_or(signo.to_string(), |s| s.to_string());
                let actions = self.policy.stop_signal_received(sender, Instant::now());
                if actions.is_empty() {
                    crate::debug!("received {name} again at once from the same sender: one request");
                } else {
                    let what = if was_stopping { "killing" } else { "stopping" };
                    crate::info!("received {name}; {what} the whole tree");
                }
                self.apply(actions);
            }
            Meaning::Sample => {
                self.sample();
            }
            Meaning::Suspend => self.suspend_self(),
            Meaning::Continue if self.self_stopped => self.on_continued(),
            // `kill -CONT proc_box` while the box is suspended: a resume, timer included.
            Meaning::Continue if self.policy.suspended() => {
                let actions = self.policy.command(&Command::Resume, Instant::now()).unwrap_or_default();
                self.apply(actions);
            }
            Meaning::Continue | Meaning::Forward => {
                if let Some(sig) = Sig::from_raw(signo) {
                    crate::debug!("forwarding {sig} to the whole tree");
                    self.tracker.signal_tree(sig, self.poll.registry());
                }
            }
        }
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
                Event::MainStopped(sig) if self.terminal.is_some() => {
                    crate::debug!("the job stopped itself with {sig}");
                    self.suspend_self();
                }
                Event::MainStopped(_) => {}
                Event::AutoReaped(r) => self.emitter.accounting.auto_reaped(&r),
                Event::Left(pid) => self.emitter.accounting.departed(pid, &self.tracker),
            }
        }
    }

    fn on_main_exit(&mut self, status: ExitStatus) {
        self.main_status = Some(status);
        self.exec_error = self.report.exec_error();
        if let Some(e) = &self.exec_error {
            crate::error!("cannot run '{}': {e}", self.command_name);
        }
        self.tracker.scan(self.poll.registry());
        let live = self.tracker.len();
        self.leftovers = Some((live, self.tracker.processes_started()));
        let how = match status {
            ExitStatus::Exited(c) => format!("exited with status {c}"),
            ExitStatus::Signaled(s) => {
                format!("was killed by {}", Sig::from_raw(s).map_or(s.to_string(), |s| s.to_string()))
            }
        };
        if live > 0 && self.policy.stopping() {
            crate::info!("main process {how}; {live} more process(es) of the tree to end");
        } else if live > 0 {
            let next = if self.kill_leftovers { "ending" } else { "waiting for" };
            crate::info!("main process {how}; {next} {live} leftover process(es)");
        } else {
            crate::debug!("main process {how}");
        }
        let actions = self.policy.main_exited(live > 0, Instant::now());
        self.apply(actions);
    }

    /// Ctrl-Z, or SIGTSTP sent to proc_box: hold the whole tree, give the terminal back to
    /// the shell, and stop proc_box itself so the shell sees a stopped job.
    fn suspend_self(&mut self) {
        if self.policy.stopping() || self.self_stopped {
            return;
        }
        let actions = self.policy.terminal_stop(Instant::now());
        self.apply(actions);
        if let Some(t) = &self.terminal {
            t.take_back();
        }
        self.self_stopped = true;
        crate::info!("job suspended with the whole tree; 'fg' or SIGCONT resumes it");
        // Said before proc_box stops, not after `fg`: the log's writer thread stops with it.
        // Bounded: a stalled stderr must not keep the box from stopping.
        crate::log::sync(Duration::from_millis(200));
        if let Err(e) = pidfd::signal_self(Sig::STOP) {
            crate::warn!("cannot stop proc_box itself: {e}");
        }
    }

    fn on_continued(&mut self) {
        if !std::mem::take(&mut self.self_stopped) {
            return;
        }
        if let Some(t) = &self.terminal {
            t.give_to_job();
        }
        let actions = self.policy.command(&Command::Resume, Instant::now()).unwrap_or_default();
        self.apply(actions);
    }

    fn on_socket(&mut self, token: Token) {
        let Some(socket) = self.socket.as_mut() else {
            return;
        };
        let inputs = socket.ready(token, self.poll.registry());
        self.answer(inputs);
    }

    /// Answers what the control socket's clients sent, each on its own connection.
    fn answer(&mut self, inputs: Vec<(Token, Input)>) {
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
    fn on_command(&mut self, raw: &[u8], via: Via) -> Reply {
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
        let mut sample = None;
        let actions = match cmd {
            Command::Sample => {
                sample = Some(self.sample());
                Vec::new()
            }
            Command::ChangeSampleRate(d) => {
                self.sint = *d;
                if self.emitter.has_sink() {
                    self.next_sample = Some(Instant::now() + *d);
                }
                Vec::new()
            }
            _ => self.policy.command(cmd, Instant::now())?,
        };
        if !matches!(cmd, Command::Status | Command::Sample) {
            crate::info!("command: {}", cmd.name());
        }
        self.apply(actions);
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
            main_running: self.main_status.is_none(),
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

    fn apply(&mut self, actions: Vec<Action>) {
        // What the end-of-job line reports: how many processes the box ended, and why.
        if self.stop_began.is_none() && self.policy.stopping() && self.main_status.is_none() {
            self.tracker.scan(self.poll.registry());
            self.stop_began = Some((self.tracker.len(), self.tracker.processes_started()));
        }
        if self.killed_after_grace.is_none() && self.policy.grace_expired() {
            self.killed_after_grace = Some(self.tracker.len());
        }
        for action in actions {
            match action {
                Action::Signal(sig) => {
                    self.tracker.set_birth_signal(self.policy.birth_signal());
                    // The cgroup kills everything in it at once, whatever the tracker has met.
                    if sig == Sig::KILL {
                        if let Some(cg) = &self.cgroup {
                            cg.kill();
                        }
                    }
                    self.tracker.signal_tree(sig, self.poll.registry());
                }
            }
        }
    }
}

/// What caps the number of processes: ptrace's birth stops, the fork events, or the tick.
fn pids_enforcer(tracker: &Tracker) -> &'static str {
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
