//! Tree-wide limits: what each one is, what it decides, and what enforces it.
//!
//! Checks are pure: the loop feeds in what the tracker and the accounting measured, and
//! passes what comes back to [`super::Policy::limit_exceeded`].

use super::Reason;
use crate::units::{parse_duration, parse_size};
use rustix::process::Resource;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The margin above `--memory-limit` past which the tree is killed at once instead of being
/// given its grace period: a tenth of the limit, at least 16 MiB.
pub fn memory_margin(limit: u64) -> u64 {
    (limit / 10).max(16 << 20)
}

/// How often memory is read while a memory limit is set, at the least.
pub const MEMORY_TICK: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// PSS of the whole tree, bytes.
    pub memory: Option<u64>,
    /// CPU of the whole tree, exited and auto-reaped descendants included.
    pub cpu: Option<Duration>,
    /// Live processes of the tree.
    pub pids: Option<usize>,
    /// Per-process limits set in the job before exec.
    pub rlimits: Vec<Rlimit>,
    /// The memory ceiling (limit plus margin) is also the cgroup's hard limit.
    pub memory_in_cgroup: bool,
    /// What holds stdout to `--stdoutlimit` (see `relay::Plan::enforced_by`); `None` when
    /// nothing can (a terminal), which is an error for an explicit limit and reported as
    /// `"enforced_by": null` for the default one.
    pub stdout_by: Option<&'static str>,
}

/// What one check found: the reason, and whether to kill at once.
pub type Passed = Option<(Reason, bool)>;

impl Limits {
    /// The hard ceiling: the limit plus its margin.
    pub fn memory_ceiling(&self) -> Option<u64> {
        self.memory.map(|b| b.saturating_add(memory_margin(b)))
    }

    pub fn memory(&self, pss: u64) -> Passed {
        let limit = self.memory?;
        (pss >= limit).then_some((Reason::LimitMemory, pss >= limit.saturating_add(memory_margin(limit))))
    }

    pub fn cpu(&self, used: Duration) -> Passed {
        (used >= self.cpu?).then_some((Reason::LimitCpu, false))
    }

    pub fn pids(&self, live: usize) -> Passed {
        (live > self.pids?).then_some((Reason::LimitPids, false))
    }

    /// The cgroup's OOM killer acted on the hard ceiling (the limit plus its margin): that was
    /// the memory limit, passed hard. Only where the ceiling is the cgroup's.
    pub fn oom(&self, oom_kills: u64) -> Passed {
        (self.memory_in_cgroup && oom_kills > 0).then_some((Reason::LimitMemory, true))
    }

    /// The summary's `limits` object: every limit set, with what enforces it. `pids_by` names
    /// what caps the process count: `ptrace` (a fork past it dies at its birth stop), `events`
    /// (the process events connector: killed at its fork event) or `monitor` (at a tick).
    pub fn describe(&self, pids_by: &str, stdout: u64) -> Value {
        let mut m = Map::new();
        let entry = |limit: Value, by: &str| json!({ "limit": limit, "enforced_by": by });
        if let Some(b) = self.memory {
            let by = if self.memory_in_cgroup { "monitor+cgroup" } else { "monitor" };
            // What each enforcer counts: the monitor, the tree's PSS and the shmem files it
            // holds open (memfds, tmpfs); the cgroup, every page charged to it, page cache and
            // tmpfs files no process holds any more included.
            let mut sees = vec!["pss", "shmem_fds"];
            if self.memory_in_cgroup {
                sees.push("cgroup_charge");
            }
            m.insert(
                "memory_bytes".into(),
                json!({ "limit": b, "kill_above": b.saturating_add(memory_margin(b)), "enforced_by": by,
                        "sees": sees }),
            );
        }
        if let Some(c) = self.cpu {
            m.insert("cpu_seconds".into(), entry(json!(c.as_secs_f64()), "monitor"));
        }
        if let Some(p) = self.pids {
            m.insert("processes".into(), entry(json!(p), pids_by));
        }
        m.insert("stdout_bytes".into(), json!({ "limit": stdout, "enforced_by": self.stdout_by }));
        for r in &self.rlimits {
            m.insert(
                format!("rlimit_{}", r.name),
                json!({ "soft": r.soft.map_or(json!("unlimited"), |v| json!(v)),
                        "hard": r.hard.map_or(json!("unlimited"), |v| json!(v)),
                        "enforced_by": "rlimit" }),
            );
        }
        Value::Object(m)
    }
}

/// One `--rlimit NAME=VALUE` (or `NAME=SOFT:HARD`); `None` is unlimited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rlimit {
    pub name: &'static str,
    pub resource: i32,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// The resources `--rlimit` takes, and how their values are written.
const RESOURCES: &[(&str, Resource, Unit)] = &[
    ("nofile", Resource::Nofile, Unit::Count),
    ("core", Resource::Core, Unit::Size),
    ("as", Resource::As, Unit::Size),
    ("fsize", Resource::Fsize, Unit::Size),
    ("nproc", Resource::Nproc, Unit::Count),
    ("stack", Resource::Stack, Unit::Size),
    ("cpu", Resource::Cpu, Unit::Seconds),
];

#[derive(Clone, Copy)]
enum Unit {
    Count,
    Size,
    Seconds,
}

impl Rlimit {
    pub fn parse(text: &str) -> Result<Rlimit, String> {
        let names = || RESOURCES.iter().map(|r| r.0).collect::<Vec<_>>().join(", ");
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}': use NAME=VALUE, NAME being one of {}", names()))?;
        let &(name, resource, unit) = RESOURCES
            .iter()
            .find(|r| r.0.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| format!("unknown resource '{name}' (use one of {})", names()))?;
        let one = |v: &str| -> Result<Option<u64>, String> {
            let v = v.trim();
            if v.eq_ignore_ascii_case("unlimited") || v.eq_ignore_ascii_case("infinity") {
                return Ok(None);
            }
            let n = match unit {
                Unit::Count => v.parse::<u64>().map_err(|_| format!("{name}: '{v}' is not a number")),
                Unit::Size => parse_size(v).map_err(|e| format!("{name}: {e}")),
                Unit::Seconds => {
                    parse_duration(v).map(|d| d.as_secs().max(1)).map_err(|e| format!("{name}: {e}"))
                }
            }?;
            // RLIM_INFINITY is all ones: a number that large means unlimited anyway.
            Ok((n != u64::MAX).then_some(n))
        };
        let (soft, hard) = match value.split_once(':') {
            Some((s, h)) => (one(s)?, one(h)?),
            None => (one(value)?, one(value)?),
        };
        if let (Some(s), h) = (soft, hard) {
            if h.is_some_and(|h| s > h) {
                return Err(format!("{name}: the soft limit {s} is above the hard limit {}", h.unwrap_or(0)));
            }
        }
        if soft.is_none() && hard.is_some() {
            return Err(format!("{name}: an unlimited soft limit needs an unlimited hard limit"));
        }
        Ok(Rlimit { name, resource: resource as i32, soft, hard })
    }

    pub fn as_libc(&self) -> libc::rlimit {
        libc::rlimit {
            rlim_cur: self.soft.unwrap_or(libc::RLIM_INFINITY),
            rlim_max: self.hard.unwrap_or(libc::RLIM_INFINITY),
        }
    }

    /// Refuses, before the job starts, a hard limit above proc_box's own when proc_box may
    /// not raise it (only CAP_SYS_RESOURCE may): the job would otherwise run unlimited.
    pub fn check_allowed(&self) -> Result<(), String> {
        let Some(&(_, resource, _)) = RESOURCES.iter().find(|r| r.1 as i32 == self.resource) else {
            return Err(format!("--rlimit {}: unknown resource", self.name));
        };
        // None: unlimited.
        let max = rustix::process::getrlimit(resource).maximum;
        let want = self.as_libc().rlim_max;
        let root = rustix::process::geteuid().is_root();
        if want > max.unwrap_or(libc::RLIM_INFINITY) && !root {
            let have = max.map_or("unlimited".into(), |m| m.to_string());
            return Err(format!(
                "--rlimit {}: cannot raise the hard limit above {have} without privilege",
                self.name
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rlimits_parse() {
        let r = Rlimit::parse("nofile=1024").unwrap();
        assert_eq!((r.name, r.soft, r.hard), ("nofile", Some(1024), Some(1024)));
        let r = Rlimit::parse("AS=1G:unlimited").unwrap();
        assert_eq!((r.soft, r.hard), (Some(1 << 30), None));
        assert_eq!(Rlimit::parse("cpu=1m").unwrap().soft, Some(60));
        assert_eq!(Rlimit::parse("core=0").unwrap().hard, Some(0));
        for bad in ["nofile", "files=3", "nofile=x", "nofile=10:5", "core=unlimited:0", "stack=-1"] {
            assert!(Rlimit::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_has_a_soft_and_a_hard_threshold() {
        let l = Limits { memory: Some(200 << 20), ..Default::default() };
        assert_eq!(l.memory(100 << 20), None);
        assert_eq!(l.memory(200 << 20), Some((Reason::LimitMemory, false)));
        assert_eq!(l.memory(219 << 20), Some((Reason::LimitMemory, false)));
        assert_eq!(l.memory(221 << 20), Some((Reason::LimitMemory, true)));
        assert_eq!(memory_margin(10 << 20), 16 << 20);
    }

    #[test]
    fn pids_and_cpu() {
        let l = Limits { pids: Some(50), cpu: Some(Duration::from_secs(2)), ..Default::default() };
        assert_eq!(l.pids(50), None);
        assert_eq!(l.pids(51), Some((Reason::LimitPids, false)));
        assert_eq!(l.cpu(Duration::from_millis(1999)), None);
        assert_eq!(l.cpu(Duration::from_secs(2)), Some((Reason::LimitCpu, false)));
        assert!(Limits::default().describe("ptrace", 5)["stdout_bytes"]["enforced_by"].is_null());
        let piped = Limits { stdout_by: Some("relay"), ..Default::default() };
        assert_eq!(
            piped.describe("ptrace", 5)["stdout_bytes"],
            serde_json::json!({"limit": 5, "enforced_by": "relay"})
        );
    }
}
