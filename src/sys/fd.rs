//! Calls on any descriptor: readiness without waiting, and a Unix socket's peer.

use rustix::event::{poll, PollFd, PollFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Whether `fd` is readable now (input waiting, a hang-up, an error; for a pidfd: its process
/// exited), without waiting.
pub fn readable_now(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
        && fds[0].revents().intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
}

/// The peer of a connected Unix socket (`SO_PEERCRED`): pid, uid and gid.
///
/// Not rustix's `socket_peercred`: its `UCred` holds the pid as a non-zero `Pid`, but the
/// kernel reports 0 for a peer in a pid namespace proc_box cannot see.
pub fn peer_credentials(socket: impl AsFd) -> io::Result<libc::ucred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes, one ucred, into the local given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred)
}
