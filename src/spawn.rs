//! Starting the main process: fork, pre-exec setup, ptrace seize, exec.
//!
//! The child sets itself up, then waits on a pipe until the parent has seized it, so it is
//! traced before it runs a single instruction of the job; the parent's seize and the child's
//! setup overlap. Then it joins the cgroup and execs. It checks every step, as tini does: a
//! failed step comes back over a close-on-exec pipe with its errno and the child exits 125
//! (proc_box failed, the job never ran); a failed exec comes back the same way, which is how
//! proc_box tells 126 from 127. The program is looked up on `PATH` in the parent (the
//! search allocates), so the child only calls `execve`.

use crate::config::Track;
use crate::signals::Sig;
use crate::sys::pidfd::PidFd;
use crate::tracker::{ptrace, Mode};
use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::unistd::{fork, pipe2, ForkResult};
use std::ffi::{CString, OsString};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

pub struct Spawned {
    pub pidfd: PidFd,
    pub mode: Mode,
    pub report: ExecReport,
    /// Taken just before the fork: the job's wall time runs from here. The job may run before
    /// `spawn` returns (see the yield), so a clock read after it would miss that time.
    pub started: std::time::Instant,
}

/// Read end of the report pipe: EOF once the exec succeeded, or one [`Failure`] record.
///
/// It also holds what the child was given to exec (argv, environment, pointer arrays) until
/// the box ends. Freed right after the fork, while the child may not have exec'd yet, they cost
/// a copy-on-write fault for every heap page the allocator wrote to: ten per start, measured.
pub struct ExecReport {
    pipe: std::fs::File,
    _exec_data: Box<dyn std::any::Any>,
}

impl ExecReport {
    /// The exec's errno, if it failed. Call once the main process has exited, so the
    /// close-on-exec write end is surely closed and the read cannot block. A setup step that
    /// failed before the exec is logged here instead: the child exited 125 for it, and that is
    /// already the box's status.
    pub fn exec_error(&mut self) -> Option<std::io::Error> {
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
    let ptrs = pointers(&cargs);
    let program = resolve(&argv[0], std::env::var_os("PATH").as_deref());
    // A file that is neither a binary nor a `#!` script is run by the shell, as execvp does.
    let sh_args: Vec<CString> = match &program {
        Ok(path) => {
            [c"/bin/sh".to_owned(), path.clone()].into_iter().chain(cargs[1..].iter().cloned()).collect()
        }
        Err(_) => Vec::new(),
    };
    let sh_ptrs = pointers(&sh_args);
    let exec = Exec { program: program.as_deref().map_err(|&e| e), argv: &ptrs, sh_argv: &sh_ptrs };
    let (env, track_vars) = job_env(box_id, setup.consumed_env);
    let envps = track_vars.each_ref().map(|v| pointers(env.iter().chain([v])));
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let mask = *setup.mask.as_ref();

    // A job certain to join the cgroup is born in its v2 directory (see `cgroup::Join`).
    let birth_dir = setup
        .cgroup
        .as_ref()
        .and_then(|j| j.dir.as_ref())
        .filter(|_| track == Track::Subreaper || setup.cgroup_in_ptrace);
    let started = std::time::Instant::now();
    // SAFETY: the child only makes async-signal-safe calls on memory prepared before the fork,
    // so threads that may run already (the log writer) cannot leave it a held lock to trip on.
    // fork_into_cgroup's error means no child was made: the parent alone logs it.
    let (forked, born_in_v2) = unsafe {
        match birth_dir.map(|d| crate::sys::clone::fork_into_cgroup(d.as_fd())) {
            Some(Ok(f)) => (f, true),
            other => {
                if let Some(Err(e)) = other {
                    crate::debug!("clone3 into the cgroup: {e}; the job moves in after fork");
                }
                (fork().map_err(|e| format!("fork: {e}"))?, false)
            }
        }
    };
    match forked {
        ForkResult::Child => {
            let fds = [go_r.as_raw_fd(), go_w.as_raw_fd()];
            // SAFETY: see above; this never returns.
            unsafe { child(&exec, &envps, fds, report_w.as_raw_fd(), setup, born_in_v2, &mask) }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(report_w);
            let _ = nix::unistd::setpgid(child, child);
            // Both sides set it, so neither order of the race matters.
            if let Some(tty) = terminal.and_then(crate::sys::fd::standard) {
                let _ = nix::unistd::tcsetpgrp(tty, child);
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
            if let Err(e) = before_go(mode, child.as_raw()) {
                abandon(child, Some(&pidfd), go_w);
                return Err(e);
            }
            let go = if mode == Mode::Ptrace { GO_PTRACE } else { GO_SUBREAPER };
            if let Err(e) = nix::unistd::write(&go_w, &[go]) {
                abandon(child, Some(&pidfd), go_w);
                return Err(match e {
                    nix::errno::Errno::EPIPE => "the job's process was killed before it could exec".into(),
                    e => format!("cannot start the child: {e}"),
                });
            }
            drop(go_w);
            // The new child waits on our CPU until we block, and the kernel does not move it to
            // an idle one before its exec (exec balancing does). Yielding lets it reach that
            // exec, so the rest of our set-up overlaps with the job's start on the other CPU:
            // about 0.16 ms of a short job on two CPUs (doc/benchmarks.md). Only a hint. On
            // one CPU the job may run on until its time slice ends: its clock is `started`.
            rustix::thread::sched_yield();
            let held = Box::new((program, cargs, env, track_vars, sh_args, ptrs, sh_ptrs, envps));
            let report = ExecReport { pipe: std::fs::File::from(report_r), _exec_data: held };
            Ok(Spawned { pidfd, mode, report, started })
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

/// What the child executes, prepared before the fork.
struct Exec<'a> {
    /// The resolved program, or the errno of the search.
    program: Result<&'a std::ffi::CStr, i32>,
    argv: &'a [*const libc::c_char],
    /// `/bin/sh PROGRAM ARGS…`, for a program the kernel cannot execute by itself (ENOEXEC).
    sh_argv: &'a [*const libc::c_char],
}

/// Tells the parent which step failed, and exits: 125 for a setup step (proc_box failed, the
/// job never ran), 126 or 127 for the exec. For the child between fork and exec (`_exit`, no
/// destructor or atexit handler runs); it writes only from its own stack, so it is safe.
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
    // SAFETY: write(2) of 12 bytes from the stack (one atomic pipe write), then _exit(2).
    unsafe {
        libc::write(report, record.as_ptr().cast(), record.len());
        libc::_exit(code)
    }
}

/// The forked child. Only async-signal-safe libc calls from here on, each one checked.
///
/// # Safety
/// Must be called in the child right after fork, with every pointer array null-terminated and
/// pointing to valid C strings.
unsafe fn child(
    exec: &Exec,
    envps: &[Vec<*const libc::c_char>; 2],
    [go, go_w]: [RawFd; 2],
    report: RawFd,
    setup: &ChildSetup,
    born_in_v2: bool,
    mask: &libc::sigset_t,
) -> ! {
    let ChildSetup { ref cgroup, cgroup_in_ptrace, .. } = *setup;
    // SAFETY (whole block): plain syscalls on fds and memory that stay valid until exec.
    unsafe {
        let errno = || *libc::__errno_location();
        // Our copy of the write end would keep the read below from ever seeing EOF when the
        // parent gives up.
        libc::close(go_w);
        // Set up while the parent seizes us; a failure is told only after the go, so that
        // the parent never mistakes the exit for a refused seize.
        let prepared = prepare(setup);
        // What is left depends on the tracking mode, which the go byte brings once the parent
        // has seized us. Everything above overlapped with the parent's seize.
        let mut byte = 0u8;
        loop {
            let n = libc::read(go, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            libc::_exit(125); // the parent gave up on us
        }
        if let Err((what, errno)) = prepared {
            fail(report, what, errno);
        }
        // Into the box's cgroup, once the tracking mode is known: subreaper mode needs it to be
        // exact; ptrace mode, exact without it, joins only when asked to (each fork of a job in
        // a child cgroup costs it a little more).
        let joins = byte != GO_PTRACE || cgroup_in_ptrace;
        if joins && cgroup.as_ref().is_some_and(|j| !j.join_in_child(born_in_v2)) {
            fail(report, Failure::Cgroup, errno());
        }
        let envp = if byte == GO_PTRACE { &envps[0] } else { &envps[1] };
        let program = match exec.program {
            Ok(p) => p,
            Err(e) => fail(report, Failure::Exec, e),
        };
        // pthread_sigmask returns its error rather than setting errno.
        let rc = libc::pthread_sigmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        if rc != 0 {
            fail(report, Failure::Sigmask, rc);
        }
        libc::execve(program.as_ptr(), exec.argv.as_ptr(), envp.as_ptr());
        let err = errno();
        if err == libc::ENOEXEC {
            libc::execve(exec.sh_argv[0], exec.sh_argv.as_ptr(), envp.as_ptr());
        }
        fail(report, Failure::Exec, err)
    }
}

/// The child's steps that do not depend on the tracking mode: process group, terminal, stdio,
/// resource limits, signal dispositions. The first failure, with its errno. For the child
/// between fork and exec: async-signal-safe calls only, on memory prepared before the fork.
fn prepare(setup: &ChildSetup) -> Result<(), (Failure, i32)> {
    let ChildSetup { terminal, stdio, nofile, ignored, ref rlimits, .. } = *setup;
    // SAFETY (whole block): plain syscalls on fds and memory that stay valid until exec.
    unsafe {
        let errno = || *libc::__errno_location();
        if libc::setpgid(0, 0) != 0 {
            return Err((Failure::Setpgid, errno()));
        }
        if let Some(fd) = terminal {
            // SIGTTOU is blocked, so this works from the background. A terminal that is gone
            // (hung up, or no longer ours) is not worth failing the job for, as in tini.
            if libc::tcsetpgrp(fd, libc::getpid()) != 0 && !matches!(errno(), libc::ENOTTY | libc::ENXIO) {
                return Err((Failure::Tcsetpgrp, errno()));
            }
        }
        for (target, fd) in [1, 2].into_iter().zip(stdio) {
            // The copy is not close-on-exec; the original is.
            if fd.is_some_and(|fd| libc::dup2(fd, target) < 0) {
                return Err((Failure::Dup2(target), errno()));
            }
        }
        if let Some(limit) = nofile {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err((Failure::Rlimit(libc::RLIMIT_NOFILE as i32), errno()));
            }
        }
        for (resource, limit) in rlimits {
            if libc::setrlimit(*resource as _, limit) != 0 {
                return Err((Failure::Rlimit(*resource), errno()));
            }
        }
        // The dispositions proc_box was started with (`main` ignores SIGPIPE). Only
        // SIG_DFL and SIG_IGN on valid numbers: nothing here can fail.
        crate::inherited::restore_in_child(ignored);
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
