//! The embedded store: one SQLite file, in WAL mode so that reports read while a consumer
//! writes, with a long busy timeout so that two writers wait for each other instead of failing.

use super::store::{
    current_version, same_summary, DbError, DeadLetter, Inserted, Job, Status, Store, COLUMNS, MIGRATIONS,
    READ_COLUMNS,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::time::Duration;

pub struct Sqlite {
    conn: Connection,
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
        let mut s = Sqlite { conn };
        s.migrate().map_err(|e| DbError::Fatal(format!("{what}: {e}")))?;
        Ok(s)
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
        let mut st = self.conn.prepare(&sql).map_err(fatal("reading jobs"))?;
        let rows = st
            .query_map(params![since_us.unwrap_or(i64::MIN), until_us.unwrap_or(i64::MAX)], job_from_row)
            .map_err(fatal("reading jobs"))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(fatal("reading jobs"))
    }

    fn status(&mut self) -> Result<Status, DbError> {
        let what = "reading the status";
        let c = &self.conn;
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
