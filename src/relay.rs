//! The job's stdout and stderr pass through proc_box, so their bytes are counted (and
//! `--stdoutlimit` can act on them).
//!
//! Each stream is a pipe drained by its own thread with `splice(2)`, so the kernel moves the
//! bytes without copying them through user space, and a slow reader of proc_box's output
//! blocks that thread, never the event loop. A terminal is left alone: the job writes to it
//! directly, keeps `isatty()` true, and the count is reported as null.

use crate::accounting::{IoSum, OwnIo};
use mio::Waker;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

const CHUNK: usize = 1 << 20;

/// A pipe set up before the fork; its thread starts after it.
pub struct Pending {
    target: RawFd,
    read: OwnedFd,
}

/// Interposes a pipe in front of `target` (1 or 2), unless it is a terminal or closed.
/// Returns the end the job writes to.
pub fn interpose(target: RawFd) -> io::Result<Option<(OwnedFd, Pending)>> {
    // SAFETY: probing fds 1 and 2 of our own process, which stay open for its life.
    let fd = unsafe { BorrowedFd::borrow_raw(target) };
    if fcntl(fd, FcntlArg::F_GETFD).is_err() || nix::unistd::isatty(fd).unwrap_or(false) {
        return Ok(None);
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // A bigger pipe means fewer wake-ups; refusal (pipe-max-size) is harmless.
    let _ = fcntl(&read, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok(Some((write, Pending { target, read })))
}

pub struct Relay {
    bytes: Arc<AtomicU64>,
    done: Receiver<()>,
}

impl Pending {
    /// Starts the thread. `wake_at` are byte counts at which the loop is woken (the limits).
    pub fn start(self, name: &str, waker: Arc<Waker>, wake_at: Vec<u64>, own_io: OwnIo) -> io::Result<Relay> {
        let bytes = Arc::new(AtomicU64::new(0));
        let (tx, done) = channel();
        let counter = bytes.clone();
        std::thread::Builder::new().name(format!("relay-{name}")).spawn(move || {
            let result = pump(&self, &counter, &waker, &wake_at);
            if let Err(e) = result {
                crate::debug!("relay to fd {} ended: {e}", self.target);
            }
            // This thread's I/O is about to be folded into /proc/self/io: report it first.
            if let Ok(io) = procfs::process::Process::myself()
                .and_then(|p| p.task_from_tid(nix::unistd::gettid().as_raw()))
                .and_then(|t| t.io())
            {
                let mut own = own_io.lock().unwrap_or_else(|e| e.into_inner());
                *own = IoSum {
                    read_bytes: own.read_bytes + io.read_bytes,
                    write_bytes: own.write_bytes + io.write_bytes,
                    rchar: own.rchar + io.rchar,
                    wchar: own.wchar + io.wchar,
                };
            }
            drop(self.read); // the job now gets EPIPE, as it would writing to a closed reader
            let _ = waker.wake();
            let _ = tx.send(());
        })?;
        Ok(Relay { bytes, done })
    }
}

fn pump(p: &Pending, counter: &AtomicU64, waker: &Waker, wake_at: &[u64]) -> io::Result<()> {
    let mut next = 0;
    let mut account = |n: usize| {
        let total = counter.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        while next < wake_at.len() && total >= wake_at[next] {
            next += 1;
            let _ = waker.wake();
        }
    };
    loop {
        // SAFETY: both fds are open; null offsets mean "current position".
        let n = unsafe {
            libc::splice(
                p.read.as_raw_fd(),
                std::ptr::null_mut(),
                p.target,
                std::ptr::null_mut(),
                CHUNK,
                libc::SPLICE_F_MOVE,
            )
        };
        match n {
            0 => return Ok(()),
            n if n > 0 => account(n as usize),
            _ => match io::Error::last_os_error() {
                e if e.kind() == io::ErrorKind::Interrupted => {}
                e if e.raw_os_error() == Some(libc::EAGAIN) => wait_writable(p.target),
                // The target cannot take spliced data (some character devices): copy instead.
                e if e.raw_os_error() == Some(libc::EINVAL) => return copy(p, &mut account),
                e => return Err(e),
            },
        }
    }
}

fn copy(p: &Pending, account: &mut dyn FnMut(usize)) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match nix::unistd::read(&p.read, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut off = 0;
        while off < n {
            // SAFETY: the target fd stays open for proc_box's life.
            let target = unsafe { BorrowedFd::borrow_raw(p.target) };
            match nix::unistd::write(target, &buf[off..n]) {
                Ok(w) => off += w,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => wait_writable(p.target),
                Err(e) => return Err(e.into()),
            }
        }
        account(n);
    }
}

/// The target was left non-blocking by whoever opened it: wait until it takes more.
fn wait_writable(fd: RawFd) {
    let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: one valid pollfd on the stack.
    unsafe { libc::poll(&mut pfd, 1, 1000) };
}

impl Relay {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Waits until the stream reached EOF (every writer closed), or the deadline passed:
    /// a process outside the box that was handed the pipe must not make proc_box hang.
    pub fn finish(&self, deadline: Instant) -> bool {
        match self.done.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        }
    }
}
