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

use std::cell::UnsafeCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Signals whose handler is this module's. SIGABRT is also read from the signalfd (it stays
/// blocked; `abort()` unblocks it before raising).
pub const FAULTS: [i32; 7] =
    [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS, libc::SIGABRT];

static PIPE: AtomicI32 = AtomicI32::new(-1);

/// The kill walk's buffers. Static, not on the stack: a handler runs on a small alternate
/// stack (8 KiB), where these would overflow it. Used by the first faulting thread only.
struct Scratch {
    stack: [i32; 4096],
    ents: [u8; 4096],
    kids: [u8; 16384],
    stat: [u8; 1024],
}
struct Shared(UnsafeCell<Scratch>);
// SAFETY: only the thread that wins `BUSY` ever touches it.
unsafe impl Sync for Shared {}
static SCRATCH: Shared =
    Shared(UnsafeCell::new(Scratch { stack: [0; 4096], ents: [0; 4096], kids: [0; 16384], stat: [0; 1024] }));
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
    // SAFETY: the read end was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fds[0]) })
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let (code, sender) = unsafe { ((*info).si_code, (*info).si_pid()) };
    // SAFETY: getpid is async-signal-safe.
    let me = unsafe { libc::getpid() };
    // si_code > 0: the kernel raised it (a fault). abort() raises SIGABRT on itself.
    if code <= 0 && sender != me {
        let byte = sig as u8;
        // SAFETY: write(2) of one byte from the stack; a full pipe drops the signal, never blocks.
        unsafe { libc::write(PIPE.load(Ordering::Relaxed), (&byte as *const u8).cast(), 1) };
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
/// # Safety
/// Async-signal-safe: the static scratch buffers, raw syscalls.
unsafe fn kill_tree(me: i32, scratch: &mut Scratch) {
    let Scratch { stack, ents, kids, stat } = scratch;
    for _ in 0..200 {
        let mut live = 0;
        stack[0] = me;
        let mut n = 1;
        while n > 0 {
            n -= 1;
            let parent = stack[n];
            // SAFETY: see the function's contract.
            unsafe {
                each_child(parent, ents, kids, &mut |child| {
                    let (state, ppid) = state_and_ppid(child, stat);
                    if state == Some(b'Z') {
                        return;
                    }
                    let fd = libc::syscall(libc::SYS_pidfd_open, child, 0) as i32;
                    if fd < 0 {
                        return;
                    }
                    // Still the child we listed (its pid cannot be reused while the pidfd
                    // is open, and its parent is still `parent`, or us): kill it.
                    let (_, ppid_now) = state_and_ppid(child, stat);
                    if ppid.is_some() && ppid_now == ppid && (ppid == Some(parent) || ppid == Some(me)) {
                        libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, 0usize, 0);
                        live += 1;
                        if n < stack.len() {
                            stack[n] = child;
                            n += 1;
                        }
                    }
                    libc::close(fd);
                });
            }
        }
        if live == 0 {
            return;
        }
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 10_000_000 };
        // SAFETY: nanosleep with a valid timespec.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    }
}

/// Writes `/proc/<a>[/task[/<b>/children]]` NUL-terminated into `buf`.
fn path<'a>(buf: &'a mut [u8; 64], pid: i32, tail: &[u8], tid: Option<i32>, tail2: &[u8]) -> &'a [u8] {
    let mut len = 0;
    let mut push = |bytes: &[u8]| {
        for &b in bytes {
            if len < 63 {
                buf[len] = b;
                len += 1;
            }
        }
    };
    push(b"/proc/");
    push(itoa(pid, &mut [0; 12]));
    push(tail);
    if let Some(t) = tid {
        push(itoa(t, &mut [0; 12]));
        push(tail2);
    }
    buf[len] = 0;
    &buf[..=len]
}

fn itoa(mut v: i32, buf: &mut [u8; 12]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Reads a small file into `buf`; the bytes read.
///
/// # Safety
/// `p` must be NUL-terminated. Async-signal-safe.
unsafe fn read_file<'a>(p: &[u8], buf: &'a mut [u8]) -> &'a [u8] {
    // SAFETY: `p` is NUL-terminated; the fd is closed before returning.
    unsafe {
        let fd = libc::open(p.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return &buf[..0];
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        &buf[..n.max(0) as usize]
    }
}

/// Fields 3 (state) and 4 (ppid) of `/proc/PID/stat`.
///
/// # Safety
/// Async-signal-safe; `buf` is the caller's scratch.
unsafe fn state_and_ppid(pid: i32, buf: &mut [u8]) -> (Option<u8>, Option<i32>) {
    // SAFETY: see read_file.
    let stat = unsafe { read_file(path(&mut [0; 64], pid, b"/stat", None, b""), buf) };
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return (None, None);
    };
    let ppid = stat.get(close + 4..).and_then(|r| parse_int(r.split(|&b| b == b' ').next()?));
    (stat.get(close + 2).copied(), ppid)
}

fn parse_int(bytes: &[u8]) -> Option<i32> {
    if bytes.is_empty() || bytes.len() > 10 {
        return None;
    }
    let mut v: i64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (b - b'0') as i64;
    }
    i32::try_from(v).ok()
}

/// Calls `f` with every child of every thread of `pid`.
///
/// # Safety
/// Async-signal-safe as long as `f` is; `ents` and `kids` are the caller's scratch.
unsafe fn each_child(pid: i32, ents: &mut [u8], kids: &mut [u8], f: &mut dyn FnMut(i32)) {
    let mut pbuf = [0u8; 64];
    let dir = path(&mut pbuf, pid, b"/task", None, b"");
    // SAFETY: a NUL-terminated path; every fd opened here is closed here.
    unsafe {
        let dfd = libc::open(dir.as_ptr().cast(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if dfd < 0 {
            return;
        }
        loop {
            let n = libc::syscall(libc::SYS_getdents64, dfd, ents.as_mut_ptr(), ents.len());
            if n <= 0 {
                break;
            }
            let mut off = 0usize;
            while off + 19 < n as usize {
                // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name[].
                let reclen = u16::from_ne_bytes([ents[off + 16], ents[off + 17]]) as usize;
                let name = &ents[off + 19..off + reclen];
                let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
                if let Some(tid) = parse_int(name) {
                    let mut cbuf = [0u8; 64];
                    let list = read_file(path(&mut cbuf, pid, b"/task/", Some(tid), b"/children"), kids);
                    for child in list.split(|&b| b == b' ').filter_map(parse_int) {
                        f(child);
                    }
                }
                off += reclen.max(1);
            }
        }
        libc::close(dfd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_numbers_without_allocation() {
        let mut b = [0u8; 64];
        assert_eq!(path(&mut b, 42, b"/task/", Some(7), b"/children"), b"/proc/42/task/7/children\0");
        assert_eq!(path(&mut b, 1, b"/stat", None, b""), b"/proc/1/stat\0");
        assert_eq!(parse_int(b"12345"), Some(12345));
        assert_eq!(parse_int(b"."), None);
        assert_eq!(parse_int(b""), None);
        assert_eq!(itoa(0, &mut [0; 12]), b"0");
    }
}
