//! ptrace mode: every fork, vfork and clone of a tracee is reported before the child runs.
//!
//! The rules that matter (see ptrace(2)):
//! * A signal-delivery stop must re-inject the signal, or the job never sees it. Any number
//!   from 1 to 64 can arrive here: glibc sends 32 and 33 between the threads of one process.
//! * A group-stop (SIGSTOP, SIGTSTP, …) is answered with `PTRACE_LISTEN`, so the tracee stays
//!   stopped, as it would untraced, yet we still hear of the SIGCONT that ends it.
//! * Auto-attached children of a seized tracee start in a `PTRACE_EVENT_STOP` with SIGTRAP;
//!   they run once continued, so a new process can be signalled before its first instruction.
//!
//! Raw `libc::ptrace` throughout: nix's wrappers take a `Signal`, which cannot hold 32–64.

use nix::errno::Errno;

const OPTIONS: libc::c_int = libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_EXITKILL;

fn request(req: libc::c_uint, pid: i32, data: usize) -> nix::Result<libc::c_long> {
    // SAFETY: the requests used here (SEIZE, CONT, LISTEN) take no address, and data is an
    // integer (options or a signal number); GETEVENTMSG goes through `event_msg` instead.
    let rc = unsafe { libc::ptrace(req, pid, std::ptr::null_mut::<libc::c_void>(), data) };
    Errno::result(rc)
}

/// Attaches without stopping the process.
pub fn seize(pid: i32) -> nix::Result<()> {
    request(libc::PTRACE_SEIZE, pid, OPTIONS as usize).map(drop)
}

/// Restarts a stopped tracee, delivering `sig` (0 for none).
fn cont(pid: i32, sig: i32) -> nix::Result<()> {
    request(libc::PTRACE_CONT, pid, sig as usize).map(drop)
}

/// Keeps a tracee in its group-stop while letting us hear of the SIGCONT that ends it.
fn listen(pid: i32) -> nix::Result<()> {
    request(libc::PTRACE_LISTEN, pid, 0).map(drop)
}

/// The new task's id at a fork, vfork or clone event.
fn event_msg(pid: i32) -> nix::Result<i32> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: GETEVENTMSG writes one c_ulong to the address given, a local.
    let rc = unsafe {
        libc::ptrace(libc::PTRACE_GETEVENTMSG, pid, std::ptr::null_mut::<libc::c_void>(), &mut msg)
    };
    Errno::result(rc).map(|_| msg as i32)
}

/// What a ptrace stop told us, after the tracee was restarted.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// A new task (process or thread) was created. Even a fork event's may be a thread: the
    /// event follows the exit signal, which a legacy `clone(CLONE_THREAD | SIGCHLD)` may set.
    Born { child: i32 },
    /// The task entered a group-stop with this signal and is now held by `PTRACE_LISTEN`.
    GroupStop { sig: i32 },
    /// Any other stop: a signal re-injected, a new task's first stop, an event we did not ask for.
    Other,
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// Whether the tracee was let go after its stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Restarted, or killed meanwhile (ESRCH): the stop is over, and wait has forgotten it.
    Done,
    /// The restart failed otherwise: the caller consumes the stop, or it would meet it again.
    Failed,
}

/// Handles one ptrace stop of `pid` and restarts the tracee. ESRCH (the tracee was killed
/// meanwhile) is expected. Whatever the stop, the tracee is let go: a stop we do not understand
/// is logged once and continued, never left hanging.
pub fn handle(pid: i32, sig: i32, event: i32) -> (Stop, Restart) {
    let mut restarted = Restart::Done;
    let mut restart = |r: nix::Result<()>| match r {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            crate::debug!("ptrace restart of {pid} failed: {e}");
            restarted = Restart::Failed;
        }
    };
    let stop = match event {
        0 => {
            // A signal-delivery stop (with PTRACE_SEIZE, group-stops are event stops): deliver it.
            restart(cont(pid, sig));
            Stop::Other
        }
        libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
            let child = event_msg(pid);
            restart(cont(pid, 0));
            match child {
                Ok(child) if child > 0 => Stop::Born { child },
                _ => Stop::Other,
            }
        }
        libc::PTRACE_EVENT_STOP if is_stop_signal(sig) => {
            restart(listen(pid));
            Stop::GroupStop { sig }
        }
        libc::PTRACE_EVENT_STOP => {
            restart(cont(pid, 0));
            Stop::Other
        }
        other => {
            unexpected(other);
            restart(cont(pid, 0));
            Stop::Other
        }
    };
    (stop, restarted)
}

/// Logs the first ptrace event of each kind we did not ask for; never more.
fn unexpected(event: i32) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let bit = 1u64 << (event as u32 % 64);
    if SEEN.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        crate::warn!("unexpected ptrace event {event}; the tracee was continued");
    }
}
