//! The kernel's per-task exit records (taskstats, over generic netlink; needs CAP_NET_ADMIN in
//! the initial namespaces): when any task on the machine exits, the kernel sends its final CPU
//! times and I/O counters to every listener registered for that CPU.
//!
//! Subreaper mode uses them for what no rusage holds: a child auto-reaped because its parent
//! ignores SIGCHLD or set `SA_NOCLDWAIT` is released at its exit without adding its times to
//! anyone, and without ptrace proc_box never sees it dying. Every process sends a record,
//! whoever reaps it, so the records of the whole tree sum to its exact CPU (the scheduler's
//! runtime, `cpu_run_virtual_total`, split in the ratio of the tick-sampled `ac_utime` and
//! `ac_stime`, as rusage splits it) and its I/O, rounded down to the KiB. A record comes for
//! each task; the one flagged `AGROUP` (struct version 12, Linux 5.19) is the last task of its
//! process, so the process's total is the sum of its tasks' records up to that one.
//!
//! Like the process events connector, the socket is not polled: records wait in its buffer
//! (8 MiB) and are read on the monitor tick, at each departure and at the end. Which records
//! are the tree's is told by the fork and exit events read after them ([`Taskstats::sum`]).

use crate::sys::fd::{poll_one, PollFlags};
use crate::sys::procfs::IoSum;
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const TASKSTATS_CMD_GET: u8 = 1;
const TASKSTATS_CMD_ATTR_REGISTER_CPUMASK: u16 = 3;
const TASKSTATS_TYPE_STATS: u16 = 3;
const TASKSTATS_TYPE_AGGR_PID: u16 = 4;
/// `struct taskstats` offsets (`linux/taskstats.h`; fields are only ever appended).
const TS_VERSION: usize = 0;
const TS_FLAG: usize = 8;
const TS_PPID: usize = 132;
/// `cpu_run_virtual_total`: the scheduler's own runtime of the task (ns), what rusage and
/// cgroups count; filled only where delay accounting is on (`kernel.task_delayacct`).
const TS_RUNTIME: usize = 72;
const TS_UTIME: usize = 152;
/// `hiwater_rss`, in KiB.
const TS_HIWATER_RSS: usize = 200;
const TS_STIME: usize = 160;
const TS_READ_CHAR: usize = 216;
const TS_WRITE_CHAR: usize = 224;
const TS_READ_BYTES: usize = 248;
const TS_WRITE_BYTES: usize = 256;
const TS_TGID: usize = 368;
/// `ac_tgid` and the `AGROUP` flag came with version 12.
const TS_MIN_VERSION: u16 = 12;
/// `linux/acct.h`: the record of the last task of a process.
const AGROUP: u8 = 0x20;
const NLMSG_HDR: usize = 16;
const GENL_HDR: usize = 4;

/// A process of the tree whose last task exited: its whole CPU and I/O.
#[derive(Debug, Clone, Copy)]
pub struct Exited {
    pub tgid: i32,
    pub ppid: i32,
    pub user: Duration,
    pub system: Duration,
    pub io: IoSum,
    /// The largest RSS high-water mark of its tasks (they share one memory), bytes.
    pub maxrss: u64,
    /// The scheduler's runtime of all its tasks, where every one had delay accounting.
    pub runtime: Option<Duration>,
}

impl Exited {
    /// Its CPU: the scheduler's runtime split in the ratio of the tick-sampled user and system
    /// times, as the kernel does for rusage; without delay accounting, the tick-sampled times
    /// themselves (`exact` false), which miss what ran between ticks.
    pub fn cpu(&self) -> (Duration, Duration, bool) {
        let Some(rt) = self.runtime else { return (self.user, self.system, false) };
        let (u, s) = (self.user.as_nanos(), self.system.as_nanos());
        if u + s == 0 {
            return (Duration::ZERO, rt, true);
        }
        let user = Duration::from_nanos((rt.as_nanos() * u / (u + s)) as u64);
        (user, rt.saturating_sub(user), true)
    }
}

/// One task's exit record, not yet known to be the tree's.
#[derive(Debug, Clone, Copy)]
pub struct Task {
    tgid: i32,
    ppid: i32,
    /// The last task of its process (`AGROUP`).
    last: bool,
    user: Duration,
    system: Duration,
    /// `cpu_run_virtual_total`, ns; 0 without delay accounting.
    runtime_ns: u64,
    maxrss: u64,
    io: IoSum,
}

pub struct Taskstats {
    fd: OwnedFd,
    family: u16,
    /// Tasks' records summed by process, until its last task's record comes.
    partial: HashMap<i32, Exited>,
    /// Records were lost (the buffer overflowed) or could not be read.
    pub lost: bool,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Netlink attributes in `b`: (type, payload), each padded to 4 bytes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let kind = u16_at(b, 2)? & 0x3fff; // without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((kind, payload))
    })
}

/// A generic netlink request: header, command, and one string attribute.
fn request(family: u16, cmd: u8, version: u8, attr: u16, value: &[u8], flags: u16) -> Vec<u8> {
    let attr_len = 4 + value.len() + 1;
    let total = NLMSG_HDR + GENL_HDR + ((attr_len + 3) & !3);
    let mut m = vec![0u8; total];
    m[0..4].copy_from_slice(&(total as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&family.to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    m[16] = cmd;
    m[17] = version;
    let a = NLMSG_HDR + GENL_HDR;
    m[a..a + 2].copy_from_slice(&(attr_len as u16).to_ne_bytes());
    m[a + 2..a + 4].copy_from_slice(&attr.to_ne_bytes());
    m[a + 4..a + 4 + value.len()].copy_from_slice(value);
    m
}

fn send(fd: BorrowedFd, m: &[u8]) -> io::Result<()> {
    rustix::net::send(fd, m, SendFlags::empty())?;
    Ok(())
}

/// Waits (at most a second) for the answer to a request: its first message.
fn answer(fd: BorrowedFd, buf: &mut [u8]) -> io::Result<usize> {
    if poll_one(fd, PollFlags::IN, Some(Duration::from_secs(1))).is_empty() {
        return Err(io::Error::from(io::ErrorKind::TimedOut));
    }
    Ok(rustix::net::recv(fd, buf, RecvFlags::empty())?.0)
}

/// The error code of an `NLMSG_ERROR` message (0 is an acknowledgement), if it is one.
fn nl_error(m: &[u8]) -> Option<i32> {
    (u16_at(m, 4)? == libc::NLMSG_ERROR as u16).then(|| -(u32_at(m, NLMSG_HDR).unwrap_or(0) as i32))
}

impl Taskstats {
    /// Registers for the exit records of every CPU. Fails without CAP_NET_ADMIN, outside the
    /// initial user and pid namespaces, or where the kernel has no taskstats.
    pub fn open() -> io::Result<Taskstats> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::RAW,
            SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::GENERIC),
        )?;
        // nl_pid 0: the kernel picks one.
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, 0))?;
        // Privileged, as the registration itself is.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20);
        let sock = fd.as_fd();
        let mut buf = vec![0u8; 8192];
        send(sock, &request(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, CTRL_ATTR_FAMILY_NAME, b"TASKSTATS", 0))?;
        let n = answer(sock, &mut buf)?;
        let m = &buf[..n];
        if let Some(e) = nl_error(m).filter(|&e| e != 0) {
            return Err(io::Error::from_raw_os_error(e));
        }
        let family = attrs(m.get(NLMSG_HDR + GENL_HDR..).unwrap_or_default())
            .find(|(k, _)| *k == CTRL_ATTR_FAMILY_ID)
            .and_then(|(_, v)| u16_at(v, 0))
            .ok_or_else(|| io::Error::other("no TASKSTATS family"))?;
        let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible")?;
        let ack = libc::NLM_F_ACK as u16;
        send(
            sock,
            &request(
                family,
                TASKSTATS_CMD_GET,
                1,
                TASKSTATS_CMD_ATTR_REGISTER_CPUMASK,
                cpus.trim().as_bytes(),
                ack,
            ),
        )?;
        // The acknowledgement, or the reason for a refusal: never take a refusal for silence.
        loop {
            let n = answer(sock, &mut buf)?;
            match nl_error(&buf[..n]) {
                Some(0) => break,
                Some(e) => return Err(io::Error::from_raw_os_error(e)),
                None => continue, // a record that came first
            }
        }
        // From now on the socket is drained without blocking.
        if let Ok(flags) = rustix::fs::fcntl_getfl(&fd) {
            let _ = rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK);
        }
        Ok(Taskstats { fd, family, partial: HashMap::new(), lost: false })
    }

    /// Reads every queued record, whoever's: which are the tree's is known only once the
    /// process events sent after them are read too ([`Taskstats::sum`]).
    pub fn read(&mut self) -> Vec<Task> {
        let mut tasks = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty()) {
                Ok((n, _)) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::NOBUFS) => {
                    if !self.lost {
                        crate::warn!("taskstats exit records were lost; auto-reaped children are estimated");
                    }
                    self.lost = true;
                    self.partial.clear();
                    continue;
                }
                Err(_) => break, // EAGAIN: nothing more queued
            };
            let mut at = 0;
            while at + NLMSG_HDR <= n {
                let Some(len) = u32_at(&buf[..n], at).map(|l| l as usize) else { break };
                if len < NLMSG_HDR || at + len > n {
                    break;
                }
                let m = &buf[at..at + len];
                if u16_at(m, 4) == Some(self.family) {
                    self.record(m, &mut tasks);
                }
                at += (len + 3) & !3;
            }
        }
        tasks
    }

    /// Sums the tasks `ours` (given a process id and its parent's) says are the tree's by
    /// process, and returns the processes whose last task's record came.
    pub fn sum(&mut self, tasks: Vec<Task>, ours: impl Fn(i32, i32) -> bool) -> Vec<Exited> {
        let mut done = Vec::new();
        for t in tasks {
            if !self.partial.contains_key(&t.tgid) && !ours(t.tgid, t.ppid) {
                continue;
            }
            let e = self.partial.entry(t.tgid).or_insert(Exited {
                tgid: t.tgid,
                ppid: t.ppid,
                user: Duration::ZERO,
                system: Duration::ZERO,
                io: IoSum::default(),
                maxrss: 0,
                runtime: Some(Duration::ZERO),
            });
            e.runtime = match (e.runtime, t.runtime_ns) {
                (Some(_), 0) if !(t.user + t.system).is_zero() => None, // no delay accounting
                (Some(r), ns) => Some(r + Duration::from_nanos(ns)),
                (None, _) => None,
            };
            e.maxrss = e.maxrss.max(t.maxrss);
            e.user += t.user;
            e.system += t.system;
            e.io.add(t.io);
            if t.last {
                if let Some(e) = self.partial.remove(&t.tgid) {
                    done.push(e);
                }
            }
        }
        done
    }

    fn record(&mut self, m: &[u8], tasks: &mut Vec<Task>) {
        let body = m.get(NLMSG_HDR + GENL_HDR..).unwrap_or_default();
        for (kind, nested) in attrs(body) {
            if kind != TASKSTATS_TYPE_AGGR_PID {
                continue; // the per-process aggregate carries delay accounting only
            }
            let Some((_, s)) = attrs(nested).find(|(k, _)| *k == TASKSTATS_TYPE_STATS) else { continue };
            let Some(version) = u16_at(s, TS_VERSION) else { continue };
            if version < TS_MIN_VERSION {
                self.lost = true; // no process id nor last-task flag: nothing exact to build
                continue;
            }
            let field = |at| u64_at(s, at).unwrap_or(0);
            let (Some(ppid), Some(tgid), Some(flag)) =
                (u32_at(s, TS_PPID), u32_at(s, TS_TGID), s.get(TS_FLAG))
            else {
                continue;
            };
            tasks.push(Task {
                tgid: tgid as i32,
                ppid: ppid as i32,
                last: flag & AGROUP != 0,
                user: Duration::from_micros(field(TS_UTIME)),
                system: Duration::from_micros(field(TS_STIME)),
                runtime_ns: field(TS_RUNTIME),
                maxrss: field(TS_HIWATER_RSS).saturating_mul(1024),
                io: IoSum {
                    read_bytes: field(TS_READ_BYTES),
                    write_bytes: field(TS_WRITE_BYTES),
                    rchar: field(TS_READ_CHAR),
                    wchar: field(TS_WRITE_CHAR),
                },
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(tgid: i32, last: bool, ms: u64) -> Task {
        Task {
            tgid,
            ppid: 1,
            last,
            user: Duration::from_millis(ms),
            system: Duration::ZERO,
            runtime_ns: ms * 1_000_000,
            maxrss: 0,
            io: IoSum { wchar: ms, ..IoSum::default() },
        }
    }

    /// A process's later tasks are the tree's once its first was, even after the process left
    /// the lineage (its leader exited first); a stranger's records are dropped.
    #[test]
    fn a_process_is_summed_over_its_tasks_and_strangers_are_dropped() {
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let mut ts = Taskstats { fd, family: 0, partial: HashMap::new(), lost: false };
        let done = ts.sum(vec![task(10, false, 5), task(20, true, 7)], |tgid, _| tgid == 10);
        assert!(done.is_empty());
        let done = ts.sum(vec![task(10, true, 3), task(30, true, 1)], |_, _| false);
        assert_eq!(done.len(), 1);
        let e = done[0];
        assert_eq!((e.tgid, e.user, e.io.wchar), (10, Duration::from_millis(8), 8));
        assert_eq!(e.cpu(), (Duration::from_millis(8), Duration::ZERO, true));
        assert!(ts.partial.is_empty());
    }
}
