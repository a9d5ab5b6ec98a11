//! Whatever the host throws at the box around the job: a closed or stalled stderr, durations
//! that cannot be represented.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::Instant;

/// `proc_box … 2> >(true)`: stderr is a pipe whose reader is gone. Logging must not panic.
#[test]
fn a_closed_stderr_does_not_crash_the_box() {
    let s = Scene::new("closed-stderr");
    let summary = s.dir.join("summary.json");
    let mut child = s
        .command(&["--timeout", "500ms", "--summary-file", summary.to_str().unwrap(), "--", "sleep", "100"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take()); // the reader is gone before the first log line
    assert_eq!(wait_exit(&mut child).code(), Some(124));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert_eq!(v["reason"], "timeout");
    s.assert_no_survivors();
}

/// Nobody reads proc_box's stderr while a client makes it log a lot: the timeout must still
/// fire on time, since log lines are queued and dropped, never written by the loop itself.
#[test]
fn a_stalled_stderr_does_not_stall_the_loop() {
    let s = Scene::new("stalled-stderr");
    let sock = s.socket().display().to_string();
    let mut child = s
        .command(&["--control-socket", &sock, "--timeout", "2s", "--", "sleep", "100"])
        .stderr(Stdio::piped()) // never read: the pipe fills at 64 KiB
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut ctl = Control::connect(&s.socket());
    let name = "x".repeat(1000);
    for _ in 0..400 {
        let reply = ctl.raw(&format!(r#"{{"command": "{name}"}}"#));
        assert_eq!(reply["ok"], false);
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    assert_eq!(wait_exit(&mut child).code(), Some(124));
    let took = start.elapsed().as_secs_f64();
    assert!(took < 2.0 + 3.0, "the 2 s timeout fired after {took:.1} s");
    s.assert_no_survivors();
}

#[test]
fn durations_that_cannot_be_represented_are_refused() {
    let s = Scene::new("overflow");
    for opt in ["--timeout", "--grace", "--sint", "--monitor", "--msgtimeout"] {
        for value in ["1e19", "5000000000000000h", "36501d"] {
            let out = s.command(&[opt, value, "true"]).run();
            assert_eq!(out.status.code(), Some(125), "{opt} {value}");
        }
    }
    let sock = s.socket().display().to_string();
    let mut child = s.command(&["--control-socket", &sock, "--", "sleep", "100"]).spawn().unwrap();
    let mut ctl = Control::connect(&s.socket());
    let reply = ctl.raw(r#"{"command": "change_sample_rate", "arguments": ["1e19"]}"#);
    assert_eq!(reply["ok"], false, "{reply}");
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

/// A sample interval below the 100 ms floor floods the sinks: refused as a command (the box
/// keeps its interval and its job) and as `--sint` (a usage error before the job starts).
#[test]
fn a_sample_interval_below_the_floor_is_refused() {
    let s = Scene::new("sint-floor");
    for value in ["1ns", "99ms", "0"] {
        let out = s.command(&["--sint", value, "true"]).run();
        assert_eq!(out.status.code(), Some(125), "--sint {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("at least 100ms"), "{err}");
    }
    let stats = s.dir.join("stats.jsonl");
    let sock = s.socket().display().to_string();
    let mut child = s
        .command(&["--control-socket", &sock, "--stats-file", stats.to_str().unwrap(), "--sint", "1h"])
        .args(["--", "sleep", "100"])
        .spawn()
        .unwrap();
    let mut ctl = Control::connect(&s.socket());
    for value in ["1ns", "99ms", "0.05"] {
        let reply = ctl.raw(&format!(r#"{{"command": "change_sample_rate", "arguments": ["{value}"]}}"#));
        assert_eq!(reply["ok"], false, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains("at least 100ms"), "{reply}");
    }
    // The floor itself is accepted, and takes effect.
    let samples = || std::fs::read_to_string(&stats).unwrap_or_default().lines().count();
    ctl.ok("change_sample_rate", &["100ms"]);
    wait_for("samples at the floor", || (samples() >= 3).then_some(()));
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A client that streams commands as fast as it can, and reads its replies, must neither delay
/// the timeout nor grow proc_box's memory.
#[test]
fn a_streaming_client_neither_starves_the_loop_nor_grows_memory() {
    use std::io::{BufRead, BufReader, Write};
    let s = Scene::new("stream");
    let sock = s.socket().display().to_string();
    let mut child =
        s.command(&["--control-socket", &sock, "--timeout", "2s", "--", "sleep", "100"]).spawn().unwrap();
    let stream = wait_for("the socket", || std::os::unix::net::UnixStream::connect(s.socket()).ok());
    let start = Instant::now();
    let mut writer = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = "{}\n".repeat(4096);
        while writer.write_all(chunk.as_bytes()).is_ok() {}
    });
    let replies = std::thread::spawn(move || {
        let mut n = 0u64;
        let mut line = String::new();
        let mut r = BufReader::new(stream);
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            n += 1;
            line.clear();
        }
        n
    });
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() && start.elapsed() < DEADLINE {
        peak = peak.max(rss_kib(child.id()));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(wait_exit(&mut child).code(), Some(124));
    let took = start.elapsed().as_secs_f64();
    assert!(took < 4.0, "the 2 s timeout fired after {took:.2} s under a streaming client");
    assert!(replies.join().unwrap() > 1000, "the client was served meanwhile");
    assert!(peak < 64 * 1024, "proc_box grew to {peak} KiB under one client");
}

/// Idle connections never lock controllers out: the oldest idle one makes room. And no command
/// that was fully received goes unanswered, however many clients arrive at once.
#[test]
fn idle_connections_make_room_and_every_command_is_answered() {
    let s = Scene::new("slots");
    let sock = s.socket().display().to_string();
    let mut child = s.command(&["--control-socket", &sock, "--", "sleep", "100"]).spawn().unwrap();
    let _idle: Vec<_> = (0..70)
        .map(|_| wait_for("a connection", || std::os::unix::net::UnixStream::connect(s.socket()).ok()))
        .collect();
    let mut ctl = Control::connect(&s.socket());
    assert_eq!(ctl.status()["state"], "running");
    let clients: Vec<_> = (0..100)
        .map(|_| {
            let path = s.socket();
            std::thread::spawn(move || {
                let mut c = Control::connect(&path);
                c.ok("sample", &[])["ok"] == true
            })
        })
        .collect();
    let answered = clients.into_iter().map(|h| h.join().unwrap()).filter(|&ok| ok).count();
    assert_eq!(answered, 100, "every command gets its answer");
    Control::connect(&s.socket()).ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

/// Each process is counted once in subreaper mode too: a child that exited and is not yet
/// reaped must not be found again by the children-list walk.
fn processes_started_counts_each_process_once(mode: &str) {
    let s = Scene::new("started");
    let summary = s.dir.join(format!("{mode}.json"));
    // Short children reaped by sh; then 200 orphans, reparented to proc_box and killed at
    // the main exit, so they die as proc_box's own unreaped children.
    let script = "i=0; while [ $i -lt 300 ]; do sleep 0.001 & i=$((i+1)); done; wait; \
                  i=0; while [ $i -lt 200 ]; do sleep 100 & i=$((i+1)); done; exit 0";
    let out = s
        .command(&["--track", mode, "--summary-file", summary.to_str().unwrap(), "--", "sh", "-c", script])
        .run();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let started = v["processes_started"].as_u64().unwrap();
    // sh and its 500 children; in subreaper mode a child may exit before any walk sees it.
    assert!(started <= 501, "{mode}: processes_started {started} for 501 processes");
    if mode == "ptrace" {
        assert_eq!(started, 501, "ptrace mode is exact");
    }
}
each_mode!(processes_started_counts_each_process_once);

/// `{"command":"status","COMMAND":"timer_stop"}` must not stop the timer: ambiguous keys are
/// refused.
#[test]
fn ambiguous_keys_are_refused() {
    let s = Scene::new("ambiguous");
    let sock = s.socket().display().to_string();
    let mut child =
        s.command(&["--control-socket", &sock, "--timeout", "1h", "--", "sleep", "100"]).spawn().unwrap();
    let mut ctl = Control::connect(&s.socket());
    for line in
        [r#"{"command":"status","COMMAND":"timer_stop"}"#, r#"{"command":"status","command":"timer_stop"}"#]
    {
        let reply = ctl.raw(line);
        assert_eq!(reply["ok"], false, "{line}: {reply}");
        assert!(reply["error"].as_str().unwrap().contains("ambiguous"), "{reply}");
    }
    assert_eq!(ctl.status()["timer"]["enabled"], true);
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

/// As root, `--summary-file /dev/null` must write to the device, never replace it; an
/// unwritable location is a 125 before the job runs.
#[test]
fn summary_paths_that_are_not_regular_files() {
    use std::os::unix::fs::FileTypeExt;
    let s = Scene::new("summary-dev");
    let out = s.command(&["--summary-file", "/dev/null", "true"]).run();
    assert_eq!(out.status.code(), Some(0));
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    let ran = s.dir.join("ran");
    let touch = format!("touch {}", ran.display());
    let out = s.command(&["--summary-file", "/proc/self/summary.json", "sh", "-c", &touch]).run();
    assert_eq!(out.status.code(), Some(125), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!ran.exists(), "the job must not run when its summary cannot be written");
    let out = s.command(&["--summary-file", s.dir.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(125), "a directory is refused");
    // A FIFO where the directory should be must not block the start.
    let fifo = s.dir.join("not-a-dir");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let inside = fifo.join("summary.json");
    let out = s.command(&["--summary-file", inside.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(125), "a FIFO as the directory is refused");
}

/// The summary replaces a symlink at its path instead of writing through it, and leaves no
/// temporary file behind.
#[test]
fn the_summary_never_writes_through_a_symlink() {
    let s = Scene::new("summary-link");
    let victim = s.dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = s.dir.join("summary.json");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = s.command(&["--summary-file", link.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    let left: Vec<_> = std::fs::read_dir(&s.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// In a sticky, world-writable directory, a symlink planted by another user is not followed
/// (the kernel's protected_symlinks rule, enforced even where the host turns it off).
#[test]
fn a_stats_file_symlink_planted_by_another_user_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scene::new("planted");
    let shared = s.dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let victim = s.dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = shared.join("stats.jsonl");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    // SAFETY: lchown on a path we created; only the link's owner changes.
    let c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
    if unsafe { libc::lchown(c.as_ptr(), 65534, 65534) } != 0 {
        eprintln!("cannot chown (not root); skipped");
        return;
    }
    for flag in ["--stats-file", "--summary-file"] {
        let out = s.command(&[flag, link.to_str().unwrap(), "true"]).run();
        if flag == "--stats-file" {
            assert_eq!(out.status.code(), Some(125), "{flag}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("owned by another user"));
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n", "{flag}");
    }
}

/// A job read the socket path from its parent's command line and escaped its timeout with
/// `timer_reset`. The box's own processes are refused unless --allow-job-control.
fn the_job_cannot_control_its_own_box(mode: &str) {
    let send = fixture("sock_send");
    let s = Scene::new("selfctl");
    let sock = s.socket().display().to_string();
    let job = format!("{} {sock} '{{\"command\":\"timer_reset\"}}'; sleep 30", send.display());
    let start = Instant::now();
    let out = s
        .command(&["--track", mode, "--control-socket", &sock, "--timeout", "1s", "--", "sh", "-c", &job])
        .run();
    assert_eq!(out.status.code(), Some(124), "{mode}: the timeout still holds");
    assert!(start.elapsed().as_secs_f64() < 10.0);
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(reply.contains("\"ok\":false") && reply.contains("own tree"), "{mode}: {reply}");
    // Allowed on request.
    let job = format!("{} {sock} '{{\"command\":\"status\"}}'", send.display());
    let out = s
        .command(&["--track", mode, "--allow-job-control", "--control-socket", &sock, "--", "sh", "-c", &job])
        .run();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"), "{mode}");
}
each_mode!(the_job_cannot_control_its_own_box);

/// At a low descriptor limit, no process is lost: proc_box's own children are tracked by pid
/// once pidfds would eat into the reserve, and the control socket keeps working.
fn a_low_descriptor_limit_loses_no_process(mode: &str) {
    let s = Scene::new("lowfd");
    let sock = s.socket().display().to_string();
    // 300 daemons (double forks): each is reparented to proc_box, its own child.
    let job = "i=0; while [ $i -lt 300 ]; do (sleep 100 &); i=$((i+1)); done; exec sleep 100";
    let outer =
        format!("ulimit -n 160; exec {} --track {mode} --control-socket {sock} -- sh -c '{job}'", proc_box());
    let mut child = std::process::Command::new("sh")
        .args(["-c", &outer])
        .env("BOXTEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ctl = Control::connect(&s.socket());
    // proc_box and the 301 of its tree, once the short-lived subshells are gone.
    let root = child.id() as i32;
    wait_for_tree(&format!("{mode}: the tree to settle"), root, || {
        (s.survivors().len() == 302).then_some(())
    });
    wait_for_tree(&format!("{mode}: all 301 processes listed"), root, || {
        (ctl.status()["processes"].as_u64() == Some(301)).then_some(())
    });
    ctl.ok("suspend", &[]);
    let pids = status_pids(&ctl.status());
    wait_for_tree(&format!("{mode}: every process stopped"), root, || {
        pids.iter().all(|&p| is_stopped(p)).then_some(())
    });
    let unlisted: Vec<i32> =
        s.survivors().into_iter().filter(|p| *p != child.id() as i32 && !pids.contains(p)).collect();
    assert!(unlisted.is_empty(), "{mode}: processes of the tree not listed: {unlisted:?}");
    ctl.ok("stop", &[]);
    let err = child.stderr.take().unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(143), "{mode}");
    s.assert_no_survivors();
    let err = std::io::read_to_string(err).unwrap();
    if mode == "subreaper" {
        assert!(err.contains("file descriptors are short"), "{mode}: said once: {err}");
    }
}
each_mode!(a_low_descriptor_limit_loses_no_process);

/// Unknown command names reach the log: control characters (NUL, newline, ESC) are escaped, so
/// a client cannot forge log lines or drive the terminal.
#[test]
fn control_characters_never_reach_the_log_raw() {
    let s = Scene::new("inject");
    let sock = s.socket().display().to_string();
    let mut child =
        s.command(&["--control-socket", &sock, "--", "sleep", "100"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut ctl = Control::connect(&s.socket());
    let reply = ctl.raw(r#"{"command": "x\nproc_box: forged line\u001b[2J\u0000"}"#);
    assert_eq!(reply["ok"], false);
    ctl.ok("stop", &[]);
    let err = child.stderr.take().unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    let err = std::io::read_to_string(err).unwrap();
    assert!(!err.contains('\u{1b}') && !err.contains('\0'), "raw control characters: {err:?}");
    assert!(!err.lines().any(|l| l.starts_with("proc_box: forged")), "a forged line: {err}");
    assert!(err.contains("\\u{1b}[2J"), "escaped instead: {err}");
}

/// When proc_box cannot hold the child it forked (pidfd_open fails: a kernel before 5.3 or a
/// seccomp policy; or ptrace is refused under `--track ptrace`), it fails with 125 at once,
/// the job never runs, and no process is left behind.
#[test]
fn a_spawn_that_cannot_hold_its_child_is_125_and_leaves_nothing() {
    let s = Scene::new("spawnfail");
    let ran = s.dir.join("ran");
    let job = format!("touch {}; exec sleep 60", ran.display());
    let cases = [
        (libc::SYS_pidfd_open, "auto", "pidfd_open"),
        (libc::SYS_pidfd_open, "subreaper", "pidfd_open"),
        (libc::SYS_ptrace, "ptrace", "ptrace is not permitted"),
    ];
    for (nr, mode, says) in cases {
        let out = Command::new(fixture("seccomp_fail"))
            .args([&nr.to_string(), &libc::ENOSYS.to_string(), "--", proc_box()])
            .args(["--cgroup", "off", "--track", mode, "--", "sh", "-c", &job])
            .env("BOXTEST_MARKER", &s.marker)
            .run();
        if out.status.code() == Some(77) {
            eprintln!("no seccomp filter for this architecture; skipped");
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{mode}: {err}");
        assert!(err.contains(says), "{mode}: {err}");
        s.assert_no_survivors();
        assert!(!ran.exists(), "{mode}: the job ran");
    }
}

/// Every step between fork and exec is checked: when one fails (here setpgid, made to fail in
/// the job's process only by a seccomp filter), the box says which, exits 125, and the job
/// never runs.
fn a_failed_step_before_exec_is_125_and_the_job_never_runs(mode: &str) {
    let s = Scene::new("stepfail");
    // setpgid(0, 0) is the child's own call; proc_box's setpgid(pid, pid) passes.
    let out = Command::new(fixture("seccomp_fail"))
        .args([&libc::SYS_setpgid.to_string(), &libc::EPERM.to_string(), "0=0", "--", proc_box()])
        .args(["--cgroup", "off", "--track", mode, "--", "echo", "ran"])
        .env("BOXTEST_MARKER", &s.marker)
        .run();
    if out.status.code() == Some(77) {
        eprintln!("no seccomp filter for this architecture; skipped");
        return;
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{mode}: {err}");
    assert!(err.contains("(setpgid): Operation not permitted"), "{mode}: {err}");
    // The child sets itself up while the parent seizes it, and tells a failure only after
    // the go: exited before the seize, it would read as ptrace being refused.
    assert!(!err.contains("ptrace"), "{mode}: {err}");
    assert!(out.stdout.is_empty(), "{mode}: the job ran");
    s.assert_no_survivors();
}
each_mode!(a_failed_step_before_exec_is_125_and_the_job_never_runs);
