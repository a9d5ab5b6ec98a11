//! Diagnostics on stderr, prefixed `proc_box:`. stdout always belongs to the job.
//!
//! Logging must never stop or stall the box: stderr may be a closed pipe (`eprintln!` would
//! panic), or a pipe nobody reads (a plain write would block the event loop). So lines go
//! through a bounded queue to a writer thread that ignores write errors; a line that does not
//! fit is dropped and counted, and the count is reported at the end.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// Lines waiting for the writer; past this, lines are dropped.
const QUEUE: usize = 256;
static DROPPED: AtomicU64 = AtomicU64::new(0);

enum Msg {
    Line(String),
    Flush(std::sync::mpsc::Sender<()>),
}

static SENDER: OnceLock<Mutex<SyncSender<Msg>>> = OnceLock::new();

/// Set at the end of a box ([`write_through_at_end`]).
static AT_END: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line no longer than this is written straight to a stderr that polls writable, at the end
/// ([`write_through_at_end`]): a pipe then has a free page, a terminal or a socket room for it,
/// so the write cannot block.
const DIRECT_MAX: usize = 512;

pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

/// Waits, at most `timeout`, until every line queued so far is written: before proc_box stops
/// itself (Ctrl-Z), its writer thread stops with it, and a line still queued would only
/// appear after `fg`.
pub fn sync(timeout: Duration) {
    if let Some(s) = SENDER.get() {
        let (ack, done) = std::sync::mpsc::channel();
        let queued = s.lock().unwrap_or_else(|e| e.into_inner()).try_send(Msg::Flush(ack)).is_ok();
        if queued {
            let _ = done.recv_timeout(timeout);
        }
    }
}

/// Writes all of `bytes` to fd 2, ignoring every error: nobody is left to tell.
pub fn write_stderr(bytes: &[u8]) {
    write_fd(2, bytes);
}

/// Bytes proc_box itself wrote to fd 2: when the job shares that file, its stderr count (the
/// growth of the file offset) must not include proc_box's own messages.
static OWN_STDERR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Bytes of a write to fd 2 under way: the file offset may or may not include them yet.
static OWN_STDERR_PENDING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// proc_box's own stderr bytes, with `read()` (of the shared file's offset) taken at a moment
/// when no write of proc_box's is half counted: a write marks itself pending before it starts
/// and unmarks after it is counted, so a read seeing nothing pending, and the count unchanged
/// around it, saw no write in between. Retried briefly (a write to a regular file takes
/// microseconds); never waits on a lock, so a stalled stderr cannot stall the caller.
pub fn own_stderr_with<T>(read: impl Fn() -> T) -> (u64, T) {
    let mut last = (OWN_STDERR.load(Ordering::SeqCst), read());
    for _ in 0..10_000 {
        let p1 = OWN_STDERR_PENDING.load(Ordering::SeqCst);
        let o1 = OWN_STDERR.load(Ordering::SeqCst);
        let value = read();
        let o2 = OWN_STDERR.load(Ordering::SeqCst);
        let p2 = OWN_STDERR_PENDING.load(Ordering::SeqCst);
        last = (o2, value);
        if p1 == 0 && p2 == 0 && o1 == o2 {
            break;
        }
        std::hint::spin_loop();
    }
    last
}

/// Writes all of `bytes` to `fd`, ignoring errors (a closed stdout must not panic `--help`).
pub fn write_fd(fd: i32, mut bytes: &[u8]) {
    let Some(out) = crate::sys::fd::standard(fd) else { return };
    while !bytes.is_empty() {
        let len = bytes.len() as u64;
        if fd == 2 {
            OWN_STDERR_PENDING.fetch_add(len, Ordering::SeqCst);
        }
        let n = rustix::io::write(out, bytes);
        if fd == 2 {
            OWN_STDERR.fetch_add(*n.as_ref().unwrap_or(&0) as u64, Ordering::SeqCst);
            OWN_STDERR_PENDING.fetch_sub(len, Ordering::SeqCst);
        }
        match n {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            _ => return,
        }
    }
}

fn sender() -> Option<&'static Mutex<SyncSender<Msg>>> {
    if let Some(s) = SENDER.get() {
        return Some(s);
    }
    let (tx, rx) = sync_channel(QUEUE);
    std::thread::Builder::new()
        .name("log".into())
        .stack_size(crate::stack::PLAIN)
        .spawn(move || {
            // Whatever thread logs first starts this one, perhaps before proc_box blocked its
            // signals, so it sets the mask every thread of proc_box has: every signal blocked
            // (one taken here would be lost to the loop's signalfd: a SIGCHLD lost so leaves a
            // zombie unreaped and the box waiting for ever), but the faults, so that a fault
            // here still runs the handler that kills the tree.
            let _ = nix::sys::signal::SigSet::all().thread_block();
            crate::fault::prepare_thread();
            writer(rx)
        })
        .ok()?;
    let _ = SENDER.set(Mutex::new(tx));
    SENDER.get()
}

fn writer(rx: Receiver<Msg>) {
    for msg in rx {
        match msg {
            Msg::Line(line) => write_stderr(line.as_bytes()),
            Msg::Flush(ack) => {
                let _ = ack.send(());
            }
        }
    }
}

/// Queues text the user asked for as it is, whatever the level, with no prefix (a newline is
/// added). The caller has escaped what came from outside.
pub fn emit_raw(text: &str) {
    queue(format!("{text}\n"));
}

/// Queues one line (a newline is added). Never blocks; a full queue drops it, counted.
pub fn emit(args: std::fmt::Arguments) {
    // One message, one line, and nothing from outside (a command name, a path) can inject
    // control characters into a terminal or a log: they are escaped.
    let mut line = String::with_capacity(64);
    for c in format!("proc_box: {args}").chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line.push('\n');
    queue(line);
}

/// From now on, while no writer thread has been needed, a short line is written at once if
/// stderr can take it without blocking: the box's last line (the summary of a short job)
/// need not start a thread, which costs about 0.1 ms of every such job's run.
pub fn write_through_at_end() {
    AT_END.store(true, Ordering::Relaxed);
}

fn queue(line: String) {
    if AT_END.load(Ordering::Relaxed)
        && SENDER.get().is_none()
        && line.len() <= DIRECT_MAX
        && stderr_writable()
    {
        write_stderr(line.as_bytes());
        return;
    }
    let sent = sender()
        .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).try_send(Msg::Line(line)).is_ok())
        .unwrap_or(false);
    if !sent {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Waits up to `timeout` for the queued lines to be written, then reports dropped ones.
pub fn flush(timeout: Duration) {
    sync(timeout);
    let dropped = DROPPED.load(Ordering::Relaxed);
    if dropped > 0 {
        // Non-blocking, best effort: stderr may be the very thing that is stuck.
        let line = format!("proc_box: {dropped} message(s) not written: stderr was full or closed\n");
        if stderr_writable() {
            write_stderr(line.as_bytes());
        }
    }
}

/// Whether fd 2 polls writable now, without waiting.
fn stderr_writable() -> bool {
    use crate::sys::fd::{poll_one, standard, PollFlags};
    standard(2).is_some_and(|e| poll_one(e, PollFlags::OUT, None).contains(PollFlags::OUT))
}

/// Messages dropped so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

#[macro_export]
macro_rules! error { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Error) { $crate::log::emit(format_args!($($t)*)) } } }
#[macro_export]
macro_rules! warn { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Warn) { $crate::log::emit(format_args!("warning: {}", format_args!($($t)*))) } } }
/// A warning said once per call site, however often the condition recurs.
#[macro_export]
macro_rules! warn_once { ($($t:tt)*) => {{
    static TOLD: ::std::sync::atomic::AtomicBool = ::std::sync::atomic::AtomicBool::new(false);
    if !TOLD.swap(true, ::std::sync::atomic::Ordering::Relaxed) { $crate::warn!($($t)*) }
}} }
#[macro_export]
macro_rules! info { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Info) { $crate::log::emit(format_args!($($t)*)) } } }
#[macro_export]
macro_rules! debug { ($($t:tt)*) => { if $crate::log::enabled($crate::log::Level::Debug) { $crate::log::emit(format_args!("debug: {}", format_args!($($t)*))) } } }
