//! The stop path under every signal number and odd inherited state: nothing may hang the box,
//! and the job must see each signal exactly as it would unboxed.

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The hostile launcher: SIGCHLD, SIGUSR2 and SIGPIPE ignored; SIGUSR1 and signal 40 blocked.
/// (An ignored SIGINT is not the job's to inherit: proc_box gives the signals it handles and
/// passes on back at their defaults, as timeout(1) does; `tests/it/cli.rs` covers that rule.)
const ODD_STATE: [&str; 10] = ["-i", "17", "-i", "12", "-i", "13", "-b", "10", "-b", "40"];

fn launched(scene: &Scene, state: &[&str], argv: &[&str]) -> Command {
    let mut c = Command::new(fixture("launch"));
    c.args(state)
        .arg("--")
        .args(argv)
        .env("FIX_DIR", &scene.dir)
        .env("BOXTEST_MARKER", &scene.marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs the zoo (directly, or boxed), playing the part of the outside world: each signal it
/// asks for in `zoo.want` is sent to it with kill(2). Returns its stdout and exit code.
fn run_zoo(scene: &Scene, argv: &[&str]) -> (String, Option<i32>) {
    let _ = std::fs::remove_file(scene.dir.join("zoo.want"));
    let mut child = launched(scene, &ODD_STATE, argv).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(out).unwrap_or_default());
    let mut last = String::new();
    let start = Instant::now();
    loop {
        let want = std::fs::read_to_string(scene.dir.join("zoo.want")).unwrap_or_default();
        if want.trim() == "done" || child.try_wait().unwrap().is_some() {
            break;
        }
        if !want.is_empty() && want != last {
            let mut f = want.split_whitespace().map(|v| v.parse::<i32>().unwrap());
            let (pid, sig) = (f.next().unwrap(), f.next().unwrap());
            // SAFETY: a raw signal number (kill(2) takes any); `pid` is the zoo's own.
            assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "sending {sig} to the zoo");
            last = want;
        }
        if start.elapsed() > DEADLINE {
            break; // wait_exit's watchdog reports where it hangs
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let status = wait_exit(&mut child);
    (reader.join().unwrap(), status.code())
}

#[test]
fn signal_zoo_is_seen_exactly_as_unboxed() {
    let s = Scene::new("zoo");
    let zoo = fixture("zoo");
    let zoo = zoo.to_str().unwrap();
    let (bare, code) = run_zoo(&s, &[zoo]);
    assert_eq!(code, Some(0), "the zoo itself must pass unboxed:\n{bare}");
    // The launcher's state reached it, and every phase ran.
    assert!(bare.contains("ignored: 12 13 17\nblocked: 10 40\nchild: auto-reaped"), "{bare}");
    assert!(bare.contains("caught 60 signals: 1=3/"), "{bare}");
    assert!(bare.contains("setuid: ok\ncancel: deferred ok, async ok\nzoo: ok\n"), "{bare}");
    for mode in MODES {
        let (boxed, code) = run_zoo(&s, &[proc_box(), "--track", mode, "--", zoo]);
        assert_eq!(code, Some(0), "{mode}:\n{boxed}");
        assert_eq!(boxed, bare, "{mode}: the job saw its signals differently in the box");
    }
    s.assert_no_survivors();
}

fn death_by_any_signal_number_is_reported(mode: &str) {
    let s = Scene::new("rtdeath");
    let zoo = fixture("zoo");
    for sig in ["40", "64", "34", "10"] {
        let summary = s.dir.join("summary.json");
        let out = s
            .command(&["--track", mode, "--summary-file", summary.to_str().unwrap(), "--"])
            .arg(&zoo)
            .args(["die", sig])
            .run();
        let n: i32 = sig.parse().unwrap();
        assert_eq!(
            out.status.code(),
            Some(128 + n),
            "{mode} {sig}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
        assert_eq!(v["exit"]["signal"], n, "{mode}");
    }
}
each_mode!(death_by_any_signal_number_is_reported);

fn real_time_signals_to_itself_do_not_hang_the_box(mode: &str) {
    let s = Scene::new("rtmin");
    let out = s
        .command(&[
            "--track",
            mode,
            "--",
            "bash",
            "-c",
            r#"trap "echo got" RTMIN; kill -RTMIN $$; kill -40 $$; echo done"#,
        ])
        .run();
    assert_eq!(out.status.code(), Some(168), "{mode}: killed by 40 after the trap ran");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got\n", "{mode}");
}
each_mode!(real_time_signals_to_itself_do_not_hang_the_box);

fn a_launcher_that_ignores_sigchld_does_not_hang_the_box(mode: &str) {
    let s = Scene::new("chldign");
    let out =
        launched(&s, &["-i", "17"], &[proc_box(), "--track", mode, "--", "sh", "-c", "sleep 0.2 & exit 5"])
            .run();
    assert_eq!(out.status.code(), Some(5), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
    s.assert_no_survivors();
}
each_mode!(a_launcher_that_ignores_sigchld_does_not_hang_the_box);

fn an_ignored_sigpipe_stays_ignored_for_the_job(mode: &str) {
    // coreutils' timeout test: (trap '' PIPE; timeout 10 yes | :) must let yes see EPIPE.
    let s = Scene::new("pipeign");
    let out = launched(&s, &["-i", "13"], &[proc_box(), "--track", mode, "--", "sh", "-c", "yes | :"]).run();
    assert_eq!(out.status.code(), Some(0), "{mode}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("yes: standard output: Broken pipe"), "{mode}: {err}");
}
each_mode!(an_ignored_sigpipe_stays_ignored_for_the_job);

#[test]
fn odd_inherited_state_closed_fds_and_a_foreign_cwd() {
    let s = Scene::new("oddstate");
    for mode in MODES {
        let state = ["-c", "0", "-c", "3", "-d", "/", "-b", "15", "-b", "10", "-i", "1"];
        let out = launched(
            &s,
            &state,
            &[proc_box(), "--track", mode, "--", "sh", "-c", "pwd; sleep 0.1 & wait; exit 4"],
        )
        .run();
        assert_eq!(out.status.code(), Some(4), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "/\n");
        // SIGTERM blocked at start: proc_box still acts on it (as timeout(1) does); the job
        // inherits the block, so only the SIGKILL after the grace period ends it.
        let argv = [proc_box(), "--track", mode, "--grace", "300ms", "--", "sleep", "30"];
        let mut child = launched(&s, &state, &argv).spawn().unwrap();
        wait_for("the job to start", || (tree_of(child.id() as i32).len() > 1).then_some(()));
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert_eq!(wait_exit(&mut child).code(), Some(137), "{mode}");
    }
    s.assert_no_survivors();
}

/// Started with standard output closed, proc_box opens /dev/null in its place before anything
/// else (as std's runtime does; proc_box starts without it): the job's output, which proc_box
/// relays, goes there, not into the first file proc_box opened, and the summary file stays whole.
#[test]
fn a_closed_standard_output_is_dev_null_for_the_box_and_the_job() {
    let s = Scene::new("closed-stdout");
    for mode in MODES {
        let summary = s.dir.join(format!("summary-{mode}.json"));
        let argv = [
            proc_box(),
            "--track",
            mode,
            "--summary-file",
            summary.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "readlink /proc/$PPID/fd/1 >&2; echo into-stdout",
        ];
        let out = launched(&s, &["-c", "1"], &argv).run();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{mode}: {err}");
        assert_eq!(err.lines().next(), Some("/dev/null"), "{mode}: {err}");
        let text = std::fs::read_to_string(&summary).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{mode}: {e}: {text}"));
        assert_eq!(v["exit_code"], 0, "{mode}: {text}");
        assert_eq!(v["stdout_bytes"], 12, "{mode}: {text}");
    }
    s.assert_no_survivors();
}

/// An `O_PATH` descriptor on 0, 1 or 2 is open, though poll(2) calls it invalid: proc_box must
/// neither replace it nor refuse to start (a check built on poll aborted here). The job reads
/// proc_box's own descriptor (its parent's).
#[test]
fn an_o_path_standard_descriptor_is_passed_on() {
    use std::os::unix::process::CommandExt;
    let s = Scene::new("opath");
    for fd in 0..=2 {
        let script = format!("readlink /proc/$PPID/fd/{fd} >&{}", if fd == 2 { 1 } else { 2 });
        let mut cmd = s.command(&["--", "sh", "-c", &script]);
        // SAFETY: open(2) and dup2(2) on the forked child's own descriptors.
        unsafe {
            cmd.pre_exec(move || {
                let p = libc::open(c"/tmp".as_ptr(), libc::O_PATH | libc::O_DIRECTORY);
                if p < 0 || libc::dup2(p, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(p);
                Ok(())
            });
        }
        let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).run();
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "fd {fd}: {e}");
        let said = if fd == 2 { &o } else { &e };
        assert_eq!(said.lines().next(), Some("/tmp"), "fd {fd}: stdout {o:?}, stderr {e:?}");
    }
    s.assert_no_survivors();
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

#[test]
fn a_fifo_sink_without_a_reader_can_be_interrupted_with_125() {
    let s = Scene::new("fifo-term");
    for flag in ["--stats-file", "--summary-file"] {
        let fifo = s.dir.join(format!("{flag}.fifo"));
        mkfifo(&fifo);
        let ran = s.dir.join("ran");
        let touch = format!("touch {}", ran.display());
        let mut child = s
            .command(&[flag, fifo.to_str().unwrap(), "--", "sh", "-c", &touch])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let mut seen = Vec::new();
        wait_for("the message that it waits for a reader", || {
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut err, &mut buf).unwrap_or(0);
            seen.extend_from_slice(&buf[..n]);
            String::from_utf8_lossy(&seen).contains("waiting up to").then_some(())
        });
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert_eq!(wait_exit(&mut child).code(), Some(125), "{flag}");
        assert!(!ran.exists(), "{flag}: the job must not start");
    }
}

#[test]
fn a_fifo_sink_gets_its_lines_once_a_reader_comes() {
    let s = Scene::new("fifo-read");
    let fifo = s.dir.join("stats.fifo");
    mkfifo(&fifo);
    let mut child = s.command(&["--stats-file", fifo.to_str().unwrap(), "--", "true"]).spawn().unwrap();
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::read_to_string(fifo).unwrap()
    });
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let lines = reader.join().unwrap();
    let last: serde_json::Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
}

/// The control socket exists before the job starts (here while the stats FIFO waits for its
/// reader): a SIGHUP sent then must still give its sample once the job runs, not be dropped.
#[test]
fn a_sighup_before_the_job_starts_gives_its_sample_once_it_runs() {
    let s = Scene::new("fifo-hup");
    let fifo = s.dir.join("stats.fifo");
    mkfifo(&fifo);
    let sock = s.socket().display().to_string();
    let args = ["--control-socket", &sock, "--stats-file", fifo.to_str().unwrap(), "--sint", "1h"];
    let mut child = s.command(&args).args(["--", "sleep", "1000"]).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    wait_for("the message that it waits for a reader", || {
        let mut buf = [0u8; 256];
        let n = std::io::Read::read(&mut err, &mut buf).unwrap_or(0);
        seen.extend_from_slice(&buf[..n]);
        String::from_utf8_lossy(&seen).contains("waiting up to").then_some(())
    });
    assert!(s.socket().exists(), "the socket is there before the job starts");
    kill(Pid::from_raw(child.id() as i32), Signal::SIGHUP).unwrap();
    let reader = std::thread::spawn({
        let fifo = fifo.clone();
        move || std::fs::read_to_string(fifo).unwrap()
    });
    let mut ctl = Control::connect(&s.socket());
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    let text = reader.join().unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["sample", "summary"], "{text}");
}

#[test]
fn a_fifo_sink_that_never_gets_a_reader_is_refused_with_125() {
    let s = Scene::new("fifo-none");
    let fifo = s.dir.join("stats.fifo");
    mkfifo(&fifo);
    let out = s.command(&["--stats-file", fifo.to_str().unwrap(), "--", "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no process opened the FIFO for reading"), "{err}");
}

#[test]
fn a_fifo_reader_that_stops_reading_does_not_stall_the_timeout() {
    let s = Scene::new("fifo-stall");
    let fifo = s.dir.join("stats.fifo");
    mkfifo(&fifo);
    // The reader opens the FIFO and never reads: the pipe, shrunk to one page, fills with
    // samples at the shortest interval well before the timeout.
    let reader = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
    // SAFETY: fcntl on a descriptor this test owns.
    let size = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&reader), libc::F_SETPIPE_SZ, 4096) };
    assert!(size >= 4096, "F_SETPIPE_SZ");
    let start = Instant::now();
    let out = s
        .command(&[
            "--stats-file",
            fifo.to_str().unwrap(),
            "--sint",
            "100ms",
            "--timeout",
            "2s",
            "--",
            "sleep",
            "30",
        ])
        .run();
    assert_eq!(out.status.code(), Some(124));
    // The timeout fired, then at most FINAL_WAIT (5 s) was spent on the stalled sink.
    assert!(start.elapsed().as_secs_f64() < 2.0 + 5.0 + 5.0, "took {:?}", start.elapsed());
}

/// `SIG:COUNT` pairs of what `zoo listen` has caught so far.
fn seen(scene: &Scene) -> std::collections::HashMap<i32, u32> {
    let text = std::fs::read_to_string(scene.dir.join("listen.seen")).unwrap_or_default();
    text.split_whitespace()
        .filter_map(|p| {
            let (s, n) = p.split_once(':')?;
            Some((s.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

fn raw_kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a positive pid (our own child, or the job) and any signal number.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid} with {sig}");
}

/// dumb-init's proxies_signals and shell_background tests, for every number from 1 to 64:
/// proc_box never dies of a signal; it forwards every one without a meaning of its own,
/// exactly once; TSTP, TTIN and TTOU suspend the tree and proc_box, SIGCONT resumes both.
fn every_signal_sent_to_proc_box_is_forwarded_or_acted_on(mode: &str) {
    let zoo = fixture("zoo");
    let s = Scene::new("proxy");
    let mut child = s
        .command(&["--nowarn", "--track", mode, "--"])
        .arg(&zoo)
        .arg("listen")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pb = child.id() as i32;
    let job = s.pid("listen");
    let alive =
        |child: &mut std::process::Child| assert!(child.try_wait().unwrap().is_none(), "proc_box died");
    for sig in 1..=64 {
        let own_meaning =
            [libc::SIGKILL, libc::SIGSTOP, 32, 33, libc::SIGCHLD, libc::SIGINT, libc::SIGTERM, libc::SIGQUIT]
                .contains(&sig)
                || [libc::SIGHUP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU].contains(&sig);
        if own_meaning {
            continue;
        }
        raw_kill(pb, sig);
        wait_for(&format!("{mode}: signal {sig} to reach the job"), || {
            (seen(&s).get(&sig) == Some(&1)).then_some(())
        });
        alive(&mut child);
    }
    // SIGHUP means "sample": the job does not see it.
    raw_kill(pb, libc::SIGHUP);
    raw_kill(pb, libc::SIGUSR1);
    wait_for("a second SIGUSR1", || (seen(&s).get(&libc::SIGUSR1) == Some(&2)).then_some(()));
    assert_eq!(seen(&s).get(&libc::SIGHUP), None, "{mode}: SIGHUP is proc_box's own");
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        raw_kill(pb, sig);
        wait_for(&format!("{mode}: {sig} to suspend box and job"), || {
            (is_stopped(pb) && is_stopped(job)).then_some(())
        });
        raw_kill(pb, libc::SIGCONT);
        wait_for(&format!("{mode}: SIGCONT to resume both"), || {
            (!is_stopped(pb) && !is_stopped(job)).then_some(())
        });
        alive(&mut child);
    }
    let caught = seen(&s);
    assert!(
        [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGCHLD].iter().all(|s| !caught.contains_key(s)),
        "{mode}: job control is proc_box's, not forwarded: {caught:?}"
    );
    raw_kill(pb, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child).code(), Some(0), "{mode}: the job caught SIGTERM and exited 0");
    assert_eq!(seen(&s).get(&libc::SIGTERM), Some(&1));
    s.assert_no_survivors();
}
each_mode!(every_signal_sent_to_proc_box_is_forwarded_or_acted_on);

/// A real fault inside proc_box (a bug) must still end the tree, in subreaper mode too, where no
/// EXITKILL does it: the fault handler kills every descendant, then proc_box dies of the fault,
/// even when proc_box was started with the fault signal blocked and ignored. Also after a stack
/// overflow, when only the alternate signal stack is left to run the handler on.
fn a_real_fault_in_proc_box_takes_the_tree_with_it(mode: &str) {
    for overflow in [false, true] {
        main_thread_fault(mode, overflow);
    }
}
each_mode!(a_real_fault_in_proc_box_takes_the_tree_with_it);

fn main_thread_fault(mode: &str, overflow: bool) {
    let inject = fixture("fault_inject");
    let tree = fixture("fork_tree");
    let s = Scene::new("fault");
    // Started with SIGSEGV blocked and ignored: the handler must run all the same.
    let argv = [proc_box(), "--nowarn", "--track", mode, "--", tree.to_str().unwrap(), "stay"];
    let mut child = launched(&s, &["-b", "11", "-i", "11"], &argv).stdout(Stdio::null()).spawn().unwrap();
    for n in ["child0", "child1", "grand0", "grand1", "main"] {
        s.pid(n);
    }
    let err = child.stderr.take().unwrap();
    let status = Command::new(&inject)
        .arg(child.id().to_string())
        .args(overflow.then_some("overflow"))
        .status()
        .unwrap();
    if status.code() == Some(77) {
        eprintln!("fault injection is not supported on this architecture; skipped");
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    assert!(status.success(), "injecting the fault failed");
    let st = wait_exit(&mut child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "{mode}, overflow {overflow}: proc_box dies of its fault");
    let err = std::io::read_to_string(err).unwrap();
    assert!(err.contains("fatal signal in proc_box itself"), "{mode}, overflow {overflow}: {err}");
    s.wait_no_survivors();
}

/// The fault signals sent with kill(2) are not faults: forwarded like any other.
fn fault_signals_sent_with_kill_are_forwarded(mode: &str) {
    let zoo = fixture("zoo");
    let s = Scene::new("sentfault");
    let mut child = s.command(&["--nowarn", "--track", mode, "--"]).arg(&zoo).arg("listen").spawn().unwrap();
    s.pid("listen");
    for sig in
        [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS, libc::SIGABRT]
    {
        raw_kill(child.id() as i32, sig);
        wait_for(&format!("{mode}: {sig} forwarded"), || (seen(&s).get(&sig) == Some(&1)).then_some(()));
    }
    raw_kill(child.id() as i32, libc::SIGTERM);
    assert_eq!(wait_exit(&mut child).code(), Some(0), "{mode}");
}
each_mode!(fault_signals_sent_with_kill_are_forwarded);

/// `kill -CONT proc_box` after a `suspend` command is a resume: the tree runs and the timer
/// counts again.
fn sigcont_to_a_suspended_box_resumes_it(mode: &str) {
    let s = Scene::new("contresume");
    let sock = s.socket().display().to_string();
    let tree = fixture("fork_tree");
    let mut child = s
        .command(&["--track", mode, "--control-socket", &sock, "--"])
        .arg(&tree)
        .arg("stay")
        .spawn()
        .unwrap();
    let main = s.pid("main");
    let mut ctl = Control::connect(&s.socket());
    ctl.ok("suspend", &[]);
    wait_for("the tree to stop", || is_stopped(main).then_some(()));
    raw_kill(child.id() as i32, libc::SIGCONT);
    wait_for(&format!("{mode}: the box to resume"), || (ctl.status()["state"] == "running").then_some(()));
    wait_for("the tree to run", || (!is_stopped(main)).then_some(()));
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143), "{mode}");
    s.assert_no_survivors();
}
each_mode!(sigcont_to_a_suspended_box_resumes_it);

/// Each thread of a process: (name, SigBlk mask).
fn thread_masks(pid: u32) -> Vec<(String, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    tasks
        .filter_map(|t| {
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?.trim().to_owned();
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let hex = status.lines().find_map(|l| l.strip_prefix("SigBlk:"))?.trim().to_owned();
            Some((name, u64::from_str_radix(&hex, 16).ok()?))
        })
        .collect()
}

/// Every thread of proc_box has the main thread's signal mask, whichever thread started it:
/// the log writer, the relay, the AMQP thread and the threads of lapin and its executor. All
/// block what the signalfd reads, and none blocks a fault signal (a fault there would kill
/// proc_box without the tree walk).
#[test]
fn every_thread_of_proc_box_has_the_main_threads_mask() {
    let s = Scene::new("masks");
    let id = s.marker.replace('-', ".");
    let mut args: Vec<String> = bus::args(&format!("{id}.ctl"), &format!("{id}.st"), &id);
    args.push("--debug".into());
    args.extend(["--", "sh", "-c", "echo out; exec sleep 60"].map(String::from));
    let mut child = Command::new(proc_box())
        .args(&args)
        .env("BOXTEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let expected = ["log", "amqp", "relay-stdout", "async-global-ex", "async-io", "lapin-io-loop"];
    // A thread being created has every signal blocked for a moment (glibc), so the masks are
    // read until they agree; a thread that keeps a mask of its own fails the test.
    let start = Instant::now();
    let main = loop {
        let masks = thread_masks(pid);
        let main = masks.iter().find(|(n, _)| n == "proc_box").map(|m| m.1);
        let all_there = expected.iter().all(|e| masks.iter().any(|(n, _)| n == e));
        if let Some(main) = main.filter(|&m| all_there && masks.iter().all(|(_, b)| *b == m)) {
            break main;
        }
        assert!(start.elapsed() < DEADLINE, "threads and their masks, never all alike: {masks:x?}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    for sig in [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS] {
        assert_eq!(main & (1 << (sig - 1)), 0, "proc_box's threads block fault signal {sig}");
    }
    assert_ne!(main & (1 << (libc::SIGCHLD - 1)), 0, "proc_box's threads leave SIGCHLD to the signalfd");
    raw_kill(pid as i32, libc::SIGTERM);
    wait_exit(&mut child);
    s.wait_no_survivors();
}

/// A real fault on a thread other than the main one (the log writer) also runs the handler:
/// in subreaper mode without a cgroup, the only thing that ends the tree. A stack overflow too.
#[test]
fn a_real_fault_on_another_thread_takes_the_tree_with_it() {
    for overflow in [false, true] {
        log_thread_fault(overflow);
    }
}

fn log_thread_fault(overflow: bool) {
    let inject = fixture("fault_inject");
    let tree = fixture("fork_tree");
    let s = Scene::new("threadfault");
    let argv = [
        proc_box(),
        "--debug",
        "--track",
        "subreaper",
        "--cgroup",
        "off",
        "--",
        tree.to_str().unwrap(),
        "stay",
    ];
    // Started with SIGSEGV blocked, as in the test above.
    let mut child = launched(&s, &["-b", "11"], &argv).stdout(Stdio::null()).spawn().unwrap();
    for n in ["child0", "child1", "grand0", "grand1", "main"] {
        s.pid(n);
    }
    let err = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let pid = child.id();
    let log = wait_for("the log thread", || {
        std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten().find_map(|t| {
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (name.trim() == "log").then(|| t.file_name().to_string_lossy().into_owned())
        })
    });
    assert_ne!(log, pid.to_string());
    let status = Command::new(&inject).arg(&log).args(overflow.then_some("overflow")).status().unwrap();
    if status.code() == Some(77) {
        eprintln!("fault injection is not supported on this architecture; skipped");
        let _ = child.kill();
        let _ = child.wait();
        return;
    }
    assert!(status.success(), "injecting the fault failed");
    let st = wait_exit(&mut child);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGSEGV), "overflow {overflow}: proc_box dies of its fault");
    s.wait_no_survivors();
    let err = err.join().unwrap();
    assert!(err.contains("fatal signal in proc_box itself"), "overflow {overflow}: {err}");
}
