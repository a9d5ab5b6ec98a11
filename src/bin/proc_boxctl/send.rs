//! `send` and `status`: one command out, the replies back, over the broker or a socket.

use crate::{close, println_safe, status, BrokerArgs, Failed};
use clap::Args;
use futures_lite::future::or;
use futures_lite::StreamExt;
use lapin::options::BasicPublishOptions;
use lapin::protocol::BasicProperties;
use proc_box::transport::amqp::link::{self, STEP};
use proc_box::units::parse_duration;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    /// the box's control token, if it requires one
    #[arg(long, env = "PBOX_CONTROL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Where a command goes.
enum Target {
    Box(String),
    /// Every box; `Some(n)`: done after n replies.
    All(Option<u64>),
}

pub fn send(broker: &BrokerArgs, a: SendArgs) -> Result<u8, Failed> {
    let body = command_json(&a.command, &a.arguments, a.common.token.as_deref())?;
    let target = match a.id {
        Some(id) => Target::Box(id),
        None => Target::All(a.expect),
    };
    // Each reply is printed as it comes; only the verdict needs them all.
    let mut all_ok = true;
    let mut print = |r: &Value| {
        all_ok &= verdict(std::slice::from_ref(r)) == status::OK;
        println_safe(&r.to_string());
    };
    match &a.common.socket {
        Some(path) => print(&via_socket(path, &body, a.common.wait)?),
        None => {
            async_global_executor::block_on(via_broker(broker, &target, &body, a.common.wait, &mut print))?
        }
    }
    Ok(if all_ok { status::OK } else { status::REFUSED })
}

pub fn status(broker: &BrokerArgs, a: StatusArgs) -> Result<u8, Failed> {
    let body = command_json("status", &[], a.common.token.as_deref())?;
    let reply = match &a.common.socket {
        Some(path) => via_socket(path, &body, a.common.wait)?,
        None => {
            let id = a.id.unwrap_or_default();
            let mut reply = Value::Null;
            let mut keep = |r: &Value| reply = r.clone();
            async_global_executor::block_on(via_broker(
                broker,
                &Target::Box(id),
                &body,
                a.common.wait,
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

/// The command as JSON, checked with the boxes' own parser first so a typo fails here.
fn command_json(command: &str, arguments: &[String], token: Option<&str>) -> Result<String, Failed> {
    let mut body = json!({ "command": command, "arguments": arguments });
    if let Some(t) = token {
        body["token"] = Value::String(t.into());
    }
    let text = body.to_string();
    proc_box::command::parse(text.as_bytes()).map_err(|r| Failed::new(status::USAGE, r.reason))?;
    Ok(text)
}

fn via_socket(path: &std::path::Path, body: &str, wait: Duration) -> Result<Value, Failed> {
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
    serde_json::from_str(&line)
        .map_err(|e| Failed::new(status::NO_REPLY, format!("a reply that is not JSON: {e}")))
}

/// Publishes the command with a private reply queue, then hands each reply to `on_reply` as it
/// comes: the first one for a single box; for `--all`, every one until `wait`, or until the
/// expected number came.
async fn via_broker(
    broker: &BrokerArgs,
    target: &Target,
    body: &str,
    wait: Duration,
    on_reply: &mut dyn FnMut(&Value),
) -> Result<(), Failed> {
    let conn = broker.connect().await?;
    let result = exchange(broker, &conn, target, body, wait, on_reply).await;
    close(&conn).await;
    result
}

async fn exchange(
    broker: &BrokerArgs,
    conn: &lapin::Connection,
    target: &Target,
    body: &str,
    wait: Duration,
    on_reply: &mut dyn FnMut(&Value),
) -> Result<(), Failed> {
    let lost = |f: link::Failure| Failed::new(status::UNREACHABLE, f.message().to_owned());
    let link::PrivateQueue { name: reply_queue, mut consumer, .. } =
        link::private_queue(conn, "", &[], None).await.map_err(lost)?;
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
        let reply = serde_json::from_slice(&d.data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&d.data).into()));
        on_reply(&reply);
        got += 1;
    }
    let wait = humantime::format_duration(wait);
    match (got, expect) {
        (0, _) => Err(Failed::new(status::NO_REPLY, format!("no reply within {wait} (try a longer --wait)"))),
        (got, Some(n)) if got < n => {
            Err(Failed::new(status::NO_REPLY, format!("{got} of {n} expected replies within {wait}")))
        }
        _ => Ok(()),
    }
}
