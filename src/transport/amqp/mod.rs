//! AMQP: control commands in, samples and the summary out (contract §3–§4).
//!
//! All network work runs on one thread of its own, under async-global-executor. The event
//! loop never waits on it: commands reach the loop through its [`Inbox`], and samples leave
//! through a bounded buffer that [`Amqp::push`] fills without blocking. Only the end of the
//! box waits, at most `msgtimeout`, for the summary's confirm; an unconfirmed summary is
//! spooled to disk instead of lost.

pub mod link;
mod session;
pub mod spool;

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
    /// Samples kept while the broker is away.
    pub buffer: usize,
}

impl Settings {
    /// The control keys of contract §3.
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
    connected: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
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

/// The loop's handle on the AMQP thread.
pub struct Amqp {
    shared: Arc<Shared>,
    finish: flume::Sender<session::Finish>,
    exchange: String,
    stats_key: String,
    spool_dir: PathBuf,
}

impl Amqp {
    /// Starts the AMQP thread. It connects in the background: a broker that is down, slow or
    /// refusing never delays the job.
    pub fn start(settings: Settings, inbox: Inbox) -> std::io::Result<Amqp> {
        let (wake, woken) = flume::bounded(1);
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            capacity: settings.buffer.max(1),
            changed: Condvar::new(),
            wake,
            connected: AtomicBool::new(false),
        });
        let (finish, finishing) = flume::bounded(1);
        let amqp = Amqp {
            shared: shared.clone(),
            finish,
            exchange: settings.exchange.clone(),
            stats_key: settings.stats_key.clone(),
            spool_dir: settings.spool_dir.clone(),
        };
        std::thread::Builder::new().name("amqp".into()).spawn(move || {
            async_global_executor::block_on(session::run(settings, shared, inbox, woken, finishing));
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

    /// At the end: lets queued samples go out while connected, until `until`. Whatever is left
    /// then is dropped. Returns every sample dropped over the whole run.
    pub fn drain(&self, until: Instant) -> u64 {
        let mut b = self.shared.lock();
        while !b.queue.is_empty() && self.shared.connected.load(Ordering::SeqCst) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            b = self.shared.changed.wait_timeout(b, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        let left = b.queue.len() as u64;
        b.queue.clear();
        b.dropped += left;
        b.dropped
    }

    /// Publishes the summary (persistent, mandatory, confirmed), waiting until `until` at most
    /// (`None`: until confirmed, or until `give_up` says so; it is asked every 250 ms).
    pub fn send_summary(
        &self,
        msg: Outgoing,
        until: Option<Instant>,
        give_up: &mut dyn FnMut() -> bool,
    ) -> Delivery {
        let (done, result) = flume::bounded(1);
        if self.finish.send(session::Finish { msg, done }).is_err() {
            return Delivery::Failed("the AMQP thread has ended".into());
        }
        loop {
            let slice = Duration::from_millis(250);
            let wait = match until {
                Some(t) => t.saturating_duration_since(Instant::now()).min(slice),
                None => slice,
            };
            match result.recv_timeout(wait) {
                Ok(r) => return r,
                Err(flume::RecvTimeoutError::Disconnected) => {
                    return Delivery::Failed("the AMQP thread has ended".into())
                }
                Err(flume::RecvTimeoutError::Timeout) => {}
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return Delivery::Failed("not confirmed within --msgtimeout".into());
            }
            if until.is_none() && give_up() {
                return Delivery::Failed("interrupted while waiting for the broker".into());
            }
        }
    }

    /// Writes the summary to the spool; returns the file.
    pub fn spool(&self, msg: &Outgoing) -> std::io::Result<PathBuf> {
        spool::write(&self.spool_dir, &spool::Entry::new(&self.exchange, &self.stats_key, msg))
    }

    pub fn spool_dir(&self) -> &Path {
        &self.spool_dir
    }
}
