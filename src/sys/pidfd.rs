//! pidfds: how a signal reaches a member of the box. (The others: [`kill_pinned`], only for a
//! pid that cannot be recycled when no descriptor is left, and `cgroup.kill` for a whole
//! cgroup.)
//!
//! Not the `pidfd` crate: it brings its own reactor thread, and here the mio loop must own
//! every fd. A pidfd pins the process: a signal sent through it can never reach a recycled PID,
//! and it turns readable when the process exits.
//!
//! `pidfd_open` and the readiness check go through rustix. Sending stays a raw syscall:
//! rustix's `Signal` may not carry the real-time signals glibc reserves (32, 33), which the
//! job may be sent like any other, nor signal 0, the liveness check.

use crate::signals::Sig;
use rustix::process::{pidfd_open, Pid, PidfdFlags};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// `pidfd_send_signal(fd, sig, NULL, 0)` for any signal number, 0 included.
fn send(fd: BorrowedFd, sig: i32) -> io::Result<()> {
    // SAFETY: a valid pidfd, a plain signal number, a null siginfo (the kernel fills it like
    // kill(2)), and flags 0: no memory is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
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

/// kill(2) of one positive pid, for a process that cannot be recycled before proc_box waits
/// for it (its own unreaped child, a tracee), when no descriptor is left for a pidfd.
pub fn kill_pinned(pid: i32, sig: Sig) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) takes two integers; `pid` is positive, so it names one process, never a
    // group or every process.
    match unsafe { libc::kill(pid, sig.raw()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether `pid` leads its thread group: `tgkill(pid, pid, 0)` succeeds only for a leader,
/// and sends nothing.
pub fn leads_thread_group(pid: i32) -> bool {
    // SAFETY: three integers; signal 0 sends nothing.
    pid > 0 && unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, 0) } == 0
}

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
        // Checked first: rustix's Pid::from_raw asserts that it is not negative.
        let Some(id) = (pid > 0).then(|| Pid::from_raw(pid)).flatten() else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let fd = pidfd_open(id, PidfdFlags::empty())?;
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
        send(self.fd.as_fd(), sig.raw())
    }

    /// Whether the process still exists, as a zombie included: false once it is released
    /// (reaped, by whoever). Signal 0 checks without sending.
    pub fn alive(&self) -> bool {
        match send(self.fd.as_fd(), 0) {
            Ok(()) => true,
            Err(e) => e.raw_os_error() != Some(libc::ESRCH),
        }
    }

    /// The real parent's pid, from `PIDFD_GET_INFO` (Linux 6.13): no `/proc` entry of the
    /// process is touched. Errors with ENOTTY on older kernels.
    pub fn parent_pid(&self) -> io::Result<i32> {
        /// `struct pidfd_info` of `linux/pidfd.h`, version 1 (`PIDFD_INFO_SIZE_VER1`, 72 bytes,
        /// Linux 6.15). Older kernels take any size from version 0 (64 bytes) up, fill what
        /// they know and zero the rest.
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
        const SIZE: usize = std::mem::size_of::<PidfdInfo>();
        const _: () = assert!(SIZE == 72, "struct pidfd_info, version 1, is 72 bytes");
        const PIDFD_INFO_PID: u64 = 1;
        // _IOWR(0xFF, 11, struct pidfd_info): the size in the request is the struct's.
        const PIDFD_GET_INFO: libc::c_ulong = (3 << 30) | ((SIZE as libc::c_ulong) << 16) | (0xFF << 8) | 11;
        let mut info = PidfdInfo { mask: PIDFD_INFO_PID, ..Default::default() };
        // SAFETY: the kernel writes at most the size encoded in the request, size_of::<PidfdInfo>()
        // (72, asserted above) bytes, into `info`, which we own.
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
        super::fd::readable_now(&self.fd)
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// PIDFD_GET_INFO with the 72-byte struct: the kernel (6.13 and later) answers with the
    /// real parent, the one getppid gives.
    #[test]
    fn parent_pid_from_pidfd_info() {
        let me = PidFd::open(std::process::id() as i32).unwrap();
        match me.parent_pid() {
            Ok(ppid) => assert_eq!(ppid, rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOTTY), "only an old kernel may refuse"),
        }
        assert!(me.alive() && !me.exited());
        assert!(PidFd::open(0).is_err() && PidFd::open(-1).is_err());
    }
}
