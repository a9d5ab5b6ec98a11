//! Signal dispositions proc_box was started with, handed on to the job as under `timeout(1)`:
//! unchanged, except for the signals proc_box handles and passes on, which the job gets at
//! their defaults ([`reset_for_job`]).
//!
//! They are read first thing in `main`, before proc_box ignores SIGPIPE and resets SIGCHLD
//! (proc_box starts without std's runtime, which would ignore SIGPIPE before `main`: see
//! `main.rs`), and restored in the child just before exec. Handlers are reset by exec itself,
//! so only "ignored" needs carrying over.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bit N-1 set: signal N was ignored at start.
static IGNORED: AtomicU64 = AtomicU64::new(0);
static CAPTURED: AtomicBool = AtomicBool::new(false);

/// Records which signals are ignored: 64 `sigaction` queries (half the cost of reading
/// `SigIgn` from `/proc/self/status`, and no /proc needed). Called first thing in `main`.
pub fn capture() {
    let mut bits = 0u64;
    for sig in 1..=64 {
        // SAFETY: sigaction is plain data; all-zero is a valid value.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a query only (null new action) into the local above.
        let rc = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
        if rc == 0 && old.sa_sigaction == libc::SIG_IGN {
            bits |= 1 << (sig - 1);
        }
    }
    IGNORED.store(bits, Ordering::Relaxed);
    CAPTURED.store(true, Ordering::Relaxed);
}

/// The signals ignored at start, bit N-1 for signal N. Without a capture (proc_box used as a
/// library), nothing is taken as ignored.
pub fn ignored() -> u64 {
    if CAPTURED.load(Ordering::Relaxed) {
        IGNORED.load(Ordering::Relaxed)
    } else {
        0
    }
}

/// The signals a job starts with at their defaults, whatever proc_box inherited: those proc_box
/// itself takes as requests and passes on (INT, QUIT, TERM, HUP, ALRM, and the stop signal), as
/// under `timeout(1)`, which installs handlers for them. A shell starts a background job with
/// INT and QUIT ignored; kept so, such a job could never be interrupted through proc_box.
pub fn reset_for_job(stop_signal: i32) -> u64 {
    [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP, libc::SIGALRM, stop_signal]
        .iter()
        .filter(|&&sig| (1..=64).contains(&sig))
        .fold(0, |bits, &sig| bits | 1 << (sig - 1))
}

/// What the job inherits as ignored: what proc_box was started with, less [`reset_for_job`].
pub fn ignored_for_job(stop_signal: i32) -> u64 {
    ignored() & !reset_for_job(stop_signal)
}

/// Resets what proc_box itself depends on, before anything is forked: with SIGCHLD ignored,
/// the kernel tells a tracer nothing of ptrace stops and reaps children without a status.
pub fn reset_for_box() {
    // SAFETY: setting a default disposition; no handler is involved.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// In the forked child, just before exec: gives back every disposition proc_box changed.
/// Only async-signal-safe calls. Meant for the child between fork and exec, where it changes
/// nothing of proc_box's own; setting SIG_IGN or SIG_DFL breaks no memory-safety rule, so the
/// function is safe.
pub fn restore_in_child(ignored: u64) {
    // An atomic load: async-signal-safe.
    let ignored_at_start = self::ignored();
    for sig in 1..=64 {
        let bit = 1 << (sig - 1);
        let was_ignored = ignored & bit != 0;
        // SIGPIPE (ignored in `main`) and SIGCHLD (reset_for_box) are the only ones proc_box
        // changes; a signal ignored at start but not for the job is still ignored here.
        let changed = sig == libc::SIGPIPE || sig == libc::SIGCHLD || ignored_at_start & bit != 0;
        if was_ignored || changed {
            let how = if was_ignored { libc::SIG_IGN } else { libc::SIG_DFL };
            // SAFETY: plain disposition change; fails harmlessly for SIGKILL/SIGSTOP.
            unsafe { libc::signal(sig, how) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_signals_are_reset_and_others_kept() {
        let bit = |sig: i32| 1u64 << (sig - 1);
        let reset = reset_for_job(libc::SIGUSR1);
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGHUP, libc::SIGALRM, libc::SIGUSR1] {
            assert_ne!(reset & bit(sig), 0, "signal {sig}");
        }
        for sig in [libc::SIGPIPE, libc::SIGUSR2, libc::SIGTTOU] {
            assert_eq!(reset & bit(sig), 0, "signal {sig}");
        }
    }
}
