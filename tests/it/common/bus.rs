//! The tests' side of the real broker: a private pair of routing keys per test (so tests run
//! side by side on one broker), a queue that captures everything the boxes emit, and a reply
//! queue for commands. Built on lapin directly, never on proc_box's own AMQP code.
#![allow(dead_code)]

use super::DEADLINE;
use futures_lite::future::or;
use futures_lite::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::BasicProperties;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const EXCHANGE: &str = "amq.topic";

/// One message the boxes emitted, with the properties that came with it.
#[derive(Clone, Debug)]
pub struct Message {
    pub routing_key: String,
    pub props: BasicProperties,
    pub body: Value,
}

impl Message {
    pub fn kind(&self) -> Option<String> {
        self.props.kind().as_ref().map(|s| s.to_string())
    }
}

/// proc_box's AMQP arguments for a box with this id, on these keys.
pub fn args(rkey: &str, skey: &str, id: &str) -> Vec<String> {
    args_on(URI, rkey, skey, id)
}

/// The same, on the broker at `uri`.
pub fn args_on(uri: &str, rkey: &str, skey: &str, id: &str) -> Vec<String> {
    ["--uri", uri, "--rkey", rkey, "--skey", skey, "--id", id].iter().map(|s| s.to_string()).collect()
}

pub struct Bus {
    /// The broker this bus is on.
    pub uri: String,
    pub rkey: String,
    pub skey: String,
    conn: Connection,
    channel: Channel,
    emitted: Consumer,
    replies: Consumer,
    reply_queue: String,
    /// Everything received so far, in order.
    pub messages: Vec<Message>,
    pub reply_log: Vec<(Option<String>, Value)>,
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    async_global_executor::block_on(f)
}

impl Bus {
    pub fn new(tag: &str) -> Bus {
        Bus::new_on(URI, tag)
    }

    /// A bus with keys of its own on the broker at `uri`.
    pub fn new_on(uri: &str, tag: &str) -> Bus {
        static N: AtomicUsize = AtomicUsize::new(0);
        let unique = format!("t{}.{tag}.{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        Bus::attach_to(uri, format!("{unique}.rc"), format!("{unique}.stats"))
    }

    /// A new connection on existing keys (after the broker dropped the old one).
    pub fn attach(rkey: String, skey: String) -> Bus {
        Bus::attach_to(URI, rkey, skey)
    }

    /// The same, on the broker at `uri`.
    pub fn attach_to(uri: &str, rkey: String, skey: String) -> Bus {
        block(async {
            let conn =
                Connection::connect(uri, ConnectionProperties::default()).await.expect("the test broker");
            let channel = conn.create_channel().await.unwrap();
            channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            let q = channel.queue_declare("".into(), excl, FieldTable::default()).await.unwrap();
            channel
                .queue_bind(
                    q.name().clone(),
                    EXCHANGE.into(),
                    format!("{skey}.#").into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
            let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
            let emitted = channel
                .basic_consume(q.name().clone(), "".into(), no_ack, FieldTable::default())
                .await
                .unwrap();
            let rq = channel.queue_declare("".into(), excl, FieldTable::default()).await.unwrap();
            let replies = channel
                .basic_consume(rq.name().clone(), "".into(), no_ack, FieldTable::default())
                .await
                .unwrap();
            Bus {
                uri: uri.to_string(),
                rkey,
                skey,
                conn,
                channel,
                emitted,
                replies,
                reply_queue: rq.name().to_string(),
                messages: Vec::new(),
                reply_log: Vec::new(),
            }
        })
    }

    /// proc_box's AMQP arguments for a box with this id.
    pub fn args(&self, id: &str) -> Vec<String> {
        args_on(&self.uri, &self.rkey, &self.skey, id)
    }

    /// Publishes raw bytes on `key`; with `reply`, asks for a reply with that correlation id.
    /// Returns false if no queue took it (the box is not bound yet).
    pub fn publish(&self, key: &str, body: &[u8], reply: Option<&str>) -> bool {
        let mut props = BasicProperties::default();
        if let Some(c) = reply {
            props = props.with_reply_to(self.reply_queue.as_str().into()).with_correlation_id(c.into());
        }
        block(async {
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm = self
                .channel
                .basic_publish(EXCHANGE.into(), key.into(), opts, body, props)
                .await
                .unwrap()
                .await
                .unwrap();
            confirm.take_message().is_none()
        })
    }

    /// Publishes raw bytes on `key` (mandatory, confirmed); true if the broker nacked them
    /// (a queue refused them).
    pub fn publish_nacked(&self, key: &str, body: &[u8]) -> bool {
        block(async {
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm = self
                .channel
                .basic_publish(EXCHANGE.into(), key.into(), opts, body, BasicProperties::default())
                .await
                .unwrap()
                .await
                .unwrap();
            confirm.is_nack()
        })
    }

    /// The next reply with this correlation id, or None after `wait`.
    pub fn reply(&mut self, corr: &str, wait: Duration) -> Option<Value> {
        let until = Instant::now() + wait;
        loop {
            if let Some(i) = self.reply_log.iter().position(|(c, _)| c.as_deref() == Some(corr)) {
                return Some(self.reply_log.remove(i).1);
            }
            let left = until.checked_duration_since(Instant::now())?;
            let d = block(or(async { self.replies.next().await }, async {
                async_io::Timer::after(left).await;
                None
            }))?;
            let d = d.expect("reply delivery");
            let corr = d.properties.correlation_id().as_ref().map(|c| c.to_string());
            let body = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
            self.reply_log.push((corr, body));
        }
    }

    /// Sends a command to one box (None: broadcast) and returns its reply.
    pub fn command(&mut self, id: Option<&str>, command: &str, args: &[&str]) -> Value {
        let body = serde_json::json!({"command": command, "arguments": args}).to_string();
        let key = self.key(id);
        let corr = format!("c{}", fastrand::u64(..));
        assert!(self.publish(&key, body.as_bytes(), Some(&corr)), "no box is bound to {key}");
        self.reply(&corr, DEADLINE)
            .unwrap_or_else(|| panic!("no reply to {command} on {key} within {DEADLINE:?}"))
    }

    pub fn key(&self, id: Option<&str>) -> String {
        match id {
            Some(id) => format!("{}.{id}", self.rkey),
            None => self.rkey.clone(),
        }
    }

    /// Waits until box `id` is bound and answers `status`.
    pub fn wait_for_box(&mut self, id: &str) -> Value {
        let start = Instant::now();
        let key = self.key(Some(id));
        loop {
            let corr = format!("w{}", fastrand::u64(..));
            if self.publish(&key, br#"{"command":"status"}"#, Some(&corr)) {
                if let Some(r) = self.reply(&corr, DEADLINE) {
                    return r;
                }
            }
            assert!(start.elapsed() < DEADLINE, "box {id} never bound {key}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Receives emitted messages until `check` finds what it wants among all received so far.
    pub fn wait_message<T>(&mut self, what: &str, mut check: impl FnMut(&[Message]) -> Option<T>) -> T {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some(t) = check(&self.messages) {
                return t;
            }
            let left = until
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| panic!("no {what} within {DEADLINE:?}; got {:#?}", self.summaries()));
            let next = block(or(async { self.emitted.next().await }, async {
                async_io::Timer::after(left).await;
                None
            }));
            if let Some(d) = next {
                let d = d.expect("emitted delivery");
                self.messages.push(Message {
                    routing_key: d.routing_key.to_string(),
                    props: d.properties.clone(),
                    body: serde_json::from_slice(&d.data).unwrap_or(Value::Null),
                });
            }
        }
    }

    /// Takes in everything already queued: publishes a marker behind it (call this once the
    /// publishers have exited) and receives until the marker comes through.
    pub fn drain(&mut self) {
        let marker = format!("marker-{}", fastrand::u64(..));
        let key = format!("{}.marker", self.skey);
        assert!(self.publish(&key, format!("{{\"marker\":\"{marker}\"}}").as_bytes(), None));
        self.wait_message("the drain marker", |m| {
            m.iter().any(|m| m.body["marker"] == marker.as_str()).then_some(())
        });
    }

    /// Waits for box `id`'s summary; returns it.
    pub fn summary(&mut self, id: &str) -> Message {
        self.wait_message(&format!("summary of {id}"), |m| {
            m.iter().find(|m| m.kind().as_deref() == Some("summary") && m.body["box_id"] == id).cloned()
        })
    }

    pub fn summaries(&self) -> Vec<&Value> {
        self.messages.iter().filter(|m| m.kind().as_deref() == Some("summary")).map(|m| &m.body).collect()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        block(async {
            let _ = self.conn.close(200, "OK".into()).await;
        });
    }
}
