//! Shared memory the tree holds through its descriptors: memfds and files on tmpfs
//! (`/dev/shm`), hugetlbfs or ramfs. Their pages are no process's until one maps them, so
//! PSS does not see a memfd written with `write(2)` and never mapped, nor a `/dev/shm` file
//! kept open; without a memory cgroup nothing else would.
//!
//! The figure is the bytes allocated (`st_blocks`) by each distinct file (device and inode)
//! open in any member, counted once however many descriptors and processes hold it. Mapped
//! pages of such files are in PSS too (its `Pss_Shmem` part), so the memory figure adds only
//! what PSS cannot have counted: `PSS + max(0, held − Σ Pss_Shmem)`. That never counts a page
//! twice; it counts too little only where the tree maps shared memory it holds through no
//! descriptor (shared anonymous or System V memory, a tmpfs file closed after `mmap`) while
//! also holding files it does not map.
//!
//! Cost: one `stat` of `/proc/PID/fd` per member and tick (its size is the number of open
//! descriptors, Linux 6.2). The descriptors are listed, and each one's file looked at, only
//! when that number changed, and otherwise every [`RELIST`] ticks per member (spread over the
//! ticks), which catches a descriptor replaced in place (`dup2` over an open one). Only the
//! shmem files found are `stat`ed on every tick, to follow their growth.

use crate::sys::procfs::FdDir;
use procfs::process::Process;
use std::collections::{HashMap, HashSet};

/// Ticks between two listings of a member's descriptors when their number did not change.
const RELIST: u64 = 5;

struct Member {
    /// The number of open descriptors at the last listing.
    count: Option<u64>,
    /// The descriptor directory, kept open only while it holds shmem files.
    dir: Option<FdDir>,
    /// Descriptors that were shmem files at the last listing.
    shmem: Vec<i32>,
}

#[derive(Default)]
pub struct FdShmem {
    members: HashMap<i32, Member>,
    /// `st_dev` → whether that filesystem's pages are memory (asked once per device).
    memory_fs: HashMap<u64, bool>,
    tick: u64,
}

impl FdShmem {
    /// Bytes of shmem files held open by the tree now, each file once.
    pub fn held<'a>(&mut self, procs: impl Iterator<Item = (i32, &'a Process)>) -> u64 {
        self.tick += 1;
        let mut files: HashMap<(u64, u64), u64> = HashMap::new();
        let mut live = HashSet::new();
        for (pid, proc) in procs {
            live.insert(pid);
            let count = proc.fd_count().ok().map(|n| n as u64);
            let m = self.members.entry(pid).or_insert(Member { count: None, dir: None, shmem: Vec::new() });
            let due = (self.tick + pid as u64).is_multiple_of(RELIST);
            if count.is_none() || count != m.count || due {
                relist(m, proc, &mut self.memory_fs);
                m.count = count;
            }
            let Some(dir) = &m.dir else { continue };
            for &fd in &m.shmem {
                match dir.stat(fd) {
                    Some(f) if f.regular && self.memory_fs.get(&f.dev) == Some(&true) => {
                        files.insert((f.dev, f.ino), f.bytes);
                    }
                    _ => m.count = None, // closed or replaced: list again next tick
                }
            }
        }
        self.members.retain(|pid, _| live.contains(pid));
        files.values().sum()
    }
}

/// Lists a member's descriptors and keeps those that are shmem files.
fn relist(m: &mut Member, proc: &Process, memory_fs: &mut HashMap<u64, bool>) {
    m.shmem.clear();
    let mut dir = match m.dir.take() {
        Some(d) => d,
        None => match FdDir::open(proc) {
            Some(d) => d,
            None => return,
        },
    };
    for fd in dir.list() {
        let Some(f) = dir.stat(fd) else { continue };
        if !f.regular {
            continue;
        }
        let in_memory = *memory_fs.entry(f.dev).or_insert_with(|| dir.in_memory_fs(fd));
        if in_memory {
            m.shmem.push(fd);
        }
    }
    if !m.shmem.is_empty() {
        m.dir = Some(dir);
    }
}
