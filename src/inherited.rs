//! Signal dispositions proc_box was started with, handed on to the job unchanged, as under
//! `timeout(1)`.
//!
//! They cannot be read in `main`: Rust's runtime sets SIGPIPE to ignored before it, and proc_box
//! then resets SIGCHLD. So they are captured from `.init_array`, before the runtime starts (the
//! binary registers [`capture`] there), and restored in the child just before exec. Handlers
//! are reset by exec itself, so only "ignored" needs carrying over.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Bit N-1 set: signal N was ignored at start.
static IGNORED: AtomicU64 = AtomicU64::new(0);
static CAPTURED: AtomicBool = AtomicBool::new(false);

/// Records which signals are ignored. Called from `.init_array`, before Rust's runtime.
/// One read of `SigIgn` in `/proc/self/status`; 64 `sigaction` queries where /proc is missing.
pub extern "C" fn capture() {
    let bits = from_proc_status().unwrap_or_else(|| {
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
        bits
    });
    IGNORED.store(bits, Ordering::Relaxed);
    CAPTURED.store(true, Ordering::Relaxed);
}

fn from_proc_status() -> Option<u64> {
    let mut buf = [0u8; 4096];
    let text = crate::accounting::procfs::read_pid_file(c"/proc/self/status", &mut buf)?;
    let hex = text.lines().find_map(|l| l.strip_prefix("SigIgn:"))?.trim();
    u64::from_str_radix(hex, 16).ok()
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

/// Resets what proc_box itself depends on, before anything is forked: with SIGCHLD ignored,
/// the kernel tells a tracer nothing of ptrace stops and reaps children without a status.
pub fn reset_for_box() {
    // SAFETY: setting a default disposition; no handler is involved.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
}

/// In the forked child, just before exec: gives back every disposition proc_box changed.
/// Only async-signal-safe calls.
///
/// # Safety
/// Call only in the child between fork and exec.
pub unsafe fn restore_in_child(ignored: u64) {
    for sig in 1..=64 {
        let was_ignored = ignored & (1 << (sig - 1)) != 0;
        // SIGPIPE (Rust's runtime) and SIGCHLD (reset_for_box) are the only ones proc_box
        // changes; every other default is still in place.
        if was_ignored || sig == libc::SIGPIPE || sig == libc::SIGCHLD {
            let how = if was_ignored { libc::SIG_IGN } else { libc::SIG_DFL };
            // SAFETY: plain disposition change; fails harmlessly for SIGKILL/SIGSTOP.
            unsafe { libc::signal(sig, how) };
        }
    }
}
