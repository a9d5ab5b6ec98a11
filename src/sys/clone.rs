//! `clone3(2)` as a fork whose child is born in a cgroup (`CLONE_INTO_CGROUP`, Linux 5.7).
//! glibc has no wrapper, and nix and rustix have none either.

use nix::unistd::{ForkResult, Pid};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct clone_args` as of Linux 5.7 (`CLONE_ARGS_SIZE_VER2`): every field is 64 bits wide
/// on every architecture.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Forks, the child starting life in the cgroup v2 directory `dir`. An error means no child
/// was made (an older kernel: `ENOSYS`, `E2BIG`; a directory that cannot take the process):
/// the caller forks and moves it instead.
///
/// # Safety
/// As for `fork`: in a process with other threads, the child may only make
/// async-signal-safe calls until it execs. glibc's fork handlers do not run either, so the
/// child must not touch its locks or caches (malloc, stdio) at all.
pub unsafe fn fork_into_cgroup(dir: BorrowedFd) -> io::Result<ForkResult> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM or a stack: like fork, the child gets a copy of this
    // address space and returns here with 0. `args` is read by the kernel during the call.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(ForkResult::Child),
        pid => Ok(ForkResult::Parent { child: Pid::from_raw(pid as i32) }),
    }
}
