//! From a summary (a message body, a line of a stats file, a summary file, a spool entry) to a
//! [`Job`] row, and `ledger import`.
//!
//! Validation is strict where a bill depends on it: a summary without a `message_id`, an end
//! time, the wall time or the CPU figures is refused with the reason, never stored with a
//! guess. Fields added to the summary after schema 1 (`owner`, `scheduler`) are optional.

use super::store::{Job, SampleRow, Store};
use serde_json::Value;
use std::path::Path;

/// Summary schema versions this ledger reads.
pub const SCHEMAS: [i64; 1] = [1];

/// What a JSON object turned out to be.
pub enum Parsed {
    Job(Box<Job>),
    /// A sample: stored only with `--samples`.
    Sample(Box<SampleRow>),
    /// Not a summary (a sample without the figures a chart needs): nothing to store, nothing wrong.
    Other,
}

/// The longest run, box id, host name or state a stored sample may have. The ledger bounds a
/// run's samples by count; without this a publisher could still fill the database with a few
/// hundred rows of a megabyte each (a real state is a word, a real id far shorter).
pub const MAX_SAMPLE_TEXT: usize = 1024;

/// A sample line to what the ledger keeps of it; `None` when it lacks what a chart needs, or a
/// text field is longer than [`MAX_SAMPLE_TEXT`].
pub fn sample_row(v: &Value) -> Option<SampleRow> {
    let text = |k: &str| v.get(k)?.as_str().filter(|s| s.len() <= MAX_SAMPLE_TEXT);
    let id = v.get("message_id")?.as_str()?;
    let run = &id[..id.rfind("-sample-")?];
    if run.len() > MAX_SAMPLE_TEXT {
        return None;
    }
    let us = |k: &str| {
        v.get(k)
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && (0.0..1e12).contains(s))
            .map(|s| (s * 1e6).round() as i64)
    };
    let n = |k: &str| v.get(k).and_then(Value::as_u64).and_then(|n| i64::try_from(n).ok());
    Some(SampleRow {
        run: run.to_owned(),
        box_id: text("box_id")?.to_owned(),
        host: text("hostname")?.to_owned(),
        seq: n("seq")?,
        time_us: us("time_unix")?,
        elapsed_us: us("elapsed_seconds"),
        state: match v.get("state").and_then(Value::as_str) {
            None => "running".to_owned(),
            Some(_) => text("state")?.to_owned(),
        },
        processes: n("processes").unwrap_or(0),
        processes_started: n("processes_started").unwrap_or(0),
        cpu_us: us("cpu_user_seconds")?.checked_add(us("cpu_system_seconds")?)?,
        rss_bytes: n("rss_bytes").unwrap_or(0),
        pss_bytes: n("pss_bytes"),
        io_read_bytes: n("io_read_bytes").unwrap_or(0),
        io_write_bytes: n("io_write_bytes").unwrap_or(0),
    })
}

/// Seconds (a JSON number) to whole microseconds, rounded to the nearest.
fn micros(v: &Value, field: &str) -> Result<i64, String> {
    let s = v
        .get(field)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("'{field}' is missing or not a number"))?;
    if !s.is_finite() || !(0.0..1e12).contains(&s) {
        return Err(format!("'{field}' is out of range: {s}"));
    }
    Ok((s * 1e6).round() as i64)
}

fn count(v: &Value, field: &str) -> Result<i64, String> {
    match v.get(field) {
        Some(Value::Null) => Ok(0),
        Some(n) => n
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .ok_or_else(|| format!("'{field}' is not a non-negative integer")),
        None => Err(format!("'{field}' is missing")),
    }
}

fn text(v: &Value, field: &str) -> Result<String, String> {
    match v.get(field).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_owned()),
        _ => Err(format!("'{field}' is missing or not a string")),
    }
}

fn opt_text(v: Option<&Value>, field: &str) -> Option<String> {
    v.and_then(|o| o.get(field)).and_then(Value::as_str).map(str::to_owned)
}

/// RFC 3339 UTC to microseconds since the epoch.
pub fn parse_time_us(s: &str) -> Option<i64> {
    let s = s.trim();
    // An RFC 3339 offset (`+02:00`, `-05:30`): humantime reads UTC only, so the time is read as
    // UTC and the offset taken off.
    let (base, offset_s) = match s.len().checked_sub(6).and_then(|i| s.get(i..).map(|tail| (i, tail))) {
        Some((i, tail))
            if (tail.starts_with('+') || tail.starts_with('-'))
                && tail.as_bytes()[3] == b':'
                && s.as_bytes().get(i.wrapping_sub(3)).is_some_and(|&b| b == b':') =>
        {
            let h: i64 = tail[1..3].parse().ok()?;
            let m: i64 = tail[4..6].parse().ok()?;
            if h > 23 || m > 59 {
                return None;
            }
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            (&s[..i], sign * (h * 3600 + m * 60))
        }
        _ => (s, 0),
    };
    let t = humantime::parse_rfc3339_weak(base.trim_end_matches(['Z', 'z'])).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_micros()).ok()?.checked_sub(offset_s * 1_000_000)
}

/// One summary object (with `raw` its text as received).
pub fn parse(v: &Value, raw: &str) -> Result<Parsed, String> {
    let Some(obj) = v.as_object() else { return Err("not a JSON object".into()) };
    match obj.get("type").and_then(Value::as_str) {
        Some("summary") => {}
        Some("sample") => return Ok(sample_row(v).map_or(Parsed::Other, |r| Parsed::Sample(Box::new(r)))),
        Some(t) => return Err(format!("unknown message type '{t}'")),
        None => return Err("'type' is missing".into()),
    }
    let schema = v.get("schema").and_then(Value::as_i64).ok_or("'schema' is missing or not an integer")?;
    if !SCHEMAS.contains(&schema) {
        return Err(format!("unknown summary schema {schema}"));
    }
    let ended_at = text(v, "ended_at")?;
    let ended_us =
        parse_time_us(&ended_at).ok_or_else(|| format!("'ended_at' is not an RFC 3339 time: {ended_at}"))?;
    let exit_code =
        v.get("exit_code").and_then(Value::as_i64).ok_or("'exit_code' is missing or not an integer")?;
    let labels = match v.get("user") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(u @ Value::Object(_)) => u.to_string(),
        Some(_) => return Err("'user' is not an object".into()),
    };
    let owner = v.get("owner").filter(|o| o.is_object());
    let sched = v.get("scheduler").filter(|o| o.is_object());
    Ok(Parsed::Job(Box::new(Job {
        message_id: text(v, "message_id")?,
        ended_at,
        ended_us,
        box_id: text(v, "box_id")?,
        host: text(v, "hostname")?,
        owner_uid: owner.and_then(|o| o.get("uid")).and_then(Value::as_i64),
        owner_user: opt_text(owner, "user"),
        sched_name: opt_text(sched, "name"),
        sched_job_id: opt_text(sched, "job_id"),
        sched_account: opt_text(sched, "account"),
        sched_partition: opt_text(sched, "partition"),
        sched_user: opt_text(sched, "user"),
        wall_us: micros(v, "wall_seconds")?,
        cpu_user_us: micros(v, "cpu_user_seconds")?,
        cpu_sys_us: micros(v, "cpu_system_seconds")?,
        peak_pss_bytes: count(v, "peak_pss_bytes")?,
        io_read_bytes: count(v, "io_read_bytes")?,
        io_write_bytes: count(v, "io_write_bytes")?,
        reason: text(v, "reason")?,
        exit_code,
        labels,
        raw: raw.to_owned(),
    })))
}

/// A message body: JSON text first.
pub fn parse_text(raw: &str) -> Result<Parsed, String> {
    let v: Value = serde_json::from_str(raw).map_err(|e| format!("bad JSON: {e}"))?;
    parse(&v, raw)
}

#[derive(Debug, Default)]
pub struct Totals {
    pub new: usize,
    pub stored: usize,
    pub rejected: usize,
    pub skipped: usize,
    /// With `--samples`: samples read, and stored (after thinning; none twice).
    pub samples_read: usize,
    pub samples_stored: usize,
}

/// One line of a file (1-based) and what it held.
type Line = (usize, Result<Parsed, String>);

/// The whole of a regular file. Anything else (a FIFO, a device, a directory) is refused, not
/// read: a FIFO would block the import for ever and `/dev/zero` would fill the memory.
pub fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// Opens a regular file to read; anything else (a FIFO, a directory, a device) is refused.
pub fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    // Non-blocking, so that opening a FIFO with no writer returns at once, to be refused.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    if !f.metadata().map_err(|e| e.to_string())?.is_file() {
        return Err("not a regular file".into());
    }
    Ok(f)
}

/// What one file holds: a [`Line`] per summary, sample or bad line. A line that is not UTF-8
/// is one bad line, not a bad file.
fn read_file(path: &Path) -> Result<Vec<Line>, String> {
    let bytes = read_regular(path)?;
    // A spool entry or a pretty-printed summary: one JSON object in the whole file.
    if let Some(v) = std::str::from_utf8(&bytes).ok().and_then(|t| serde_json::from_str::<Value>(t).ok()) {
        if let Some(body) = v.get("body").and_then(Value::as_str).filter(|_| v.get("exchange").is_some()) {
            // A spool entry: the summary is its body, as sent.
            return Ok(vec![(1, parse_text(body))]);
        }
        if v.get("type").is_some() {
            let text = std::str::from_utf8(&bytes).unwrap_or_default();
            return Ok(vec![(1, parse(&v, text.trim()))]);
        }
    }
    Ok(bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
        .map(|(i, l)| {
            let parsed = std::str::from_utf8(l)
                .map_err(|_| "not UTF-8 text".to_owned())
                .and_then(|t| parse_text(t.trim()));
            (i + 1, parsed)
        })
        .collect())
}

/// Spool entries (`<id>.json`, `<id>…deferred`), in name order; temporary files are skipped,
/// and so is a link (the spool itself never follows one).
fn spool_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            !n.starts_with('.') && (n.ends_with(".json") || n.ends_with(".deferred"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Counts what an insert of `jobs` (each with its `path:line`) did; a message id stored with
/// other content is named and counted as rejected.
fn tally(
    t: &mut Totals,
    jobs: &[(Job, String)],
    done: super::store::Inserted,
    complain: &mut dyn FnMut(String),
) {
    t.new += done.new;
    t.stored += jobs.len() - done.new - done.conflicts.len();
    for i in done.conflicts {
        let (job, origin) = &jobs[i];
        complain(format!("{origin}: {}: {}", job.message_id, super::store::CONFLICT));
        t.rejected += 1;
    }
}

/// `ledger import`: every path's summaries into `store`, in batches; a bad line or file is
/// reported through `complain` (`path:line: reason`) and counted, and the rest go on.
pub fn import(
    store: &mut dyn Store,
    paths: &[std::path::PathBuf],
    samples: bool,
    complain: &mut dyn FnMut(String),
) -> Result<Totals, super::store::DbError> {
    const BATCH: usize = 1000;
    const SAMPLE_CHUNK: usize = 2000;
    let mut t = Totals::default();
    // Each job with where it came from (`path:line`), to name it if the database refuses it.
    let mut batch: Vec<(Job, String)> = Vec::new();
    let flush = |batch: &mut Vec<(Job, String)>,
                 t: &mut Totals,
                 store: &mut dyn Store,
                 complain: &mut dyn FnMut(String)| {
        if batch.is_empty() {
            return Ok(());
        }
        let jobs: Vec<Job> = batch.iter().map(|(j, _)| j.clone()).collect();
        match store.insert(&jobs, super::store::now_us()) {
            // The same message twice in one batch counts once.
            Ok(done) => tally(t, batch, done, complain),
            // One row the database refuses (its own data): the rest go in one by one, and only
            // that one is rejected, by name. A database that is down or refuses all stops here.
            Err(super::store::DbError::Fatal(_)) => {
                for (job, origin) in batch.iter() {
                    match store.insert(std::slice::from_ref(job), super::store::now_us()) {
                        Ok(done) => {
                            tally(t, std::slice::from_ref(&(job.clone(), origin.clone())), done, complain)
                        }
                        Err(super::store::DbError::Fatal(e)) => {
                            complain(format!("{origin}: the database refused it: {e}"));
                            t.rejected += 1;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        batch.clear();
        Ok::<_, super::store::DbError>(())
    };
    for path in paths {
        let files = if path.is_dir() {
            match spool_files(path) {
                Ok(f) => f,
                Err(e) => {
                    complain(format!("{}: {e}", path.display()));
                    t.rejected += 1;
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            match read_file(&file) {
                Err(e) => {
                    complain(format!("{}: {e}", file.display()));
                    t.rejected += 1;
                }
                Ok(items) => {
                    let mut rows = Vec::new();
                    for (line, item) in items {
                        match item {
                            Ok(Parsed::Job(j)) => batch.push((*j, format!("{}:{line}", file.display()))),
                            Ok(Parsed::Sample(r)) if samples => rows.push(*r),
                            Ok(Parsed::Sample(_) | Parsed::Other) => t.skipped += 1,
                            Err(e) => {
                                complain(format!("{}:{line}: {e}", file.display()));
                                t.rejected += 1;
                            }
                        }
                    }
                    t.samples_read += rows.len();
                    // In chunks, as `ledger run` stores them: a run's stride grows between
                    // chunks, so a file of a million samples never puts a million rows into
                    // one transaction before they are thinned.
                    for chunk in rows.chunks(SAMPLE_CHUNK) {
                        match store.insert_samples(chunk) {
                            Ok(n) => t.samples_stored += n,
                            Err(super::store::DbError::Fatal(e)) => {
                                complain(format!(
                                    "{}: its samples: the database refused them: {e}",
                                    file.display()
                                ));
                                break;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }
            if batch.len() >= BATCH {
                flush(&mut batch, &mut t, store, complain)?;
            }
        }
    }
    flush(&mut batch, &mut t, store, complain)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Value {
        serde_json::json!({"type": "summary", "schema": 1, "message_id": "m1", "box_id": "b",
            "hostname": "h", "ended_at": "2026-12-01T10:00:00.500000Z", "wall_seconds": 1.5,
            "exit_code": 0, "reason": "exited", "cpu_user_seconds": 0.25, "cpu_system_seconds": 0.0000004,
            "peak_pss_bytes": 1024, "io_read_bytes": 1, "io_write_bytes": 2, "user": {"account": "a"},
            "owner": {"uid": 1000, "user": "ann"}, "scheduler": {"name": null, "account": null}})
    }

    #[test]
    fn parses_a_summary() {
        let v = summary();
        let Parsed::Job(j) = parse(&v, "raw").unwrap() else { panic!("not a job") };
        assert_eq!(j.ended_us, 1_796_119_200_500_000);
        assert_eq!((j.wall_us, j.cpu_user_us, j.cpu_sys_us), (1_500_000, 250_000, 0));
        assert_eq!(j.owner_user.as_deref(), Some("ann"));
        assert_eq!(j.sched_account, None);
        assert_eq!(j.labels, r#"{"account":"a"}"#);
    }

    #[test]
    fn refuses_what_a_bill_cannot_use() {
        for (field, value, why) in [
            ("message_id", Value::Null, "message_id"),
            ("schema", 7.into(), "schema 7"),
            ("ended_at", "yesterday".into(), "RFC 3339"),
            ("wall_seconds", (-1.0).into(), "out of range"),
            ("user", 3.into(), "not an object"),
            ("type", "x".into(), "unknown message type"),
        ] {
            let mut v = summary();
            v[field] = value;
            let e = parse(&v, "").err().unwrap_or_default();
            assert!(e.contains(why), "{field}: {e}");
        }
        assert!(matches!(parse(&serde_json::json!({"type": "sample"}), ""), Ok(Parsed::Other)));
        let sample = serde_json::json!({"type": "sample", "message_id": "h-1-ab-sample-7", "box_id": "b",
            "hostname": "h", "seq": 7, "time_unix": 1.5, "cpu_user_seconds": 0.25, "cpu_system_seconds": 0.5,
            "state": "suspended", "pss_bytes": null, "rss_bytes": 10});
        let Ok(Parsed::Sample(r)) = parse(&sample, "") else { panic!("not a sample") };
        assert_eq!(
            (r.run.as_str(), r.seq, r.time_us, r.cpu_us, r.pss_bytes, r.rss_bytes),
            ("h-1-ab", 7, 1_500_000, 750_000, None, 10)
        );
        assert!(parse_text("{nope").err().unwrap().contains("bad JSON"));
    }

    #[test]
    fn rfc3339_times_with_offsets() {
        let utc = parse_time_us("2026-11-15T08:00:00Z").unwrap();
        assert_eq!(parse_time_us("2026-11-15T10:00:00+02:00"), Some(utc));
        assert_eq!(parse_time_us("2026-11-15T03:00:00-05:00"), Some(utc));
        assert_eq!(parse_time_us("2026-11-15T08:00:00.000000Z"), Some(utc));
        assert_eq!(parse_time_us("2026-11-15T08:00:00+00:00"), Some(utc));
        assert_eq!(parse_time_us("2026-11-15T08:00:00+25:00"), None);
        assert_eq!(parse_time_us("yesterday"), None);
    }
}
