//! The two ways the job's process is made. `clone3(2)` as a fork whose child is born in a
//! cgroup (`CLONE_INTO_CGROUP`, Linux 5.7), for which glibc, nix and rustix have no wrapper;
//! and glibc's `clone(2)` with `CLONE_VM`, a child that shares our memory until it execs, as
//! under `posix_spawn` (which cannot wait for the tracer, so it is not used). Both hand back a
//! pidfd made with the child (`CLONE_PIDFD`).

use rustix::mm::{mmap_anonymous, mprotect, munmap, MapFlags, MprotectFlags, ProtFlags};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// Which side of a fork this is.
pub enum Forked {
    Child,
    /// The pidfd, unless the kernel ignored `CLONE_PIDFD` (before Linux 5.2).
    Parent {
        pid: i32,
        pidfd: Option<OwnedFd>,
    },
}

/// Forks, the child starting life in the cgroup v2 directory `dir`. An error means no child
/// was made (an older kernel: `ENOSYS`, `E2BIG`; a directory that cannot take the process):
/// the caller starts it another way and moves it instead.
///
/// # Safety
/// As for `fork`: in a process with other threads, the child may only make
/// async-signal-safe calls until it execs. glibc's fork handlers do not run either, so the
/// child must not touch its locks or caches (malloc, stdio) at all.
pub unsafe fn fork_into_cgroup(dir: BorrowedFd) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM or a stack: like fork, the child gets a copy of this
    // address space and returns here with 0. `args` and `pidfd` are written and read by the
    // kernel during the call.
    let rc = unsafe { libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, size_of::<CloneArgs>()) };
    match rc {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent { pid: pid as i32, pidfd: owned(pidfd) }),
    }
}

/// The stack of a child that shares our memory: a mapping of its own, with a guard page below
/// it, so that an overflow faults instead of writing over proc_box's data.
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

/// The child runs a few dozen system calls with small frames; 64 KiB is ample.
const STACK: usize = 64 << 10;
const GUARD: usize = 4 << 10;

impl ChildStack {
    pub fn new() -> io::Result<ChildStack> {
        let len = STACK + GUARD;
        // SAFETY: a fresh private anonymous mapping, owned by the value returned.
        let base = unsafe {
            mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::STACK,
            )?
        };
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping just made.
        unsafe { mprotect(base, GUARD, MprotectFlags::empty())? };
        Ok(stack)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, which nothing else uses by now (see ExecReport).
        let _ = unsafe { munmap(self.base, self.len) };
    }
}

/// Starts `entry(arg)` in a new process that shares this address space until it execs
/// (`CLONE_VM`, without `CLONE_VFORK`: the parent goes on, to seize it), on `stack`. Its
/// thread-local storage is the caller's too. Returns its pid and a pidfd (none from a kernel
/// that ignores `CLONE_PIDFD`, before Linux 5.2).
///
/// # Safety
/// `entry` must make raw system calls only (no `errno`, no allocation, no lock), touch no
/// memory the parent may change, and exec or exit; `arg` and `stack` must stay valid until it
/// has.
pub unsafe fn spawn_sharing_memory(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
    stack: &ChildStack,
) -> io::Result<(i32, Option<OwnedFd>)> {
    let mut pidfd: libc::c_int = -1;
    let top = stack.base.wrapping_byte_add(stack.len);
    // SAFETY: glibc's clone runs `entry` on the top of a mapping we own; with CLONE_PIDFD the
    // kernel writes the pidfd through the parent_tid argument, a local.
    let pid = unsafe {
        libc::clone(
            entry,
            top,
            libc::CLONE_VM | libc::CLONE_PIDFD | libc::SIGCHLD,
            arg,
            &mut pidfd as *mut libc::c_int,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((pid, owned(pidfd)))
}

/// The descriptor `CLONE_PIDFD` wrote, if it did.
fn owned(pidfd: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: a descriptor the kernel made for us alone at the clone.
    (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) })
}
