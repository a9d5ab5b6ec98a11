//! Starting the main process: fork, pre-exec setup, ptrace seize, exec.
//!
//! The child waits on a pipe until the parent has seized it, so it is traced before it runs a
//! single instruction of the job. Exec failure comes back over a close-on-exec pipe as an errno,
//! which is how proc_box tells 126 from 127 (contract §2).

use crate::config::Track;
use crate::signals::Sig;
use crate::tracker::pidfd::PidFd;
use crate::tracker::{ptrace, Mode};
use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::unistd::{fork, pipe2, ForkResult};
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub struct Spawned {
    pub pidfd: PidFd,
    pub mode: Mode,
    pub report: ExecReport,
}

/// Read end of the exec-report pipe: EOF once the exec succeeded, or 4 bytes of errno.
pub struct ExecReport(std::fs::File);

impl ExecReport {
    /// The exec's errno, if it failed. Call once the main process has exited, so the
    /// close-on-exec write end is surely closed and the read cannot block.
    pub fn exec_error(&mut self) -> Option<std::io::Error> {
        let mut buf = [0u8; 4];
        match self.0.read(&mut buf) {
            Ok(4) => Some(std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf))),
            _ => None,
        }
    }
}

/// The job's environment: proc_box's own, less the `PBOX_*` options it consumed, plus
/// `PROC_BOX_ID` and `PROC_BOX_TRACK`, so a job (or a puzzled user of gdb inside it) can tell
/// it runs boxed, and how.
fn job_env(box_id: &str, mode: &str) -> Vec<CString> {
    let consumed = crate::config::env_names();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "PROC_BOX_ID" && k != "PROC_BOX_TRACK")
        .filter(|(k, _)| !consumed.iter().any(|c| k == c.as_str()))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.extend(CString::new(format!("PROC_BOX_ID={box_id}")));
    env.extend(CString::new(format!("PROC_BOX_TRACK={mode}")));
    env
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings.iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect()
}

/// What the go byte tells the child: which environment to exec with.
const GO_PTRACE: u8 = b'p';
const GO_SUBREAPER: u8 = b's';

/// What the job's process gets besides its argv.
pub struct ChildSetup {
    /// The controlling tty to hand to the job's process group.
    pub terminal: Option<RawFd>,
    /// The signal mask the job starts with (proc_box's original one).
    pub mask: SigSet,
    /// Pipe ends to install as the job's stdout and stderr (the relays' write ends).
    pub stdio: [Option<RawFd>; 2],
    /// The RLIMIT_NOFILE proc_box started with, restored for the job.
    pub nofile: Option<libc::rlimit>,
    /// Signals ignored when proc_box started (bit N-1 for signal N), ignored again for the job.
    pub ignored: u64,
    /// `--rlimit`s: (resource, limit), set after the restored RLIMIT_NOFILE.
    pub rlimits: Vec<(i32, libc::rlimit)>,
    /// `cgroup.procs` of the box's cgroup directories: the job writes itself in before exec.
    pub cgroup: Vec<RawFd>,
    /// Whether the job joins them in ptrace mode too (subreaper mode always does).
    pub cgroup_in_ptrace: bool,
}

/// Forks and execs `argv` as set up by `setup`.
pub fn spawn(argv: &[OsString], box_id: &str, track: Track, setup: &ChildSetup) -> Result<Spawned, String> {
    let terminal = setup.terminal;
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "an argument contains a NUL byte".to_string()))
        .collect::<Result<_, _>>()?;
    let ptrs = pointers(&cargs);
    let envs = [job_env(box_id, "ptrace"), job_env(box_id, "subreaper")];
    let envps = [pointers(&envs[0]), pointers(&envs[1])];
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let mask = *setup.mask.as_ref();

    // SAFETY: the child only makes async-signal-safe calls on memory prepared before the fork,
    // so threads that may run already (the log writer) cannot leave it a held lock to trip on.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            // SAFETY: see above; this never returns.
            unsafe {
                child(&ptrs, &envps, [go_r.as_raw_fd(), go_w.as_raw_fd()], report_w.as_raw_fd(), setup, &mask)
            }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(report_w);
            let _ = nix::unistd::setpgid(child, child);
            if let Some(fd) = terminal {
                // Both sides set it, so neither order of the race matters.
                let _ = nix::unistd::tcsetpgrp(unsafe_borrow(fd), child);
            }
            // Our child and not yet reaped, so this pidfd is certainly the right process.
            let pidfd = match PidFd::open(child.as_raw()) {
                Ok(p) => p,
                Err(e) => {
                    abandon(child, None, go_w);
                    return Err(format!("pidfd_open: {e} (Linux 5.3 or later is required)"));
                }
            };
            let mode = match track {
                Track::Subreaper => Mode::Subreaper,
                Track::Ptrace | Track::Auto => match ptrace::seize(child.as_raw()) {
                    Ok(()) => Mode::Ptrace,
                    Err(e) if track == Track::Ptrace => {
                        abandon(child, Some(&pidfd), go_w);
                        return Err(format!(
                            "ptrace is not permitted here ({e}): seccomp or Yama may forbid it; use --track subreaper"
                        ));
                    }
                    Err(e) => {
                        crate::warn!("ptrace is not permitted here ({e}); tracking descendants through the subreaper only");
                        Mode::Subreaper
                    }
                },
            };
            let go = if mode == Mode::Ptrace { GO_PTRACE } else { GO_SUBREAPER };
            if let Err(e) = nix::unistd::write(&go_w, &[go]) {
                abandon(child, Some(&pidfd), go_w);
                return Err(format!("cannot start the child: {e}"));
            }
            drop(go_w);
            drop((cargs, envs));
            Ok(Spawned { pidfd, mode, report: ExecReport(std::fs::File::from(report_r)) })
        }
    }
}

/// Gives up on a child that has not been told to go: it must neither run the job nor outlive
/// proc_box. Closing the go pipe is enough (the child reads EOF and exits 125), and needs no
/// pidfd; with one, the child is also killed, in case it is stopped. Then it is reaped.
fn abandon(child: nix::unistd::Pid, pidfd: Option<&PidFd>, go: std::os::fd::OwnedFd) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    if let Some(p) = pidfd {
        let _ = p.signal(Sig::KILL);
    }
    drop(go);
    loop {
        match waitpid(child, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return,
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue, // a ptrace stop: SIGKILL ends it
            Err(_) => return,
        }
    }
}

fn unsafe_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: `fd` is the terminal, proc_box's stdin, open for the whole run.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// The forked child. Only async-signal-safe libc calls from here on.
///
/// # Safety
/// Must be called in the child right after fork, with `argv` a null-terminated array of
/// valid C strings.
unsafe fn child(
    argv: &[*const libc::c_char],
    envps: &[Vec<*const libc::c_char>; 2],
    [go, go_w]: [RawFd; 2],
    report: RawFd,
    setup: &ChildSetup,
    mask: &libc::sigset_t,
) -> ! {
    let ChildSetup { terminal, stdio, nofile, ignored, ref rlimits, ref cgroup, cgroup_in_ptrace, .. } =
        *setup;
    // SAFETY (whole block): plain syscalls on fds and memory that stay valid until exec.
    unsafe {
        // Our copy of the write end would keep the read below from ever seeing EOF when the
        // parent gives up.
        libc::close(go_w);
        libc::setpgid(0, 0);
        if let Some(fd) = terminal {
            libc::tcsetpgrp(fd, libc::getpid()); // SIGTTOU is blocked, so this works from the background
        }
        for (target, fd) in [1, 2].into_iter().zip(stdio) {
            if let Some(fd) = fd {
                libc::dup2(fd, target); // the copy is not close-on-exec; the original is
            }
        }
        if let Some(limit) = nofile {
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        for (resource, limit) in rlimits {
            libc::setrlimit(*resource as _, limit);
        }
        // The dispositions proc_box was started with (Rust's runtime ignores SIGPIPE).
        crate::inherited::restore_in_child(ignored);
        let mut byte = 0u8;
        loop {
            let n = libc::read(go, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(125); // the parent gave up on us
        }
        // Into the box's cgroup, once the tracking mode is known: subreaper mode needs it to be
        // exact; ptrace mode, exact without it, joins only when asked to (each fork of a job in
        // a child cgroup costs it a little more).
        if (byte != GO_PTRACE || cgroup_in_ptrace) && !crate::cgroup::join_in_child(cgroup) {
            libc::_exit(125);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        let envp = if byte == GO_PTRACE { &envps[0] } else { &envps[1] };
        libc::execvpe(argv[0], argv.as_ptr(), envp.as_ptr());
        let err = *libc::__errno_location();
        let bytes = err.to_ne_bytes();
        libc::write(report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(if err == libc::ENOENT { 127 } else { 126 })
    }
}
