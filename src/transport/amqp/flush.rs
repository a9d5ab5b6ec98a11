//! Sending the spool: shared by a box (in the background, once it serves control) and
//! `proc_boxctl flush`. One entry that always fails costs only itself: it is deferred with a
//! back-off, counted, and the rest go on. The spool has a channel of its own, so the channel
//! error that an entry for a missing exchange causes never reaches control or samples.

use super::link::{self, Failure, STEP};
use super::spool::{Claim, Claimed, Destination, Entry, Listed, Spool};
use lapin::options::BasicPublishOptions;
use lapin::{Channel, Connection};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

/// Entries published before their confirms are awaited.
const WINDOW: usize = 64;

pub struct Options {
    /// How long one confirm may take (`None`: no limit).
    pub limit: Option<Duration>,
    /// The node this connection reached.
    pub here: Destination,
    /// Also send entries spooled for other brokers, and those of older versions.
    pub any_broker: bool,
    /// Also send entries of older versions, which do not say where they were going.
    pub unmarked: bool,
    /// Also send deferred entries whose back-off is not over.
    pub all: bool,
}

/// What happened to one entry.
pub enum Report {
    Sent(PathBuf),
    /// Failed again: set aside until `at` (Unix seconds), after `attempts` attempts.
    Deferred {
        file: PathBuf,
        why: String,
        attempts: u32,
        at: u64,
    },
    /// Spooled for another broker: left alone.
    Elsewhere {
        file: PathBuf,
        to: String,
    },
    Invalid(String),
}

#[derive(Debug, Default)]
pub struct Totals {
    pub sent: u64,
    pub deferred: u64,
    pub elsewhere: u64,
}

/// Sends the `files` that are due; stops early when `stop` says so. `Err` when the connection
/// failed (what was not confirmed stays spooled).
pub async fn flush(
    conn: &Connection,
    spool: &Spool,
    files: Vec<Listed>,
    opts: &Options,
    stop: &dyn Fn() -> bool,
    report: &mut dyn FnMut(Report),
) -> Result<Totals, Failure> {
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    let mut queue: VecDeque<String> =
        files.into_iter().filter(|f| opts.all || f.due(now)).map(|f| f.name).collect();
    // Entries of a batch that a channel error cut short: sent again one at a time, so that
    // the one that causes it is found and deferred.
    let mut careful: VecDeque<String> = VecDeque::new();
    let mut totals = Totals::default();
    let mut channel: Option<Channel> = None;
    while !stop() {
        let one_by_one = !careful.is_empty();
        let mut batch: Vec<(Claim, Entry)> = Vec::new();
        while batch.len() < if one_by_one { 1 } else { WINDOW } {
            let Some(name) = (if one_by_one { careful.pop_front() } else { queue.pop_front() }) else {
                break;
            };
            match spool.claim(&name) {
                Claimed::Mine(claim, entry) => {
                    let ours = opts.any_broker
                        || entry.goes_to(&opts.here)
                        || (entry.brokers.is_empty() && opts.unmarked);
                    if ours {
                        batch.push((claim, entry));
                    } else {
                        let to = match entry.brokers.first() {
                            Some(d) => d.to_string(),
                            None => "an unrecorded broker (spooled by an older version)".into(),
                        };
                        totals.elsewhere += 1;
                        report(Report::Elsewhere { file: spool.file(claim.name()), to });
                    }
                }
                Claimed::Busy => {}
                Claimed::Invalid(why) => report(Report::Invalid(why)),
            }
        }
        if batch.is_empty() {
            if queue.is_empty() && careful.is_empty() {
                break;
            }
            continue;
        }
        let ch = match &channel {
            Some(c) if c.status().connected() => c.clone(),
            _ => {
                let c = link::confirm_channel(conn).await?;
                channel = Some(c.clone());
                c
            }
        };
        let mut sent = Vec::with_capacity(batch.len());
        for (claim, entry) in batch {
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            let msg = entry.outgoing();
            let publish = ch.basic_publish(
                entry.exchange.as_str().into(),
                entry.routing_key.as_str().into(),
                opts,
                msg.body.as_bytes(),
                msg.properties(),
            );
            let confirm = link::timed("publishing a spooled summary", STEP, publish).await;
            sent.push((claim, entry, confirm));
        }
        for (claim, entry, confirm) in sent {
            let result = match confirm {
                Ok(c) => {
                    let limit = opts.limit.unwrap_or(Duration::MAX);
                    let timeout = async {
                        async_io::Timer::after(limit).await;
                        None
                    };
                    match futures_lite::future::or(async { Some(c.await) }, timeout).await {
                        Some(r) => r.map_err(|e| e.to_string()),
                        // Stalled: nothing here is this entry's fault.
                        None => {
                            return Err(Failure::Transient(
                                "a spooled summary was not confirmed in time".into(),
                            ))
                        }
                    }
                }
                Err(f) => Err(f.message().to_owned()),
            };
            let why = match result.map(|c| (c.is_nack(), c.take_message().is_some())) {
                Ok((true, _)) => "the broker refused it (nack)".to_string(),
                Ok((_, true)) => {
                    format!("no queue is bound to '{}' on exchange '{}'", entry.routing_key, entry.exchange)
                }
                Ok(_) => {
                    let file = spool.file(claim.name());
                    if let Err(e) = spool.done(claim) {
                        crate::warn!("spool: sent, but cannot remove {}: {e}", file.display());
                    }
                    totals.sent += 1;
                    report(Report::Sent(file));
                    continue;
                }
                Err(e) if !conn.status().connected() => return Err(Failure::Transient(e)),
                // A channel error: this entry's, when it went alone.
                Err(_) if !one_by_one => {
                    channel = None;
                    careful.push_back(claim.name().to_owned());
                    continue;
                }
                Err(e) => {
                    channel = None;
                    e
                }
            };
            let file = spool.file(claim.name());
            match spool.defer(claim) {
                Ok((attempts, at)) => {
                    totals.deferred += 1;
                    report(Report::Deferred { file, why, attempts, at });
                }
                Err(e) => crate::warn!("spool: cannot set {} aside: {e}", file.display()),
            }
        }
    }
    if let Some(ch) = channel.filter(|c| c.status().connected()) {
        let _ = link::timed("closing a channel", STEP, ch.close(200, "OK".into())).await;
    }
    Ok(totals)
}
