//! `watch`: every box seen on the exchange, from the samples and summaries it emits.

use crate::{close, println_safe, status, BrokerArgs, Failed};
use clap::Args;
use futures_lite::future::or;
use futures_lite::StreamExt;
use proc_box::transport::amqp::link;
use proc_box::units::parse_duration;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// only this box
    #[arg(long)]
    id: Option<String>,
    /// print every message as it arrives, raw JSON, one per line
    #[arg(long)]
    json: bool,
    /// when piped, no header line before the plain lines
    #[arg(long)]
    no_header: bool,
    /// exit after this many messages
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// exit after this long
    #[arg(long = "for", value_parser = parse_duration, value_name = "DURATION")]
    duration: Option<Duration>,
}

/// What the table shows of one box.
struct Row {
    host: String,
    state: String,
    cpu_percent: Option<f64>,
    pss: Option<u64>,
    processes: Option<u64>,
    elapsed: f64,
    seen: Instant,
}

/// What a watch keeps across reconnections.
struct Seen {
    rows: BTreeMap<String, Row>,
    count: u64,
    end: Option<Instant>,
    /// Subscribed once: from then on a lost connection is rebuilt, not fatal.
    subscribed: bool,
}

/// Pause between attempts to reconnect.
const RETRY: Duration = Duration::from_secs(1);

pub fn watch(broker: &BrokerArgs, a: WatchArgs) -> Result<u8, Failed> {
    let mut seen = Seen {
        rows: BTreeMap::new(),
        count: 0,
        end: a.duration.map(|d| Instant::now() + d),
        subscribed: false,
    };
    async_global_executor::block_on(async {
        let mut conn = broker.connect().await?;
        loop {
            let result = run(broker, &conn, &a, &mut seen).await;
            close(&conn).await;
            // A connection can be lost to the broker, or dropped by the client library over
            // a message it refuses (a header larger than the frame size, say): go on watching.
            let why = match result {
                Err(f) if f.status == status::UNREACHABLE && seen.subscribed => f.message,
                other => return other,
            };
            crate::eprintln_safe(&format!("proc_boxctl: {why}; reconnecting"));
            conn = loop {
                if seen.end.is_some_and(|t| Instant::now() + RETRY >= t) {
                    return Ok(status::OK);
                }
                async_io::Timer::after(RETRY).await;
                if let Ok(c) = broker.connect().await {
                    break c;
                }
            };
        }
    })
}

async fn run(
    broker: &BrokerArgs,
    conn: &lapin::Connection,
    a: &WatchArgs,
    seen: &mut Seen,
) -> Result<u8, Failed> {
    let lost = |f: link::Failure| Failed::new(status::UNREACHABLE, f.message().to_owned());
    let key = format!("{}.#", broker.skey);
    let link::PrivateQueue { mut consumer, .. } =
        link::private_queue(conn, &broker.exchange, std::slice::from_ref(&key), None, link::REPORT_MAX)
            .await
            .map_err(lost)?;
    // Ready: tests and scripts wait for this line before starting boxes.
    crate::eprintln_safe(&format!("proc_boxctl: watching '{key}' on '{}'", broker.exchange));
    let tty = !a.json && std::io::stdout().is_terminal();
    // Piped plain lines get the column names once (not again after a reconnection), so a
    // reader (or `column -t`) knows them.
    if !seen.subscribed && !a.json && !tty && !a.no_header {
        println_safe(&header());
    }
    seen.subscribed = true;
    let end = seen.end;
    let Seen { rows, count: seen, .. } = seen;
    loop {
        if a.count.is_some_and(|n| *seen >= n) || end.is_some_and(|t| Instant::now() >= t) {
            return Ok(status::OK);
        }
        let tick = end.map_or(Duration::from_secs(1), |t| {
            t.saturating_duration_since(Instant::now()).min(Duration::from_secs(1))
        });
        let next = or(async { Some(consumer.next().await) }, async {
            async_io::Timer::after(tick).await;
            None
        })
        .await;
        let delivery = match next {
            None => {
                if tty {
                    draw(rows);
                }
                continue;
            }
            Some(Some(Ok(d))) => d,
            Some(Some(Err(e))) => {
                return Err(Failed::new(status::UNREACHABLE, format!("lost the broker: {e}")))
            }
            Some(None) => return Err(Failed::new(status::UNREACHABLE, "the broker ended the subscription")),
        };
        let Ok(msg) = serde_json::from_slice::<Value>(&delivery.data) else { continue };
        let box_id = msg.get("box_id").and_then(Value::as_str).unwrap_or("?").to_owned();
        if a.id.as_ref().is_some_and(|id| *id != box_id) {
            continue;
        }
        *seen += 1;
        if a.json {
            // Re-serialized: one line, and no raw control character reaches the terminal.
            println_safe(&msg.to_string());
            continue;
        }
        let row = to_row(&msg);
        if tty {
            rows.insert(box_id, row);
            draw(rows);
        } else {
            println_safe(&line(&box_id, &row));
        }
    }
}

fn to_row(m: &Value) -> Row {
    let num = |k: &str| m.get(k).and_then(Value::as_f64);
    let summary = m.get("type").and_then(Value::as_str) == Some("summary");
    let state = if summary {
        format!(
            "ended: {} ({})",
            m.get("reason").and_then(Value::as_str).unwrap_or("?"),
            m.get("exit_code").and_then(Value::as_i64).map_or("?".into(), |c| c.to_string())
        )
    } else {
        m.get("state").and_then(Value::as_str).unwrap_or("?").to_owned()
    };
    Row {
        host: clean(m.get("hostname").and_then(Value::as_str).unwrap_or("?")),
        state: clean(&state),
        cpu_percent: num("cpu_percent"),
        pss: m.get(if summary { "peak_pss_bytes" } else { "pss_bytes" }).and_then(Value::as_u64),
        processes: m.get("processes").and_then(Value::as_u64),
        elapsed: num(if summary { "wall_seconds" } else { "elapsed_seconds" }).unwrap_or(0.0),
        seen: Instant::now(),
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.1}M", b as f64 / 1048576.0))
}

/// What a message says, fit for a terminal: control characters (an escape sequence planted in
/// a box id, say) are shown as `?`.
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn line(id: &str, r: &Row) -> String {
    let id = clean(id);
    format!(
        "{id:<24} {:<16} {:<20} {:>7} {:>9} {:>6} {:>9}",
        r.host,
        r.state,
        r.cpu_percent.map_or("-".into(), |c| format!("{c:.1}%")),
        mib(r.pss),
        r.processes.map_or("-".into(), |p| p.to_string()),
        format!("{:.0}s", r.elapsed),
    )
}

/// The column names of `line`, aligned with it.
fn header() -> String {
    format!(
        "{:<24} {:<16} {:<20} {:>7} {:>9} {:>6} {:>9}",
        "BOX", "HOST", "STATE", "CPU", "PSS", "PROCS", "ELAPSED"
    )
}

/// Redraws the whole table in place (a terminal only).
fn draw(rows: &BTreeMap<String, Row>) {
    let mut out = String::from("\x1b[H\x1b[2J");
    out.push_str(&format!("{} {:>9}\n", header(), "SEEN"));
    for (id, r) in rows {
        out.push_str(&format!("{} {:>8}s\n", line(id, r), r.seen.elapsed().as_secs()));
    }
    print_raw(&out);
}

fn print_raw(s: &str) {
    use std::io::Write;
    let mut o = std::io::stdout();
    if o.write_all(s.as_bytes()).and_then(|()| o.flush()).is_err() {
        std::process::exit(0);
    }
}
