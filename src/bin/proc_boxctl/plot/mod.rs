//! `proc_boxctl plot`: one job's life as a chart, from its `--stats-file` (or from the samples
//! the ledger kept), in one self-contained SVG.
//!
//! `series` turns samples and the summary into panels, marks and notes; `svg` draws them.
//! The SVG is written element by element rather than with a plotting crate: see the README's
//! crates table for why.

pub mod series;
pub mod svg;

use crate::{status, Failed};
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// a --stats-file output: samples, one JSON object per line, then the summary
    #[arg(value_name = "STATS")]
    stats: Option<PathBuf>,
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
    let Some(path) = &a.stats else {
        return Err(Failed::new(status::USAGE, "plot needs a stats file (proc_box --stats-file)"));
    };
    let bytes = crate::ledger::ingest::read_regular(path)
        .map_err(|e| Failed::new(status::REFUSED, format!("{}: {e}", path.display())))?;
    let job = series::read_stats(&String::from_utf8_lossy(&bytes));
    write(&a.output, &svg::render(&series::chart(&job)))
}

/// Writes the picture to the file (atomically: a temp file renamed over it) or stdout.
fn write(output: &Option<PathBuf>, text: &str) -> Result<u8, Failed> {
    match output {
        Some(p) if p.as_os_str() != "-" => {
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
