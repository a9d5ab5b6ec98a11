//! Calls on any descriptor: the standard ones, readiness, and a Unix socket's peer.

pub use rustix::event::PollFlags;
use rustix::event::{poll, PollFd};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// Standard input, output or error (0, 1 or 2) as a borrowed descriptor; `None` for any other
/// number.
pub fn standard(fd: RawFd) -> Option<BorrowedFd<'static>> {
    // SAFETY: 0, 1 and 2 stay open for the life of the process: [`open_standard`] opens
    // /dev/null on any of them found closed at start, and proc_box never closes them.
    (0..=2).contains(&fd).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Opens /dev/null on any of 0, 1 and 2 that is closed, as std's runtime does before `main`
/// (proc_box starts without it, see `main.rs`): otherwise the first file proc_box opens
/// would become its standard output. Closed means `F_GETFD` fails with EBADF: an `O_PATH`
/// descriptor is open, though `poll` calls it invalid.
pub fn open_standard() -> io::Result<()> {
    for fd in 0..=2 {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::EBADF)
        {
            continue;
        }
        // SAFETY: open(2) of a constant path. The lower standard descriptors are open, so the
        // lowest free number, the one returned, is this closed one.
        let got = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        if got != fd {
            let err = io::Error::last_os_error();
            if got >= 0 {
                // SAFETY: the descriptor was just opened here and is owned by nothing else.
                unsafe { libc::close(got) };
            }
            return Err(io::Error::new(
                err.kind(),
                format!("cannot open /dev/null on closed fd {fd}: {err}"),
            ));
        }
    }
    Ok(())
}

/// Polls one descriptor for `events`, for at most `timeout` (`None`: no wait). Returns what
/// it reported (empty on a timeout, or an error such as EINTR).
pub fn poll_one(fd: impl AsFd, events: PollFlags, timeout: Option<Duration>) -> PollFlags {
    let mut fds = [PollFd::new(&fd, events)];
    let timeout = timeout.unwrap_or_default();
    let timeout = rustix::time::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(n) if n > 0 => fds[0].revents(),
        _ => PollFlags::empty(),
    }
}

/// Whether `fd` is readable now (input waiting, a hang-up, an error; for a pidfd: its process
/// exited), without waiting.
pub fn readable_now(fd: impl AsFd) -> bool {
    poll_one(fd, PollFlags::IN, None).intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_descriptors_only() {
        assert!((0..=2).all(|fd| standard(fd).is_some()));
        assert!(standard(3).is_none() && standard(-1).is_none());
    }

    #[test]
    fn poll_one_reports_what_the_pipe_has() {
        // Close-on-exec: a child spawned by a test beside this one must not hold the write end.
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        assert!(!readable_now(&r));
        assert!(poll_one(&w, PollFlags::OUT, None).contains(PollFlags::OUT));
        rustix::io::write(&w, b"x").unwrap();
        assert!(readable_now(&r));
        drop(w);
        let mut buf = [0u8; 1];
        rustix::io::read(&r, &mut buf).unwrap();
        // Drained, every writer gone: a hang-up, and nothing to read.
        let got = poll_one(&r, PollFlags::IN, Some(Duration::from_millis(1)));
        assert!(got.contains(PollFlags::HUP) && !got.contains(PollFlags::IN));
    }
}
