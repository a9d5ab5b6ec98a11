//! `proc_boxctl report` and `proc_boxctl jobs`: usage and cost per group over a period, shaped
//! like `sreport` (a banner with the period and units, subtotals, a total), and one line per
//! job like `sacct -P`.
//!
//! Sums are taken over integers (microseconds, bytes, minor units of money) and converted only
//! for display, so the figures do not depend on the order of the rows.

use super::rates::RateCard;
use super::store::Job;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const DAY_US: i64 = 86_400_000_000;
const HOUR_US: f64 = 3_600_000_000.0;
const GIB: f64 = (1u64 << 30) as f64;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// `2027-01-31` → its day number.
pub fn parse_day(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d): (i64, i64, i64) = (s[0..4].parse().ok()?, s[5..7].parse().ok()?, s[8..10].parse().ok()?);
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

fn day_string(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ISO 8601 week of a day: `2026-W49`.
fn iso_week(days: i64) -> String {
    let weekday = (days + 3).rem_euclid(7); // Monday = 0
    let thursday = days - weekday + 3;
    let (y, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(y, 1, 1)) / 7 + 1;
    format!("{y:04}-W{week:02}")
}

/// A period bound: RFC 3339, a day, or `today`, `yesterday`, `lastweek`, `lastmonth` (UTC).
/// Returns the start and, for the named periods, their end.
pub fn parse_bound(s: &str, now_us: i64) -> Result<(i64, Option<i64>), String> {
    let today = now_us.div_euclid(DAY_US);
    let (y, m, _) = civil_from_days(today);
    let month_start = |y: i64, m: i64| days_from_civil(y, m, 1) * DAY_US;
    let week_start = (today - (today + 3).rem_euclid(7)) * DAY_US;
    Ok(match s.trim() {
        "today" => (today * DAY_US, None),
        "yesterday" => ((today - 1) * DAY_US, Some(today * DAY_US)),
        "lastweek" => (week_start - 7 * DAY_US, Some(week_start)),
        "lastmonth" => {
            let (py, pm) = if m == 1 { (y - 1, 12) } else { (y, m - 1) };
            (month_start(py, pm), Some(month_start(y, m)))
        }
        t => match parse_day(t) {
            Some(d) => (d * DAY_US, None),
            None => (
                super::ingest::parse_time_us(t).ok_or_else(|| {
                    format!("'{t}': use RFC 3339 (2026-12-01T00:00:00Z), a day (2026-12-01), today, yesterday, lastweek or lastmonth")
                })?,
                None,
            ),
        },
    })
}

/// `[since, until)` from the flags: a named period given to `--since` also ends the period.
pub fn period(
    since: Option<&str>,
    until: Option<&str>,
    now_us: i64,
) -> Result<(Option<i64>, Option<i64>), String> {
    let (start, implied_end) = match since {
        Some(s) => {
            let (a, b) = parse_bound(s, now_us).map_err(|e| format!("--since {e}"))?;
            (Some(a), b)
        }
        None => (None, None),
    };
    let end = match until {
        Some(u) => Some(parse_bound(u, now_us).map_err(|e| format!("--until {e}"))?.0),
        None => implied_end,
    };
    Ok((start, end))
}

/// What `--by` groups by.
#[derive(Clone, Debug, PartialEq)]
pub enum Key {
    User,
    Account,
    Partition,
    Host,
    Day,
    Week,
    Month,
    Reason,
    Exit,
    Label(String),
}

impl Key {
    pub fn parse_list(s: &str) -> Result<Vec<Key>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(|k| {
                Ok(match k {
                    "user" => Key::User,
                    "account" => Key::Account,
                    "partition" => Key::Partition,
                    "host" => Key::Host,
                    "day" => Key::Day,
                    "week" => Key::Week,
                    "month" => Key::Month,
                    "reason" => Key::Reason,
                    "exit" => Key::Exit,
                    _ => match k.strip_prefix("label:") {
                        Some(n) if !n.is_empty() => Key::Label(n.to_owned()),
                        _ => return Err(format!(
                            "--by '{k}': keys are user, account, partition, host, day, week, month, reason, exit, label:NAME"
                        )),
                    },
                })
            })
            .collect()
    }

    pub fn name(&self) -> String {
        match self {
            Key::User => "user".into(),
            Key::Account => "account".into(),
            Key::Partition => "partition".into(),
            Key::Host => "host".into(),
            Key::Day => "day".into(),
            Key::Week => "week".into(),
            Key::Month => "month".into(),
            Key::Reason => "reason".into(),
            Key::Exit => "exit".into(),
            Key::Label(n) => format!("label:{n}"),
        }
    }

    /// The job's value for this key; `-` where unknown.
    pub fn value(&self, j: &Job, labels: &Option<Value>) -> String {
        let day = j.ended_us.div_euclid(DAY_US);
        let s = match self {
            Key::User => user(j),
            Key::Account => j.sched_account.clone(),
            Key::Partition => j.sched_partition.clone(),
            Key::Host => Some(j.host.clone()),
            Key::Day => Some(day_string(day)),
            Key::Week => Some(iso_week(day)),
            Key::Month => Some(day_string(day)[..7].to_owned()),
            Key::Reason => Some(j.reason.clone()),
            Key::Exit => Some(j.exit_code.to_string()),
            Key::Label(n) => labels.as_ref().and_then(|l| l.get(n)).and_then(|v| match v {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                v => Some(v.to_string()),
            }),
        };
        s.filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into())
    }
}

/// Whom a job is billed to: the scheduler's user, else the login that ran it, else its uid.
pub fn user(j: &Job) -> Option<String> {
    j.sched_user.clone().or_else(|| j.owner_user.clone()).or_else(|| j.owner_uid.map(|u| u.to_string()))
}

/// Sums over a group, in integers.
#[derive(Clone, Debug, Default)]
pub struct Sums {
    pub jobs: u64,
    pub wall_us: i128,
    pub cpu_us: i128,
    pub peak_pss: i64,
    /// bytes × µs
    pub pss_us: i128,
    pub read: i128,
    pub write: i128,
    pub limited: u64,
    pub failed: u64,
    pub cost: i128,
}

impl Sums {
    fn add(&mut self, j: &Job, cost: i128) {
        self.jobs += 1;
        self.wall_us += i128::from(j.wall_us);
        self.cpu_us += i128::from(j.cpu_user_us) + i128::from(j.cpu_sys_us);
        self.peak_pss = self.peak_pss.max(j.peak_pss_bytes);
        self.pss_us += i128::from(j.peak_pss_bytes) * i128::from(j.wall_us);
        self.read += i128::from(j.io_read_bytes);
        self.write += i128::from(j.io_write_bytes);
        self.limited += u64::from(j.reason.starts_with("limit_") || j.reason == "timeout");
        self.failed += u64::from(j.exit_code != 0);
        self.cost += cost;
    }

    fn merge(&mut self, o: &Sums) {
        self.jobs += o.jobs;
        self.wall_us += o.wall_us;
        self.cpu_us += o.cpu_us;
        self.peak_pss = self.peak_pss.max(o.peak_pss);
        self.pss_us += o.pss_us;
        self.read += o.read;
        self.write += o.write;
        self.limited += o.limited;
        self.failed += o.failed;
        self.cost += o.cost;
    }

    /// The figures as shown, hours and GiB with six decimals (`prec`).
    pub fn cells(&self, card: Option<&RateCard>, prec: usize) -> Vec<String> {
        let wall_h = self.wall_us as f64 / HOUR_US;
        let cpu_h = self.cpu_us as f64 / HOUR_US;
        let eff = if self.wall_us > 0 { self.cpu_us as f64 / self.wall_us as f64 } else { 0.0 };
        let mut v = vec![
            self.jobs.to_string(),
            format!("{wall_h:.prec$}"),
            format!("{cpu_h:.prec$}"),
            format!("{eff:.prec$}"),
            format!("{:.prec$}", self.peak_pss as f64 / GIB),
            format!("{:.prec$}", self.pss_us as f64 / GIB / HOUR_US),
            format!("{:.prec$}", self.read as f64 / GIB),
            format!("{:.prec$}", self.write as f64 / GIB),
            self.limited.to_string(),
            self.failed.to_string(),
        ];
        if let Some(c) = card {
            v.push(c.format(self.cost));
        }
        v
    }
}

pub const COLUMNS: [&str; 10] = [
    "jobs",
    "wall_hours",
    "cpu_hours",
    "cpu_efficiency",
    "peak_pss_gib",
    "gib_hours",
    "read_gib",
    "write_gib",
    "limited",
    "failed",
];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Format {
    Table,
    Csv,
    Json,
    /// One self-contained page (`html.rs`).
    Html,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "html" => Ok(Format::Html),
            _ => Err(format!("'{s}': formats are table, csv, json, html")),
        }
    }
}

pub struct Report {
    pub keys: Vec<Key>,
    pub groups: BTreeMap<Vec<String>, Sums>,
    pub total: Sums,
    /// Jobs the card could not price (a cost past what the arithmetic holds), with why: left
    /// out of the money, never a reason to bill nobody.
    pub unpriced: Vec<String>,
}

/// Groups and sums `jobs`, pricing each with `card`.
pub fn build(jobs: &[Job], keys: &[Key], card: Option<&RateCard>) -> Result<Report, String> {
    let need_labels = keys.iter().any(|k| matches!(k, Key::Label(_)));
    let mut groups: BTreeMap<Vec<String>, Sums> = BTreeMap::new();
    let mut total = Sums::default();
    let mut unpriced = Vec::new();
    for j in jobs {
        let labels = if need_labels { serde_json::from_str(&j.labels).ok() } else { None };
        let group: Vec<String> = keys.iter().map(|k| k.value(j, &labels)).collect();
        let cost = match card.map(|c| c.cost(j)) {
            Some(Ok(c)) => c,
            Some(Err(e)) => {
                unpriced.push(e);
                0
            }
            None => 0,
        };
        groups.entry(group).or_default().add(j, cost);
        total.add(j, cost);
    }
    Ok(Report { keys: keys.to_vec(), groups, total, unpriced })
}

pub fn time_text(us: Option<i64>) -> String {
    match us {
        Some(us) if us >= 0 => humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(us as u64),
        )
        .to_string(),
        _ => "-".into(),
    }
}

/// Rows of the report in order: each group, a subtotal after each first-key group when
/// grouping by more than one key, and the total. `(kind, key values, sums)`.
pub fn rows(r: &Report) -> Vec<(&'static str, Vec<String>, Sums)> {
    let mut out = Vec::new();
    let n = r.keys.len();
    let mut current: Option<(String, Sums)> = None;
    for (g, s) in r.groups.iter().filter(|_| n > 0) {
        if n > 1 {
            if let Some((k, sub)) = current.take_if(|(k, _)| *k != g[0]) {
                let mut vals = vec![k];
                vals.resize(n, "*".into());
                out.push(("subtotal", vals, sub));
            }
            current.get_or_insert_with(|| (g[0].clone(), Sums::default())).1.merge(s);
        }
        out.push(("group", g.clone(), s.clone()));
    }
    if let Some((k, sub)) = current {
        let mut vals = vec![k];
        vals.resize(n, "*".into());
        out.push(("subtotal", vals, sub));
    }
    let mut vals = vec!["TOTAL".to_owned()];
    vals.resize(n.max(1), "*".into());
    out.push(("total", vals, r.total.clone()));
    out
}

/// Renders the report.
pub fn render(
    r: &Report,
    card: Option<&RateCard>,
    format: Format,
    since: Option<i64>,
    until: Option<i64>,
) -> String {
    let mut header: Vec<String> =
        if r.keys.is_empty() { vec!["group".into()] } else { r.keys.iter().map(Key::name).collect() };
    let nkeys = header.len();
    header.extend(COLUMNS.iter().map(|c| c.to_string()));
    if let Some(c) = card {
        header.push(format!("cost_{}", c.currency));
    }
    let all = rows(r);
    match format {
        Format::Json => {
            let row = |kind: &str, vals: &[String], s: &Sums| {
                let mut o = serde_json::Map::new();
                o.insert("row".into(), kind.into());
                for (k, v) in r.keys.iter().zip(vals) {
                    o.insert(k.name(), v.clone().into());
                }
                for (c, v) in COLUMNS.iter().zip(s.cells(None, 6)) {
                    let n: Value = serde_json::from_str(&v).unwrap_or(Value::Null);
                    o.insert(c.to_string(), n);
                }
                if let Some(c) = card {
                    o.insert("cost".into(), c.format(s.cost).into());
                }
                Value::Object(o)
            };
            let doc = json!({
                "since": since.map(|t| time_text(Some(t))),
                "until": until.map(|t| time_text(Some(t))),
                "by": r.keys.iter().map(Key::name).collect::<Vec<_>>(),
                "units": {"time": "hours", "memory": "GiB (peak PSS)", "gib_hours": "peak PSS GiB × wall hours",
                          "io": "GiB", "cost": card.map(|c| c.currency.clone())},
                "rows": all.iter().map(|(k, v, s)| row(k, v, s)).collect::<Vec<_>>(),
            });
            serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let mut h = vec!["row".to_owned()];
            h.extend(header);
            let _ = w.write_record(&h);
            for (kind, vals, s) in &all {
                let mut rec = vec![kind.to_string()];
                rec.extend(vals.iter().map(|v| spreadsheet_safe(v)));
                rec.extend(s.cells(card, 6));
                let _ = w.write_record(&rec);
            }
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
        Format::Table | Format::Html => {
            let mut out = String::new();
            let line = "-".repeat(80);
            let by = r.keys.iter().map(Key::name).collect::<Vec<_>>().join(", ");
            let what = if card.is_some() { "Usage and cost" } else { "Usage" };
            let by = if by.is_empty() { String::new() } else { format!(" by {by}") };
            out += &format!("{line}\n{what}{by}\n");
            let (from, to) = (
                since.map_or("the first job".into(), |t| time_text(Some(t))),
                until.map_or("now".into(), |t| time_text(Some(t))),
            );
            out += &format!("Period: {from} - {to} (UTC; a job counts when it ended)\n");
            out += &format!(
                "Units: time in hours, memory in GiB (peak PSS), GiB-hours = peak PSS x wall, I/O in GiB{}\n{line}\n",
                card.map(|c| format!(", cost in {} (per job rounded half-even to 10^-{}, then summed)", c.currency, c.decimals)).unwrap_or_default()
            );
            let mut table = vec![header];
            for (kind, vals, s) in &all {
                let _ = kind;
                let mut v = vals.clone();
                v.extend(s.cells(card, 2));
                table.push(v);
            }
            out += &align(&table, nkeys);
            out
        }
    }
}

/// Text that came from a job (a host name, a label, a user), safe for a terminal: control
/// characters are escaped, so none can move the cursor, clear the screen or split a row.
pub fn clean(text: &str) -> String {
    text.chars().flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] }).collect()
}

/// Plain columns: keys left-aligned, figures right-aligned, a rule under the header.
pub fn align(table: &[Vec<String>], left: usize) -> String {
    let table: Vec<Vec<String>> = table.iter().map(|r| r.iter().map(|c| clean(c)).collect()).collect();
    let table = &table[..];
    let cols = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| table.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> =
            row.iter()
                .enumerate()
                .map(|(c, s)| {
                    if c < left {
                        format!("{s:<w$}", w = widths[c])
                    } else {
                        format!("{s:>w$}", w = widths[c])
                    }
                })
                .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
        if i == 0 {
            out += &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  ");
            out.push('\n');
        }
    }
    out
}

/// `jobs`: one line per job.
pub const JOB_COLUMNS: [&str; 19] = [
    "message_id",
    "box_id",
    "host",
    "user",
    "uid",
    "scheduler",
    "job_id",
    "account",
    "partition",
    "ended_at",
    "wall_seconds",
    "cpu_user_seconds",
    "cpu_system_seconds",
    "peak_pss_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "reason",
    "exit_code",
    "labels",
];

pub fn job_cells(j: &Job) -> Vec<String> {
    let opt = |o: &Option<String>| o.clone().unwrap_or_default();
    let secs = |us: i64| format!("{}.{:06}", us / 1_000_000, us % 1_000_000);
    vec![
        j.message_id.clone(),
        j.box_id.clone(),
        j.host.clone(),
        user(j).unwrap_or_default(),
        j.owner_uid.map(|u| u.to_string()).unwrap_or_default(),
        opt(&j.sched_name),
        opt(&j.sched_job_id),
        opt(&j.sched_account),
        opt(&j.sched_partition),
        j.ended_at.clone(),
        secs(j.wall_us),
        secs(j.cpu_user_us),
        secs(j.cpu_sys_us),
        j.peak_pss_bytes.to_string(),
        j.io_read_bytes.to_string(),
        j.io_write_bytes.to_string(),
        j.reason.clone(),
        j.exit_code.to_string(),
        j.labels.clone(),
    ]
}

/// A value from a job (a label, an account, a host) as a CSV cell that a spreadsheet shows as
/// text: one starting like a formula (`=`, `+`, `-`, `@`, a tab or a carriage return) gets a
/// leading `'`, as OWASP advises. A lone `-` (unknown) and plain numbers are left alone.
pub fn spreadsheet_safe(v: &str) -> String {
    let formula = v.starts_with(['=', '+', '-', '@', '\t', '\r']) && v != "-" && v.parse::<f64>().is_err();
    if formula {
        format!("'{v}")
    } else {
        v.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_from_jobs_never_start_a_formula() {
        for (v, want) in [
            ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("-", "-"),
            ("-1.5", "-1.5"),
            ("physics", "physics"),
        ] {
            assert_eq!(spreadsheet_safe(v), want);
        }
    }

    #[test]
    fn calendar() {
        assert_eq!(parse_day("1970-01-01"), Some(0));
        assert_eq!(parse_day("2026-12-01"), Some(20_788));
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(iso_week(parse_day("2026-12-01").unwrap()), "2026-W49");
        assert_eq!(iso_week(parse_day("2027-01-01").unwrap()), "2026-W53");
        assert_eq!(iso_week(parse_day("2024-12-30").unwrap()), "2025-W01");
        let now = parse_day("2026-03-04").unwrap() * DAY_US + 5; // a Wednesday
        let d = |s| parse_day(s).unwrap() * DAY_US;
        assert_eq!(parse_bound("yesterday", now).unwrap(), (d("2026-03-03"), Some(d("2026-03-04"))));
        assert_eq!(parse_bound("lastweek", now).unwrap(), (d("2026-02-23"), Some(d("2026-03-02"))));
        assert_eq!(parse_bound("lastmonth", now).unwrap(), (d("2026-02-01"), Some(d("2026-03-01"))));
        assert_eq!(parse_bound("today", now).unwrap(), (d("2026-03-04"), None));
        assert_eq!(parse_bound("2026-03-04T00:00:01Z", now).unwrap().0, d("2026-03-04") + 1_000_000);
        assert!(parse_bound("soon", now).is_err());
        assert_eq!(
            period(Some("lastmonth"), Some("2026-02-10"), now).unwrap(),
            (Some(d("2026-02-01")), Some(d("2026-02-10")))
        );
    }

    #[test]
    fn keys() {
        assert_eq!(Key::parse_list("user,label:proj").unwrap(), vec![Key::User, Key::Label("proj".into())]);
        assert!(Key::parse_list("colour").is_err());
        assert!(Key::parse_list("label:").is_err());
    }
}
