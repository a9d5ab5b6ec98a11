//! From samples and a summary to what a chart shows: panels of series on one time axis, event
//! marks, and what is missing, said in words.
//!
//! Rates (CPU cores, read and write bytes per second) come from differences of the cumulative
//! counters between two samples, never from `cpu_percent`: a difference is exact whatever
//! happened between the samples (children that came and went, a sample lost), so each
//! interval is drawn as a step at its average. The counters start at zero when the box starts,
//! and the summary holds the kernel's final totals, so the first interval (start to the first
//! sample) and the last (last sample to the end) are exact too: a job shorter than one sample
//! interval still shows its CPU.

use serde_json::Value;

/// The most samples a chart draws; more are thinned to every k-th (see [`thin`]).
pub const MAX_POINTS: usize = 2000;
/// The most event marks (suspend, resume, reset...) and notes a chart draws: a file where
/// every sample is an event would otherwise stack labels without end.
pub const MAX_MARKS: usize = 60;
pub const MAX_NOTES: usize = 24;

/// One sample, reduced to what a chart draws.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Point {
    pub seq: Option<u64>,
    /// Unix seconds.
    pub t: f64,
    /// Seconds since the box started, as the sample says.
    pub elapsed: Option<f64>,
    pub state: String,
    pub processes: f64,
    /// Cumulative.
    pub started: f64,
    /// User + system CPU seconds, cumulative over the whole tree.
    pub cpu: f64,
    pub rss: f64,
    pub pss: Option<f64>,
    /// Cumulative bytes.
    pub read: f64,
    pub write: f64,
}

impl Point {
    /// A sample line; `None` when it lacks the time or the CPU figures.
    pub fn from_json(v: &Value) -> Option<Point> {
        let f = |k: &str| v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
        let cpu = f("cpu_user_seconds")? + f("cpu_system_seconds")?;
        Some(Point {
            seq: v.get("seq").and_then(Value::as_u64),
            // A time outside 1970..5138 is not a sample's: it would stretch the axis without end.
            t: f("time_unix").filter(|t| (0.0..1e11).contains(t))?,
            elapsed: f("elapsed_seconds"),
            state: v.get("state").and_then(Value::as_str).unwrap_or("running").to_owned(),
            processes: f("processes").unwrap_or(0.0),
            started: f("processes_started").unwrap_or(0.0),
            cpu,
            rss: f("rss_bytes").unwrap_or(0.0),
            pss: f("pss_bytes"),
            read: f("io_read_bytes").unwrap_or(0.0),
            write: f("io_write_bytes").unwrap_or(0.0),
        })
    }
}

/// What the summary says, for the title, the last interval and the end mark.
#[derive(Clone, Debug, Default)]
pub struct End {
    pub argv: Vec<String>,
    pub started: Option<f64>,
    pub ended: Option<f64>,
    pub wall: Option<f64>,
    pub exit_code: Option<i64>,
    /// `exited 0`, `signal 15`.
    pub exit_text: String,
    pub reason: String,
    pub cpu: Option<f64>,
    pub read: Option<f64>,
    pub write: Option<f64>,
    pub peak_pss: Option<f64>,
    pub processes_started: Option<f64>,
    pub memory_limit: Option<f64>,
    pub samples_dropped: u64,
}

fn time(v: &Value, k: &str) -> Option<f64> {
    let s = v.get(k)?.as_str()?;
    crate::ledger::ingest::parse_time_us(s).map(|us| us as f64 / 1e6)
}

impl End {
    pub fn from_json(v: &Value) -> End {
        let f = |k: &str| v.get(k).and_then(Value::as_f64).filter(|x| x.is_finite());
        let exit = v.get("exit");
        let exit_text = match (
            exit.and_then(|e| e.get("code")).and_then(Value::as_i64),
            exit.and_then(|e| e.get("signal")).and_then(Value::as_i64),
        ) {
            (Some(c), _) => format!("exited {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "did not run".into(),
        };
        End {
            argv: v
                .get("argv")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|s| s.as_str().unwrap_or("?").to_owned()).collect())
                .unwrap_or_default(),
            started: time(v, "started_at"),
            ended: time(v, "ended_at"),
            wall: f("wall_seconds"),
            exit_code: v.get("exit_code").and_then(Value::as_i64),
            exit_text,
            reason: v.get("reason").and_then(Value::as_str).unwrap_or("").to_owned(),
            cpu: f("cpu_user_seconds").zip(f("cpu_system_seconds")).map(|(u, s)| u + s),
            read: f("io_read_bytes"),
            write: f("io_write_bytes"),
            peak_pss: f("peak_pss_bytes").filter(|p| *p > 0.0),
            processes_started: f("processes_started"),
            memory_limit: v.pointer("/limits/memory_bytes/limit").and_then(Value::as_f64),
            samples_dropped: v.get("samples_dropped").and_then(Value::as_u64).unwrap_or(0),
        }
    }
}

/// One job: its samples in the order they were written, and its summary if it ended.
#[derive(Clone, Debug, Default)]
pub struct Job {
    pub box_id: String,
    pub host: String,
    pub samples: Vec<Point>,
    pub end: Option<End>,
    /// Things worth saying before the chart's own findings (other runs in the file, bad lines).
    pub notes: Vec<String>,
    /// Kept samples are every `stride`-th by `seq` (1 for a stats file; the ledger thins).
    pub stride: u64,
}

/// The run a message belongs to: its `message_id` without `-sample-N` / `-summary-N`.
pub fn run_key(v: &Value) -> Option<String> {
    let id = v.get("message_id")?.as_str()?;
    let cut = id.rfind("-sample-").or_else(|| id.rfind("-summary-"))?;
    Some(id[..cut].to_owned())
}

/// The longest line a stats file may have: a summary with a long command line is a few
/// hundred KiB; a longer line is skipped as bad without being held in memory.
pub const MAX_LINE: usize = 16 << 20;

/// A run's samples thinned as they are read, so that memory stays bounded however long the
/// file: every `stride`-th sample by arrival, the first and the last, and the samples on either
/// side of a state change or a counter going back (up to [`MAX_POINTS`] of those). When the
/// regular points pass twice [`MAX_POINTS`] the stride doubles and the points off it go, as the
/// ledger does: the kept points stay evenly spread over the whole run.
#[derive(Default)]
struct Decimator {
    stride: u64,
    read: u64,
    /// (arrival index, kept as an event, sample).
    kept: Vec<(u64, bool, Point)>,
    events: usize,
    last: Option<(u64, Point)>,
    last_kept: bool,
}

impl Decimator {
    fn push(&mut self, p: Point) {
        let i = self.read;
        self.read += 1;
        let stride = self.stride.max(1);
        let event = self.last.as_ref().is_some_and(|(_, a)| a.state != p.state || reset(a, &p))
            && self.events < MAX_POINTS;
        if event {
            match self.last.take() {
                Some((j, a)) if !self.last_kept => self.kept.push((j, true, a)),
                _ => {
                    if let Some(k) = self.kept.last_mut() {
                        k.1 = true;
                    }
                }
            }
            self.kept.push((i, true, p.clone()));
            self.events += 2;
            self.last_kept = true;
        } else if i.is_multiple_of(stride) {
            self.kept.push((i, false, p.clone()));
            self.last_kept = true;
        } else {
            self.last_kept = false;
        }
        self.last = Some((i, p));
        if self.kept.len() > 2 * MAX_POINTS + self.events {
            self.stride = stride * 2;
            let s = self.stride;
            self.kept.retain(|(i, e, _)| *e || i.is_multiple_of(s));
        }
    }

    /// The kept samples, the last read included; and the stride.
    fn finish(mut self) -> (Vec<Point>, u64, u64) {
        if let (Some((_, p)), false) = (self.last.take(), self.last_kept) {
            self.kept.push((0, false, p));
        }
        (self.kept.into_iter().map(|k| k.2).collect(), self.read, self.stride.max(1))
    }
}

/// Reads a `--stats-file` (see [`read_stats_from`]).
#[cfg(test)]
pub fn read_stats(text: &str) -> Job {
    read_stats_from(text.as_bytes()).unwrap_or_default()
}

/// Reads a `--stats-file`: samples, then the summary line. A file a box appended to more than
/// once holds several runs; the last is drawn and the others are named. Read line by line and
/// thinned as it goes ([`Decimator`]): memory is bounded by the number of runs, not the size.
pub fn read_stats_from(mut input: impl std::io::BufRead) -> std::io::Result<Job> {
    use std::io::{BufRead, Read};
    struct Run {
        job: Job,
        samples: Decimator,
    }
    let mut runs: Vec<Run> = Vec::new();
    // Run key to index in `runs`: a file where every line names another run must not cost a
    // scan of all the runs before it per line.
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let (mut bad, mut first_bad) = (0usize, None);
    let mut buf = Vec::new();
    for n in 0.. {
        buf.clear();
        let got = (&mut input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
        if got == 0 {
            break;
        }
        if buf.len() > MAX_LINE {
            // Too long: skip to the end of the line without keeping it.
            while buf.last() != Some(&b'\n') {
                buf.clear();
                if (&mut input).take(1 << 20).read_until(b'\n', &mut buf)? == 0 {
                    break;
                }
            }
            bad += 1;
            first_bad.get_or_insert(n + 1);
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                bad += 1;
                first_bad.get_or_insert(n + 1);
                continue;
            }
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let key = run_key(&v).unwrap_or_else(|| format!("{}\u{0}{}", s("box_id"), s("hostname")));
        let idx = match index.get(&key) {
            Some(i) => *i,
            None => {
                index.insert(key, runs.len());
                runs.push(Run {
                    job: Job { box_id: s("box_id"), host: s("hostname"), stride: 1, ..Job::default() },
                    samples: Decimator::default(),
                });
                runs.len() - 1
            }
        };
        let run = &mut runs[idx];
        match v.get("type").and_then(Value::as_str) {
            Some("sample") => match Point::from_json(&v) {
                Some(p) => run.samples.push(p),
                None => {
                    bad += 1;
                    first_bad.get_or_insert(n + 1);
                }
            },
            Some("summary") => run.job.end = Some(End::from_json(&v)),
            _ => {
                bad += 1;
                first_bad.get_or_insert(n + 1);
            }
        }
    }
    let count = runs.len();
    let mut job = match runs.pop() {
        Some(Run { mut job, samples }) => {
            let (kept, read, stride) = samples.finish();
            if stride > 1 {
                job.notes.push(format!(
                    "{read} samples read, every {stride}th kept (and the state changes): CPU and I/O are exact averages between them"
                ));
            }
            job.samples = kept;
            job.stride = stride;
            job
        }
        None => Job { stride: 1, ..Job::default() },
    };
    if count > 1 {
        job.notes.push(format!("the file holds {count} runs; this chart shows the last one"));
    }
    if bad > 0 {
        job.notes.push(format!(
            "{bad} line{} that {} not a sample or a summary skipped (the first is line {})",
            if bad == 1 { "" } else { "s" },
            if bad == 1 { "is" } else { "are" },
            first_bad.unwrap_or(0)
        ));
    }
    Ok(job)
}

/// Keeps at most about `max` samples: every k-th, the first and the last, and every sample where
/// the state changes or a counter goes back (so that no event is thinned away). Differences of
/// the cumulative counters between kept samples are still exact averages; momentary figures
/// (PSS, RSS, live processes) between them are lost, which the chart says.
pub fn thin(samples: &[Point], max: usize) -> (Vec<Point>, usize) {
    if samples.len() <= max.max(2) {
        return (samples.to_vec(), 1);
    }
    let k = samples.len().div_ceil(max.max(2) - 1);
    let mut out = Vec::with_capacity(max + 16);
    // Events are kept up to `max` of them, so that a file of nothing but events stays bounded.
    let mut events = 0;
    for (i, p) in samples.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| &samples[j]);
        let next = samples.get(i + 1);
        let event = |a: &Point, b: &Point| a.state != b.state || reset(a, b);
        let is_event = prev.is_some_and(|a| event(a, p)) || next.is_some_and(|b| event(p, b));
        let keep = i % k == 0 || i + 1 == samples.len() || (is_event && events < max);
        if keep {
            events += usize::from(is_event);
            out.push(p.clone());
        }
    }
    (out, k)
}

/// A counter went back, or time did: a new run, or a box restarted under the same name.
fn reset(a: &Point, b: &Point) -> bool {
    b.seq.zip(a.seq).is_some_and(|(sb, sa)| sb <= sa)
        || b.t < a.t
        || b.cpu + 1e-9 < a.cpu
        || b.read < a.read
        || b.write < a.write
        || b.started < a.started
}

/// How a panel's values read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unit {
    Cores,
    Bytes,
    BytesPerSecond,
    Count,
}

/// One line of a panel, broken where there is nothing to draw.
#[derive(Clone, Debug)]
pub struct Series {
    pub key: &'static str,
    pub label: &'static str,
    /// Drawn dashed (the second series of a panel), so that print in grey tells them apart.
    pub dashed: bool,
    /// (seconds since start, value), each segment a polyline.
    pub segments: Vec<Vec<(f64, f64)>>,
}

impl Series {
    fn new(key: &'static str, label: &'static str, dashed: bool) -> Series {
        Series { key, label, dashed, segments: vec![Vec::new()] }
    }
    fn push(&mut self, p: (f64, f64)) {
        if let Some(seg) = self.segments.last_mut() {
            seg.push(p);
        }
    }
    fn cut(&mut self) {
        if self.segments.last().is_some_and(|s| !s.is_empty()) {
            self.segments.push(Vec::new());
        }
    }
    fn finish(&mut self) {
        self.segments.retain(|s| !s.is_empty());
    }
}

/// A horizontal reference line: a peak or a limit from the summary.
#[derive(Clone, Debug)]
pub struct Level {
    pub value: f64,
    pub label: String,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub key: &'static str,
    pub title: &'static str,
    pub unit: Unit,
    pub series: Vec<Series>,
    pub levels: Vec<Level>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MarkKind {
    Suspend,
    Resume,
    Stop,
    Reset,
    End,
}

/// An event at one time, drawn as a vertical line through every panel.
#[derive(Clone, Debug)]
pub struct Mark {
    pub t: f64,
    pub kind: MarkKind,
    pub label: String,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BandKind {
    Suspended,
    Gap,
}

/// A stretch of time: suspended, or without samples.
#[derive(Clone, Debug)]
pub struct Band {
    pub t0: f64,
    pub t1: f64,
    pub kind: BandKind,
}

/// Everything the SVG draws, in data units (seconds since start; bytes; cores).
#[derive(Clone, Debug)]
pub struct Chart {
    pub title: String,
    pub subtitle: String,
    /// Start time, Unix seconds, when known.
    pub start: Option<f64>,
    pub t_end: f64,
    pub panels: Vec<Panel>,
    pub marks: Vec<Mark>,
    pub bands: Vec<Band>,
    /// What is missing or approximate, in words.
    pub notes: Vec<String>,
}

/// A moment the chart knows every counter at.
#[derive(Clone, Debug)]
struct Knot {
    t: f64,
    cpu: f64,
    read: f64,
    write: f64,
    /// The interval ending here cannot be drawn (a gap or a reset before it).
    cut: bool,
}

pub fn seconds_text(s: f64) -> String {
    if s < 60.0 {
        let t = format!("{s:.1}");
        format!("{} s", t.trim_end_matches(".0"))
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0).floor(), (s % 60.0).round() as u64 % 60)
    } else {
        format!("{}h{:02}m", (s / 3600.0).floor(), ((s % 3600.0) / 60.0).floor())
    }
}

/// Shell-like quoting of argv for a title: words with spaces or quotes are single-quoted.
fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The median of positive intervals between consecutive samples.
fn median_step(samples: &[Point]) -> Option<f64> {
    let mut d: Vec<f64> =
        samples.windows(2).map(|w| w[1].t - w[0].t).filter(|d| *d > 0.0 && d.is_finite()).collect();
    if d.is_empty() {
        return None;
    }
    d.sort_by(f64::total_cmp);
    Some(d[d.len() / 2])
}

/// Builds the chart of one job.
pub fn chart(job: &Job) -> Chart {
    let mut notes = job.notes.clone();
    let (samples, k) = thin(&job.samples, MAX_POINTS);
    if k > 1 {
        notes.push(format!(
            "{} samples drawn as {} (every {k}th): CPU and I/O are exact averages between the drawn samples; memory and processes between them are not shown",
            job.samples.len(),
            samples.len()
        ));
    }
    let stride = job.stride.max(1) * k as u64;
    let end = job.end.as_ref();
    let first = samples.first();
    // The start: the summary's, else the first sample's time less its elapsed time.
    let start = end
        .and_then(|e| e.started)
        .or_else(|| first.and_then(|p| p.elapsed.map(|e| p.t - e)))
        .or_else(|| first.map(|p| p.t));
    let rel = |t: f64| t - start.unwrap_or(t);
    let t_last = samples.last().map(|p| rel(p.t)).unwrap_or(0.0);
    let t_end = end.and_then(|e| e.ended.map(rel).or(e.wall)).unwrap_or(t_last).max(t_last).clamp(1e-3, 1e11);

    let mut marks = Vec::new();
    let mut bands = Vec::new();
    let step = median_step(&samples);

    // Knots: the start (every counter is zero then), the samples, the end (the summary's totals).
    let mut knots = Vec::new();
    let first_known = first.is_some_and(|p| p.seq.is_none_or(|s| s <= 1));
    if start.is_some() && (first.is_none() || first_known) {
        knots.push(Knot { t: 0.0, cpu: 0.0, read: 0.0, write: 0.0, cut: false });
    } else if let Some(p) = first {
        let missing = p.seq.map(|s| s.saturating_sub(1)).unwrap_or(0);
        bands.push(Band { t0: 0.0, t1: rel(p.t), kind: BandKind::Gap });
        notes.push(format!(
            "the first {missing} sample(s) are missing: nothing is drawn before {}",
            seconds_text(rel(p.t))
        ));
    }
    let mut cuts = vec![false; samples.len()];
    for (i, p) in samples.iter().enumerate() {
        let mut cut = false;
        if let Some(a) = i.checked_sub(1).map(|j| &samples[j]) {
            if reset(a, p) {
                cut = true;
                marks.push(Mark { t: rel(p.t), kind: MarkKind::Reset, label: "counter reset".into() });
                notes.push(format!(
                    "a counter went back at {} (seq {} after {}): the interval before it is not drawn",
                    seconds_text(rel(p.t)),
                    p.seq.map_or("?".into(), |s| s.to_string()),
                    a.seq.map_or("?".into(), |s| s.to_string())
                ));
            } else {
                let dt = p.t - a.t;
                let by_seq = p.seq.zip(a.seq).is_some_and(|(b, a)| b - a > stride);
                let by_time = step.is_some_and(|m| dt > 3.0 * m && dt > m + 0.5);
                if by_seq || by_time {
                    cut = true;
                    bands.push(Band { t0: rel(a.t), t1: rel(p.t), kind: BandKind::Gap });
                    let lost = match p.seq.zip(a.seq) {
                        Some((b, a)) if by_seq => format!(" (seq {}-{} missing)", a + 1, b - 1),
                        _ => String::new(),
                    };
                    notes.push(format!(
                        "no samples from {} to {}{lost}: lines are broken there; the totals are still exact",
                        seconds_text(rel(a.t)),
                        seconds_text(rel(p.t))
                    ));
                }
            }
        }
        cuts[i] = cut;
        knots.push(Knot { t: rel(p.t), cpu: p.cpu, read: p.read, write: p.write, cut });
    }
    if let Some(e) = end {
        if let (Some(cpu), Some(t)) = (e.cpu, e.ended.map(rel).or(e.wall)) {
            // The summary is the kernel's total: at least what the last sample showed, except
            // for the samples' 10 ms tick rounding, which is clamped.
            let last = knots.last().cloned();
            let cut = last.as_ref().is_some_and(|l| t <= l.t);
            let k = Knot {
                t,
                cpu: last.as_ref().map_or(cpu, |l| cpu.max(l.cpu)),
                read: last.as_ref().map_or(e.read.unwrap_or(0.0), |l| e.read.unwrap_or(l.read).max(l.read)),
                write: last
                    .as_ref()
                    .map_or(e.write.unwrap_or(0.0), |l| e.write.unwrap_or(l.write).max(l.write)),
                cut,
            };
            // A last stretch much shorter than a sample interval would turn the samples' 10 ms
            // tick rounding into a spike: it joins the interval before it instead.
            let short = step.is_some_and(|m| t - last.as_ref().map_or(0.0, |l| l.t) < 0.5 * m);
            if short && knots.len() >= 2 && !knots[knots.len() - 1].cut {
                knots.pop();
            }
            if !cut {
                knots.push(k);
            }
        }
    }

    // Rates: a step per interval at its average.
    let mut cpu = Series::new("cpu", "CPU (cores)", false);
    let mut read = Series::new("read", "read", false);
    let mut write = Series::new("write", "write", true);
    for w in knots.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let dt = b.t - a.t;
        if b.cut || dt <= 0.0 {
            for s in [&mut cpu, &mut read, &mut write] {
                s.cut();
            }
            continue;
        }
        for (s, d) in
            [(&mut cpu, b.cpu - a.cpu), (&mut read, b.read - a.read), (&mut write, b.write - a.write)]
        {
            let r = d.max(0.0) / dt;
            s.push((a.t, r));
            s.push((b.t, r));
        }
    }

    // Momentary figures: a point per sample.
    let mut pss = Series::new("pss", "PSS", false);
    let mut rss = Series::new("rss", "RSS", true);
    let mut live = Series::new("processes", "live", false);
    let mut started = Series::new("started", "started (total)", true);
    let mut no_pss = 0;
    for (i, p) in samples.iter().enumerate() {
        if cuts[i] {
            for s in [&mut pss, &mut rss, &mut live, &mut started] {
                s.cut();
            }
        }
        let t = rel(p.t);
        match p.pss {
            Some(v) => pss.push((t, v)),
            None => {
                no_pss += 1;
                pss.cut();
            }
        }
        rss.push((t, p.rss));
        live.push((t, p.processes));
        started.push((t, p.started));
    }
    // The summary's count of processes started is the exact total at the end.
    if let Some(n) = end.and_then(|e| e.processes_started).filter(|_| end.is_some_and(|e| e.ended.is_some()))
    {
        if samples.last().is_none_or(|p| rel(p.t) < t_end) {
            started.push((t_end, n));
        }
    }
    if no_pss > 0 {
        notes.push(format!("PSS was unreadable in {no_pss} sample(s): the PSS line is broken there"));
    }
    let mut series = [cpu, read, write, pss, rss, live, started];
    for s in &mut series {
        s.finish();
    }
    let [cpu, read, write, pss, rss, live, started] = series;

    let mut mem_levels = Vec::new();
    if let Some(peak) = end.and_then(|e| e.peak_pss) {
        mem_levels.push(Level { value: peak, label: "peak PSS (summary)".into() });
    }
    if let Some(limit) = end.and_then(|e| e.memory_limit) {
        let top = pss
            .segments
            .iter()
            .chain(&rss.segments)
            .flatten()
            .map(|p| p.1)
            .chain(mem_levels.iter().map(|l| l.value))
            .fold(0.0, f64::max);
        if limit <= 4.0 * top.max(1.0) {
            mem_levels.push(Level { value: limit, label: "memory limit".into() });
        } else {
            notes.push(format!("the memory limit ({}) is far above the chart", bytes_text(limit)));
        }
    }

    // Events from the samples' states.
    let mut state = "running";
    let mut suspended_at = None;
    let mut stop_seen = false;
    for p in &samples {
        let t = rel(p.t);
        match (state, p.state.as_str()) {
            (a, "suspended") if a != "suspended" => {
                marks.push(Mark { t, kind: MarkKind::Suspend, label: "suspended".into() });
                suspended_at = Some(t);
            }
            ("suspended", b) if b != "suspended" => {
                marks.push(Mark { t, kind: MarkKind::Resume, label: "resumed".into() });
                if let Some(t0) = suspended_at.take() {
                    bands.push(Band { t0, t1: t, kind: BandKind::Suspended });
                }
            }
            _ => {}
        }
        if p.state == "stopping" && !stop_seen {
            stop_seen = true;
            let why = end.map(|e| why_stopped(&e.reason)).unwrap_or_default();
            marks.push(Mark { t, kind: MarkKind::Stop, label: format!("stop signal{why}") });
        }
        state = if p.state == "stopping" { state } else { p.state.as_str() };
    }
    if let Some(t0) = suspended_at {
        bands.push(Band { t0, t1: t_end, kind: BandKind::Suspended });
    }
    match end {
        Some(e) => {
            // The reason, when it was not the job's own exit: a timeout, a limit, a stop.
            let fired = e.reason != "exited" && !e.reason.is_empty();
            let label = format!(
                "end: {}{}",
                if fired { format!("{} · ", e.reason) } else { String::new() },
                e.exit_code.map_or(e.exit_text.clone(), |c| format!("exit {c}"))
            );
            marks.push(Mark { t: t_end, kind: MarkKind::End, label });
            if e.samples_dropped > 0 {
                notes.push(format!("the box dropped {} sample(s) (samples_dropped)", e.samples_dropped));
            }
        }
        None => notes.push(
            "no summary line: the job is still running, or proc_box was killed; the end and the exit are unknown"
                .into(),
        ),
    }
    match samples.len() {
        0 if end.is_some() => notes.push(
            "no samples: CPU and I/O are the whole job's averages from the summary; memory shows only the summary's peak"
                .into(),
        ),
        0 => notes.push("no samples and no summary: nothing to draw".into()),
        1 => notes.push("one sample: memory and processes are a single point".into()),
        _ => {}
    }

    let argv = end.map(|e| command_line(&e.argv)).unwrap_or_default();
    let title = if argv.is_empty() { "(command unknown: no summary)".to_owned() } else { argv };
    let mut sub = vec![format!("box {}", job.box_id), format!("host {}", job.host)];
    if let Some(s) = start {
        sub.push(format!("started {} UTC", utc_text(s)));
    }
    match end {
        Some(e) => {
            sub.push(format!("wall {}", seconds_text(e.wall.unwrap_or(t_end))));
            let reason = if e.reason == "exited" || e.reason.is_empty() {
                String::new()
            } else {
                format!(", {}", e.reason)
            };
            sub.push(format!(
                "exit {} ({}{reason})",
                e.exit_code.map_or("?".into(), |c| c.to_string()),
                e.exit_text
            ));
            if let Some(c) = e.cpu {
                sub.push(format!("CPU {:.2} s", c));
            }
            if let Some(p) = e.peak_pss {
                sub.push(format!("peak PSS {}", bytes_text(p)));
            }
        }
        None => sub.push("exit unknown".into()),
    }

    let mut unmarked = None;
    if marks.len() > MAX_MARKS {
        // The first events, and always the end.
        let end = marks.iter().position(|m| m.kind == MarkKind::End).map(|i| marks.remove(i));
        let more = marks.len() + 1 - MAX_MARKS;
        marks.truncate(MAX_MARKS - 1);
        marks.extend(end);
        unmarked = Some(format!("{more} more event(s) not marked: only the first {} are", MAX_MARKS - 1));
    }
    let room = MAX_NOTES - usize::from(unmarked.is_some());
    if notes.len() > room {
        let more = notes.len() + 1 - room;
        notes.truncate(room - 1);
        notes.push(format!("and {more} more note(s) like these"));
    }
    notes.extend(unmarked);

    Chart {
        title,
        subtitle: sub.join(" · "),
        start,
        t_end,
        panels: vec![
            Panel { key: "cpu", title: "CPU (cores)", unit: Unit::Cores, series: vec![cpu], levels: vec![] },
            Panel {
                key: "memory",
                title: "memory",
                unit: Unit::Bytes,
                series: vec![pss, rss],
                levels: mem_levels,
            },
            Panel {
                key: "io",
                title: "disk I/O",
                unit: Unit::BytesPerSecond,
                series: vec![read, write],
                levels: vec![],
            },
            Panel {
                key: "processes",
                title: "processes",
                unit: Unit::Count,
                series: vec![live, started],
                levels: vec![],
            },
        ],
        marks,
        bands,
        notes,
    }
}

fn why_stopped(reason: &str) -> String {
    match reason {
        "" | "exited" => String::new(),
        "timeout" => " (timeout)".into(),
        "stopped" => " (stop command)".into(),
        r => format!(" ({r})"),
    }
}

/// `2026-12-06 13:22:16`.
pub fn utc_text(unix: f64) -> String {
    if !(0.0..1e11).contains(&unix) {
        return "?".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix);
    humantime::format_rfc3339_seconds(t).to_string().replace('T', " ").trim_end_matches('Z').to_owned()
}

/// 1536 → `1.5 KiB`.
pub fn bytes_text(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64, t: f64, cpu: f64, state: &str) -> String {
        format!(
            r#"{{"type":"sample","message_id":"h-1-a-sample-{seq}","box_id":"b","hostname":"h","seq":{seq},"time_unix":{t},"elapsed_seconds":{},"state":"{state}","processes":2,"processes_started":3,"cpu_user_seconds":{cpu},"cpu_system_seconds":0,"rss_bytes":100,"pss_bytes":50,"io_read_bytes":0,"io_write_bytes":{}}}"#,
            t - 1000.0,
            seq * 10
        )
    }

    #[test]
    fn cpu_is_the_difference_over_time() {
        let text = [sample(1, 1001.0, 0.5, "running"), sample(2, 1002.0, 2.5, "running")].join("\n");
        let c = chart(&read_stats(&text));
        let cpu = &c.panels[0].series[0].segments;
        assert_eq!(cpu, &vec![vec![(0.0, 0.5), (1.0, 0.5), (1.0, 2.0), (2.0, 2.0)]]);
        assert!(c.notes.iter().any(|n| n.contains("no summary")));
    }

    #[test]
    fn gaps_resets_and_suspends_are_said() {
        let text = [
            sample(1, 1001.0, 0.0, "running"),
            sample(2, 1002.0, 0.0, "suspended"),
            sample(3, 1003.0, 0.0, "running"),
            sample(7, 1007.0, 1.0, "running"),
            sample(1, 1008.0, 0.0, "running"),
            sample(2, 1009.0, 0.5, "running"),
        ]
        .join("\n");
        let c = chart(&read_stats(&text));
        assert!(
            c.bands.iter().any(|b| b.kind == BandKind::Gap && b.t0 == 3.0 && b.t1 == 7.0),
            "{:?}",
            c.bands
        );
        assert!(c.bands.iter().any(|b| b.kind == BandKind::Suspended));
        assert!(c.marks.iter().any(|m| m.kind == MarkKind::Reset));
        assert!(c.notes.iter().any(|n| n.contains("seq 4-6 missing")), "{:?}", c.notes);
        assert_eq!(c.panels[0].series[0].segments.len(), 2);
    }

    #[test]
    fn the_stop_and_the_end_say_why() {
        let summary = r#"{"type":"summary","message_id":"h-1-a-summary-0","box_id":"b","hostname":"h","argv":["sleep","9"],"started_at":"1970-01-01T00:16:40Z","ended_at":"1970-01-01T00:16:44Z","wall_seconds":4,"exit_code":124,"exit":{"kind":"signaled","code":null,"signal":15},"reason":"timeout","cpu_user_seconds":1,"cpu_system_seconds":0}"#;
        let text = [sample(1, 1001.0, 0.5, "running"), sample(2, 1002.0, 1.0, "stopping"), summary.into()]
            .join("\n");
        let c = chart(&read_stats(&text));
        let stop = c.marks.iter().find(|m| m.kind == MarkKind::Stop).unwrap();
        assert_eq!((stop.t, stop.label.as_str()), (2.0, "stop signal (timeout)"));
        let end = c.marks.iter().find(|m| m.kind == MarkKind::End).unwrap();
        assert_eq!((end.t, end.label.as_str()), (4.0, "end: timeout · exit 124"));
        assert!(c.subtitle.contains("exit 124 (killed by signal 15, timeout)"), "{}", c.subtitle);
        assert_eq!(c.title, "sleep 9");
    }

    #[test]
    fn thinning_keeps_events_and_bounds() {
        let pts: Vec<Point> = (0..10_000)
            .map(|i| Point {
                seq: Some(i + 1),
                t: i as f64,
                cpu: i as f64,
                state: if i == 5001 { "suspended".into() } else { "running".into() },
                ..Point::default()
            })
            .collect();
        let (kept, k) = thin(&pts, 500);
        assert!(kept.len() <= 510 && k > 1, "{}", kept.len());
        assert!(kept.iter().any(|p| p.state == "suspended"));
        assert_eq!(kept.last().unwrap().seq, Some(10_000));
    }
}
