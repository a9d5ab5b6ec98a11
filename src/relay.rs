//! Counting the job's stdout and stderr bytes (and letting `--stdoutlimit` act on them).
//!
//! * A **regular file** is handed to the job as it is, at no cost: the job's fd shares proc_box's
//!   open file description, so the bytes written are the growth of its offset.
//! * Anything else but a terminal (a pipe, a socket, /dev/null) gets a pipe in between, drained
//!   by its own thread with `splice(2)`, so the kernel moves the bytes without copying them
//!   through user space, and a slow reader blocks that thread, never the event loop.
//! * A **terminal** is left alone: the job writes to it directly, keeps `isatty()` true, and
//!   the count is reported as null.

use crate::accounting::{IoSum, OwnIo};
use crate::sys::fd::{poll_one, standard, PollFlags};
use mio::Waker;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use rustix::io::Errno;
use rustix::pipe::{splice, SpliceFlags};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

const CHUNK: usize = 1 << 20;

/// A pipe set up before the fork; its thread starts after it.
pub struct Pending {
    target: BorrowedFd<'static>,
    read: OwnedFd,
}

/// How one of the job's output streams is counted.
pub enum Plan {
    /// A pipe: the job writes to `job_end`; the relay thread starts after the fork.
    Pipe {
        job_end: OwnedFd,
        pending: Pending,
    },
    File(FileCount),
    /// stderr that is the very open file stdout is counted on (`>out 2>&1`): one file offset
    /// grows with both streams, so its bytes are counted once, as stdout's.
    SameFileAsStdout,
    /// A terminal, or closed: passed through, not counted.
    Direct,
}

/// How to count stdout and stderr: as [`plan`] each, except that stderr sharing stdout's open
/// regular file is not counted a second time.
pub fn plan_both() -> io::Result<[Plan; 2]> {
    let out = plan(1)?;
    if matches!(out, Plan::File(_)) && same_open_file(1, 2) {
        return Ok([out, Plan::SameFileAsStdout]);
    }
    Ok([out, plan(2)?])
}

/// Whether two fds of proc_box are one open file description (one offset), as `2>&1` makes
/// them. kcmp(2) says so exactly; where it is not available, they are taken as distinct.
fn same_open_file(a: RawFd, b: RawFd) -> bool {
    const KCMP_FILE: libc::c_int = 0;
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: kcmp only compares kernel objects of our own process; no memory is passed.
    let rc =
        unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a as libc::c_ulong, b as libc::c_ulong) };
    rc == 0
}

/// Whether the job writes to `target` (1 or 2) directly, uncounted: a terminal, or closed.
pub fn passed_through(target: RawFd) -> bool {
    let Some(fd) = standard(target) else { return false };
    fcntl(fd, FcntlArg::F_GETFD).is_err() || nix::unistd::isatty(fd).unwrap_or(false)
}

/// Chooses how to count `target` (1 or 2).
pub fn plan(target: RawFd) -> io::Result<Plan> {
    if passed_through(target) {
        return Ok(Plan::Direct);
    }
    let target = standard(target).ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))?;
    if let Some(count) = FileCount::new(target) {
        return Ok(Plan::File(count));
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // A bigger pipe means fewer wake-ups; refusal (pipe-max-size) is harmless.
    let _ = fcntl(&read, FcntlArg::F_SETPIPE_SZ(CHUNK as i32));
    Ok(Plan::Pipe { job_end: write, pending: Pending { target, read } })
}

impl Plan {
    /// What can hold this stream to a byte limit: the relay's count for a pipe, the file
    /// offset read on the monitor tick for a file, and nothing for a terminal or a closed fd
    /// (the job writes there directly).
    pub fn enforced_by(&self) -> Option<&'static str> {
        match self {
            Plan::Pipe { .. } => Some("relay"),
            Plan::File(_) | Plan::SameFileAsStdout => Some("monitor"),
            Plan::Direct => None,
        }
    }

    /// The fd the job gets as this stream, if it is not proc_box's own.
    pub fn job_fd(&self) -> Option<RawFd> {
        match self {
            Plan::Pipe { job_end, .. } => Some(job_end.as_raw_fd()),
            _ => None,
        }
    }
}

/// Bytes written to a regular file, from the growth of the shared file offset. With O_APPEND
/// the offset jumps to the end at each write, so the count starts from the size at start;
/// bytes appended by writers outside the box meanwhile are counted too.
pub struct FileCount {
    fd: BorrowedFd<'static>,
    start: u64,
    /// proc_box's own stderr writes at start, when this is the file its fd 2 writes to.
    own_start: Option<u64>,
}

impl FileCount {
    fn new(fd: BorrowedFd<'static>) -> Option<FileCount> {
        let st = nix::sys::stat::fstat(fd).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        let offset = Self::offset(fd)?;
        let append = fcntl(fd, FcntlArg::F_GETFL).is_ok_and(|f| f & libc::O_APPEND != 0);
        let start = if append { offset.max(st.st_size as u64) } else { offset };
        let err = standard(2).and_then(|e| nix::sys::stat::fstat(e).ok());
        let shares_stderr = err.is_some_and(|e| (e.st_dev, e.st_ino) == (st.st_dev, st.st_ino));
        Some(FileCount { fd, start, own_start: shares_stderr.then(|| crate::log::own_stderr_with(|| ()).0) })
    }

    fn offset(fd: BorrowedFd) -> Option<u64> {
        rustix::fs::seek(fd, rustix::fs::SeekFrom::Current(0)).ok()
    }

    pub fn bytes(&self) -> u64 {
        let Some(own_start) = self.own_start else {
            return Self::offset(self.fd).map_or(0, |o| o.saturating_sub(self.start));
        };
        // The offset and proc_box's own count, read together so that neither a half-counted
        // log line of proc_box's nor one counted but not yet written skews the job's figure.
        let (own, offset) = crate::log::own_stderr_with(|| Self::offset(self.fd));
        offset.map_or(0, |o| o.saturating_sub(self.start).saturating_sub(own.saturating_sub(own_start)))
    }
}

pub struct Relay {
    bytes: Arc<AtomicU64>,
    done: Receiver<()>,
}

impl Pending {
    /// Starts the thread. `wake_at` are byte counts at which the loop is woken (the limits);
    /// past `cap`, nothing more is passed on.
    pub fn start(
        self,
        name: &str,
        waker: Arc<Waker>,
        wake_at: Vec<u64>,
        cap: Option<u64>,
        own_io: OwnIo,
    ) -> io::Result<Relay> {
        let bytes = Arc::new(AtomicU64::new(0));
        let (tx, done) = channel();
        let counter = bytes.clone();
        std::thread::Builder::new().name(format!("relay-{name}")).stack_size(crate::stack::PLAIN).spawn(
            move || {
                crate::fault::prepare_thread();
                let result = pump(&self, &counter, &waker, &wake_at, cap.unwrap_or(u64::MAX));
                if let Err(e) = result {
                    crate::debug!("relay to fd {} ended: {e}", self.target.as_raw_fd());
                }
                // This thread's I/O is about to be folded into /proc/self/io: report it first.
                let tid = nix::unistd::gettid().as_raw();
                if let Ok(io) =
                    procfs::process::Process::myself().and_then(|p| p.task_from_tid(tid)).and_then(|t| t.io())
                {
                    own_io.lock().unwrap_or_else(|e| e.into_inner()).insert(tid, IoSum::from_io(&io));
                }
                drop(self.read); // the job now gets EPIPE, as it would writing to a closed reader
                let _ = waker.wake();
                let _ = tx.send(());
            },
        )?;
        Ok(Relay { bytes, done })
    }
}

/// Moves the job's bytes on, counting them. Past `cap` (twice the stdout limit, where the job
/// is killed) nothing more gets through, however long the kill takes on a loaded machine: the
/// rest is read and dropped, so the writer never blocks and is not handed a SIGPIPE that
/// would change how it ends.
fn pump(p: &Pending, counter: &AtomicU64, waker: &Waker, wake_at: &[u64], cap: u64) -> io::Result<()> {
    let mut next = 0;
    let mut account = |n: usize| {
        let total = counter.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        while next < wake_at.len() && total >= wake_at[next] {
            next += 1;
            let _ = waker.wake();
        }
    };
    loop {
        let room = cap.saturating_sub(counter.load(Ordering::Relaxed));
        if room == 0 {
            return discard(p);
        }
        // No offsets: both ends move from their current position.
        let len = CHUNK.min(usize::try_from(room).unwrap_or(usize::MAX));
        match splice(&p.read, None, p.target, None, len, SpliceFlags::MOVE) {
            Ok(0) => return Ok(()),
            Ok(n) => account(n),
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => wait_writable(p.target),
            // The target cannot take spliced data (some character devices): copy instead.
            Err(Errno::INVAL) => return copy(p, &mut account),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads what the job still writes, and drops it, until every writer is gone.
fn discard(p: &Pending) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match nix::unistd::read(&p.read, &mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
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
            match nix::unistd::write(p.target, &buf[off..n]) {
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
fn wait_writable(fd: BorrowedFd) {
    poll_one(fd, PollFlags::OUT, Some(std::time::Duration::from_secs(1)));
}

/// A relay whose thread starts only once the job writes: a job that prints nothing (the
/// common `proc_box -- cmd >/dev/null` case) costs no thread at all.
pub struct LazyRelay {
    state: LazyState,
    name: &'static str,
    waker: Arc<Waker>,
    wake_at: Vec<u64>,
    cap: Option<u64>,
    own_io: OwnIo,
}

enum LazyState {
    Idle(Pending),
    Running(Relay),
    Failed,
}

impl LazyRelay {
    pub fn new(
        pending: Pending,
        name: &'static str,
        waker: Arc<Waker>,
        wake_at: Vec<u64>,
        cap: Option<u64>,
        own_io: OwnIo,
    ) -> LazyRelay {
        LazyRelay { state: LazyState::Idle(pending), name, waker, wake_at, cap, own_io }
    }

    /// Watches the pipe until its first byte (or EOF) wakes the loop.
    pub fn register(&self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        match &self.state {
            LazyState::Idle(p) => registry.register(
                &mut mio::unix::SourceFd(&p.read.as_raw_fd()),
                token,
                mio::Interest::READABLE,
            ),
            _ => Ok(()),
        }
    }

    /// The pipe has something: hand it to a thread from now on.
    pub fn start(&mut self, registry: &mio::Registry) {
        let LazyState::Idle(p) = std::mem::replace(&mut self.state, LazyState::Failed) else {
            return;
        };
        let _ = registry.deregister(&mut mio::unix::SourceFd(&p.read.as_raw_fd()));
        let wake_at = std::mem::take(&mut self.wake_at);
        match p.start(self.name, self.waker.clone(), wake_at, self.cap, self.own_io.clone()) {
            Ok(relay) => self.state = LazyState::Running(relay),
            Err(e) => crate::error!("cannot relay the job's {}: {e}", self.name),
        }
    }

    pub fn bytes(&self) -> u64 {
        match &self.state {
            LazyState::Running(r) => r.bytes(),
            _ => 0,
        }
    }

    /// Waits until the stream is done (see [`Relay::finish`]). A pipe that never carried a
    /// byte and is closed at both ends needs no thread.
    pub fn finish(&mut self, registry: &mio::Registry, deadline: Instant) -> bool {
        if let LazyState::Idle(p) = &self.state {
            let revents = poll_one(&p.read, PollFlags::IN, None);
            if !revents.contains(PollFlags::IN) && revents.contains(PollFlags::HUP) {
                return true; // every writer is gone and nothing was written
            }
            self.start(registry);
        }
        match &self.state {
            LazyState::Running(r) => r.finish(deadline),
            _ => true,
        }
    }
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

/// One of the job's output streams, as the loop holds it: counted by a relay, by the offset of
/// a file, with stdout, or not at all (a terminal).
pub enum Output {
    Relay(LazyRelay),
    File(FileCount),
    /// Counted with stdout: the same open file.
    WithStdout,
    Uncounted,
}

impl Output {
    pub fn start(
        plan: Plan,
        name: &'static str,
        waker: &Arc<Waker>,
        wake_at: Vec<u64>,
        cap: Option<u64>,
        own_io: &OwnIo,
    ) -> io::Result<Output> {
        Ok(match plan {
            Plan::Pipe { job_end, pending } => {
                drop(job_end); // only the job may hold it, so the relay sees EOF when the tree is gone
                Output::Relay(LazyRelay::new(pending, name, waker.clone(), wake_at, cap, own_io.clone()))
            }
            Plan::File(count) => Output::File(count),
            Plan::SameFileAsStdout => Output::WithStdout,
            Plan::Direct => Output::Uncounted,
        })
    }

    pub fn bytes(&self) -> Option<u64> {
        match self {
            Output::Relay(r) => Some(r.bytes()),
            Output::File(f) => Some(f.bytes()),
            Output::WithStdout => Some(0),
            Output::Uncounted => None,
        }
    }

    pub fn relay(&mut self) -> Option<&mut LazyRelay> {
        match self {
            Output::Relay(r) => Some(r),
            _ => None,
        }
    }
}
