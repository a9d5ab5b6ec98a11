//! Starting the main process: fork, pre-exec setup, ptrace seize, exec.
//!
//! The child sets itself up, then waits on a pipe until the parent has seized it, so it is
//! traced before it runs a single instruction of the job; the parent's seize and the child's
//! setup overlap. Then it joins the cgroup and execs. It checks every step, as tini does: a failed step comes back over a close-on-exec pipe with its errno and the child
//! exits 125 (proc_box failed, the job never ran); a failed exec comes back the same way, which
//! is how proc_box tells 126 from 127. The program is looked up on `PATH` in the parent (the
//! search allocates), so the child only calls `execve`.

use crate::config::Track;
use crate::signals::Sig;
use crate::sys::clone::{spawn_sharing_memory, ChildStack, Forked};
use crate::sys::pidfd::PidFd;
use crate::tracker::{ptrace, Mode};
use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::unistd::pipe2;
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use syscalls::{syscall, Errno, Sysno};

pub struct Spawned {
    pub pidfd: PidFd,
    pub mode: Mode,
    pub report: ExecReport,
}

/// Read end of the report pipe: EOF once the exec succeeded, or one [`Failure`] record.
///
/// It also holds what the child reads before its exec (the [`Plan`], and the stack of a child
/// that shares our memory) until the main process has exited: only then is it certain that
/// the child no longer runs in this address space. Dropped before that (an error on the way
/// out), they are leaked instead.
pub struct ExecReport {
    pipe: std::fs::File,
    held: Option<Box<dyn std::any::Any>>,
}

impl Drop for ExecReport {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            std::mem::forget(held);
        }
    }
}

impl ExecReport {
    /// The exec's errno, if it failed. Call once the main process has exited, so the
    /// close-on-exec write end is surely closed and the read cannot block. A setup step that
    /// failed before the exec is logged here instead: the child exited 125 for it, and that is
    /// already the box's status.
    pub fn exec_error(&mut self) -> Option<std::io::Error> {
        self.held = None; // the main process has exited: nothing runs on these any more
        let mut buf = [0u8; 12];
        let mut got = 0;
        while got < buf.len() {
            match self.pipe.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if got != buf.len() {
            return None;
        }
        let word = |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
        match Failure::from_raw(word(0), word(4))? {
            Failure::Exec => Some(std::io::Error::from_raw_os_error(word(8))),
            step => {
                crate::error!("{step}: {}", nix::errno::Errno::from_raw(word(8)).desc());
                None
            }
        }
    }
}

/// What failed in the child. It goes over the pipe as a kind, a detail (a resource or a file
/// descriptor) and the errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    Exec,
    Setpgid,
    Tcsetpgrp,
    Dup2(i32),
    Rlimit(i32),
    Cgroup,
    Sigmask,
}

impl Failure {
    fn to_raw(self) -> (i32, i32) {
        match self {
            Failure::Exec => (0, 0),
            Failure::Setpgid => (1, 0),
            Failure::Tcsetpgrp => (2, 0),
            Failure::Dup2(fd) => (3, fd),
            Failure::Rlimit(resource) => (4, resource),
            Failure::Cgroup => (5, 0),
            Failure::Sigmask => (6, 0),
        }
    }

    fn from_raw(kind: i32, detail: i32) -> Option<Failure> {
        Some(match kind {
            0 => Failure::Exec,
            1 => Failure::Setpgid,
            2 => Failure::Tcsetpgrp,
            3 => Failure::Dup2(detail),
            4 => Failure::Rlimit(detail),
            5 => Failure::Cgroup,
            6 => Failure::Sigmask,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match *self {
            Failure::Exec => write!(f, "cannot execute the command"),
            Failure::Setpgid => write!(f, "cannot give the job a process group of its own (setpgid)"),
            Failure::Tcsetpgrp => write!(f, "cannot hand the terminal to the job (tcsetpgrp)"),
            Failure::Dup2(1) => write!(f, "cannot connect the job's stdout (dup2)"),
            Failure::Dup2(fd) => write!(f, "cannot connect the job's fd {fd} (dup2)"),
            Failure::Rlimit(r) => write!(f, "cannot set {}", rlimit_name(r)),
            Failure::Cgroup => write!(f, "cannot move the job into the box's cgroup"),
            Failure::Sigmask => write!(f, "cannot restore the job's signal mask"),
        }
    }
}

fn rlimit_name(resource: i32) -> String {
    let names = [
        (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE"),
        (libc::RLIMIT_CORE, "RLIMIT_CORE"),
        (libc::RLIMIT_AS, "RLIMIT_AS"),
        (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE"),
        (libc::RLIMIT_NPROC, "RLIMIT_NPROC"),
        (libc::RLIMIT_STACK, "RLIMIT_STACK"),
        (libc::RLIMIT_CPU, "RLIMIT_CPU"),
    ];
    names
        .iter()
        .find(|(r, _)| *r as i32 == resource)
        .map_or(format!("resource limit {resource}"), |(_, n)| (*n).into())
}

/// The program as `execvp` would find it, looked up in the parent: a name with a slash is
/// used as it is; otherwise the first regular, executable file of that name on `PATH`
/// (`/bin:/usr/bin` when unset; an empty entry is the current directory). Failing that, a
/// match that cannot be executed, so that execve says why (126). `Err(ENOENT)` when there is
/// none: the child reports it as the exec's failure (127).
fn resolve(program: &std::ffi::OsStr, path: Option<&std::ffi::OsStr>) -> Result<CString, i32> {
    use std::path::{Path, PathBuf};
    let bytes = program.as_bytes();
    let cstring = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| libc::EINVAL);
    if bytes.is_empty() {
        return Err(libc::ENOENT);
    }
    if bytes.contains(&b'/') {
        return cstring(Path::new(program));
    }
    let path = path.map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
    let mut refused: Option<PathBuf> = None;
    for dir in path.split(|&b| b == b':') {
        let candidate = Path::new(std::ffi::OsStr::from_bytes(dir)).join(program);
        let runnable = match std::fs::metadata(&candidate) {
            Ok(m) => m.is_file() && executable(&candidate),
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => false,
            Err(_) => continue,
        };
        if runnable {
            return cstring(&candidate);
        }
        refused.get_or_insert(candidate);
    }
    refused.map_or(Err(libc::ENOENT), |p| cstring(&p))
}

/// Whether execve would let proc_box's effective ids execute this file.
fn executable(path: &std::path::Path) -> bool {
    use nix::fcntl::{AtFlags, AT_FDCWD};
    use nix::unistd::{faccessat, AccessFlags};
    faccessat(AT_FDCWD, path, AccessFlags::X_OK, AtFlags::AT_EACCESS).is_ok()
}

/// The job's environment: proc_box's own, less the `PBOX_*` options it consumed, plus
/// `PROC_BOX_ID` and `PROC_BOX_TRACK`, so a job (or a puzzled user of gdb inside it) can tell
/// it runs boxed, and how. The mode is known only once the child exists, so the variable
/// comes in both values: the common part is built once.
fn job_env(box_id: &str, consumed: &[String]) -> (Vec<CString>, [CString; 2]) {
    let env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "PROC_BOX_ID" && k != "PROC_BOX_TRACK")
        .filter(|(k, _)| !consumed.iter().any(|c| k == c.as_str()))
        .filter_map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .chain(CString::new(format!("PROC_BOX_ID={box_id}")))
        .collect();
    (env, [c"PROC_BOX_TRACK=ptrace".to_owned(), c"PROC_BOX_TRACK=subreaper".to_owned()])
}

fn pointers<'a>(strings: impl IntoIterator<Item = &'a CString>) -> Vec<*const libc::c_char> {
    strings.into_iter().map(|c| c.as_ptr()).chain([std::ptr::null()]).collect()
}

/// What the go byte tells the child: which environment to exec with.
const GO_PTRACE: u8 = b'p';
const GO_SUBREAPER: u8 = b's';

/// What the job's process gets besides its argv.
pub struct ChildSetup<'a> {
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
    /// The box's cgroup, which the job joins before exec.
    pub cgroup: Option<crate::cgroup::Join>,
    /// Whether the job joins them in ptrace mode too (subreaper mode always does).
    pub cgroup_in_ptrace: bool,
    /// proc_box's own variables, left out of the job's environment.
    pub consumed_env: &'a [String],
}

/// Forks and execs `argv` as set up by `setup`.
/// `before_go` runs once the tracking mode is known and before the child may exec: the last
/// moment to act on the child (move it into a cgroup) before it can fork.
pub fn spawn(
    argv: &[OsString],
    box_id: &str,
    track: Track,
    setup: &ChildSetup,
    before_go: &mut dyn FnMut(Mode, i32) -> Result<(), String>,
) -> Result<Spawned, String> {
    if argv.is_empty() {
        return Err("no command to run".into());
    }
    let terminal = setup.terminal;
    let cargs: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "an argument contains a NUL byte".to_string()))
        .collect::<Result<_, _>>()?;
    let program = resolve(&argv[0], std::env::var_os("PATH").as_deref());
    // A file that is neither a binary nor a `#!` script is run by the shell, as execvp does.
    let sh_args: Vec<CString> = match &program {
        Ok(path) => {
            [c"/bin/sh".to_owned(), path.clone()].into_iter().chain(cargs[1..].iter().cloned()).collect()
        }
        Err(_) => Vec::new(),
    };
    let (env, track_vars) = job_env(box_id, setup.consumed_env);
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (sig_ignore, sig_default) = crate::inherited::for_job(setup.ignored);
    let join = setup.cgroup.as_ref();
    let plan = Box::new(Plan {
        argv: pointers(&cargs),
        sh_argv: pointers(&sh_args),
        envps: track_vars.each_ref().map(|v| pointers(env.iter().chain([v]))),
        program,
        _strings: (cargs, sh_args, env, track_vars),
        go: go_r.as_raw_fd(),
        go_w: go_w.as_raw_fd(),
        report: report_w.as_raw_fd(),
        terminal,
        stdio: setup.stdio,
        rlimits: setup
            .nofile
            .map(|l| (libc::RLIMIT_NOFILE as i32, l))
            .into_iter()
            .chain(setup.rlimits.iter().copied())
            .collect(),
        sig_ignore,
        sig_default,
        cgroup_procs: join.and_then(|j| j.procs.as_ref()).map(|fd| fd.as_raw_fd()),
        cgroup_tasks: join.map_or(Vec::new(), |j| j.tasks.iter().map(|fd| fd.as_raw_fd()).collect()),
        cgroup_in_ptrace: setup.cgroup_in_ptrace,
        mask: *setup.mask.as_ref(),
    });

    // A job certain to join the cgroup is born in its v2 directory (see `cgroup::Join`): a
    // fork through clone3. Otherwise the child shares this address space until it execs, as
    // under posix_spawn: no page tables to copy, and no copy-on-write fault for every page
    // proc_box writes to meanwhile (about 0.2 ms of each start, against fork).
    let birth_dir =
        join.and_then(|j| j.dir.as_ref()).filter(|_| track == Track::Subreaper || setup.cgroup_in_ptrace);
    let mut stack = None;
    // SAFETY: the child makes raw system calls only, on the Plan, which is kept until the
    // child has exec'd or exited (see `ExecReport`), and on its own stack. fork_into_cgroup's
    // error means no child was made: the parent alone logs it.
    let started = unsafe {
        match birth_dir.map(|d| crate::sys::clone::fork_into_cgroup(d.as_fd())) {
            Some(Ok(Forked::Child)) => child(&plan, true),
            Some(Ok(Forked::Parent { pid, pidfd })) => Ok((pid, pidfd)),
            other => {
                if let Some(Err(e)) = other {
                    crate::debug!("clone3 into the cgroup: {e}; the job moves in after it starts");
                }
                ChildStack::new().and_then(|s| {
                    let arg = &*plan as *const Plan as *mut libc::c_void;
                    let started = spawn_sharing_memory(child_entry, arg, &s);
                    stack = Some(s);
                    started
                })
            }
        }
    };
    drop(go_r);
    drop(report_w);
    let (child, pidfd) = started.map_err(|e| format!("clone: {e}"))?;
    let Some(pidfd) = pidfd.map(|fd| PidFd::from_clone(fd, child)) else {
        abandon(nix::unistd::Pid::from_raw(child), None, go_w);
        return Err("clone gave no pidfd (Linux 5.3 or later is required)".into());
    };
    let child = nix::unistd::Pid::from_raw(child);
    let _ = nix::unistd::setpgid(child, child);
    // Both sides set it, so neither order of the race matters.
    if let Some(tty) = terminal.and_then(crate::sys::fd::standard) {
        let _ = nix::unistd::tcsetpgrp(tty, child);
    }
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
                crate::warn!(
                    "ptrace is not permitted here ({e}); tracking descendants through the subreaper only"
                );
                Mode::Subreaper
            }
        },
    };
    if let Err(e) = before_go(mode, child.as_raw()) {
        abandon(child, Some(&pidfd), go_w);
        return Err(e);
    }
    let go = if mode == Mode::Ptrace { GO_PTRACE } else { GO_SUBREAPER };
    if let Err(e) = nix::unistd::write(&go_w, &[go]) {
        abandon(child, Some(&pidfd), go_w);
        return Err(format!("cannot start the child: {e}"));
    }
    drop(go_w);
    let report = ExecReport { pipe: std::fs::File::from(report_r), held: Some(Box::new((plan, stack))) };
    Ok(Spawned { pidfd, mode, report })
}

/// Gives up on a child that has not been told to go: it must neither run the job nor outlive
/// proc_box. Closing the go pipe is enough (the child reads EOF and exits 125); with a pidfd,
/// the child is also killed, in case it is stopped. Then it is reaped.
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

/// Everything the child reads between clone and exec, prepared before the clone: plain data
/// and raw descriptor numbers (valid in the child's copy of the descriptor table). The child
/// may share this address space, so nothing here is touched by the parent until the child has
/// exec'd or exited: [`ExecReport`] keeps it until then.
struct Plan {
    /// The resolved program, or the errno of the search.
    program: Result<CString, i32>,
    /// Null-terminated pointer arrays into the strings below.
    argv: Vec<*const libc::c_char>,
    /// `/bin/sh PROGRAM ARGS…`, for a program the kernel cannot execute by itself (ENOEXEC).
    sh_argv: Vec<*const libc::c_char>,
    /// The environment for ptrace mode, then for subreaper mode.
    envps: [Vec<*const libc::c_char>; 2],
    /// The strings the arrays point into.
    _strings: (Vec<CString>, Vec<CString>, Vec<CString>, [CString; 2]),
    go: RawFd,
    go_w: RawFd,
    report: RawFd,
    terminal: Option<RawFd>,
    stdio: [Option<RawFd>; 2],
    /// RLIMIT_NOFILE restored first, then the `--rlimit`s.
    rlimits: Vec<(i32, libc::rlimit)>,
    /// Dispositions to set: bit N-1 for signal N (see `inherited::for_job`).
    sig_ignore: u64,
    sig_default: u64,
    /// The cgroup's `cgroup.procs` (unless born in it) and v1 `tasks` files, and whether
    /// ptrace mode joins them too.
    cgroup_procs: Option<RawFd>,
    cgroup_tasks: Vec<RawFd>,
    cgroup_in_ptrace: bool,
    mask: libc::sigset_t,
}

/// Tells the parent which step failed, and exits: 125 for a setup step (proc_box failed, the
/// job never ran), 126 or 127 for the exec. For the child before exec: raw system calls only.
fn fail(report: RawFd, what: Failure, errno: i32) -> ! {
    let (kind, detail) = what.to_raw();
    let mut record = [0u8; 12];
    record[..4].copy_from_slice(&kind.to_ne_bytes());
    record[4..8].copy_from_slice(&detail.to_ne_bytes());
    record[8..].copy_from_slice(&errno.to_ne_bytes());
    let code = match what {
        Failure::Exec if errno == libc::ENOENT => 127,
        Failure::Exec => 126,
        _ => 125,
    };
    // SAFETY: write(2) of 12 bytes from the stack (one atomic pipe write), then exit_group(2).
    unsafe {
        let _ = syscall!(Sysno::write, report, record.as_ptr(), record.len());
        exit_group(code)
    }
}

/// exit_group(2), raw: neither atexit handlers nor destructors run. For the child before exec.
fn exit_group(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        let _ = unsafe { syscall!(Sysno::exit_group, code) };
    }
}

/// The child's entry point when it shares this address space (`clone` with `CLONE_VM`).
extern "C" fn child_entry(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a pointer to a Plan that outlives the child's use of it.
    unsafe { child(&*(plan as *const Plan), false) }
}

/// The child, from clone to exec. It may share proc_box's memory, and its thread-local storage
/// (`errno` included), with a parent that goes on running: so it makes raw system calls only,
/// reads only the [`Plan`], writes only its own stack, and allocates nothing.
///
/// # Safety
/// Only in the new child, with a Plan whose pointer arrays are null-terminated and point to
/// valid C strings.
unsafe fn child(plan: &Plan, born_in_v2: bool) -> ! {
    // SAFETY (whole block): system calls on descriptors and memory that stay valid until exec.
    unsafe {
        // Our copy of the write end would keep the read below from ever seeing EOF when the
        // parent gives up.
        let _ = syscall!(Sysno::close, plan.go_w);
        // Set up while the parent seizes us; a failure is told only after the go, so that
        // the parent never mistakes the exit for a refused seize.
        let prepared = prepare(plan);
        // What is left depends on the tracking mode, which the go byte brings once the parent
        // has seized us.
        let mut byte = 0u8;
        loop {
            match syscall!(Sysno::read, plan.go, &mut byte as *mut u8, 1) {
                Ok(1) => break,
                Err(Errno::EINTR) => continue,
                _ => exit_group(125), // the parent gave up on us
            }
        }
        if let Err((what, errno)) = prepared {
            fail(plan.report, what, errno);
        }
        // Into the box's cgroup, once the tracking mode is known: subreaper mode needs it to be
        // exact; ptrace mode, exact without it, joins only when asked to (each fork of a job in
        // a child cgroup costs it a little more). Writing `0` moves the writer.
        if byte != GO_PTRACE || plan.cgroup_in_ptrace {
            let procs = plan.cgroup_procs.filter(|_| !born_in_v2);
            for fd in procs.iter().chain(&plan.cgroup_tasks) {
                if let Err(e) = syscall!(Sysno::write, *fd, b"0".as_ptr(), 1) {
                    fail(plan.report, Failure::Cgroup, e.into_raw());
                }
            }
        }
        let envp = &plan.envps[usize::from(byte != GO_PTRACE)];
        let program = match &plan.program {
            Ok(p) => p,
            Err(e) => fail(plan.report, Failure::Exec, *e),
        };
        // The kernel's sigset is the first 64 bits of glibc's.
        if let Err(e) = syscall!(Sysno::rt_sigprocmask, libc::SIG_SETMASK, &plan.mask as *const _, 0, 8) {
            fail(plan.report, Failure::Sigmask, e.into_raw());
        }
        let err = match syscall!(Sysno::execve, program.as_ptr(), plan.argv.as_ptr(), envp.as_ptr()) {
            Err(Errno::ENOEXEC) => {
                let _ = syscall!(Sysno::execve, plan.sh_argv[0], plan.sh_argv.as_ptr(), envp.as_ptr());
                libc::ENOEXEC
            }
            Err(e) => e.into_raw(),
            Ok(_) => 0, // execve does not return on success
        };
        fail(plan.report, Failure::Exec, err)
    }
}

/// The child's steps that do not depend on the tracking mode: process group, terminal, stdio,
/// resource limits, signal dispositions. The first failure, with its errno. For the child
/// before exec (raw system calls only, as [`child`] says).
fn prepare(plan: &Plan) -> Result<(), (Failure, i32)> {
    let step = |r: Result<usize, Errno>, what: Failure| r.map(drop).map_err(|e| (what, e.into_raw()));
    // SAFETY (whole block): system calls on integers, descriptors and the child's own stack.
    unsafe {
        step(syscall!(Sysno::setpgid, 0, 0), Failure::Setpgid)?;
        if let Some(fd) = plan.terminal {
            // SIGTTOU is blocked, so this works from the background. A terminal that is gone
            // (hung up, or no longer ours) is not worth failing the job for, as in tini.
            let me = syscall!(Sysno::getpid).unwrap_or(0) as libc::pid_t;
            match syscall!(Sysno::ioctl, fd, libc::TIOCSPGRP, &me as *const libc::pid_t) {
                Ok(_) | Err(Errno::ENOTTY | Errno::ENXIO) => {}
                Err(e) => return Err((Failure::Tcsetpgrp, e.into_raw())),
            }
        }
        for (target, fd) in [1, 2].into_iter().zip(plan.stdio) {
            let Some(fd) = fd else { continue };
            // The copy is not close-on-exec; the original is (if it is the target already,
            // only its flag is cleared).
            let r = if fd == target {
                syscall!(Sysno::fcntl, fd, libc::F_SETFD, 0)
            } else {
                syscall!(Sysno::dup3, fd, target, 0)
            };
            step(r, Failure::Dup2(target))?;
        }
        for (resource, limit) in &plan.rlimits {
            // prlimit64's struct is two u64s on every architecture (rlim_t is narrower on some).
            #[allow(clippy::unnecessary_cast)]
            let limit = [limit.rlim_cur as u64, limit.rlim_max as u64];
            let r = syscall!(Sysno::prlimit64, 0, *resource, limit.as_ptr(), 0);
            step(r, Failure::Rlimit(*resource))?;
        }
        // The dispositions proc_box was started with (Rust's runtime ignores SIGPIPE). Only
        // SIG_DFL and SIG_IGN: the kernel's sigaction is the handler, then flags, restorer (on
        // architectures that have one) and mask, all zero here.
        for sig in 1..=64 {
            let bit = 1u64 << (sig - 1);
            let handler = if plan.sig_ignore & bit != 0 {
                libc::SIG_IGN
            } else if plan.sig_default & bit != 0 {
                libc::SIG_DFL
            } else {
                continue;
            };
            let action: [usize; 4] = [handler, 0, 0, 0];
            // Fails harmlessly for SIGKILL and SIGSTOP.
            let _ = syscall!(Sysno::rt_sigaction, sig, action.as_ptr(), 0, 8);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn the_program_is_found_as_execvp_would() {
        let dir = std::env::temp_dir().join(format!("proc_box-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, "").unwrap();
        let path = format!("/nonexistent:{}:/bin:/usr/bin", dir.display());
        let found = |name: &str| resolve(OsStr::new(name), Some(OsStr::new(&path)));
        // The first executable match, past a directory that does not exist.
        assert!(matches!(found("sh").as_deref().map(|c| c.to_bytes()), Ok(b"/bin/sh" | b"/usr/bin/sh")));
        // A match that cannot be executed is still returned, for execve to say why (126).
        assert_eq!(found("plain").unwrap().as_bytes(), plain.as_os_str().as_bytes());
        assert_eq!(found("no-such-program-anywhere"), Err(libc::ENOENT));
        assert_eq!(found(""), Err(libc::ENOENT));
        assert_eq!(found("./x/y").unwrap().as_bytes(), b"./x/y");
        assert!(resolve(OsStr::new("sh"), None).is_ok(), "no PATH: /bin:/usr/bin");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_failure_comes_back_as_it_went() {
        for f in [
            Failure::Exec,
            Failure::Setpgid,
            Failure::Tcsetpgrp,
            Failure::Dup2(2),
            Failure::Rlimit(libc::RLIMIT_AS as i32),
            Failure::Cgroup,
            Failure::Sigmask,
        ] {
            let (kind, detail) = f.to_raw();
            assert_eq!(Failure::from_raw(kind, detail), Some(f));
        }
        assert_eq!(Failure::Rlimit(libc::RLIMIT_NOFILE as i32).to_string(), "cannot set RLIMIT_NOFILE");
    }
}
