//! proc_box's costs, each measured against a bare baseline in the same run:
//! * one full sample of a 1,000-process tree (target ≤ 15 ms), against reading only
//!   `/proc/PID/stat` of the same processes;
//! * the CPU of one monitor tick and one sample of a 100-process tree whose memory does not
//!   move (target ≤ 1.5 ms), against one where it moved (every PSS read again);
//! * proc_box's own CPU while boxing an idle 100-process job at the default monitor tick
//!   (target ≤ 0.5% of one core);
//! * stdout pass-through throughput, against the same writer sending straight to the same
//!   destination: /dev/null (target ≥ 90%), a pipe, a regular file.
//!
//! Run with `scripts/bench` (release build). Figures go to stdout.

use mio::Poll;
use proc_box::accounting::Accounting;
use proc_box::sys::pidfd::PidFd;
use proc_box::tracker::{Mode, Tracker};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // cargo test --benches asks for a listing; nothing to list
    }
    raise_nofile();
    // `cargo bench --bench overhead -- NAME` runs only the parts whose name contains NAME.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let run = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    if run("sample_cost") {
        sample_cost(1000);
    }
    if run("still_tree") {
        for mode in [Mode::Ptrace, Mode::Subreaper] {
            still_tree_cost(100, mode);
        }
    }
    if run("idle_overhead") {
        idle_overhead(100, Duration::from_secs(10));
    }
    if run("passthrough") {
        passthrough(2 << 30);
    }
}

fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointers to a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn sample_cost(n: usize) {
    let children: Vec<std::process::Child> =
        (0..n).map(|_| Command::new("sleep").arg("600").spawn().expect("spawn sleep")).collect();
    let poll = Poll::new().unwrap();
    let main = PidFd::open(children[0].id() as i32).unwrap();
    let mut tracker = Tracker::new(Mode::Subreaper, main, poll.registry());
    tracker.scan(poll.registry());
    assert!(tracker.len() >= n, "tracked {} of {n}", tracker.len());
    let mut acct = Accounting::new(Mode::Subreaper, Instant::now(), Default::default());
    acct.totals(&mut tracker); // warm the PSS cache, as the monitor tick keeps it warm
    let time = |f: &mut dyn FnMut()| {
        median(
            (0..15)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed()
                })
                .collect(),
        )
    };
    let sample = time(&mut || {
        acct.totals(&mut tracker);
    });
    let monitor = time(&mut || {
        acct.monitor(&mut tracker);
    });
    let pids = tracker.pids();
    let bare = time(&mut || {
        for p in &pids {
            let _ = std::fs::read(format!("/proc/{p}/stat"));
        }
    });
    println!(
        "sample of {n} processes: {:.2} ms (bare /proc/PID/stat walk {:.2} ms, ratio {:.1}x); monitor tick {:.2} ms",
        ms(sample),
        ms(bare),
        ms(sample) / ms(bare),
        ms(monitor)
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The CPU this thread has used.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// 100 processes sharing their libraries' pages, their memory still: the PSS cache's case.
/// "moved" is a fresh `Accounting`, which reads every `smaps_rollup`, as a tick does once any
/// member's memory moved. The warm figure is checked against it: the cache must not drift.
fn still_tree_cost(n: usize, mode: Mode) {
    let children: Vec<std::process::Child> =
        (0..n).map(|_| Command::new("sleep").arg("600").spawn().expect("spawn sleep")).collect();
    let poll = Poll::new().unwrap();
    let main = PidFd::open(children[0].id() as i32).unwrap();
    // A subreaper-mode tracker only lists; a ptrace-mode one would seize the processes.
    let mut tracker = Tracker::new(Mode::Subreaper, main, poll.registry());
    tracker.scan(poll.registry());
    let mut acct = Accounting::new(mode, Instant::now(), Default::default());
    acct.monitor(&mut tracker);
    let cpu = |f: &mut dyn FnMut()| {
        median(
            (0..31)
                .map(|_| {
                    let t = thread_cpu();
                    f();
                    thread_cpu() - t
                })
                .collect(),
        )
    };
    let mut warm = 0;
    let tick = cpu(&mut || warm = acct.monitor(&mut tracker));
    let sample = cpu(&mut || {
        acct.totals(&mut tracker);
    });
    let mut fresh = 0;
    let moved = cpu(&mut || {
        fresh = Accounting::new(mode, Instant::now(), Default::default()).monitor(&mut tracker);
    });
    println!(
        "{} still processes, {mode:?} mode: monitor tick {:.3} ms CPU, sample {:.3} ms CPU; after a move (all PSS read) {:.3} ms; \
         cached PSS {} KiB, fresh {} KiB",
        tracker.len(),
        ms(tick),
        ms(sample),
        ms(moved),
        warm >> 10,
        fresh >> 10
    );
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn proc_box() -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    dir.join("proc_box").display().to_string()
}

/// CPU time of every thread of `pid`, from schedstat (ns resolution).
fn cpu_of(pid: u32) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let s = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += s.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
    }
    Duration::from_nanos(total)
}

fn idle_overhead(n: usize, window: Duration) {
    for track in ["ptrace", "subreaper"] {
        let script = format!("for i in $(seq {}); do sleep 600 & done; wait", n - 1);
        let mut child = Command::new(proc_box())
            .args(["--nowarn", "--track", track, "--", "sh", "-c", &script])
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait for the tree to be complete before measuring.
        let start = Instant::now();
        while count_descendants(pid) < n && start.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (c0, t0) = (cpu_of(pid), Instant::now());
        std::thread::sleep(window);
        let (c1, t1) = (cpu_of(pid), Instant::now());
        let pct = (c1 - c0).as_secs_f64() / (t1 - t0).as_secs_f64() * 100.0;
        println!("idle overhead, {n}-process job, --track {track}: {pct:.3}% of one core");
        // SAFETY: signalling our own child, which we have not reaped.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let _ = child.wait();
    }
}

fn count_descendants(pid: u32) -> usize {
    let mut stack = vec![pid];
    let mut n = 0;
    while let Some(p) = stack.pop() {
        for task in std::fs::read_dir(format!("/proc/{p}/task")).into_iter().flatten().flatten() {
            let kids = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                n += 1;
                stack.push(k);
            }
        }
    }
    n
}

fn passthrough(bytes: u64) {
    let pb = proc_box();
    let file = std::env::temp_dir().join(format!("proc_box-bench-{}", std::process::id()));
    let f = file.display();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    for (what, sink) in [
        ("/dev/null", ">/dev/null".to_string()),
        ("a pipe to cat", "| cat >/dev/null".to_string()),
        ("a regular file", format!(">{f}")),
    ] {
        let run = |boxed: bool| {
            let prefix = if boxed { format!("{pb} --nowarn -- ") } else { String::new() };
            let script = format!("{prefix}head -c {bytes} /dev/zero {sink}");
            let t = Instant::now();
            let st = Command::new("sh").args(["-c", &script]).status().unwrap();
            assert!(st.success());
            t.elapsed()
        };
        let direct = median((0..5).map(|_| run(false)).collect());
        let boxed = median((0..5).map(|_| run(true)).collect());
        println!(
            "stdout pass-through, {gib:.0} GiB to {what}: direct {:.2} GiB/s, through proc_box {:.2} GiB/s ({:.0}% of direct)",
            gib / direct.as_secs_f64(),
            gib / boxed.as_secs_f64(),
            direct.as_secs_f64() / boxed.as_secs_f64() * 100.0
        );
    }
    let _ = std::fs::remove_file(&file);
}
