//! How much the tree used: samples while it runs, and the summary sites bill by.
//!
//! The CPU and I/O arithmetic, in one place. Every process that ever ran in the tree ends in
//! exactly one of these buckets, so nothing is counted twice:
//! * **reaped by proc_box** (the main process, and every orphan, since proc_box is the
//!   subreaper): the kernel added its times, and those of everything it had reaped, to
//!   proc_box's `RUSAGE_CHILDREN`, and its I/O to proc_box's own `/proc/self/io`;
//! * **reaped by a live member**: inside that member's `cutime`/`cstime` and its `/proc/PID/io`;
//! * **live**: its own `utime`/`stime` and `/proc/PID/io`;
//! * **auto-reaped** (its parent ignores SIGCHLD): no rusage ever includes it. In ptrace mode
//!   the tracker catches it at its exit (the exact rusage of our wait, and its I/O read from
//!   the zombie); in subreaper mode its exit record (as root), or the last figures seen on the
//!   monitor tick.
//!
//! So: tree total = RUSAGE_CHILDREN(self) + Σ auto-reaped + Σ live (own + reaped children).
//! At the end nothing is live, and the summary is the kernel's exact totals. A zombie not yet
//! reaped by its parent is briefly in no bucket: samples may dip by its share for that moment.
//!
//! Subreaper mode as root has a second sum, with no buckets: the exit records of every process
//! of the tree, plus the live members' own times ([`Recorded`]). It holds what the buckets
//! cannot see: the children of an `SA_NOCLDWAIT` parent (a flag `/proc` does not show). Each
//! sum can only miss something, never count it twice, so the fuller one stands.

pub mod format;
pub mod origin;
pub mod report;
pub mod shmem;
pub mod taskstats;

use crate::sys::procfs;
pub use crate::sys::procfs::IoSum;
use crate::tracker::{Mode, Reaped, Tracker};
use ::procfs::process::Process;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// proc_box's own threads that exit (the stdio relays) report their final I/O here first, by
/// thread id, since the kernel then folds it into `/proc/self/io`, where it would pass for the
/// job's. Threads that cannot report (the AMQP client's) are remembered as last seen instead.
pub type OwnIo = Arc<Mutex<HashMap<i32, IoSum>>>;

/// Tree-wide figures at one moment.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    pub io: IoSum,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
    pub vms_bytes: u64,
    pub swap_bytes: u64,
    pub threads: u64,
    pub open_files: u64,
    /// Shmem files (memfds, tmpfs) the tree holds open, each file once.
    pub shmem_fd_bytes: u64,
}

/// PSS is re-read at least this often (in monitor ticks) even when nothing in the tree moved:
/// a process outside the tree that maps or drops the same pages (a shared library's, a file's)
/// moves it too, and the tree cannot see that.
const PSS_REFRESH: u64 = 20;

/// What tells, at the cost of one `stat` read, whether a process's mapped pages may have
/// moved: its resident pages and its page faults (a page mapped by a fault counts one, a
/// copy-on-write break included).
type PssKey = (u64, u64);

struct CachedPss {
    key: PssKey,
    tick: u64,
    pss: u64,
    swap: u64,
    /// The shmem part of `pss` (`Pss_Shmem`).
    shmem: u64,
}

/// PSS by member. PSS is not a per-process figure: a process's share of a page falls when
/// another process maps that page, though nothing of its own moved. So the cache is trusted
/// only while the whole tree is still: as soon as any member's key moved, a member was born or
/// left, every member's PSS is read again. A tree whose memory does not move costs one `stat`
/// per process; one that moves costs what reading without a cache would.
#[derive(Default)]
struct PssCache {
    entries: HashMap<i32, CachedPss>,
    /// A member left since the last pass: its share of every page it mapped went to others.
    departed: bool,
}

impl PssCache {
    /// Whether every listed key is the one cached and the membership is the one cached.
    fn still(&self, keys: &[Keyed]) -> bool {
        !self.departed
            && keys.len() == self.entries.len()
            && keys.iter().all(|(pid, _, key)| self.entries.get(pid).is_some_and(|c| c.key == *key))
    }

    /// PSS, swap and shmem PSS of every listed member, re-read where the cache cannot be
    /// trusted (all of them when `force`). Also says whether any was re-read.
    fn read(&mut self, keys: &[Keyed], tick: u64, page: u64, force: bool) -> (Vec<Figures>, bool) {
        let all = force || !self.still(keys);
        if all {
            self.entries.retain(|pid, _| keys.iter().any(|(p, _, _)| p == pid));
        }
        self.departed = false;
        let mut reread = false;
        let figures = keys
            .iter()
            .map(|&(pid, proc, key)| match self.entries.get(&pid) {
                Some(c) if !all && tick - c.tick < PSS_REFRESH => (c.pss, c.swap, c.shmem),
                _ => {
                    reread = true;
                    let (pss, swap, shmem) = procfs::pss(proc).unwrap_or((key.0 * page, 0, 0));
                    self.entries.insert(pid, CachedPss { key, tick, pss, swap, shmem });
                    (pss, swap, shmem)
                }
            })
            .collect();
        (figures, reread)
    }
}

/// One member's PSS, swap and shmem PSS.
type Figures = (u64, u64, u64);

/// A member, its `/proc` entry and its [`PssKey`].
type Keyed<'a> = (i32, &'a Process, PssKey);

fn key_of(stat: &procfs::Stat) -> PssKey {
    (stat.rss_pages, stat.faults)
}

/// How many times a tree PSS read while the tree's memory moved is read again at once.
const PSS_RETRIES: usize = 2;

/// The tree's PSS now: per member (PSS, swap), and the tree sum to trust for peaks and limits.
///
/// The members' `smaps_rollup` are read one after another, not at one instant. If a member
/// maps a shared page meanwhile, the members read before count the page at the old, larger
/// share, those after at the new one, and the sum passes the truth (up to twice it for a page
/// that goes from one mapper to two). So when PSS was re-read, the keys are read again: if none
/// moved, no member mapped or dropped a page during the read and the sum is a true snapshot.
/// If some did, the read is repeated ([`PSS_RETRIES`] times at most), and the smallest sum
/// stands in, marked unsettled (`false`): it may still pass the truth.
fn tree_pss(cache: &mut PssCache, mut keys: Vec<Keyed>, tick: u64, page: u64) -> (Vec<Figures>, u64, bool) {
    let (mut figures, reread) = cache.read(&keys, tick, page, false);
    let mut sum: u64 = figures.iter().map(|f| f.0).sum();
    if !reread {
        return (figures, sum, true);
    }
    let mut least = sum;
    for attempt in 0..=PSS_RETRIES {
        let now: Vec<Keyed> = keys
            .iter()
            .filter_map(|&(pid, proc, _)| Some((pid, proc, key_of(&procfs::stat(proc)?))))
            .collect();
        if now.len() == keys.len() && now.iter().zip(&keys).all(|(a, b)| a.2 == b.2) {
            return (figures, sum, true);
        }
        if attempt == PSS_RETRIES {
            break;
        }
        keys = now;
        (figures, _) = cache.read(&keys, tick, page, true);
        sum = figures.iter().map(|f| f.0).sum();
        least = least.min(sum);
    }
    (figures, least, false)
}

/// How long the tree's memory may keep moving through every PSS read before an unsettled sum
/// counts towards the peaks anyway: a job that never stops mapping and dropping pages still
/// gets peaks (and the smallest of its reads is the best figure there is).
const UNSETTLED_FOR_PEAKS: Duration = Duration::from_secs(1);

/// The highest unsettled tree reads since the tree started moving.
struct Unsettled {
    since: Instant,
    pss: u64,
    memory: u64,
    /// The most resident pages the tree had at those reads.
    rss: u64,
}

/// What the subreaper-mode estimate remembers of a live process.
#[derive(Clone, Copy)]
struct Seen {
    ppid: i32,
    user_ticks: u64,
    system_ticks: u64,
    io: IoSum,
    rss: u64,
}

/// The sum of the exit records of every process of the tree (subreaper mode as root). Each
/// process sends one, whoever reaps it or if nobody does (an `SA_NOCLDWAIT` parent's child,
/// which nothing else reveals without ptrace), so once the job is over the sum is the tree's
/// whole CPU, but for what each process spends exiting after its record is sent (freeing its
/// memory and files: about 0.1 ms, more with much memory), and its I/O to the KiB.
#[derive(Default)]
struct Recorded {
    user: Duration,
    system: Duration,
    io: IoSum,
    /// A record came without the scheduler's runtime (no delay accounting): tick-sampled.
    inexact: bool,
    /// Recorded processes the tracker may still list (a zombie before its departure).
    pids: std::collections::HashSet<i32>,
}

impl Recorded {
    /// The CPU (user, system) of the records so far plus the own times of the live members not
    /// yet recorded (not their `cutime`: their reaped children are in the records). A zombie
    /// is left out: its record may have been read, even if it joined the tracker after.
    fn cpu_with(
        &self,
        live: &[(i32, procfs::Stat)],
        ticks: impl Fn(u64) -> Duration,
    ) -> (Duration, Duration) {
        live.iter()
            .filter(|(pid, st)| !st.zombie && !self.pids.contains(pid))
            .fold((self.user, self.system), |(u, s), (_, st)| {
                (u + ticks(st.own_user_ticks), s + ticks(st.own_system_ticks))
            })
    }
}

pub struct Accounting {
    mode: Mode,
    tick_secs: f64,
    page: u64,
    lost_user: Duration,
    lost_system: Duration,
    lost_io: IoSum,
    lost_maxrss: u64,
    own_io_base: IoSum,
    /// RUSAGE_CHILDREN survives exec: whatever proc_box's process had reaped before it became
    /// proc_box (`cargo run`, a shell's `exec`) is not the job's.
    cpu_base: (Duration, Duration),
    own_exited_io: OwnIo,
    /// proc_box's live threads' I/O as last read, to account those that exit unannounced.
    own_threads: std::cell::RefCell<OwnThreads>,
    peak_rss: u64,
    peak_pss: u64,
    /// Tree reads taken while its memory kept moving, held aside from the peaks ([`Self::peaks`]).
    unsettled: Option<Unsettled>,
    pss_cache: PssCache,
    fd_shmem: shmem::FdShmem,
    /// Subreaper mode as root: the kernel's exit records, for exact auto-reaped children.
    taskstats: Option<taskstats::Taskstats>,
    /// Members whose exit record was billed as auto-reaped, until they depart.
    billed_exits: std::collections::HashSet<i32>,
    /// Every process of the tree whose exit record came, however it was reaped.
    recorded: Recorded,
    /// Members that ignored SIGCHLD at the last tick (subreaper mode).
    ignoring: std::collections::HashSet<i32>,
    shmem_fd: u64,
    peak_shmem_fd: u64,
    peak_memory: u64,
    tick: u64,
    seen: HashMap<i32, Seen>,
    prev_cpu: (Instant, f64),
    /// The box's cgroup: in subreaper mode its CPU counter is the exact total.
    cgroup: Option<Arc<crate::cgroup::Cgroup>>,
}

impl Accounting {
    pub fn new(mode: Mode, now: Instant, own_exited_io: OwnIo) -> Accounting {
        let tick_secs = 1.0 / ::procfs::ticks_per_second() as f64;
        let mut a = Accounting {
            mode,
            tick_secs,
            page: ::procfs::page_size(),
            lost_user: Duration::ZERO,
            lost_system: Duration::ZERO,
            lost_io: IoSum::default(),
            lost_maxrss: 0,
            own_io_base: IoSum::default(),
            cpu_base: (Duration::ZERO, Duration::ZERO),
            own_exited_io,
            own_threads: Default::default(),
            peak_rss: 0,
            peak_pss: 0,
            unsettled: None,
            pss_cache: PssCache::default(),
            fd_shmem: Default::default(),
            taskstats: None,
            billed_exits: Default::default(),
            recorded: Recorded::default(),
            ignoring: Default::default(),
            shmem_fd: 0,
            peak_shmem_fd: 0,
            peak_memory: 0,
            tick: 0,
            seen: HashMap::new(),
            prev_cpu: (now, 0.0),
            cgroup: None,
        };
        a.own_io_base = a.reaped_io();
        let (user, system) = children_rusage();
        a.cpu_base = (user, system);
        a
    }

    pub fn set_cgroup(&mut self, cg: Option<Arc<crate::cgroup::Cgroup>>) {
        self.cgroup = cg;
    }

    /// The cgroup's counter, where it is the better source: in subreaper mode, which otherwise
    /// estimates the CPU of auto-reaped children (ptrace mode is exact without it), and only
    /// when it is above the other count: a process that moved itself out of the cgroup (root
    /// can) takes its CPU out of the counter too, but not out of proc_box's rusage.
    fn cgroup_cpu(&self, other: Duration) -> Option<(Duration, Duration)> {
        if self.mode != Mode::Subreaper {
            return None;
        }
        let (user, system) = self.cgroup.as_ref()?.cpu()?;
        (user + system > other).then_some((user, system))
    }

    /// A process the kernel released without accounting it anywhere (ptrace mode, exact).
    pub fn auto_reaped(&mut self, r: &Reaped) {
        self.lost_user += r.user;
        self.lost_system += r.system;
        self.lost_maxrss = self.lost_maxrss.max(r.maxrss_bytes);
        if let Some(io) = r.io {
            self.lost_io.add(io);
        }
        self.seen.remove(&r.pid);
        if self.pss_cache.entries.remove(&r.pid).is_some() {
            self.pss_cache.departed = true;
        }
    }

    /// A member left the tree. In subreaper mode, if its parent ignores SIGCHLD it was
    /// auto-reaped and nobody will account it: keep what the last tick saw of it.
    pub fn departed(&mut self, pid: i32, tracker: &mut Tracker) {
        if self.pss_cache.entries.remove(&pid).is_some() {
            self.pss_cache.departed = true;
        }
        // Its exit record is queued by now (the kernel sends it before it notifies the parent).
        self.exit_records(tracker);
        self.recorded.pids.remove(&pid);
        let billed = self.billed_exits.remove(&pid);
        let Some(seen) = self.seen.remove(&pid) else { return };
        if self.mode != Mode::Subreaper || seen.ppid == tracker.self_pid() || billed {
            return;
        }
        if self.taskstats.as_ref().is_some_and(|t| !t.lost) {
            return; // no record billed it: it was not auto-reaped
        }
        if tracker.process(seen.ppid).is_some_and(procfs::ignores_sigchld) {
            self.lost_user += self.ticks(seen.user_ticks);
            self.lost_system += self.ticks(seen.system_ticks);
            self.lost_io.add(seen.io);
            self.lost_maxrss = self.lost_maxrss.max(seen.rss);
        }
    }

    /// Subreaper mode: reads the kernel's exit records (as root) to bill them.
    pub fn set_taskstats(&mut self, t: Option<taskstats::Taskstats>) {
        self.taskstats = t.filter(|_| self.mode == Mode::Subreaper);
    }

    /// Reads the kernel's exit records: every process of the tree is added to [`Recorded`],
    /// and one that a parent ignoring SIGCHLD had auto-reaped is billed at once, for the
    /// samples' per-bucket sum (no rusage will ever hold it). A process whose parent reaps it
    /// is left to that parent's counters there.
    fn exit_records(&mut self, tracker: &mut Tracker) {
        let Some(ts) = self.taskstats.as_mut() else { return };
        let tasks = tracker.read_exit_records(|| ts.read());
        let self_pid = tracker.self_pid();
        // Without the fork events, only a record whose parent is known: a live member, or one
        // seen at a tick and not yet gone from `seen` (its child exited before it did).
        let seen = &self.seen;
        let exits = ts.sum(tasks, |tgid, ppid| {
            tracker.descends(tgid) || (ppid != self_pid && (tracker.holds(ppid) || seen.contains_key(&ppid)))
        });
        for e in exits {
            let (mut user, mut system, exact) = e.cpu();
            self.recorded.user += user;
            self.recorded.system += system;
            self.recorded.io.add(e.io);
            self.recorded.inexact |= !exact;
            let listed = tracker.process(e.tgid).is_some();
            if listed {
                self.recorded.pids.insert(e.tgid);
            }
            if e.ppid == self_pid {
                continue; // reaped by proc_box
            }
            // The parent's disposition now, or as the last tick saw it if it is gone.
            let auto = match crate::sys::procfs::reap_stat(e.ppid) {
                Some(p) if !matches!(p.state, 'Z' | 'X') => p.sigignore & (1 << (libc::SIGCHLD - 1)) != 0,
                _ => self.ignoring.contains(&e.ppid),
            };
            if !auto {
                continue;
            }
            if !exact {
                // Tick-sampled times can fall short of what the last monitor tick read (the
                // kernel's adjusted figures): the larger stands in.
                if let Some(seen) = self.seen.get(&e.tgid) {
                    let (su, ss) = (self.ticks(seen.user_ticks), self.ticks(seen.system_ticks));
                    if su + ss > user + system {
                        (user, system) = (su, ss);
                    }
                }
            }
            crate::debug!(
                "pid {} was auto-reaped: billed {user:?} user, {system:?} system from its exit record",
                e.tgid
            );
            self.lost_user += user;
            self.lost_system += system;
            self.lost_io.add(e.io);
            self.lost_maxrss = self.lost_maxrss.max(e.maxrss);
            if listed {
                self.billed_exits.insert(e.tgid); // it departs later: not billed twice
            } else {
                self.seen.remove(&e.tgid);
            }
        }
    }

    /// The tree's CPU from the exit records, where they cover every process: subreaper mode
    /// as root, no record lost and every fork event read. `live`: each live member's `stat`.
    fn recorded_cpu(&self, tracker: &Tracker, live: &[(i32, procfs::Stat)]) -> Option<(Duration, Duration)> {
        let complete = self.taskstats.as_ref().is_some_and(|t| !t.lost) && tracker.processes_started_exact();
        complete.then(|| self.recorded.cpu_with(live, |n| self.ticks(n)))
    }

    /// Whether the summary's CPU is exact, and if not, why.
    pub fn cpu_exactness(&self, tracker: &Tracker) -> (bool, Option<&'static str>) {
        if self.mode == Mode::Ptrace || self.cgroup.as_ref().is_some_and(|c| c.cpu().is_some()) {
            return (true, None);
        }
        match &self.taskstats {
            Some(t) if !t.lost && tracker.processes_started_exact() && !self.recorded.inexact => (
                false,
                Some(
                    "subreaper mode without a cgroup: a child auto-reaped by its parent is billed from its \
                     exit record, which misses what it spends exiting (about 0.1 ms, more with much memory)",
                ),
            ),
            Some(t) if !t.lost && !self.recorded.inexact => (
                false,
                Some(
                    "subreaper mode without a cgroup, and without every fork event: only exit records \
                     of processes whose parent was seen are billed",
                ),
            ),
            Some(t) if !t.lost => (
                false,
                Some(
                    "subreaper mode without a cgroup, and without delay accounting (kernel.task_delayacct): \
                     exit records carry tick-sampled times",
                ),
            ),
            Some(_) => (false, Some("subreaper mode without a cgroup, and exit records were lost")),
            None => (
                false,
                Some(
                    "subreaper mode without a cgroup or the kernel's exit records (taskstats, root): \
                     children auto-reaped by their parent are billed from their last monitor tick",
                ),
            ),
        }
    }

    fn ticks(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 * self.tick_secs)
    }

    /// The fast monitor tick: tree RSS and PSS for the peaks. It reads each member's `stat`;
    /// PSS (`smaps_rollup`, costly) is re-read only when something in the tree moved (see
    /// [`PssCache`]), and at least every [`PSS_REFRESH`] ticks.
    /// Returns the tree's memory now, as `--memory-limit` counts it: PSS, plus the shmem held
    /// through descriptors that PSS cannot have counted (see [`shmem`]).
    pub fn monitor(&mut self, tracker: &mut Tracker) -> u64 {
        self.tick += 1;
        self.exit_records(tracker);
        let mut rss = 0;
        let mut keys = Vec::with_capacity(tracker.len());
        let mut stats = Vec::with_capacity(tracker.len());
        for (pid, proc) in tracker.processes() {
            let Some(stat) = procfs::stat(proc) else { continue };
            rss += stat.rss_pages * self.page;
            keys.push((pid, proc, key_of(&stat)));
            stats.push((pid, proc, stat));
        }
        if self.mode == Mode::Subreaper {
            self.remember_all(&stats, tracker.self_pid());
        }
        let (figures, pss, settled) = tree_pss(&mut self.pss_cache, keys, self.tick, self.page);
        let memory = self.memory(tracker, pss, &figures);
        self.peak_rss = self.peak_rss.max(rss);
        self.peaks(settled, pss, memory, rss);
        // Narrows what an own thread can do unseen before it exits.
        self.reaped_io();
        memory
    }

    /// PSS plus the shmem files the tree holds open beyond what it maps: mapped pages of those
    /// files are in PSS already (its `Pss_Shmem` part), so only the rest is added. Keeps the
    /// peaks of both.
    fn memory(&mut self, tracker: &Tracker, pss: u64, figures: &[Figures]) -> u64 {
        let held = self.fd_shmem.held(tracker.processes());
        let mapped: u64 = figures.iter().map(|f| f.2).sum();
        let memory = pss.saturating_add(held.saturating_sub(mapped));
        self.shmem_fd = held;
        self.peak_shmem_fd = self.peak_shmem_fd.max(held);
        memory
    }

    /// Raises the PSS and memory peaks with a tree read (`rss`: the tree's resident pages).
    ///
    /// A settled read always counts. An unsettled one (members mapped or dropped pages while
    /// it was read) may pass the truth, but only through shared pages whose share changed
    /// meanwhile, as when sharers arrive after the owner: so it is held aside while the tree
    /// keeps moving. When a settled read follows, the held ones are dropped if the tree still
    /// holds as many resident pages (nothing was freed: the excess was shares), and counted if
    /// it holds fewer (memory really was there and went: a job that grows and frees, or ends).
    /// Past [`UNSETTLED_FOR_PEAKS`] of moving, or at the end of the job, they count too. The
    /// limit is checked against every read regardless.
    fn peaks(&mut self, settled: bool, pss: u64, memory: u64, rss: u64) {
        if !settled {
            let u =
                self.unsettled.get_or_insert(Unsettled { since: Instant::now(), pss: 0, memory: 0, rss: 0 });
            u.pss = u.pss.max(pss);
            u.memory = u.memory.max(memory);
            u.rss = u.rss.max(rss);
            let (pss, memory) = (u.pss, u.memory);
            if u.since.elapsed() >= UNSETTLED_FOR_PEAKS {
                self.raise_peaks(pss, memory);
            }
            return;
        }
        if let Some(u) = self.unsettled.take().filter(|u| rss < u.rss) {
            self.raise_peaks(u.pss, u.memory);
        }
        self.raise_peaks(pss, memory);
    }

    fn raise_peaks(&mut self, pss: u64, memory: u64) {
        self.peak_pss = self.peak_pss.max(pss);
        self.peak_memory = self.peak_memory.max(memory);
    }

    /// The most shmem (memfds, tmpfs files) the tree held open at once, each file once.
    pub fn peak_shmem_fd(&self) -> u64 {
        self.peak_shmem_fd
    }

    /// The highest memory figure `--memory-limit` was checked against.
    pub fn peak_memory(&self) -> u64 {
        let held = self.unsettled.as_ref().map_or(0, |u| u.memory.max(u.pss));
        self.peak_memory.max(self.peak_pss).max(held)
    }

    /// The tree's CPU time so far, exited and auto-reaped descendants included: what
    /// `--cpu-limit` is checked against. Reads only each live member's `stat`.
    pub fn cpu_now(&self, tracker: &Tracker) -> Duration {
        let (user, system) = children_rusage();
        let guard = tracker.guard_usage();
        let mut t = user.saturating_sub(self.cpu_base.0 + guard.user)
            + system.saturating_sub(self.cpu_base.1 + guard.system)
            + self.lost_user
            + self.lost_system;
        let live: Vec<(i32, procfs::Stat)> =
            tracker.processes().filter_map(|(pid, proc)| Some((pid, procfs::stat(proc)?))).collect();
        t += self.ticks(live.iter().map(|(_, s)| s.user_ticks + s.system_ticks).sum());
        if let Some((user, system)) = self.recorded_cpu(tracker, &live) {
            t = t.max(user + system);
        }
        self.cgroup_cpu(t).map_or(t, |(user, system)| user + system)
    }

    /// Keeps each member's last figures for the auto-reap estimate. Only a child of a parent
    /// that ignores SIGCHLD (or of one outside the tree, unknown) can be auto-reaped, so only
    /// theirs pay for an `io` read; the others keep their last one.
    fn remember_all(&mut self, stats: &[(i32, &Process, procfs::Stat)], self_pid: i32) {
        let ignoring: std::collections::HashSet<i32> =
            stats.iter().filter(|(_, _, s)| s.ignores_sigchld).map(|(pid, _, _)| *pid).collect();
        let members: std::collections::HashSet<i32> = stats.iter().map(|(pid, _, _)| *pid).collect();
        self.ignoring.clone_from(&ignoring);
        for (pid, proc, stat) in stats {
            let parent = stat.ppid;
            let may_vanish = parent != self_pid && (ignoring.contains(&parent) || !members.contains(&parent));
            let io = if may_vanish {
                procfs::io(proc).unwrap_or_default()
            } else {
                self.seen.get(pid).map(|s| s.io).unwrap_or_default()
            };
            self.remember(*pid, stat, io);
        }
    }

    fn remember(&mut self, pid: i32, stat: &procfs::Stat, io: IoSum) {
        self.seen.insert(
            pid,
            Seen {
                ppid: stat.ppid,
                user_ticks: stat.user_ticks,
                system_ticks: stat.system_ticks,
                io,
                rss: stat.rss_pages * self.page,
            },
        );
    }

    /// Everything a sample reports about the tree now.
    pub fn totals(&mut self, tracker: &mut Tracker) -> Totals {
        self.exit_records(tracker);
        let (user, system) = children_rusage();
        // proc_box's guard is reaped by proc_box, but is no part of the job.
        let guard = tracker.guard_usage();
        let mut t = Totals {
            cpu_user: user.saturating_sub(self.cpu_base.0 + guard.user) + self.lost_user,
            cpu_system: system.saturating_sub(self.cpu_base.1 + guard.system) + self.lost_system,
            io: self.reaped_io().minus(guard.io),
            ..Totals::default()
        };
        t.io.add(self.lost_io);
        let (mut live_user, mut live_system) = (0, 0);
        let mut keys = Vec::with_capacity(tracker.len());
        let mut live = Vec::with_capacity(tracker.len());
        for (pid, proc) in tracker.processes() {
            let Some(stat) = procfs::stat(proc) else { continue };
            live.push((pid, stat));
            live_user += stat.user_ticks;
            live_system += stat.system_ticks;
            t.threads += stat.threads;
            t.rss_bytes += stat.rss_pages * self.page;
            t.vms_bytes += stat.vsize;
            t.open_files += procfs::open_files(proc);
            let io = procfs::io(proc).unwrap_or_default();
            t.io.add(io);
            keys.push((pid, proc, key_of(&stat)));
            if self.mode == Mode::Subreaper {
                self.remember(pid, &stat, io);
            }
        }
        let (figures, pss, settled) = tree_pss(&mut self.pss_cache, keys, self.tick, self.page);
        t.swap_bytes = figures.iter().map(|f| f.1).sum();
        t.pss_bytes = Some(pss);
        let memory = self.memory(tracker, pss, &figures);
        self.peaks(settled, pss, memory, t.rss_bytes);
        t.shmem_fd_bytes = self.shmem_fd;
        t.cpu_user += self.ticks(live_user);
        t.cpu_system += self.ticks(live_system);
        // Both sums can only miss something (the buckets an SA_NOCLDWAIT parent's child, the
        // records each process's exit and its I/O's KiB remainders), never count it twice: the
        // fuller one stands.
        if let Some((user, system)) = self.recorded_cpu(tracker, &live) {
            if user + system > t.cpu_user + t.cpu_system {
                (t.cpu_user, t.cpu_system) = (user, system);
            }
            t.io = t.io.max(self.recorded.io);
        }
        if let Some((user, system)) = self.cgroup_cpu(t.cpu_user + t.cpu_system) {
            (t.cpu_user, t.cpu_system) = (user, system);
        }
        self.peak_rss = self.peak_rss.max(t.rss_bytes);
        t
    }

    /// CPU used since the previous call, over the wall time since then, in percent.
    pub fn cpu_percent(&mut self, t: &Totals, now: Instant) -> f64 {
        let cpu = (t.cpu_user + t.cpu_system).as_secs_f64();
        let (then, before) = self.prev_cpu;
        let wall = now.saturating_duration_since(then).as_secs_f64();
        self.prev_cpu = (now, cpu);
        if wall <= 0.0 {
            return 0.0;
        }
        ((cpu - before).max(0.0) / wall * 100.0 * 100.0).round() / 100.0
    }

    pub fn peak_rss(&self) -> u64 {
        self.peak_rss
    }

    pub fn peak_pss(&self) -> u64 {
        self.peak_pss.max(self.unsettled.as_ref().map_or(0, |u| u.pss))
    }

    /// The kernel's high-water mark of the largest single process: the `ru_maxrss` of every
    /// wait proc_box made (not RUSAGE_CHILDREN's, which may hold a high-water mark from
    /// before exec), and of auto-reaped processes.
    pub fn max_process_rss(&self, tracker: &Tracker) -> u64 {
        tracker.max_reaped_rss().max(self.lost_maxrss)
    }

    /// I/O the kernel folded into proc_box's `/proc/self/io` from reaped children: the whole
    /// process's figure, less its live threads', less what its own exited threads reported
    /// (or were last seen with), less what was there before the job started.
    fn reaped_io(&self) -> IoSum {
        let Some((whole, live)) = single_threaded_io().or_else(threads_io) else {
            return IoSum::default();
        };
        let finals = self.own_exited_io.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = self.own_threads.borrow_mut();
        let OwnThreads { last, vanished } = &mut *seen;
        for (tid, io) in last.iter() {
            if !live.contains_key(tid) && !finals.contains_key(tid) {
                vanished.add(*io);
            }
        }
        let mut own = *vanished;
        for io in finals.values().chain(live.values()) {
            own.add(*io);
        }
        *last = live;
        whole.minus(own).minus(self.own_io_base)
    }
}

/// proc_box's threads as last read: by id, and the sum of those gone without reporting.
#[derive(Default)]
struct OwnThreads {
    last: HashMap<i32, IoSum>,
    vanished: IoSum,
}

/// `/proc/self/io` and the running thread's own, when it is the only thread (at start, and at
/// the end of a job whose output needed no relay): three small reads instead of a walk.
fn single_threaded_io() -> Option<(IoSum, HashMap<i32, IoSum>)> {
    let mut buf = [0u8; 512];
    let whole = procfs::parse_io(procfs::read_pid_file(c"/proc/self/io", &mut buf)?)?;
    let mut buf = [0u8; 512];
    let thread = procfs::parse_io(procfs::read_pid_file(c"/proc/thread-self/io", &mut buf)?)?;
    // A task directory's link count is 2 plus its threads: a `stat`, where `status` would
    // format a page of text (2 µs against 18 µs, twice per box).
    let task = rustix::fs::stat("/proc/self/task").ok()?;
    (task.st_nlink == 3).then(|| (whole, HashMap::from([(nix::unistd::gettid().as_raw(), thread)])))
}

/// `/proc/self/io` and every live thread's, by thread id.
fn threads_io() -> Option<(IoSum, HashMap<i32, IoSum>)> {
    let me = Process::myself().ok()?;
    let whole = me.io().map(|io| IoSum::from_io(&io)).ok()?;
    let mut live = HashMap::new();
    for task in me.tasks().ok()?.flatten() {
        if let Ok(io) = task.io() {
            live.insert(task.tid, IoSum::from_io(&io));
        }
    }
    Some((whole, live))
}

/// proc_box's `RUSAGE_CHILDREN`: user and system time.
fn children_rusage() -> (Duration, Duration) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        Ok(ru) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_micros(t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64)
            };
            (tv(ru.user_time()), tv(ru.system_time()))
        }
        Err(_) => (Duration::ZERO, Duration::ZERO),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounting() -> Accounting {
        Accounting::new(Mode::Ptrace, Instant::now(), OwnIo::default())
    }

    #[test]
    fn an_unsettled_read_that_a_settled_one_follows_never_raises_the_peaks() {
        let mut a = accounting();
        a.peaks(true, 100, 100, 300);
        a.peaks(false, 448, 450, 900); // sharers arriving: the sum passed the truth
        a.peaks(true, 260, 260, 1024); // all mapped, nothing freed
        assert_eq!((a.peak_pss(), a.peak_memory()), (260, 260));
    }

    #[test]
    fn unsettled_reads_count_once_the_tree_keeps_moving_or_the_job_ends() {
        let mut a = accounting();
        a.peaks(true, 100, 100, 100);
        a.peaks(false, 300, 310, 300);
        assert_eq!((a.peak_pss(), a.peak_memory()), (300, 310), "a job ending while its memory moves");
        a.unsettled.as_mut().unwrap().since -= UNSETTLED_FOR_PEAKS;
        a.peaks(false, 200, 200, 300);
        a.peaks(true, 150, 150, 400);
        assert_eq!((a.peak_pss(), a.peak_memory()), (300, 310), "unsettled for longer than the bound");
    }

    #[test]
    fn memory_that_grew_and_was_freed_while_moving_counts() {
        let mut a = accounting();
        a.peaks(true, 10, 10, 10);
        a.peaks(false, 900, 900, 950); // private growth, read while still growing
        a.peaks(true, 11, 11, 12); // freed: the pages really were there
        assert_eq!((a.peak_pss(), a.peak_memory()), (900, 900));
        a.peaks(false, 500, 500, 520);
        a.peaks(true, 0, 0, 0); // the tree is gone: the job grew until it ended
        assert_eq!(a.peak_pss(), 900);
    }
}
