//! AMQP costs, against the real broker on 127.0.0.1:5672, each beside a local baseline measured
//! in the same invocation (issue targets in brackets):
//! * control latency: from a `kill USR1` published on the broker to the signal having reached
//!   every process of a 100-process tree (`benches/sigtree.c` writes a byte per signal taken);
//!   p50 and p99 [p99 ≤ 20 ms], beside the same command over the local control socket;
//! * emission: proc_box's own CPU per sample of that tree with AMQP connected, beside the
//!   stats-file sink (CPU from every thread's schedstat, in ns, minus an idle run's);
//! * proc_box's peak RSS (VmHWM) with AMQP connected [≤ 10 MiB], beside a box without it;
//! * the broker's own CPU per job (its beam.smp's utime + stime from /proc, less the rate
//!   measured meanwhile over bare runs): a short job (`true`) beside one that lives past the
//!   control delay and so sets up its control queue, as every job did before [≤ 0.5×].
//!
//! Run with `scripts/bench amqp`. `BENCH_ROUNDS` sets the latency samples (default 300).

use futures_lite::future::block_on;
use lapin::options::{BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const TREE: usize = 100;
/// How long each emission run samples (every 100 ms, the floor).
const EMIT_FOR: Duration = Duration::from_secs(6);

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(300);
    let dir = std::env::temp_dir().join(format!("proc_box-bench-amqp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tree = build_sigtree(&dir);
    let rkey = format!("bench{}.rc", std::process::id());
    let skey = format!("bench{}.stats", std::process::id());

    // Control latency.
    let mut b = Tree::start(
        &dir,
        "lat",
        &tree,
        &["--uri", URI, "--rkey", &rkey, "--skey", &skey, "--id", "lat", "--sint", "1h"],
    );
    let conn = block_on(Connection::connect(URI, ConnectionProperties::default())).expect("the broker");
    let ch = block_on(conn.create_channel()).unwrap();
    let key = format!("{rkey}.lat");
    // The box binds its queue in the background: publish until one round trip works.
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(30), "the box never bound {key}");
        publish(&ch, &key);
        if b.signals_within(Duration::from_millis(200)) {
            break;
        }
    }
    let mut amqp = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        publish(&ch, &key);
        b.wait_signals();
        amqp.push(t.elapsed());
    }
    let mut sock = std::os::unix::net::UnixStream::connect(dir.join("lat.sock")).unwrap();
    let mut socket = Vec::with_capacity(rounds);
    let mut reply = vec![0u8; 64 << 10];
    for _ in 0..rounds {
        let t = Instant::now();
        sock.write_all(b"{\"command\":\"kill\",\"arguments\":[\"USR1\"]}\n").unwrap();
        b.wait_signals();
        socket.push(t.elapsed());
        let _ = sock.read(&mut reply).unwrap();
    }
    b.stop();
    let _ = block_on(conn.close(200, "OK".into()));
    let (a50, a99) = percentiles(&mut amqp);
    let (s50, s99) = percentiles(&mut socket);
    println!("control latency, kill to all {TREE} processes ({rounds} rounds):");
    println!("  AMQP            p50 {:>7.2} ms   p99 {:>7.2} ms   [p99 ≤ 20 ms]", ms(a50), ms(a99));
    println!("  control socket  p50 {:>7.2} ms   p99 {:>7.2} ms", ms(s50), ms(s99));
    println!("  AMQP / socket   p50 {:.2}×   p99 {:.2}×", ms(a50) / ms(s50), ms(a99) / ms(s99));

    // Emission cost and memory.
    let stats = dir.join("stats.jsonl");
    let runs = [
        ("idle", vec!["--sint", "1h"]),
        ("amqp", vec!["--uri", URI, "--rkey", &rkey, "--skey", &skey, "--id", "emit", "--sint", "100ms"]),
        ("file", vec!["--stats-file", stats.to_str().unwrap(), "--sint", "100ms"]),
    ];
    let mut results = Vec::new();
    for (name, args) in &runs {
        let b = Tree::start(&dir, name, &tree, args);
        let cpu0 = b.cpu_ns();
        std::thread::sleep(EMIT_FOR);
        let cpu = b.cpu_ns() - cpu0;
        let hwm = b.hwm_kib();
        let summary = b.stop();
        results.push((cpu, summary["samples_emitted"].as_u64().unwrap_or(0), hwm));
    }
    let idle = results[0].0;
    let per = |(cpu, n, _): (u64, u64, u64)| cpu.saturating_sub(idle) as f64 / n.max(1) as f64 / 1000.0;
    println!("emission, {TREE}-process tree, a sample every 100 ms for {EMIT_FOR:?}:");
    println!("  AMQP        {:>7.1} µs CPU per sample ({} samples)", per(results[1]), results[1].1);
    println!("  stats file  {:>7.1} µs CPU per sample ({} samples)", per(results[2]), results[2].1);
    println!("  AMQP / file {:.2}×", per(results[1]) / per(results[2]));
    println!("peak RSS (VmHWM):");
    println!("  AMQP connected {:>6.1} MiB   [≤ 10 MiB]", results[1].2 as f64 / 1024.0);
    println!("  no AMQP        {:>6.1} MiB", results[0].2 as f64 / 1024.0);
    println!("  ratio          {:.2}×", results[1].2 as f64 / results[0].2 as f64);
    broker_cost(&dir, &rkey, &skey);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Broker CPU per job. The broker is shared, so what it spends meanwhile on others is measured
/// over bare runs (no `--uri`) interleaved with the measured ones, and subtracted.
fn broker_cost(dir: &Path, rkey: &str, skey: &str) {
    let Some(beam) = broker_pid() else {
        println!("broker CPU: no beam.smp process found here; skipped");
        return;
    };
    // A queue for the summaries, as a site has: unroutable ones would be spooled and resent.
    let conn = block_on(Connection::connect(URI, ConnectionProperties::default())).expect("the broker");
    block_on(async {
        let ch = conn.create_channel().await.unwrap();
        let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let q = ch.queue_declare("".into(), excl, FieldTable::default()).await.unwrap();
        let (key, opts) = (format!("{skey}.#"), QueueBindOptions::default());
        ch.queue_bind(q.name().clone(), "amq.topic".into(), key.into(), opts, FieldTable::default())
            .await
            .unwrap();
    });
    let spool = dir.join("spool");
    let spool = spool.to_str().unwrap();
    let amqp = ["--uri", URI, "--rkey", rkey, "--skey", skey, "--sint", "1h", "--spool-dir", spool];
    let run = |args: &[&str], job: &[&str]| {
        let st = Command::new(proc_box()).args(args).arg("--").args(job).stderr(Stdio::null()).status();
        assert!(st.expect("proc_box").success());
    };
    const SHORT: usize = 50;
    const LONG: usize = 10;
    let (mut bare, mut short, mut long) = ([0.0; 2], [0.0; 2], [0.0; 2]);
    for _ in 0..4 {
        let add = |acc: &mut [f64; 2], (cpu, wall): (f64, f64)| {
            acc[0] += cpu;
            acc[1] += wall;
        };
        add(&mut bare, broker_cpu(beam, || (0..SHORT).for_each(|_| run(&[], &["true"]))));
        add(&mut short, broker_cpu(beam, || (0..SHORT).for_each(|_| run(&amqp, &["true"]))));
        // Living past the control delay, at once (their wall time is mostly sleep).
        add(
            &mut long,
            broker_cpu(beam, || {
                std::thread::scope(|s| {
                    for _ in 0..LONG {
                        s.spawn(|| run(&amqp, &["sleep", "2"]));
                    }
                })
            }),
        );
        add(&mut bare, broker_cpu(beam, || (0..SHORT).for_each(|_| run(&[], &["true"]))));
    }
    let rate = bare[0] / bare[1];
    let per = |[cpu, wall]: [f64; 2], n: usize| (cpu - rate * wall).max(0.0) / (4 * n) as f64 * 1000.0;
    let (s, l) = (per(short, SHORT), per(long, LONG));
    println!("broker CPU per job (beam.smp, less {:.1} ms/s spent meanwhile on others):", rate * 1000.0);
    println!(
        "  `true`, over before the control delay  {s:>6.2} ms   ({:.0} jobs/s)",
        (4 * SHORT) as f64 / short[1]
    );
    println!("  `sleep 2`, control queue set up        {l:>6.2} ms   (what every job cost before)");
    println!("  short / set up                          {:.2}×   [≤ 0.5×]", s / l);
    let _ = block_on(conn.close(200, "OK".into()));
}

/// The broker's process: RabbitMQ's Erlang VM.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (comm.trim() == "beam.smp" && String::from_utf8_lossy(&cmdline).contains("rabbit")).then_some(pid)
    })
}

/// Runs `f`; returns the broker's CPU seconds (utime + stime) and the wall seconds it took.
fn broker_cpu(pid: u32, f: impl FnOnce()) -> (f64, f64) {
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let field =
            |i: usize| after.split_whitespace().nth(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        field(11) + field(12) // utime, stime: fields 14 and 15 of stat
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (t0, w0) = (ticks(), Instant::now());
    f();
    (ticks().saturating_sub(t0) as f64 / hz, w0.elapsed().as_secs_f64())
}

fn publish(ch: &lapin::Channel, key: &str) {
    // No confirm is asked for: the publish itself is what is timed.
    block_on(async {
        let _unconfirmed = ch
            .basic_publish(
                "amq.topic".into(),
                key.into(),
                BasicPublishOptions::default(),
                br#"{"command":"kill","arguments":["USR1"]}"#,
                BasicProperties::default(),
            )
            .await
            .unwrap();
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentiles(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    (at(0.50), at(0.99))
}

/// A box around a `sigtree` of [`TREE`] processes, all ready.
struct Tree {
    child: Child,
    fifo: std::fs::File,
    summary: PathBuf,
}

impl Tree {
    fn start(dir: &Path, name: &str, tree: &Path, args: &[&str]) -> Tree {
        let fifo = dir.join(format!("{name}.fifo"));
        let _ = std::fs::remove_file(&fifo);
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        // Read-write, so the tree's opens never block and no reader-less write can fail.
        let reader = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let summary = dir.join(format!("{name}.summary"));
        let sock = dir.join(format!("{name}.sock"));
        let child = Command::new(proc_box())
            .args(args)
            .args([
                "--nowarn",
                "--control-socket",
                sock.to_str().unwrap(),
                "--summary-file",
                summary.to_str().unwrap(),
                "--",
            ])
            .arg(tree)
            .arg(TREE.to_string())
            .arg(&fifo)
            .stdin(Stdio::null())
            .spawn()
            .expect("proc_box");
        let mut t = Tree { child, fifo: reader, summary };
        t.read_exactly(TREE, Duration::from_secs(60));
        t
    }

    fn read_exactly(&mut self, n: usize, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut got = 0;
        let mut buf = [0u8; 256];
        while got < n {
            match self.fifo.read(&mut buf[..(n - got).min(256)]) {
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= until {
                        return false;
                    }
                    let mut pfd = libc::pollfd {
                        fd: std::os::fd::AsRawFd::as_raw_fd(&self.fifo),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 10) };
                }
                Err(e) => panic!("fifo: {e}"),
            }
        }
        true
    }

    fn wait_signals(&mut self) {
        assert!(self.read_exactly(TREE, Duration::from_secs(30)), "the signal did not reach every process");
    }

    fn signals_within(&mut self, d: Duration) -> bool {
        self.read_exactly(TREE, d)
    }

    /// CPU of every proc_box thread so far, in ns.
    fn cpu_ns(&self) -> u64 {
        let tasks = format!("/proc/{}/task", self.child.id());
        std::fs::read_dir(tasks)
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    fn hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops the box (SIGTERM to proc_box) and returns its summary.
    fn stop(mut self) -> serde_json::Value {
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        serde_json::from_str(&std::fs::read_to_string(&self.summary).unwrap_or_default()).unwrap_or_default()
    }
}

fn proc_box() -> String {
    std::env::var("PROC_BOX_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_proc_box").to_owned())
}

fn build_sigtree(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/sigtree.c");
    let out = dir.join("sigtree");
    let st = Command::new("cc").args(["-O2", "-o"]).arg(&out).arg(&src).status().expect("cc");
    assert!(st.success(), "building sigtree failed");
    out
}
