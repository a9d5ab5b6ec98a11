//! The kernel's children lists (`/proc/PID/task/TID/children`).
//!
//! The only discovery source in subreaper mode, and the backstop in ptrace mode for
//! `clone(CLONE_UNTRACED)`. The lists are only reliable while the parent is stopped, so callers
//! repeat the walk (on SIGCHLD, on every tick, and until a signal pass finds nothing new).

use procfs::process::Process;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

/// The children of every thread of the process. Empty when it is gone.
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
