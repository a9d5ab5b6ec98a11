//! pidfds: the only way a signal leaves the box.
//!
//! Raw syscalls through `libc` rather than the `pidfd` crate: that crate brings its own reactor
//! thread, and here the mio loop must own every fd. A pidfd pins the process: a signal sent
//! through it can never reach a recycled PID, and it turns readable when the process exits.

use crate::signals::Sig;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl PidFd {
    /// Opens a pidfd. Race-free only while `pid` is known to be ours: our unreaped child, a
    /// tracee, or a process verified against its parent's pidfd (see `Tracker::open_listed`).
    /// Fails with EINVAL for a thread that is not a thread-group leader.
    pub fn open(pid: i32) -> io::Result<PidFd> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd to us, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(PidFd { fd, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// Sends `sig`; ESRCH means the process has exited (it may still be a zombie).
    pub fn signal(&self, sig: Sig) -> io::Result<()> {
        // SAFETY: a valid pidfd, a signal number in range, a null siginfo (the kernel fills it
        // like kill(2)), and flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig.raw(),
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Whether the process still exists, as a zombie included: false once it is released
    /// (reaped, by whoever). Signal 0 checks without sending.
    pub fn alive(&self) -> bool {
        // SAFETY: a valid pidfd, signal 0 (nothing is sent), a null siginfo, flags 0.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }

    /// The real parent's pid, from `PIDFD_GET_INFO` (Linux 6.13): no `/proc` entry of the
    /// process is touched. Errors with ENOTTY on older kernels.
    pub fn parent_pid(&self) -> io::Result<i32> {
        /// `struct pidfd_info`, version 0 (64 bytes), of `linux/pidfd.h`.
        #[repr(C)]
        #[derive(Default)]
        struct PidfdInfo {
            mask: u64,
            cgroupid: u64,
            pid: u32,
            tgid: u32,
            ppid: u32,
            ids: [u32; 8],
            exit_code: i32,
            coredump_mask: u32,
            spare: u32,
        }
        const PIDFD_INFO_PID: u64 = 1;
        // _IOWR(0xFF, 11, struct pidfd_info)
        const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
        let mut info = PidfdInfo { mask: PIDFD_INFO_PID, ..Default::default() };
        // SAFETY: the kernel writes at most size_of::<PidfdInfo>() (64, the size encoded in the
        // request) bytes into `info`, which we own.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), PIDFD_GET_INFO, &mut info) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if info.mask & PIDFD_INFO_PID == 0 {
            return Err(io::Error::from_raw_os_error(libc::ENOTTY));
        }
        Ok(info.ppid as i32)
    }

    /// True once the process has exited (zombie or reaped).
    pub fn exited(&self) -> bool {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd on the stack, zero timeout.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Stops proc_box itself (terminal job control), through a pidfd like every other signal.
pub fn signal_self(sig: Sig) -> io::Result<()> {
    PidFd::open(std::process::id() as i32)?.signal(sig)
}
