//! proc_box's own faults must not leave the tree running.
//!
//! A real SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP or SIGSYS, or an `abort()` from a bug, kills
//! proc_box. In ptrace mode EXITKILL takes every tracee with it; in subreaper mode nothing would.
//! So a handler kills the tree first, walking proc_box's children lists with raw syscalls only
//! (no allocation, no lock: the fault may have hit anywhere), then dies of the same signal.
//!
//! The kernel forces a real fault through a blocked signal by resetting its handler, so these
//! signals cannot go through the signalfd like the others. The same signals *sent* with
//! kill(2) are not faults: the handler passes them to the loop through a pipe, to be forwarded.

use crate::sys::procfs::{parse_reap_stat, read_pid};
use rustix::fs::{Mode, OFlags, RawDir};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use rustix::thread::Timespec;
use std::cell::UnsafeCell;
use std::ffi::CStr;
use std::io::Write;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

pub use crate::signals::FAULTS;

static PIPE: AtomicI32 = AtomicI32::new(-1);

/// The kill walk's buffers. Static, not on the stack: a handler runs on a small alternate
/// stack ([`prepare_thread`]), where these would overflow it. Used by the first faulting thread only.
struct Scratch {
    stack: [i32; 4096],
    ents: [MaybeUninit<u8>; 4096],
    kids: [u8; 16384],
    stat: [u8; 1024],
}
struct Shared(UnsafeCell<Scratch>);
// SAFETY: only the thread that wins `BUSY` ever touches it.
unsafe impl Sync for Shared {}
static SCRATCH: Shared = Shared(UnsafeCell::new(Scratch {
    stack: [0; 4096],
    ents: [MaybeUninit::uninit(); 4096],
    kids: [0; 16384],
    stat: [0; 1024],
}));
static BUSY: AtomicBool = AtomicBool::new(false);

/// Installs the handler; returns the read end of the pipe that carries sent signals.
pub fn install() -> std::io::Result<OwnedFd> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    PIPE.store(fds[1], Ordering::Relaxed);
    for sig in FAULTS {
        // SAFETY: a zeroed sigaction is valid; the handler only makes async-signal-safe calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    // An inherited mask may block them. The job still gets the original mask.
    prepare_thread();
    // SAFETY: the read end was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fds[0]) })
}

/// Readies the calling thread for the handler: the faults unblocked ([`unblock_faults`]), and
/// an alternate signal stack, so that the handler still runs when a stack overflow has left the
/// thread's own stack no room. std's runtime gives every thread one, but proc_box starts
/// without that runtime (`main.rs`), so the main thread ([`install`]) and each thread proc_box
/// spawns call this first. The threads of lapin, its executor, async-io's reactor and the
/// blocking pool get none: their stacks are sized so that nothing the broker sends can
/// overflow them (`stack.rs`), and an overflow there would end proc_box as a SIGKILL does,
/// which EXITKILL, the guard and the cgroup watcher cover.
pub fn prepare_thread() {
    unblock_faults();
    const GUARD: usize = 4096;
    const SIZE: usize = 64 * 1024;
    // SAFETY: a fresh private anonymous mapping, owned by nothing else; its lowest page is made
    // inaccessible so that an overflow of the handler itself faults instead of corrupting
    // memory. It is handed to the kernel for this thread and never unmapped: a thread proc_box
    // starts lives as long as the box, or nearly.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            GUARD + SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if base == libc::MAP_FAILED || libc::mprotect(base, GUARD, libc::PROT_NONE) != 0 {
            return; // the handler still runs for any fault but an overflow
        }
        let stack = libc::stack_t { ss_sp: base.cast::<u8>().add(GUARD).cast(), ss_flags: 0, ss_size: SIZE };
        libc::sigaltstack(&stack, std::ptr::null_mut());
    }
}

/// Unblocks the fault signals (not SIGABRT) in the calling thread. A fault in a thread that
/// blocks it skips the handler (the kernel resets it to the default and kills proc_box without
/// the tree walk), so every thread of proc_box must call this, or inherit the mask of one that
/// did: the main thread does in [`install`], before it starts any other thread, and the log
/// thread, which may start earlier, through [`prepare_thread`].
fn unblock_faults() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset; pthread_sigmask on our thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in FAULTS.into_iter().filter(|&s| s != libc::SIGABRT) {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, sender) = unsafe { ((*info).si_code, (*info).si_pid()) };
    let me = rustix::process::getpid().as_raw_pid();
    // si_code > 0: the kernel raised it (a fault). abort() raises SIGABRT on itself.
    if code <= 0 && sender != me {
        let fd = PIPE.load(Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: the pipe's write end is stored before the handler is installed and never
            // closed.
            let pipe = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            // Through rustix, which does not touch errno: this handler returns, and the code
            // it interrupted must find errno as it left it. A full pipe drops the signal
            // (non-blocking), never blocks.
            let _ = rustix::io::write(pipe, &[sig as u8]);
        }
        return;
    }
    // SAFETY: async-signal-safe syscalls only, then death by the same signal.
    unsafe {
        const MSG: &[u8] = b"proc_box: fatal signal in proc_box itself; killing the whole tree\n";
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        if !BUSY.swap(true, Ordering::SeqCst) {
            kill_tree(me, &mut *SCRATCH.0.get());
        } else {
            // Another thread faulted first and is killing the tree: let it finish.
            let ts = libc::timespec { tv_sec: 3, tv_nsec: 0 };
            libc::nanosleep(&ts, std::ptr::null_mut());
        }
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig);
    }
}

/// SIGKILLs every descendant: proc_box's children, theirs, and so on, pass after pass, since
/// the children of a killed process are reparented to proc_box (the subreaper) as they die.
/// Gives up after about 2 s.
///
/// Async-signal-safe: the static scratch buffers, and rustix's system calls, which are made
/// directly, with no allocation and no lock (the descriptors it opens are closed by
/// `OwnedFd`, with close(2), which is async-signal-safe too).
fn kill_tree(me: i32, scratch: &mut Scratch) {
    let Scratch { stack, ents, kids, stat } = scratch;
    for _ in 0..200 {
        let mut live = 0;
        stack[0] = me;
        let mut n = 1;
        while n > 0 {
            n -= 1;
            let parent = stack[n];
            each_child(parent, ents, kids, &mut |child| {
                let (state, ppid) = state_and_ppid(child, stat);
                if state == Some(b'Z') {
                    return;
                }
                let Some(Ok(fd)) = (child > 0)
                    .then(|| Pid::from_raw(child))
                    .flatten()
                    .map(|pid| pidfd_open(pid, PidfdFlags::empty()))
                else {
                    return;
                };
                // Still the child we listed (its pid cannot be reused while the pidfd is
                // open, and its parent is still `parent`, or us): kill it.
                let (_, ppid_now) = state_and_ppid(child, stat);
                if ppid.is_some() && ppid_now == ppid && (ppid == Some(parent) || ppid == Some(me)) {
                    let _ = pidfd_send_signal(&fd, Signal::KILL);
                    live += 1;
                    if n < stack.len() {
                        stack[n] = child;
                        n += 1;
                    }
                }
            });
        }
        if live == 0 {
            return;
        }
        let _ = rustix::thread::nanosleep(&Timespec { tv_sec: 0, tv_nsec: 10_000_000 });
    }
}

/// State and parent of a process, through the same allocation-free reader the tracker uses
/// (`core::fmt` into stack buffers, raw open/read/close: async-signal-safe).
fn state_and_ppid(pid: i32, buf: &mut [u8]) -> (Option<u8>, Option<i32>) {
    match read_pid(pid, "stat", buf).and_then(parse_reap_stat) {
        Some(s) => (u8::try_from(s.state).ok(), Some(s.ppid)),
        None => (None, None),
    }
}

/// Calls `f` with every child of every thread of `pid`. Async-signal-safe as long as `f` is:
/// the directory is read with rustix's `RawDir` (`getdents64` into the caller's scratch, no
/// allocation).
fn each_child(pid: i32, ents: &mut [MaybeUninit<u8>], kids: &mut [u8], f: &mut dyn FnMut(i32)) {
    let mut dir = [0u8; 32];
    if write!(&mut dir[..], "/proc/{pid}/task\0").is_err() {
        return;
    }
    let Ok(dir) = CStr::from_bytes_until_nul(&dir) else { return };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let Ok(dfd) = rustix::fs::open(dir, flags, Mode::empty()) else { return };
    let mut entries = RawDir::new(&dfd, ents);
    while let Some(Ok(entry)) = entries.next() {
        let Some(tid) = entry.file_name().to_str().ok().and_then(|t| t.parse::<i32>().ok()) else {
            continue; // "." and ".."
        };
        let mut task = [0u8; 32];
        let mut w = &mut task[..];
        if write!(w, "task/{tid}/children").is_ok() {
            let len = 32 - w.len();
            let name = std::str::from_utf8(&task[..len]).unwrap_or_default();
            let list = read_pid(pid, name, kids).unwrap_or_default();
            list.split_ascii_whitespace().filter_map(|c| c.parse().ok()).for_each(&mut *f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The handler's allocation-free walk (rustix's RawDir over /proc/PID/task) finds a child.
    #[test]
    fn each_child_lists_a_child_of_ours() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let (mut ents, mut kids) = ([MaybeUninit::uninit(); 4096], [0u8; 16384]);
        let mut found = Vec::new();
        each_child(std::process::id() as i32, &mut ents, &mut kids, &mut |pid| found.push(pid));
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&(child.id() as i32)), "{found:?}");
    }
}
