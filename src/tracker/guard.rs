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

use crate::sys::fd::{poll_one, readable_now, PollFlags};
use crate::sys::pidfd::PidFd;
use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{pidfd_send_signal, Signal};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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
        let (ours, theirs) =
            rustix::net::socketpair(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)?;
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
                super::connector::own_fork(pid);
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
        let fds = [fd.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        for _ in 0..2 {
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
            match sendmsg(sock, &[IoSlice::new(&[0])], &mut control, flags) {
                Ok(_) => return Ok(()),
                Err(Errno::AGAIN) => {}
                Err(e) => return Err(e.into()),
            }
            // The guard is behind (it reads as fast as it can): wait for room, briefly.
            poll_one(sock, PollFlags::OUT, Some(Duration::from_secs(1)));
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
    // The socket is always at SOCKET_FD; the argument says so, and is checked.
    if args.first().and_then(|a| a.to_str()?.parse::<RawFd>().ok()) != Some(SOCKET_FD) {
        return 2;
    }
    crate::sys::become_helper(SOCKET_FD);
    // SAFETY: descriptor 3 is the socket `Guard::start` placed there across exec (checked just
    // above), and nothing else in this process owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut pruned_at = 16;
    loop {
        match receive(sock.as_fd()) {
            Ok(Some(fds)) => held.extend(fds),
            Ok(None) => break, // proc_box closed its end, or died
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        // Forget the ones that exited, now and then: the list stays about as long as the
        // number held alive.
        if held.len() >= pruned_at {
            held.retain(|fd| !readable_now(fd));
            pruned_at = (held.len() * 2).max(16);
        }
    }
    end_all(held);
    0
}

/// One message's descriptors; `None` at end-of-file.
fn receive(sock: BorrowedFd) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut byte = [0u8];
    // Room for the descriptors of several messages, should the kernel merge them.
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(16))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(sock, &mut [IoSliceMut::new(&mut byte)], &mut control, RecvFlags::CMSG_CLOEXEC)?;
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    Ok(Some(fds))
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
        .filter(|fd| !readable_now(fd))
        .filter_map(|fd| Some((pid_of(fd.as_raw_fd())?, fd)))
        .collect();
    for _ in 0..64 {
        for (_, fd) in &known {
            let _ = pidfd_send_signal(fd, Signal::STOP);
        }
        let mut fresh = Vec::new();
        for (pid, _) in known.iter().filter(|(_, fd)| !readable_now(fd)) {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for task in tasks.flatten() {
                let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                for child in list.split_ascii_whitespace().filter_map(|c| c.parse::<i32>().ok()) {
                    if known.iter().chain(&fresh).any(|(p, _)| *p == child) {
                        continue;
                    }
                    let Ok(fd) = PidFd::open(child) else { continue };
                    let parent = crate::sys::procfs::parent_of(child);
                    let ours =
                        parent.is_some_and(|pp| known.iter().any(|(p, f)| *p == pp && !readable_now(f)));
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
        let _ = pidfd_send_signal(fd, Signal::KILL);
    }
}
