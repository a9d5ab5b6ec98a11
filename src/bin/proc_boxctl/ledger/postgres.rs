//! The site store: PostgreSQL through the synchronous `postgres` client. A connection that
//! broke is dropped and made again by the next call, so a consumer that keeps retrying comes
//! back by itself when the server does. Several consumers may share one database: inserts are
//! idempotent and migrations run under an advisory lock.

use super::store::{
    current_version, keep, same_summary, DbError, DeadLetter, Found, Inserted, Job, SampleRow, Status, Store,
    COLUMNS, MAX_SAMPLES, MIGRATIONS, READ_COLUMNS, SAMPLE_COLUMNS,
};
use postgres::{Client, Config, NoTls};
use std::time::Duration;

/// Taken by whoever migrates, so that consumers starting together migrate once.
const MIGRATION_LOCK: i64 = 0x7062_6f78_6c64_6772; // "pboxldgr"

pub struct Postgres {
    config: Config,
    shown: String,
    client: Option<Client>,
}

/// Lost connections, a server shutting down, serialization failures: worth retrying.
/// Only an error about the row itself (a data exception, class 22, or a constraint, class 23)
/// makes a summary unstorable, to be dead-lettered. Anything else is about the database (down,
/// read-only as a standby is, a lost privilege, a wrong login): retried, nothing acknowledged,
/// so no bill is set aside for a fault that is not its own.
fn classify(what: &str, e: postgres::Error) -> DbError {
    let code = e.code().map(|c| c.code().to_owned());
    let m = match e.as_db_error() {
        Some(db) => format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code()),
        None => format!("{what}: {e}"),
    };
    match code {
        Some(c) if c.starts_with("22") || c.starts_with("23") => DbError::Fatal(m),
        _ => DbError::Unavailable(m),
    }
}

/// Class 28 (invalid authorization: a wrong password, no such role, pg_hba refusing) and
/// 3D000 (no such database).
fn login_refused(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("28") || c.code() == "3D000")
}

impl Postgres {
    pub fn open(url: &str) -> Result<Postgres, DbError> {
        let shown = super::store::DbUrl::Postgres(url.into()).describe();
        let mut config: Config = url.parse().map_err(|e| DbError::Fatal(format!("'{shown}': {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("proc_boxctl ledger");
        let mut pg = Postgres { config, shown, client: None };
        if let Err(e) = pg.config.connect(NoTls).map(|c| pg.client = Some(c)) {
            let why = e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned());
            // At start, a refused login or a missing database is the operator's to fix: say so
            // and stop, rather than retry for ever. Later, the same error is a server that
            // changed under a running consumer, and is retried like an outage.
            return Err(if login_refused(&e) {
                DbError::Fatal(format!("cannot log in to PostgreSQL at {}: {why}", pg.shown))
            } else {
                DbError::Unavailable(format!("cannot reach PostgreSQL at {}: {why}", pg.shown))
            });
        }
        pg.migrate()?;
        Ok(pg)
    }

    fn client(&mut self) -> Result<&mut Client, DbError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let c = self.config.connect(NoTls).map_err(|e| {
                let why = e.as_db_error().map_or_else(|| e.to_string(), |db| db.message().to_owned());
                DbError::Unavailable(format!("cannot reach PostgreSQL at {}: {why}", self.shown))
            })?;
            self.client = Some(c);
        }
        self.client.as_mut().ok_or_else(|| DbError::Unavailable("no connection".into()))
    }

    /// Runs `f` on the connection; a connection error drops it for the next call to redo.
    fn with<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, DbError> {
        let c = self.client()?;
        match f(c) {
            Ok(v) => Ok(v),
            Err(e) => {
                let e = classify(what, e);
                if matches!(e, DbError::Unavailable(_)) {
                    self.client = None;
                }
                Err(e)
            }
        }
    }

    fn migrate(&mut self) -> Result<(), DbError> {
        // Up to date already: nothing to lock or create, so a role that may only read the
        // ledger (an auditor's) can report on it.
        let have: Option<i64> = self.with("reading the schema version", |c| {
            let exists: bool = c.query_one("SELECT to_regclass('ledger_schema') IS NOT NULL", &[])?.get(0);
            if !exists {
                return Ok(None);
            }
            c.query_one("SELECT MAX(version) FROM ledger_schema", &[]).map(|r| r.get(0))
        })?;
        if have == Some(current_version()) {
            return Ok(());
        }
        let newer = self.with("migrating the schema", |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS ledger_schema (version BIGINT PRIMARY KEY, applied_us BIGINT NOT NULL)",
            )?;
            let have: i64 = tx.query_one("SELECT COALESCE(MAX(version), 0) FROM ledger_schema", &[])?.get(0);
            if have > current_version() {
                return Ok(Some(have));
            }
            for (i, steps) in MIGRATIONS.iter().enumerate().skip(have as usize) {
                for sql in *steps {
                    tx.batch_execute(sql)?;
                }
                tx.execute(
                    "INSERT INTO ledger_schema (version, applied_us) VALUES ($1, $2)",
                    &[&(i as i64 + 1), &super::store::now_us()],
                )?;
            }
            tx.commit()?;
            Ok(None)
        })?;
        match newer {
            Some(v) => Err(DbError::Fatal(format!(
                "{}: its schema version {v} is newer than this proc_boxctl knows ({})",
                self.shown,
                current_version()
            ))),
            None => Ok(()),
        }
    }
}

fn job_from_row(r: &postgres::Row) -> Job {
    Job {
        message_id: r.get(0),
        ended_at: r.get(1),
        ended_us: r.get(2),
        box_id: r.get(3),
        host: r.get(4),
        owner_uid: r.get(5),
        owner_user: r.get(6),
        sched_name: r.get(7),
        sched_job_id: r.get(8),
        sched_account: r.get(9),
        sched_partition: r.get(10),
        sched_user: r.get(11),
        wall_us: r.get(12),
        cpu_user_us: r.get(13),
        cpu_sys_us: r.get(14),
        peak_pss_bytes: r.get(15),
        io_read_bytes: r.get(16),
        io_write_bytes: r.get(17),
        reason: r.get(18),
        exit_code: r.get(19),
        labels: r.get(20),
        raw: r.get(21),
    }
}

impl Store for Postgres {
    fn insert(&mut self, jobs: &[Job], ingested_us: i64) -> Result<Inserted, DbError> {
        self.with("storing summaries", |c| {
            let mut tx = c.transaction()?;
            let st = tx.prepare(&format!(
                "INSERT INTO jobs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
                 $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) ON CONFLICT (message_id) DO NOTHING"
            ))?;
            let stored = tx.prepare("SELECT raw FROM jobs WHERE message_id = $1")?;
            let mut done = Inserted::default();
            for (i, j) in jobs.iter().enumerate() {
                let added = tx.execute(
                    &st,
                    &[
                        &j.message_id,
                        &j.ended_at,
                        &j.ended_us,
                        &j.box_id,
                        &j.host,
                        &j.owner_uid,
                        &j.owner_user,
                        &j.sched_name,
                        &j.sched_job_id,
                        &j.sched_account,
                        &j.sched_partition,
                        &j.sched_user,
                        &j.wall_us,
                        &j.cpu_user_us,
                        &j.cpu_sys_us,
                        &j.peak_pss_bytes,
                        &j.io_read_bytes,
                        &j.io_write_bytes,
                        &j.reason,
                        &j.exit_code,
                        &j.labels,
                        &j.raw,
                        &ingested_us,
                    ],
                )? as usize;
                done.new += added;
                if added == 0 {
                    let raw: String = tx.query_one(&stored, &[&j.message_id])?.get(0);
                    if !same_summary(&raw, &j.raw) {
                        done.conflicts.push(i);
                    }
                }
            }
            tx.commit()?;
            Ok(done)
        })
    }

    fn dead_letter(&mut self, d: &DeadLetter) -> Result<(), DbError> {
        self.with("recording a dead letter", |c| {
            c.execute(
                "INSERT INTO dead_letters (message_id, reason, at_us) VALUES ($1, $2, $3)",
                &[&d.message_id, &d.reason, &d.at_us],
            )
            .map(|_| ())
        })
    }

    fn jobs(&mut self, since_us: Option<i64>, until_us: Option<i64>) -> Result<Vec<Job>, DbError> {
        let (a, b) = (since_us.unwrap_or(i64::MIN), until_us.unwrap_or(i64::MAX));
        self.with("reading jobs", |c| {
            let sql = format!(
                "SELECT {READ_COLUMNS} FROM jobs WHERE ended_us >= $1 AND ended_us < $2 ORDER BY ended_us, message_id"
            );
            Ok(c.query(&sql, &[&a, &b])?.iter().map(job_from_row).collect())
        })
    }

    fn status(&mut self) -> Result<Status, DbError> {
        self.with("reading the status", |c| {
            let r = c.query_one("SELECT COUNT(*), MAX(ingested_us) FROM jobs", &[])?;
            let dead: i64 = c.query_one("SELECT COUNT(*) FROM dead_letters", &[])?.get(0);
            let version: Option<i64> = c.query_one("SELECT MAX(version) FROM ledger_schema", &[])?.get(0);
            let last_dead = c
                .query(
                    "SELECT message_id, reason, at_us FROM dead_letters ORDER BY at_us DESC LIMIT 10",
                    &[],
                )?
                .iter()
                .map(|r| DeadLetter { message_id: r.get(0), reason: r.get(1), at_us: r.get(2) })
                .collect();
            Ok(Status {
                rows: r.get(0),
                last_ingest_us: r.get(1),
                dead_letters: dead,
                last_dead,
                schema_version: version.unwrap_or(0),
            })
        })
    }

    fn insert_samples(&mut self, samples: &[SampleRow]) -> Result<usize, DbError> {
        self.with("storing samples", |c| {
            let mut tx = c.transaction()?;
            let ins = tx.prepare(&format!(
                "INSERT INTO samples ({SAMPLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 $12, $13, $14, $15) ON CONFLICT (run, seq) DO NOTHING"
            ))?;
            let mut stored = 0;
            // Per run: (stride, last seq, last state, events kept, the sample before in this batch).
            let mut runs: Runs = Default::default();
            for r in samples {
                if !runs.contains_key(&r.run) {
                    let known = tx.query_opt("SELECT stride, last_seq, last_state FROM sample_runs WHERE run = $1", &[&r.run])?;
                    let events: i64 =
                        tx.query_one("SELECT COUNT(*) FROM samples WHERE run = $1 AND event = 1", &[&r.run])?.get(0);
                    let (stride, last, state) =
                        known.map_or((1, 0, None), |x| (x.get(0), x.get(1), Some(x.get::<_, String>(2))));
                    runs.insert(r.run.clone(), (stride, last, state, events, None));
                }
                let Some(run) = runs.get_mut(&r.run) else { continue };
                // The state before this sample: the batch's previous sample of the run, else the
                // last one stored, if either came before it (samples may come again, or late).
                let before = run.4.as_ref().filter(|(s, _)| *s < r.seq).map(|(_, st)| st.as_str());
                let before = before.or(run.2.as_deref().filter(|_| run.1 < r.seq));
                let (store, event) = keep(r.seq, run.0, before, &r.state, run.3);
                run.4 = Some((r.seq, r.state.clone()));
                if store {
                    let n = tx.execute(
                        &ins,
                        &[
                            &r.run,
                            &r.box_id,
                            &r.host,
                            &r.seq,
                            &r.time_us,
                            &r.elapsed_us,
                            &r.state,
                            &r.processes,
                            &r.processes_started,
                            &r.cpu_us,
                            &r.rss_bytes,
                            &r.pss_bytes,
                            &r.io_read_bytes,
                            &r.io_write_bytes,
                            &i64::from(event),
                        ],
                    )? as usize;
                    stored += n;
                    run.3 += if event { n as i64 } else { 0 };
                }
                if r.seq > run.1 {
                    run.1 = r.seq;
                    run.2 = Some(r.state.clone());
                }
            }
            for (name, (mut stride, last, state, _, _)) in runs {
                loop {
                    let count: i64 =
                        tx.query_one("SELECT COUNT(*) FROM samples WHERE run = $1 AND event = 0", &[&name])?.get(0);
                    if count <= MAX_SAMPLES {
                        break;
                    }
                    stride *= 2;
                    tx.execute(
                        "DELETE FROM samples WHERE run = $1 AND event = 0 AND seq > 1 AND seq % $2 <> 0",
                        &[&name, &stride],
                    )?;
                }
                tx.execute(
                    "INSERT INTO sample_runs (run, stride, last_seq, last_state) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (run) DO UPDATE SET stride = excluded.stride, last_seq = excluded.last_seq, \
                     last_state = excluded.last_state",
                    &[&name, &stride, &last, &state.unwrap_or_default()],
                )?;
            }
            tx.commit()?;
            Ok(stored)
        })
    }

    fn samples(&mut self, run: &str) -> Result<(i64, Vec<SampleRow>), DbError> {
        self.with("reading samples", |c| {
            let stride: Option<i64> =
                c.query_opt("SELECT stride FROM sample_runs WHERE run = $1", &[&run])?.map(|x| x.get(0));
            let rows = c.query(
                &format!("SELECT {SAMPLE_COLUMNS} FROM samples WHERE run = $1 ORDER BY seq"),
                &[&run],
            )?;
            let rows = rows
                .iter()
                .map(|x| SampleRow {
                    run: x.get(0),
                    box_id: x.get(1),
                    host: x.get(2),
                    seq: x.get(3),
                    time_us: x.get(4),
                    elapsed_us: x.get(5),
                    state: x.get(6),
                    processes: x.get(7),
                    processes_started: x.get(8),
                    cpu_us: x.get(9),
                    rss_bytes: x.get(10),
                    pss_bytes: x.get(11),
                    io_read_bytes: x.get(12),
                    io_write_bytes: x.get(13),
                })
                .collect();
            Ok((stride.unwrap_or(1), rows))
        })
    }

    fn find_box(&mut self, id: &str) -> Result<Option<Found>, DbError> {
        let cols = COLUMNS.trim_end_matches(", ingested_us");
        self.with("finding the box", |c| {
            let sql = format!(
                "SELECT {cols} FROM jobs WHERE box_id = $1 OR message_id = $1 ORDER BY ended_us DESC LIMIT 1"
            );
            if let Some(r) = c.query_opt(&sql, &[&id])? {
                return Ok(Some(Found::Job(Box::new(job_from_row(&r)))));
            }
            let run = c.query_opt(
                "SELECT run FROM samples WHERE box_id = $1 ORDER BY time_us DESC LIMIT 1",
                &[&id],
            )?;
            Ok(run.map(|r| Found::Running { run: r.get(0) }))
        })
    }
}

/// Per run while storing samples: (stride, last seq stored, its state, events kept, the
/// previous sample of the batch).
type Runs = std::collections::BTreeMap<String, (i64, i64, Option<String>, i64, Option<(i64, String)>)>;
