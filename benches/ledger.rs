//! The chargeback ledger's throughput, against the real broker on 127.0.0.1:5672 and the real
//! PostgreSQL on 127.0.0.1:5432 (a database of the bench's own, dropped after):
//! * ingest: summaries per second from a queue already holding them into SQLite and into
//!   PostgreSQL, from `ledger run`'s start to the last row committed [≥ 5,000/s each];
//! * report: `report --by account,month` over a million stored jobs [≤ 1 s on each database].
//!
//! Run with `scripts/bench ledger`. `LEDGER_BENCH_N` sets the ingested summaries (default
//! 20,000), `LEDGER_BENCH_ROWS` the jobs the report reads (default 1,000,000).

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn ctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_proc_boxctl"));
    c.env_remove("PBOX_DB").stdin(Stdio::null());
    c
}

fn rows(db: &str) -> i64 {
    let o = ctl().args(["ledger", "status", "--db", db, "--format", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["rows"].as_i64().unwrap_or(-1)
}

fn summary(id: &str, i: usize) -> String {
    let month = 1 + i % 12;
    format!(
        r#"{{"type":"summary","schema":1,"message_id":"{id}","box_id":"b{i}","hostname":"node{}","ended_at":"2026-{month:02}-15T10:00:00.000000Z","wall_seconds":3600.5,"exit_code":0,"reason":"exited","cpu_user_seconds":1800.25,"cpu_system_seconds":12.5,"peak_pss_bytes":1073741824,"io_read_bytes":1048576,"io_write_bytes":2048,"user":{{"project":"p{}"}},"owner":{{"uid":1000,"user":"u{}"}},"scheduler":{{"name":"slurm","job_id":"{i}","account":"acct{}","partition":"batch","user":"u{}"}}}}"#,
        i % 50,
        i % 20,
        i % 100,
        i % 40,
        i % 100
    )
}

fn ledger(db: &str, skey: &str, queue: &str, log: &Path) -> Child {
    ctl()
        .args([
            "--uri", URI, "--skey", skey, "ledger", "run", "--db", db, "--queue", queue, "--batch", "1000",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn wait_log(log: &Path, what: &str) {
    let start = Instant::now();
    while !std::fs::read_to_string(log).unwrap_or_default().contains(what) {
        assert!(start.elapsed() < Duration::from_secs(60), "no '{what}' in {}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn publish(skey: &str, n: usize, tag: &str) {
    async_global_executor::block_on(async {
        let conn = Connection::connect(URI, ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let key = format!("{skey}.h");
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut pending = Vec::new();
            for &i in chunk {
                let id = format!("{tag}-{i}");
                let props = BasicProperties::default().with_type("summary".into()).with_delivery_mode(2);
                let body = summary(&id, i);
                let opts = BasicPublishOptions::default();
                pending.push(
                    ch.basic_publish("amq.topic".into(), key.as_str().into(), opts, body.as_bytes(), props)
                        .await
                        .unwrap(),
                );
            }
            for p in pending {
                assert!(p.await.unwrap().is_ack());
            }
        }
        let _ = conn.close(200, "bye".into()).await;
    });
}

fn delete_queue(queue: &str) {
    async_global_executor::block_on(async {
        let conn = Connection::connect(URI, ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let o = lapin::options::QueueDeleteOptions::default();
        let _ = ch.queue_delete(queue.into(), o).await;
        let _ = ch.queue_delete(format!("{queue}.dead").as_str().into(), o).await;
        let _ = ch.exchange_delete(format!("{queue}.dead").as_str().into(), Default::default()).await;
        let _ = conn.close(200, "bye".into()).await;
    });
}

/// Summaries per second from a full queue into `db`.
fn ingest(db: &str, n: usize, dir: &Path, tag: &str) -> f64 {
    let skey = format!("bench{}.{tag}.stats", std::process::id());
    let queue = format!("bench{}.{tag}.ledger", std::process::id());
    // Declare the queue (and create the schema), stop, fill the queue, then time a fresh start.
    let log = dir.join(format!("{tag}-declare.log"));
    let mut first = ledger(db, &skey, &queue, &log);
    wait_log(&log, "consuming");
    let _ = first.kill();
    let _ = first.wait();
    publish(&skey, n, tag);
    let start = Instant::now();
    let mut l = ledger(db, &skey, &queue, &dir.join(format!("{tag}.log")));
    while rows(db) < n as i64 {
        assert!(start.elapsed() < Duration::from_secs(600), "ingest into {db} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = l.kill();
    let _ = l.wait();
    delete_queue(&queue);
    n as f64 / secs
}

/// Seconds `report --by account,month` takes over `rows` jobs (imported in files of 100,000).
fn report(db: &str, rows_wanted: usize, dir: &Path, tag: &str) -> (f64, f64) {
    let start = Instant::now();
    let mut i = 0;
    while i < rows_wanted {
        let file = dir.join(format!("{tag}-rows.jsonl"));
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let end = (i + 100_000).min(rows_wanted);
        for j in i..end {
            writeln!(f, "{}", summary(&format!("{tag}-r{j}"), j)).unwrap();
        }
        drop(f);
        let o = ctl().args(["ledger", "import", "--db", db]).arg(&file).output().unwrap();
        assert!(o.status.success(), "import: {}", String::from_utf8_lossy(&o.stderr));
        i = end;
    }
    let import = rows_wanted as f64 / start.elapsed().as_secs_f64();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let o =
            ctl().args(["report", "--db", db, "--by", "account,month", "--format", "csv"]).output().unwrap();
        assert!(o.status.success(), "report: {}", String::from_utf8_lossy(&o.stderr));
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, import)
}

fn psql(sql: &str) {
    let o = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qAtc", sql])
        .output()
        .expect("psql");
    assert!(o.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&o.stderr));
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("LEDGER_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let rows_wanted: usize =
        std::env::var("LEDGER_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("proc_box-bench-ledger-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pg_name = format!("bench_ledger_{}", std::process::id());
    psql(&format!("CREATE ROLE {pg_name} LOGIN"));
    psql(&format!("CREATE DATABASE {pg_name} OWNER {pg_name}"));
    let pg = format!("postgres://{pg_name}@127.0.0.1:5432/{pg_name}");
    let sq = format!("sqlite:{}", dir.join("ingest.sqlite").display());
    let sq_rate = ingest(&sq, n, &dir, "sqlite");
    println!("ledger ingest into SQLite: {n} summaries, {sq_rate:.0}/s [target >= 5000/s]");
    let pg_rate = ingest(&pg, n, &dir, "pg");
    println!("ledger ingest into PostgreSQL: {n} summaries, {pg_rate:.0}/s [target >= 5000/s]");
    let sq2 = format!("sqlite:{}", dir.join("report.sqlite").display());
    let (sq_t, sq_imp) = report(&sq2, rows_wanted, &dir, "sqlite");
    println!("report by account,month over {rows_wanted} jobs, SQLite: {sq_t:.2} s [target <= 1 s] (import {sq_imp:.0}/s)");
    let (pg_t, pg_imp) = report(&pg, rows_wanted, &dir, "pg");
    println!("report by account,month over {rows_wanted} jobs, PostgreSQL: {pg_t:.2} s [target <= 1 s] (import {pg_imp:.0}/s)");
    psql(&format!("DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"));
    psql(&format!("DROP ROLE IF EXISTS {pg_name}"));
    let _ = std::fs::remove_dir_all(&dir);
}
