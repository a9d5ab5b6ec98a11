// The test harness brings its own `main`; main.rs has no tests, so under it the rest is unused.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use nix::sys::signal::SigmaskHow;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proc_box::accounting::report::Identity;
use proc_box::config::{Config, Invocation, ParseOutcome};
use proc_box::event_loop::{EmitterParts, EventLoop, Parts};
use proc_box::log::{self, Level};
use proc_box::policy::Policy;
use proc_box::relay;
use proc_box::signals::handled_signals;
use proc_box::spawn::ChildSetup;
use proc_box::terminal::Terminal;
use proc_box::transport::amqp::Amqp;
use proc_box::transport::sinks::{StatsFile, SummaryFile};
use proc_box::transport::socket::ControlSocket;
use proc_box::{debug, error, spawn};
use std::time::Instant;
use std::time::SystemTime;

/// proc_box's own failure before the command ran: exit status 125, as `timeout(1)`'s.
const SETUP_FAILED: i32 = 125;

/// proc_box starts itself instead of std's runtime (`no_main`). Of what that runtime does
/// before `main`, it keeps what a process manager needs: standard descriptors that are open,
/// SIGPIPE ignored (after reading the dispositions the job must inherit), and leaves out the
/// main thread's stack-overflow handler: finding its stack (`pthread_getattr_np` reads all of
/// `/proc/self/maps`) and an alternate signal stack cost about 0.16 ms of every start. proc_box's
/// own fault handler takes its place once installed, with a signal stack of its own
/// (`fault::prepare_thread`). Arguments come from std as usual (glibc hands them to its
/// `.init_array` hook).
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    proc_box::inherited::capture();
    if let Err(e) = proc_box::sys::fd::open_standard() {
        error!("{e}");
        log::flush(std::time::Duration::from_secs(1));
        std::process::exit(SETUP_FAILED);
    }
    // SAFETY: setting a disposition; no handler is involved.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    box_main()
}

fn box_main() -> ! {
    let parsed = match Invocation::from_args(std::env::args_os().collect()) {
        Invocation::CgroupWatcher(args) => std::process::exit(proc_box::cgroup::watcher::run(&args)),
        Invocation::PidfdGuard(args) => std::process::exit(proc_box::tracker::guard::run(&args)),
        Invocation::Box(parsed) => parsed,
    };
    // While proc_box still has one thread (parsing starts none): no AMQP header, however deep,
    // can overflow a thread's stack. Only a box that talks to a broker pays for it (a thread
    // started and joined, about 1 ms of start-up).
    if parsed.as_ref().is_ok_and(|c| c.wants_amqp()) {
        proc_box::stack::raise_default();
    }
    let code = run(parsed);
    log::flush(std::time::Duration::from_secs(1));
    std::process::exit(code);
}

fn run(parsed: Result<Box<Config>, ParseOutcome>) -> i32 {
    let config = match parsed {
        Ok(c) => c,
        Err(ParseOutcome::Info(text)) => {
            log::write_fd(1, text.as_bytes());
            return 0;
        }
        Err(ParseOutcome::Usage(text)) => {
            log::write_stderr(text.as_bytes());
            return SETUP_FAILED;
        }
    };
    log::set_level(if config.debug {
        Level::Debug
    } else if config.nowarn {
        Level::Error
    } else {
        Level::Info
    });
    match start(&config) {
        Ok(code) => code,
        Err(e) => {
            error!("{e}");
            SETUP_FAILED
        }
    }
}

fn start(config: &Config) -> Result<i32, String> {
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let box_id = config.box_id(&hostname);
    let amqp = config.amqp(&box_id, &hostname)?;
    let mut limits = config.limits()?;
    // The default limit is only reported as unenforced there.
    if config.stdoutlimit_set && relay::passed_through(1) {
        return Err("--stdoutlimit cannot be enforced: stdout is a terminal (or closed), which the job \
                    writes to directly; redirect stdout, or leave the option out"
            .into());
    }
    let started = SystemTime::now();

    proc_box::inherited::reset_for_box();
    // Block first, so no SIGCHLD or stop request can slip past the signalfd.
    let job_mask =
        handled_signals().thread_swap_mask(SigmaskHow::SIG_BLOCK).map_err(|e| format!("sigprocmask: {e}"))?;
    let signals = SignalFd::with_flags(&handled_signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    // Before the job starts, only the stop requests are read, through a signalfd of their own
    // (a read takes only the signals of its descriptor's mask): every other signal stays
    // pending for the loop. The control socket exists by then, and a SIGHUP sent once it does
    // must still give its sample.
    let stops = SignalFd::with_flags(&stop_signals(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;
    let sent_faults = proc_box::fault::install().map_err(|e| format!("fault handler: {e}"))?;
    // The cgroup and its watcher come before proc_box is a subreaper, so the watcher (double
    // forked) is never proc_box's child nor part of the tree.
    // ptrace mode with no memory ceiling to set has no use for a cgroup. With `--track auto`
    // the mode is known only once the child is seized, and ptrace is the usual outcome: the
    // cgroup is then made only if the seize fails (`late_cgroup`), before the child may fork.
    use proc_box::cgroup::Policy as CgPolicy;
    use proc_box::config::Track;
    let late = config.track == Track::Auto && config.cgroup == CgPolicy::Auto && limits.memory.is_none();
    let policy = match config.cgroup {
        CgPolicy::Auto if late || (config.track == Track::Ptrace && limits.memory.is_none()) => CgPolicy::Off,
        p => p,
    };
    let cgroup = proc_box::cgroup::Cgroup::create(policy)?.map(std::sync::Arc::new);
    if let Some(cg) = &cgroup {
        watch_cgroup(cg)?;
    }
    if let (Some(cg), Some(ceiling)) = (&cgroup, limits.memory_ceiling()) {
        limits.memory_in_cgroup = cg.set_memory_max(ceiling);
    }
    let cgroup_join = cgroup.as_ref().map(|cg| cg.join()).transpose().map_err(|e| format!("cgroup: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let nofile = raise_nofile();
    // The control token keys the HMAC of every command and reply (never sent itself).
    let guard = config.token()?.map(|t| {
        let broadcast: Vec<String> =
            config.rkey.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
        proc_box::auth::Guard::new(proc_box::auth::Key::new(t.as_bytes()), &box_id, &broadcast)
    });
    let socket = config
        .control_socket
        .as_deref()
        .map(|p| ControlSocket::bind(p, config.allow_job_control))
        .transpose()?;
    let mut pause = |d| pause_unless_stopped(&stops, d);
    let stats = config.stats_file.as_deref().map(|p| StatsFile::open(p, &mut pause)).transpose()?;
    let summary_file = config.summary_file.as_deref().map(|p| SummaryFile::new(p, &mut pause)).transpose()?;
    let terminal = Terminal::detect();
    let [out, err] = relay::plan_both().map_err(|e| format!("output pipe: {e}"))?;
    limits.stdout_by = out.enforced_by();

    let policy =
        Policy::new(config.grace, config.stop_signal, config.timeout, config.on_main_exit, Instant::now());
    let setup = ChildSetup {
        terminal: terminal.as_ref().map(Terminal::fd),
        mask: job_mask,
        stdio: [out.job_fd(), err.job_fd()],
        nofile,
        ignored: proc_box::inherited::ignored_for_job(config.stop_signal.raw()),
        rlimits: limits.rlimits.iter().map(|r| (r.resource, r.as_libc())).collect(),
        cgroup: cgroup_join,
        cgroup_in_ptrace: config.cgroup == proc_box::cgroup::Policy::Required || limits.memory_in_cgroup,
        consumed_env: &config.option_env,
    };
    // Subreaper mode counts processes exactly from the kernel's fork events, and bills
    // auto-reaped children from the kernel's exit records, where it may (CAP_NET_ADMIN). Both
    // are subscribed to before the job may fork: at once for `--track subreaper`; for
    // `--track auto` only once ptrace was refused, so the default ptrace mode pays nothing.
    let (mut connector, mut taskstats) = (None, None);
    let subscribe = |connector: &mut Option<_>, taskstats: &mut Option<_>| {
        *connector = proc_box::tracker::connector::Connector::open()
            .map_err(|e| {
                debug!("no process events connector ({e}): processes_started counts what the walks see")
            })
            .ok();
        *taskstats = proc_box::accounting::taskstats::Taskstats::open()
            .map_err(|e| debug!("no taskstats exit records ({e}): auto-reaped children are estimated"))
            .ok();
    };
    if config.track == Track::Subreaper {
        subscribe(&mut connector, &mut taskstats);
    }
    stop_requested(&stops)?;
    let mut made_late = None;
    let mut before_go = |mode, pid| {
        if mode == proc_box::tracker::Mode::Subreaper && config.track == Track::Auto {
            subscribe(&mut connector, &mut taskstats);
        }
        if late && mode == proc_box::tracker::Mode::Subreaper {
            made_late = late_cgroup(pid)?;
        }
        Ok(())
    };
    let main = spawn::spawn(&config.command, &box_id, config.track, &setup, &mut before_go)?;
    let cgroup_in_ptrace = setup.cgroup_in_ptrace;
    drop(setup); // the child has its own copies of the descriptors
    let cgroup = cgroup.or(made_late);
    // ptrace mode left the cgroup unused: remove it now (the watcher then finds nothing to do).
    let cgroup = match cgroup {
        Some(cg) if main.mode == proc_box::tracker::Mode::Ptrace && !cgroup_in_ptrace => {
            cg.remove();
            None
        }
        other => other,
    };
    let argv: Vec<String> = config.command.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut event_loop = EventLoop::new(Parts {
        signals,
        sent_faults,
        main,
        policy,
        socket,
        terminal,
        box_id: box_id.clone(),
        command_name: argv[0].clone(),
        emitter: EmitterParts {
            identity: Identity {
                box_id,
                hostname,
                user: config.json.clone(),
                started,
                owner: proc_box::accounting::origin::Owner::current(),
                scheduler: proc_box::accounting::origin::Scheduler::from_env(),
            },
            stats,
            summary_file,
            sint: config.sint,
            monitor: config.monitor,
            own_io: Default::default(),
        },
        outputs: [out, err],
        stdout_limit: config.stdoutlimit,
        exit_rule: config.exit_rule(),
        format: config.format.clone(),
        argv,
        guard,
        limits,
        cgroup: cgroup.clone(),
        connector,
        taskstats,
    })
    .map_err(|e| format!("event loop: {e}"))?;
    if let Some(settings) = amqp {
        let msgtimeout = settings.msgtimeout;
        match Amqp::start(settings, event_loop.inbox()) {
            Ok(a) => event_loop.set_amqp(a, msgtimeout),
            // The job is already running: it must not suffer for this.
            Err(e) => error!("cannot start the AMQP thread: {e}; running without a broker"),
        }
    }
    let outcome = event_loop.run();
    if let Some(cg) = &cgroup {
        cg.remove();
    }
    Ok(outcome.exit_code(config.exit_rule()))
}

/// Starts the watcher that removes the cgroup (and kills what is in it) if proc_box dies. As
/// pid 1 of a pid namespace, proc_box would adopt its own watcher, and its death kills every
/// process of the namespace anyway, the watcher included: there is none to start. A group
/// left by a SIGKILL is swept by the next box.
fn watch_cgroup(cg: &proc_box::cgroup::Cgroup) -> Result<(), String> {
    if std::process::id() == 1 {
        return Ok(());
    }
    if let Err(e) = proc_box::cgroup::watcher::start(cg) {
        cg.remove();
        return Err(format!("cannot start the cgroup watcher: {e}"));
    }
    debug!("cgroup: {}", cg.dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

/// `--track auto` fell back to subreaper mode: the cgroup that mode uses where it can, made
/// now, with the child (not yet allowed to exec) moved into it by pid. proc_box is already a
/// subreaper, so it stops being one while the watcher's middle process exits (the watcher
/// must not be reparented to it); no process of the job can be orphaned meanwhile, because the
/// child has not started.
fn late_cgroup(child: i32) -> Result<Option<std::sync::Arc<proc_box::cgroup::Cgroup>>, String> {
    let Some(cg) = proc_box::cgroup::Cgroup::create(proc_box::cgroup::Policy::Auto)? else {
        return Ok(None);
    };
    nix::sys::prctl::set_child_subreaper(false).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let watched = watch_cgroup(&cg);
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    watched?;
    let moved = cg.join().and_then(|j| j.move_pid(child));
    if let Err(e) = moved {
        // Auto: a cgroup is a help, not a need; the walks still hold the tree.
        cg.remove();
        proc_box::warn!("cannot move the job into the box's cgroup ({e}); tracking without it");
        return Ok(None);
    }
    Ok(Some(std::sync::Arc::new(cg)))
}

/// The stop requests: SIGINT, SIGTERM and SIGQUIT.
fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal;
    [Signal::SIGINT, Signal::SIGTERM, Signal::SIGQUIT].into_iter().collect()
}

/// Before the job starts, SIGINT, SIGTERM and SIGQUIT end proc_box with status 125. `signals`
/// reads only those: any other signal stays pending, and the loop acts on it once the job runs.
fn stop_requested(signals: &SignalFd) -> Result<(), String> {
    while let Ok(Some(info)) = signals.read_signal() {
        let sig = info.ssi_signo as i32;
        if matches!(sig, libc::SIGINT | libc::SIGTERM | libc::SIGQUIT) {
            let name = proc_box::signals::Sig::from_raw(sig).map_or(sig.to_string(), |s| s.to_string());
            return Err(format!("received {name} before the job started; not starting it"));
        }
    }
    Ok(())
}

/// Waits up to `d` before the job starts, ending early (as an error) on a stop request.
fn pause_unless_stopped(signals: &SignalFd, d: std::time::Duration) -> Result<(), String> {
    proc_box::sys::fd::poll_one(signals, proc_box::sys::fd::PollFlags::IN, Some(d));
    stop_requested(signals)
}

/// Every process of the tree costs proc_box a pidfd and a /proc handle: lift the soft
/// RLIMIT_NOFILE to the hard one. Returns the original, which the job gets back.
fn raise_nofile() -> Option<libc::rlimit> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: lim.maximum, maximum: lim.maximum };
    setrlimit(Resource::Nofile, raised).ok()?;
    // As the child's setrlimit takes it back: RLIM_INFINITY for unlimited.
    let raw = |v: Option<u64>| v.unwrap_or(libc::RLIM_INFINITY);
    Some(libc::rlimit { rlim_cur: raw(lim.current), rlim_max: raw(lim.maximum) })
}
