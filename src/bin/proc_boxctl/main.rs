//! `proc_boxctl`: the operator's side of proc_box. Sends commands to boxes (over the broker or
//! a local control socket), watches what they emit, and flushes spooled summaries.

mod ledger;
mod plot;
mod send;
mod watch;

use clap::{Args, CommandFactory, Parser, Subcommand};
use proc_box::manual::Section;
use proc_box::transport::amqp::link::{self, Brokers, ClientInfo};
use proc_box::units::parse_duration;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Exit statuses, also in `--help`.
pub mod status {
    /// Every box answered `ok`.
    pub const OK: u8 = 0;
    /// A box answered `ok: false`, or a spooled summary was kept.
    pub const REFUSED: u8 = 1;
    /// Usage error (clap's own status).
    pub const USAGE: u8 = 2;
    /// No reply within `--wait`, or no such box.
    pub const NO_REPLY: u8 = 3;
    /// The broker (or socket) could not be reached, or refused the login.
    pub const UNREACHABLE: u8 = 4;
}

#[derive(Debug, Parser)]
#[command(
    name = "proc_boxctl",
    version,
    about = "Control proc_box boxes and watch what they emit, over AMQP or a local control socket.",
    after_help = "Global options also read PBOX_<NAME> (PBOX_URI, PBOX_EXCHANGE, ...), and take the Go \
                  spelling -uri VALUE.\nExit status: 0 every box answered ok; 1 a box refused the command \
                  (or a spooled summary was kept, or import rejected a line); 2 usage error; 3 no reply in \
                  time, or no such box; 4 the broker, socket or database could not be reached."
)]
struct Cli {
    /// print the man page (man) or a completion script (bash, zsh, fish, elvish, powershell)
    /// and exit; given alone, first
    #[arg(long, value_name = "WHAT", exclusive = true)]
    generate: Option<String>,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// AMQP URI(s), comma-separated nodes of one cluster
    #[arg(
        long,
        global = true,
        env = "PBOX_URI",
        default_value = "amqp://127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub uri: String,
    /// topic exchange the boxes use
    #[arg(long, global = true, env = "PBOX_EXCHANGE", default_value = "amq.topic")]
    pub exchange: String,
    /// control routing key(s) the boxes bind; the first is used
    #[arg(long, global = true, env = "PBOX_RKEY", default_value = "proc_box.remote_control")]
    pub rkey: String,
    /// prefix of the boxes' emission key
    #[arg(long, global = true, env = "PBOX_SKEY", default_value = "proc_box.stats")]
    pub skey: String,
    /// PEM file of extra CA certificates for amqps://
    #[arg(long, global = true, env = "PBOX_CACERT", value_name = "PATH")]
    pub cacert: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// send a command to one box (--id) or to every box (--all), and print the replies
    Send(send::SendArgs),
    /// show one box's state
    Status(send::StatusArgs),
    /// show every box seen on the exchange, live
    Watch(watch::WatchArgs),
    /// send the summaries spooled while the broker was away
    Flush(FlushArgs),
    /// the chargeback ledger: consume or import summaries into a database, exactly once
    Ledger(ledger::LedgerArgs),
    /// usage and cost per group over a period, like sreport
    Report(ledger::ReportArgs),
    /// one line per stored job, like sacct -P
    Jobs(ledger::JobsArgs),
    /// draw one job (CPU, memory, I/O, processes, events) as an SVG, from its stats file
    Plot(plot::PlotArgs),
}

#[derive(Debug, Args)]
struct FlushArgs {
    /// the spool directory [default: $XDG_STATE_HOME/proc_box/spool, else /var/tmp/proc_box-<uid>/spool]
    #[arg(long = "spool-dir", env = "PBOX_SPOOL_DIR", value_name = "PATH")]
    spool_dir: Option<PathBuf>,
    /// how long each summary may take to be confirmed
    #[arg(long, env = "PBOX_MSGTIMEOUT", default_value = "30s", value_parser = parse_duration)]
    msgtimeout: Duration,
    /// also send summaries spooled for another broker or vhost to this one
    #[arg(long = "any-broker")]
    any_broker: bool,
}

/// A failure worth one line and an exit status.
pub struct Failed {
    pub status: u8,
    pub message: String,
}

impl Failed {
    pub fn new(status: u8, message: impl Into<String>) -> Failed {
        Failed { status, message: message.into() }
    }
}

/// The man page's sections that clap knows nothing of.
const MANUAL: &[Section] = &[
    Section {
        title: "EXAMPLES",
        items: &[
            ("proc_boxctl send --id job-42 suspend", "Suspends box job-42 (and its whole tree) over the broker."),
            (
                "proc_boxctl send --all status --expect 10 --wait 5s",
                "Asks every box for its state; prints each reply as it comes and ends once 10 answered.",
            ),
            ("proc_boxctl send --socket /tmp/job.sock kill TERM", "Sends SIGTERM to every process of a local box."),
            ("proc_boxctl watch", "A live table of every box seen on the exchange."),
            ("proc_boxctl flush", "Sends the summaries spooled while the broker was away."),
            (
                "proc_boxctl ledger run --db postgres://ledger@db1/acct",
                "Stores every summary on the exchange in PostgreSQL, exactly once, until killed.",
            ),
            (
                "proc_boxctl report --since lastmonth --by account,user --rates rates.toml",
                "Last month's usage and cost per account and user, with subtotals and a total.",
            ),
            (
                "proc_boxctl plot job.stats.jsonl -o job.svg",
                "Draws one job from its --stats-file: CPU cores, PSS and RSS, I/O rates, processes, and its events.",
            ),
            (
                "proc_boxctl plot --db postgres://ledger@db1/acct --box job-42 -o job.svg",
                "Draws job-42 from the samples the ledger kept (ledger run --samples) and its summary.",
            ),
            (
                "proc_boxctl report --since lastmonth --by account --rates rates.toml --format html > bill.html",
                "Last month's bill as one self-contained page: totals, cost per account by day, top jobs, CPU efficiency.",
            ),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        items: &[(
            "PBOX_URI, PBOX_EXCHANGE, PBOX_RKEY, PBOX_SKEY, PBOX_CACERT, PBOX_CONTROL_TOKEN, PBOX_DB, PBOX_RATES, ...",
            "Each option can also be given as PBOX_ and its name in upper case; the command line wins. The global options also take the Go spelling, -uri VALUE.",
        )],
    },
    Section {
        title: "EXIT STATUS",
        items: &[
            ("0", "Every box answered ok."),
            (
                "1",
                "A box refused the command, a spooled summary was kept, ledger import rejected a line, or the database refused a step.",
            ),
            ("2", "A usage error."),
            ("3", "No reply in time, or no such box."),
            ("4", "The broker, the socket or the database could not be reached, or refused the login."),
        ],
    },
];

fn main() -> ExitCode {
    // Before any thread exists: no AMQP header, however deep, can overflow a thread's stack.
    proc_box::stack::raise_default();
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--generate") {
        let what = args.get(2).and_then(|a| a.to_str()).unwrap_or("");
        return match proc_box::manual::generate(Cli::command(), "proc_boxctl", what, MANUAL) {
            Ok(text) => {
                use std::io::Write;
                let _ = std::io::stdout().write_all(text.as_bytes());
                ExitCode::from(status::OK)
            }
            Err(e) => {
                eprintln_safe(&format!("proc_boxctl: {e}"));
                ExitCode::from(status::USAGE)
            }
        };
    }
    let cli = match Cli::try_parse_from(go_spelling(args)) {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let text = proc_box::config::prefixed("proc_boxctl", &e.to_string());
            let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
            return ExitCode::from(status::USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(status::OK);
        }
    };
    let result = match cli.action {
        Action::Send(a) => send::send(&cli.broker, a),
        Action::Status(a) => send::status(&cli.broker, a),
        Action::Watch(a) => watch::watch(&cli.broker, a),
        Action::Flush(a) => flush(&cli.broker, a),
        Action::Ledger(a) => ledger::ledger(&cli.broker, a),
        Action::Report(a) => ledger::report(a),
        Action::Jobs(a) => ledger::jobs(a),
        Action::Plot(a) => plot::plot(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln_safe(&format!("proc_boxctl: {}", f.message));
            ExitCode::from(f.status)
        }
    }
}

/// Writes a line to stderr, ignoring a closed stderr.
pub fn eprintln_safe(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `-uri X` → `--uri X` for the global options, as proc_box takes them.
fn go_spelling(args: Vec<OsString>) -> Vec<OsString> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const GLOBAL: [&[u8]; 5] = [b"uri", b"exchange", b"rkey", b"skey", b"cacert"];
    let mut done = false;
    args.into_iter()
        .map(|a| {
            if done || a == "--" {
                done = true;
                return a;
            }
            // On bytes: a value such as a --cacert path need not be UTF-8.
            let bytes = a.as_bytes();
            let name = bytes.strip_prefix(b"-").filter(|t| !t.starts_with(b"-"));
            match name.and_then(|t| t.split(|&b| b == b'=').next()) {
                Some(name) if GLOBAL.contains(&name) => OsString::from_vec([b"-", bytes].concat()),
                _ => a,
            }
        })
        .collect()
}

impl BrokerArgs {
    /// Connects to the first node that answers.
    pub async fn connect(&self) -> Result<lapin::Connection, Failed> {
        self.connect_to().await.map(|(conn, _)| conn)
    }

    /// Connects to the first node that answers; returns it with its URI.
    pub async fn connect_to(&self) -> Result<(lapin::Connection, lapin::uri::AMQPUri), Failed> {
        let mut brokers =
            Brokers::parse(&self.uri).map_err(|e| Failed::new(status::USAGE, format!("--uri: {e}")))?;
        let ca_pem = match &self.cacert {
            Some(p) => Some(proc_box::config::read_cacert(p).map_err(|e| Failed::new(status::USAGE, e))?),
            None => None,
        };
        let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: ca_pem };
        proc_box::stack::one_executor_thread();
        let client = ClientInfo {
            product: "proc_boxctl",
            name: format!("proc_boxctl {}", std::process::id()),
            box_id: None,
        };
        match link::connect_any(&mut brokers, &tls, &client).await {
            Ok(found) => Ok(found),
            Err(link::Failure::Refused(m)) => Err(Failed::new(
                status::UNREACHABLE,
                format!("the broker refused the login ({m}); check the user, password and vhost in --uri or PBOX_URI"),
            )),
            Err(link::Failure::Transient(m) | link::Failure::Config(m)) => Err(Failed::new(
                status::UNREACHABLE,
                format!("cannot reach the broker ({m}); is it running, and is --uri or PBOX_URI right?"),
            )),
        }
    }

    /// The first control key: where broadcast commands go, and the prefix of per-box keys.
    pub fn control_key(&self) -> String {
        self.rkey
            .split(',')
            .map(str::trim)
            .find(|k| !k.is_empty())
            .unwrap_or("proc_box.remote_control")
            .to_owned()
    }
}

/// Closes a connection explicitly (dropping it does not), within 2 s.
pub async fn close(conn: &lapin::Connection) {
    let _ = link::timed("closing", Duration::from_secs(2), conn.close(200, "OK".into())).await;
}

fn flush(broker: &BrokerArgs, args: FlushArgs) -> Result<u8, Failed> {
    use proc_box::transport::amqp::flush::{self, Report};
    use proc_box::transport::amqp::spool::Spool;
    let dir = args.spool_dir.unwrap_or_else(proc_box::transport::amqp::spool::default_dir);
    let refused = |e: std::io::Error| Failed::new(status::REFUSED, e.to_string());
    let Some(spool) = Spool::open(&dir, false).map_err(refused)? else {
        println_safe(&format!("nothing spooled in {}", dir.display()));
        return Ok(status::OK);
    };
    let files = spool.list().map_err(refused)?;
    if files.is_empty() {
        println_safe(&format!("nothing spooled in {}", dir.display()));
        return Ok(status::OK);
    }
    let limit = (!args.msgtimeout.is_zero()).then_some(args.msgtimeout);
    async_global_executor::block_on(async {
        let (conn, uri) = broker.connect_to().await?;
        // An operator's flush tries every entry, back-off or not, and the entries of older
        // versions, which do not say where they were going.
        let opts = flush::Options {
            limit,
            here: link::destination(&uri),
            any_broker: args.any_broker,
            unmarked: true,
            all: true,
        };
        let mut report = |r: Report| match r {
            Report::Sent(f) => println_safe(&format!("sent {}", f.display())),
            Report::Deferred { file, why, attempts, at } => eprintln_safe(&format!(
                "proc_boxctl: kept {}: {why} (attempt {attempts}; a box retries it after {})",
                file.display(),
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(at))
            )),
            Report::Elsewhere { file, to } => eprintln_safe(&format!(
                "proc_boxctl: kept {}: spooled for {to}, not this broker (--any-broker sends it here)",
                file.display()
            )),
            Report::Invalid(why) => eprintln_safe(&format!("proc_boxctl: {why}")),
        };
        let result = flush::flush(&conn, &spool, files, &opts, &|| false, &mut report).await;
        close(&conn).await;
        let t = result
            .map_err(|f| Failed::new(status::UNREACHABLE, format!("sending the spool: {}", f.message())))?;
        let kept = t.deferred + t.elsewhere;
        println_safe(&format!(
            "{} sent, {kept} kept ({} failed, {} for another broker)",
            t.sent, t.deferred, t.elsewhere
        ));
        Ok(if kept == 0 { status::OK } else { status::REFUSED })
    })
}

/// Writes a line to stdout; a closed stdout ends the program quietly.
pub fn println_safe(line: &str) {
    use std::io::Write;
    if writeln!(std::io::stdout(), "{line}").is_err() {
        std::process::exit(0);
    }
}
