//! Local sinks: the stats file (one JSON object per line) and the summary file (written
//! atomically, so a reader never sees half a summary).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub struct StatsFile {
    file: File,
}

impl StatsFile {
    /// Opens for appending, creating it if needed: a run never erases an earlier run's lines.
    pub fn open(path: &Path) -> Result<StatsFile, String> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|file| StatsFile { file })
            .map_err(|e| format!("--stats-file {}: {e}", path.display()))
    }

    /// Writes one line in a single write, so concurrent appenders never interleave within it.
    pub fn write_line(&mut self, json: &str) -> io::Result<()> {
        let mut line = String::with_capacity(json.len() + 1);
        line.push_str(json);
        line.push('\n');
        self.file.write_all(line.as_bytes())
    }
}

pub struct SummaryFile {
    path: PathBuf,
}

impl SummaryFile {
    /// Checks now that the directory exists, so a typo fails before the job runs.
    pub fn new(path: &Path) -> Result<SummaryFile, String> {
        let dir = parent(path);
        if !dir.is_dir() {
            return Err(format!(
                "--summary-file {}: directory {} does not exist",
                path.display(),
                dir.display()
            ));
        }
        Ok(SummaryFile { path: path.to_owned() })
    }

    /// Temp file in the same directory, fsync, rename.
    pub fn write(&self, json: &str) -> io::Result<()> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = parent(&self.path).join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
