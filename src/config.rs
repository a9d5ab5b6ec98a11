//! Command line and environment → one [`Config`].
//!
//! Three spellings must work for every long option: `--name VALUE`,
//! `--name=VALUE`, and the Go tool's `-name VALUE` / `-name=VALUE`. The Go form is rewritten to
//! the double-dash form before clap sees it, using clap's own list of long options, so that the
//! table of options lives in one place. Every option also reads `PBOX_<NAME>`.

use crate::signals::Sig;
use crate::units::{parse_duration, parse_size};
use clap::builder::BoolishValueParser;
use clap::{CommandFactory, Parser, ValueEnum};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Track {
    /// ptrace when the kernel allows it, otherwise subreaper (with one warning)
    Auto,
    /// learn of every fork through ptrace events; fail with status 125 if ptrace is refused
    Ptrace,
    /// no ptrace: walk the kernel's children lists on SIGCHLD and on every tick
    Subreaper,
}

pub use crate::policy::OnMainExit;

/// Bool options take `--debug`, `--debug=false`, `-debug=true` (Go never takes a separate word).
macro_rules! bool_opt {
    () => {
        clap::builder::ValueParser::new(BoolishValueParser::new())
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "proc_box",
    version,
    about = "Run a command in a box that holds its whole process tree: every descendant is \
             tracked, signalled, timed and ended with it.",
    after_help = "Every option also reads PBOX_<NAME> from the environment (for example PBOX_TIMEOUT=10m); \
                  the command line wins. Go-style -name VALUE and -name=VALUE work too.\n\
                  Exit status: the command's own; 128+N if it died of signal N; 124 on --timeout; \
                  125 if proc_box failed; 126 if CMD cannot run; 127 if CMD was not found.",
    trailing_var_arg = true,
    // As Go's flag package: a repeated option is not an error; the last one wins.
    args_override_self = true
)]
pub struct Config {
    /// wall-clock limit (0 = none); the job is stopped and proc_box exits 124
    #[arg(long, env = "PBOX_TIMEOUT", default_value = "0", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// time between the stop signal and SIGKILL
    #[arg(long, env = "PBOX_GRACE", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace: Duration,
    /// signal that starts a graceful stop
    #[arg(long = "stop-signal", env = "PBOX_STOP_SIGNAL", default_value = "TERM", value_parser = Sig::parse, value_name = "SIGNAL")]
    pub stop_signal: Sig,
    /// what happens to leftover descendants when the main process exits
    #[arg(long = "on-main-exit", env = "PBOX_ON_MAIN_EXIT", value_enum, default_value = "kill")]
    pub on_main_exit: OnMainExit,
    /// on --timeout, exit with the command's status (128+N) instead of 124
    #[arg(long = "preserve-status", env = "PBOX_PRESERVE_STATUS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub preserve_status: bool,
    /// on --timeout, exit 137 instead of 124 when SIGKILL had to follow after --grace (as
    /// `timeout -k`)
    #[arg(long = "kill-status", env = "PBOX_KILL_STATUS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub kill_status: bool,
    /// stdout byte limit: graceful stop at the limit, SIGKILL at twice it
    #[arg(long, env = "PBOX_STDOUTLIMIT", default_value = "100G", value_parser = parse_size, value_name = "SIZE")]
    pub stdoutlimit: u64,
    /// Whether `--stdoutlimit` was given (or `PBOX_STDOUTLIMIT`), rather than the default: only
    /// a limit asked for is an error where nothing can enforce it.
    #[arg(skip)]
    pub stdoutlimit_set: bool,
    /// The `PBOX_*` variables that stand for options: consumed, so they are not passed on to the
    /// job (a nested proc_box must not inherit the outer box's control socket or files). Taken
    /// from the parser's definitions while they are built anyway: building them again cost
    /// each start about 0.1 ms.
    #[arg(skip)]
    pub option_env: Vec<String>,
    /// limit on the PSS of the whole tree, plus the shared memory (memfds, /dev/shm files) it
    /// holds open: graceful stop at the limit, SIGKILL at once past a tenth more (at least 16
    /// MiB more)
    #[arg(long = "memory-limit", env = "PBOX_MEMORY_LIMIT", value_parser = parse_limit_size, value_name = "SIZE")]
    pub memory_limit: Option<u64>,
    /// limit on the CPU time of the whole tree, exited and auto-reaped descendants included
    #[arg(long = "cpu-limit", env = "PBOX_CPU_LIMIT", value_parser = parse_limit_duration, value_name = "DURATION")]
    pub cpu_limit: Option<Duration>,
    /// limit on the live processes of the tree; in ptrace mode a fork past it dies before it runs
    #[arg(long = "pids-limit", env = "PBOX_PIDS_LIMIT", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub pids_limit: Option<u32>,
    /// a per-process limit set in the job before exec: nofile, core, as, fsize, nproc, stack, cpu
    /// (NAME=VALUE or NAME=SOFT:HARD; repeatable, or comma-separated in PBOX_RLIMIT)
    #[arg(long, env = "PBOX_RLIMIT", value_parser = crate::policy::limits::Rlimit::parse, value_delimiter = ',', action = clap::ArgAction::Append, value_name = "NAME=VALUE")]
    pub rlimit: Vec<crate::policy::limits::Rlimit>,
    /// append a sample every --sint (and on SIGHUP or `sample`), then the summary, as JSON lines
    #[arg(long = "stats-file", env = "PBOX_STATS_FILE", value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// write the summary alone here, atomically, when the box ends
    #[arg(long = "summary-file", env = "PBOX_SUMMARY_FILE", value_name = "PATH")]
    pub summary_file: Option<PathBuf>,
    /// interval between emitted samples (minimum 100ms)
    #[arg(long, env = "PBOX_SINT", default_value = "1m", value_parser = parse_interval, value_name = "DURATION")]
    pub sint: Duration,
    /// how often tree memory is read for the peaks (minimum 10ms)
    #[arg(long, env = "PBOX_MONITOR", default_value = "250ms", value_parser = parse_monitor, value_name = "DURATION")]
    pub monitor: Duration,
    /// the end-of-job line, as /usr/bin/time -f: %e %U %S %P %M %x %C, %{summary_field},
    /// %{user.key}, %%, \n, \t (printed to stderr even with --nowarn)
    #[arg(long, env = "PBOX_FORMAT", value_parser = crate::accounting::format::Format::parse, value_name = "STRING")]
    pub format: Option<crate::accounting::format::Format>,
    /// a JSON object copied into every sample and the summary as `user`
    #[arg(long, env = "PBOX_JSON", value_parser = parse_json_object, value_name = "OBJECT")]
    pub json: Option<serde_json::Value>,
    /// let processes of the box's own tree use the control socket (refused by default)
    #[arg(long = "allow-job-control", env = "PBOX_ALLOW_JOB_CONTROL", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub allow_job_control: bool,
    /// a secret that keys an HMAC every command (socket or AMQP) must be signed with, and every
    /// reply is; prefer the _FILE form or the environment (a command line is visible to all)
    #[arg(long = "control-token", env = "PBOX_CONTROL_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub control_token: Option<String>,
    /// read the control token from this file (its first line)
    #[arg(long = "control-token-file", env = "PBOX_CONTROL_TOKEN_FILE", value_name = "PATH")]
    pub control_token_file: Option<PathBuf>,
    /// Unix socket (mode 0600) taking one JSON command per line
    #[arg(long = "control-socket", env = "PBOX_CONTROL_SOCKET", value_name = "PATH")]
    pub control_socket: Option<PathBuf>,
    /// how descendants are found
    #[arg(long, env = "PBOX_TRACK", value_enum, default_value = "auto")]
    pub track: Track,
    /// put the box in a cgroup of its own: where one can be made (auto), never, or required
    #[arg(long, env = "PBOX_CGROUP", value_enum, default_value = "auto")]
    pub cgroup: crate::cgroup::Policy,
    /// box id, used in messages and in the per-box control routing key
    /// [default: the scheduler's job id, else <hostname>-<pid>]
    #[arg(long, env = "PBOX_ID")]
    pub id: Option<String>,
    /// log debugging detail on stderr
    #[arg(long, env = "PBOX_DEBUG", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub debug: bool,
    /// log errors only
    #[arg(long, env = "PBOX_NOWARN", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub nowarn: bool,
    /// print the man page (man) or a completion script (bash, zsh, fish, elvish, powershell)
    /// and exit; given alone, first
    #[arg(long, value_name = "WHAT", exclusive = true)]
    pub generate: Option<String>,

    /// AMQP URI (amqp:// or amqps://); unset means no broker
    #[arg(help_heading = "AMQP", long, env = "PBOX_URI", value_name = "URI")]
    pub uri: Option<String>,
    /// topic exchange for control and emission
    #[arg(help_heading = "AMQP", long, env = "PBOX_EXCHANGE", default_value = "amq.topic")]
    pub exchange: String,
    /// control routing key; a comma-separated list binds several
    #[arg(help_heading = "AMQP", long, env = "PBOX_RKEY", default_value = "proc_box.remote_control")]
    pub rkey: String,
    /// prefix of the emission routing key (.<hostname> is appended)
    #[arg(help_heading = "AMQP", long, env = "PBOX_SKEY", default_value = "proc_box.stats")]
    pub skey: String,
    /// how long one message may take to be sent and confirmed (0 = no limit)
    #[arg(help_heading = "AMQP", long, env = "PBOX_MSGTIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub msgtimeout: Duration,
    /// accepted for compatibility: broker trouble never stops the job
    #[arg(help_heading = "AMQP", long, env = "PBOX_RUNANYWAY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub runanyway: bool,
    /// accepted for compatibility: rkey lists always work
    #[arg(help_heading = "AMQP", long = "multiRmtKey", env = "PBOX_MULTIRMTKEY", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = bool_opt!())]
    pub multi_rmt_key: bool,
    /// where undelivered summaries wait for a later run or `proc_boxctl flush`
    /// [default: $XDG_STATE_HOME/proc_box/spool, else /var/tmp/proc_box-<uid>/spool]
    #[arg(help_heading = "AMQP", long = "spool-dir", env = "PBOX_SPOOL_DIR", value_name = "PATH")]
    pub spool_dir: Option<PathBuf>,
    /// most summaries the spool keeps; beyond, the oldest are dropped, and named on stderr
    #[arg(help_heading = "AMQP", long = "spool-max-files", env = "PBOX_SPOOL_MAX_FILES", default_value = "50000", value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub spool_max_files: u64,
    /// most bytes the spool keeps; beyond, the oldest summaries are dropped, and named on stderr
    #[arg(help_heading = "AMQP", long = "spool-max-bytes", env = "PBOX_SPOOL_MAX_BYTES", default_value = "256M", value_parser = parse_limit_size, value_name = "SIZE")]
    pub spool_max_bytes: u64,
    /// PEM file of extra CA certificates for amqps:// (the system's are trusted as well)
    #[arg(help_heading = "AMQP", long, env = "PBOX_CACERT", value_name = "PATH")]
    pub cacert: Option<PathBuf>,
    /// samples kept while the broker is away; beyond this the oldest are dropped (and counted)
    #[arg(help_heading = "AMQP", long = "sample-buffer", env = "PBOX_SAMPLE_BUFFER", default_value = "1000", value_parser = clap::value_parser!(u32).range(1..), value_name = "N")]
    pub sample_buffer: u32,

    /// the command to run, and its arguments
    #[arg(required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    crate::command::check_sample_interval(parse_duration(text)?).map_err(|e| e.to_string())
}

fn parse_limit_size(text: &str) -> Result<u64, String> {
    match parse_size(text)? {
        0 => Err("a limit of 0 would end every job; leave the option out for none".into()),
        n => Ok(n),
    }
}

fn parse_limit_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("a limit of 0 would end every job; leave the option out for none".into()),
        d => Ok(d),
    }
}

fn parse_monitor(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(10) {
        return Err("--monitor must be at least 10ms".into());
    }
    Ok(d)
}

fn parse_json_object(text: &str) -> Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        Ok(_) => Err("--json must be a JSON object, such as '{\"job\": \"x\"}'".into()),
        Err(e) => Err(format!("--json is not valid JSON: {e}")),
    }
}

/// How parsing ended when it did not produce a config.
pub enum ParseOutcome {
    /// `--help` or `--version`: print this on stdout and exit 0.
    Info(String),
    /// A usage error: print this on stderr and exit 125.
    Usage(String),
}

/// What proc_box's whole argv asks for. Every argument is an `OsString`: nothing on the
/// command line, the job's arguments included, has to be UTF-8.
pub enum Invocation {
    /// proc_box re-executed as its own cgroup watcher, with the watcher's arguments.
    CgroupWatcher(Vec<OsString>),
    /// proc_box re-executed as the pidfd guard of its untraceable members.
    PidfdGuard(Vec<OsString>),
    /// A box to run, or how parsing ended without one.
    Box(Result<Box<Config>, ParseOutcome>),
}

impl Invocation {
    pub fn from_args(args: Vec<OsString>) -> Invocation {
        if args.get(1).is_some_and(|a| a == crate::cgroup::watcher::ARG) {
            return Invocation::CgroupWatcher(args[2..].to_vec());
        }
        if args.get(1).is_some_and(|a| a == crate::tracker::guard::ARG) {
            return Invocation::PidfdGuard(args[2..].to_vec());
        }
        Invocation::Box(Config::parse_args(args).map(Box::new))
    }
}

impl Config {
    pub fn parse_args(args: Vec<OsString>) -> Result<Config, ParseOutcome> {
        if args.get(1).is_some_and(|a| a == "--generate") {
            return Err(generate(args.get(2).and_then(|a| a.to_str()).unwrap_or("")));
        }
        // Built once, for the Go-spelling pass and the parse.
        let cmd = Config::command();
        let option_env: Vec<String> =
            cmd.get_arguments().filter_map(|a| a.get_env()?.to_str().map(str::to_owned)).collect();
        let args = go_style_to_gnu(&cmd, args);
        let outcome = |e: clap::Error| {
            use clap::error::ErrorKind::*;
            match e.kind() {
                DisplayHelp | DisplayVersion => ParseOutcome::Info(e.to_string()),
                _ => ParseOutcome::Usage(prefixed("proc_box", &both_spellings(&e.to_string()))),
            }
        };
        let matches = cmd.try_get_matches_from(args).map_err(outcome)?;
        let mut config = <Config as clap::FromArgMatches>::from_arg_matches(&matches).map_err(outcome)?;
        config.stdoutlimit_set =
            matches.value_source("stdoutlimit").is_some_and(|s| s != clap::parser::ValueSource::DefaultValue);
        config.option_env = option_env;
        // `-generate man` (the Go spelling) reaches clap, which takes it alone, with no command.
        if let Some(what) = &config.generate {
            return Err(generate(what));
        }
        Ok(config)
    }
}

/// `proc_box --generate man|bash|zsh|fish|elvish|powershell`: the man page or a completion
/// script, from the same clap definitions as the parser (`doc/` holds the generated files).
fn generate(what: &str) -> ParseOutcome {
    match crate::manual::generate(Config::command(), "proc_box", what, crate::manual::PROC_BOX) {
        Ok(text) => ParseOutcome::Info(text),
        Err(e) => ParseOutcome::Usage(format!("proc_box: {e}\n")),
    }
}

/// A clap usage error as every other message of `program` reads: `program: …` instead of
/// `error: …` (shared by proc_boxctl). Help shown for a missing subcommand stays as it is.
pub fn prefixed(program: &str, message: &str) -> String {
    match message.strip_prefix("error: ") {
        Some(rest) => format!("{program}: {rest}"),
        None => message.to_owned(),
    }
}

/// Names every suggested option in both spellings: `'--timeout' (or '-timeout')`.
fn both_spellings(message: &str) -> String {
    let marker = "a similar argument exists: '--";
    let Some(at) = message.find(marker) else {
        return message.to_owned();
    };
    let name_start = at + marker.len();
    let Some(len) = message[name_start..].find('\'') else {
        return message.to_owned();
    };
    let name = &message[name_start..name_start + len];
    let end = name_start + len + 1;
    format!("{} (or '-{name}'){}", &message[..end], &message[end..])
}

/// Rewrites `-name[=v]` to `--name[=v]` for every long option clap knows, up to the command.
/// Works on bytes: an argument, or an option's value, need not be UTF-8 (file names are bytes).
fn go_style_to_gnu(cmd: &clap::Command, args: Vec<OsString>) -> Vec<OsString> {
    let takes_value = |name: &[u8]| -> Option<bool> {
        let name = std::str::from_utf8(name).ok()?; // every option's name is ASCII
        if name == "help" || name == "version" {
            return Some(false);
        }
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .map(|a| a.get_action().takes_values() && !a.is_require_equals_set())
    };
    let double_dash = |long: &[u8]| OsString::from_vec([b"--", long].concat());
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    out.extend(iter.next()); // argv[0]
    while let Some(arg) = iter.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--" || !bytes.starts_with(b"-") || bytes == b"-" {
            out.push(arg);
            out.extend(iter);
            break;
        }
        let long = if let Some(rest) = bytes.strip_prefix(b"--") {
            rest
        } else if bytes.len() > 2 {
            &bytes[1..]
        } else {
            out.push(arg); // a genuine short flag such as -h or -V
            continue;
        };
        let name = long.split(|&b| b == b'=').next().unwrap_or_default();
        let needs_value = takes_value(name).unwrap_or(false) && !long.contains(&b'=');
        // An unknown name goes on as the long option it was meant to be, so clap's "did you
        // mean" works for the Go spelling too (`-timout` is not `-t -i -m …`).
        out.push(double_dash(long));
        if needs_value {
            out.extend(iter.next());
        }
    }
    out
}

/// The first `max` bytes of a file given on the command line (a token, a CA bundle). Opened
/// without blocking and refused unless it is a regular file, so a FIFO (or /dev/zero) given
/// here cannot hang proc_box before the job starts.
pub fn read_regular_file(path: &std::path::Path, max: u64) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| e.to_string())?;
    if !file.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    let mut text = String::new();
    file.take(max).read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
}

/// The first line of a token file.
fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    Ok(read_regular_file(path, 4096)?.lines().next().unwrap_or_default().to_owned())
}

/// The control token (the key commands are signed with), given as text or as a file's first
/// line; shared with proc_boxctl.
pub fn control_token(text: Option<&str>, file: Option<&std::path::Path>) -> Result<Option<String>, String> {
    let token = match (text, file) {
        (Some(_), Some(_)) => {
            return Err("--control-token and --control-token-file exclude each other".into())
        }
        (Some(t), None) => t.to_owned(),
        (None, Some(path)) => {
            read_token_file(path).map_err(|e| format!("--control-token-file {}: {e}", path.display()))?
        }
        (None, None) => return Ok(None),
    };
    if token.trim().is_empty() {
        return Err("the control token is empty".into());
    }
    Ok(Some(token))
}

/// A PEM bundle of CA certificates (`--cacert`), at most 1 MiB.
pub fn read_cacert(path: &std::path::Path) -> Result<String, String> {
    read_regular_file(path, 1 << 20).map_err(|e| format!("--cacert {}: {e}", path.display()))
}

/// Scheduler job-id variables tried, in order, when `--id` is unset.
const JOB_ID_VARS: &[&str] =
    &["SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", "FLUX_JOB_ID", "CONDOR_JOB_ID"];

impl Config {
    /// How the end maps to the exit status.
    pub fn exit_rule(&self) -> crate::policy::ExitRule {
        crate::policy::ExitRule { preserve_status: self.preserve_status, kill_status: self.kill_status }
    }

    /// The control token, from `--control-token` or the first line of `--control-token-file`.
    pub fn token(&self) -> Result<Option<String>, String> {
        control_token(self.control_token.as_deref(), self.control_token_file.as_deref())
    }

    /// The tree-wide limits, each checked against what proc_box may enforce.
    pub fn limits(&self) -> Result<crate::policy::limits::Limits, String> {
        for r in &self.rlimit {
            r.check_allowed()?;
        }
        Ok(crate::policy::limits::Limits {
            memory: self.memory_limit,
            cpu: self.cpu_limit,
            pids: self.pids_limit.map(|n| n as usize),
            rlimits: self.rlimit.clone(),
            memory_in_cgroup: false,
            stdout_by: None,
        })
    }

    /// Whether a broker is configured (`--uri` or its variable, not blank).
    pub fn wants_amqp(&self) -> bool {
        self.uri.as_deref().is_some_and(|u| !u.trim().is_empty())
    }

    /// The AMQP side, when `--uri` names a broker. A bad URI or CA file is a usage error.
    pub fn amqp(
        &self,
        box_id: &str,
        hostname: &str,
    ) -> Result<Option<crate::transport::amqp::Settings>, String> {
        use crate::transport::amqp::{link::Brokers, spool, Settings};
        let Some(uri) = self.uri.as_deref().filter(|_| self.wants_amqp()) else { return Ok(None) };
        let brokers = Brokers::parse(uri).map_err(|e| format!("--uri: {e}"))?;
        let bind_keys = Settings::keys(&self.rkey, box_id);
        if bind_keys.is_empty() {
            return Err("--rkey: no routing key given".into());
        }
        let stats_key = format!("{}.{hostname}", self.skey);
        // AMQP keys are short strings: a longer one would fail at every (re)connection instead.
        if let Some(k) = bind_keys.iter().chain([&stats_key]).find(|k| k.len() > 255) {
            return Err(format!(
                "routing key longer than 255 bytes (a long --id, --rkey or --skey?): {k:.60}…"
            ));
        }
        let ca_pem = match &self.cacert {
            Some(path) => Some(read_cacert(path)?),
            None => None,
        };
        Ok(Some(Settings {
            brokers,
            ca_pem,
            exchange: self.exchange.clone(),
            bind_keys,
            box_id: box_id.to_owned(),
            stats_key,
            msgtimeout: (!self.msgtimeout.is_zero()).then_some(self.msgtimeout),
            spool_dir: self.spool_dir.clone().unwrap_or_else(spool::default_dir),
            bounds: spool::Bounds { files: self.spool_max_files, bytes: self.spool_max_bytes },
            buffer: self.sample_buffer as usize,
        }))
    }

    /// The box id: `--id`, else the scheduler's job id, else `<hostname>-<pid>`.
    pub fn box_id(&self, hostname: &str) -> String {
        if let Some(id) = self.id.as_deref().filter(|s| !s.is_empty()) {
            return id.to_owned();
        }
        JOB_ID_VARS
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| format!("{hostname}-{}", std::process::id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v: Vec<OsString> = vec!["proc_box".into()];
        v.extend(args.iter().map(OsString::from));
        Config::parse_args(v).map_err(|e| match e {
            ParseOutcome::Info(s) | ParseOutcome::Usage(s) => s,
        })
    }

    #[test]
    fn three_spellings() {
        for args in [
            &["--timeout", "10m", "true"][..],
            &["--timeout=10m", "true"],
            &["-timeout", "10m", "true"],
            &["-timeout=10m", "true"],
        ] {
            let c = parse(args).unwrap();
            assert_eq!(c.timeout, Duration::from_secs(600), "{args:?}");
            assert_eq!(c.command, vec![OsString::from("true")]);
        }
    }

    #[test]
    fn go_bools_and_stop_at_command() {
        let c = parse(&["-debug", "-runanyway=true", "-multiRmtKey", "sh", "-c", "-timeout 5"]).unwrap();
        assert!(c.debug && c.runanyway && c.multi_rmt_key);
        assert_eq!(c.timeout, Duration::ZERO);
        assert_eq!(c.command, ["sh", "-c", "-timeout 5"].map(OsString::from));
        let c = parse(&["-debug=false", "--", "-weird-name"]).unwrap();
        assert!(!c.debug);
        assert_eq!(c.command, vec![OsString::from("-weird-name")]);
    }

    #[test]
    fn repeated_options_last_wins_as_in_go() {
        let c = parse(&["-timeout", "1s", "--timeout=3s", "-grace", "1s", "-grace", "2s", "x"]).unwrap();
        assert_eq!((c.timeout, c.grace), (Duration::from_secs(3), Duration::from_secs(2)));
        let c = parse(&["-timeout", "1d", "x"]).unwrap();
        assert_eq!(c.timeout, Duration::from_secs(86400));
        assert_eq!(parse(&["--timeout", "1e-10", "x"]).unwrap().timeout, Duration::from_nanos(1));
        assert!(parse(&["--timeout", "1e19", "x"]).is_err());
    }

    #[test]
    fn options_for_the_box() {
        let c =
            parse(&["-grace", "2s", "--stop-signal=INT", "-track=subreaper", "--on-main-exit", "wait", "x"])
                .unwrap();
        assert_eq!(c.grace, Duration::from_secs(2));
        assert_eq!(c.stop_signal, Sig::INT);
        assert_eq!(c.track, Track::Subreaper);
        assert_eq!(c.on_main_exit, OnMainExit::Wait);
    }

    #[test]
    fn an_explicit_stdoutlimit_is_told_from_the_default() {
        let c = parse(&["true"]).unwrap();
        assert_eq!((c.stdoutlimit, c.stdoutlimit_set), (100 << 30, false));
        let c = parse(&["-stdoutlimit", "100G", "true"]).unwrap();
        assert_eq!((c.stdoutlimit, c.stdoutlimit_set), (100 << 30, true));
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&[]).is_err());
        assert!(parse(&["--timeout", "soon", "x"]).is_err());
        assert!(parse(&["--json", "{not json", "x"]).is_err());
        assert!(parse(&["--json", "[1]", "x"]).is_err());
        assert!(parse(&["--stop-signal", "0", "x"]).is_err());
        assert!(parse(&["--no-such-option", "x"]).is_err());
        for typo in ["--timout", "-timout", "-timout=2s"] {
            let err = parse(&[typo, "2s", "x"]).err().unwrap();
            assert!(err.contains("'--timeout' (or '-timeout')"), "{typo}: {err}");
        }
        let c = parse(&["--json", r#"{"job": "x"}"#, "x"]).unwrap();
        assert_eq!(c.json.unwrap()["job"], "x");
    }

    fn os(b: &[u8]) -> OsString {
        OsString::from_vec(b.to_vec())
    }

    #[test]
    fn arguments_are_bytes() {
        let name = os(b"caf\xe9\xff");
        for spelled in [
            vec![os(b"--stats-file"), name.clone()],
            vec![os(b"-stats-file"), name.clone()],
            vec![os(b"--stats-file=caf\xe9\xff")],
            vec![os(b"-stats-file=caf\xe9\xff")],
        ] {
            // The Go spelling after a non-UTF-8 argument is still rewritten.
            let mut args = vec![os(b"proc_box")];
            args.extend(spelled.clone());
            args.extend([os(b"-timeout"), os(b"5s"), os(b"ls"), name.clone(), os(b"-timeout")]);
            let Ok(Invocation::Box(Ok(c))) = std::panic::catch_unwind(|| Invocation::from_args(args)) else {
                panic!("{spelled:?} does not parse");
            };
            assert_eq!(c.stats_file.as_deref(), Some(std::path::Path::new(&name)), "{spelled:?}");
            assert_eq!(c.timeout, Duration::from_secs(5));
            assert_eq!(c.command, vec![os(b"ls"), name.clone(), os(b"-timeout")]);
        }
        // A value that is text by nature is a usage error, not a panic.
        for args in [&[&b"--id"[..], b"\xff", b"true"][..], &[b"-uri=\xff", b"true"], &[b"-\xff", b"true"]] {
            let mut v = vec![os(b"proc_box")];
            v.extend(args.iter().map(|a| os(a)));
            assert!(
                matches!(Invocation::from_args(v), Invocation::Box(Err(ParseOutcome::Usage(_)))),
                "{args:?}"
            );
        }
    }

    /// The in-process companion of the `config` fuzz target: random byte argvs, from a fixed
    /// set of seeds, made of option names in every spelling and arbitrary bytes, never panic;
    /// what parses has a command, and the command's arguments come through byte for byte.
    #[test]
    fn random_byte_argvs_never_panic() {
        let names: Vec<String> = Config::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .chain(
                ["help", "version", "generate", crate::cgroup::watcher::ARG.trim_start_matches('-')]
                    .map(String::from),
            )
            .collect();
        for seed in 0..3000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut args = vec![os(b"proc_box")];
            let mut tail_from = None;
            for _ in 0..rng.usize(0..8) {
                let arg = match rng.u8(0..8) {
                    0 | 1 => {
                        let dashes = if rng.bool() { "--" } else { "-" };
                        let mut a = format!("{dashes}{}", names[rng.usize(..names.len())]).into_bytes();
                        if rng.bool() {
                            a.push(b'=');
                            a.extend((0..rng.usize(0..6)).map(|_| rng.u8(..)));
                        }
                        a
                    }
                    2 => b"--".to_vec(),
                    3 => [b"-".as_slice(), &(0..rng.usize(0..4)).map(|_| rng.u8(..)).collect::<Vec<_>>()]
                        .concat(),
                    4 => {
                        ["1s", "0", "10K", "TERM", "ptrace", "{}", "nofile=8", "true"][rng.usize(..8)].into()
                    }
                    _ => (0..rng.usize(0..6)).map(|_| rng.u8(..)).collect(),
                };
                if arg == b"--" && tail_from.is_none() {
                    tail_from = Some(args.len() + 1);
                }
                args.push(os(&arg));
            }
            let tail = tail_from.map(|i| args.get(i..).unwrap_or_default().to_vec());
            let parsed = std::panic::catch_unwind(|| Invocation::from_args(args.clone()))
                .unwrap_or_else(|_| panic!("seed {seed}: panicked on {args:?}"));
            if let Invocation::Box(Ok(c)) = parsed {
                assert!(!c.command.is_empty(), "seed {seed}: {args:?}");
                if let Some(tail) = tail.filter(|t| !t.is_empty()) {
                    assert!(c.command.ends_with(&tail), "seed {seed}: {args:?} gave {:?}", c.command);
                }
            }
        }
    }
}
