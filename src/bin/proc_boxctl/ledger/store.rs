//! The ledger's database: one schema for SQLite and PostgreSQL, behind [`Store`].
//!
//! Rows are keyed by the summary's `message_id` and inserted with `ON CONFLICT DO NOTHING`, so
//! storing a summary twice (a re-import, a redelivery after a crash between commit and ack) is
//! a no-op. Usage is kept in integers (microseconds, bytes) so that sums are exact; the raw
//! summary JSON stays beside the columns, so a period can be repriced or re-read later.

use std::path::{Path, PathBuf};

/// One stored job: the columns reports group and sum by, and the raw summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Job {
    pub message_id: String,
    /// RFC 3339 UTC, as the summary has it.
    pub ended_at: String,
    /// `ended_at` in microseconds since the Unix epoch, for period filters.
    pub ended_us: i64,
    pub box_id: String,
    pub host: String,
    pub owner_uid: Option<i64>,
    pub owner_user: Option<String>,
    pub sched_name: Option<String>,
    pub sched_job_id: Option<String>,
    pub sched_account: Option<String>,
    pub sched_partition: Option<String>,
    pub sched_user: Option<String>,
    pub wall_us: i64,
    pub cpu_user_us: i64,
    pub cpu_sys_us: i64,
    pub peak_pss_bytes: i64,
    pub io_read_bytes: i64,
    pub io_write_bytes: i64,
    pub reason: String,
    pub exit_code: i64,
    /// The summary's `user` object (`--json`), as JSON text; `{}` when it had none.
    pub labels: String,
    /// The summary as received.
    pub raw: String,
}

/// A message the ledger could not store, as recorded for `ledger status`.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub reason: String,
    pub at_us: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Status {
    pub rows: i64,
    pub last_ingest_us: Option<i64>,
    pub dead_letters: i64,
    pub last_dead: Vec<DeadLetter>,
    pub schema_version: i64,
}

/// Why a database step failed. `Unavailable` is worth retrying (the server went away);
/// anything else needs the operator.
#[derive(Debug)]
pub enum DbError {
    Unavailable(String),
    Fatal(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Unavailable(m) | DbError::Fatal(m) => f.write_str(m),
        }
    }
}

/// What an insert did.
#[derive(Debug, Default)]
pub struct Inserted {
    /// Jobs stored now.
    pub new: usize,
    /// Jobs (by index) whose `message_id` is stored already with other content: not a
    /// redelivery but a forgery or a bug. The stored copy is kept; the caller sets these aside.
    pub conflicts: Vec<usize>,
}

/// Why a summary whose `message_id` is stored with other content is set aside.
pub const CONFLICT: &str = "its message_id is stored already with other content; the stored copy is kept";

/// A job not inserted because its `message_id` is stored: is it the same summary? Compared as
/// JSON values, so that a re-import of a file whose spacing differs from the message's is still
/// the same summary.
pub fn same_summary(stored: &str, new: &str) -> bool {
    stored == new
        || matches!(
            (serde_json::from_str::<serde_json::Value>(stored), serde_json::from_str::<serde_json::Value>(new)),
            (Ok(a), Ok(b)) if a == b
        )
}

/// What the ledger needs of a database, and no more.
pub trait Store {
    /// Stores each job whose `message_id` is not stored yet, all in one transaction, and names
    /// those whose id is stored with other content. Either all of the batch is committed or
    /// none of it.
    fn insert(&mut self, jobs: &[Job], ingested_us: i64) -> Result<Inserted, DbError>;
    /// Records a message that was dead-lettered.
    fn dead_letter(&mut self, d: &DeadLetter) -> Result<(), DbError>;
    /// Jobs that ended in `[since, until)` (microseconds since the epoch), oldest first,
    /// without their raw JSON (`raw` is empty): a report over a million jobs needs only the
    /// columns.
    fn jobs(&mut self, since_us: Option<i64>, until_us: Option<i64>) -> Result<Vec<Job>, DbError>;
    fn status(&mut self) -> Result<Status, DbError>;
    /// Stores samples (`ledger run --samples`, `import --samples`), thinned per run so that
    /// none keeps more than [`MAX_SAMPLES`] regular points and [`MAX_EVENTS`] state changes
    /// (see [`keep`]). In one transaction; a sample already stored is a no-op. Returns how
    /// many were stored.
    fn insert_samples(&mut self, samples: &[SampleRow]) -> Result<usize, DbError>;
    /// The stored samples of a run, by `seq`, and the run's stride.
    fn samples(&mut self, run: &str) -> Result<(i64, Vec<SampleRow>), DbError>;
    /// The latest job whose `box_id` (or `message_id`) is `id`, with its raw summary; else
    /// the run with the latest samples of that box (a job still running).
    fn find_box(&mut self, id: &str) -> Result<Option<Found>, DbError>;
}

/// What `plot --db --box` found.
#[derive(Clone, Debug)]
pub enum Found {
    Job(Box<Job>),
    Running { run: String },
}

/// Regular points kept per run (per box and start). A year of one-minute samples is 525,600;
/// the chart needs no more than its width, and a year of jobs stays small.
pub const MAX_SAMPLES: i64 = 500;
/// State changes (suspend, resume, stopping) kept besides, so that thinning never hides an event.
pub const MAX_EVENTS: i64 = 100;

/// One sample as the ledger keeps it: what a chart draws, in integers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampleRow {
    /// The box's run: the sample's `message_id` without `-sample-N` (its summary shares it).
    pub run: String,
    pub box_id: String,
    pub host: String,
    pub seq: i64,
    pub time_us: i64,
    pub elapsed_us: Option<i64>,
    pub state: String,
    pub processes: i64,
    pub processes_started: i64,
    /// User + system, cumulative.
    pub cpu_us: i64,
    pub rss_bytes: i64,
    pub pss_bytes: Option<i64>,
    pub io_read_bytes: i64,
    pub io_write_bytes: i64,
}

/// Whether a new sample is stored, given its run's stride, the state of the run's previous
/// sample and how many state changes are kept already: the first sample, every `stride`-th by
/// `seq`, and a change of state (up to [`MAX_EVENTS`]). Returns (store it, as an event).
///
/// When a run passes [`MAX_SAMPLES`] regular points the stride doubles and the regular points
/// off the new stride are deleted, so a run holds between half and all of the bound, evenly
/// spread, however long it ran. The counters are cumulative, so the CPU and I/O between two
/// kept samples are still exact averages; what the momentary figures did between them is lost.
pub fn keep(seq: i64, stride: i64, previous_state: Option<&str>, state: &str, events: i64) -> (bool, bool) {
    let event = previous_state.is_some_and(|p| p != state) && events < MAX_EVENTS;
    (seq <= 1 || seq % stride.max(1) == 0 || event, event)
}

/// The columns of `samples` in insert order.
pub const SAMPLE_COLUMNS: &str = "run, box_id, host, seq, time_us, elapsed_us, state, processes, \
     processes_started, cpu_us, rss_bytes, pss_bytes, io_read_bytes, io_write_bytes, event";

/// The columns of `jobs` in insert order (`ingested_us` last).
pub const COLUMNS: &str = "message_id, ended_at, ended_us, box_id, host, owner_uid, owner_user, \
     sched_name, sched_job_id, sched_account, sched_partition, sched_user, wall_us, cpu_user_us, \
     cpu_sys_us, peak_pss_bytes, io_read_bytes, io_write_bytes, reason, exit_code, labels, raw, ingested_us";

/// The columns [`Store::jobs`] reads, in [`Job`]'s order: the raw JSON is left in the database.
pub const READ_COLUMNS: &str = "message_id, ended_at, ended_us, box_id, host, owner_uid, owner_user, \
     sched_name, sched_job_id, sched_account, sched_partition, sched_user, wall_us, cpu_user_us, \
     cpu_sys_us, peak_pss_bytes, io_read_bytes, io_write_bytes, reason, exit_code, labels, '' AS raw";

/// The schema, one migration per version, each a list of statements valid in both SQLite and
/// PostgreSQL. Append a version to change it; never edit a released one.
pub const MIGRATIONS: &[&[&str]] = &[
    &[
        "CREATE TABLE jobs (
        message_id TEXT PRIMARY KEY,
        ended_at TEXT NOT NULL,
        ended_us BIGINT NOT NULL,
        box_id TEXT NOT NULL,
        host TEXT NOT NULL,
        owner_uid BIGINT,
        owner_user TEXT,
        sched_name TEXT,
        sched_job_id TEXT,
        sched_account TEXT,
        sched_partition TEXT,
        sched_user TEXT,
        wall_us BIGINT NOT NULL,
        cpu_user_us BIGINT NOT NULL,
        cpu_sys_us BIGINT NOT NULL,
        peak_pss_bytes BIGINT NOT NULL,
        io_read_bytes BIGINT NOT NULL,
        io_write_bytes BIGINT NOT NULL,
        reason TEXT NOT NULL,
        exit_code BIGINT NOT NULL,
        labels TEXT NOT NULL,
        raw TEXT NOT NULL,
        ingested_us BIGINT NOT NULL
    )",
        "CREATE INDEX jobs_ended_us ON jobs (ended_us)",
        "CREATE INDEX jobs_ingested_us ON jobs (ingested_us)",
        "CREATE TABLE dead_letters (
        message_id TEXT,
        reason TEXT NOT NULL,
        at_us BIGINT NOT NULL
    )",
    ],
    &[
        // Version 2: samples for the charts (`ledger run --samples`), thinned per run.
        "CREATE TABLE samples (
        run TEXT NOT NULL,
        box_id TEXT NOT NULL,
        host TEXT NOT NULL,
        seq BIGINT NOT NULL,
        time_us BIGINT NOT NULL,
        elapsed_us BIGINT,
        state TEXT NOT NULL,
        processes BIGINT NOT NULL,
        processes_started BIGINT NOT NULL,
        cpu_us BIGINT NOT NULL,
        rss_bytes BIGINT NOT NULL,
        pss_bytes BIGINT,
        io_read_bytes BIGINT NOT NULL,
        io_write_bytes BIGINT NOT NULL,
        event BIGINT NOT NULL,
        PRIMARY KEY (run, seq)
    )",
        "CREATE INDEX samples_box ON samples (box_id, time_us)",
        "CREATE TABLE sample_runs (
        run TEXT PRIMARY KEY,
        stride BIGINT NOT NULL,
        last_seq BIGINT NOT NULL,
        last_state TEXT NOT NULL
    )",
    ],
];

/// The schema version this build writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Where the ledger lives, from `--db` / `PBOX_DB`.
#[derive(Clone, Debug, PartialEq)]
pub enum DbUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbUrl {
    /// `sqlite:PATH`, a plain path, or `postgres://…` / `postgresql://…`.
    pub fn parse(s: &str) -> Result<DbUrl, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the database URL is empty".into());
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(s.to_owned()));
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(format!("'{s}': sqlite: needs a path"));
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "'{scheme}://': unknown database; use sqlite:PATH, a path, or postgres://USER@HOST/DB"
            ));
        }
        Ok(DbUrl::Sqlite(PathBuf::from(s)))
    }

    /// `/var/lib/proc_box/ledger.sqlite` for root, else `$XDG_STATE_HOME/proc_box/ledger.sqlite`
    /// (`~/.local/state` when unset).
    pub fn default_path() -> PathBuf {
        if nix::unistd::geteuid().is_root() {
            return PathBuf::from("/var/lib/proc_box/ledger.sqlite");
        }
        let state = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        state.join("proc_box/ledger.sqlite")
    }

    /// Shown in messages; never a password.
    pub fn describe(&self) -> String {
        match self {
            DbUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            DbUrl::Postgres(u) => redact(u),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s && url[s + 3..at].contains(':') => {
            let user = url[s + 3..at].split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    };
    // A password can also come as a query parameter (`?password=…`, `&password=…`).
    let Some((base, query)) = url.split_once('?') else { return url };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => kv.to_owned(),
        })
        .collect();
    format!("{base}?{}", query.join("&"))
}

/// Opens an existing database to read it: SQLite read-only (see [`super::sqlite::Sqlite::open_read`]).
pub fn open_read(url: &DbUrl) -> Result<Box<dyn Store>, DbError> {
    match url {
        DbUrl::Sqlite(p) => Ok(Box::new(super::sqlite::Sqlite::open_read(p)?)),
        DbUrl::Postgres(_) => open(url),
    }
}

/// Opens (and creates or migrates) the database.
pub fn open(url: &DbUrl) -> Result<Box<dyn Store>, DbError> {
    match url {
        DbUrl::Sqlite(p) => Ok(Box::new(super::sqlite::Sqlite::open(p)?)),
        DbUrl::Postgres(u) => Ok(Box::new(super::postgres::Postgres::open(u)?)),
    }
}

pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(DbUrl::parse("sqlite:/a/b").unwrap(), DbUrl::Sqlite("/a/b".into()));
        assert_eq!(DbUrl::parse("sqlite:///a/b").unwrap(), DbUrl::Sqlite("/a/b".into()));
        assert_eq!(DbUrl::parse("x.sqlite").unwrap(), DbUrl::Sqlite("x.sqlite".into()));
        assert!(matches!(DbUrl::parse("postgresql://u@h/d").unwrap(), DbUrl::Postgres(_)));
        assert!(DbUrl::parse("mysql://h/d").unwrap_err().contains("unknown database"));
        assert!(DbUrl::parse(" ").is_err());
        assert!(DbUrl::parse("sqlite:").is_err());
        assert_eq!(DbUrl::parse("postgres://u:pw@h/d").unwrap().describe(), "postgres://u:***@h/d");
    }
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn passwords_are_never_shown() {
        assert_eq!(super::redact("postgres://u:s3cret@h/db"), "postgres://u:***@h/db");
        assert_eq!(
            super::redact("postgres://u@h/db?sslmode=disable&password=s3cret"),
            "postgres://u@h/db?sslmode=disable&password=***"
        );
        assert_eq!(super::redact("postgres://u@h/db?PASSWORD=x"), "postgres://u@h/db?PASSWORD=***");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
