//! What the tree is: every live process of the job, each held by a pidfd.
//!
//! Sources of truth, in order of precision:
//! * ptrace fork/vfork/clone events (ptrace mode): a new process is known before it runs;
//! * the kernel's children lists (subreaper mode, and the CLONE_UNTRACED backstop);
//! * `waitpid`: the main process's status, and whether proc_box has any child or tracee left.
//!   As subreaper, proc_box inherits every orphan, so "no child and no tracee" means the tree
//!   is empty, whatever was or was not discovered.
//!
//! A member leaves the tree when its pidfd turns readable (it exited). Only this module waits
//! on children, and only `pidfd.rs` sends signals.

pub mod children;
pub mod pidfd;
pub mod ptrace;

use crate::signals::Sig;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use pidfd::PidFd;
use procfs::process::Process;
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ptrace,
    Subreaper,
}

/// How the main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    Signaled(i32),
}

/// What the tracker tells the loop.
#[derive(Debug)]
pub enum Event {
    MainExited(ExitStatus),
    /// The main process stopped for terminal job control (Ctrl-Z, or a background tty access).
    MainStopped(Signal),
    /// A process was reaped by the kernel for a parent that ignores SIGCHLD (ptrace mode).
    AutoReaped(Reaped),
}

/// The final figures of a process whose times no rusage will ever include.
#[derive(Debug)]
pub struct Reaped {
    pub pid: i32,
    /// Its own CPU plus that of the children it reaped (`RUSAGE_BOTH`), exact to the µs.
    pub user: Duration,
    pub system: Duration,
    pub maxrss_bytes: u64,
    pub io: Option<procfs::process::Io>,
}

impl Reaped {
    fn new(pid: i32, ru: &libc::rusage, io: Option<procfs::process::Io>) -> Reaped {
        let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1000);
        Reaped {
            pid,
            user: tv(ru.ru_utime),
            system: tv(ru.ru_stime),
            maxrss_bytes: ru.ru_maxrss.max(0) as u64 * 1024,
            io,
        }
    }
}

/// `wait4` for one pid, which nix does not wrap: its rusage is the only exact record of a
/// process that is reaped by the kernel rather than by a parent.
fn wait4(pid: nix::unistd::Pid, flags: WaitPidFlag) -> nix::Result<(WaitStatus, libc::rusage)> {
    let mut status = 0;
    // SAFETY: rusage is plain data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a local int and a local rusage.
    let rc = unsafe { libc::wait4(pid.as_raw(), &mut status, flags.bits(), &mut ru) };
    let pid = nix::unistd::Pid::from_raw(Errno::result(rc)?);
    Ok((WaitStatus::from_raw(pid, status)?, ru))
}

/// Tokens at and above this value belong to pidfds.
pub const PIDFD_TOKENS: usize = 1 << 20;

struct Member {
    pidfd: PidFd,
    /// `/proc/PID`, opened while the pidfd proved the pid ours: it can never show a recycled pid.
    proc: Option<Process>,
    token: Token,
}

pub struct Tracker {
    mode: Mode,
    self_pid: i32,
    main_pid: i32,
    main_reaped: bool,
    has_children: bool,
    members: HashMap<i32, Member>,
    tokens: HashMap<Token, i32>,
    next_token: usize,
    started: u64,
    peak: usize,
    /// The largest `ru_maxrss` of any process proc_box reaped (its own children, and every
    /// tracee): each is that process's high-water mark, or its reaped descendants'.
    max_reaped_rss: u64,
    /// Sent to every process the moment it is found (SIGKILL while killing, SIGSTOP while
    /// suspended), so a newcomer cannot outrun a tree-wide action.
    birth_signal: Option<Sig>,
}

impl Tracker {
    pub fn new(mode: Mode, main: PidFd, registry: &Registry) -> Tracker {
        let main_pid = main.pid();
        let mut t = Tracker {
            mode,
            self_pid: std::process::id() as i32,
            main_pid,
            main_reaped: false,
            has_children: true,
            members: HashMap::new(),
            tokens: HashMap::new(),
            next_token: PIDFD_TOKENS,
            started: 0,
            peak: 0,
            max_reaped_rss: 0,
            birth_signal: None,
        };
        t.insert(main, registry);
        t
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn main_pid(&self) -> i32 {
        self.main_pid
    }

    pub fn set_birth_signal(&mut self, sig: Option<Sig>) {
        self.birth_signal = sig;
    }

    /// Live members, sorted.
    pub fn pids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.members.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn processes_started(&self) -> u64 {
        self.started
    }

    pub fn processes_peak(&self) -> usize {
        self.peak
    }

    pub fn max_reaped_rss(&self) -> u64 {
        self.max_reaped_rss
    }

    /// The main process is reaped and the kernel says proc_box has no child or tracee left.
    pub fn finished(&self) -> bool {
        self.main_reaped && !self.has_children
    }

    fn insert(&mut self, pidfd: PidFd, registry: &Registry) {
        let pid = pidfd.pid();
        if let Some(old) = self.members.get(&pid) {
            if !old.pidfd.exited() {
                return; // already known
            }
            self.remove(pid, registry); // the pid was recycled
        }
        if let Some(sig) = self.birth_signal {
            let _ = pidfd.signal(sig);
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Err(e) = registry.register(&mut SourceFd(&pidfd.as_raw_fd()), token, Interest::READABLE) {
            crate::warn!("cannot watch pid {pid}: {e}");
        }
        let proc = Process::new(pid).ok().filter(|_| !pidfd.exited());
        self.tokens.insert(token, pid);
        self.members.insert(pid, Member { pidfd, proc, token });
        self.started += 1;
        self.peak = self.peak.max(self.members.len());
        crate::debug!("tracking pid {pid} ({} live)", self.members.len());
    }

    fn remove(&mut self, pid: i32, registry: &Registry) {
        if let Some(m) = self.members.remove(&pid) {
            let _ = registry.deregister(&mut SourceFd(&m.pidfd.as_raw_fd()));
            self.tokens.remove(&m.token);
            crate::debug!("pid {pid} left the tree ({} live)", self.members.len());
        }
    }

    /// A pidfd turned readable: its process exited. Returns the pid that left the tree.
    pub fn pidfd_ready(&mut self, token: Token, registry: &Registry) -> Option<i32> {
        let pid = *self.tokens.get(&token)?;
        if self.members.get(&pid).is_some_and(|m| m.pidfd.exited()) {
            self.remove(pid, registry);
            return Some(pid);
        }
        None
    }

    /// Every live member with its `/proc` entry, for accounting.
    pub fn processes(&self) -> impl Iterator<Item = (i32, &Process)> {
        self.members.iter().filter_map(|(&pid, m)| m.proc.as_ref().map(|p| (pid, p)))
    }

    /// One live member's `/proc` entry.
    pub fn process(&self, pid: i32) -> Option<&Process> {
        self.members.get(&pid)?.proc.as_ref()
    }

    pub fn self_pid(&self) -> i32 {
        self.self_pid
    }

    /// Adopts a task that is ours by construction (a tracee, or our own unreaped child).
    /// Threads are not processes: pidfd_open refuses them with EINVAL, and they are skipped.
    fn adopt_known(&mut self, pid: i32, registry: &Registry) {
        if self.members.get(&pid).is_some_and(|m| !m.pidfd.exited()) {
            return;
        }
        if let Ok(fd) = PidFd::open(pid) {
            self.insert(fd, registry);
        }
    }

    /// Drains every pending child state change. Call on SIGCHLD.
    ///
    /// Each change is first peeked at (`WNOWAIT`), so an exiting process can be examined while
    /// it is still a zombie, then consumed for that pid alone.
    pub fn reap(&mut self, registry: &Registry) -> Vec<Event> {
        let mut events = Vec::new();
        let mut flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
        if self.mode == Mode::Subreaper {
            flags |= WaitPidFlag::WUNTRACED;
        }
        loop {
            let peeked = match waitid(Id::All, flags | WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(WaitStatus::StillAlive) => {
                    self.has_children = true;
                    break;
                }
                Err(Errno::ECHILD) => {
                    self.has_children = false;
                    break;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    crate::warn!("waitid failed: {e}");
                    break;
                }
                Ok(s) => s,
            };
            let Some(pid) = peeked.pid() else { break };
            let exiting = matches!(peeked, WaitStatus::Exited(..) | WaitStatus::Signaled(..));
            let lost = if exiting { self.probe_auto_reap(pid.as_raw()) } else { None };
            let status = match wait4(pid, flags) {
                Ok((status, rusage)) => {
                    if exiting {
                        self.max_reaped_rss = self.max_reaped_rss.max(rusage.ru_maxrss.max(0) as u64 * 1024);
                    }
                    if let Some(io) = lost {
                        events.push(Event::AutoReaped(Reaped::new(pid.as_raw(), &rusage, io)));
                    }
                    status
                }
                Err(Errno::EINTR) | Err(Errno::ECHILD) => continue,
                Err(e) => {
                    crate::warn!("wait4 failed: {e}");
                    break;
                }
            };
            match status {
                WaitStatus::Exited(pid, code) => {
                    self.exited(pid.as_raw(), ExitStatus::Exited(code), &mut events, registry)
                }
                WaitStatus::Signaled(pid, sig, _) => {
                    self.exited(pid.as_raw(), ExitStatus::Signaled(sig as i32), &mut events, registry)
                }
                WaitStatus::Stopped(pid, sig)
                    if self.mode == Mode::Subreaper && pid.as_raw() == self.main_pid && is_tty_stop(sig) =>
                {
                    // Only the main process's terminal stops matter (Ctrl-Z).
                    events.push(Event::MainStopped(sig));
                }
                WaitStatus::Stopped(_, _) if self.mode == Mode::Subreaper => {}
                WaitStatus::Stopped(pid, _) | WaitStatus::PtraceEvent(pid, _, _) => {
                    // A tracee we have not met yet is a newborn whose first stop outran its
                    // parent's fork event: adopt it before it is let go.
                    self.adopt_known(pid.as_raw(), registry);
                    match ptrace::handle(status) {
                        Some(ptrace::Stop::Born { child, .. }) => self.adopt_known(child, registry),
                        Some(ptrace::Stop::GroupStop { pid, sig })
                            if pid == self.main_pid && is_tty_stop(sig) =>
                        {
                            events.push(Event::MainStopped(sig))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        events
    }

    /// A tracee is about to be reaped by us as its tracer. If its real parent ignores SIGCHLD,
    /// the kernel releases it right after, without adding its times to anyone: its CPU and I/O
    /// would vanish from every rusage. Returns its I/O (read now, from the zombie) in that case;
    /// its CPU comes from the rusage of our wait.
    fn probe_auto_reap(&self, pid: i32) -> Option<Option<procfs::process::Io>> {
        // Its pidfd may already have removed it from the tree; the zombie is still there
        // (we peeked without reaping), so its pid, and its parent's, cannot be recycled yet.
        let proc = Process::new(pid).ok()?;
        let stat = proc.stat().ok()?;
        let ppid = stat.ppid;
        if ppid == self.self_pid {
            return None; // reaped by us: counted in our RUSAGE_CHILDREN
        }
        // The kernel auto-reaps only children that signal their exit with SIGCHLD.
        if stat.exit_signal != Some(libc::SIGCHLD) {
            return None;
        }
        // A thread's exit is not a process's: only the group leader, reported once every
        // thread is gone, carries the process's whole rusage.
        if proc.status().ok()?.tgid != pid {
            return None;
        }
        let ignores = Process::new(ppid).ok()?.status().ok()?.sigign & (1 << (libc::SIGCHLD - 1)) != 0;
        ignores.then(|| proc.io().ok())
    }

    fn exited(&mut self, pid: i32, status: ExitStatus, events: &mut Vec<Event>, registry: &Registry) {
        if pid == self.main_pid && !self.main_reaped {
            self.main_reaped = true;
            events.push(Event::MainExited(status));
        }
        if self.members.get(&pid).is_some_and(|m| m.pidfd.exited()) {
            self.remove(pid, registry);
        }
    }

    /// Walks the children lists of proc_box and of every member; adopts what is new.
    /// Returns how many processes joined.
    pub fn scan(&mut self, registry: &Registry) -> usize {
        let before = self.started;
        let mut parents: Vec<i32> = self.members.keys().copied().collect();
        parents.push(self.self_pid);
        let mut seen: HashSet<i32> = HashSet::new();
        while let Some(parent) = parents.pop() {
            let listed = match self.members.get(&parent).and_then(|m| m.proc.as_ref()) {
                Some(proc) => children::listed_children(proc),
                None => Process::new(parent).map(|p| children::listed_children(&p)).unwrap_or_default(),
            };
            for child in listed {
                if !seen.insert(child) || self.members.contains_key(&child) {
                    continue;
                }
                if let Some(fd) = self.open_listed(child, parent) {
                    if self.mode == Mode::Ptrace {
                        self.seize_untraced(&fd);
                    }
                    self.insert(fd, registry);
                    parents.push(child);
                }
            }
        }
        (self.started - before) as usize
    }

    /// Opens a pidfd for a pid read from `parent`'s children list, proving it is still that
    /// process: its parent (read after the pidfd was opened) is proc_box or a live member, and
    /// the pidfd was still live after that read, so the pid had not been recycled.
    fn open_listed(&self, child: i32, parent: i32) -> Option<PidFd> {
        let fd = PidFd::open(child).ok()?;
        if parent == self.self_pid {
            return Some(fd); // our own child: nothing else reaps it, so the pid is stable
        }
        let ppid = children::parent_of(child)?;
        if fd.exited() {
            return None;
        }
        let ours = ppid == self.self_pid || self.members.get(&ppid).is_some_and(|m| !m.pidfd.exited());
        ours.then_some(fd)
    }

    /// A process that escaped ptrace (CLONE_UNTRACED) is seized, thread by thread, so its own
    /// forks are reported from now on and EXITKILL covers it.
    fn seize_untraced(&self, fd: &PidFd) {
        let mut seized = HashSet::new();
        for _ in 0..4 {
            let fresh: Vec<i32> =
                children::threads(fd.pid()).into_iter().filter(|t| !seized.contains(t)).collect();
            if fresh.is_empty() {
                break;
            }
            for tid in fresh {
                seized.insert(tid);
                match ptrace::seize(tid) {
                    Ok(()) => crate::debug!("seized untraced task {tid}"),
                    Err(Errno::EPERM) => {} // already traced (by us)
                    Err(e) => crate::debug!("cannot seize task {tid}: {e}"),
                }
            }
        }
    }

    /// Sends `sig` to every member, then walks the children lists again and signals whatever
    /// appeared meanwhile, until a pass finds nothing new. Returns how many were signalled.
    pub fn signal_tree(&mut self, sig: Sig, registry: &Registry) -> usize {
        let mut done: HashSet<i32> = HashSet::new();
        let mut delivered = 0;
        for _ in 0..16 {
            let targets: Vec<i32> = self.members.keys().copied().filter(|p| !done.contains(p)).collect();
            for pid in targets {
                done.insert(pid);
                let Some(member) = self.members.get(&pid) else { continue };
                match member.pidfd.signal(sig) {
                    Ok(()) => delivered += 1,
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // exited meanwhile
                    Err(e) => crate::warn!("cannot send {sig} to pid {pid}: {e}"),
                }
            }
            if self.scan(registry) == 0 && self.members.keys().all(|p| done.contains(p)) {
                break;
            }
        }
        crate::debug!("sent {sig} to {delivered} processes");
        delivered
    }
}

fn is_tty_stop(sig: Signal) -> bool {
    matches!(sig, Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)
}
