//! What the broker costs at the end of a job, and how fast the spool goes out:
//! * end-of-job delay: the wall time of `proc_box --uri … -- true` minus that of
//!   `proc_box -- true` (no broker), median and worst of the rounds, against the live broker,
//!   a refused port, a black hole (a listener that never accepts) [≤ 0.2 s], and the live
//!   broker with 20,000 summaries spooled [not slowed];
//! * the first `status` answered over AMQP by a box with 20,000 summaries spooled, beside one
//!   with an empty spool;
//! * flush throughput: `proc_boxctl flush` of 20,000 spooled summaries.
//!
//! Run with `scripts/bench spool` (needs RabbitMQ on 127.0.0.1:5672). `BENCH_ROUNDS` sets the
//! end-of-job rounds (default 30).

use futures_lite::future::block_on;
use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use proc_box::transport::amqp::link::Outgoing;
use proc_box::transport::amqp::spool::{Destination, Entry, Spool};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const FILES: usize = 20_000;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(30);
    let dir = std::env::temp_dir().join(format!("proc_box-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tag = format!("benchspool{}", std::process::id());
    let (rkey, skey) = (format!("{tag}.rc"), format!("{tag}.stats"));
    // A queue bound to the emission key, so that summaries are routable and confirmed.
    let conn = block_on(Connection::connect(URI, ConnectionProperties::default())).expect("the broker");
    let ch = block_on(conn.create_channel()).unwrap();
    let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let q = block_on(ch.queue_declare("".into(), excl, FieldTable::default())).unwrap();
    let bind = ch.queue_bind(
        q.name().clone(),
        "amq.topic".into(),
        format!("{skey}.#").into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    block_on(bind).unwrap();
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_uri = format!("amqp://guest:guest@127.0.0.1:{}/%2f", hole.local_addr().unwrap().port());
    let amqp = |uri: &str, spool: &Path| -> Vec<String> {
        ["--uri", uri, "--rkey", &rkey, "--skey", &skey, "--spool-dir", spool.to_str().unwrap()]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };

    let base = median(&mut walls(&[], rounds));
    println!("end-of-job delay, `proc_box --uri … -- true` minus `proc_box -- true` ({rounds} rounds; bare run {:.1} ms):", ms(base));
    let big = dir.join("big");
    fill(&big, FILES, "amq.topic", &format!("{skey}.h"));
    for (what, uri, spool) in [
        ("live broker, empty spool", URI, dir.join("live")),
        ("refused port", "amqp://127.0.0.1:1", dir.join("refused")),
        ("black hole", hole_uri.as_str(), dir.join("hole")),
        ("live broker, 20,000 spooled", URI, big.clone()),
    ] {
        let mut w = walls(&amqp(uri, &spool), rounds);
        let worst = *w.iter().max().unwrap();
        let med = median(&mut w);
        println!(
            "  {what:<30} median {:>7.1} ms   worst {:>7.1} ms   [≤ 200 ms]",
            ms(med.saturating_sub(base)),
            ms(worst.saturating_sub(base))
        );
    }

    println!("first AMQP status answered, from the box's start:");
    for (what, spool) in [("empty spool", dir.join("empty")), ("20,000 spooled", big.clone())] {
        let mut args = amqp(URI, &spool);
        args.extend(["--id".into(), "first".into(), "sleep".into(), "1000".into()]);
        let t = Instant::now();
        let mut child = Command::new(proc_box()).args(&args).stderr(Stdio::null()).spawn().unwrap();
        first_status(&ch, &format!("{rkey}.first"));
        let took = t.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        println!("  {what:<30} {:>7.1} ms", ms(took));
    }

    let flush = dir.join("flush");
    fill(&flush, FILES, "amq.topic", &format!("{skey}.h"));
    let t = Instant::now();
    let out = Command::new(proc_boxctl())
        .args(["--uri", URI, "flush", "--spool-dir", flush.to_str().unwrap()])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    println!(
        "flush: {FILES} spooled summaries sent and confirmed by proc_boxctl flush in {:.2} s ({:.0} per second)",
        took.as_secs_f64(),
        FILES as f64 / took.as_secs_f64()
    );
    let _ = block_on(conn.close(200, "OK".into()));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wall times of `proc_box ARGS true`, one per round.
fn walls(args: &[String], rounds: usize) -> Vec<Duration> {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            let st = Command::new(proc_box()).args(args).arg("true").stderr(Stdio::null()).status().unwrap();
            assert!(st.success());
            t.elapsed()
        })
        .collect()
}

/// `n` summaries spooled for the local broker, to `exchange` and `key`.
fn fill(dir: &Path, n: usize, exchange: &str, key: &str) {
    let spool = Spool::open(dir, true).unwrap().unwrap();
    let here = [Destination { host: "127.0.0.1".into(), port: 5672, vhost: "/".into() }];
    let body = format!("{{\"type\":\"summary\",\"box_id\":\"bench\",\"pad\":\"{}\"}}", "x".repeat(2000));
    for i in 0..n {
        let msg = Outgoing::new("summary", format!("bench-{}-{i}", std::process::id()), body.clone(), true);
        drop(spool.write(&Entry::new(exchange, key, &here, &msg)).unwrap());
    }
}

/// Publishes `status` to `key` until a reply comes back.
fn first_status(ch: &Channel, key: &str) {
    let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let q = block_on(ch.queue_declare("".into(), excl, FieldTable::default())).unwrap();
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut replies =
        block_on(ch.basic_consume(q.name().clone(), "".into(), no_ack, FieldTable::default())).unwrap();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(30), "no reply on {key}");
        let props = BasicProperties::default().with_reply_to(q.name().clone());
        let publish = ch.basic_publish(
            "amq.topic".into(),
            key.into(),
            BasicPublishOptions::default(),
            b"{\"command\":\"status\"}",
            props,
        );
        block_on(publish).unwrap();
        let got = block_on(futures_lite::future::or(async { replies.next().await.is_some() }, async {
            async_io::Timer::after(Duration::from_millis(5)).await;
            false
        }));
        if got {
            return;
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn proc_box() -> PathBuf {
    std::env::var_os("PROC_BOX_BIN").map_or_else(|| env!("CARGO_BIN_EXE_proc_box").into(), PathBuf::from)
}

fn proc_boxctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_proc_boxctl"))
}
