//! The kernel's process events connector (netlink, needs CAP_NET_ADMIN): every fork and exit on
//! the machine, in order. Subreaper mode learns of a process only when it walks the children
//! lists, so a process that lives less than a tick can go unseen; following the fork events
//! from the main process down makes `processes_started` exact there too.
//!
//! The events are the whole machine's: on a busy node proc_box wakes for every fork, which is
//! why ptrace mode (exact without it) does not use it.

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// nlmsghdr (16 bytes) + cn_msg (20 bytes): where `struct proc_event` starts.
const EVENT: usize = 36;
/// `what`, `cpu`, `timestamp_ns`: where the event's data starts, within `struct proc_event`.
const DATA: usize = EVENT + 16;

/// proc_box's own children that are not the job's (the guard, the cgroup watcher's middle
/// process), until their fork event is read: each stands for that one fork, as its pid is
/// free for a process of the job once the helper is gone.
static OWN_FORKS: std::sync::Mutex<VecDeque<i32>> = std::sync::Mutex::new(VecDeque::new());

/// At most this many own forks wait for their event (without the connector none is read).
const OWN_FORKS_KEPT: usize = 16;

/// Says that proc_box forked `pid` for itself: its fork event does not join the lineage.
pub fn own_fork(pid: i32) {
    let mut own = OWN_FORKS.lock().unwrap_or_else(|e| e.into_inner());
    if own.len() == OWN_FORKS_KEPT {
        own.pop_front();
    }
    own.push_back(pid);
}

/// Whether the fork of `pid` is one of proc_box's own, which it then no longer stands for.
fn take_own_fork(pid: i32) -> bool {
    let mut own = OWN_FORKS.lock().unwrap_or_else(|e| e.into_inner());
    own.iter().position(|&p| p == pid).and_then(|i| own.remove(i)).is_some()
}

pub struct Connector {
    fd: OwnedFd,
    /// proc_box's own process id: a child of proc_box is the job's (the main process, or a
    /// `CLONE_PARENT` sibling of it), unless proc_box forked it for itself ([`own_fork`]).
    self_pid: i32,
    /// Processes known to descend from the main process (thread-group ids).
    lineage: HashSet<i32>,
    /// Descendants of the main process seen forked (the main process not included).
    pub forked: u64,
    /// The most of them (the main process included) alive at once. Every fork and exit is an
    /// event, in order, so an overlap too brief for any walk is counted too.
    pub peak: usize,
    /// Events were lost (the socket's buffer overflowed): the count is a lower bound.
    pub lost: bool,
    /// Descendants forked since the last [`Connector::take_newborns`], oldest first; kept only
    /// when asked for (`--pids-limit`), so that nothing grows without it.
    newborns: Option<Vec<i32>>,
    /// Descendants whose exit event was read, kept only when asked for (exit records to match,
    /// see [`Connector::mark_exits`]): `.0` since the last mark, `.1` before it.
    exits: Option<(HashSet<i32>, HashSet<i32>)>,
    /// Live threads other than the leader, by process of the lineage that has any. A leader
    /// that exits first (`pthread_exit` in `main`) leaves its process alive, forking still.
    threads: HashMap<i32, u32>,
    /// Processes of the lineage whose leader exited while other threads ran.
    leader_dead: HashSet<i32>,
}

/// The kernel answers the subscription at once (while `send` runs) with an acknowledgement
/// carrying an error code: a refused subscription must not pass for an empty event stream.
fn confirm(fd: BorrowedFd) -> io::Result<()> {
    let mut buf = [0u8; 8192];
    loop {
        let n = match rustix::net::recv(fd, &mut buf[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => n,
            Err(Errno::INTR | Errno::NOBUFS) => continue,
            Err(e) => {
                let e = io::Error::from(e);
                return Err(io::Error::other(format!(
                    "the process events subscription was not acknowledged ({e})"
                )));
            }
        };
        let m = &buf[..n];
        if u32_at(m, EVENT) == Some(PROC_EVENT_NONE) {
            return match u32_at(m, DATA) {
                Some(0) => Ok(()),
                Some(err) => Err(io::Error::from_raw_os_error(err as i32)),
                None => Err(io::Error::other("a short acknowledgement")),
            };
        }
    }
}

/// Sends `PROC_CN_MCAST_LISTEN`, with `filter` (a mask of event kinds) if given.
fn send_listen(fd: BorrowedFd, filter: Option<u32>) -> io::Result<()> {
    let data = if filter.is_some() { 8 } else { 4 };
    let mut msg = [0u8; EVENT + 8];
    msg[0..4].copy_from_slice(&((EVENT + data) as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    msg[12..16].copy_from_slice(&std::process::id().to_ne_bytes());
    msg[16..20].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
    msg[20..24].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
    msg[32..34].copy_from_slice(&(data as u16).to_ne_bytes());
    msg[EVENT..EVENT + 4].copy_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    if let Some(f) = filter {
        msg[EVENT + 4..EVENT + 8].copy_from_slice(&f.to_ne_bytes());
    }
    rustix::net::send(fd, &msg[..EVENT + data], SendFlags::empty())?;
    Ok(())
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

impl Connector {
    /// Subscribes to process events. Fails without CAP_NET_ADMIN (EPERM).
    pub fn open() -> io::Result<Connector> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(rustix::net::netlink::CONNECTOR),
        )?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, CN_IDX_PROC))?;
        // Room for a fork storm between two turns of the loop; SO_RCVBUFFORCE needs privilege,
        // which this socket already required.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, 8 << 20);
        send_listen(fd.as_fd(), None)?;
        confirm(fd.as_fd())?;
        // Then narrowed to forks, execs and exits (Linux 6.6 takes an event filter after the
        // operation), so a comm or an id change is never queued for us. The kernel's answer
        // is an event of no kind, which that filter drops: the subscription above is what is
        // confirmed. An older kernel ignores a message of this size and keeps sending all.
        let _ = send_listen(fd.as_fd(), Some(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT));
        Ok(Connector {
            fd,
            lineage: HashSet::new(),
            forked: 0,
            peak: 0,
            lost: false,
            newborns: None,
            exits: None,
            threads: HashMap::new(),
            leader_dead: HashSet::new(),
            self_pid: std::process::id() as i32,
        })
    }

    /// The main process: its descendants are counted from here on. Events already queued are
    /// read after this, so none of its forks is missed.
    pub fn seed(&mut self, main: i32) {
        self.lineage.insert(main);
        self.peak = self.peak.max(self.lineage.len());
    }

    /// Keeps the descendants forked from now on, for [`Connector::take_newborns`].
    pub fn keep_newborns(&mut self) {
        self.newborns.get_or_insert_with(Vec::new);
    }

    /// The descendants forked since the last call, oldest first.
    pub fn take_newborns(&mut self) -> Vec<i32> {
        self.newborns.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Keeps the descendants' exits from now on, for [`Connector::descends`].
    pub fn keep_exits(&mut self) {
        self.exits.get_or_insert_with(Default::default);
    }

    /// Called before each read of the kernel's exit records. A process's exit record is sent
    /// before its exit event, so a record read after this mark belongs to a process still in
    /// the lineage, or whose exit event was read since the previous mark: [`Self::descends`]
    /// finds it until the next mark, after which those exits are dropped.
    pub fn mark_exits(&mut self) {
        if let Some((recent, marked)) = self.exits.as_mut() {
            marked.clear();
            marked.extend(recent.drain());
        }
    }

    /// Whether `tgid` descends from the main process: alive as of the last event read, or
    /// gone with its exit event read since the mark before last.
    pub fn descends(&self, tgid: i32) -> bool {
        self.lineage.contains(&tgid)
            || self.exits.as_ref().is_some_and(|(r, m)| r.contains(&tgid) || m.contains(&tgid))
    }

    /// Descendants alive as of the last event read, the main process included.
    pub fn live(&self) -> usize {
        self.lineage.len()
    }

    /// Whether `tgid` descends from the main process, as of the last event read.
    pub fn in_lineage(&self, tgid: i32) -> bool {
        self.lineage.contains(&tgid)
    }

    /// The socket, for a caller that must wake at each fork (a process limit to enforce).
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every queued event.
    pub fn drain(&mut self) {
        let mut buf = [0u8; 8192];
        loop {
            let n = match rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty()) {
                Ok((n, _)) => n,
                Err(Errno::INTR) => continue,
                Err(Errno::NOBUFS) => {
                    if !self.lost {
                        crate::warn!(
                            "process events were lost (a fork storm); processes_started is a lower bound"
                        );
                    }
                    self.lost = true;
                    continue;
                }
                Err(_) => return, // EAGAIN: nothing more queued
            };
            let mut at = 0;
            // One datagram may carry several netlink messages.
            while at + DATA <= n {
                let Some(len) = u32_at(&buf[..n], at).map(|l| l as usize) else { break };
                self.event(&buf[at..n]);
                if len < 16 {
                    break;
                }
                at += (len + 3) & !3;
            }
        }
    }

    fn event(&mut self, m: &[u8]) {
        let field = |i: usize| u32_at(m, DATA + 4 * i).map(|v| v as i32);
        match u32_at(m, EVENT) {
            Some(PROC_EVENT_FORK) => {
                let (Some(parent_tgid), Some(child_pid), Some(child_tgid)) = (field(1), field(2), field(3))
                else {
                    return;
                };
                // A new thread shares its creator's tgid: only new processes count.
                if child_pid != child_tgid {
                    if self.lineage.contains(&child_tgid) {
                        *self.threads.entry(child_tgid).or_insert(0) += 1;
                    }
                    return;
                }
                let ours = self.lineage.contains(&parent_tgid)
                    || (parent_tgid == self.self_pid && !take_own_fork(child_tgid));
                if !ours {
                    // A stranger under an id the tree had: its exit record is not the tree's.
                    if let Some((recent, marked)) = self.exits.as_mut() {
                        recent.remove(&child_tgid);
                        marked.remove(&child_tgid);
                    }
                    return;
                }
                if self.lineage.insert(child_tgid) {
                    self.forked += 1;
                    self.peak = self.peak.max(self.lineage.len());
                    if let Some(n) = self.newborns.as_mut() {
                        n.push(child_tgid);
                    }
                }
            }
            Some(PROC_EVENT_EXEC) => {
                if let Some(tgid) = field(1) {
                    // An exec leaves one thread, the leader, whichever thread called it: a
                    // non-leader's exec ends the old leader first, an exit event for the
                    // process's own id that the thread count kept from ending the process.
                    self.threads.remove(&tgid);
                    self.leader_dead.remove(&tgid);
                }
            }
            Some(PROC_EVENT_EXIT) => {
                let (Some(pid), Some(tgid)) = (field(0), field(1)) else { return };
                if pid != tgid {
                    let Some(n) = self.threads.get_mut(&tgid) else { return };
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.threads.remove(&tgid);
                        if self.leader_dead.remove(&tgid) {
                            self.gone(tgid); // the last thread of a leaderless process
                        }
                    }
                } else if self.threads.contains_key(&tgid) {
                    self.leader_dead.insert(tgid);
                } else {
                    self.gone(tgid);
                }
            }
            _ => {}
        }
    }

    /// The last thread of `tgid` exited.
    fn gone(&mut self, tgid: i32) {
        if self.lineage.remove(&tgid) {
            if let Some((recent, _)) = self.exits.as_mut() {
                recent.insert(tgid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An own fork stands for one fork event: the same pid forked again later (a process of
    /// the job, once the helper is gone) is the job's. The list stays bounded without events.
    #[test]
    fn an_own_fork_is_taken_once_and_the_list_is_bounded() {
        // Pids above any pid_max, so no real fork of this test binary interferes.
        own_fork(1 << 30);
        assert!(take_own_fork(1 << 30));
        assert!(!take_own_fork(1 << 30));
        for p in 0..100 {
            own_fork((1 << 30) + 1 + p);
        }
        assert!(OWN_FORKS.lock().unwrap().len() <= OWN_FORKS_KEPT);
        assert!(take_own_fork((1 << 30) + 100));
    }
}
