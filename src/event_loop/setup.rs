//! Building the loop: every source registered under its token, the tracker, the emitter, the
//! output counters, the schedule, and the policy told about the limits and the terminal.

use super::end::{self, Ending};
use super::EventLoop;
use crate::accounting::{Accounting, OwnIo};
use crate::control::Control;
use crate::emitter::Emitter;
use crate::policy::Policy;
use crate::relay::{Output, Plan};
use crate::schedule::Schedule;
use crate::terminal::Terminal;
use crate::tokens::{FORK_EVENTS, OUTPUTS, SENT_FAULTS, SIGNALS, WAKER};
use crate::tracker::{Mode, Tracker};
use crate::transport::socket::ControlSocket;
use crate::transport::Inbox;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Waker};
use nix::sys::signalfd::SignalFd;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the children lists are walked when no event asks for it. In subreaper mode this
/// bounds how long a new process can go unseen; in ptrace mode it is only the backstop for
/// `clone(CLONE_UNTRACED)`.
const SCAN_SUBREAPER: Duration = Duration::from_millis(100);
const SCAN_PTRACE: Duration = Duration::from_secs(1);

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
    /// The kernel's exit records, registered for before the job started (subreaper mode).
    pub taskstats: Option<crate::accounting::taskstats::Taskstats>,
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
        let (mode, job_started) = (parts.main.mode, parts.main.started);
        let mut tracker = Tracker::new(mode, parts.main.pidfd, registry);
        tracker.set_pids_limit(parts.limits.pids);
        tracker.set_cgroup(parts.cgroup.clone());
        if let Some(c) = parts.connector {
            if mode == Mode::Subreaper {
                tracker.set_connector(c);
                if parts.taskstats.is_some() {
                    tracker.keep_exits(); // to tell which exit records are the tree's
                }
            }
        }
        if let Some(fd) = tracker.fork_events_fd() {
            registry.register(&mut SourceFd(&fd), FORK_EVENTS, Interest::READABLE)?;
        }
        let scan = if mode == Mode::Ptrace { SCAN_PTRACE } else { SCAN_SUBREAPER };
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
        let limits_text = parts.limits.describe(end::pids_enforcer(&tracker), parts.stdout_limit);
        crate::debug!("limits: {limits_text}");
        let mut accounting = Accounting::new(mode, job_started, ep.own_io.clone());
        accounting.set_cgroup(parts.cgroup.clone());
        accounting.set_taskstats(parts.taskstats);
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
        let mut schedule = Schedule::new(now, scan, monitor, ep.sint);
        if emitter.has_sink() {
            schedule.start_sampling(now);
        }
        let mut policy = parts.policy;
        policy.set_terminal(terminal.is_some());
        policy.set_limits(parts.limits, limit);
        Ok(EventLoop {
            poll,
            signals: parts.signals,
            sent_faults: parts.sent_faults,
            tracker,
            policy,
            schedule,
            control: Control::new(parts.guard),
            socket,
            terminal,
            inbox: Inbox::new(tx, waker),
            requests,
            emitter,
            outputs,
            cgroup: parts.cgroup,
            box_id: parts.box_id,
            started: job_started,
            end: Ending {
                report: parts.main.report,
                command_name: parts.command_name,
                exit_rule: parts.exit_rule,
                format: parts.format,
                argv: parts.argv,
                main_status: None,
                exec_error: None,
                leftovers: None,
                stop_began: None,
                killed_after_grace: None,
            },
        })
    }
}
