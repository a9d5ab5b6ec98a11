//! The system layer, below everything else: the `/proc` readers and the system-call wrappers,
//! as nix and rustix do it: each call wrapped once, returning `Errno`-style results and owned
//! descriptors, with any `unsafe` inside the wrapper. The tracker (what the tree is) and
//! accounting (how much it used) both read through here, so neither imports the other's
//! readers, and the module graph has no cycle.
//!
//! Raw `libc` stays outside only where no wrapper fits: between fork and exec (`spawn.rs`,
//! `inherited.rs`, the cgroup watcher and the guard: async-signal-safe, nothing may allocate),
//! in the fault handler (`fault.rs`), and for signal numbers 32–64, which neither rustix's nor
//! nix's signal type may carry (`tracker/ptrace.rs`, `signals.rs`, the signalfd read). The
//! README's "unsafe" section lists every remaining block.

pub mod clone;
pub mod fd;
pub mod pidfd;
pub mod procfs;
pub mod wait;

/// Called first by a helper that proc_box re-executes (the cgroup watcher, the pidfd guard):
/// it keeps nothing of its caller's but stdio and `keep` (an inherited pipe kept open would
/// keep its reader waiting for as long as the helper lives), and ignores the signals that a
/// terminal or a session sends, so that a Ctrl-C or a hang-up aimed at the job never ends the
/// helper before it has done its work.
pub fn become_helper(keep: std::os::fd::RawFd) {
    // SAFETY: closing descriptor ranges just after exec, when nothing in this process owns a
    // descriptor but stdio and `keep`, which are kept.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3, keep - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0);
    }
    for sig in [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGHUP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGPIPE,
    ] {
        // SAFETY: setting a signal's disposition to SIG_IGN.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
}
