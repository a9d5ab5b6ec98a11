//! The embedded store: one SQLite file, in WAL mode so that reports read while a consumer
//! writes, with a long busy timeout so that two writers wait for each other instead of failing.

use super::store::{
    current_version, keep, same_summary, DbError, DeadLetter, Found, Inserted, Job, SampleRow, Status, Store,
    COLUMNS, MAX_SAMPLES, MIGRATIONS, READ_COLUMNS, SAMPLE_COLUMNS,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

pub struct Sqlite {
    conn: Connection,
    /// Set when the file is read without locks (see [`Sqlite::open_read`]): the file's stamp
    /// when it was opened, which each read checks afterwards.
    unlocked: Option<(std::path::PathBuf, Stamp)>,
}

/// What changes when a writer checkpoints into the main file.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        ino: m.ino(),
        len: m.len(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    })
}

/// `PATH` with `suffix` appended: SQLite's `-wal` and `-shm` files.
fn beside(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// A busy or locked database, a full disk or an I/O error may pass: worth retrying (a
/// consumer then acknowledges nothing until it does). Anything else needs the operator.
fn fatal(what: &str) -> impl Fn(rusqlite::Error) -> DbError + '_ {
    use rusqlite::ffi::ErrorCode;
    move |e| {
        let m = format!("{what}: {e}");
        match e.sqlite_error_code() {
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure,
            ) => DbError::Unavailable(m),
            _ => DbError::Fatal(m),
        }
    }
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, DbError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                    DbError::Fatal(format!("cannot create the directory {}: {e}", dir.display()))
                })?;
            }
        }
        let what = format!("opening the SQLite database {}", path.display());
        let conn = Connection::open(path).map_err(fatal(&what))?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(fatal(&what))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(fatal(&what))?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(fatal(&what))?;
        let mut s = Sqlite { conn, unlocked: None };
        s.migrate().map_err(|e| DbError::Fatal(format!("{what}: {e}")))?;
        Ok(s)
    }

    /// For the commands that only read: a read-only connection, so that a user who may read
    /// the ledger but not write it (an auditor, a web page generator) can report on it. Only a
    /// file whose schema is not this build's is opened for writing, to migrate it (or to say
    /// that it cannot).
    ///
    /// A WAL-mode file can be read without write access only while a writer has its `-shm`
    /// index open (SQLite needs one to read). With no writer, there is no index and no one to
    /// make it, and the file holds every committed row (the last writer checkpointed it at
    /// close): it is then read without locks (`immutable`), and each read checks afterwards
    /// that no writer changed the file meanwhile, or reads again.
    pub fn open_read(path: &Path) -> Result<Sqlite, DbError> {
        let what = format!("opening the SQLite database {}", path.display());
        let s = match Sqlite::connect_read(path, false) {
            Ok(s) => s,
            Err(e) if Sqlite::unlocked_read_is_whole(path) => {
                Sqlite::connect_read(path, true).map_err(|_| e)?
            }
            Err(e) => return Err(e),
        };
        let have: Option<i64> = s
            .conn
            .query_row("SELECT MAX(version) FROM ledger_schema", [], |r| r.get(0))
            .map_err(|e| DbError::Fatal(format!("{what}: not a ledger database ({e})")))?;
        if have == Some(current_version()) {
            return Ok(s);
        }
        drop(s);
        Sqlite::open(path)
    }

    /// No `-shm` (no writer now) and no `-wal` holding rows the main file lacks.
    fn unlocked_read_is_whole(path: &Path) -> bool {
        !beside(path, "-shm").exists()
            && std::fs::metadata(beside(path, "-wal")).map_or(true, |m| m.len() == 0)
    }

    fn connect_read(path: &Path, unlocked: bool) -> Result<Sqlite, DbError> {
        use rusqlite::OpenFlags;
        let what = format!("opening the SQLite database {}", path.display());
        let flags =
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let before = stamp(path);
        let conn = if unlocked {
            // A URI names the file: percent-encode what a URI would read otherwise.
            let Some(text) = path.to_str() else {
                return Err(DbError::Fatal(format!("{what}: a path that is not UTF-8 cannot be read here")));
            };
            let uri: String = text
                .chars()
                .map(|c| match c {
                    '%' | '?' | '#' => format!("%{:02X}", c as u32),
                    c => c.to_string(),
                })
                .collect();
            Connection::open_with_flags(format!("file:{uri}?immutable=1"), flags)
        } else {
            Connection::open_with_flags(path, flags)
        }
        .map_err(fatal(&what))?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(fatal(&what))?;
        // The check reads the file: under a writer's lock, or (unlocked) against the stamp.
        conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))
            .map_err(fatal(&what))?;
        let unlocked = match (unlocked, before) {
            (true, Some(st)) => Some((path.to_owned(), st)),
            (true, None) => return Err(DbError::Fatal(format!("{what}: it went away"))),
            (false, _) => None,
        };
        Ok(Sqlite { conn, unlocked })
    }

    /// Runs a read; read without locks, it is taken again (a few times) if a writer changed the
    /// file meanwhile, so that a report never mixes two states of the ledger.
    fn read<T>(&mut self, mut f: impl FnMut(&Connection) -> Result<T, DbError>) -> Result<T, DbError> {
        for _ in 0..5 {
            let v = f(&self.conn)?;
            let Some((path, st)) = self.unlocked.clone() else { return Ok(v) };
            if stamp(&path) == Some(st) && Sqlite::unlocked_read_is_whole(&path) {
                return Ok(v);
            }
            // A writer came: it has an index now, so a locked read-only open may work.
            *self = match Sqlite::connect_read(&path, false) {
                Ok(s) => s,
                Err(_) if Sqlite::unlocked_read_is_whole(&path) => Sqlite::connect_read(&path, true)?,
                Err(e) => return Err(e),
            };
        }
        Err(DbError::Unavailable("the ledger kept changing while it was read; run again".into()))
    }

    /// Brings the schema up to date under the write lock, so that two processes opening a new
    /// file at once migrate it once.
    fn migrate(&mut self) -> Result<(), String> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| e.to_string())?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS ledger_schema (version BIGINT PRIMARY KEY, applied_us BIGINT NOT NULL)",
        )
        .map_err(|e| e.to_string())?;
        let have: i64 = tx
            .query_row("SELECT COALESCE(MAX(version), 0) FROM ledger_schema", [], |r| r.get(0))
            .map_err(|e| e.to_string())?;
        if have > current_version() {
            return Err(format!(
                "its schema version {have} is newer than this proc_boxctl knows ({})",
                current_version()
            ));
        }
        for (i, steps) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            for sql in *steps {
                tx.execute_batch(sql).map_err(|e| format!("migration {}: {e}", i + 1))?;
            }
            tx.execute(
                "INSERT INTO ledger_schema (version, applied_us) VALUES (?1, ?2)",
                params![i as i64 + 1, super::store::now_us()],
            )
            .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

pub fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        message_id: r.get(0)?,
        ended_at: r.get(1)?,
        ended_us: r.get(2)?,
        box_id: r.get(3)?,
        host: r.get(4)?,
        owner_uid: r.get(5)?,
        owner_user: r.get(6)?,
        sched_name: r.get(7)?,
        sched_job_id: r.get(8)?,
        sched_account: r.get(9)?,
        sched_partition: r.get(10)?,
        sched_user: r.get(11)?,
        wall_us: r.get(12)?,
        cpu_user_us: r.get(13)?,
        cpu_sys_us: r.get(14)?,
        peak_pss_bytes: r.get(15)?,
        io_read_bytes: r.get(16)?,
        io_write_bytes: r.get(17)?,
        reason: r.get(18)?,
        exit_code: r.get(19)?,
        labels: r.get(20)?,
        raw: r.get(21)?,
    })
}

impl Store for Sqlite {
    fn insert(&mut self, jobs: &[Job], ingested_us: i64) -> Result<Inserted, DbError> {
        let what = "storing summaries";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(fatal(what))?;
        let mut done = Inserted::default();
        {
            let sql = format!(
                "INSERT INTO jobs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, \
                 ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23) ON CONFLICT (message_id) DO NOTHING"
            );
            let mut st = tx.prepare_cached(&sql).map_err(fatal(what))?;
            let mut stored =
                tx.prepare_cached("SELECT raw FROM jobs WHERE message_id = ?1").map_err(fatal(what))?;
            for (i, j) in jobs.iter().enumerate() {
                let added = st
                    .execute(params![
                        j.message_id,
                        j.ended_at,
                        j.ended_us,
                        j.box_id,
                        j.host,
                        j.owner_uid,
                        j.owner_user,
                        j.sched_name,
                        j.sched_job_id,
                        j.sched_account,
                        j.sched_partition,
                        j.sched_user,
                        j.wall_us,
                        j.cpu_user_us,
                        j.cpu_sys_us,
                        j.peak_pss_bytes,
                        j.io_read_bytes,
                        j.io_write_bytes,
                        j.reason,
                        j.exit_code,
                        j.labels,
                        j.raw,
                        ingested_us
                    ])
                    .map_err(fatal(what))?;
                done.new += added;
                if added == 0 {
                    let raw: String = stored.query_row([&j.message_id], |r| r.get(0)).map_err(fatal(what))?;
                    if !same_summary(&raw, &j.raw) {
                        done.conflicts.push(i);
                    }
                }
            }
        }
        tx.commit().map_err(fatal(what))?;
        Ok(done)
    }

    fn dead_letter(&mut self, d: &DeadLetter) -> Result<(), DbError> {
        self.conn
            .execute(
                "INSERT INTO dead_letters (message_id, reason, at_us) VALUES (?1, ?2, ?3)",
                params![d.message_id, d.reason, d.at_us],
            )
            .map_err(fatal("recording a dead letter"))?;
        Ok(())
    }

    fn jobs(&mut self, since_us: Option<i64>, until_us: Option<i64>) -> Result<Vec<Job>, DbError> {
        let sql = format!(
            "SELECT {READ_COLUMNS} FROM jobs WHERE ended_us >= ?1 AND ended_us < ?2 ORDER BY ended_us, message_id"
        );
        self.read(|c| {
            let mut st = c.prepare(&sql).map_err(fatal("reading jobs"))?;
            let rows = st
                .query_map(params![since_us.unwrap_or(i64::MIN), until_us.unwrap_or(i64::MAX)], job_from_row)
                .map_err(fatal("reading jobs"))?;
            rows.collect::<Result<Vec<_>, _>>().map_err(fatal("reading jobs"))
        })
    }

    fn status(&mut self) -> Result<Status, DbError> {
        self.read(Sqlite::read_status)
    }

    fn insert_samples(&mut self, samples: &[SampleRow]) -> Result<usize, DbError> {
        let what = "storing samples";
        let f = fatal(what);
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(&f)?;
        let mut stored = 0;
        {
            // Per run: (stride, last seq, last state, events kept, the sample before in this batch).
            let mut runs: Runs = Default::default();
            let mut ins = tx
                .prepare_cached(&format!(
                    "INSERT INTO samples ({SAMPLE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, \
                     ?12, ?13, ?14, ?15) ON CONFLICT (run, seq) DO NOTHING"
                ))
                .map_err(&f)?;
            for r in samples {
                if !runs.contains_key(&r.run) {
                    let known: Option<(i64, i64, String)> = tx
                        .query_row(
                            "SELECT stride, last_seq, last_state FROM sample_runs WHERE run = ?1",
                            [&r.run],
                            |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)),
                        )
                        .optional()
                        .map_err(&f)?;
                    let events: i64 = tx
                        .query_row(
                            "SELECT COUNT(*) FROM samples WHERE run = ?1 AND event = 1",
                            [&r.run],
                            |x| x.get(0),
                        )
                        .map_err(&f)?;
                    let (stride, last, state) = known.map_or((1, 0, None), |(a, b, c)| (a, b, Some(c)));
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
                    let n = ins
                        .execute(params![
                            r.run,
                            r.box_id,
                            r.host,
                            r.seq,
                            r.time_us,
                            r.elapsed_us,
                            r.state,
                            r.processes,
                            r.processes_started,
                            r.cpu_us,
                            r.rss_bytes,
                            r.pss_bytes,
                            r.io_read_bytes,
                            r.io_write_bytes,
                            i64::from(event)
                        ])
                        .map_err(&f)?;
                    stored += n;
                    run.3 += if event { n as i64 } else { 0 };
                }
                if r.seq > run.1 {
                    run.1 = r.seq;
                    run.2 = Some(r.state.clone());
                }
            }
            for (name, (mut stride, last, state, _, _)) in runs {
                let count = |tx: &rusqlite::Transaction| -> Result<i64, DbError> {
                    tx.query_row("SELECT COUNT(*) FROM samples WHERE run = ?1 AND event = 0", [&name], |x| {
                        x.get(0)
                    })
                    .map_err(fatal(what))
                };
                while count(&tx)? > MAX_SAMPLES {
                    stride *= 2;
                    tx.execute(
                        "DELETE FROM samples WHERE run = ?1 AND event = 0 AND seq > 1 AND seq % ?2 <> 0",
                        params![name, stride],
                    )
                    .map_err(&f)?;
                }
                tx.execute(
                    "INSERT INTO sample_runs (run, stride, last_seq, last_state) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (run) DO UPDATE SET stride = excluded.stride, last_seq = excluded.last_seq, \
                     last_state = excluded.last_state",
                    params![name, stride, last, state.unwrap_or_default()],
                )
                .map_err(&f)?;
            }
        }
        tx.commit().map_err(&f)?;
        Ok(stored)
    }

    fn samples(&mut self, run: &str) -> Result<(i64, Vec<SampleRow>), DbError> {
        self.read(|c| {
            let f = fatal("reading samples");
            let stride: Option<i64> = c
                .query_row("SELECT stride FROM sample_runs WHERE run = ?1", [run], |x| x.get(0))
                .optional()
                .map_err(&f)?;
            let mut st = c
                .prepare(&format!("SELECT {SAMPLE_COLUMNS} FROM samples WHERE run = ?1 ORDER BY seq"))
                .map_err(&f)?;
            let rows = st
                .query_map([run], |x| {
                    Ok(SampleRow {
                        run: x.get(0)?,
                        box_id: x.get(1)?,
                        host: x.get(2)?,
                        seq: x.get(3)?,
                        time_us: x.get(4)?,
                        elapsed_us: x.get(5)?,
                        state: x.get(6)?,
                        processes: x.get(7)?,
                        processes_started: x.get(8)?,
                        cpu_us: x.get(9)?,
                        rss_bytes: x.get(10)?,
                        pss_bytes: x.get(11)?,
                        io_read_bytes: x.get(12)?,
                        io_write_bytes: x.get(13)?,
                    })
                })
                .map_err(&f)?;
            Ok((stride.unwrap_or(1), rows.collect::<Result<Vec<_>, _>>().map_err(&f)?))
        })
    }

    fn find_box(&mut self, id: &str) -> Result<Option<Found>, DbError> {
        let cols = COLUMNS.trim_end_matches(", ingested_us");
        self.read(|c| {
            let f = fatal("finding the box");
            let job = c
                .query_row(
                    &format!(
                        "SELECT {cols} FROM jobs WHERE box_id = ?1 OR message_id = ?1 ORDER BY ended_us DESC LIMIT 1"
                    ),
                    [id],
                    job_from_row,
                )
                .optional()
                .map_err(&f)?;
            if let Some(j) = job {
                return Ok(Some(Found::Job(Box::new(j))));
            }
            let run: Option<String> = c
                .query_row("SELECT run FROM samples WHERE box_id = ?1 ORDER BY time_us DESC LIMIT 1", [id], |x| {
                    x.get(0)
                })
                .optional()
                .map_err(&f)?;
            Ok(run.map(|run| Found::Running { run }))
        })
    }
}

impl Sqlite {
    fn read_status(c: &Connection) -> Result<Status, DbError> {
        let what = "reading the status";
        let (rows, last): (i64, Option<i64>) = c
            .query_row("SELECT COUNT(*), MAX(ingested_us) FROM jobs", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(fatal(what))?;
        let dead: i64 =
            c.query_row("SELECT COUNT(*) FROM dead_letters", [], |r| r.get(0)).map_err(fatal(what))?;
        let version: i64 = c
            .query_row("SELECT MAX(version) FROM ledger_schema", [], |r| r.get(0))
            .optional()
            .map_err(fatal(what))?
            .unwrap_or(0);
        let mut st = c
            .prepare("SELECT message_id, reason, at_us FROM dead_letters ORDER BY at_us DESC LIMIT 10")
            .map_err(fatal(what))?;
        let last_dead = st
            .query_map([], |r| Ok(DeadLetter { message_id: r.get(0)?, reason: r.get(1)?, at_us: r.get(2)? }))
            .map_err(fatal(what))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fatal(what))?;
        Ok(Status { rows, last_ingest_us: last, dead_letters: dead, last_dead, schema_version: version })
    }
}

/// Per run while storing samples: (stride, last seq stored, its state, events kept, the
/// previous sample of the batch).
type Runs = std::collections::BTreeMap<String, (i64, i64, Option<String>, i64, Option<(i64, String)>)>;
