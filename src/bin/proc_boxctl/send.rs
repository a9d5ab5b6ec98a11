//! `send` and `status`: one command out, the replies back, over the broker or a socket.

use crate::{close, eprintln_safe, println_safe, status, BrokerArgs, Failed};
use clap::Args;
use futures_lite::future::or;
use futures_lite::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::protocol::BasicProperties;
use proc_box::auth::{self, Key, Target as Signed};
use proc_box::transport::amqp::link::{self, STEP};
use proc_box::units::parse_duration;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// the box to address (its --id)
    #[arg(long, conflicts_with = "all", required_unless_present_any = ["all", "socket"])]
    id: Option<String>,
    /// every box bound to the control key; each reply is printed as it comes, until --wait
    #[arg(long)]
    all: bool,
    /// with --all: stop as soon as N replies have come (exit 3 if fewer came within --wait)
    #[arg(long, value_name = "N", requires = "all", value_parser = clap::value_parser!(u64).range(1..))]
    expect: Option<u64>,
    #[command(flatten)]
    common: Common,
    /// the command (stop, suspend, resume, kill, sample, change_sample_rate, timer_*, status)
    command: String,
    /// its arguments, such as a signal for kill or a duration for change_sample_rate
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    arguments: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// the box (its --id); not needed with --socket
    #[arg(required_unless_present = "socket")]
    id: Option<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
struct Common {
    /// how long to wait for replies
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    wait: Duration,
    /// talk to a local box's control socket instead of the broker
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// the boxes' control key (their --control-token): commands are signed with it, and only
    /// replies signed with it are believed
    #[arg(
        long = "control-token",
        alias = "token",
        env = "PBOX_CONTROL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    control_token: Option<String>,
    /// read the control key from this file (its first line)
    #[arg(long = "control-token-file", env = "PBOX_CONTROL_TOKEN_FILE", value_name = "PATH")]
    control_token_file: Option<PathBuf>,
}

impl Common {
    fn key(&self) -> Result<Option<Key>, Failed> {
        let token = proc_box::config::control_token(
            self.control_token.as_deref(),
            self.control_token_file.as_deref(),
        )
        .map_err(|e| Failed::new(status::USAGE, e))?;
        Ok(token.map(|t| Key::new(t.as_bytes())))
    }
}

/// Where a command goes.
enum Target {
    Box(String),
    /// Every box; `Some(n)`: done after n replies.
    All(Option<u64>),
}

pub fn send(broker: &BrokerArgs, a: SendArgs) -> Result<u8, Failed> {
    let target = match a.id {
        Some(id) => Target::Box(id),
        None => Target::All(a.expect),
    };
    let (body, mut replies) = command_json(&a.command, &a.arguments, &a.common, broker, &target)?;
    // Each reply is printed as it comes; only the verdict needs them all.
    let mut all_ok = true;
    let mut print = |r: &Value| {
        all_ok &= verdict(std::slice::from_ref(r)) == status::OK;
        println_safe(&r.to_string());
    };
    match &a.common.socket {
        Some(path) => print(&via_socket(path, &body, a.common.wait, &mut replies)?),
        None => async_global_executor::block_on(via_broker(
            broker,
            &target,
            &body,
            a.common.wait,
            &mut replies,
            &mut print,
        ))?,
    }
    Ok(if all_ok { status::OK } else { status::REFUSED })
}

pub fn status(broker: &BrokerArgs, a: StatusArgs) -> Result<u8, Failed> {
    let target = Target::Box(a.id.clone().unwrap_or_default());
    let (body, mut replies) = command_json("status", &[], &a.common, broker, &target)?;
    let reply = match &a.common.socket {
        Some(path) => via_socket(path, &body, a.common.wait, &mut replies)?,
        None => {
            let mut reply = Value::Null;
            let mut keep = |r: &Value| reply = r.clone();
            async_global_executor::block_on(via_broker(
                broker,
                &target,
                &body,
                a.common.wait,
                &mut replies,
                &mut keep,
            ))?;
            reply
        }
    };
    let shown = reply.get("state").filter(|s| !s.is_null()).unwrap_or(&reply);
    println_safe(&serde_json::to_string_pretty(shown).unwrap_or_default());
    Ok(verdict(std::slice::from_ref(&reply)))
}

/// 0 when every reply is ok, 1 otherwise.
fn verdict(replies: &[Value]) -> u8 {
    if replies.iter().all(|r| r.get("ok") == Some(&Value::Bool(true))) {
        status::OK
    } else {
        status::REFUSED
    }
}

/// The command as JSON, checked with the boxes' own parser first so a typo fails here; with a
/// key, signed for its target. Also what its replies must be to be believed.
fn command_json(
    command: &str,
    arguments: &[String],
    common: &Common,
    broker: &BrokerArgs,
    target: &Target,
) -> Result<(String, Replies), Failed> {
    let body = json!({ "command": command, "arguments": arguments });
    let text = body.to_string();
    proc_box::command::parse(text.as_bytes()).map_err(|r| Failed::new(status::USAGE, r.error.to_string()))?;
    let Some(key) = common.key()? else {
        return Ok((text, Replies { key: None, seen: HashSet::new(), ignored: 0 }));
    };
    let to = match (target, &common.socket) {
        (_, Some(_)) => Signed::Socket,
        (Target::Box(id), None) => Signed::Box(id.clone()),
        (Target::All(_), None) => Signed::Key(broker.control_key()),
    };
    let (envelope, nonce) = auth::sign_command(&key, &body, &to, SystemTime::now());
    Ok((envelope, Replies { key: Some((key, nonce)), seen: HashSet::new(), ignored: 0 }))
}

/// Which replies are believed: with a key, only those signed with it for this very command,
/// each once (a genuine reply published again is not a second box).
struct Replies {
    key: Option<(Key, String)>,
    seen: HashSet<Vec<u8>>,
    ignored: u64,
}

impl Replies {
    /// The reply to show, or None (and a line on stderr) for one that is not to be believed.
    fn accept(&mut self, raw: &[u8]) -> Option<Value> {
        let Some((key, nonce)) = &self.key else {
            return Some(unsigned(raw));
        };
        match auth::open_reply(key, raw, nonce) {
            Ok(reply) if self.seen.insert(raw.to_vec()) => Some(reply),
            Ok(_) => None,
            Err(why) => {
                self.ignored += 1;
                // Compact JSON escapes every control character: nothing reaches the terminal raw.
                let shown = Value::String(String::from_utf8_lossy(&raw[..raw.len().min(200)]).into());
                eprintln_safe(&format!(
                    "proc_boxctl: ignored a reply that was not signed with the control key ({why}): {shown}"
                ));
                None
            }
        }
    }

    /// Why nothing came, when nothing believable did.
    fn none_within(&self, wait: &str) -> String {
        match self.ignored {
            0 => format!("no reply within {wait} (try a longer --wait)"),
            n => format!("no reply signed with the control key within {wait} ({n} ignored that were not)"),
        }
    }
}

/// A reply taken without a key: a signed one is unwrapped (not verified: no key, no trust).
fn unsigned(raw: &[u8]) -> Value {
    let reply = serde_json::from_slice::<Value>(raw)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into()));
    match reply.get("signed").and_then(Value::as_str).map(serde_json::from_str::<Value>) {
        Some(Ok(inner)) if auth::looks_signed(raw) => inner,
        _ => reply,
    }
}

fn via_socket(
    path: &std::path::Path,
    body: &str,
    wait: Duration,
    replies: &mut Replies,
) -> Result<Value, Failed> {
    use std::io::{BufRead, BufReader, Write};
    let unreachable =
        |e: std::io::Error| Failed::new(status::UNREACHABLE, format!("{}: {e}", path.display()));
    let mut s = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
    s.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).map_err(unreachable)?;
    s.write_all(format!("{body}\n").as_bytes()).map_err(unreachable)?;
    let mut line = String::new();
    match BufReader::new(&s).read_line(&mut line) {
        Ok(n) if n > 0 => {}
        Ok(_) => {
            return Err(Failed::new(status::NO_REPLY, format!("{} closed without a reply", path.display())))
        }
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
            return Err(Failed::new(
                status::NO_REPLY,
                format!("no reply from {} within --wait", path.display()),
            ))
        }
        Err(e) => return Err(unreachable(e)),
    }
    if replies.key.is_none() {
        serde_json::from_str::<Value>(&line)
            .map_err(|e| Failed::new(status::NO_REPLY, format!("a reply that is not JSON: {e}")))?;
        return Ok(unsigned(line.trim_end().as_bytes()));
    }
    replies.accept(line.trim_end().as_bytes()).ok_or_else(|| {
        Failed::new(
            status::NO_REPLY,
            format!("{}: the reply was not signed with the control key", path.display()),
        )
    })
}

/// Publishes the command with a private reply queue, then hands each reply to `on_reply` as it
/// comes: the first one for a single box; for `--all`, every one until `wait`, or until the
/// expected number came.
async fn via_broker(
    broker: &BrokerArgs,
    target: &Target,
    body: &str,
    wait: Duration,
    replies: &mut Replies,
    on_reply: &mut dyn FnMut(&Value),
) -> Result<(), Failed> {
    let conn = broker.connect().await?;
    let result = exchange(broker, &conn, target, body, wait, replies, on_reply).await;
    close(&conn).await;
    result
}

async fn exchange(
    broker: &BrokerArgs,
    conn: &lapin::Connection,
    target: &Target,
    body: &str,
    wait: Duration,
    replies: &mut Replies,
    on_reply: &mut dyn FnMut(&Value),
) -> Result<(), Failed> {
    let lost = |f: link::Failure| Failed::new(status::UNREACHABLE, f.message().to_owned());
    let link::PrivateQueue { name: reply_queue, mut consumer, .. } =
        link::private_queue(conn, "", &[], None, link::REPORT_MAX).await.map_err(lost)?;
    let publish = link::confirm_channel(conn).await.map_err(lost)?;
    let key = match target {
        Target::Box(id) => format!("{}.{}", broker.control_key(), link::key_word(id)),
        Target::All(_) => broker.control_key(),
    };
    let corr = format!("{:016x}", fastrand::u64(..));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_reply_to(reply_queue.as_str().into())
        .with_correlation_id(corr.as_str().into());
    let confirm = link::timed("publishing", STEP, async {
        publish
            .basic_publish(
                broker.exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body.as_bytes(),
                props,
            )
            .await?
            .await
    })
    .await
    .map_err(lost)?;
    if confirm.is_nack() {
        return Err(Failed::new(
            status::NO_REPLY,
            format!("the broker refused the command on '{key}': a box's control queue is full"),
        ));
    }
    if confirm.take_message().is_some() {
        let what = match target {
            Target::Box(id) => format!("unknown box '{id}': no box listens on '{key}'"),
            Target::All(_) => format!("no box listens on '{key}'"),
        };
        return Err(Failed::new(
            status::NO_REPLY,
            format!("{what} (exchange '{}'); check the id and --rkey", broker.exchange),
        ));
    }
    let until = Instant::now() + wait;
    let expect = match target {
        Target::Box(_) => Some(1),
        Target::All(n) => *n,
    };
    let mut got = 0u64;
    while expect.is_none_or(|n| got < n) {
        let left = until.saturating_duration_since(Instant::now());
        let next = or(async { consumer.next().await }, async {
            async_io::Timer::after(left).await;
            None
        })
        .await;
        let Some(Ok(d)) = next else { break };
        if d.properties.correlation_id().as_ref().map(|c| c.as_str()) != Some(corr.as_str()) {
            continue;
        }
        let Some(reply) = replies.accept(&d.data) else { continue };
        on_reply(&reply);
        got += 1;
    }
    let wait = humantime::format_duration(wait);
    match (got, expect) {
        (0, _) => Err(Failed::new(status::NO_REPLY, replies.none_within(&wait.to_string()))),
        (got, Some(n)) if got < n => {
            Err(Failed::new(status::NO_REPLY, format!("{got} of {n} expected replies within {wait}")))
        }
        _ => Ok(()),
    }
}
