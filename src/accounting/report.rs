//! The `sample` and `summary` messages (fields fixed by the public interface), as serde types. The same objects go to
//! the local sinks and, later, to the broker.

use super::Totals;
use serde::Serialize;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SCHEMA: u32 = 1;

/// What every message of one box shares.
#[derive(Clone, Debug)]
pub struct Identity {
    pub box_id: String,
    pub hostname: String,
    pub user: Option<Value>,
    pub started: SystemTime,
    pub owner: super::origin::Owner,
    pub scheduler: super::origin::Scheduler,
}

impl Identity {
    /// Unique per message and stable across a resend, so consumers can drop duplicates.
    pub fn message_id(&self, kind: &str, seq: u64) -> String {
        let start = self.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
        format!("{}-{}-{start:x}-{kind}-{seq}", self.hostname, std::process::id())
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The fields every message starts with.
#[derive(Debug, Serialize)]
pub struct Header {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub schema: u32,
    pub message_id: String,
    pub box_id: String,
    pub hostname: String,
}

impl Identity {
    pub fn header(&self, kind: &'static str, seq: u64) -> Header {
        Header {
            kind,
            schema: SCHEMA,
            message_id: self.message_id(kind, seq),
            box_id: self.box_id.clone(),
            hostname: self.hostname.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Sample {
    #[serde(flatten)]
    pub header: Header,
    pub pid: i32,
    pub seq: u64,
    pub time: String,
    pub time_unix: f64,
    pub elapsed_seconds: f64,
    pub timer_elapsed_seconds: f64,
    pub state: &'static str,
    pub processes: usize,
    pub pids: Vec<i32>,
    pub threads: u64,
    pub processes_started: u64,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    pub cpu_percent: f64,
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
    pub vms_bytes: u64,
    pub swap_bytes: u64,
    /// Shmem files (memfds, tmpfs) the tree holds open, each file once.
    pub shmem_fd_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub io_rchar: u64,
    pub io_wchar: u64,
    pub open_files: u64,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub user: Option<Value>,
}

/// The highest figure each cumulative field of a sample has shown, so none ever shows less: a
/// consumer computing rates from differences depends on it. The tree total can dip for a
/// moment by what no source holds yet: a zombie between its tracer's wait and its parent's,
/// a live process's 10 ms ticks replaced by its reaper's truncated `cutime`, a process
/// moving its stdout file's offset back.
#[derive(Debug, Default)]
pub struct Floor {
    cpu_user: Duration,
    cpu_system: Duration,
    io: super::IoSum,
    started: u64,
    stdout: Option<u64>,
    stderr: Option<u64>,
}

impl Floor {
    /// Raises each cumulative figure to at least what an earlier sample showed.
    pub fn apply(
        &mut self,
        t: &mut Totals,
        started: &mut u64,
        stdout: &mut Option<u64>,
        stderr: &mut Option<u64>,
    ) {
        fn up<T: Ord + Copy>(floor: &mut T, v: &mut T) {
            *v = (*v).max(*floor);
            *floor = *v;
        }
        up(&mut self.cpu_user, &mut t.cpu_user);
        up(&mut self.cpu_system, &mut t.cpu_system);
        up(&mut self.io.read_bytes, &mut t.io.read_bytes);
        up(&mut self.io.write_bytes, &mut t.io.write_bytes);
        up(&mut self.io.rchar, &mut t.io.rchar);
        up(&mut self.io.wchar, &mut t.io.wchar);
        up(&mut self.started, started);
        // None (a terminal) stays None: there is nothing to count.
        for (floor, v) in [(&mut self.stdout, stdout), (&mut self.stderr, stderr)] {
            if let Some(v) = v {
                up(floor.get_or_insert(0), v);
            }
        }
    }
}

/// The live facts a sample needs besides the tree totals.
pub struct SampleContext<'a> {
    pub pid: i32,
    pub seq: u64,
    pub now: SystemTime,
    pub elapsed: Duration,
    pub timer_elapsed: Duration,
    pub state: &'static str,
    pub pids: Vec<i32>,
    pub processes_started: u64,
    pub cpu_percent: f64,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub identity: &'a Identity,
}

impl Sample {
    pub fn new(c: SampleContext, t: &Totals) -> Sample {
        Sample {
            header: c.identity.header("sample", c.seq),
            pid: c.pid,
            seq: c.seq,
            time: rfc3339(c.now),
            time_unix: unix(c.now),
            elapsed_seconds: secs(c.elapsed),
            timer_elapsed_seconds: secs(c.timer_elapsed),
            state: c.state,
            processes: c.pids.len(),
            pids: c.pids,
            threads: t.threads,
            processes_started: c.processes_started,
            cpu_user_seconds: secs(t.cpu_user),
            cpu_system_seconds: secs(t.cpu_system),
            cpu_percent: c.cpu_percent,
            rss_bytes: t.rss_bytes,
            pss_bytes: t.pss_bytes,
            vms_bytes: t.vms_bytes,
            swap_bytes: t.swap_bytes,
            shmem_fd_bytes: t.shmem_fd_bytes,
            io_read_bytes: t.io.read_bytes,
            io_write_bytes: t.io.write_bytes,
            io_rchar: t.io.rchar,
            io_wchar: t.io.wchar,
            open_files: t.open_files,
            stdout_bytes: c.stdout_bytes,
            stderr_bytes: c.stderr_bytes,
            user: c.identity.user.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ExitInfo {
    pub kind: &'static str,
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub header: Header,
    pub argv: Vec<String>,
    pub started_at: String,
    pub ended_at: String,
    pub wall_seconds: f64,
    pub exit_code: i32,
    pub exit: Option<ExitInfo>,
    pub reason: &'static str,
    pub cpu_user_seconds: f64,
    pub cpu_system_seconds: f64,
    /// Whether the CPU (and I/O) figures are exact for every process, whoever reaped it.
    pub cpu_exact: bool,
    /// Why not, where they are not.
    pub cpu_inexact_reason: Option<&'static str>,
    pub peak_rss_bytes: u64,
    pub peak_pss_bytes: u64,
    /// The most shmem (memfds, tmpfs files) the tree held open at once, each file once: memory
    /// no PSS shows unless mapped.
    pub peak_shmem_fd_bytes: u64,
    /// The highest figure `--memory-limit` counts: PSS plus the held shmem it does not map.
    pub peak_memory_bytes: u64,
    pub max_process_rss_bytes: u64,
    pub processes_started: u64,
    /// False where only the walks counted (subreaper mode without the events connector).
    pub processes_started_exact: bool,
    pub processes_peak: usize,
    pub leftover_killed: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub samples_emitted: u64,
    pub samples_dropped: u64,
    /// Every limit set, and what enforced it.
    pub limits: Value,
    /// The box's cgroup's own figures, where it had one (a cross-check; null otherwise).
    pub cgroup: Option<Value>,
    pub user: Option<Value>,
    /// Who ran proc_box: the real uid and its login name.
    pub owner: super::origin::Owner,
    /// The batch scheduler's job id, account, partition and user, from the job's environment.
    pub scheduler: super::origin::Scheduler,
}

impl Summary {
    /// The one human line for stderr.
    pub fn human_line(&self) -> String {
        let how = match &self.exit {
            Some(ExitInfo { code: Some(c), .. }) => format!("exited {c}"),
            Some(ExitInfo { signal: Some(s), .. }) => format!("killed by signal {s}"),
            _ => "did not run".to_owned(),
        };
        let reason = if self.reason == "exited" { String::new() } else { format!(" ({})", self.reason) };
        // A job shorter than one memory tick has no PSS reading: the kernel's high-water mark
        // of its largest process says more than a zero that means "not measured".
        let peak = match (self.peak_pss_bytes, self.max_process_rss_bytes) {
            (0, 0) => "peak not measured".to_owned(),
            (0, rss) => format!("peak {} (RSS of the largest process)", bytes(rss)),
            (pss, _) => format!("peak {} (PSS)", bytes(pss)),
        };
        format!(
            "{how}{reason} after {:.1}s · cpu {:.1}s user {:.1}s sys · {peak} · {} process{}",
            self.wall_seconds,
            self.cpu_user_seconds,
            self.cpu_system_seconds,
            self.processes_started,
            if self.processes_started == 1 { "" } else { "es" }
        )
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn message_ids_differ_by_kind_and_seq() {
        let id = Identity {
            box_id: "b".into(),
            hostname: "h".into(),
            user: None,
            started: SystemTime::now(),
            owner: super::super::origin::Owner::current(),
            scheduler: Default::default(),
        };
        assert_ne!(id.message_id("sample", 1), id.message_id("sample", 2));
        assert_ne!(id.message_id("sample", 1), id.message_id("summary", 1));
        assert_eq!(id.message_id("sample", 1), id.message_id("sample", 1));
    }

    #[test]
    fn floor_holds_every_cumulative_field() {
        let mut floor = Floor::default();
        let mut t = Totals { cpu_user: Duration::from_millis(220), ..Totals::default() };
        t.io.wchar = 10;
        let (mut started, mut out, mut err) = (3, Some(100), None);
        floor.apply(&mut t, &mut started, &mut out, &mut err);
        let mut t = Totals { cpu_user: Duration::from_millis(170), ..Totals::default() };
        let (mut started, mut out, mut err) = (2, Some(40), None);
        floor.apply(&mut t, &mut started, &mut out, &mut err);
        assert_eq!(
            (t.cpu_user, t.io.wchar, started, out, err),
            (Duration::from_millis(220), 10, 3, Some(100), None)
        );
    }
}
