//! Reading what woke the loop: the signals queued on the signalfd, and the fault signals the
//! fault handler passed on through its pipe. Each comes out as (signal, sender).

use nix::sys::signalfd::SignalFd;
use std::os::fd::{AsRawFd, OwnedFd};

/// Every signal queued now, but a write of proc_box's own to a closed pipe (not a signal for
/// the tree). The sender is a pid, 0 for the kernel.
pub(super) fn signals(fd: &SignalFd, self_pid: i32) -> Vec<(i32, u32)> {
    const BATCH: usize = 16;
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    let mut got = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data; all-zero is a valid value.
        let mut infos: [libc::signalfd_siginfo; BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: reading into a local array of the size given.
        let n = unsafe { libc::read(fd.as_raw_fd(), infos.as_mut_ptr().cast(), size * BATCH) };
        if n <= 0 {
            break;
        }
        let count = n as usize / size;
        for info in &infos[..count] {
            let own_sigpipe = info.ssi_signo as i32 == libc::SIGPIPE
                && info.ssi_pid as i32 == self_pid
                && info.ssi_code == libc::SI_USER;
            if !own_sigpipe {
                got.push((info.ssi_signo as i32, info.ssi_pid));
            }
        }
        // Fewer than asked: the queue is empty, and epoll (edge-triggered) reports the next.
        if count < BATCH {
            break;
        }
    }
    got
}

/// Fault signals sent to proc_box with kill(2). The handler does not pass the sender on.
pub(super) fn sent_faults(pipe: &OwnedFd) -> Vec<(i32, u32)> {
    let mut got = Vec::new();
    let mut sigs = [0u8; 64];
    // Until the non-blocking pipe is empty (EAGAIN), or fails.
    while let Ok(n @ 1..) = rustix::io::read(pipe, &mut sigs[..]) {
        got.extend(sigs[..n].iter().map(|&sig| (i32::from(sig), u32::MAX)));
    }
    got
}
