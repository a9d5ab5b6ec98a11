//! AMQP: control commands in, samples and the summary out.
//!
//! All network work runs on one thread of its own, under async-global-executor. The event
//! loop never waits on it: commands reach the loop through its [`Inbox`], and samples leave
//! through a bounded buffer that [`Amqp::push`] fills without blocking. At the end the summary
//! is spooled to disk first, then sent, and removed from the spool once confirmed. The end
//! waits only while that is worth it: a session that is up (at most `msgtimeout`), or one
//! that was up and is reconnecting (at most the drain's bound); never for a broker that this
//! run has not reached.

pub mod flush;
pub mod link;
mod session;
pub mod spool;

use crate::transport::sinks::FINAL_WAIT;
use crate::transport::Inbox;
use link::{Brokers, Outgoing};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Everything the AMQP side needs, decided at start-up.
pub struct Settings {
    pub brokers: Brokers,
    /// Extra CA certificates (PEM) for `amqps://`, beside the system's.
    pub ca_pem: Option<String>,
    pub exchange: String,
    /// Control keys: every one of `rkey`, then `<first rkey>.<box id>`.
    pub bind_keys: Vec<String>,
    pub box_id: String,
    /// `<skey>.<hostname>`.
    pub stats_key: String,
    /// Per-message limit on send and confirm (`None`: no limit).
    pub msgtimeout: Option<Duration>,
    pub spool_dir: PathBuf,
    /// The spool's size bound.
    pub bounds: spool::Bounds,
    /// Samples kept while the broker is away.
    pub buffer: usize,
}

impl Settings {
    /// The control keys: every key of `rkey` (broadcast), then `<first rkey>.<box id>`.
    pub fn keys(rkey: &str, box_id: &str) -> Vec<String> {
        let mut keys: Vec<String> =
            rkey.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
        if let Some(first) = keys.first() {
            keys.push(format!("{first}.{}", link::key_word(box_id)));
        }
        keys
    }
}

/// Samples waiting for the broker, oldest first, each with a sequence number so that the
/// session can remove exactly what was confirmed while the loop keeps pushing.
#[derive(Default)]
struct Buffer {
    queue: VecDeque<(u64, Outgoing)>,
    next: u64,
    dropped: u64,
}

/// What the loop's thread and the AMQP thread share.
struct Shared {
    buffer: Mutex<Buffer>,
    capacity: usize,
    /// Signalled when the buffer shrinks or the connection changes.
    changed: Condvar,
    /// Wakes the session when a sample arrives (capacity 1: a pending wake is enough).
    wake: flume::Sender<()>,
    /// Ends the session's pause between attempts: the job has ended.
    hurry: flume::Sender<()>,
    /// A session is up: channels open, serving.
    connected: AtomicBool,
    /// A session was up at some point of this run.
    ever_up: AtomicBool,
    /// A connection attempt, or the session's set-up after it, is under way.
    connecting: AtomicBool,
    /// Why the last attempt failed, for the end's message.
    last_failure: Mutex<Option<String>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_connected(&self, up: bool) {
        if up {
            self.ever_up.store(true, Ordering::SeqCst);
            self.connecting.store(false, Ordering::SeqCst);
        }
        self.connected.store(up, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn set_connecting(&self, on: bool, failure: Option<String>) {
        if failure.is_some() {
            *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
        }
        self.connecting.store(on, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Removes what the broker confirmed (sequence numbers up to `last`), and counts `lost`
    /// more as dropped.
    fn confirmed(&self, last: u64, lost: u64) {
        let mut b = self.lock();
        while b.queue.front().is_some_and(|(s, _)| *s <= last) {
            b.queue.pop_front();
        }
        b.dropped += lost;
        drop(b);
        self.changed.notify_all();
    }

    fn peek(&self, n: usize) -> Vec<(u64, Outgoing)> {
        self.lock().queue.iter().take(n).cloned().collect()
    }
}

/// How the summary fared.
pub enum Delivery {
    Confirmed,
    /// Not confirmed: why.
    Failed(String),
}

/// A connection attempt still under way at the end gets this long: enough for a live broker's
/// handshake, and short of what one job's end may cost when the broker is a black hole.
const CONNECT_GRACE: Duration = Duration::from_millis(100);
/// How often the end's waits look at signals.
const SLICE: Duration = Duration::from_millis(20);
/// When a running box keeps the spool within its bounds.
const TRIM_AFTER: Duration = Duration::from_secs(1);

/// The box's end, as far as the broker is concerned: its deadlines, fixed once.
pub struct Ending {
    start: Instant,
    /// Last samples, and a lost connection coming back, get until here.
    drain_until: Instant,
    /// The summary's confirm, once connected (`None`: no limit).
    until: Option<Instant>,
}

/// The loop's handle on the AMQP thread.
pub struct Amqp {
    shared: Arc<Shared>,
    finish: flume::Sender<session::Finish>,
    exchange: String,
    stats_key: String,
    spool_dir: PathBuf,
    destinations: Vec<spool::Destination>,
    bounds: spool::Bounds,
    /// The spool has been trimmed this run (or is being).
    trimmed: Arc<AtomicBool>,
}

impl Amqp {
    /// Starts the AMQP thread. It connects in the background: a broker that is down, slow or
    /// refusing never delays the job. A second thread keeps the spool within its bounds, once
    /// the job has lived [`TRIM_AFTER`]: a short job, whose summary is delivered, never pays
    /// for listing the spool; one whose summary stays trims at its end ([`Amqp::trim`]).
    pub fn start(settings: Settings, inbox: Inbox) -> std::io::Result<Amqp> {
        let (wake, woken) = flume::bounded(1);
        let (hurry, hurried) = flume::bounded(1);
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            capacity: settings.buffer.max(1),
            changed: Condvar::new(),
            wake,
            hurry,
            connected: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            connecting: AtomicBool::new(true), // the first attempt starts at once
            last_failure: Mutex::new(None),
        });
        let (finish, finishing) = flume::bounded(1);
        let amqp = Amqp {
            shared: shared.clone(),
            finish,
            exchange: settings.exchange.clone(),
            stats_key: settings.stats_key.clone(),
            spool_dir: settings.spool_dir.clone(),
            destinations: settings.brokers.destinations(),
            bounds: settings.bounds,
            trimmed: Arc::new(AtomicBool::new(false)),
        };
        let (dir, bounds, done) = (settings.spool_dir.clone(), settings.bounds, amqp.trimmed.clone());
        std::thread::Builder::new().name("spool".into()).stack_size(crate::stack::PLAIN).spawn(
            move || {
                crate::fault::prepare_thread();
                std::thread::sleep(TRIM_AFTER);
                if !done.swap(true, Ordering::SeqCst) {
                    trim(&dir, bounds);
                }
            },
        )?;
        crate::stack::one_executor_thread();
        // This thread drops what lapin parsed: the same bound as lapin's own threads.
        std::thread::Builder::new().name("amqp".into()).stack_size(crate::stack::AMQP).spawn(move || {
            crate::fault::prepare_thread();
            async_global_executor::block_on(session::run(settings, shared, inbox, woken, hurried, finishing));
        })?;
        Ok(amqp)
    }

    /// Queues a sample. Never blocks: when the buffer is full, the oldest is dropped and counted.
    pub fn push(&self, msg: Outgoing) {
        let mut b = self.shared.lock();
        if b.queue.len() >= self.shared.capacity {
            b.queue.pop_front();
            b.dropped += 1;
        }
        let seq = b.next;
        b.next += 1;
        b.queue.push_back((seq, msg));
        drop(b);
        let _ = self.shared.wake.try_send(());
    }

    /// The job has ended: fixes the deadlines, and has a session that is between attempts
    /// try again at once.
    pub fn ending(&self, msgtimeout: Option<Duration>) -> Ending {
        let start = Instant::now();
        let drain = msgtimeout.map_or(FINAL_WAIT, |t| (t / 2).min(FINAL_WAIT));
        let _ = self.shared.hurry.try_send(());
        Ending { start, drain_until: start + drain, until: msgtimeout.and_then(|t| start.checked_add(t)) }
    }

    /// Samples lost if nothing more goes out: dropped so far and still queued.
    pub fn undelivered(&self) -> u64 {
        let b = self.shared.lock();
        b.dropped + b.queue.len() as u64
    }

    /// Why waiting any longer for the broker is pointless, if it is. Worth waiting: a session
    /// that is up; one that was up this run and may come back before the drain ends; an
    /// attempt under way, for [`CONNECT_GRACE`]. Not: a broker never reached this run.
    fn hopeless(&self, e: &Ending) -> Option<String> {
        let s = &self.shared;
        if s.connected.load(Ordering::SeqCst) {
            return None;
        }
        let now = Instant::now();
        let ever_up = s.ever_up.load(Ordering::SeqCst);
        if ever_up && now < e.drain_until {
            return None;
        }
        if s.connecting.load(Ordering::SeqCst) && now < e.start + CONNECT_GRACE {
            return None;
        }
        if ever_up {
            return Some("the connection to the broker was lost and did not come back in time".into());
        }
        let last = s.last_failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Some(
            last.unwrap_or_else(|| "cannot reach the broker: no connection was up when the job ended".into()),
        )
    }

    /// At the end: lets queued samples go out while that is worth waiting for, until the
    /// drain's deadline or a stop request. Whatever is left then is dropped. Returns every
    /// sample dropped over the whole run.
    pub fn drain(&self, e: &Ending, give_up: &mut dyn FnMut() -> bool) -> u64 {
        let mut b = self.shared.lock();
        if !b.queue.is_empty() {
            crate::debug!(
                "AMQP: {} samples still queued at the end{}",
                b.queue.len(),
                match self.hopeless(e) {
                    Some(why) => format!(", and they are dropped: {why}"),
                    None => "; waiting for the broker".into(),
                }
            );
        }
        while !b.queue.is_empty() {
            let left = e.drain_until.saturating_duration_since(Instant::now());
            if left.is_zero() || self.hopeless(e).is_some() {
                break;
            }
            drop(b);
            let stop = give_up();
            b = self.shared.lock();
            if stop {
                break;
            }
            b = self.shared.changed.wait_timeout(b, left.min(SLICE)).unwrap_or_else(|p| p.into_inner()).0;
        }
        let left = b.queue.len() as u64;
        b.queue.clear();
        b.dropped += left;
        b.dropped
    }

    /// Publishes the summary (persistent, mandatory, confirmed) while that is worth waiting
    /// for (see [`Amqp::hopeless`]), at most until `msgtimeout`, or until a stop request.
    pub fn send_summary(&self, msg: Outgoing, e: &Ending, give_up: &mut dyn FnMut() -> bool) -> Delivery {
        if let Some(why) = self.hopeless(e) {
            return Delivery::Failed(why);
        }
        let (done, result) = flume::bounded(1);
        if self.finish.send(session::Finish { msg, done }).is_err() {
            return Delivery::Failed("the AMQP thread has ended".into());
        }
        loop {
            match result.recv_timeout(SLICE) {
                Ok(r) => return r,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return Delivery::Failed("the AMQP thread has ended".into())
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
            if e.until.is_some_and(|t| Instant::now() >= t) {
                return Delivery::Failed("not confirmed within --msgtimeout".into());
            }
            if let Some(why) = self.hopeless(e) {
                return Delivery::Failed(why);
            }
            if give_up() {
                return Delivery::Failed("interrupted while waiting for the broker".into());
            }
        }
    }

    /// Writes the summary to the spool, claimed by this process until it is confirmed or the
    /// process ends: a box killed while it waits loses nothing.
    pub fn spool(&self, msg: &Outgoing) -> std::io::Result<(spool::Spool, spool::Claim)> {
        let dir = spool::Spool::open(&self.spool_dir, true)?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
        let claim =
            dir.write(&spool::Entry::new(&self.exchange, &self.stats_key, &self.destinations, msg))?;
        Ok((dir, claim))
    }

    /// Replaces the spooled summary with an updated one, still claimed.
    pub fn respool(&self, dir: &spool::Spool, msg: &Outgoing) -> std::io::Result<spool::Claim> {
        dir.write(&spool::Entry::new(&self.exchange, &self.stats_key, &self.destinations, msg))
    }

    /// Keeps the spool within its bounds now, unless done already this run: the end's share
    /// when the summary stays in the spool (the spool grows only then).
    pub fn trim(&self) {
        if !self.trimmed.swap(true, Ordering::SeqCst) {
            // The room a trim leaves for this run's summary is taken already.
            let bounds = spool::Bounds { files: self.bounds.files.saturating_add(1), ..self.bounds };
            trim(&self.spool_dir, bounds);
        }
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }
}

/// Keeps the spool within its bounds; says what was dropped.
pub fn trim(dir: &Path, bounds: spool::Bounds) {
    let dropped = match spool::Spool::open(dir, false).and_then(|s| s.map(|s| s.trim(bounds)).transpose()) {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => {
            crate::warn!("spool: {e}");
            return;
        }
    };
    if dropped.is_empty() {
        return;
    }
    let shown: Vec<String> =
        dropped.iter().take(10).map(|d| format!("{} (box {})", d.message_id, d.box_id)).collect();
    let more = if dropped.len() > 10 { format!(" and {} more", dropped.len() - 10) } else { String::new() };
    crate::error!(
        "spool {}: over its bound of {} files or {} bytes; dropped the {} oldest undelivered summaries: {}{more}",
        dir.display(),
        bounds.files,
        bounds.bytes,
        dropped.len(),
        shown.join(", ")
    );
}
