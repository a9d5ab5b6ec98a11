//! Turns accounting into messages and hands them to the sinks: a sample on demand or on the
//! interval, and the summary at the end. Sink trouble is counted and logged; it never stops
//! the job.

use crate::accounting::report::{ExitInfo, Floor, Identity, Sample, SampleContext, Summary};
use crate::accounting::Accounting;
use crate::tracker::{ExitStatus, Tracker};
use crate::transport::amqp::link::Outgoing;
use crate::transport::amqp::{Amqp, Delivery};
use crate::transport::sinks::{StatsFile, SummaryFile, FINAL_WAIT};
use std::time::{Duration, Instant, SystemTime};

pub struct Emitter {
    pub accounting: Accounting,
    identity: Identity,
    stats: Option<StatsFile>,
    summary_file: Option<SummaryFile>,
    amqp: Option<Amqp>,
    /// `msgtimeout`: how long the end may wait for the broker (`None`: no limit).
    msgtimeout: Option<Duration>,
    seq: u64,
    /// Samples made for the sinks.
    made: u64,
    /// Sample deliveries lost, over every sink.
    dropped: u64,
    floor: Floor,
}

/// The loop's side of a sample: what only it knows.
pub struct Live {
    pub state: &'static str,
    pub elapsed: Duration,
    pub timer_elapsed: Duration,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
}

/// How the box ended, for the summary.
pub struct End {
    pub argv: Vec<String>,
    pub exit_code: i32,
    pub main: Option<ExitStatus>,
    pub reason: &'static str,
    pub wall: Duration,
    pub leftover_killed: u64,
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    pub limits: serde_json::Value,
    pub cgroup: Option<serde_json::Value>,
}

impl Emitter {
    pub fn new(
        accounting: Accounting,
        identity: Identity,
        stats: Option<StatsFile>,
        summary_file: Option<SummaryFile>,
    ) -> Emitter {
        Emitter {
            accounting,
            identity,
            stats,
            summary_file,
            amqp: None,
            msgtimeout: None,
            seq: 0,
            made: 0,
            dropped: 0,
            floor: Floor::default(),
        }
    }

    /// Samples and the summary also go to the broker.
    pub fn set_amqp(&mut self, amqp: Amqp, msgtimeout: Option<Duration>) {
        self.amqp = Some(amqp);
        self.msgtimeout = msgtimeout;
    }

    /// Whether periodic samples go anywhere.
    pub fn has_sink(&self) -> bool {
        self.stats.is_some() || self.amqp.is_some()
    }

    /// Builds a sample, writes it to the sinks, and returns it (for a `sample` reply).
    pub fn sample(&mut self, tracker: &mut Tracker, live: Live) -> serde_json::Value {
        let mut totals = self.accounting.totals(tracker);
        // Both clocks at once, after the read: cpu_percent's window is then the one between
        // the samples' own times, however long the read took (a loaded machine, a big tree).
        let (now, time) = (Instant::now(), SystemTime::now());
        let (mut started, mut stdout_bytes, mut stderr_bytes) =
            (tracker.processes_started(), live.stdout_bytes, live.stderr_bytes);
        self.floor.apply(&mut totals, &mut started, &mut stdout_bytes, &mut stderr_bytes);
        let cpu_percent = self.accounting.cpu_percent(&totals, now);
        self.seq += 1;
        let sample = Sample::new(
            SampleContext {
                pid: tracker.main_pid(),
                seq: self.seq,
                now: time,
                elapsed: live.elapsed,
                timer_elapsed: live.timer_elapsed,
                state: live.state,
                pids: tracker.pids(),
                processes_started: started,
                cpu_percent,
                stdout_bytes,
                stderr_bytes,
                identity: &self.identity,
            },
            &totals,
        );
        let value = serde_json::to_value(&sample).unwrap_or_default();
        if !self.has_sink() {
            return value;
        }
        self.made += 1;
        let line = value.to_string();
        if let Some(stats) = self.stats.as_mut() {
            if !stats.write_line(line.clone()) {
                self.dropped += 1;
            }
        }
        if let Some(amqp) = &self.amqp {
            amqp.push(Outgoing::new("sample", sample.header.message_id.clone(), line, false));
        }
        value
    }

    /// The summary: built once everything has been reaped, so its CPU and I/O are the
    /// kernel's final totals. Written to every sink; also returned. `give_up` is asked, while
    /// waiting for the broker, whether to stop waiting.
    pub fn finish(&mut self, tracker: &mut Tracker, end: End, give_up: &mut dyn FnMut() -> bool) -> Summary {
        let start = Instant::now();
        let deadline = start + FINAL_WAIT;
        // Samples still queued count as emitted only once they are written.
        if let Some(stats) = &self.stats {
            if !stats.flush(deadline) {
                crate::warn!("the stats file did not take the last samples in time");
            }
            self.dropped += stats.failed();
        }
        // The broker's share of the end: the summary is spooled first (below), then the last
        // samples and the summary get what is worth waiting for, at most msgtimeout.
        let ending = self.amqp.as_ref().map(|a| a.ending(self.msgtimeout));
        let undelivered = self.amqp.as_ref().map_or(0, Amqp::undelivered);
        let totals = self.accounting.totals(tracker);
        let ended = SystemTime::now();
        let exit = end.main.map(|s| match s {
            ExitStatus::Exited(c) => ExitInfo { kind: "exited", code: Some(c), signal: None },
            ExitStatus::Signaled(n) => ExitInfo { kind: "signaled", code: None, signal: Some(n) },
        });
        let mut summary = Summary {
            header: self.identity.header("summary", 0),
            argv: end.argv,
            started_at: crate::accounting::report::rfc3339(self.identity.started),
            ended_at: crate::accounting::report::rfc3339(ended),
            wall_seconds: end.wall.as_secs_f64(),
            exit_code: end.exit_code,
            exit,
            reason: end.reason,
            cpu_user_seconds: totals.cpu_user.as_secs_f64(),
            cpu_system_seconds: totals.cpu_system.as_secs_f64(),
            cpu_exact: self.accounting.cpu_exactness(tracker).0,
            cpu_inexact_reason: self.accounting.cpu_exactness(tracker).1,
            peak_rss_bytes: self.accounting.peak_rss(),
            peak_pss_bytes: self.accounting.peak_pss(),
            peak_shmem_fd_bytes: self.accounting.peak_shmem_fd(),
            peak_memory_bytes: self.accounting.peak_memory(),
            max_process_rss_bytes: self.accounting.max_process_rss(tracker),
            processes_started: tracker.processes_started(),
            processes_started_exact: tracker.processes_started_exact(),
            processes_peak: tracker.processes_peak(),
            leftover_killed: end.leftover_killed,
            io_read_bytes: totals.io.read_bytes,
            io_write_bytes: totals.io.write_bytes,
            stdout_bytes: end.stdout_bytes,
            stderr_bytes: end.stderr_bytes,
            samples_emitted: self.made - (self.dropped + undelivered).min(self.made),
            samples_dropped: self.dropped + undelivered,
            limits: end.limits,
            cgroup: end.cgroup,
            user: self.identity.user.clone(),
            owner: self.identity.owner.clone(),
            scheduler: self.identity.scheduler.clone(),
        };
        let mut line = serde_json::to_string(&summary).unwrap_or_default();
        let message_id = summary.header.message_id.clone();
        // Spooled before any wait: a box killed while it waits loses nothing. Counted as if
        // the queued samples were lost, then rewritten if the drain sends some.
        let mut held = None;
        if let (Some(amqp), Some(ending)) = (&self.amqp, &ending) {
            held = match amqp.spool(&Outgoing::new("summary", message_id.clone(), line.clone(), true)) {
                Ok(h) => Some(h),
                Err(e) => {
                    crate::error!("cannot spool the summary to {}: {e}", amqp.spool_dir().display());
                    None
                }
            };
            let dropped = self.dropped + amqp.drain(ending, give_up);
            if dropped != summary.samples_dropped {
                summary.samples_dropped = dropped;
                summary.samples_emitted = self.made - dropped.min(self.made);
                line = serde_json::to_string(&summary).unwrap_or_default();
                if let Some((spool, old)) = held.take() {
                    let entry = Outgoing::new("summary", message_id.clone(), line.clone(), true);
                    held = match amqp.respool(&spool, &entry) {
                        Ok(c) => Some((spool, c)),
                        Err(e) => {
                            crate::error!("cannot update the spooled summary: {e}");
                            Some((spool, old))
                        }
                    };
                }
            }
            self.dropped = dropped;
        }
        if let Some(stats) = self.stats.take() {
            if !stats.finish(line.clone(), deadline) {
                crate::error!("cannot write the summary to the stats file");
            }
        }
        if let Some(f) = self.summary_file.take() {
            let path = f.path().display().to_string();
            if let Err(e) = f.write(&line, deadline) {
                crate::error!("cannot write the summary file {path}: {e}");
            }
        }
        if let (Some(amqp), Some(ending)) = (self.amqp.take(), ending) {
            let msg = Outgoing::new("summary", message_id, line, true);
            match (amqp.send_summary(msg, &ending, give_up), held) {
                (Delivery::Confirmed, Some((spool, claim))) => {
                    crate::debug!("AMQP: the broker confirmed the summary");
                    if let Err(e) = spool.done(claim) {
                        crate::warn!("the summary was delivered, but cannot be removed from the spool: {e}");
                    }
                }
                (Delivery::Confirmed, None) => crate::debug!("AMQP: the broker confirmed the summary"),
                (Delivery::Failed(why), Some((spool, claim))) => {
                    if let Err(e) = spool.sync(&claim) {
                        crate::warn!("cannot sync the spooled summary: {e}");
                    }
                    // It stays, so the spool grew: keep it bounded (this summary, held, is
                    // never the one dropped).
                    amqp.trim();
                    crate::error!(
                        "the summary was not delivered ({why}); spooled to {} for 'proc_boxctl flush' or the \
                         next proc_box run",
                        spool.file(claim.name()).display()
                    );
                }
                (Delivery::Failed(why), None) => crate::error!(
                    "the summary was not delivered ({why}), and cannot be spooled to {}",
                    amqp.spool_dir().display()
                ),
            }
        }
        summary
    }
}
