//! Raw `waitid`/`wait4`, decoded by hand for every signal number from 1 to 64.
//!
//! nix's `WaitStatus` refuses signal numbers it has no name for (32–64, which glibc itself
//! sends between threads), and a tracee whose stop is never consumed hangs the job for good.
//! rustix's `waitid` decodes any number but does not give the pid of a `P_ALL` wait, and
//! neither crate has `wait4`, the one call that returns a reaped child's rusage. Here every
//! status decodes; only the kernel's own errors stop a drain.

use nix::errno::Errno;
use std::time::Duration;

/// One child state change, as the kernel reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Exited(i32),
    Signaled(i32),
    /// A stop: `event` is the ptrace event (`status >> 16`), 0 for a plain signal stop.
    Stopped {
        sig: i32,
        event: i32,
    },
    Continued,
}

/// Decodes a `wait4` status word; `None` only for a word no kernel produces.
pub fn decode(status: i32) -> Option<Change> {
    if libc::WIFEXITED(status) {
        Some(Change::Exited(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Change::Signaled(libc::WTERMSIG(status)))
    } else if libc::WIFSTOPPED(status) {
        Some(Change::Stopped { sig: libc::WSTOPSIG(status), event: (status >> 16) & 0xff })
    } else if libc::WIFCONTINUED(status) {
        Some(Change::Continued)
    } else {
        None
    }
}

/// A pending change, seen without consuming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peeked {
    /// The task exited, and stays a zombie until it is waited for.
    Exit(i32),
    /// A stop: `event` is the ptrace event, 0 for a signal-delivery or job-control stop. A
    /// ptrace stop need not be consumed: restarting the tracee ends it, and wait forgets it.
    Stop {
        pid: i32,
        sig: i32,
        event: i32,
    },
    Continued(i32),
}

/// Peeks at the next pending change (`WNOWAIT`), so an exiting task can be examined while it
/// is still a zombie, and a tracee restarted with no second syscall. `Ok(None)`: children
/// exist, none has news. `Err(ECHILD)`: no child left.
pub fn peek(flags: libc::c_int) -> Result<Option<Peeked>, Errno> {
    // SAFETY: siginfo_t is plain data; all-zero is valid and means "no child" to the checks below.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a local siginfo_t.
    let rc = unsafe {
        libc::waitid(libc::P_ALL, 0, &mut info, flags | libc::WEXITED | libc::WNOWAIT | libc::WNOHANG)
    };
    Errno::result(rc)?;
    // SAFETY: waitid filled a SIGCHLD siginfo (or left it zeroed), whose fields are readable.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    Ok(match info.si_code {
        _ if pid == 0 => None,
        libc::CLD_EXITED | libc::CLD_KILLED | libc::CLD_DUMPED => Some(Peeked::Exit(pid)),
        // A ptrace stop's status is the tracee's exit_code: the signal, and the event above it.
        libc::CLD_TRAPPED | libc::CLD_STOPPED => {
            Some(Peeked::Stop { pid, sig: status & 0xff, event: (status >> 8) & 0xff })
        }
        _ => Some(Peeked::Continued(pid)),
    })
}

/// Whether `pid` is still ours to wait for, as our child or our tracee: `waitid` on it alone,
/// consuming nothing, fails with ECHILD otherwise.
pub fn is_ours(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT | libc::WNOHANG | libc::__WALL;
    // SAFETY: a valid pointer to a local siginfo_t.
    pid > 0 && unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) } == 0
}

/// Consumes the pending change of `pid`: its raw status and its rusage (meaningful for an exit).
pub fn wait4(pid: i32, flags: libc::c_int) -> Result<(i32, libc::rusage), Errno> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a local int and a local rusage.
    let rc = unsafe { libc::wait4(pid, &mut status, flags | libc::WNOHANG, &mut ru) };
    match Errno::result(rc)? {
        0 => Err(Errno::EAGAIN), // no change after all (a peeked stop was taken back by SIGCONT)
        _ => Ok((status, ru)),
    }
}

pub fn timeval(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) as u32) * 1000)
}

/// The disk I/O a rusage carries: the kernel's `read_bytes` and `write_bytes`, in 512-byte
/// blocks. No character counts (`rchar`, `wchar`).
pub fn block_io(ru: &libc::rusage) -> crate::sys::procfs::IoSum {
    crate::sys::procfs::IoSum {
        read_bytes: ru.ru_inblock.max(0) as u64 * 512,
        write_bytes: ru.ru_oublock.max(0) as u64 * 512,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_signal_number_decodes() {
        for sig in 1..=64 {
            assert_eq!(decode(sig), Some(Change::Signaled(sig)), "killed by {sig}");
            assert_eq!(decode(sig | 0x80), Some(Change::Signaled(sig)), "core dump, {sig}");
            assert_eq!(decode((sig << 8) | 0x7f), Some(Change::Stopped { sig, event: 0 }), "stop {sig}");
        }
        // A ptrace event stop: SIGTRAP | PTRACE_EVENT_FORK << 8, shifted as the kernel does.
        let fork = ((libc::SIGTRAP | (libc::PTRACE_EVENT_FORK << 8)) << 8) | 0x7f;
        assert_eq!(
            decode(fork),
            Some(Change::Stopped { sig: libc::SIGTRAP, event: libc::PTRACE_EVENT_FORK })
        );
        assert_eq!(decode(3 << 8), Some(Change::Exited(3)));
        assert_eq!(decode(0xffff), Some(Change::Continued));
    }
}
