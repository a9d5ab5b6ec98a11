//! Local sinks: the stats file (one JSON object per line) and the summary file.
//!
//! Neither may ever stall the box: a FIFO may have no reader yet, or one that stops reading.
//! * A FIFO is opened without blocking, and waited for (at most [`FIFO_WAIT`]) before the job
//!   starts, while SIGINT and SIGTERM still end proc_box; then it fails with a clear message.
//! * Stats lines go through a bounded queue to a writer thread: a stalled reader costs dropped
//!   samples (counted), never a late timeout.
//! * The summary replaces a regular file atomically; a FIFO or a device is written in place.
//!   The box waits at most [`FINAL_WAIT`] for a sink to take it.

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a FIFO sink waits for its reader before the job starts.
pub const FIFO_WAIT: Duration = Duration::from_secs(10);
/// How long the end of the box waits for the sinks to take the last lines.
pub const FINAL_WAIT: Duration = Duration::from_secs(5);
/// Stats lines waiting for the writer thread; past this, samples are dropped and counted.
const MAX_QUEUED: usize = 64;

/// Sleeps up to the given time before the job starts; `Err` when proc_box was told to stop.
pub type Pause<'a> = &'a mut dyn FnMut(Duration) -> Result<(), String>;

/// Opens a FIFO or a device for writing in place. A FIFO with no reader (ENXIO on a
/// non-blocking open) is retried until [`FIFO_WAIT`] runs out.
fn open_in_place(path: &Path, what: &str, pause: Pause) -> Result<File, String> {
    let deadline = Instant::now() + FIFO_WAIT;
    let mut told = false;
    loop {
        let opened = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path);
        match opened {
            Ok(file) => {
                // The writer thread blocks on it, never the loop: make it blocking again.
                if let Ok(flags) = rustix::fs::fcntl_getfl(&file) {
                    let _ = rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK);
                }
                return Ok(file);
            }
            // ENXIO is "no reader" for a FIFO only (a Unix socket path says it too, for good).
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && is_fifo(path) => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "{what} {}: no process opened the FIFO for reading within {}s",
                        path.display(),
                        FIFO_WAIT.as_secs()
                    ));
                }
                if !told {
                    crate::info!(
                        "{what} {} is a FIFO with no reader; waiting up to {}s for one",
                        path.display(),
                        FIFO_WAIT.as_secs()
                    );
                    told = true;
                }
                pause(Duration::from_millis(50))?;
            }
            Err(e) => return Err(format!("{what} {}: {e}", path.display())),
        }
    }
}

fn is_fifo(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// The kernel's `protected_symlinks` rule, applied whether or not the host enables it, and to
/// any sticky or world-writable directory (such as /tmp): there, a symlink is followed only if
/// it belongs to us or to the directory's owner. Otherwise another user could point proc_box,
/// running as root, at a file of their choice.
fn check_symlink(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let Ok(link) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !link.file_type().is_symlink() {
        return Ok(());
    }
    let Ok(dir) = std::fs::metadata(parent(path)) else {
        return Ok(());
    };
    // Sticky or world-writable: a directory where others may plant links.
    let shared = dir.mode() & 0o1000 != 0 || dir.mode() & 0o002 != 0;
    let me = rustix::process::geteuid().as_raw();
    if shared && link.uid() != me && link.uid() != dir.uid() {
        return Err(format!(
            "{} is a symlink owned by another user (uid {}) in a shared directory; not following it",
            path.display(),
            link.uid()
        ));
    }
    Ok(())
}

/// Whether `path` names something to write in place (a FIFO, a device, a socket).
fn special(path: &Path) -> Result<bool, String> {
    check_symlink(path)?;
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(format!("{} is a directory", path.display())),
        Ok(m) => {
            let t = m.file_type();
            Ok(t.is_fifo() || t.is_char_device() || t.is_block_device() || t.is_socket())
        }
        Err(_) => Ok(false),
    }
}

enum Msg {
    Line(String),
    Flush(Sender<()>),
}

/// A writer thread fed through a bounded queue.
struct Writer {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
    failed: Arc<AtomicU64>,
    done: Receiver<()>,
}

impl Writer {
    fn start(mut file: File, what: &'static str) -> io::Result<Writer> {
        let (tx, rx) = channel::<Msg>();
        let (done_tx, done) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (q, f) = (queued.clone(), failed.clone());
        std::thread::Builder::new().name(format!("sink-{what}")).stack_size(crate::stack::PLAIN).spawn(
            move || {
                crate::fault::prepare_thread();
                for msg in rx {
                    match msg {
                        Msg::Line(mut line) => {
                            line.push('\n');
                            // One write call per line, so concurrent appenders never interleave.
                            if let Err(e) = file.write_all(line.as_bytes()) {
                                if f.fetch_add(1, Ordering::Relaxed) == 0 {
                                    crate::warn!("cannot write to the {what}: {e}; counting dropped lines");
                                }
                            }
                            q.fetch_sub(1, Ordering::Relaxed);
                        }
                        Msg::Flush(ack) => {
                            let _ = ack.send(());
                        }
                    }
                }
                let _ = done_tx.send(());
            },
        )?;
        Ok(Writer { tx, queued, failed, done })
    }

    /// Queues a line; false if it was dropped (the queue is full).
    fn push(&self, line: String) -> bool {
        if self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.tx.send(Msg::Line(line)).is_ok()
    }

    /// Waits until every queued line is written; false if the deadline came first.
    fn flush(&self, deadline: Instant) -> bool {
        let (ack, wait) = channel();
        self.tx.send(Msg::Flush(ack)).is_ok()
            && wait.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }

    /// Closes the queue and waits for the thread to write the rest.
    fn close(self, deadline: Instant) -> bool {
        drop(self.tx);
        self.done.recv_timeout(deadline.saturating_duration_since(Instant::now())).is_ok()
    }
}

/// `--stats-file`: appended to, never truncated.
pub struct StatsFile {
    path: PathBuf,
    file: Option<File>,
    writer: Option<Writer>,
}

impl StatsFile {
    /// Opens for appending, creating a regular file if needed: a run never erases an earlier
    /// run's lines. A FIFO waits for its reader.
    pub fn open(path: &Path, pause: Pause) -> Result<StatsFile, String> {
        let what = "--stats-file";
        let file = if special(path).map_err(|e| format!("{what}: {e}"))? {
            open_in_place(path, what, pause)?
        } else {
            OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOCTTY)
                .open(path)
                .map_err(|e| format!("{what} {}: {e}", path.display()))?
        };
        Ok(StatsFile { path: path.to_owned(), file: Some(file), writer: None })
    }

    /// Queues one line. The writer thread starts at the first line, after the job was forked.
    /// False if the line was dropped.
    pub fn write_line(&mut self, line: String) -> bool {
        if self.writer.is_none() {
            let Some(file) = self.file.take() else { return false };
            match Writer::start(file, "stats file") {
                Ok(w) => self.writer = Some(w),
                Err(e) => {
                    crate::warn!("--stats-file {}: cannot start its writer: {e}", self.path.display());
                    return false;
                }
            }
        }
        self.writer.as_ref().is_some_and(|w| w.push(line))
    }

    /// Lines the writer failed to write so far (after a [`flush`](Self::flush), all of them).
    pub fn failed(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.failed.load(Ordering::Relaxed))
    }

    pub fn flush(&self, deadline: Instant) -> bool {
        self.writer.as_ref().is_none_or(|w| w.flush(deadline))
    }

    /// Writes the last line and closes; false if the sink did not take it by the deadline.
    pub fn finish(mut self, last: String, deadline: Instant) -> bool {
        self.write_line(last) && self.writer.take().is_some_and(|w| w.close(deadline))
    }
}

/// `--summary-file`: a regular file is replaced atomically, so a reader never sees half a
/// summary; a FIFO or a device is written in place, opened before the job starts.
pub enum SummaryFile {
    /// The directory (held open from the start) and the file's name in it.
    Replace(PathBuf, OwnedFd, std::ffi::CString),
    InPlace(PathBuf, File),
}

impl SummaryFile {
    /// Checks now that the summary can be delivered, so a typo or an unwritable directory fails
    /// with status 125 before the job runs, not after: a temporary file is created there and
    /// removed.
    pub fn new(path: &Path, pause: Pause) -> Result<SummaryFile, String> {
        let what = "--summary-file";
        if special(path).map_err(|e| format!("{what}: {e}"))? {
            return Ok(SummaryFile::InPlace(path.to_owned(), open_in_place(path, what, pause)?));
        }
        let shown = path.display();
        let name = path
            .file_name()
            .and_then(|n| std::ffi::CString::new(n.as_bytes()).ok())
            .ok_or_else(|| format!("{what} {shown}: not a file name"))?;
        let dir = parent(path);
        // O_DIRECTORY: a FIFO in the directory's place fails here rather than blocking.
        let dirfd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(|e| format!("{what} {shown}: directory {}: {e}", dir.display()))?;
        let dirfd = OwnedFd::from(dirfd);
        let probe =
            create_temp(&dirfd, &name).map_err(|e| format!("{what} {shown}: cannot write there: {e}"))?;
        let _ = rustix::fs::unlinkat(&dirfd, probe.1.as_c_str(), AtFlags::empty());
        Ok(SummaryFile::Replace(path.to_owned(), dirfd, name))
    }

    pub fn path(&self) -> &Path {
        match self {
            SummaryFile::Replace(p, ..) | SummaryFile::InPlace(p, _) => p,
        }
    }

    /// Writes the summary; in place, on a thread, waiting at most until `deadline`.
    pub fn write(self, json: &str, deadline: Instant) -> io::Result<()> {
        match self {
            SummaryFile::Replace(_, dir, name) => replace(&dir, &name, json),
            SummaryFile::InPlace(_, file) => {
                let w = Writer::start(file, "summary file")?;
                if !(w.push(json.to_owned()) && w.flush(deadline)) {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the reader did not take it in time",
                    ));
                }
                match w.failed.load(Ordering::Relaxed) {
                    0 => Ok(()),
                    _ => Err(io::Error::other("write failed")),
                }
            }
        }
    }
}

/// Creates `.NAME.RANDOM.tmp` in `dir` with `O_CREAT|O_EXCL|O_NOFOLLOW`: never an existing
/// file, never through a symlink someone planted.
fn create_temp(dir: &OwnedFd, name: &std::ffi::CStr) -> io::Result<(File, std::ffi::CString)> {
    for _ in 0..8 {
        let mut rnd = [0u8; 8];
        // SAFETY: getrandom fills the local buffer.
        if unsafe { libc::getrandom(rnd.as_mut_ptr().cast(), rnd.len(), 0) } != rnd.len() as isize {
            return Err(io::Error::last_os_error());
        }
        let hex: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = std::ffi::CString::new(format!(".{}.{hex}.tmp", name.to_string_lossy()))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(dir, tmp.as_c_str(), flags, Mode::from_raw_mode(0o666)) {
            Ok(fd) => return Ok((File::from(fd), tmp)),
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Temp file in the same directory, fsync, rename over the name (a symlink there is replaced,
/// not followed).
fn replace(dir: &OwnedFd, name: &std::ffi::CStr, json: &str) -> io::Result<()> {
    let (mut f, tmp) = create_temp(dir, name)?;
    let result = (|| {
        f.write_all(json.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        rustix::fs::renameat(dir, tmp.as_c_str(), dir, name)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, tmp.as_c_str(), AtFlags::empty());
    }
    result
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
