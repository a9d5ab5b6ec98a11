//! The box's own cgroup, where the kernel lets proc_box make one (as root, or in a delegated
//! cgroup v2 subtree). Each mechanism comes from where it exists: on a hybrid host the v2
//! unified hierarchy gives `cgroup.kill` and `cpu.stat` even without controllers, and v1
//! hierarchies give whatever controllers they carry.
//!
//! The box's directory is `proc_box.<pid>` beside proc_box's own cgroup in every hierarchy used.
//! The job joins all of them before exec, so not one instruction runs outside.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--cgroup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Policy {
    /// use a cgroup where one can be made; otherwise run without, silently
    Auto,
    /// never make one
    Off,
    /// fail with status 125 if none can be made
    Required,
}

/// v1 controllers proc_box uses, when mounted.
const V1: &[&str] = &["cpuacct", "memory"];

/// The box's cgroup directories.
#[derive(Debug)]
pub struct Cgroup {
    /// The unified (v2) directory, if any.
    v2: Option<PathBuf>,
    /// v1 directories by controller.
    v1: Vec<(&'static str, PathBuf)>,
}

/// Where each hierarchy is mounted, and proc_box's own place in it.
struct Hierarchy {
    mount: PathBuf,
    /// `None` for v2; the controllers of a v1 hierarchy otherwise.
    controllers: Option<Vec<String>>,
    own: String,
}

fn hierarchies() -> Vec<Hierarchy> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let membership = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let own = |v2: bool, ctl: &[String]| -> Option<String> {
        membership.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, list, path) = (f.next()?, f.next()?, f.next()?);
            let matches = if v2 {
                id == "0" && list.is_empty()
            } else {
                list.split(',').any(|c| ctl.iter().any(|x| x == c))
            };
            matches.then(|| path.to_owned())
        })
    };
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mount = left.split(' ').nth(4).unwrap_or_default();
        let mut r = right.split(' ');
        let (fstype, opts) = (r.next().unwrap_or_default(), r.nth(1).unwrap_or_default());
        let (controllers, path) = match fstype {
            "cgroup2" => (None, own(true, &[])),
            "cgroup" => {
                let ctl: Vec<String> =
                    opts.split(',').filter(|o| V1.contains(o)).map(str::to_owned).collect();
                if ctl.is_empty() {
                    continue;
                }
                let path = own(false, &ctl);
                (Some(ctl), path)
            }
            _ => continue,
        };
        if let Some(own) = path {
            out.push(Hierarchy { mount: PathBuf::from(mount.replace("\\040", " ")), controllers, own });
        }
    }
    out
}

impl Cgroup {
    /// Makes the box's cgroup in each hierarchy it needs. `Ok(None)`: none could be made (the
    /// reason is in the error of `Required`). Leftovers of dead boxes beside it are removed.
    ///
    /// Each directory costs start-up time (a memory group's most), so only what is used is
    /// made: the v2 one (members, `cgroup.kill`, `cpu.stat`); v1 `cpuacct` only without v2; v1
    /// `memory` for a memory ceiling and for the tree's high-water mark, which only the kernel
    /// sees exactly (a sampled sum misses what lives between two ticks).
    pub fn create(policy: Policy) -> Result<Option<Cgroup>, String> {
        if policy == Policy::Off {
            return Ok(None);
        }
        let name = own_name();
        let mut cg = Cgroup { v2: None, v1: Vec::new() };
        let mut why = Vec::new();
        let all = hierarchies();
        let has_v2 = all.iter().any(|h| h.controllers.is_none());
        let needed = |h: &Hierarchy| match &h.controllers {
            None => true,
            Some(ctl) => ctl.iter().any(|c| c == "memory" || (c == "cpuacct" && !has_v2)),
        };
        for h in all.into_iter().filter(needed) {
            let parent = h.mount.join(h.own.trim_start_matches('/'));
            sweep_stale(&parent);
            let dir = parent.join(&name);
            match create_own(&dir) {
                Ok(()) => {}
                Err(e) => {
                    why.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            }
            match h.controllers {
                None => cg.v2 = Some(dir),
                Some(ctl) => {
                    for c in V1.iter().filter(|c| ctl.iter().any(|x| x == *c)) {
                        cg.v1.push((c, dir.clone()));
                    }
                }
            }
        }
        if cg.v2.is_none() && cg.v1.is_empty() {
            let reason =
                if why.is_empty() { "no cgroup hierarchy is mounted".to_owned() } else { why.join("; ") };
            return match policy {
                Policy::Required => Err(format!("--cgroup required: cannot make a cgroup ({reason})")),
                _ => {
                    crate::debug!("no cgroup: {reason}");
                    Ok(None)
                }
            };
        }
        Ok(Some(cg))
    }

    /// Every directory, v2 first.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut d: Vec<&Path> = self.v2.iter().map(PathBuf::as_path).collect();
        for (_, p) in &self.v1 {
            if !d.contains(&p.as_path()) {
                d.push(p);
            }
        }
        d
    }

    /// What the job needs to join the box: opened here, used between fork and exec.
    pub fn join(&self) -> io::Result<Join> {
        let open = |path: PathBuf, dir: bool| -> io::Result<OwnedFd> {
            let flags = if dir { libc::O_CLOEXEC | libc::O_DIRECTORY } else { libc::O_CLOEXEC };
            Ok(fs::OpenOptions::new().read(dir).write(!dir).custom_flags(flags).open(path)?.into())
        };
        let v1 = self.dirs().into_iter().filter(|d| Some(*d) != self.v2.as_deref());
        Ok(Join {
            dir: self.v2.as_ref().map(|d| open(d.clone(), true)).transpose()?,
            procs: self.v2.as_ref().map(|d| open(d.join("cgroup.procs"), false)).transpose()?,
            tasks: v1.map(|d| open(d.join("tasks"), false)).collect::<io::Result<_>>()?,
        })
    }

    /// The processes in the box's cgroup (any one directory holds them all).
    pub fn procs(&self) -> Vec<i32> {
        let Some(dir) = self.dirs().into_iter().next() else { return Vec::new() };
        fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The kernel's CPU counter for everything that ever ran in the box: (user, system).
    pub fn cpu(&self) -> Option<(Duration, Duration)> {
        if let Some(v2) = &self.v2 {
            let text = fs::read_to_string(v2.join("cpu.stat")).ok()?;
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
                    .map(Duration::from_micros)
            };
            return Some((field("user_usec ")?, field("system_usec ")?));
        }
        let dir = self.v1_dir("cpuacct")?;
        let ns = |f: &str| {
            fs::read_to_string(dir.join(f)).ok()?.trim().parse::<u64>().ok().map(Duration::from_nanos)
        };
        Some((ns("cpuacct.usage_user")?, ns("cpuacct.usage_sys")?))
    }

    /// Sets a hard memory ceiling where a memory controller is there: v2 `memory.max` if the
    /// box's group has the controller, else v1 `memory.limit_in_bytes`. The kernel then kills
    /// inside the box (the OOM killer) the moment the tree passes it, between two monitor ticks.
    /// Returns whether one was set.
    pub fn set_memory_max(&self, bytes: u64) -> bool {
        if let Some(v2) = &self.v2 {
            let has = fs::read_to_string(v2.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"));
            if has && fs::write(v2.join("memory.max"), bytes.to_string()).is_ok() {
                return true;
            }
        }
        self.v1_dir("memory")
            .is_some_and(|d| fs::write(d.join("memory.limit_in_bytes"), bytes.to_string()).is_ok())
    }

    /// How many processes the kernel's OOM killer ended inside the box.
    pub fn oom_kills(&self) -> u64 {
        let count = |path: PathBuf| {
            fs::read_to_string(path)
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        };
        let v2 = self.v2.as_ref().and_then(|d| count(d.join("memory.events")));
        let v1 = self.v1_dir("memory").and_then(|d| count(d.join("memory.oom_control")));
        v2.unwrap_or(0).max(v1.unwrap_or(0))
    }

    /// The kernel's own figures for the box, for the summary's cross-check: its CPU counter
    /// and the peak memory charged to it (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`).
    pub fn report(&self) -> serde_json::Value {
        let read = |p: PathBuf| fs::read_to_string(p).ok().and_then(|t| t.trim().parse::<u64>().ok());
        let peak = self
            .v2
            .as_ref()
            .and_then(|d| read(d.join("memory.peak")))
            .or_else(|| self.v1_dir("memory").and_then(|d| read(d.join("memory.max_usage_in_bytes"))));
        let cpu = self.cpu();
        serde_json::json!({
            "cpu_user_seconds": cpu.map(|c| c.0.as_secs_f64()),
            "cpu_system_seconds": cpu.map(|c| c.1.as_secs_f64()),
            "memory_peak_bytes": peak,
            "oom_kills": self.oom_kills(),
        })
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1.iter().find(|(c, _)| *c == controller).map(|(_, d)| d.as_path())
    }

    /// Kills everything in the box at once (v2 `cgroup.kill`). False where the kernel has none.
    pub fn kill(&self) -> bool {
        let Some(v2) = &self.v2 else { return false };
        fs::write(v2.join("cgroup.kill"), "1").is_ok()
    }

    /// Removes the directories; an `EBUSY` (a process not yet gone) is retried briefly.
    pub fn remove(&self) {
        for dir in self.dirs() {
            for attempt in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 49 => {
                        crate::warn!("cannot remove the cgroup {}: {e}", dir.display())
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

/// The pid namespace proc_box runs in (the inode of `/proc/self/ns/pid`); 0 where unknown.
fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

/// `proc_box.<pid namespace>.<pid>`: a pid alone is unique only within one pid namespace, and
/// boxes in two containers under one parent cgroup would collide on it.
fn own_name() -> String {
    format!("proc_box.{}.{}", pid_namespace(), std::process::id())
}

/// Makes the box's directory. One of the same name can only be stale: no other live box has
/// this pid in this namespace. It was left by a SIGKILLed box whose namespace (and number)
/// was since reused; removed if it holds no process, and made anew.
fn create_own(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && fs::remove_dir(dir).is_ok() => {
            crate::debug!("removed a stale cgroup of the same name {}", dir.display());
            fs::create_dir(dir)
        }
        r => r,
    }
}

/// How old an empty directory of a box in another pid namespace must be before it is taken as
/// stale: its owner cannot be looked up from here, and a box starting there makes its
/// directory a moment before its job joins it.
const FOREIGN_STALE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a directory name of a box (`proc_box.<ns>.<pid>`, or the older `proc_box.<pid>`)
/// belongs to a box that is gone, as far as can be told from here.
fn owner_gone(name: &str, own_ns: u64, age: Option<std::time::Duration>) -> bool {
    let Some(rest) = name.strip_prefix("proc_box.") else { return false };
    let (ns, pid) = match rest.split_once('.') {
        Some((ns, pid)) => (ns.parse::<u64>().ok(), pid.parse::<i32>().ok()),
        None => (Some(own_ns), rest.parse::<i32>().ok()),
    };
    match (ns, pid) {
        // In our namespace the pid says: a live one may still run (or was reused: harmless).
        (Some(ns), Some(pid)) if ns == own_ns => !Path::new(&format!("/proc/{pid}")).exists(),
        (Some(_), Some(_)) => age.is_some_and(|a| a >= FOREIGN_STALE),
        _ => false,
    }
}

/// Removes box directories under `parent` whose proc_box is gone and that hold no process:
/// what a SIGKILLed proc_box left when its watcher could not finish (or, as pid 1 of a pid
/// namespace, had none). `rmdir` itself refuses a directory that still holds a process.
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    let own_ns = pid_namespace();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let age = e.metadata().ok().and_then(|m| m.modified().ok()).and_then(|t| t.elapsed().ok());
        if !owner_gone(name, own_ns, age) {
            continue;
        }
        let empty = fs::read_to_string(e.path().join("cgroup.procs")).is_ok_and(|p| p.trim().is_empty());
        if empty && fs::remove_dir(e.path()).is_ok() {
            crate::debug!("removed a stale cgroup {}", e.path().display());
        }
    }
}

/// The box's cgroup, open for the job to join before exec. Moving a whole process
/// (`cgroup.procs`) takes the kernel's global threadgroup lock, whose first writer waits for an
/// RCU grace period: 5 to 14 ms of every start here. So the job is born in the v2 directory
/// (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7), and moves itself into v1 ones through
/// `tasks`: writing `0` there moves the writing thread alone, which needs no global lock, and
/// the forked child has a single thread.
pub struct Join {
    /// The v2 directory, to be born in.
    pub dir: Option<OwnedFd>,
    /// Its `cgroup.procs`: for a kernel without `CLONE_INTO_CGROUP`, and for moving a child
    /// by pid.
    pub procs: Option<OwnedFd>,
    /// `tasks` of each v1 directory.
    pub tasks: Vec<OwnedFd>,
}

impl Join {
    /// Moves the process `pid` (single-threaded, not yet started) into every directory.
    pub fn move_pid(self, pid: i32) -> io::Result<()> {
        use std::io::Write;
        self.procs.into_iter().chain(self.tasks).try_for_each(|fd| write!(fs::File::from(fd), "{pid}"))
    }

    /// Called by the job's process between fork and exec (async-signal-safe): writes `0` into
    /// every file, `cgroup.procs` only if the process was not born in the v2 directory.
    pub fn join_in_child(&self, born_in_v2: bool) -> bool {
        let procs = self.procs.as_ref().filter(|_| !born_in_v2);
        procs.into_iter().chain(&self.tasks).all(|fd| {
            // SAFETY: write(2) of a 1-byte static buffer to a descriptor this Join owns.
            unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) == 1 }
        })
    }
}

/// The watcher: a separate process (proc_box re-executed) that holds a pidfd of proc_box and,
/// when proc_box dies, kills everything in the box's cgroup and removes it. So a SIGKILLed
/// proc_box leaves nothing behind, in either tracking mode.
pub mod watcher {
    use super::*;

    /// The hidden first argument that makes proc_box a watcher.
    pub const ARG: &str = "--internal-cgroup-watcher";

    /// Starts the watcher, outside the box and not a child of proc_box (a double fork before
    /// proc_box becomes a subreaper), so it is never part of the tree. proc_box waits only for
    /// the short-lived middle process, not for the watcher's exec.
    pub fn start(cg: &Cgroup) -> io::Result<()> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let me = crate::sys::pidfd::PidFd::open(std::process::id() as i32)?;
        let fd = me.as_raw_fd();
        let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let exe = cstr(std::env::current_exe()?.as_os_str().as_bytes())?;
        let mut args = vec![exe.clone(), cstr(ARG.as_bytes())?, cstr(fd.to_string().as_bytes())?];
        for d in cg.dirs() {
            args.push(cstr(d.as_os_str().as_bytes())?);
        }
        let argv: Vec<*const libc::c_char> =
            args.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
        // No environment: the watcher needs none of the job's.
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        let null = c"/dev/null";
        // SAFETY: after fork only async-signal-safe calls on memory prepared before it.
        unsafe {
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {
                    if libc::fork() == 0 {
                        libc::setsid();
                        // No stdio: a watcher holding the caller's pipe open would hang its reader.
                        let n = libc::open(null.as_ptr(), libc::O_RDWR);
                        for target in 0..3 {
                            libc::dup2(n, target);
                        }
                        libc::fcntl(fd, libc::F_SETFD, 0); // the pidfd survives exec
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                        libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    }
                    libc::_exit(0);
                }
                middle => {
                    crate::tracker::connector::own_fork(middle);
                    let mut status = 0;
                    while libc::waitpid(middle, &mut status, 0) < 0
                        && *libc::__errno_location() == libc::EINTR
                    {}
                }
            }
        }
        Ok(())
    }

    /// The watcher's life: wait for proc_box to end, then empty and remove the cgroup.
    pub fn run(args: &[std::ffi::OsString]) -> i32 {
        let Some(fd) = args.first().and_then(|a| a.to_str()?.parse::<i32>().ok()) else { return 2 };
        let dirs: Vec<PathBuf> = args[1..].iter().map(PathBuf::from).collect();
        crate::sys::become_helper(fd);
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd; -1 waits for proc_box's end however long the job runs.
        while unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {}
        let cg = Cgroup {
            v2: dirs.first().filter(|d| d.join("cgroup.kill").exists()).cloned(),
            v1: dirs.iter().map(|d| ("", d.clone())).collect(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = cg.procs();
            if left.is_empty() && cg.dirs().iter().all(|d| !d.exists() || procs_of(d).is_empty()) {
                break;
            }
            if !cg.kill() {
                for pid in left {
                    if let Ok(p) = crate::sys::pidfd::PidFd::open(pid) {
                        let _ = p.signal(crate::signals::Sig::KILL);
                    }
                }
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        cg.remove();
        0
    }

    fn procs_of(d: &Path) -> Vec<i32> {
        fs::read_to_string(d.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stale_names_across_pid_namespaces() {
        let own = pid_namespace();
        let me = std::process::id();
        let young = Some(Duration::from_secs(1));
        let old = Some(FOREIGN_STALE);
        // Our namespace: the pid decides, whatever the age.
        assert!(!owner_gone(&format!("proc_box.{own}.{me}"), own, old));
        assert!(owner_gone(&format!("proc_box.{own}.{}", i32::MAX), own, young));
        assert!(!owner_gone(&format!("proc_box.{me}"), own, old), "the older name, ours");
        // Another namespace: only an old empty one is taken.
        assert!(!owner_gone(&format!("proc_box.{}.1", own + 1), own, young));
        assert!(owner_gone(&format!("proc_box.{}.1", own + 1), own, old));
        for other in ["proc_box.", "proc_box.x.1", "other.1", "proc_box.1.y"] {
            assert!(!owner_gone(other, own, old), "{other}");
        }
    }
}
