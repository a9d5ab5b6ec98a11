//! ptrace mode: every fork, vfork and clone of a tracee is reported before the child runs.
//!
//! The rules that matter (see ptrace(2)):
//! * A signal-delivery stop must re-inject the signal, or the job never sees it.
//! * A group-stop (SIGSTOP, SIGTSTP, …) is answered with `PTRACE_LISTEN`, so the tracee stays
//!   stopped, as it would untraced, yet we still hear of the SIGCONT that ends it.
//! * Auto-attached children of a seized tracee start in a `PTRACE_EVENT_STOP` with SIGTRAP;
//!   they run once continued, so a new process can be signalled before its first instruction.

use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

pub fn options() -> Options {
    Options::PTRACE_O_TRACEFORK
        | Options::PTRACE_O_TRACEVFORK
        | Options::PTRACE_O_TRACECLONE
        | Options::PTRACE_O_EXITKILL
}

/// Attaches without stopping the process.
pub fn seize(pid: i32) -> nix::Result<()> {
    ptrace::seize(Pid::from_raw(pid), options())
}

/// What a ptrace stop told us, after the tracee was restarted appropriately.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// A new task (process or thread) was created by `parent`.
    Born { parent: i32, child: i32 },
    /// The task entered a group-stop with this signal and is now held by `PTRACE_LISTEN`.
    GroupStop { pid: i32, sig: Signal },
    /// Any other stop, including a new task's first stop; `pid` is the task that stopped.
    Other { pid: i32 },
}

/// Handles one ptrace stop reported by waitpid and restarts the tracee. ESRCH (the tracee was
/// killed meanwhile) is expected and ignored.
pub fn handle(status: WaitStatus) -> Option<Stop> {
    let ignore_gone = |r: nix::Result<()>| match r {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => crate::debug!("ptrace restart failed: {e}"),
    };
    match status {
        WaitStatus::PtraceEvent(pid, _, ev)
            if ev == Event::PTRACE_EVENT_FORK as i32
                || ev == Event::PTRACE_EVENT_VFORK as i32
                || ev == Event::PTRACE_EVENT_CLONE as i32 =>
        {
            let child = ptrace::getevent(pid).ok();
            ignore_gone(ptrace::cont(pid, None));
            child.map(|c| Stop::Born { parent: pid.as_raw(), child: c as i32 })
        }
        WaitStatus::PtraceEvent(pid, sig, ev) if ev == Event::PTRACE_EVENT_STOP as i32 => {
            if matches!(sig, Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU) {
                ignore_gone(listen(pid));
                Some(Stop::GroupStop { pid: pid.as_raw(), sig })
            } else {
                ignore_gone(ptrace::cont(pid, None));
                Some(Stop::Other { pid: pid.as_raw() })
            }
        }
        WaitStatus::PtraceEvent(pid, _, _) => {
            ignore_gone(ptrace::cont(pid, None));
            Some(Stop::Other { pid: pid.as_raw() })
        }
        WaitStatus::Stopped(pid, sig) => {
            // Signal-delivery stop: deliver the signal the job was sent.
            ignore_gone(ptrace::cont(pid, sig));
            Some(Stop::Other { pid: pid.as_raw() })
        }
        _ => None,
    }
}

/// `PTRACE_LISTEN`, which nix does not wrap.
fn listen(pid: Pid) -> nix::Result<()> {
    // SAFETY: PTRACE_LISTEN takes no addr or data; the pid is a tracee in group-stop.
    let rc =
        unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid.as_raw(), std::ptr::null_mut::<libc::c_void>(), 0) };
    Errno::result(rc).map(drop)
}
