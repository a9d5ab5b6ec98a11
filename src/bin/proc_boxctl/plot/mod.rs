//! `proc_boxctl plot`: one job's life as a chart, from its `--stats-file` (or from the samples
//! the ledger kept), in one self-contained SVG.
//!
//! `series` turns samples and the summary into panels, marks and notes; `svg` draws them.
//! The SVG is written element by element rather than with a plotting crate: see the README's
//! crates table for why.

pub mod series;
pub mod svg;

use crate::ledger::store::{Found, Job as Row, SampleRow};
use crate::{status, Failed};
use clap::Args;
use series::{End, Job, Point};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// a --stats-file output: samples, one JSON object per line, then the summary
    #[arg(value_name = "STATS", required_unless_present = "box_id", conflicts_with = "box_id")]
    stats: Option<PathBuf>,
    /// draw this box (its latest job, or its latest samples if still running) from the ledger's
    /// samples (ledger run --samples) and summary
    #[arg(long = "box", value_name = "ID")]
    box_id: Option<String>,
    #[command(flatten)]
    db: crate::ledger::DbArgs,
    /// where to write the picture ('-' or unset: standard output)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
    /// svg (png is not built in: it would need a font rasteriser; convert the SVG with a browser or rsvg-convert)
    #[arg(long, default_value = "svg", value_name = "FORMAT")]
    format: String,
}

pub fn plot(a: PlotArgs) -> Result<u8, Failed> {
    match a.format.as_str() {
        "svg" => {}
        "png" => {
            return Err(Failed::new(
                status::USAGE,
                "--format png: not built in (drawing text into pixels needs a font rasteriser and a font); \
                 write SVG and convert it, e.g. `chromium --headless --screenshot` or `rsvg-convert -o job.png job.svg`",
            ))
        }
        f => return Err(Failed::new(status::USAGE, format!("--format '{f}': the format is svg"))),
    }
    if let Some(id) = &a.box_id {
        let job = from_db(&a.db, id)?;
        return write(&a.output, &svg::render(&series::chart(&job)));
    }
    let Some(path) = &a.stats else {
        return Err(Failed::new(
            status::USAGE,
            "plot needs a stats file (proc_box --stats-file) or --box ID",
        ));
    };
    let failed = |e: String| Failed::new(status::REFUSED, format!("{}: {e}", path.display()));
    let file = crate::ledger::ingest::open_regular(path).map_err(failed)?;
    let job = series::read_stats_from(std::io::BufReader::new(file)).map_err(|e| failed(e.to_string()))?;
    write(&a.output, &svg::render(&series::chart(&job)))
}

/// Writes the picture to the file (atomically: a temp file renamed over it) or stdout.
///
/// Only a regular file (or a new one) is replaced. A FIFO or a character device is written
/// into as it is: renaming over it would put a regular file in its place (`-o /dev/null` as root
/// would break /dev/null for the whole system). A symbolic link is neither followed (a link
/// planted in /tmp could aim root's picture at any file or disk) nor replaced: it is refused.
fn write(output: &Option<PathBuf>, text: &str) -> Result<u8, Failed> {
    use std::io::Write;
    use std::os::unix::fs::FileTypeExt;
    match output {
        Some(p) if p.as_os_str() != "-" => {
            let failed = |e: std::io::Error| Failed::new(status::REFUSED, format!("{}: {e}", p.display()));
            let refused = |why: &str| Failed::new(status::REFUSED, format!("{}: {why}", p.display()));
            match std::fs::symlink_metadata(p).map(|m| m.file_type()) {
                Ok(t) if t.is_symlink() => {
                    return Err(refused(
                        "a symbolic link: not followed and not replaced (name its target, or -o - for standard output)",
                    ))
                }
                Ok(t) if t.is_dir() => return Err(refused("is a directory")),
                Ok(t) if t.is_fifo() || t.is_char_device() => {
                    use std::os::unix::fs::OpenOptionsExt;
                    // Non-blocking to open, so that a FIFO nobody reads is an error (ENXIO),
                    // not a hang; blocking again to write.
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
                        .open(p)
                        .map_err(|e| match e.raw_os_error() {
                            Some(libc::ENXIO) => refused("a FIFO that nobody reads"),
                            _ => failed(e),
                        })?;
                    rustix::fs::fcntl_setfl(&f, rustix::fs::OFlags::empty())
                        .map_err(|e| failed(e.into()))?;
                    f.write_all(text.as_bytes()).map_err(failed)?;
                    return Ok(status::OK);
                }
                Ok(t) if !t.is_file() => return Err(refused("not a regular file, a FIFO or a character device")),
                _ => {}
            }
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = p.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, p)).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Failed::new(status::REFUSED, format!("{}: {e}", p.display()))
            })?;
            Ok(status::OK)
        }
        _ => crate::ledger::out(text).map(|_| status::OK),
    }
}

/// The run a summary belongs to: its `message_id` without `-summary-N`.
pub fn run_of(message_id: &str) -> Option<String> {
    message_id.rfind("-summary-").map(|i| message_id[..i].to_owned())
}

/// What a stored job's columns say of its end (enough for a small chart).
pub fn end_of(j: &Row) -> End {
    let ended = j.ended_us as f64 / 1e6;
    End {
        started: Some(ended - j.wall_us as f64 / 1e6),
        ended: Some(ended),
        wall: Some(j.wall_us as f64 / 1e6),
        exit_code: Some(j.exit_code),
        exit_text: format!("status {}", j.exit_code),
        reason: j.reason.clone(),
        cpu: Some((j.cpu_user_us + j.cpu_sys_us) as f64 / 1e6),
        read: Some(j.io_read_bytes as f64),
        write: Some(j.io_write_bytes as f64),
        peak_pss: Some(j.peak_pss_bytes as f64).filter(|p| *p > 0.0),
        ..End::default()
    }
}

/// A chart's job from the ledger's samples.
pub fn from_rows(stride: i64, rows: &[SampleRow], end: Option<End>) -> Job {
    let first = rows.first();
    Job {
        box_id: first.map(|r| r.box_id.clone()).unwrap_or_default(),
        host: first.map(|r| r.host.clone()).unwrap_or_default(),
        samples: rows
            .iter()
            .map(|r| Point {
                seq: u64::try_from(r.seq).ok(),
                t: r.time_us as f64 / 1e6,
                elapsed: r.elapsed_us.map(|e| e as f64 / 1e6),
                state: r.state.clone(),
                processes: r.processes as f64,
                started: r.processes_started as f64,
                cpu: r.cpu_us as f64 / 1e6,
                rss: r.rss_bytes as f64,
                pss: r.pss_bytes.map(|p| p as f64),
                read: r.io_read_bytes as f64,
                write: r.io_write_bytes as f64,
            })
            .collect(),
        end,
        notes: Vec::new(),
        stride: u64::try_from(stride).unwrap_or(1).max(1),
    }
}

/// `plot --box ID`: the box's latest job and its samples, from the ledger.
fn from_db(db: &crate::ledger::DbArgs, id: &str) -> Result<Job, Failed> {
    let mut store = db.open_existing()?;
    let found = store.find_box(id).map_err(crate::ledger::db_failed)?;
    let (run, job) = match found {
        None => {
            return Err(Failed::new(
                status::REFUSED,
                format!("no job and no samples of box '{}' in the ledger", svg::esc(id)),
            ))
        }
        Some(Found::Running { run }) => (run, None),
        Some(Found::Job(j)) => (run_of(&j.message_id).unwrap_or_default(), Some(j)),
    };
    let (stride, rows) = store.samples(&run).map_err(crate::ledger::db_failed)?;
    let end = job.as_ref().map(|j| {
        serde_json::from_str::<serde_json::Value>(&j.raw)
            .map(|v| End::from_json(&v))
            .unwrap_or_else(|_| end_of(j))
    });
    let mut out = from_rows(stride, &rows, end);
    if let Some(j) = &job {
        out.box_id = j.box_id.clone();
        out.host = j.host.clone();
    }
    if rows.is_empty() && job.is_some() {
        out.notes.push("the ledger kept no samples of this job (ledger run --samples keeps them)".into());
    }
    if stride > 1 {
        out.notes.push(format!(
            "the ledger kept every {stride}th sample (at most {} per job, and the state changes)",
            crate::ledger::store::MAX_SAMPLES
        ));
    }
    Ok(out)
}
