//! The `/proc` readers: one process's figures from `/proc/PID`, and the kernel's children
//! lists. Both the tracker (what the tree is) and accounting (how much it used) read through
//! here, so neither has to reach into the other.
//!
//! Figures are read through the handle the tracker holds where there is one, so a recycled
//! pid can never be read. Every read may fail because the process just exited; callers skip
//! it then.
//!
//! `stat`, `io` and `smaps_rollup` are read into a stack buffer and only the needed fields are
//! parsed: this is the hot path of every sample and monitor tick, and the general parsers of
//! the `procfs` crate cost 1.5 to 2 times as much here (see the README's benchmarks).

use procfs::process::Process;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::ffi::CStr;
use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// Storage-level and character-level I/O, as `/proc/PID/io` counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoSum {
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub rchar: u64,
    pub wchar: u64,
}

impl IoSum {
    pub fn from_io(io: &procfs::process::Io) -> IoSum {
        IoSum { read_bytes: io.read_bytes, write_bytes: io.write_bytes, rchar: io.rchar, wchar: io.wchar }
    }

    pub fn add(&mut self, o: IoSum) {
        self.read_bytes += o.read_bytes;
        self.write_bytes += o.write_bytes;
        self.rchar += o.rchar;
        self.wchar += o.wchar;
    }

    /// Each field's larger figure: of two counts that each may miss something, the fuller.
    pub fn max(self, o: IoSum) -> IoSum {
        IoSum {
            read_bytes: self.read_bytes.max(o.read_bytes),
            write_bytes: self.write_bytes.max(o.write_bytes),
            rchar: self.rchar.max(o.rchar),
            wchar: self.wchar.max(o.wchar),
        }
    }

    pub fn minus(self, o: IoSum) -> IoSum {
        IoSum {
            read_bytes: self.read_bytes.saturating_sub(o.read_bytes),
            write_bytes: self.write_bytes.saturating_sub(o.write_bytes),
            rchar: self.rchar.saturating_sub(o.rchar),
            wchar: self.wchar.saturating_sub(o.wchar),
        }
    }
}

/// Reads `/proc/PID/NAME` whole into `buf`, with no allocation: open, read, close. For a pid
/// that is pinned (a tracee, or a zombie not yet waited for), where no handle is held.
pub fn read_pid<'a>(pid: i32, name: &str, buf: &'a mut [u8]) -> Option<&'a str> {
    let mut path = [0u8; 64];
    let mut w = &mut path[..];
    write!(w, "/proc/{pid}/{name}\0").ok()?;
    let path = CStr::from_bytes_until_nul(&path).ok()?;
    read_pid_file(path, buf)
}

/// Reads a small /proc file whole into `buf`: open, read, close; usable before `main` and in
/// the fault handler: rustix makes the system calls directly, with no allocation and no lock,
/// and the descriptor is closed with close(2), so this is async-signal-safe.
pub fn read_pid_file<'a>(path: &CStr, buf: &'a mut [u8]) -> Option<&'a str> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut len = 0;
    loop {
        let room = buf.len() - len;
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            // proc's seq files hand over a whole record per read: a short read is the end,
            // which saves a syscall on the exit path.
            Ok(n) if n < room => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
        if len == buf.len() {
            return None;
        }
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// The fields of `/proc/PID/stat` that decide whether an exiting process is auto-reaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReapStat {
    pub state: char,
    pub ppid: i32,
    /// Ignored signals, bit N-1 for signal N.
    pub sigignore: u64,
    /// The signal its parent gets at its exit; -1 for a thread.
    pub exit_signal: i32,
    /// What the kernel adds to when this process reaps a child: its reaped children's page
    /// faults (`cminflt` + `cmajflt`) and clock ticks (`cutime` + `cstime`), summed.
    pub reaped: u64,
}

pub fn reap_stat(pid: i32) -> Option<ReapStat> {
    let mut buf = [0u8; 1024];
    parse_reap_stat(read_pid(pid, "stat", &mut buf)?)
}

pub fn parse_reap_stat(text: &str) -> Option<ReapStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    // Field numbers of proc(5) minus 3: state is field 3. Each `nth` skips the fields between.
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let mut count = |skip: usize| f.nth(skip)?.parse::<i64>().ok().map(|v| v.max(0) as u64);
    let reaped = count(6)? // field 11, cminflt
        + count(1)? // field 13, cmajflt
        + count(2)? // field 16, cutime
        + count(0)?; // field 17, cstime
    let sigignore = f.nth(15)?.parse().ok()?; // field 33
    let exit_signal = f.nth(4)?.parse().ok()?; // field 38
    Some(ReapStat { state, ppid, sigignore, exit_signal, reaped })
}

/// `stat` re-read through a kept fd: one `pread`, for a parent met at every exit of its children.
pub fn reap_stat_at(fd: BorrowedFd) -> Option<ReapStat> {
    let mut buf = [0u8; 1024];
    let n = rustix::io::pread(fd, &mut buf[..], 0).ok().filter(|&n| n > 0)?;
    parse_reap_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// Opens `/proc/PID/stat` to keep; only for a pid that is pinned.
pub fn open_stat(pid: i32) -> Option<OwnedFd> {
    rustix::fs::open(format!("/proc/{pid}/stat"), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()
}

pub fn io_of_pid(pid: i32) -> Option<IoSum> {
    let mut buf = [0u8; 512];
    parse_io(read_pid(pid, "io", &mut buf)?)
}

/// Reads a small /proc file whole; None if the process is gone or it does not fit.
fn read<'a>(p: &Process, name: &str, buf: &'a mut [u8]) -> Option<&'a str> {
    let mut f = p.open_relative(name).ok()?;
    let mut len = 0;
    loop {
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
        if len == buf.len() {
            return None;
        }
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// The fields of `/proc/PID/stat` accounting uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stat {
    pub ppid: i32,
    /// utime + cutime, in clock ticks: its own CPU and that of the children it reaped.
    pub user_ticks: u64,
    /// stime + cstime, in clock ticks.
    pub system_ticks: u64,
    /// utime alone: its own threads', live and exited.
    pub own_user_ticks: u64,
    pub own_system_ticks: u64,
    /// Dead, not yet reaped (or its leader thread is, with other threads still running).
    pub zombie: bool,
    pub threads: u64,
    pub vsize: u64,
    pub rss_pages: u64,
    /// Minor plus major page faults of the whole process. Every page a fault maps counts here,
    /// copy-on-write breaks included, which move PSS without moving the resident count.
    pub faults: u64,
    /// Whether it ignores SIGCHLD: its children are then auto-reaped.
    pub ignores_sigchld: bool,
}

pub fn stat(p: &Process) -> Option<Stat> {
    let mut buf = [0u8; 1024];
    parse_stat(read(p, "stat", &mut buf)?)
}

/// Parses a `stat` line. The command name may hold spaces and parentheses, so fields are
/// counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).map(|v| v.max(0) as u64);
    // Field numbers of proc(5) minus 3: state is field 3.
    Some(Stat {
        ppid: n(1)? as i32,
        user_ticks: n(11)? + n(13)?,
        system_ticks: n(12)? + n(14)?,
        own_user_ticks: n(11)?,
        own_system_ticks: n(12)?,
        zombie: f.first() == Some(&"Z"),
        threads: n(17)?,
        vsize: n(20)?,
        rss_pages: n(21)?,
        faults: n(7)? + n(9)?,
        // Field 33, a 64-bit mask: it may not fit an i64.
        ignores_sigchld: f.get(30)?.parse::<u64>().ok()? & (1 << (libc::SIGCHLD - 1)) != 0,
    })
}

pub fn io(p: &Process) -> Option<IoSum> {
    let mut buf = [0u8; 512];
    parse_io(read(p, "io", &mut buf)?)
}

pub fn parse_io(text: &str) -> Option<IoSum> {
    let mut io = IoSum::default();
    for line in text.lines() {
        let (key, value) = line.split_once(':')?;
        let value: u64 = value.trim().parse().ok()?;
        match key {
            "rchar" => io.rchar = value,
            "wchar" => io.wchar = value,
            "read_bytes" => io.read_bytes = value,
            "write_bytes" => io.write_bytes = value,
            _ => {}
        }
    }
    Some(io)
}

/// PSS, swapped-out bytes and the shmem part of PSS (`Pss_Shmem`, Linux 5.8; 0 before) from
/// `smaps_rollup`. PSS divides each shared page among the processes mapping it, so the sum
/// over a tree counts shared memory once.
pub fn pss(p: &Process) -> Option<(u64, u64, u64)> {
    let mut buf = [0u8; 4096];
    parse_pss(read(p, "smaps_rollup", &mut buf)?)
}

pub fn parse_pss(text: &str) -> Option<(u64, u64, u64)> {
    let kb = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    Some((kb("Pss:")?, kb("Swap:").unwrap_or(0), kb("Pss_Shmem:").unwrap_or(0)))
}

/// One file as `stat` sees it: which file, and the bytes it has allocated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub bytes: u64,
    pub regular: bool,
}

/// A process's `/proc/PID/fd`, opened through the tracker's handle (never a recycled pid).
/// Its entries are magic links: `stat` through one follows it to the open file itself.
pub struct FdDir(nix::dir::Dir);

impl FdDir {
    pub fn open(p: &Process) -> Option<FdDir> {
        let f = p.open_relative("fd").ok()?;
        nix::dir::Dir::from_fd(std::os::fd::OwnedFd::from(f)).ok().map(FdDir)
    }

    /// The descriptor numbers open now.
    pub fn list(&mut self) -> Vec<i32> {
        self.0.iter().filter_map(|e| e.ok()?.file_name().to_str().ok()?.parse().ok()).collect()
    }

    /// The file open at descriptor `fd`: allocated bytes are `st_blocks` × 512, so a sparse
    /// file counts only what it holds.
    pub fn stat(&self, fd: i32) -> Option<FileId> {
        let st =
            nix::sys::stat::fstatat(&self.0, fd.to_string().as_str(), nix::fcntl::AtFlags::empty()).ok()?;
        Some(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
            bytes: (st.st_blocks.max(0) as u64).saturating_mul(512),
            regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
        })
    }

    /// Whether the file at descriptor `fd` lives on a filesystem whose pages are memory:
    /// tmpfs (`/dev/shm`, memfds, shared anonymous memory), hugetlbfs, ramfs.
    pub fn in_memory_fs(&self, fd: i32) -> bool {
        use nix::sys::statfs::{fstatfs, FsType, HUGETLBFS_MAGIC, TMPFS_MAGIC};
        /// `linux/magic.h`; libc has no name for it.
        const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;
        let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
        let Ok(file) =
            nix::fcntl::openat(&self.0, fd.to_string().as_str(), flags, nix::sys::stat::Mode::empty())
        else {
            return false;
        };
        fstatfs(&file).is_ok_and(|s| {
            let t = s.filesystem_type();
            t == TMPFS_MAGIC || t == HUGETLBFS_MAGIC || t == FsType(RAMFS_MAGIC)
        })
    }
}

pub fn open_files(p: &Process) -> u64 {
    p.fd_count().map(|n| n as u64).unwrap_or(0)
}

/// The parent's SIGCHLD disposition: ignored means its children are reaped by the kernel.
pub fn ignores_sigchld(p: &Process) -> bool {
    p.status().is_ok_and(|s| s.sigign & (1 << (libc::SIGCHLD - 1)) != 0)
}

/// The children of every thread of the process (`/proc/PID/task/TID/children`). Empty when it
/// is gone.
///
/// The only discovery source in subreaper mode, and the backstop in ptrace mode for
/// `clone(CLONE_UNTRACED)`. The lists are only reliable while the parent is stopped, so callers
/// repeat the walk (on SIGCHLD, on every tick, and until a signal pass finds nothing new).
pub fn listed_children(p: &Process) -> Vec<i32> {
    // The task directory's link count is 2 + its thread count: most processes have one
    // thread, whose list is read directly instead of walking the directory.
    let threads = p.open_relative("task").and_then(|f| Ok(f.metadata()?.nlink())).unwrap_or(0);
    if threads == 3 {
        let pid = p.pid();
        let mut list = String::new();
        return match p.open_relative(format!("task/{pid}/children")).map(|mut f| f.read_to_string(&mut list))
        {
            Ok(Ok(_)) => list.split_ascii_whitespace().filter_map(|c| c.parse().ok()).collect(),
            _ => Vec::new(),
        };
    }
    let Ok(tasks) = p.tasks() else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|task| task.children().unwrap_or_default())
        .filter_map(|c| i32::try_from(c).ok())
        .collect()
}

/// The thread ids of `pid`.
pub fn threads(pid: i32) -> Vec<i32> {
    let Ok(tasks) = Process::new(pid).and_then(|p| p.tasks()) else {
        return Vec::new();
    };
    tasks.flatten().map(|t| t.tid).collect()
}

/// The parent pid of `pid` as `/proc/PID/stat` says now.
pub fn parent_of(pid: i32) -> Option<i32> {
    Process::new(pid).and_then(|p| p.stat()).ok().map(|s| s.ppid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_command_name() {
        let line = "42 (a) b (c) R 7 42 42 0 -1 4194304 100 0 5 0 300 40 2 1 20 0 3 0 12345 8192000 512 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = parse_stat(line).unwrap();
        assert_eq!((s.ppid, s.user_ticks, s.system_ticks), (7, 302, 41));
        assert_eq!((s.threads, s.vsize, s.rss_pages, s.faults), (3, 8192000, 512, 105));
        assert_eq!((s.own_user_ticks, s.own_system_ticks, s.zombie), (300, 40, false));
        assert!(parse_stat("42 (x) R 1 2").is_none());
        let r = parse_reap_stat(line).unwrap();
        assert_eq!(r, ReapStat { state: 'R', ppid: 7, sigignore: 0, exit_signal: 17, reaped: 3 });
        let thread = "9 (t) Z 7 42 42 0 -1 4194304 100 0 5 0 300 40 2 1 20 0 3 0 12345 8192000 512 18446744073709551615 1 1 0 0 0 0 0 65536 0 0 0 0 -1 1 0 0 0 0 0";
        assert!(parse_stat(thread).unwrap().zombie);
        let r = parse_reap_stat(thread).unwrap();
        assert_eq!(r, ReapStat { state: 'Z', ppid: 7, sigignore: 65536, exit_signal: -1, reaped: 3 });
    }

    #[test]
    fn io_and_pss() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some(IoSum { read_bytes: 4096, write_bytes: 8192, rchar: 10, wchar: 20 }));
        let rollup = "00400000-7ffd [rollup]\nRss:                1000 kB\nPss:                 250 kB\nPss_Anon:  1 kB\nSwap:                  4 kB\n";
        assert_eq!(parse_pss(rollup), Some((250 * 1024, 4 * 1024, 0)));
        let rollup = "Pss:   300 kB\nPss_Shmem:   100 kB\n";
        assert_eq!(parse_pss(rollup), Some((300 * 1024, 0, 100 * 1024)));
    }
}
