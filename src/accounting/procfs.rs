//! Reads one process's figures from `/proc/PID` (through the handle the tracker holds, so a
//! recycled pid can never be read). Every read may fail because the process just exited;
//! callers skip it then.

use procfs::process::{Io, Process};

/// The figures a sample needs from one live process.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// utime + cutime, in clock ticks: its own CPU and that of the children it reaped.
    pub user_ticks: u64,
    /// stime + cstime, in clock ticks.
    pub system_ticks: u64,
    pub threads: u64,
    pub rss_bytes: u64,
    pub vms_bytes: u64,
    pub io: Option<Io>,
    pub open_files: u64,
}

pub fn figures(p: &Process, page: u64) -> Option<Figures> {
    let stat = p.stat().ok()?;
    Some(Figures {
        user_ticks: stat.utime + stat.cutime.max(0) as u64,
        system_ticks: stat.stime + stat.cstime.max(0) as u64,
        threads: stat.num_threads.max(0) as u64,
        rss_bytes: stat.rss * page,
        vms_bytes: stat.vsize,
        io: p.io().ok(),
        open_files: p.fd_count().map(|n| n as u64).unwrap_or(0),
    })
}

/// `statm`'s resident and shared pages: cheap, and the key that tells whether PSS may have
/// changed since it was last read.
pub fn resident(p: &Process) -> Option<(u64, u64)> {
    p.statm().ok().map(|m| (m.resident, m.shared))
}

/// PSS and swapped-out bytes from `smaps_rollup`. PSS divides each shared page among the
/// processes mapping it, so the sum over a tree counts shared memory once.
pub fn pss(p: &Process) -> Option<(u64, u64)> {
    let rollup = p.smaps_rollup().ok()?;
    let ext = &rollup.memory_map_rollup.0.first()?.extension.map;
    Some((*ext.get("Pss")?, ext.get("Swap").copied().unwrap_or(0)))
}
