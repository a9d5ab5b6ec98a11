use nix::sys::signal::SigmaskHow;
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proc_box::config::{Config, OnMainExit, ParseOutcome};
use proc_box::event_loop::{handled_signals, EventLoop, Parts};
use proc_box::log::{self, Level};
use proc_box::policy::Policy;
use proc_box::terminal::Terminal;
use proc_box::transport::socket::ControlSocket;
use proc_box::{error, spawn, warn};
use std::time::Instant;

/// proc_box's own failure before the command ran (contract §2).
const SETUP_FAILED: i32 = 125;

fn main() {
    std::process::exit(run());
}

fn run() -> i32 {
    let config = match Config::parse_args(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(ParseOutcome::Info(text)) => {
            print!("{text}");
            return 0;
        }
        Err(ParseOutcome::Usage(text)) => {
            eprint!("{text}");
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
    if config.uri.is_some() {
        warn!("--uri is set, but this version has no AMQP transport yet; running without a broker");
    }
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    let box_id = config.box_id(&hostname);

    // Block first, so no SIGCHLD or stop request can slip past the signalfd.
    let job_mask = handled_signals()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let signals = SignalFd::with_flags(
        &handled_signals(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .map_err(|e| format!("signalfd: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    let socket = config
        .control_socket
        .as_deref()
        .map(ControlSocket::bind)
        .transpose()?;
    let terminal = Terminal::detect();

    let policy = Policy::new(
        config.grace,
        config.stop_signal,
        config.timeout,
        config.on_main_exit,
        Instant::now(),
    );
    let main = spawn::spawn(
        &config.command,
        &box_id,
        config.track,
        terminal.as_ref().map(Terminal::fd),
        &job_mask,
    )?;
    let command_name = config.command[0].to_string_lossy().into_owned();
    let event_loop = EventLoop::new(Parts {
        signals,
        main,
        policy,
        socket,
        terminal,
        box_id,
        command_name,
        kill_leftovers: config.on_main_exit == OnMainExit::Kill,
    })
    .map_err(|e| format!("event loop: {e}"))?;
    let outcome = event_loop.run();
    Ok(outcome.exit_code(config.preserve_status))
}
