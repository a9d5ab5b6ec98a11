//! `ledger run`: the consumer. Summaries go from a durable quorum queue into the database
//! exactly once: a batch is committed, then acknowledged, so a crash between the two causes a
//! redelivery that the idempotent insert turns into a no-op.
//!
//! * A message that cannot be stored (bad JSON, a missing field, an unknown schema, a row the
//!   database refuses) is copied to the dead-letter exchange with the reason in the
//!   `x-proc-box-reason` header and acknowledged (or, if that copy is not confirmed, rejected
//!   without requeue, which the queue's own dead-letter exchange takes), recorded in
//!   `dead_letters`, and counted. The messages around it are stored.
//! * While the database is away, nothing is acknowledged: the batch is retried with back-off
//!   and the broker keeps the rest. A broker connection that fails is rebuilt from scratch.

use super::ingest::{self, Parsed};
use super::store::{now_us, DbError, DbUrl, DeadLetter, Inserted, Job, SampleRow, Store, CONFLICT};
use crate::{status, BrokerArgs, Failed};
use futures_lite::future::or;
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ExchangeKind};
use proc_box::transport::amqp::link::{self, timed, Brokers, ClientInfo, Failure, STEP};
use std::time::{Duration, Instant};

/// How many redeliveries a message may have before the broker dead-letters it itself: far
/// more than restarts during an outage, so only a message that keeps killing the consumer
/// gets there.
pub const DELIVERY_LIMIT: i64 = 1000;

pub struct Options {
    pub db: DbUrl,
    pub queue: String,
    pub batch: usize,
    /// How long to wait for more messages to fill a batch.
    pub linger: Duration,
    /// Keep samples too (thinned per run), for the charts.
    pub samples: bool,
}

#[derive(Default)]
struct Counts {
    new: u64,
    duplicates: u64,
    dead: u64,
    skipped: u64,
    samples: u64,
}

fn log(line: &str) {
    crate::eprintln_safe(&format!("proc_boxctl ledger: {line}"));
}

/// The test fault point: SIGKILL right after a commit, before its acknowledgement.
fn kill_after_commit() -> bool {
    std::env::var("PBOX_LEDGER_FAULT").is_ok_and(|v| v == "kill-after-commit")
}

pub fn run(broker: &BrokerArgs, opts: Options) -> Result<u8, Failed> {
    let mut brokers =
        Brokers::parse(&broker.uri).map_err(|e| Failed::new(status::USAGE, format!("--uri: {e}")))?;
    let ca_pem = match &broker.cacert {
        Some(p) => Some(proc_box::config::read_cacert(p).map_err(|e| Failed::new(status::USAGE, e))?),
        None => None,
    };
    let tls = lapin::tcp::OwnedTLSConfig { identity: None, cert_chain: ca_pem };
    let mut store = open_retrying(&opts.db)?;
    let mut counts = Counts::default();
    async_global_executor::block_on(async {
        let mut backoff = Duration::from_millis(500);
        loop {
            let client = ClientInfo {
                product: "proc_boxctl",
                name: format!("proc_boxctl ledger {}", std::process::id()),
                box_id: None,
            };
            let started = Instant::now();
            let failure = match link::connect_any(&mut brokers, &tls, &client).await {
                Ok((conn, uri)) => {
                    let f = session(&conn, &uri, broker, &opts, store.as_mut(), &mut counts).await;
                    let _ = or(async { conn.close(200, "bye".into()).await.map_err(|_| ()) }, async {
                        async_io::Timer::after(STEP).await;
                        Ok(())
                    })
                    .await;
                    f
                }
                Err(f) => f,
            };
            if let Failure::Refused(m) = &failure {
                return Err(Failed::new(status::UNREACHABLE, format!("the broker refused the login: {m}")));
            }
            if started.elapsed() > Duration::from_secs(30) {
                backoff = Duration::from_millis(500);
            }
            log(&format!("{}; retrying in {}", failure.message(), humantime::format_duration(backoff)));
            async_io::Timer::after(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    })
}

/// Opens the database, waiting for it while it is unreachable (a consumer started with the
/// server it writes to must not give up); a bad URL or schema fails at once.
fn open_retrying(db: &DbUrl) -> Result<Box<dyn Store>, Failed> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match super::store::open(db) {
            Ok(s) => return Ok(s),
            Err(DbError::Fatal(m)) => return Err(Failed::new(status::REFUSED, m)),
            Err(DbError::Unavailable(m)) => {
                log(&format!("{m}; retrying in {}", humantime::format_duration(backoff)));
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in pairs {
        t.insert((*k).into(), v.clone());
    }
    t
}

/// Declares the dead-letter exchange and queue, the quorum queue and its binding.
async fn declare(ch: &Channel, broker: &BrokerArgs, queue: &str) -> Result<(), Failure> {
    let dead = format!("{queue}.dead");
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    let quorum = || ("x-queue-type", AMQPValue::LongString(LongString::from("quorum")));
    let xopts = ExchangeDeclareOptions { durable: true, ..Default::default() };
    timed(
        "exchange.declare",
        STEP,
        ch.exchange_declare(dead.as_str().into(), ExchangeKind::Fanout, xopts, FieldTable::default()),
    )
    .await
    .map_err(|f| f.during(&format!("declaring the dead-letter exchange '{dead}'")))?;
    timed("queue.declare", STEP, ch.queue_declare(dead.as_str().into(), durable, table(&[quorum()])))
        .await
        .map_err(|f| f.during(&format!("declaring the dead-letter queue '{dead}'")))?;
    timed(
        "queue.bind",
        STEP,
        ch.queue_bind(
            dead.as_str().into(),
            dead.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|f| f.during(&format!("binding '{dead}'")))?;
    let args = table(&[
        quorum(),
        ("x-dead-letter-exchange", AMQPValue::LongString(LongString::from(dead.as_str()))),
        ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
    ]);
    timed("queue.declare", STEP, ch.queue_declare(queue.into(), durable, args)).await.map_err(|f| {
        f.during(&format!("declaring the queue '{queue}' (declared before with other arguments?)"))
    })?;
    let key = format!("{}.#", broker.skey);
    timed(
        "queue.bind",
        STEP,
        ch.queue_bind(
            queue.into(),
            broker.exchange.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|f| f.during(&format!("binding '{key}' on exchange '{}'", broker.exchange)))?;
    Ok(())
}

/// A message to set aside: its delivery tag (none for a row the database refused after the
/// batch was taken apart), properties, body and why.
struct Dead {
    tag: Option<u64>,
    props: lapin::BasicProperties,
    data: Vec<u8>,
    why: String,
}

/// One delivery, sorted.
enum Item {
    Store(u64, Box<Job>),
    /// A sample, with `--samples`: never dead-lettered (samples are transient; a bad one is
    /// skipped).
    Sample(u64, Box<SampleRow>),
    Dead(Box<Dead>),
    Skip(u64),
}

fn sort(d: lapin::message::Delivery, samples: bool) -> Item {
    let tag = d.delivery_tag;
    if let Some(kind) = d.properties.kind() {
        if kind.as_str() == "sample" && samples {
            return match serde_json::from_slice::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| ingest::sample_row(&v))
            {
                Some(r) => Item::Sample(tag, Box::new(r)),
                None => Item::Skip(tag),
            };
        }
        if kind.as_str() != "summary" {
            return Item::Skip(tag);
        }
    }
    let parsed =
        std::str::from_utf8(&d.data).map_err(|_| "not UTF-8".to_owned()).and_then(ingest::parse_text);
    match parsed {
        Ok(Parsed::Job(j)) => Item::Store(tag, j),
        Ok(Parsed::Sample(r)) if samples => Item::Sample(tag, r),
        Ok(Parsed::Sample(_) | Parsed::Other) => Item::Skip(tag),
        Err(why) => Item::Dead(Box::new(Dead { tag: Some(tag), props: d.properties, data: d.data, why })),
    }
}

async fn session(
    conn: &Connection,
    uri: &lapin::uri::AMQPUri,
    broker: &BrokerArgs,
    opts: &Options,
    store: &mut dyn Store,
    counts: &mut Counts,
) -> Failure {
    match session_inner(conn, uri, broker, opts, store, counts).await {
        Ok(never) => match never {},
        Err(f) => f,
    }
}

async fn session_inner(
    conn: &Connection,
    uri: &lapin::uri::AMQPUri,
    broker: &BrokerArgs,
    opts: &Options,
    store: &mut dyn Store,
    counts: &mut Counts,
) -> Result<std::convert::Infallible, Failure> {
    let ch = timed("opening a channel", STEP, conn.create_channel()).await?;
    declare(&ch, broker, &opts.queue).await?;
    let confirm = link::confirm_channel(conn).await?;
    let prefetch = (opts.batch * 2).clamp(1, 65_535) as u16;
    timed("basic.qos", STEP, ch.basic_qos(prefetch, BasicQosOptions::default())).await?;
    let mut consumer = timed(
        "basic.consume",
        STEP,
        ch.basic_consume(
            opts.queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
    .map_err(|f| f.during(&format!("consuming '{}'", opts.queue)))?;
    log(&format!("connected to {}; consuming '{}'", link::describe(uri), opts.queue));
    let mut last_report = Instant::now();
    loop {
        // The first of a batch: wait, but look at the connection now and then, since a
        // consumer stream may not report a lost connection.
        let first = loop {
            let next = or(async { Some(consumer.next().await) }, async {
                async_io::Timer::after(Duration::from_secs(2)).await;
                None
            })
            .await;
            match next {
                Some(Some(Ok(d))) => break d,
                Some(Some(Err(e))) => return Err(Failure::from_lapin(&e)),
                Some(None) => return Err(Failure::Transient("the consumer was cancelled".into())),
                None if !conn.status().connected() || !ch.status().connected() => {
                    return Err(Failure::Transient("the connection to the broker was lost".into()))
                }
                None => {}
            }
        };
        let mut batch = vec![sort(first, opts.samples)];
        let deadline = Instant::now() + opts.linger;
        while batch.len() < opts.batch {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = or(async { consumer.next().await.map(Some) }, async {
                async_io::Timer::after(left).await;
                Some(None)
            })
            .await;
            match next {
                Some(Some(Ok(d))) => batch.push(sort(d, opts.samples)),
                Some(Some(Err(e))) => return Err(Failure::from_lapin(&e)),
                Some(None) => break,
                None => return Err(Failure::Transient("the consumer was cancelled".into())),
            }
        }
        handle(&ch, &confirm, opts, store, counts, batch).await?;
        if last_report.elapsed() > Duration::from_secs(60) {
            last_report = Instant::now();
            log(&format!(
                "{} stored, {} already stored, {} dead-lettered, {} not summaries, {} samples kept",
                counts.new, counts.duplicates, counts.dead, counts.skipped, counts.samples
            ));
        }
    }
}

/// Stores a batch (retrying while the database is away), dead-letters what cannot be
/// stored, then acknowledges the lot.
async fn handle(
    ch: &Channel,
    confirm: &Channel,
    opts: &Options,
    store: &mut dyn Store,
    counts: &mut Counts,
    batch: Vec<Item>,
) -> Result<(), Failure> {
    let Some(last_tag) = batch
        .iter()
        .map(|i| match i {
            Item::Store(t, _) | Item::Sample(t, _) | Item::Skip(t) => *t,
            Item::Dead(d) => d.tag.unwrap_or(0),
        })
        .max()
    else {
        return Ok(());
    };
    let mut jobs = Vec::new();
    let mut samples = Vec::new();
    let mut dead = Vec::new();
    for item in batch {
        match item {
            Item::Store(_, j) => jobs.push(*j),
            Item::Sample(_, r) => samples.push(*r),
            Item::Dead(d) => dead.push(*d),
            Item::Skip(_) => counts.skipped += 1,
        }
    }
    // Samples first, so that a job's summary never lands before its last samples; a batch of
    // samples the database refuses for good is logged and let go (they only draw a chart).
    if !samples.is_empty() {
        match retry(|| store.insert_samples(&samples)).await {
            Ok(n) => counts.samples += n as u64,
            Err(m) => log(&format!("{} samples not kept: {m}", samples.len())),
        }
    }
    // Rows the database itself refuses (one at a time, to find them) join the dead letters.
    let refused = store_all(store, &jobs, counts).await;
    for (i, why) in refused {
        let j = &jobs[i];
        dead.push(Dead {
            tag: None,
            props: lapin::BasicProperties::default()
                .with_type("summary".into())
                .with_message_id(j.message_id.as_str().into()),
            data: j.raw.as_bytes().to_vec(),
            why,
        });
    }
    for d in &dead {
        let why = &d.why;
        log(&format!(
            "dead-lettered {}: {why}",
            d.props.message_id().as_ref().map_or("a message", |m| m.as_str())
        ));
        let mut rec = DeadLetter {
            message_id: d.props.message_id().as_ref().map(|m| m.to_string()),
            reason: why.clone(),
            at_us: now_us(),
        };
        if rec.message_id.is_none() {
            rec.message_id = serde_json::from_slice::<serde_json::Value>(&d.data)
                .ok()
                .and_then(|v| v["message_id"].as_str().map(str::to_owned));
        }
        let mut headers = d.props.headers().clone().unwrap_or_default();
        headers.insert("x-proc-box-reason".into(), AMQPValue::LongString(LongString::from(why.as_str())));
        headers
            .insert("x-proc-box-queue".into(), AMQPValue::LongString(LongString::from(opts.queue.as_str())));
        let props = d.props.clone().with_headers(headers).with_delivery_mode(2);
        let dead_x = format!("{}.dead", opts.queue);
        let published = async {
            let c = confirm
                .basic_publish(
                    dead_x.as_str().into(),
                    "".into(),
                    BasicPublishOptions::default(),
                    &d.data,
                    props,
                )
                .await?;
            c.await
        };
        let ok = matches!(timed("publishing a dead letter", STEP, published).await, Ok(c) if c.is_ack());
        if let (false, Some(tag)) = (ok, d.tag) {
            // The queue's own dead-letter exchange takes it, without the reason header.
            timed("basic.reject", STEP, ch.basic_reject(tag, BasicRejectOptions { requeue: false })).await?;
        }
        if let Err(m) = retry(|| store.dead_letter(&rec)).await {
            log(&format!("could not record the dead letter: {m}"));
        }
        counts.dead += 1;
    }
    if kill_after_commit() {
        log("committed; the fault point kills the ledger before its acknowledgement");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    timed("basic.ack", STEP, ch.basic_ack(last_tag, BasicAckOptions { multiple: true })).await?;
    Ok(())
}

/// Runs a database step until it succeeds or fails for good; waits with back-off while the
/// database is unavailable. `Err` only for a fatal error.
async fn retry<T>(mut step: impl FnMut() -> Result<T, DbError>) -> Result<T, String> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match step() {
            Ok(v) => return Ok(v),
            Err(DbError::Fatal(m)) => return Err(m),
            Err(DbError::Unavailable(m)) => {
                log(&format!(
                    "{m}; nothing is acknowledged until it is back; retrying in {}",
                    humantime::format_duration(backoff)
                ));
                async_io::Timer::after(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Stores the jobs in one transaction; if the database refuses the batch, one by one, and
/// returns the ones it refuses (index, reason).
async fn store_all(store: &mut dyn Store, jobs: &[Job], counts: &mut Counts) -> Vec<(usize, String)> {
    if jobs.is_empty() {
        return Vec::new();
    }
    let mut refused = Vec::new();
    let mut tally = |at: usize, n: usize, done: Inserted, refused: &mut Vec<(usize, String)>| {
        counts.new += done.new as u64;
        counts.duplicates += (n - done.new - done.conflicts.len()) as u64;
        refused.extend(done.conflicts.into_iter().map(|i| (at + i, CONFLICT.to_owned())));
    };
    match retry(|| store.insert(jobs, now_us())).await {
        Ok(done) => tally(0, jobs.len(), done, &mut refused),
        Err(_) => {
            for (i, j) in jobs.iter().enumerate() {
                match retry(|| store.insert(std::slice::from_ref(j), now_us())).await {
                    Ok(done) => tally(i, 1, done, &mut refused),
                    Err(m) => refused.push((i, format!("the database refused it: {m}"))),
                }
            }
        }
    }
    refused
}
