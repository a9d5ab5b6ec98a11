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
//! on children (through `sys::wait`), and signals leave through `sys::pidfd`.

pub mod connector;
pub mod guard;
pub mod ptrace;

use crate::signals::Sig;
use crate::sys::pidfd::{self, PidFd};
use crate::sys::procfs::{
    io_of_pid, listed_children, open_stat, parent_of, reap_stat, reap_stat_at, threads, IoSum, ReapStat,
};
use crate::sys::wait::{self, Change, Peeked};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use procfs::process::Process;
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd};
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
    MainStopped(i32),
    /// A process was reaped by the kernel for a parent that ignores SIGCHLD (ptrace mode).
    AutoReaped(Reaped),
    /// A tracee left the tree (ptrace mode; others leave through their pidfd).
    Left(i32),
}

/// The final figures of a process whose times no rusage will ever include.
#[derive(Debug)]
pub struct Reaped {
    pub pid: i32,
    /// Its own CPU plus that of the children it reaped (`RUSAGE_BOTH`), exact to the µs.
    pub user: Duration,
    pub system: Duration,
    pub maxrss_bytes: u64,
    pub io: Option<IoSum>,
}

/// What the auto-reap probe learned of an exiting tracee before our wait.
enum Probe {
    /// Accounted by a rusage: ours, or its parent's.
    None,
    /// Released at our wait with nobody accounting it: its I/O, read from the zombie.
    Auto(Option<IoSum>),
    /// A member's child, whose parent may use `SA_NOCLDWAIT`: the zombie (pinned by `fd`),
    /// its parent, the parent's reaped-children counters now, and its I/O if it was read.
    Check { fd: PidFd, ppid: i32, reaped: u64, io: Option<IoSum> },
}

/// Who accounts a process proc_box just reaped as its tracer ([`Tracker::settle`]).
enum Settled {
    /// A rusage includes it: ours, or its parent's.
    Counted,
    /// Released with nobody accounting it: its I/O, if it was read from the zombie.
    Lost(Option<IoSum>),
}

/// A pid read from a children list, once checked ([`Tracker::open_listed`]).
enum Listed {
    /// Gone, recycled, or not ours: not adopted.
    Not,
    /// Ours, pinned and watched by its pidfd.
    Watched(PidFd),
    /// Our own child, tracked by pid because file descriptors ran short: an unreaped child's
    /// pid cannot be recycled.
    ByPid,
}

#[derive(Default)]
struct Member {
    /// A process we do not trace is pinned only by a pidfd, watched for its exit. A tracee's
    /// pid cannot be reused before proc_box waits for it, so it needs neither: it leaves the
    /// tree at that wait. This keeps a fork in ptrace mode at the kernel's own cost.
    watch: Option<(PidFd, Token)>,
    /// `/proc/PID`, opened only while the pid is provably ours (under the pidfd at once; for a
    /// tracee, lazily, when accounting first asks): it can never show a recycled pid.
    proc: OnceCell<Option<Process>>,
    /// Its `stat`, kept open once it is met as the parent of an exiting tracee.
    stat: OnceCell<std::os::fd::OwnedFd>,
    /// Seen reaping its own children (a shell), and none auto-reaped since: its exiting
    /// children's I/O is not read ahead ([`Tracker::probe_auto_reap`]).
    reaps: std::cell::Cell<bool>,
}

impl Member {
    fn live(&self) -> bool {
        self.watch.as_ref().is_none_or(|(fd, _)| !fd.exited())
    }

    fn proc(&self, pid: i32) -> Option<&Process> {
        // Opened once, and only while descriptors are not short; else tried again next time.
        if self.proc.get().is_none() && room_for_fd() {
            if let Ok(p) = Process::new(pid) {
                let _ = self.proc.set(Some(p));
            }
        }
        self.proc.get()?.as_ref()
    }

    /// Its `stat` as a parent sees it at a child's exit: through a kept fd (one `pread`), kept
    /// only while descriptors are not short; else read afresh.
    fn parent_stat(&self, pid: i32) -> Option<ReapStat> {
        if self.stat.get().is_none() && room_for_fd() {
            if let Some(fd) = open_stat(pid) {
                let _ = self.stat.set(fd);
            }
        }
        match self.stat.get() {
            Some(fd) => reap_stat_at(fd.as_fd()),
            None => reap_stat(pid),
        }
    }

    fn signal(&self, pid: i32, sig: Sig) -> std::io::Result<()> {
        match &self.watch {
            Some((fd, _)) => fd.signal(sig),
            // A tracee, or our own unreaped child: its pid is pinned until we wait, so a pidfd
            // opened now is the right one; with no descriptor to spare, so is the pid itself.
            None => match PidFd::open(pid) {
                Ok(fd) => fd.signal(sig),
                Err(e) if out_of_fds(&e) => pidfd::kill_pinned(pid, sig),
                Err(e) => Err(e),
            },
        }
    }
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
    pids_limit: Option<usize>,
    over_limit: bool,
    /// The box's cgroup: in subreaper mode, its member list is the exact tree.
    cgroup: Option<std::sync::Arc<crate::cgroup::Cgroup>>,
    connector: Option<connector::Connector>,
    /// Members whose pidfds the guard holds: in ptrace mode those that could not be seized; in
    /// subreaper mode without a cgroup, every member.
    guarded: HashSet<i32>,
    guard: Option<guard::Guard>,
    /// Guards started and not yet reaped (a closed one is on its way out): never members.
    guard_pids: HashSet<i32>,
    /// What reaped guards used, folded into proc_box's own rusage and I/O: not the job's.
    guard_usage: GuardUsage,
}

/// The CPU and I/O of the guards proc_box reaped.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuardUsage {
    pub user: Duration,
    pub system: Duration,
    pub io: IoSum,
}

/// Descriptors never spent on pidfds: the control socket's clients, the sinks, /proc reads.
const FD_RESERVE: u64 = 64;

fn out_of_fds(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// The soft RLIMIT_NOFILE once proc_box raised it: descriptors for members stop
/// [`FD_RESERVE`] below it.
static FD_LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

fn fd_limit() -> u64 {
    FD_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether a descriptor can be spent on a member without eating into [`FD_RESERVE`]: the
/// lowest free descriptor number is about how many are in use.
fn room_for_fd() -> bool {
    // A duplicate of stdin only probes the lowest free number; it is closed when dropped.
    let Ok(probe) = rustix::io::fcntl_dupfd_cloexec(std::io::stdin().as_fd(), 0) else { return false };
    (probe.as_raw_fd() as u64).saturating_add(FD_RESERVE) < fd_limit()
}

fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX)
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
            next_token: crate::tokens::FIRST_PIDFD,
            started: 0,
            peak: 0,
            max_reaped_rss: 0,
            birth_signal: None,
            pids_limit: None,
            over_limit: false,
            cgroup: None,
            connector: None,
            guarded: HashSet::new(),
            guard: None,
            guard_pids: HashSet::new(),
            guard_usage: GuardUsage::default(),
        };
        FD_LIMIT.store(nofile_limit(), std::sync::atomic::Ordering::Relaxed);
        t.insert(main_pid, Some(main), registry);
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

    /// `--pids-limit`: a process found beyond it is killed at once. In ptrace mode it is met
    /// stopped at birth and dies before it runs; found by a scan, it may have run a little.
    pub fn set_pids_limit(&mut self, limit: Option<usize>) {
        self.pids_limit = limit;
    }

    pub fn set_cgroup(&mut self, cg: Option<std::sync::Arc<crate::cgroup::Cgroup>>) {
        self.cgroup = cg;
    }

    /// Whether `pid` is our tracee: an auto-attached newborn not yet met at its fork event.
    fn traced_by_us(&self, pid: i32) -> bool {
        Process::new(pid).and_then(|p| p.status()).is_ok_and(|s| s.tracerpid == self.self_pid)
    }

    /// Whether a process was refused since the last call.
    pub fn take_over_limit(&mut self) -> bool {
        std::mem::take(&mut self.over_limit)
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

    /// Processes the tree ever had: in subreaper mode with the process events connector, from
    /// the fork events (exact); otherwise what ptrace events or the walks saw.
    pub fn processes_started(&self) -> u64 {
        match &self.connector {
            Some(c) => self.started.max(1 + c.forked),
            None => self.started,
        }
    }

    /// Whether `processes_started` is exact: ptrace events, or every fork event read.
    pub fn processes_started_exact(&self) -> bool {
        self.mode == Mode::Ptrace || self.connector.as_ref().is_some_and(|c| !c.lost)
    }

    /// Keeps the fork events' exits for [`Tracker::read_exit_records`].
    pub fn keep_exits(&mut self) {
        if let Some(c) = self.connector.as_mut() {
            c.keep_exits();
        }
    }

    /// Runs `read`, a read of the kernel's exit records, between a mark and a read of the
    /// process events, so that [`Tracker::descends`] knows the process of every record it read
    /// (see [`connector::Connector::mark_exits`]).
    pub fn read_exit_records<T>(&mut self, read: impl FnOnce() -> T) -> T {
        if let Some(c) = self.connector.as_mut() {
            c.mark_exits();
        }
        let records = read();
        self.process_events();
        records
    }

    /// Whether `tgid` is a process of the tree, or was one until its exit event was read
    /// (subreaper mode with the events connector; otherwise only live members are known).
    pub fn descends(&self, tgid: i32) -> bool {
        self.members.contains_key(&tgid) || self.connector.as_ref().is_some_and(|c| c.descends(tgid))
    }

    /// Subreaper mode: follow the kernel's fork events from the main process down. The socket
    /// is not polled: the events wait in its buffer (8 MiB) and are read at each SIGCHLD, each
    /// walk and the end, so a fork-heavy job (or machine) does not wake proc_box twice per fork.
    pub fn set_connector(&mut self, mut c: connector::Connector) {
        c.seed(self.main_pid);
        if self.pids_limit.is_some() {
            c.keep_newborns();
        }
        c.drain();
        self.connector = Some(c);
    }

    /// The events connector's socket where a process limit must be enforced at each fork
    /// (subreaper mode with `--pids-limit`): the loop then wakes on it.
    pub fn fork_events_fd(&self) -> Option<std::os::fd::RawFd> {
        self.connector.as_ref().filter(|_| self.pids_limit.is_some()).map(connector::Connector::fd)
    }

    /// Reads the queued process events. With `--pids-limit`, every process forked past the
    /// limit gets SIGKILL at once, newest first: the cap holds at the fork, not at a tick.
    pub fn process_events(&mut self) {
        let (limit, self_pid) = (self.pids_limit, self.self_pid);
        let Some(c) = self.connector.as_mut() else { return };
        c.drain();
        let Some(limit) = limit else { return };
        let newborns = c.take_newborns();
        let excess = c.live().saturating_sub(limit);
        if excess == 0 {
            return;
        }
        for &pid in newborns.iter().rev().take(excess) {
            // A pid from an event may be reused once its process is reaped: the pidfd is taken
            // first, then the process is checked to be still ours (its parent in the tree).
            let Ok(fd) = PidFd::open(pid) else { continue };
            let ours = Process::new(pid)
                .and_then(|p| p.stat())
                .is_ok_and(|st| st.ppid == self_pid || c.in_lineage(st.ppid));
            if ours && fd.signal(Sig::KILL).is_ok() {
                crate::debug!("pid {pid} passed --pids-limit: killed at its fork event");
            }
        }
        self.over_limit = true;
    }

    /// The most processes alive at once: in ptrace mode from the fork events and the waits; in
    /// subreaper mode with the events connector, from its fork and exit events (exact, unless
    /// events were lost), else what the walks saw.
    pub fn processes_peak(&self) -> usize {
        match &self.connector {
            Some(c) => self.peak.max(c.peak),
            None => self.peak,
        }
    }

    pub fn max_reaped_rss(&self) -> u64 {
        self.max_reaped_rss
    }

    /// What proc_box's guards used: in its `RUSAGE_CHILDREN` and I/O, but not the job's.
    pub fn guard_usage(&self) -> GuardUsage {
        self.guard_usage
    }

    /// A member that could not be seized: EXITKILL does not cover it, so its pidfd goes to
    /// the guard (started now if none runs), which kills it if proc_box dies. As pid 1 of a
    /// pid namespace there is no need: proc_box's death ends every process in it.
    fn hand_to_guard(&mut self, pid: i32, fd: &PidFd) {
        if self.self_pid == 1 {
            return;
        }
        if !self.ensure_guard() {
            return;
        }
        let held = self.guard.as_ref().map(|g| g.hold(fd));
        match held {
            Some(Ok(())) => {
                crate::debug!("pid {pid} cannot be traced: its pidfd is with the guard");
                self.guarded.insert(pid);
            }
            Some(Err(e)) => crate::warn!("cannot hand pid {pid} to the pidfd guard: {e}"),
            None => {}
        }
    }

    /// Subreaper mode without a cgroup: nothing else would end the tree if proc_box died, so
    /// every member's pidfd goes to the guard, at the walk that finds it. (A process forked
    /// since the last walk is not held, but the guard finds it in its parent's children list
    /// if that parent is held and still alive.)
    fn guard_members(&mut self) {
        if self.mode != Mode::Subreaper || self.cgroup.is_some() || self.self_pid == 1 {
            return;
        }
        let fresh: Vec<i32> = self
            .members
            .iter()
            .filter(|(p, m)| !self.guarded.contains(p) && m.watch.is_some())
            .map(|(p, _)| *p)
            .collect();
        if fresh.is_empty() || !self.ensure_guard() {
            return;
        }
        for pid in fresh {
            let Some((fd, _)) = self.members.get(&pid).and_then(|m| m.watch.as_ref()) else { continue };
            match self.guard.as_ref().map(|g| g.hold(fd)) {
                Some(Ok(())) => {
                    self.guarded.insert(pid);
                }
                Some(Err(e)) => {
                    crate::warn_once!("cannot hand processes to the pidfd guard: {e}");
                    break;
                }
                None => break,
            }
        }
    }

    /// Starts the guard if none runs; false if it cannot be started.
    fn ensure_guard(&mut self) -> bool {
        if self.guard.is_some() {
            return true;
        }
        match guard::Guard::start() {
            Ok(g) => {
                self.guard_pids.insert(g.pid());
                self.guard = Some(g);
                true
            }
            Err(e) => {
                crate::warn_once!(
                    "cannot start the pidfd guard: {e}; what it would hold survives a SIGKILL of proc_box"
                );
                false
            }
        }
    }

    /// A guard exited. If it was not asked to (someone killed it), a new one takes over what
    /// it held.
    fn guard_exited(&mut self, pid: i32, ru: &libc::rusage, io: Option<IoSum>) {
        self.guard_pids.remove(&pid);
        crate::debug!("the pidfd guard (pid {pid}) exited");
        self.guard_usage.user += wait::timeval(ru.ru_utime);
        self.guard_usage.system += wait::timeval(ru.ru_stime);
        if let Some(io) = io {
            self.guard_usage.io.add(io);
        }
        if self.guard.as_ref().is_none_or(|g| g.pid() != pid) {
            return;
        }
        self.guard = None;
        crate::warn!("the pidfd guard (pid {pid}) died; starting another");
        let held: Vec<(i32, PidFd)> = self
            .guarded
            .iter()
            .filter_map(|&p| {
                let (fd, _) = self.members.get(&p)?.watch.as_ref()?;
                Some((p, PidFd::open(p).ok().filter(|_| !fd.exited())?))
            })
            .collect();
        self.guarded.clear();
        for (p, fd) in held {
            self.hand_to_guard(p, &fd);
        }
    }

    /// The main process is reaped and the kernel says proc_box has no child or tracee left.
    pub fn finished(&self) -> bool {
        self.main_reaped && !self.has_children
    }

    /// Adds a process: with its pidfd (watched for its exit), or as a tracee (`None`).
    fn insert(&mut self, pid: i32, pidfd: Option<PidFd>, registry: &Registry) {
        if let Some(old) = self.members.get(&pid) {
            if old.live() {
                return; // already known
            }
            self.remove(pid, registry); // the pid was recycled
        }
        let over = self.pids_limit.is_some_and(|limit| self.members.len() >= limit);
        if over {
            self.over_limit = true;
            if self.mode == Mode::Ptrace && (pidfd.is_none() || self.traced_by_us(pid)) {
                // A tracee held at its birth stop (met at its fork event, or in a children
                // list just before): it dies before its first instruction, and never joins,
                // so `processes_peak` stays within the limit.
                let member = Member::default();
                let _ = member.signal(pid, Sig::KILL);
                crate::debug!("pid {pid} would pass --pids-limit: killed at birth");
                return;
            }
        }
        // Our own child is pinned until we wait: its /proc entry can wait until accounting asks.
        let pinned = pid == self.main_pid;
        let member = match pidfd {
            Some(fd) => {
                let token = Token(self.next_token);
                self.next_token += 1;
                if let Err(e) = registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE) {
                    crate::warn!("cannot watch pid {pid}: {e}");
                }
                let proc = if pinned {
                    OnceCell::new()
                } else {
                    OnceCell::from(Process::new(pid).ok().filter(|_| !fd.exited()))
                };
                self.tokens.insert(token, pid);
                Member { watch: Some((fd, token)), proc, ..Default::default() }
            }
            None => Member::default(),
        };
        if let Some(sig) = if over { Some(Sig::KILL) } else { self.birth_signal } {
            let _ = member.signal(pid, sig);
        }
        self.members.insert(pid, member);
        self.started += 1;
        self.peak = self.peak.max(self.members.len());
        crate::debug!("tracking pid {pid} ({} live)", self.members.len());
    }

    fn remove(&mut self, pid: i32, registry: &Registry) {
        if self.guarded.remove(&pid) && self.guarded.is_empty() {
            if let Some(mut g) = self.guard.take() {
                g.close(); // nothing it holds is alive: it exits, and is reaped like a child
            }
        }
        if let Some(m) = self.members.remove(&pid) {
            if let Some((fd, token)) = &m.watch {
                let _ = registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
                self.tokens.remove(token);
            }
            crate::debug!("pid {pid} left the tree ({} live)", self.members.len());
        }
    }

    /// A pidfd turned readable: its process exited. Returns the pid that left the tree.
    pub fn pidfd_ready(&mut self, token: Token, registry: &Registry) -> Option<i32> {
        let pid = *self.tokens.get(&token)?;
        if self.members.get(&pid).is_some_and(|m| !m.live()) {
            self.remove(pid, registry);
            return Some(pid);
        }
        None
    }

    /// Every live member with its `/proc` entry, for accounting.
    pub fn processes(&self) -> impl Iterator<Item = (i32, &Process)> {
        self.members.iter().filter_map(|(&pid, m)| m.proc(pid).map(|p| (pid, p)))
    }

    /// Whether `pid` is a live process of the tree: a member, or (subreaper mode with the
    /// events connector) a descendant whose fork was seen.
    pub fn holds(&self, pid: i32) -> bool {
        self.members.contains_key(&pid) || self.connector.as_ref().is_some_and(|c| c.in_lineage(pid))
    }

    /// One live member's `/proc` entry.
    pub fn process(&self, pid: i32) -> Option<&Process> {
        self.members.get(&pid)?.proc(pid)
    }

    pub fn self_pid(&self) -> i32 {
        self.self_pid
    }

    /// Adopts a tracee met in a ptrace stop or fork event. Threads are not processes, and
    /// are skipped: `tgkill(tid, tid, 0)` succeeds only for a thread-group leader.
    fn adopt_tracee(&mut self, pid: i32, registry: &Registry) {
        if self.members.contains_key(&pid) {
            return;
        }
        if pidfd::leads_thread_group(pid) {
            self.insert(pid, None, registry);
        }
    }

    /// Adopts the child of a fork event. The kernel reports the newest tracee first, so the
    /// child may have stopped, been adopted, exited and been waited for already: then it is
    /// its parent's zombie, no longer our tracee, and must not join (and count) again.
    fn adopt_newborn(&mut self, child: i32, registry: &Registry) {
        if !self.members.contains_key(&child) && wait::is_ours(child) {
            self.adopt_tracee(child, registry);
        }
    }

    /// Drains every pending child state change. Call on SIGCHLD.
    ///
    /// Each change is first peeked at (`WNOWAIT`), so an exiting process can be examined while
    /// it is still a zombie, then consumed for that pid alone. Every status decodes, whatever
    /// its signal number, so nothing can leave a tracee stuck in a stop.
    pub fn reap(&mut self, registry: &Registry) -> Vec<Event> {
        let mut events = Vec::new();
        let mut flags = libc::__WALL;
        if self.mode == Mode::Subreaper {
            flags |= libc::WUNTRACED;
        }
        let mut last_empty = None;
        loop {
            let peeked = match wait::peek(flags) {
                Ok(Some(p)) => p,
                Ok(None) => {
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
            };
            let pid = match peeked {
                Peeked::Exit(pid) if self.guard_pids.contains(&pid) => {
                    let io = io_of_pid(pid); // a zombie still: its I/O is there to read
                    match wait::wait4(pid, flags) {
                        Ok((_, ru)) => self.guard_exited(pid, &ru, io),
                        Err(e) => crate::warn!("wait4 for the pidfd guard {pid} failed: {e}"),
                    }
                    continue;
                }
                Peeked::Stop { pid, sig, event } if self.mode == Mode::Ptrace => {
                    // A tracee we have not met yet is a newborn whose first stop outran its
                    // parent's fork event: adopt it before it is let go.
                    self.adopt_tracee(pid, registry);
                    let (stop, restart) = ptrace::handle(pid, sig, event);
                    match stop {
                        ptrace::Stop::Born { child } => self.adopt_newborn(child, registry),
                        ptrace::Stop::GroupStop { sig } if pid == self.main_pid && is_tty_stop(sig) => {
                            events.push(Event::MainStopped(sig))
                        }
                        _ => {}
                    }
                    if restart == ptrace::Restart::Done {
                        continue; // restarted: the stop is over, and wait has forgotten it
                    }
                    pid // consume it, or we would meet it again forever
                }
                Peeked::Stop { pid, .. } | Peeked::Continued(pid) | Peeked::Exit(pid) => pid,
            };
            let probe = match (peeked, self.mode) {
                (Peeked::Exit(_), Mode::Ptrace) => self.probe_auto_reap(pid),
                _ => Probe::None, // a subreaper waits only for its own children
            };
            let (status, rusage) = match wait::wait4(pid, flags) {
                Ok(r) => r,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) | Err(Errno::EAGAIN) if last_empty != Some(pid) => {
                    last_empty = Some(pid); // gone or taken back meanwhile: look again
                    continue;
                }
                Err(e) => {
                    crate::warn!("wait4 for {pid} failed: {e}");
                    break;
                }
            };
            last_empty = None;
            match wait::decode(status) {
                Some(Change::Exited(code)) => {
                    let settled = self.settle(probe, &rusage);
                    self.reaped(pid, &rusage, settled, &mut events);
                    self.exited(pid, ExitStatus::Exited(code), &mut events, registry)
                }
                Some(Change::Signaled(sig)) => {
                    let settled = self.settle(probe, &rusage);
                    self.reaped(pid, &rusage, settled, &mut events);
                    self.exited(pid, ExitStatus::Signaled(sig), &mut events, registry)
                }
                // Only the main process's terminal stops matter (Ctrl-Z), in subreaper mode.
                Some(Change::Stopped { sig, .. }) => {
                    if self.mode == Mode::Subreaper && pid == self.main_pid && is_tty_stop(sig) {
                        events.push(Event::MainStopped(sig));
                    }
                }
                Some(Change::Continued) => {}
                None => unexpected_status(status),
            }
        }
        events
    }

    fn reaped(&mut self, pid: i32, ru: &libc::rusage, settled: Settled, events: &mut Vec<Event>) {
        let maxrss_bytes = ru.ru_maxrss.max(0) as u64 * 1024;
        self.max_reaped_rss = self.max_reaped_rss.max(maxrss_bytes);
        if let Settled::Lost(io) = settled {
            let (user, system) = (wait::timeval(ru.ru_utime), wait::timeval(ru.ru_stime));
            events.push(Event::AutoReaped(Reaped { pid, user, system, maxrss_bytes, io }));
        }
    }

    /// A tracee is about to be reaped by us as its tracer. If its real parent ignores SIGCHLD,
    /// the kernel releases it right after, without adding its times to anyone: its CPU and I/O
    /// would vanish from every rusage. Its I/O is read now, from the zombie, in that case; its
    /// CPU comes from the rusage of our wait.
    ///
    /// A parent can also have its children auto-reaped with `SA_NOCLDWAIT`, which `/proc` does
    /// not show: for a member's child, the answer is [`Probe::Check`], with the zombie's I/O,
    /// settled after our wait ([`Tracker::settle`]).
    ///
    /// This runs at every exit of a fork-heavy job, while its parent waits. The common case
    /// (a member whose parent does not ignore SIGCHLD) costs a pidfd's `PIDFD_GET_INFO`, one
    /// `pread` of the parent's kept `stat` (and a read of the zombie's `/proc/PID/io` unless
    /// the parent is known to reap), and after the wait a signal-0 check (and another `pread`
    /// if the child is gone by then).
    fn probe_auto_reap(&self, pid: i32) -> Probe {
        // The zombie is still there (we peeked without reaping), so neither its pid nor its
        // parent's can be recycled yet.
        if self.members.contains_key(&pid) {
            let opened = PidFd::open(pid).ok().and_then(|fd| Some((fd.parent_pid().ok()?, fd)));
            if let Some((ppid, fd)) = opened {
                if ppid == self.self_pid {
                    return Probe::None; // reaped by us: counted in our RUSAGE_CHILDREN
                }
                let Some(parent) = self.parent_stat(ppid) else { return Probe::None };
                if matches!(parent.state, 'Z' | 'X') {
                    return Probe::None; // an exiting parent's children go to us
                }
                if !ignores_sigchld(&parent) {
                    // Whether the parent uses `SA_NOCLDWAIT` is known only after our wait, when
                    // the zombie's I/O is gone with it: it is read now, unless the parent has
                    // been reaping its children (the shell of a fork-heavy job, where this read
                    // cost 3%).
                    let reaper = self.members.get(&ppid).is_some_and(|p| p.reaps.get());
                    let io = if reaper { None } else { io_of_pid(pid) };
                    return Probe::Check { fd, ppid, reaped: parent.reaped, io };
                }
            }
        }
        let Some(zombie) = reap_stat(pid) else { return Probe::None };
        // Only children that signal their exit with SIGCHLD are auto-reaped; a thread (exit
        // signal -1) is not a process, and the group leader, reported once every thread is
        // gone, carries the process's rusage.
        if zombie.ppid == self.self_pid || zombie.exit_signal != libc::SIGCHLD {
            return Probe::None;
        }
        match self.parent_stat(zombie.ppid) {
            Some(parent) if ignores_sigchld(&parent) => Probe::Auto(io_of_pid(pid)),
            _ => Probe::None,
        }
    }

    /// After our wait as the tracer: was the process released with nobody accounting it?
    /// A zombie still there waits for its parent, who will count it. One gone was either
    /// auto-reaped (`SA_NOCLDWAIT`) or reaped by its parent in the instant since; a reaping
    /// parent's `stat` shows it, as the kernel adds the child's page faults and ticks to the
    /// parent's. A child with no fault at all cannot be told apart: it is left to the parent
    /// (it ran next to nothing), so nothing is ever counted twice.
    fn settle(&self, probe: Probe, ru: &libc::rusage) -> Settled {
        match probe {
            Probe::None => Settled::Counted,
            Probe::Auto(io) => Settled::Lost(io),
            Probe::Check { fd, ppid, reaped, io } => {
                let reaps = |yes: bool| {
                    if let Some(p) = self.members.get(&ppid) {
                        p.reaps.set(yes);
                    }
                };
                if fd.alive() {
                    reaps(true); // left to its parent
                    return Settled::Counted;
                }
                if ru.ru_minflt + ru.ru_majflt <= 0 {
                    return Settled::Counted;
                }
                match self.parent_stat(ppid) {
                    // A parent that died meanwhile handed the child to us: our wait counted it.
                    Some(after) if after.reaped == reaped && !matches!(after.state, 'Z' | 'X') => {}
                    _ => {
                        reaps(true);
                        return Settled::Counted;
                    }
                }
                reaps(false);
                // Not read ahead (its parent had been reaping until now): the disk I/O the
                // rusage of our wait carries, exact to 512 bytes; its character counts are lost.
                Settled::Lost(io.or_else(|| Some(wait::block_io(ru))))
            }
        }
    }

    /// A parent's `stat` now: through the member, or read afresh for a stranger.
    fn parent_stat(&self, ppid: i32) -> Option<ReapStat> {
        match self.members.get(&ppid) {
            Some(m) => m.parent_stat(ppid),
            None => reap_stat(ppid),
        }
    }

    fn exited(&mut self, pid: i32, status: ExitStatus, events: &mut Vec<Event>, registry: &Registry) {
        if pid == self.main_pid && !self.main_reaped {
            self.main_reaped = true;
            events.push(Event::MainExited(status));
        }
        // A tracee leaves at our wait; a watched process once its pidfd says so.
        if self.members.get(&pid).is_some_and(|m| m.watch.is_none() || !m.live()) {
            self.remove(pid, registry);
            events.push(Event::Left(pid));
        }
    }

    /// Walks the children lists of proc_box and of every member; adopts what is new.
    /// Returns how many processes joined.
    pub fn scan(&mut self, registry: &Registry) -> usize {
        self.process_events();
        let before = self.started;
        let mut parents: Vec<i32> = self.members.keys().copied().collect();
        parents.push(self.self_pid);
        let mut seen: HashSet<i32> = HashSet::new();
        while let Some(parent) = parents.pop() {
            let listed = match self.members.get(&parent).and_then(|m| m.proc(parent)) {
                Some(proc) => listed_children(proc),
                None => Process::new(parent).map(|p| listed_children(&p)).unwrap_or_default(),
            };
            for child in listed {
                if !seen.insert(child)
                    || self.members.contains_key(&child)
                    || self.guard_pids.contains(&child)
                {
                    continue;
                }
                let fd = match self.open_listed(child, parent) {
                    Listed::Not => continue,
                    Listed::Watched(fd) => Some(fd),
                    Listed::ByPid => None,
                };
                if self.mode == Mode::Ptrace {
                    self.seize_untraced(child);
                    if let Some(fd) = fd.as_ref().filter(|_| !self.traced_by_us(child)) {
                        self.hand_to_guard(child, fd);
                    }
                }
                self.insert(child, fd, registry);
                parents.push(child);
            }
        }
        self.scan_cgroup(registry);
        self.guard_members();
        (self.started - before) as usize
    }

    /// Subreaper mode with a cgroup: whatever is in the box's cgroup is in the tree, however
    /// it got there. A pid read from `cgroup.procs` is proven by opening its pidfd first and
    /// then finding it still in the cgroup.
    fn scan_cgroup(&mut self, registry: &Registry) {
        if self.mode != Mode::Subreaper {
            return;
        }
        let Some(cg) = self.cgroup.clone() else { return };
        let unknown: Vec<(i32, PidFd)> = cg
            .procs()
            .into_iter()
            .filter(|pid| !self.members.contains_key(pid))
            .filter_map(|pid| Some((pid, self.open_pidfd(pid).ok()?)))
            .collect();
        if unknown.is_empty() {
            return;
        }
        let still: HashSet<i32> = cg.procs().into_iter().collect();
        for (pid, fd) in unknown {
            if still.contains(&pid) && !fd.exited() {
                self.insert(pid, Some(fd), registry);
            }
        }
    }

    /// Opens a pidfd for a pid read from `parent`'s children list, proving it is still that
    /// process: its parent (read after the pidfd was opened) is proc_box or a live member, and
    /// the pidfd was still live after that read, so the pid had not been recycled.
    fn open_listed(&self, child: i32, parent: i32) -> Listed {
        let fd = match self.open_pidfd(child) {
            Ok(fd) => fd,
            // Our own unreaped child cannot be recycled: its pid is enough. Never lose it.
            Err(e) if parent == self.self_pid && out_of_fds(&e) => {
                self.short_of_fds();
                let zombie = reap_stat(child).is_none_or(|s| s.state == 'Z');
                return if zombie { Listed::Not } else { Listed::ByPid };
            }
            Err(e) => {
                if out_of_fds(&e) {
                    self.short_of_fds();
                }
                return Listed::Not;
            }
        };
        if parent == self.self_pid {
            // Our own child: nothing else reaps it, so the pid is stable. A zombie we have not
            // reaped yet already left the tree: adding it again would count it twice.
            return if fd.exited() { Listed::Not } else { Listed::Watched(fd) };
        }
        let Some(ppid) = parent_of(child) else { return Listed::Not };
        let ours = ppid == self.self_pid || self.members.get(&ppid).is_some_and(Member::live);
        // Still live after its parent was read: the pid was not recycled in between.
        if ours && !fd.exited() {
            Listed::Watched(fd)
        } else {
            Listed::Not
        }
    }

    /// A pidfd, unless it would eat into the descriptors kept for the control socket and the
    /// sinks ([`FD_RESERVE`] below the limit): then EMFILE, as if the limit were reached.
    fn open_pidfd(&self, pid: i32) -> std::io::Result<PidFd> {
        let fd = PidFd::open(pid)?;
        if fd.as_raw_fd() as u64 + FD_RESERVE >= fd_limit() {
            return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
        }
        Ok(fd)
    }

    /// Says once that descriptors ran short; what is tracked by pid from then on stays exact.
    fn short_of_fds(&self) {
        crate::warn_once!(
            "file descriptors are short (RLIMIT_NOFILE {}): tracking proc_box's own children by pid; \
             raise the limit (ulimit -n) for very large trees",
            fd_limit()
        );
    }

    /// A process that escaped ptrace (CLONE_UNTRACED) is seized, thread by thread, so its own
    /// forks are reported from now on and EXITKILL covers it.
    fn seize_untraced(&self, pid: i32) {
        let mut seized = HashSet::new();
        for _ in 0..4 {
            let fresh: Vec<i32> = threads(pid).into_iter().filter(|t| !seized.contains(t)).collect();
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
                match member.signal(pid, sig) {
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

/// The kernel auto-reaps the children of a parent that ignores SIGCHLD, unless that parent is
/// exiting (its children then go to us, the subreaper, and we account them).
fn ignores_sigchld(parent: &ReapStat) -> bool {
    parent.sigignore & (1 << (libc::SIGCHLD - 1)) != 0 && !matches!(parent.state, 'Z' | 'X')
}

fn is_tty_stop(sig: i32) -> bool {
    matches!(sig, libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

/// A status word no kernel should produce: logged once; the drain goes on.
fn unexpected_status(status: i32) {
    crate::warn_once!("unexpected wait status {status:#x}; ignored");
}
