//! The guard: a helper process that holds a pidfd of every member proc_box could not trace,
//! and kills them all if proc_box dies.
//!
//! In ptrace mode `PTRACE_O_EXITKILL` ends every tracee when proc_box dies, even by SIGKILL.
//! A `clone(CLONE_UNTRACED)` child can make itself impossible to seize, though: traced by its
//! own parent (`PTRACE_TRACEME`; a process has one tracer), or not dumpable for a tracer
//! without CAP_SYS_PTRACE. The backstop walk finds it, and hands its pidfd to the guard over a
//! unix socket (`SCM_RIGHTS`). When proc_box dies the guard reads end-of-file, stops what it
//! holds and whatever those processes forked meanwhile (their children lists, each child
//! proven by its parent), then kills them all through the pidfds: a recycled pid is never hit.
//!
//! The guard starts only when the first such process appears (the fork-heavy fast path pays
//! nothing), as proc_box's own child: proc_box is already a subreaper then, so a double fork
//! would hand it back anyway. The tracker keeps it out of the tree and out of the bill (its
//! rusage and I/O, folded into proc_box's own by its reaping, are taken out again). Once no
//! held process is left, proc_box closes the socket and the guard exits.

use crate::sys::pidfd::PidFd;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The hidden first argument that makes proc_box a guard.
pub const ARG: &str = "--internal-pidfd-guard";

/// The descriptor number of the guard's end of the socket, across exec.
const SOCKET_FD: RawFd = 3;

/// proc_box's handle on a running guard.
#[derive(Debug)]
pub struct Guard {
    pid: i32,
    sock: Option<OwnedFd>,
}

impl Guard {
    /// Starts the guard: proc_box re-executed (`/proc/self/exe`, so a binary replaced on disk
    /// meanwhile still works) in a session of its own, with no stdio, no environment and no
    /// descriptor but its end of the socket.
    pub fn start() -> io::Result<Guard> {
        let mut pair = [0; 2];
        // SAFETY: socketpair writes two descriptors into the array we own.
        if unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, pair.as_mut_ptr())
        } != 0
        {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just made and nothing else owns them.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
        let exe = c"/proc/self/exe";
        let fd_arg = std::ffi::CString::new(SOCKET_FD.to_string()).map_err(io::Error::other)?;
        let arg = std::ffi::CString::new(ARG).map_err(io::Error::other)?;
        let argv = [c"proc_box".as_ptr(), arg.as_ptr(), fd_arg.as_ptr(), std::ptr::null()];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let null = c"/dev/null";
        let theirs_raw = theirs.as_raw_fd();
        // SAFETY: after fork, the child makes only async-signal-safe calls on memory prepared
        // before it, then execs or exits.
        let pid = unsafe { libc::fork() };
        match pid {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                // SAFETY: as above; none of these calls allocates or takes a lock.
                unsafe {
                    libc::setsid(); // no terminal's signals reach it
                    let n = libc::open(null.as_ptr(), libc::O_RDWR);
                    for target in 0..3 {
                        libc::dup2(n, target);
                    }
                    if theirs_raw == SOCKET_FD {
                        libc::fcntl(SOCKET_FD, libc::F_SETFD, 0);
                    } else {
                        libc::dup2(theirs_raw, SOCKET_FD); // the copy is not close-on-exec
                    }
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                    libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127)
                }
            }
            pid => {
                drop(theirs);
                crate::debug!("started the pidfd guard (pid {pid})");
                Ok(Guard { pid, sock: Some(ours) })
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Hands the guard a pidfd. Once this returns Ok, the descriptor is in the guard's socket
    /// queue: a proc_box killed right after still has it killed.
    pub fn hold(&self, fd: &PidFd) -> io::Result<()> {
        let Some(sock) = &self.sock else { return Err(io::Error::from_raw_os_error(libc::EPIPE)) };
        let raw = fd.as_raw_fd();
        let mut byte = 0u8;
        let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
        // Room for one descriptor's control message, aligned as cmsghdr needs.
        let mut space = [0u64; 4];
        // SAFETY: CMSG_SPACE is arithmetic.
        let len = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        debug_assert!(len <= std::mem::size_of_val(&space));
        // SAFETY: msghdr is plain data; all-zero is valid before the fields are set.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = len as _;
        // SAFETY: the control buffer holds one cmsghdr with room for one fd (len above), which
        // CMSG_FIRSTHDR returns and CMSG_DATA points into.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), raw);
        }
        for _ in 0..2 {
            // SAFETY: msg and everything it points to live across the call.
            let rc =
                unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if rc >= 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(e);
            }
            // The guard is behind (it reads as fast as it can): wait for room, briefly.
            let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd on the stack.
            unsafe { libc::poll(&mut pfd, 1, 1000) };
        }
        Err(io::Error::from_raw_os_error(libc::EAGAIN))
    }

    /// Lets the guard go: it reads end-of-file, finds nothing it holds alive, and exits.
    pub fn close(&mut self) {
        self.sock = None;
    }
}

/// The guard's life: collect pidfds until proc_box's end of the socket closes, then end every
/// process still held.
pub fn run(args: &[std::ffi::OsString]) -> i32 {
    let Some(sock) = args.first().and_then(|a| a.to_str()?.parse::<RawFd>().ok()) else { return 2 };
    // SAFETY: closing descriptor ranges of our own; stdio and the socket are kept.
    unsafe {
        if sock > 3 {
            libc::syscall(libc::SYS_close_range, 3, sock - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, sock + 1, u32::MAX, 0);
    }
    for sig in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
    ] {
        // SAFETY: setting a signal to SIG_IGN.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut pruned_at = 16;
    loop {
        match receive(sock) {
            Ok(Some(fds)) => held.extend(fds),
            Ok(None) => break, // proc_box closed its end, or died
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        // Forget the ones that exited, now and then: the list stays about as long as the
        // number held alive.
        if held.len() >= pruned_at {
            held.retain(|fd| !exited(fd.as_raw_fd()));
            pruned_at = (held.len() * 2).max(16);
        }
    }
    end_all(held);
    0
}

/// One message's descriptors; `None` at end-of-file.
fn receive(sock: RawFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut byte = 0u8;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    let mut space = [0u64; 16];
    // SAFETY: msghdr is plain data; all-zero is valid before the fields are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space) as _;
    // SAFETY: msg and its buffers live across the call.
    let rc = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of well-formed cmsghdrs,
    // which the CMSG_* macros walk; SCM_RIGHTS data is an array of descriptors now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let n =
                    ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Some(fds))
}

fn exited(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd on the stack, zero timeout.
    let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
    rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

fn send(fd: RawFd, sig: i32) -> bool {
    // SAFETY: a pidfd we own, a signal number, a null siginfo and flags 0.
    unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, fd, sig, std::ptr::null::<libc::siginfo_t>(), 0) == 0
    }
}

/// The pid a pidfd refers to, from `/proc/self/fdinfo` (the guard's own pid namespace).
fn pid_of(fd: RawFd) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    text.lines().find_map(|l| l.strip_prefix("Pid:")?.trim().parse().ok()).filter(|&p: &i32| p > 0)
}

/// Stops every held process and what they forked (found in their children lists, which are
/// reliable once they are stopped), until a pass finds nothing new; then kills them all. A
/// child is proven ours before it is signalled: its pidfd is opened, then its parent read from
/// `/proc` must be a held process still alive, and the child's pidfd still live after that.
fn end_all(held: Vec<OwnedFd>) {
    let mut known: Vec<(i32, OwnedFd)> = held
        .into_iter()
        .filter(|fd| !exited(fd.as_raw_fd()))
        .filter_map(|fd| Some((pid_of(fd.as_raw_fd())?, fd)))
        .collect();
    for _ in 0..64 {
        for (_, fd) in &known {
            send(fd.as_raw_fd(), libc::SIGSTOP);
        }
        let mut fresh = Vec::new();
        for (pid, _) in known.iter().filter(|(_, fd)| !exited(fd.as_raw_fd())) {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for task in tasks.flatten() {
                let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                for child in list.split_ascii_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                    if known.iter().chain(&fresh).any(|(p, _)| *p == child) {
                        continue;
                    }
                    let Ok(fd) = PidFd::open(child) else { continue };
                    let parent = crate::sys::procfs::parent_of(child);
                    let ours = parent
                        .is_some_and(|pp| known.iter().any(|(p, f)| *p == pp && !exited(f.as_raw_fd())));
                    if ours && !fd.exited() {
                        fresh.push((child, fd.into_fd()));
                    }
                }
            }
        }
        if fresh.is_empty() {
            break;
        }
        known.extend(fresh);
    }
    for (_, fd) in &known {
        send(fd.as_raw_fd(), libc::SIGKILL);
    }
}
