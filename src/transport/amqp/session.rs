//! The AMQP thread's one task: connect, declare, consume and publish; on any failure, tear
//! everything down and start again after a jittered backoff, on the next node of the list.
//!
//! A session is an explicit sequence: connect → confirm channel → serve, and, once the job has
//! lived [`CONTROL_DELAY`], the control channel (qos, exclusive queue, binds, consumer).
//! Serving waits on whichever comes first: a delivery, a queued sample, a reply from the loop,
//! a connection event, the time to set up control, or the summary. Beside it, after a moment,
//! the spool of earlier runs is sent on a channel of its own.

use super::flush::{self, Report};
use super::link::{self, Brokers, ClientInfo, Confirmed, Failure, Outgoing, STEP};
use super::spool::Spool;
use super::{Delivery, Settings, Shared};
use crate::command::Reply;
use crate::transport::{Inbox, Request};
use futures_lite::future::or;
use futures_lite::StreamExt;
use lapin::options::BasicAckOptions;
use lapin::protocol::BasicProperties;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Channel, Connection, Event};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

/// The summary, handed over at the end, and the way to say how it went.
pub struct Finish {
    pub msg: Outgoing,
    pub done: flume::Sender<Delivery>,
}

/// How long the job must have run before the box sets up its control queue. The queue, its
/// bindings and its consumer cost the broker more than the rest of a short job's session
/// (connect, one channel, the summary), and are torn down again at its end: a batch of short
/// jobs would keep the broker busier than the machine. Nobody addresses a job in its first
/// second, and a command published before the queue is bound was always lost: an operator's
/// tool retries, or waits for the box's first sample.
pub const CONTROL_DELAY: Duration = Duration::from_secs(1);
/// Deliveries unacknowledged at once: bounds what a flood of commands costs.
const PREFETCH: u16 = 32;
/// Samples published before their confirms are awaited.
const BATCH: usize = 64;
/// Reconnection backoff bounds (the first is also the retry pace once the summary waits).
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// How long a sample's confirm may take when `msgtimeout` is 0 (no limit): a sample must not
/// hold the session for ever, and is resent after a reconnect anyway.
const SAMPLE_CONFIRM: Duration = Duration::from_secs(30);
/// The pace of attempts once the job has ended: the end waits for a lost connection only
/// for a few seconds.
const ENDING_RETRY: Duration = Duration::from_millis(250);

/// Exponential backoff, 0.5 s doubling to 30 s, each delay drawn from [d/2, d] so that
/// hundreds of boxes cut off by one broker restart do not come back in step.
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next(&mut self, refused: bool) -> Duration {
        let ceiling = if refused {
            BACKOFF_MAX
        } else {
            BACKOFF_MIN.saturating_mul(1u32 << self.failures.min(6)).min(BACKOFF_MAX)
        };
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// What woke a serving session.
enum Wake {
    Delivery(Option<lapin::Result<Box<lapin::message::Delivery>>>),
    Sample,
    Handled(Option<Handled>),
    Event(Option<Event>),
    Finish(Option<Finish>),
    /// Time to set up the control queue.
    Control,
}

/// What ended a pause between attempts.
enum Pause {
    Finish(Option<Finish>),
    Hurry,
    Over,
}

/// A command the loop has acted on: the delivery to acknowledge, and the reply with its
/// `reply_to` and `correlation_id` when one was asked for.
struct Handled {
    acker: lapin::Acker,
    reply: Option<(Reply, String, Option<String>)>,
}

type Replies = (flume::Sender<Handled>, flume::Receiver<Handled>);

struct Task {
    settings: Settings,
    shared: Arc<Shared>,
    inbox: Inbox,
    woken: flume::Receiver<()>,
    hurried: flume::Receiver<()>,
    finishing: flume::Receiver<Finish>,
    /// The summary, once the loop has handed it over.
    summary: Option<Finish>,
    /// The job has ended.
    ending: bool,
    replies: Replies,
    tls: OwnedTLSConfig,
    /// The spool of earlier runs has been sent (once per run).
    spool_sent: bool,
    /// When the control queue is due (the job's start plus [`CONTROL_DELAY`]).
    control_at: std::time::Instant,
}

pub(super) async fn run(
    settings: Settings,
    shared: Arc<Shared>,
    inbox: Inbox,
    woken: flume::Receiver<()>,
    hurried: flume::Receiver<()>,
    finishing: flume::Receiver<Finish>,
) {
    let tls = OwnedTLSConfig { identity: None, cert_chain: settings.ca_pem.clone() };
    let mut task = Task {
        settings,
        shared,
        inbox,
        woken,
        hurried,
        finishing,
        summary: None,
        ending: false,
        replies: flume::unbounded(),
        tls,
        spool_sent: false,
        control_at: std::time::Instant::now() + CONTROL_DELAY,
    };
    task.run().await;
}

/// Acknowledges a delivery. One from a connection since lost cannot be, and needs not be: its
/// exclusive queue went with that connection.
/// How a session on a live connection ended early. Only one that was serving earns a fast
/// retry: one that fails in its set-up each time must back off like a refused connect.
enum Lost {
    /// In setting up: the publish channel, or control's queue and bindings.
    InSetUp(Failure),
    /// While serving.
    Serving(Failure),
}

async fn ack(acker: &lapin::Acker) {
    if !acker.usable() {
        return;
    }
    if let Err(f) = link::timed("basic.ack", STEP, acker.ack(BasicAckOptions::default())).await {
        crate::debug!("AMQP: {}", f.message());
    }
}

impl Task {
    async fn run(&mut self) {
        let mut brokers: Brokers = self.settings.brokers.clone();
        let mut backoff = Backoff { failures: 0 };
        let mut told = false;
        let mut config_told = false;
        loop {
            let client = ClientInfo {
                product: "proc_box",
                name: format!("proc_box {}", self.settings.box_id),
                box_id: Some(&self.settings.box_id),
            };
            self.shared.set_connecting(true, None);
            let attempt = link::connect_any(&mut brokers, &self.tls, &client).await;
            let failed = attempt.as_ref().err().map(|f| match f {
                Failure::Refused(m) => format!("the broker refused the login: {m}"),
                Failure::Config(m) => m.clone(),
                Failure::Transient(m) => format!("cannot reach the broker: {m}"),
            });
            if failed.is_some() {
                self.shared.set_connecting(false, failed);
            }
            let failure = match attempt {
                Ok((conn, uri)) => {
                    let first = backoff.failures == 0 && !told;
                    let result = self.serve(&conn, &uri, first).await;
                    if let Err(Lost::InSetUp(f) | Lost::Serving(f)) = &result {
                        let why =
                            format!("the session with {} failed: {}", link::describe(&uri), f.message());
                        self.shared.set_connecting(false, Some(why));
                    }
                    self.shared.set_connected(false);
                    // Close explicitly: dropping a Connection does not.
                    let _ =
                        link::timed("closing", Duration::from_secs(2), conn.close(200, "OK".into())).await;
                    match result {
                        Ok(()) => return, // the summary went out: the task is done
                        // Only a session that was set up and serving earns a fast retry: one
                        // that fails in its set-up each time must back off like a refused connect.
                        Err(Lost::Serving(f)) if !matches!(f, Failure::Config(_)) => {
                            backoff.failures = 0;
                            let node = link::describe(&uri);
                            crate::warn!("AMQP: lost the broker at {node}: {}; reconnecting", f.message());
                            told = true;
                            f
                        }
                        Err(Lost::InSetUp(f) | Lost::Serving(f)) => f,
                    }
                }
                Err(f) => f,
            };
            let refused = matches!(failure, Failure::Refused(_));
            let config = matches!(failure, Failure::Config(_));
            if config {
                if !config_told {
                    crate::error!(
                        "AMQP: {}. Check --exchange and the broker user's permissions; the job runs on, \
                         and the box retries every {}",
                        failure.message(),
                        humantime::format_duration(BACKOFF_MAX)
                    );
                    config_told = true;
                } else {
                    crate::debug!("AMQP: {}", failure.message());
                }
                if let Some(f) = self.summary.take() {
                    let _ = f.done.send(Delivery::Failed(failure.message().to_owned()));
                    return;
                }
            } else if refused {
                if !told {
                    crate::error!(
                        "AMQP: the broker refused the login: {}. Check the user, password and vhost in \
                         --uri; the job runs on, and its summary will be spooled",
                        failure.message()
                    );
                }
                if let Some(f) = self.summary.take() {
                    let _ = f.done.send(Delivery::Failed(format!(
                        "the broker refused the login: {}",
                        failure.message()
                    )));
                    return;
                }
            } else if !told {
                crate::warn!(
                    "AMQP: cannot reach the broker: {}; the job runs on, up to {} samples are kept, retrying",
                    failure.message(),
                    self.shared.capacity
                );
            } else {
                crate::debug!("AMQP: {}", failure.message());
            }
            told = true;
            let slow = refused || config;
            let delay = if self.ending && !slow { ENDING_RETRY } else { backoff.next(slow) };
            // Sleep, but start over at once when the job ends or the summary arrives.
            let pause = or(
                async { Pause::Finish(self.finishing.recv_async().await.ok()) },
                or(
                    async {
                        let _ = self.hurried.recv_async().await;
                        Pause::Hurry
                    },
                    async {
                        async_io::Timer::after(delay).await;
                        Pause::Over
                    },
                ),
            )
            .await;
            match pause {
                Pause::Finish(Some(f)) => {
                    self.summary = Some(f);
                    self.ending = true;
                }
                // The box is gone: nothing is waiting for this task any more.
                Pause::Finish(None) => return,
                Pause::Hurry => self.ending = true,
                Pause::Over => {}
            }
        }
    }

    /// One session on a live connection. `Ok` once the summary is delivered or refused for
    /// good; `Err` when the connection failed and must be rebuilt, saying how far it got.
    async fn serve(&mut self, conn: &Connection, uri: &lapin::uri::AMQPUri, first: bool) -> Result<(), Lost> {
        let node = link::describe(uri);
        let events = conn.events_listener();
        let publish = link::confirm_channel(conn).await.map_err(Lost::InSetUp)?;
        self.shared.set_connected(true);
        let how = if first { "connected to" } else { "reconnected to" };
        if first {
            crate::debug!("AMQP: {how} {node}");
        } else {
            crate::info!("AMQP: {how} {node}");
        }
        // The spool goes beside the session, never ahead of control or of this run's summary.
        let stop = Cell::new(false);
        let (ready, ready_rx) = flume::bounded(1);
        let sent = Cell::new(self.spool_sent);
        let (dir, limit, here) =
            (self.settings.spool_dir.clone(), self.settings.msgtimeout, link::destination(uri));
        let spool = async {
            if sent.get() {
                return std::future::pending().await;
            }
            // After control is served: a short job ends before, and costs neither itself nor
            // the broker anything for it.
            let _ = ready_rx.recv_async().await;
            if send_spool(conn, dir, here, limit, &stop).await {
                sent.set(true);
            }
            std::future::pending().await
        };
        let result = or(self.serve_loop(conn, publish, events, &stop, &ready), spool).await;
        self.spool_sent = sent.get();
        result
    }

    /// The session serving: samples, control, the summary. A failure to set up control (its
    /// queue and bindings) is [`Lost::InSetUp`]; every other one is [`Lost::Serving`].
    async fn serve_loop(
        &mut self,
        conn: &Connection,
        publish: Channel,
        events: impl futures_lite::Stream<Item = Event>,
        stop: &Cell<bool>,
        control_ready: &flume::Sender<()>,
    ) -> Result<(), Lost> {
        let mut events = std::pin::pin!(events);
        // Set up once the job has lived a moment; a job that ends first never needs it.
        let mut control: Option<link::PrivateQueue> = None;
        loop {
            self.publish_samples(&publish).await.map_err(Lost::Serving)?;
            if self.summary.is_some() {
                stop.set(true);
                // The loop answers a command before it hands over the summary, but both may be
                // waiting by the time this task wakes, and the summary may win the wake-up (a
                // kill ends the job at once): answer first, or the reply is lost.
                while let Ok(h) = self.replies.1.try_recv() {
                    let ch = control.as_ref().map_or(&publish, |q| &q.channel);
                    self.answer(ch, h).await.map_err(Lost::Serving)?;
                }
                return self.publish_summary(&publish).await.map_err(Lost::Serving);
            }
            let handled = self.replies.1.clone();
            let (consumer, due) = match control.as_mut() {
                Some(q) => (Some(&mut q.consumer), None),
                None => (None, Some(self.control_at)),
            };
            let wake = or(
                async {
                    match consumer {
                        Some(c) => Wake::Delivery(c.next().await.map(|r| r.map(Box::new))),
                        None => std::future::pending().await,
                    }
                },
                or(
                    async { Wake::Handled(handled.recv_async().await.ok()) },
                    or(
                        async { Wake::Finish(self.finishing.recv_async().await.ok()) },
                        or(
                            async { Wake::Event(events.next().await) },
                            or(
                                async {
                                    let _ = self.woken.recv_async().await;
                                    Wake::Sample
                                },
                                async {
                                    match due {
                                        Some(t) => async_io::Timer::at(t).await,
                                        None => std::future::pending().await,
                                    };
                                    Wake::Control
                                },
                            ),
                        ),
                    ),
                ),
            )
            .await;
            match wake {
                Wake::Control => {
                    let s = &self.settings;
                    let q = link::private_queue(
                        conn,
                        &s.exchange,
                        &s.bind_keys,
                        Some(PREFETCH),
                        link::COMMAND_MAX,
                    )
                    .await
                    .map_err(Lost::InSetUp)?;
                    control = Some(q);
                    let _ = control_ready.try_send(());
                    crate::debug!("AMQP: control keys bound: {}", s.bind_keys.join(", "));
                }
                Wake::Delivery(Some(Ok(d))) => self.on_delivery(*d).await.map_err(Lost::Serving)?,
                Wake::Delivery(Some(Err(e))) => return Err(Lost::Serving(Failure::from_lapin(&e))),
                Wake::Delivery(None) => {
                    return Err(Lost::Serving(Failure::Transient("the broker cancelled the consumer".into())))
                }
                Wake::Handled(Some(h)) => {
                    // A command taken by an earlier session may be answered before this one
                    // has its control channel.
                    let ch = control.as_ref().map_or(&publish, |q| &q.channel);
                    self.answer(ch, h).await.map_err(Lost::Serving)?;
                }
                Wake::Handled(None) | Wake::Sample => {}
                Wake::Finish(Some(f)) => self.summary = Some(f),
                Wake::Finish(None) => return Ok(()), // the box is gone without a summary
                // The spool's channel may close on an entry's error: only ours matter.
                Wake::Event(Some(Event::Error(e))) => {
                    let control_up = control.as_ref().is_none_or(|q| q.channel.status().connected());
                    if !(control_up && publish.status().connected()) {
                        return Err(Lost::Serving(Failure::from_lapin(&e)));
                    }
                    crate::debug!("AMQP: {e}");
                }
                Wake::Event(Some(Event::ConnectionBlocked(why))) => {
                    crate::warn!("AMQP: the broker blocks publishing: {why}; samples are kept meanwhile")
                }
                Wake::Event(Some(_)) => {}
                Wake::Event(None) => {
                    return Err(Lost::Serving(Failure::Transient("the connection closed".into())))
                }
            }
        }
    }

    /// A command: handed to the loop, and acknowledged once the loop has acted on it, whatever
    /// it held (never requeued). So the prefetch bounds how many commands are in flight: a
    /// flood waits in the broker, not in proc_box's memory.
    async fn on_delivery(&mut self, d: lapin::message::Delivery) -> Result<(), Failure> {
        let reply_to = d.properties.reply_to().as_ref().map(|s| s.to_string()).filter(|s| !s.is_empty());
        let corr = d.properties.correlation_id().as_ref().map(|s| s.to_string());
        let handled = self.replies.0.clone();
        let acker = d.acker.clone();
        let respond: Box<dyn FnOnce(Reply) + Send> = Box::new(move |reply| {
            let reply = reply_to.map(|to| (reply, to, corr));
            let _ = handled.send(Handled { acker, reply });
        });
        if !self.inbox.send(Request { raw: d.data, respond }) {
            ack(&d.acker).await; // the box is ending: nothing will act on it
        }
        Ok(())
    }

    /// Acknowledges a command the loop has acted on, and sends its reply if one was asked for.
    async fn answer(&self, ch: &Channel, h: Handled) -> Result<(), Failure> {
        ack(&h.acker).await;
        match h.reply {
            Some((reply, to, corr)) => self.send_reply(ch, reply, &to, corr).await,
            None => Ok(()),
        }
    }

    async fn send_reply(
        &self,
        ch: &Channel,
        reply: Reply,
        to: &str,
        corr: Option<String>,
    ) -> Result<(), Failure> {
        let mut props =
            BasicProperties::default().with_content_type("application/json".into()).with_type("reply".into());
        if let Some(c) = corr {
            props = props.with_correlation_id(c.into());
        }
        let line = reply.to_line();
        let body = line.trim_end().as_bytes();
        link::timed("publishing a reply", STEP, async {
            ch.basic_publish("".into(), to.into(), Default::default(), body, props).await?.await
        })
        .await?;
        Ok(())
    }

    /// Sends queued samples in batches; removes each from the buffer once confirmed.
    async fn publish_samples(&self, ch: &Channel) -> Result<(), Failure> {
        self.publish_sample_batches(ch).await.map_err(|f| {
            let s = &self.settings;
            f.during(&format!("publishing to '{}' on exchange '{}'", s.stats_key, s.exchange))
        })
    }

    async fn publish_sample_batches(&self, ch: &Channel) -> Result<(), Failure> {
        let limit = self.settings.msgtimeout.unwrap_or(SAMPLE_CONFIRM);
        loop {
            let batch = self.shared.peek(BATCH);
            let Some(last) = batch.last().map(|(s, _)| *s) else {
                return Ok(());
            };
            let mut confirms = Vec::with_capacity(batch.len());
            for (_, msg) in &batch {
                let step = ch.basic_publish(
                    self.settings.exchange.as_str().into(),
                    self.settings.stats_key.as_str().into(),
                    Default::default(),
                    msg.body.as_bytes(),
                    msg.properties(),
                );
                confirms.push(link::timed("publishing a sample", STEP, step).await?);
            }
            let mut nacked = 0;
            for c in confirms {
                if link::timed("sample confirm", limit, c).await?.is_nack() {
                    nacked += 1;
                }
            }
            self.shared.confirmed(last, nacked);
        }
    }

    async fn publish_summary(&mut self, ch: &Channel) -> Result<(), Failure> {
        let Some(finish) = self.summary.as_ref() else {
            return Ok(());
        };
        let result = link::publish_confirmed(
            ch,
            &self.settings.exchange,
            &self.settings.stats_key,
            &finish.msg,
            true,
            self.settings.msgtimeout,
        )
        .await?;
        let delivery = match result {
            Confirmed::Ack => Delivery::Confirmed,
            Confirmed::Unroutable => Delivery::Failed(format!(
                "no queue is bound to '{}' on exchange '{}'",
                self.settings.stats_key, self.settings.exchange
            )),
            Confirmed::Nack => Delivery::Failed("the broker refused the summary (nack)".into()),
        };
        if let Some(f) = self.summary.take() {
            let _ = f.done.send(delivery);
        }
        Ok(())
    }
}

/// Sends what earlier runs spooled for this broker, once per run; returns whether the pass
/// went through (a broken connection leaves it to the next session).
async fn send_spool(
    conn: &Connection,
    dir: std::path::PathBuf,
    here: super::spool::Destination,
    limit: Option<Duration>,
    stop: &Cell<bool>,
) -> bool {
    let listed = async_global_executor::spawn_blocking(move || {
        Spool::open(&dir, false).and_then(|s| s.map(|s| s.list().map(|l| (s, l))).transpose())
    })
    .await;
    let (spool, files) = match listed {
        Ok(Some(found)) => found,
        Ok(None) => return true,
        Err(e) => {
            crate::warn!("spool: {e}");
            return true;
        }
    };
    if files.is_empty() {
        crate::debug!("AMQP: nothing spooled");
        return true;
    }
    let opts = flush::Options { limit, here, any_broker: false, unmarked: false, all: false };
    let mut first_failure = None;
    let mut report = |r: Report| match r {
        Report::Sent(f) => crate::debug!("AMQP: delivered the spooled summary {}", f.display()),
        Report::Deferred { file, why, .. } => {
            crate::debug!("AMQP: spooled summary {} set aside: {why}", file.display());
            first_failure.get_or_insert_with(|| format!("{}: {why}", file.display()));
        }
        Report::Elsewhere { .. } => {}
        Report::Invalid(why) => crate::warn!("spool: {why}"),
    };
    match flush::flush(conn, &spool, files, &opts, &|| stop.get(), &mut report).await {
        Ok(t) => {
            if t.sent > 0 {
                crate::info!("AMQP: delivered {} spooled summaries", t.sent);
            }
            if t.elsewhere > 0 {
                crate::debug!("AMQP: {} spooled summaries are for other brokers; left alone", t.elsewhere);
            }
            if t.deferred > 0 {
                crate::warn!(
                    "AMQP: {} spooled summaries failed again and are set aside for a later retry (first: {})",
                    t.deferred,
                    first_failure.unwrap_or_default()
                );
            }
            !stop.get()
        }
        Err(f) => {
            crate::debug!("AMQP: sending the spool: {}", f.message());
            false
        }
    }
}
