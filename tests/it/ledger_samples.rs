//! The ledger keeps samples for the charts (`--samples`), thinned per job within a fixed bound,
//! in SQLite and PostgreSQL alike; `plot --db --box` draws a job from them, and the HTML
//! report's top jobs get their small charts.

use crate::common::bus::{Bus, URI};
use crate::common::{wait_for, Scene};
use crate::plot::{ctl, panels};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};

fn psql(db: &str, sql: &str) -> String {
    let o = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql");
    assert!(o.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A PostgreSQL role and database of the test's own, dropped at the end.
struct Pg(String);

impl Pg {
    fn new(tag: &str) -> Pg {
        let name = format!("samples_{tag}_{}", std::process::id());
        psql("postgres", &format!("CREATE ROLE {name} LOGIN"));
        psql("postgres", &format!("CREATE DATABASE {name} OWNER {name}"));
        Pg(name)
    }
    fn url(&self) -> String {
        format!("postgres://{0}@127.0.0.1:5432/{0}", self.0)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        psql("postgres", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.0));
        psql("postgres", &format!("DROP ROLE IF EXISTS {}", self.0));
    }
}

const N: u64 = 3000;

/// A stats file of a 3000-second job at one sample a second, burning exactly half a core,
/// suspended from 1500 s to 1510 s: every line in the contract's format.
fn long_job(dir: &Path) -> std::path::PathBuf {
    let start = 1_796_000_000.0;
    let mut text = String::new();
    for seq in 1..=N {
        let t = seq as f64;
        let state = if (1500..1510).contains(&seq) { "suspended" } else { "running" };
        let s = json!({"type": "sample", "schema": 1, "message_id": format!("node1-42-abc-sample-{seq}"),
            "box_id": "long", "hostname": "node1", "pid": 42, "seq": seq, "time": "", "time_unix": start + t,
            "elapsed_seconds": t, "timer_elapsed_seconds": t, "state": state, "processes": 1 + seq % 3,
            "pids": [42], "threads": 1, "processes_started": 1 + seq / 100, "cpu_user_seconds": t * 0.4,
            "cpu_system_seconds": t * 0.1, "cpu_percent": 50.0, "rss_bytes": 1_000_000 + seq * 1000,
            "pss_bytes": 500_000 + seq * 1000, "vms_bytes": 1, "swap_bytes": 0, "io_read_bytes": seq * 4096,
            "io_write_bytes": seq * 8192, "io_rchar": 0, "io_wchar": 0, "open_files": 3, "stdout_bytes": 0,
            "stderr_bytes": 0, "user": null});
        text += &format!("{s}\n");
    }
    let wall = N as f64 + 0.5;
    let s = json!({"type": "summary", "schema": 1, "message_id": "node1-42-abc-summary-0", "box_id": "long",
        "hostname": "node1", "argv": ["long", "job"], "started_at": "2026-11-30T00:53:20.000000Z",
        "ended_at": "2026-11-30T01:43:20.500000Z", "wall_seconds": wall, "exit_code": 0,
        "exit": {"kind": "exited", "code": 0, "signal": null}, "reason": "exited",
        "cpu_user_seconds": wall * 0.4, "cpu_system_seconds": wall * 0.1, "peak_rss_bytes": 4_000_000,
        "peak_pss_bytes": 3_500_000, "max_process_rss_bytes": 1, "processes_started": 31, "processes_peak": 3,
        "leftover_killed": 0, "io_read_bytes": N * 4096, "io_write_bytes": N * 8192, "stdout_bytes": 0,
        "stderr_bytes": 0, "samples_emitted": N, "samples_dropped": 0, "user": {"team": "t"},
        "owner": {"uid": 0, "user": "root"}, "scheduler": {"name": null, "job_id": null, "account": "acct",
        "partition": null, "user": null}});
    text += &format!("{s}\n");
    let path = dir.join("long.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn import(db: &str, file: &Path) -> String {
    let o = ctl().args(["ledger", "import", "--samples", "--db", db]).arg(file).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn plot_box(db: &str, id: &str, out: &Path) -> Option<String> {
    let o = ctl().args(["plot", "--db", db, "--box", id, "-o"]).arg(out).output().unwrap();
    o.status.success().then(|| std::fs::read_to_string(out).unwrap())
}

fn kept_within_bounds(db: &str, scene: &Scene) {
    let first = import(db, &long_job(&scene.dir));
    assert!(first.contains("1 new") && first.contains("3000 samples read"), "{first}");
    // Importing again stores nothing, samples included.
    let again = import(db, &long_job(&scene.dir));
    assert!(again.contains("0 new") && again.contains("0 stored after thinning"), "{again}");

    let svg = plot_box(db, "long", &scene.dir.join("long.svg")).expect("plot --box");
    let p = panels(&svg);
    let points = |panel: &str, name: &str| -> Vec<(f64, f64)> {
        p.iter()
            .find(|(k, _)| k == panel)
            .unwrap()
            .1
            .series
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, pts)| pts.clone())
            .collect()
    };
    let pss = points("memory", "pss");
    // At most 500 regular points and the state changes; at least half the bound.
    assert!((250..=600).contains(&pss.len()), "{} PSS points", pss.len());
    // Thinned or not, every CPU step is the exact average: half a core.
    let cpu = points("cpu", "cpu");
    assert!(cpu.iter().all(|q| (q.1 - 0.5).abs() < 0.01), "{cpu:?}");
    let area: f64 = cpu.windows(2).filter(|w| w[0].1 == w[1].1).map(|w| (w[1].0 - w[0].0) * w[0].1).sum();
    assert!((area - (N as f64 + 0.5) * 0.5).abs() < 1.0, "area {area}");
    // The suspension survived the thinning.
    assert!(svg.contains("data-kind=\"suspend\"") && svg.contains("data-kind=\"resume\""));
    assert!(svg.contains("the ledger kept every"), "the thinning is said");
    assert!(svg.contains("box long"));
}

/// A box still running (no summary yet) whose samples 8 to 11 were lost on the way (a broker
/// outage: samples are transient) is drawn from what the ledger has, and says both.
#[test]
fn a_running_box_with_lost_samples_draws_and_says_so() {
    let scene = Scene::new("samples-running");
    let db = format!("sqlite:{}", scene.dir.join("l.sqlite").display());
    let text: String = std::fs::read_to_string(long_job(&scene.dir))
        .unwrap()
        .lines()
        .take(20)
        .filter(|l| !(8..=11).any(|s| l.contains(&format!("\"seq\":{s},"))))
        .map(|l| l.replace("node1-42-abc", "node2-7-def").replace("\"long\"", "\"running-box\"") + "\n")
        .collect();
    let file = scene.dir.join("running.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = import(&db, &file);
    assert!(out.contains("0 new") && out.contains("16 samples read, 16 stored"), "{out}");
    let svg = plot_box(&db, "running-box", &scene.dir.join("r.svg")).expect("plot --box of a running box");
    assert!(svg.contains("no summary line") && svg.contains("seq 8-11 missing"), "{svg}");
    assert!(svg.contains("class=\"band gap\""));
    let o = ctl().args(["plot", "--db", &db, "--box", "nobody"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no job and no samples of box 'nobody'"));
}

#[test]
fn samples_are_thinned_within_the_bound_in_sqlite() {
    let scene = Scene::new("samples-sqlite");
    let db = format!("sqlite:{}", scene.dir.join("l.sqlite").display());
    kept_within_bounds(&db, &scene);
    let o = ctl().args(["ledger", "status", "--db", &db, "--format", "json"]).output().unwrap();
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["schema_version"], 2);
    // The HTML report's top jobs get their small chart from the kept samples.
    let o = ctl().args(["report", "--db", &db, "--format", "html"]).output().unwrap();
    assert!(o.status.success());
    let html = String::from_utf8(o.stdout).unwrap();
    let opts = roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(&html, opts).unwrap();
    let spark = doc.descendants().find(|n| n.attribute("class") == Some("spark")).expect("a small chart");
    assert!(spark.descendants().any(|n| n.has_tag_name("polyline")));
    assert!(!html.contains("no samples kept"));
}

#[test]
fn samples_are_thinned_within_the_bound_in_postgres() {
    let scene = Scene::new("samples-pg");
    let pg = Pg::new("bound");
    kept_within_bounds(&pg.url(), &scene);
    let rows: i64 = psql(&pg.0, "SELECT COUNT(*) FROM samples").parse().unwrap();
    let stride: i64 = psql(&pg.0, "SELECT stride FROM sample_runs").parse().unwrap();
    assert!((250..=600).contains(&rows) && stride >= 8, "{rows} rows, stride {stride}");
    assert_eq!(psql(&pg.0, "SELECT COUNT(*) FROM samples WHERE event = 1"), "2");
}

/// The broker side: the ledger's queue and dead-letter queue are deleted at the end.
struct Consumer {
    child: Child,
    queue: String,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let name = self.queue.clone();
        async_global_executor::block_on(async move {
            let Ok(conn) = lapin::Connection::connect(URI, lapin::ConnectionProperties::default()).await
            else {
                return;
            };
            if let Ok(ch) = conn.create_channel().await {
                let o = lapin::options::QueueDeleteOptions::default();
                let _ = ch.queue_delete(name.as_str().into(), o).await;
                let _ = ch.queue_delete(format!("{name}.dead").as_str().into(), o).await;
                let x = lapin::options::ExchangeDeleteOptions::default();
                let _ = ch.exchange_delete(format!("{name}.dead").as_str().into(), x).await;
            }
            let _ = conn.close(200, "bye".into()).await;
        });
    }
}

#[test]
fn a_real_box_over_the_broker_is_kept_and_drawn_from_the_ledger() {
    let scene = Scene::new("samples-amqp");
    let bus = Bus::new("samples");
    let db = format!("sqlite:{}", scene.dir.join("l.sqlite").display());
    let queue = format!("samples.ledger.{}", std::process::id());
    let log = scene.dir.join("ledger.log");
    let child = ctl()
        .args([
            "--uri",
            URI,
            "--skey",
            &bus.skey,
            "ledger",
            "run",
            "--samples",
            "--db",
            &db,
            "--queue",
            &queue,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _consumer = Consumer { child, queue };
    wait_for("the ledger to consume", || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("consuming")).map(|_| ())
    });

    let stats = scene.dir.join("job.jsonl");
    let mut args = bus.args("samples-box");
    args.extend(
        ["--sint", "100ms", "--stats-file", stats.to_str().unwrap(), "--", "sh", "-c"].map(String::from),
    );
    args.push("i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done; sleep 0.5".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = scene.command(&args).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let in_file =
        std::fs::read_to_string(&stats).unwrap().lines().filter(|l| l.contains("\"sample\"")).count();

    // Every sample and the summary reach the ledger; the chart from it is the file's.
    let out = scene.dir.join("db.svg");
    let svg = wait_for("the samples and the summary in the ledger", || {
        let svg = plot_box(&db, "samples-box", &out)?;
        let n = panels(&svg)
            .iter()
            .find(|(k, _)| k == "memory")?
            .1
            .series
            .iter()
            .filter(|(k, _)| k == "rss")
            .map(|(_, p)| p.len())
            .sum::<usize>();
        (svg.contains("data-kind=\"end\"") && n == in_file).then_some(svg)
    });
    let file_svg = {
        let path = scene.dir.join("file.svg");
        let o = ctl().arg("plot").arg(&stats).arg("-o").arg(&path).output().unwrap();
        assert!(o.status.success());
        std::fs::read_to_string(path).unwrap()
    };
    let cpu = |svg: &str| -> Vec<(f64, f64)> {
        panels(svg)
            .into_iter()
            .find(|(k, _)| k == "cpu")
            .unwrap()
            .1
            .series
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect()
    };
    let (a, b) = (cpu(&svg), cpu(&file_svg));
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (p, q) in a.iter().zip(&b) {
        assert!((p.0 - q.0).abs() < 0.01 && (p.1 - q.1).abs() < 0.01, "{p:?} vs {q:?}");
    }
}

/// A hostile publisher's samples with a megabyte of text each (state, box id, host): the count
/// per run is bounded, so without a bound on their text a few hundred rows would still fill
/// the database. They are skipped; a normal sample of the same file is kept.
#[test]
fn samples_with_huge_text_are_not_stored() {
    let scene = Scene::new("samples-huge-text");
    let db = format!("sqlite:{}", scene.dir.join("l.sqlite").display());
    let big = "x".repeat(1 << 20);
    let line = |seq: u64, field: &str, value: &str| {
        let mut v = serde_json::json!({"type": "sample", "message_id": format!("h-1-big-sample-{seq}"),
            "box_id": "big", "hostname": "h", "seq": seq, "time_unix": 1000.0 + seq as f64,
            "state": "running", "cpu_user_seconds": 0.1, "cpu_system_seconds": 0});
        v[field] = value.into();
        v.to_string() + "\n"
    };
    let mut text = line(1, "state", "running");
    for seq in 2..40 {
        text += &line(seq, ["state", "box_id", "hostname"][seq as usize % 3], &big);
    }
    let file = scene.dir.join("big.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = import(&db, &file);
    assert!(out.contains(" samples read, 1 stored"), "{out}");
    let size = std::fs::metadata(scene.dir.join("l.sqlite")).unwrap().len();
    assert!(size < 1 << 20, "the ledger grew to {size} bytes");
}

/// A box that never ends, its samples arriving in many separate batches (as `ledger run`
/// stores them), with a suspension now and then and a forged sample of seq near i64::MAX:
/// the run stays within its bound across batches, and a chart draws from it.
#[test]
fn a_box_that_never_ends_stays_within_the_bound_across_batches() {
    let scene = Scene::new("samples-endless");
    let db = format!("sqlite:{}", scene.dir.join("l.sqlite").display());
    let line = |seq: u64| {
        let state = if seq % 700 < 5 { "suspended" } else { "running" };
        json!({"type": "sample", "message_id": format!("h-9-endless-sample-{seq}"), "box_id": "endless",
            "hostname": "h", "seq": seq, "time_unix": 1000.0 + seq as f64, "state": state,
            "cpu_user_seconds": seq as f64 * 0.5, "cpu_system_seconds": 0})
        .to_string()
            + "\n"
    };
    let mut seq = 1;
    for batch in 0..12 {
        let mut text: String = (0..1000).map(|i| line(seq + i)).collect();
        seq += 1000;
        if batch == 5 {
            text += &line(i64::MAX as u64 - 1);
        }
        let file = scene.dir.join(format!("b{batch}.jsonl"));
        std::fs::write(&file, text).unwrap();
        import(&db, &file);
    }
    let path = scene.dir.join("l.sqlite");
    let count = |sql: &str| -> i64 {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let regular = count("SELECT COUNT(*) FROM samples WHERE run = 'h-9-endless' AND event = 0");
    let events = count("SELECT COUNT(*) FROM samples WHERE run = 'h-9-endless' AND event = 1");
    assert!(regular <= 500 + 2 && events <= 100, "{regular} regular, {events} events");
    let svg = plot_box(&db, "endless", &scene.dir.join("e.svg")).expect("plot --box of the endless box");
    assert!(svg.contains("no summary line"));
}

/// `ledger import --samples` of a long stats file stored every sample of it in one transaction
/// and thinned them only at its end (a million rows written to keep 500). Stored in chunks, the
/// stride grows as it goes: far fewer rows are ever written, and the bound is the same.
#[test]
fn a_long_stats_file_is_imported_in_chunks() {
    let scene = Scene::new("samples-chunks");
    let db = format!("sqlite:{}", scene.dir.join("l.sqlite").display());
    let text: String = (1..=20_000u64)
        .map(|seq| {
            json!({"type": "sample", "message_id": format!("h-3-chunks-sample-{seq}"), "box_id": "chunks",
                "hostname": "h", "seq": seq, "time_unix": 1000.0 + seq as f64, "state": "running",
                "cpu_user_seconds": seq as f64 * 0.5, "cpu_system_seconds": 0})
            .to_string()
                + "\n"
        })
        .collect();
    let file = scene.dir.join("chunks.jsonl");
    std::fs::write(&file, text).unwrap();
    let out = import(&db, &file);
    let stored: usize = out
        .split(" samples read, ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(out.contains("20000 samples read") && stored < 8000, "{out}");
    let c = rusqlite::Connection::open(scene.dir.join("l.sqlite")).unwrap();
    let kept: i64 =
        c.query_row("SELECT COUNT(*) FROM samples WHERE run = 'h-3-chunks'", [], |r| r.get(0)).unwrap();
    assert!((250..=502).contains(&kept), "{kept} kept");
}
