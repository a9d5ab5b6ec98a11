//! One connection to the broker: parse and rotate the URIs, connect with a timeout, classify
//! what went wrong, and publish with confirms. Shared by proc_box and `proc_boxctl`.
//!
//! lapin neither reconnects by itself nor bounds `connect`, and its auto-recovery retries one
//! URI without jitter; so the session rebuilds everything by hand, through this module.

use futures_lite::future;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError, BasicProperties};
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Channel, Connection, ConnectionProperties, ErrorKind};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bound on every network step (connect, declare, bind, consume): `connect` can hang.
pub const STEP: Duration = Duration::from_secs(10);

/// Frame size asked of the broker (defined with the stack bound it sets: see [`crate::stack`]).
pub use crate::stack::FRAME_MAX;

/// The most one command may cost the box before it is read: its control queue refuses a
/// longer message (the control socket's line bound).
pub const COMMAND_MAX: u32 = crate::control::MAX_LINE as u32;

/// The same for `proc_boxctl`'s queues (`watch`, and the replies of `send`): far above any
/// sample, summary or reply a box sends (a summary carries the job's argv, at most a few MiB).
pub const REPORT_MAX: u32 = 8 << 20;

/// The `-uri` list: comma-separated nodes of one cluster, tried in turn from a random one, so
/// that a fleet of boxes given the same list spreads over the nodes instead of all landing on
/// the first (and failing over together).
#[derive(Clone, Debug)]
pub struct Brokers {
    uris: Vec<AMQPUri>,
    next: usize,
}

impl Brokers {
    /// Parses `amqp://…,amqps://…`. A URI that names no vhost, or ends in a bare `/`, uses the
    /// vhost `/`, as the Go tool's library did.
    pub fn parse(list: &str) -> Result<Brokers, String> {
        Brokers::parse_with(list, &mut fastrand::Rng::new())
    }

    /// [`Brokers::parse`], drawing the first node from `rng`.
    pub fn parse_with(list: &str, rng: &mut fastrand::Rng) -> Result<Brokers, String> {
        let mut uris = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !(item.starts_with("amqp://") || item.starts_with("amqps://")) {
                return Err(format!("'{}': an AMQP URI starts with amqp:// or amqps://", redact(item)));
            }
            let mut uri: AMQPUri =
                item.parse().map_err(|e| format!("'{}' is not a valid AMQP URI: {e}", redact(item)))?;
            if uri.vhost.is_empty() {
                uri.vhost = "/".into();
            }
            // lapin keeps 32 frames of buffer each way: at RabbitMQ's 128 KiB frames that is
            // 8 MiB of resident memory for messages of a few KiB; and its receive buffer bounds
            // the nesting a header can bring to its recursive parser.
            uri.query.frame_max = Some(FRAME_MAX);
            uris.push(uri);
        }
        if uris.is_empty() {
            return Err("the AMQP URI list is empty".into());
        }
        let next = rng.usize(..uris.len());
        Ok(Brokers { uris, next })
    }

    /// The next node to try, round robin.
    pub fn rotate(&mut self) -> &AMQPUri {
        let i = self.next % self.uris.len();
        self.next = self.next.wrapping_add(1);
        &self.uris[i]
    }

    pub fn len(&self) -> usize {
        self.uris.len()
    }

    /// Every node, as a spooled message records where it was going.
    pub fn destinations(&self) -> Vec<super::spool::Destination> {
        self.uris.iter().map(destination).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.uris.is_empty()
    }
}

/// `host:port/vhost` of a URI: what logs show, never the password.
pub fn describe(uri: &AMQPUri) -> String {
    let scheme = if uri.scheme == AMQPScheme::AMQPS { "amqps" } else { "amqp" };
    format!("{scheme}://{}:{} (vhost {})", uri.authority.host, uri.authority.port, uri.vhost)
}

/// A node as the spool records it: host (lower case), port and vhost; never the user.
pub fn destination(uri: &AMQPUri) -> super::spool::Destination {
    super::spool::Destination {
        host: uri.authority.host.to_ascii_lowercase(),
        port: uri.authority.port,
        vhost: uri.vhost.clone(),
    }
}

/// A URI as typed, with any password replaced, for error messages.
fn redact(uri: &str) -> String {
    match (uri.find("://"), uri.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &uri[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &uri[..s + 3], &uri[at..])
        }
        _ => uri.to_owned(),
    }
}

/// Why a connection attempt or a session failed, as far as it changes what to do next.
#[derive(Debug)]
pub enum Failure {
    /// The broker refused the credentials or the vhost: retrying soon will not help.
    Refused(String),
    /// Logged in, but a declare, bind or publish named something missing (NOT_FOUND: a
    /// mistyped `--exchange`) or forbidden (ACCESS_REFUSED: the user's permissions). The
    /// operator must act: retrying soon would only make a reconnection storm.
    Config(String),
    /// Anything else: unreachable, reset, timed out. Retry with backoff.
    Transient(String),
}

impl Failure {
    pub fn from_lapin(e: &lapin::Error) -> Failure {
        let refused = match e.kind() {
            ErrorKind::ProtocolError(p) => matches!(
                p.kind(),
                AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                    | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED)
            ),
            ErrorKind::AuthProviderError(_) => true,
            _ => false,
        };
        let missing = matches!(e.kind(),
            ErrorKind::ProtocolError(p) if p.kind() == &AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND));
        if refused {
            Failure::Refused(e.to_string())
        } else if missing {
            Failure::Config(e.to_string())
        } else {
            Failure::Transient(e.to_string())
        }
    }

    /// The failure of a step taken once logged in, saying which: a refusal there is about
    /// permissions, not the login, so it is a [`Failure::Config`] too.
    pub fn during(self, what: &str) -> Failure {
        match self {
            Failure::Refused(m) | Failure::Config(m) => Failure::Config(format!("{what}: {m}")),
            Failure::Transient(m) => Failure::Transient(m),
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Refused(m) | Failure::Config(m) | Failure::Transient(m) => m,
        }
    }
}

/// Runs `step`, failing with a clear message after `limit`.
pub async fn timed<T>(
    what: &str,
    limit: Duration,
    step: impl Future<Output = lapin::Result<T>>,
) -> Result<T, Failure> {
    let timeout = async {
        async_io::Timer::after(limit).await;
        Err(Failure::Transient(format!("{what}: no answer within {}", humantime::format_duration(limit))))
    };
    future::or(async { step.await.map_err(|e| Failure::from_lapin(&e)) }, timeout).await
}

/// What identifies this client in the broker's connection list.
pub struct ClientInfo<'a> {
    pub product: &'a str,
    /// The connection name shown by the broker.
    pub name: String,
    pub box_id: Option<&'a str>,
}

/// Connects to one node within [`STEP`].
pub async fn connect(
    uri: &AMQPUri,
    tls: &OwnedTLSConfig,
    client: &ClientInfo<'_>,
) -> Result<Connection, Failure> {
    let mut props = ConnectionProperties::default()
        .with_connection_name(client.name.clone().into())
        .with_client_property("product".into(), client.product.into())
        .with_client_property("version".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(id) = client.box_id {
        props = props.with_client_property("box_id".into(), id.into());
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| Failure::Transient(e.to_string()))?;
    let tls = OwnedTLSConfig { identity: None, cert_chain: tls.cert_chain.clone() };
    let conn = timed(
        &format!("connecting to {}", describe(uri)),
        STEP,
        Connection::connect_uri_with_config(uri.clone(), props, tls, runtime),
    )
    .await?;
    Ok(conn)
}

/// Tries every node once, in turn, starting with the next one; returns the first that answers,
/// and its URI. On failure, the last node's reason (a refusal wins: it needs the operator).
pub async fn connect_any(
    brokers: &mut Brokers,
    tls: &OwnedTLSConfig,
    client: &ClientInfo<'_>,
) -> Result<(Connection, AMQPUri), Failure> {
    let mut failure = None;
    for _ in 0..brokers.len() {
        let uri = brokers.rotate().clone();
        match connect(&uri, tls, client).await {
            Ok(c) => return Ok((c, uri)),
            Err(f) => {
                let f = match f {
                    Failure::Refused(m) => Failure::Refused(format!("{}: {m}", describe(&uri))),
                    Failure::Config(m) => Failure::Config(format!("{}: {m}", describe(&uri))),
                    Failure::Transient(m) if m.starts_with("connecting") => Failure::Transient(m),
                    Failure::Transient(m) => Failure::Transient(format!("{}: {m}", describe(&uri))),
                };
                if !matches!(failure, Some(Failure::Refused(_))) {
                    failure = Some(f);
                }
            }
        }
    }
    Err(failure.unwrap_or_else(|| Failure::Transient("no broker".into())))
}

/// A private queue to consume from: server-named, exclusive and auto-delete (gone with the
/// connection), bound to `keys` on `exchange`. With `prefetch`, deliveries are acknowledged by
/// the caller and at most that many are in flight; without, the broker forgets them as sent.
///
/// lapin buffers a message whole before handing it over, so the queue itself refuses any
/// message over `max_bytes` (`x-max-length-bytes` with `x-overflow: reject-publish`: RabbitMQ
/// then refuses a message that would take the queue's ready bytes over the bound, so one
/// larger than the bound always, even with a consumer waiting). What one delivery costs is
/// bounded before it leaves the broker; a publisher with confirms gets a nack.
pub struct PrivateQueue {
    pub channel: Channel,
    pub name: String,
    pub consumer: lapin::Consumer,
}

pub async fn private_queue(
    conn: &Connection,
    exchange: &str,
    keys: &[String],
    prefetch: Option<u16>,
    max_bytes: u32,
) -> Result<PrivateQueue, Failure> {
    use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let channel = timed("opening a channel", STEP, conn.create_channel()).await?;
    if let Some(n) = prefetch {
        timed("basic.qos", STEP, channel.basic_qos(n, BasicQosOptions::default())).await?;
    }
    let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let mut args = FieldTable::default();
    args.insert("x-max-length-bytes".into(), AMQPValue::LongUInt(max_bytes));
    args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    let queue = timed("queue.declare", STEP, channel.queue_declare("".into(), excl, args))
        .await
        .map_err(|f| f.during("declaring a private queue"))?;
    for key in keys {
        let bind = channel.queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        timed("queue.bind", STEP, bind)
            .await
            .map_err(|f| f.during(&format!("binding '{key}' on exchange '{exchange}'")))?;
    }
    let opts = BasicConsumeOptions { no_ack: prefetch.is_none(), ..Default::default() };
    let consume = channel.basic_consume(queue.name().clone(), "".into(), opts, FieldTable::default());
    let consumer = timed("basic.consume", STEP, consume).await?;
    Ok(PrivateQueue { channel, name: queue.name().to_string(), consumer })
}

/// A channel in confirm mode, for what must arrive.
pub async fn confirm_channel(conn: &Connection) -> Result<Channel, Failure> {
    let ch = timed("opening a channel", STEP, conn.create_channel()).await?;
    timed("confirm.select", STEP, ch.confirm_select(ConfirmSelectOptions::default())).await?;
    Ok(ch)
}

/// One message to publish, with the contract's properties.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// `sample` or `summary` (the AMQP `type`).
    pub kind: String,
    pub message_id: String,
    pub body: String,
    /// Unix seconds.
    pub timestamp: u64,
    pub persistent: bool,
}

impl Outgoing {
    pub fn new(kind: &str, message_id: String, body: String, persistent: bool) -> Outgoing {
        let timestamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Outgoing { kind: kind.into(), message_id, body, timestamp, persistent }
    }

    pub fn properties(&self) -> BasicProperties {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_type(self.kind.as_str().into())
            .with_message_id(self.message_id.as_str().into())
            .with_timestamp(self.timestamp)
            .with_app_id("proc_box".into())
            .with_delivery_mode(if self.persistent { 2 } else { 1 })
    }
}

/// What the broker said about a message published with confirms.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmed {
    /// Taken, and routed to at least one queue (or not mandatory).
    Ack,
    /// `mandatory` and no queue is bound to the key.
    Unroutable,
    /// The broker refused it (nack).
    Nack,
}

/// Publishes `msg` on a confirm channel and waits for the broker's answer, at most `limit`
/// (`None`: no limit).
pub async fn publish_confirmed(
    ch: &Channel,
    exchange: &str,
    routing_key: &str,
    msg: &Outgoing,
    mandatory: bool,
    limit: Option<Duration>,
) -> Result<Confirmed, Failure> {
    let step = async {
        let opts = BasicPublishOptions { mandatory, ..Default::default() };
        let confirm = ch
            .basic_publish(exchange.into(), routing_key.into(), opts, msg.body.as_bytes(), msg.properties())
            .await?;
        confirm.await
    };
    let confirmation = match limit {
        Some(limit) => timed("publisher confirm", limit, step).await,
        None => step.await.map_err(|e| Failure::from_lapin(&e)),
    }
    .map_err(|f| f.during(&format!("publishing to '{routing_key}' on exchange '{exchange}'")))?;
    Ok(if confirmation.is_nack() {
        Confirmed::Nack
    } else if confirmation.take_message().is_some() {
        Confirmed::Unroutable
    } else {
        Confirmed::Ack
    })
}

/// A box id as it appears in a routing key: `*` and `#` would be wildcards in a binding (a box
/// could hear others' commands), so both become `_`. Dots stay: PBS ids have them, and an
/// exact key with more words still routes exactly.
pub fn key_word(id: &str) -> String {
    id.chars().map(|c| if matches!(c, '*' | '#') { '_' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_lists_rotate_and_default_the_vhost() {
        let list = "amqp://u:p@a:1/, amqps://b:2/x,amqp://c";
        let names = ["amqp://a:1 (vhost /)", "amqps://b:2 (vhost x)", "amqp://c:5672 (vhost /)"];
        let mut b = Brokers::parse(list).unwrap();
        assert_eq!(b.len(), 3);
        let start = describe(b.rotate());
        let first = names.iter().position(|n| *n == start).unwrap();
        for i in 1..=3 {
            assert_eq!(describe(b.rotate()), names[(first + i) % 3], "in turn, round the list");
        }
    }

    #[test]
    fn a_fleet_starts_spread_over_the_nodes() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut starts = [0usize; 3];
        for _ in 0..3000 {
            let mut b = Brokers::parse_with("amqp://a,amqp://b,amqp://c", &mut rng).unwrap();
            starts[(b.rotate().authority.host.as_bytes()[0] - b'a') as usize] += 1;
        }
        assert!(starts.iter().all(|&n| (800..1200).contains(&n)), "{starts:?}");
        let mut one = Brokers::parse("amqp://only").unwrap();
        assert_eq!(one.rotate().authority.host, "only");
    }

    #[test]
    fn bad_uris_are_refused_without_the_password() {
        let e = Brokers::parse("http://u:secret@h").unwrap_err();
        assert!(e.contains("amqp://") && !e.contains("secret"), "{e}");
        assert!(Brokers::parse(" , ").is_err());
        let e = Brokers::parse("amqp://u:secret@h:notaport").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn box_ids_cannot_widen_a_binding() {
        assert_eq!(key_word("job.#.*"), "job._._");
        assert_eq!(key_word("1234"), "1234");
    }
}
