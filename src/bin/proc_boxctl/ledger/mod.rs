//! The chargeback ledger: summaries into a database exactly once (`ledger run`, `ledger
//! import`), and the bill out of it (`report`, `jobs`).

mod consume;
pub mod html;
pub mod ingest;
mod postgres;
mod rates;
mod report;
mod sqlite;
pub mod store;

use crate::{eprintln_safe, status, BrokerArgs, Failed};
use clap::{Args, Subcommand};
use report::{Format, Key};
use std::io::Write;
use std::path::PathBuf;
use store::{DbError, DbUrl};

#[derive(Debug, Args)]
pub struct DbArgs {
    /// the ledger database: sqlite:PATH, a path, or postgres://USER@HOST/DB [default: /var/lib/proc_box/ledger.sqlite for root, else $XDG_STATE_HOME/proc_box/ledger.sqlite]
    #[arg(long, env = "PBOX_DB", value_name = "URL", hide_env_values = true)]
    db: Option<String>,
}

impl DbArgs {
    fn url(&self) -> Result<DbUrl, Failed> {
        match &self.db {
            Some(s) => DbUrl::parse(s).map_err(|e| Failed::new(status::USAGE, format!("--db: {e}"))),
            None => Ok(DbUrl::Sqlite(DbUrl::default_path())),
        }
    }

    fn open(&self) -> Result<Box<dyn store::Store>, Failed> {
        store::open(&self.url()?).map_err(db_failed)
    }

    /// For the commands that only read (`status`, `report`, `jobs`): a SQLite file that is not
    /// there is an error, not a new empty ledger whose bill of nothing looks like a real one.
    pub fn open_existing(&self) -> Result<Box<dyn store::Store>, Failed> {
        let url = self.url()?;
        if let DbUrl::Sqlite(path) = &url {
            if !path.exists() {
                return Err(Failed::new(
                    status::REFUSED,
                    format!(
                        "no ledger database at {}: check --db (or PBOX_DB), or fill it first with `proc_boxctl ledger import` or `ledger run`",
                        path.display()
                    ),
                ));
            }
        }
        store::open_read(&url).map_err(db_failed)
    }
}

pub fn db_failed(e: DbError) -> Failed {
    match e {
        DbError::Unavailable(m) => Failed::new(status::UNREACHABLE, m),
        DbError::Fatal(m) => Failed::new(status::REFUSED, m),
    }
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(subcommand)]
    action: LedgerAction,
}

#[derive(Debug, Subcommand)]
enum LedgerAction {
    /// consume summaries from the broker into the database, exactly once, until killed
    Run(RunArgs),
    /// load --summary-file and --stats-file outputs and spool directories, exactly once
    Import(ImportArgs),
    /// rows, time of the last ingest, dead letters, schema version
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    db: DbArgs,
    /// the durable quorum queue to consume; its dead letters go to QUEUE.dead
    #[arg(long, env = "PBOX_LEDGER_QUEUE", default_value = "proc_box.ledger")]
    queue: String,
    /// summaries committed per transaction (at most)
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=10000))]
    batch: u16,
    /// also keep the samples, thinned to at most 500 points per job (plus 100 state changes), for plot --db and the HTML report
    #[arg(long)]
    samples: bool,
}

#[derive(Debug, Args)]
struct ImportArgs {
    #[command(flatten)]
    db: DbArgs,
    /// summary files, stats files (their summary line) or spool directories
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// also keep the stats files' samples, thinned as ledger run --samples does
    #[arg(long)]
    samples: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    db: DbArgs,
    /// table or json
    #[arg(long, default_value = "table")]
    format: String,
}

/// What `report` and `jobs` select.
#[derive(Debug, Args)]
pub struct PeriodArgs {
    /// jobs that ended at or after T: RFC 3339, a day (2026-12-01), today, yesterday, lastweek, lastmonth (UTC; a named period also sets --until)
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// jobs that ended before T (same forms)
    #[arg(long, value_name = "T")]
    until: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    period: PeriodArgs,
    /// group by: user, account, partition, host, day, week, month, reason, exit, label:NAME (comma-separated)
    #[arg(long, value_name = "KEY[,KEY...]", default_value = "")]
    by: String,
    /// a TOML rate card: adds the cost column
    #[arg(long, value_name = "FILE", env = "PBOX_RATES")]
    rates: Option<PathBuf>,
    /// table, csv, json, or html (one self-contained page: totals, charts, top jobs)
    #[arg(long, default_value = "table")]
    format: Format,
    /// html: the chart over time by day, week or month [default: day up to 45 days, week up to a year, else month]
    #[arg(long, value_name = "PERIOD")]
    every: Option<html::Every>,
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    period: PeriodArgs,
    /// only this user (scheduler user, else login, else uid)
    #[arg(long)]
    user: Option<String>,
    /// only this account
    #[arg(long)]
    account: Option<String>,
    /// only this partition
    #[arg(long)]
    partition: Option<String>,
    /// only this host
    #[arg(long)]
    host: Option<String>,
    /// only jobs ended for this reason (exited, timeout, limit_memory, ...)
    #[arg(long)]
    reason: Option<String>,
    /// pipe (`sacct -P`: '|'-separated with a header), csv or json (one object per line)
    #[arg(long, default_value = "pipe")]
    format: String,
}

pub fn out(text: &str) -> Result<(), Failed> {
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|_| o.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failed::new(status::REFUSED, format!("stdout: {e}")))
        }
        _ => Ok(()),
    }
}

fn time_text(us: i64) -> String {
    if us < 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_micros(us as u64))
        .to_string()
}

pub fn ledger(broker: &BrokerArgs, a: LedgerArgs) -> Result<u8, Failed> {
    match a.action {
        LedgerAction::Run(r) => consume::run(
            broker,
            consume::Options {
                db: r.db.url()?,
                queue: r.queue,
                batch: usize::from(r.batch),
                linger: std::time::Duration::from_millis(100),
                samples: r.samples,
            },
        ),
        LedgerAction::Import(i) => {
            let mut store = i.db.open()?;
            let t = ingest::import(store.as_mut(), &i.paths, i.samples, &mut |m| {
                eprintln_safe(&format!("proc_boxctl: {m}"))
            })
            .map_err(db_failed)?;
            let samples = if i.samples {
                format!(", {} samples read, {} stored after thinning", t.samples_read, t.samples_stored)
            } else {
                String::new()
            };
            out(&format!(
                "{} new, {} already stored, {} rejected, {} samples skipped{samples}\n",
                t.new, t.stored, t.rejected, t.skipped
            ))?;
            Ok(if t.rejected > 0 { status::REFUSED } else { status::OK })
        }
        LedgerAction::Status(s) => {
            let url = s.db.url()?;
            let st = s.db.open_existing()?.status().map_err(db_failed)?;
            if s.format == "json" {
                let v = serde_json::json!({
                    "database": url.describe(),
                    "rows": st.rows,
                    "last_ingest": st.last_ingest_us.map(time_text),
                    "dead_lettered": st.dead_letters,
                    "recent_dead_letters": st.last_dead.iter().map(|d| serde_json::json!({
                        "message_id": d.message_id, "reason": d.reason, "at": time_text(d.at_us)})).collect::<Vec<_>>(),
                    "schema_version": st.schema_version,
                });
                return out(&format!("{v}\n")).map(|_| status::OK);
            }
            let mut text = format!(
                "database: {}\nrows: {}\nlast ingest: {}\ndead-lettered: {}\nschema version: {}\n",
                url.describe(),
                st.rows,
                st.last_ingest_us.map_or("never".into(), time_text),
                st.dead_letters,
                st.schema_version
            );
            for d in &st.last_dead {
                text += &format!(
                    "  {} {}: {}\n",
                    time_text(d.at_us),
                    report::clean(d.message_id.as_deref().unwrap_or("(no message_id)")),
                    report::clean(&d.reason)
                );
            }
            out(&text).map(|_| status::OK)
        }
    }
}

fn period(p: &PeriodArgs) -> Result<(Option<i64>, Option<i64>), Failed> {
    let (since, until) = report::period(p.since.as_deref(), p.until.as_deref(), store::now_us())
        .map_err(|e| Failed::new(status::USAGE, e))?;
    if let (Some(s), Some(u)) = (since, until) {
        if u < s {
            return Err(Failed::new(status::USAGE, "--until is before --since: the period is empty"));
        }
    }
    Ok((since, until))
}

pub fn report(a: ReportArgs) -> Result<u8, Failed> {
    let keys = Key::parse_list(&a.by).map_err(|e| Failed::new(status::USAGE, e))?;
    let card = match &a.rates {
        Some(p) => {
            Some(rates::RateCard::load(p).map_err(|e| Failed::new(status::USAGE, format!("--rates {e}")))?)
        }
        None => None,
    };
    let (since, until) = period(&a.period)?;
    let mut store = a.db.open_existing()?;
    let jobs = store.jobs(since, until).map_err(db_failed)?;
    let r = report::build(&jobs, &keys, card.as_ref()).map_err(|e| Failed::new(status::REFUSED, e))?;
    let store = std::cell::RefCell::new(store);
    let text = if a.format == Format::Html {
        html::render(&html::Input {
            report: &r,
            jobs: &jobs,
            card: card.as_ref(),
            since,
            until,
            every: a.every.unwrap_or_else(|| html::Every::auto(&jobs)),
            spark: &|j| {
                let run = crate::plot::run_of(&j.message_id)?;
                let (stride, rows) = store.borrow_mut().samples(&run).ok()?;
                if rows.is_empty() {
                    return None;
                }
                let job = crate::plot::from_rows(stride, &rows, Some(crate::plot::end_of(j)));
                Some(crate::plot::svg::spark(&crate::plot::series::chart(&job)))
            },
        })
    } else {
        report::render(&r, card.as_ref(), a.format, since, until)
    };
    out(&text)?;
    // The bill stands for every other job; the ones left out are named, and the status says so.
    for why in &r.unpriced {
        crate::eprintln_safe(&format!("proc_boxctl: not priced: {why}"));
    }
    Ok(if r.unpriced.is_empty() { status::OK } else { status::REFUSED })
}

pub fn jobs(a: JobsArgs) -> Result<u8, Failed> {
    let (since, until) = period(&a.period)?;
    let jobs = a.db.open_existing()?.jobs(since, until).map_err(db_failed)?;
    let keep = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| Some(w) == have);
    let jobs = jobs.into_iter().filter(|j| {
        keep(&a.user, report::user(j).as_deref())
            && keep(&a.account, j.sched_account.as_deref())
            && keep(&a.partition, j.sched_partition.as_deref())
            && keep(&a.host, Some(&j.host))
            && keep(&a.reason, Some(&j.reason))
    });
    let mut text = String::new();
    match a.format.as_str() {
        "pipe" => {
            text += &report::JOB_COLUMNS.join("|");
            text.push('\n');
            for j in jobs {
                let cells: Vec<String> = report::job_cells(&j)
                    .into_iter()
                    .map(|c| report::clean(&c).replace('|', "\\|"))
                    .collect();
                text += &cells.join("|");
                text.push('\n');
            }
        }
        "csv" => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let _ = w.write_record(report::JOB_COLUMNS);
            for j in jobs {
                let _ = w.write_record(report::job_cells(&j).iter().map(|c| report::spreadsheet_safe(c)));
            }
            text = String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
        }
        "json" => {
            for j in jobs {
                let o: serde_json::Map<String, serde_json::Value> = report::JOB_COLUMNS
                    .iter()
                    .zip(report::job_cells(&j))
                    .map(|(k, v)| (k.to_string(), v.into()))
                    .collect();
                text += &serde_json::Value::Object(o).to_string();
                text.push('\n');
            }
        }
        f => return Err(Failed::new(status::USAGE, format!("--format '{f}': formats are pipe, csv, json"))),
    }
    out(&text).map(|_| status::OK)
}
