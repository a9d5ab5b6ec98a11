//! The command line, the environment and exit statuses.

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::{Command, Output};

fn run(scene: &Scene, args: &[&str]) -> Output {
    scene.command(args).run()
}

fn code(scene: &Scene, args: &[&str]) -> i32 {
    run(scene, args).status.code().expect("proc_box exits, it is not killed")
}

#[test]
fn exit_statuses() {
    let s = Scene::new("codes");
    assert_eq!(code(&s, &["true"]), 0);
    assert_eq!(code(&s, &["sh", "-c", "exit 3"]), 3);
    assert_eq!(code(&s, &["sh", "-c", "kill -9 $$"]), 137);
    assert_eq!(code(&s, &["sh", "-c", "kill -USR1 $$"]), 128 + libc::SIGUSR1);
    assert_eq!(code(&s, &["--timeout", "200ms", "sleep", "30"]), 124);
    assert_eq!(code(&s, &["--timeout", "200ms", "--preserve-status", "sleep", "30"]), 143);
    assert_eq!(
        code(&s, &["--timeout", "200ms", "--stop-signal", "INT", "--preserve-status", "sleep", "30"]),
        130
    );
    let out = run(&s, &["/nonexistent/command"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run '/nonexistent/command'"));
    assert_eq!(code(&s, &["/"]), 126);
    assert_eq!(code(&s, &["no-such-command-anywhere"]), 127);
}

#[test]
fn usage_errors_exit_125_before_running_anything() {
    let s = Scene::new("usage");
    let marker = s.dir.join("ran");
    let touch = format!("touch {}", marker.display());
    for args in [
        &["--no-such-flag", "sh", "-c", &touch][..],
        &["--timeout", "soon", "sh", "-c", &touch],
        &["--json", "{broken", "sh", "-c", &touch],
        &["--json", "[1, 2]", "sh", "-c", &touch],
        &["--stop-signal", "0", "sh", "-c", &touch],
        &["--track", "magic", "sh", "-c", &touch],
        &[],
    ] {
        let out = run(&s, args);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert!(!out.stderr.is_empty(), "a usage error explains itself: {args:?}");
        assert_prefixed("proc_box", &out);
    }
    assert!(!marker.exists(), "the command must not run after a usage error");
    assert_prefixed("proc_box", &Command::new(proc_box()).args(["--generate", "tcsh"]).run());
}

/// A usage error reads like every other message of the program: `NAME: …`, not `error: …`.
fn assert_prefixed(name: &str, out: &Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with(&format!("{name}: ")), "{err}");
    assert!(!err.lines().any(|l| l.starts_with("error")), "{err}");
}

#[test]
fn proc_boxctl_usage_errors_say_proc_boxctl() {
    let ctl = || Command::new(env!("CARGO_BIN_EXE_proc_boxctl"));
    for args in [&["--no-such-flag"][..], &["send"], &["watch", "--count", "many"], &["send", "--id"]] {
        let out = ctl().args(args).run();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_prefixed("proc_boxctl", &out);
    }
    let out = ctl().arg("--help").run();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Control proc_box boxes"));
    // No subcommand: the help, on stderr, as it was.
    let out = ctl().run();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Control proc_box boxes"));
}

#[test]
fn go_style_flags_and_environment() {
    let s = Scene::new("flags");
    assert_eq!(code(&s, &["-timeout=200ms", "sleep", "30"]), 124);
    assert_eq!(code(&s, &["-timeout", "200ms", "sleep", "30"]), 124);
    assert_eq!(
        code(
            &s,
            &["-grace=1s", "-debug", "-nowarn=false", "-runanyway", "-multiRmtKey", "-sint", "10s", "true"]
        ),
        0
    );
    let out = s.command(&["sleep", "30"]).env("PBOX_TIMEOUT", "200ms").run();
    assert_eq!(out.status.code(), Some(124), "PBOX_TIMEOUT applies");
    let out = s.command(&["--timeout", "0", "sleep", "0.5"]).env("PBOX_TIMEOUT", "100ms").run();
    assert_eq!(out.status.code(), Some(0), "the command line wins over the environment");
    let out = s.command(&["true"]).env("PBOX_DEBUG", "1").run();
    assert!(String::from_utf8_lossy(&out.stderr).contains("debug:"));
    let out = s.command(&["true"]).env("PBOX_SINT", "often").run();
    assert_eq!(out.status.code(), Some(125), "a bad environment value is a usage error");
    let out = s.command(&["-version"]).run();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("proc_box "));
}

#[test]
fn args_after_the_command_are_the_commands() {
    let s = Scene::new("args");
    let out = run(&s, &["-grace", "1s", "sh", "-c", "echo \"$@\"", "x", "-timeout", "5", "--", "--debug"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "-timeout 5 -- --debug\n");
    let out = run(&s, &["--", "sh", "-c", "echo ok"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

#[test]
fn stop_signals_to_proc_box_stop_the_tree() {
    for (sig, expect) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 143), (Signal::SIGQUIT, 143)] {
        let s = Scene::new("sigterm");
        let mut child = s.command(&["--", fixture("fork_tree").to_str().unwrap(), "stay"]).spawn().unwrap();
        for n in ["child0", "child1", "grand0", "grand1", "main"] {
            s.pid(n);
        }
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        assert_eq!(wait_exit(&mut child).code(), Some(expect), "{sig}");
        s.assert_no_survivors();
    }
}

/// `timeout -k`: with --kill-status, 137 when SIGKILL had to follow the stop signal after the
/// grace period; 124 when the stop signal was enough, and 124 without the option.
#[test]
fn kill_status_after_the_grace_period() {
    let s = Scene::new("killstatus");
    let stubborn: &'static str = fixture("ignore_term").to_str().unwrap().to_owned().leak();
    for mode in MODES {
        let base = ["--track", mode, "--timeout", "200ms", "--grace", "300ms"];
        let with =
            |extra: &[&'static str]| -> Vec<&'static str> { base.iter().chain(extra).copied().collect() };
        assert_eq!(code(&s, &with(&["--kill-status", "--", stubborn, "stay"])), 137, "{mode}");
        assert_eq!(code(&s, &with(&["-kill-status", "--", "sleep", "30"])), 124, "{mode}");
        assert_eq!(code(&s, &with(&["--", stubborn, "stay"])), 124, "{mode}");
    }
    s.assert_no_survivors();
}

/// The end-of-job line says how many processes the box ended and why, counting every process
/// of the tree at the stop, not the ones left when the main process died.
fn end_of_job_line_counts_every_process_ended_and_says_why(mode: &str) {
    let s = Scene::new("endline");
    let tree = fixture("fork_tree");
    let child = s
        .command(&["--track", mode, "--", tree.to_str().unwrap(), "stay"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for n in ["child0", "child1", "grand0", "grand1", "main"] {
        s.pid(n);
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ended 5 process(es) of the tree (a stop signal to proc_box)"), "{mode}: {err}");
    assert!(!err.contains("leftover"), "{mode}: {err}");

    let stubborn = fixture("ignore_term");
    let child = s
        .command(&[
            "--track",
            mode,
            "--timeout",
            "1s",
            "--grace",
            "300ms",
            "--",
            stubborn.to_str().unwrap(),
            "stay",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    s.pid("stubborn");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(124), "{mode}: {err}");
    assert!(
        err.contains(
            "ended 2 process(es) of the tree (the wall-clock timeout expired); 2 still running after the grace period got SIGKILL"
        ),
        "{mode}: {err}"
    );
    s.assert_no_survivors();
}
each_mode!(end_of_job_line_counts_every_process_ended_and_says_why);

/// `>out 2>&1`: one open file, one offset growing with both streams. Its bytes are counted
/// once, as stdout's; stderr counts 0. Two separate opens of one file are two counts.
#[test]
fn stdout_and_stderr_into_one_open_file_are_counted_once() {
    let s = Scene::new("samefile");
    let summary = s.dir.join("summary.json");
    let out_path = s.dir.join("out.txt");
    for mode in MODES {
        let file = std::fs::File::create(&out_path).unwrap();
        let status = s
            .command(&[
                "--track",
                mode,
                "--nowarn",
                "--summary-file",
                summary.to_str().unwrap(),
                "--",
                "sh",
                "-c",
                "echo 1234567; echo abc >&2",
            ])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .run_status();
        assert_eq!(status.code(), Some(0), "{mode}");
        let v = read_json(&summary);
        assert_eq!(std::fs::metadata(&out_path).unwrap().len(), 12, "{mode}");
        assert_eq!(
            (v["stdout_bytes"].as_u64(), v["stderr_bytes"].as_u64()),
            (Some(12), Some(0)),
            "{mode}: {v}"
        );
    }
    // Two opens of one file are two offsets, each counted on its own.
    let out = std::fs::File::create(&out_path).unwrap();
    let err = std::fs::OpenOptions::new().write(true).open(&out_path).unwrap();
    let status = s
        .command(&[
            "--nowarn",
            "--summary-file",
            summary.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            "echo 1234567; echo abc >&2",
        ])
        .stdout(out)
        .stderr(err)
        .run_status();
    assert_eq!(status.code(), Some(0));
    let v = read_json(&summary);
    assert_eq!((v["stdout_bytes"].as_u64(), v["stderr_bytes"].as_u64()), (Some(8), Some(4)), "{v}");
}

/// `--format`, as `/usr/bin/time -f`: the end-of-job line from the summary's own figures; a
/// typo is a usage error before the job runs.
#[test]
fn format_prints_the_end_of_job_line_from_the_summary() {
    let s = Scene::new("format");
    let summary = s.dir.join("summary.json");
    let out = s
        .command(&[
            "--nowarn",
            "--summary-file",
            summary.to_str().unwrap(),
            "--format",
            "%x|%{reason}|%{exit.code}|%{scheduler.name}:%{scheduler.job_id}:%{scheduler.account}|%{owner.uid}|%{processes_started}|%{user.team}|%C\\t%%",
            "--json",
            r#"{"team":"red"}"#,
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .env("SLURM_JOB_ID", "4242")
        .env("SLURM_JOB_ACCOUNT", "physics")
        .run();
    assert_eq!(out.status.code(), Some(3));
    let v = read_json(&summary);
    let uid = nix::unistd::getuid().as_raw();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("3|exited|3|slurm:4242:physics|{uid}|1|red|sh -c exit 3\t%\n"),
        "{v}"
    );
    // The summary carries the same owner and scheduler, and %{…} knows exactly its fields.
    assert_eq!(v["owner"]["uid"], uid);
    assert_eq!(v["scheduler"]["partition"], serde_json::Value::Null);
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut known = proc_box::accounting::format::FIELDS.to_vec();
    keys.sort_unstable();
    known.sort_unstable();
    assert_eq!(keys, known, "--format's field list drifted from the summary");

    for bad in ["%q", "%{nope}", "50%"] {
        let out = s.command(&["--format", bad, "true"]).run();
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--format:"), "{bad}");
    }
}

/// A job shorter than one memory tick has no PSS reading: the end-of-job line gives the kernel's
/// high-water mark of its largest process instead of a zero that means "not measured".
fn a_short_job_shows_a_measured_peak_not_zero(mode: &str) {
    let s = Scene::new("shortpeak");
    let out = s.command(&["--track", mode, "--", "true"]).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("peak 0 B"), "{mode}: {err}");
    assert!(err.contains("(RSS of the largest process)") || err.contains("(PSS)"), "{mode}: {err}");
}
each_mode!(a_short_job_shows_a_measured_peak_not_zero);

#[test]
fn second_stop_signal_escalates_to_sigkill() {
    let s = Scene::new("escalate");
    let sock = s.socket().display().to_string();
    let mut child = s
        .command(&[
            "--grace",
            "1h",
            "--control-socket",
            &sock,
            "--",
            fixture("ignore_term").to_str().unwrap(),
            "stay",
        ])
        .spawn()
        .unwrap();
    s.pid("stubborn");
    s.pid("main");
    let mut ctl = Control::connect(&s.socket());
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGTERM).unwrap();
    let first = std::time::Instant::now();
    wait_for("the box to be stopping", || (ctl.status()["state"] == "stopping").then_some(()));
    // Sent again at once by the same sender, it is the same request: no escalation.
    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(ctl.status()["state"], "stopping");
    // Sent again a second later, it is a second request: SIGKILL now, whatever the grace.
    // (The wait is the rule under test, not a synchronisation.)
    std::thread::sleep(std::time::Duration::from_millis(1100).saturating_sub(first.elapsed()));
    assert!(child.try_wait().unwrap().is_none(), "the echo must not have escalated");
    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(137));
    s.assert_no_survivors();
}

/// `timeout(1)` signals its child and then its own process group, so proc_box receives one
/// SIGTERM twice within microseconds: that is one request, and the grace period holds.
fn timeout_1_around_proc_box_keeps_the_grace_period(mode: &str) {
    let s = Scene::new("gnutimeout");
    let cleaned = s.dir.join("cleaned");
    let script = format!(
        "trap 'sleep 0.5; echo ok > {}; exit 0' TERM; while :; do sleep 0.05; done",
        cleaned.display()
    );
    let out = Command::new("timeout")
        .args(["-s", "TERM", "0.5", proc_box(), "--track", mode, "--grace", "20s", "--", "sh", "-c"])
        .arg(&script)
        .env("BOXTEST_MARKER", &s.marker)
        .run();
    assert_eq!(out.status.code(), Some(124), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
    assert!(
        cleaned.exists(),
        "{mode}: the job was killed before its cleanup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.assert_no_survivors();
}
each_mode!(timeout_1_around_proc_box_keeps_the_grace_period);

#[test]
fn grace_period_then_sigkill() {
    let s = Scene::new("grace");
    let sock = s.socket().display().to_string();
    let stubborn = fixture("ignore_term");
    let mut child = s
        .command(&["--grace", "500ms", "--control-socket", &sock, "--", stubborn.to_str().unwrap(), "stay"])
        .spawn()
        .unwrap();
    s.pid("stubborn");
    s.pid("main"); // both ignore SIGTERM from here on
    let mut ctl = Control::connect(&s.socket());
    let start = std::time::Instant::now();
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(137));
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(500),
        "SIGKILL came before the grace period ended"
    );
    s.assert_no_survivors();
}

#[test]
fn on_main_exit_wait_keeps_the_box_open_for_the_tree() {
    let s = Scene::new("wait");
    let done = s.dir.join("done");
    let script = format!("(sleep 0.3; touch {}) & exit 5", done.display());
    let out = s.command(&["--on-main-exit", "wait", "sh", "-c", &script]).run();
    assert_eq!(out.status.code(), Some(5), "the main process's status");
    assert!(done.exists(), "proc_box returned before the tree finished");

    // A tree that never ends by itself is still stoppable.
    let sock = s.socket().display().to_string();
    let mut child = s
        .command(&[
            "--on-main-exit",
            "wait",
            "--control-socket",
            &sock,
            "--",
            fixture("fork_tree").to_str().unwrap(),
            "exit",
        ])
        .spawn()
        .unwrap();
    let mut ctl = Control::connect(&s.socket());
    wait_for("the main process to exit", || {
        let st = ctl.status();
        (st["main_running"] == false && st["processes"] == 4).then_some(())
    });
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(3));
    s.assert_no_survivors();
}

#[test]
fn forwarded_signals_reach_every_process() {
    for sig in [Signal::SIGUSR2, Signal::SIGWINCH] {
        let s = Scene::new("forward");
        let d = s.dir.display();
        let name = &sig.as_str()[3..];
        // Two shells, one of them in its own session, each recording the signal.
        let waiter = |who: &str| {
            format!("trap 'touch {d}/{who}.got' {name}; touch {d}/{who}.ready; while :; do sleep 0.05; done")
        };
        let script = format!("setsid sh -c \"{}\" & {}", waiter("daemon"), waiter("main"));
        let mut child = s.command(&["--", "sh", "-c", &script]).spawn().unwrap();
        wait_for("the traps to be set", || {
            (s.has_file("main.ready") && s.has_file("daemon.ready")).then_some(())
        });
        kill(Pid::from_raw(child.id() as i32), sig).unwrap();
        wait_for("the signal to reach both", || {
            (s.has_file("main.got") && s.has_file("daemon.got")).then_some(())
        });
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        assert_eq!(wait_exit(&mut child).code(), Some(143));
        s.assert_no_survivors();
    }
}

/// A batch script that boxes its own steps: the inner box must not inherit the outer box's
/// PBOX_* settings (its control socket would be "in use"), in both modes.
#[test]
fn nested_boxes_work_and_consumed_variables_are_not_passed_on() {
    let s = Scene::new("nested");
    for mode in MODES {
        let sock = s.dir.join(format!("{mode}.sock"));
        let inner = format!("env | grep '^PBOX_' ; {} -- sh -c 'exit 7'", proc_box());
        let out = s
            .command(&["--track", mode, "--", "sh", "-c", &inner])
            .env("PBOX_CONTROL_SOCKET", &sock)
            .env("PBOX_GRACE", "3s")
            .run();
        assert_eq!(out.status.code(), Some(7), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{mode}: no PBOX_ variable reaches the job");
    }
    s.assert_no_survivors();
}

#[test]
fn repeated_options_one_day_and_sub_nanosecond_timeouts() {
    let s = Scene::new("goflags");
    // The last --timeout wins, as with Go's flag package.
    let out = s.command(&["-timeout", "1h", "--timeout=200ms", "-timeout", "300ms", "sleep", "30"]).run();
    assert_eq!(out.status.code(), Some(124));
    let out = s.command(&["-timeout", "1d", "sh", "-c", "exit 3"]).run();
    assert_eq!(out.status.code(), Some(3));
    // A positive timeout below a nanosecond is a timeout, not "none".
    // Also where the float underflows to zero: written as positive, it is still 1 ns.
    for tiny in ["1e-12", "1e-5000"] {
        let out = s.command(&["--timeout", tiny, "sleep", "30"]).run();
        assert_eq!(out.status.code(), Some(124), "{tiny}");
    }
    for big in ["1e19", "5000000000000000h"] {
        let out = s.command(&["--timeout", big, "true"]).run();
        assert_eq!(out.status.code(), Some(125), "{big}");
    }
    let out = s.command(&["-timout", "2s", "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--timeout' (or '-timeout')"));
}

/// coreutils' timeout-group: a shell starts a background job with INT and QUIT ignored. The
/// signals proc_box handles and passes on reach the job at their defaults; the rest (PIPE here)
/// stays as the launcher left it.
fn signals_proc_box_forwards_start_at_default_in_the_job(mode: &str) {
    let bit = |sig: i32| 1u64 << (sig - 1);
    let s = Scene::new("sigdfl");
    let script = format!(
        "trap '' INT QUIT HUP TERM ALRM USR1 PIPE; exec {} --track {mode} --stop-signal USR1 -- \
         sed -n 's/^SigIgn:[[:space:]]*//p' /proc/self/status",
        proc_box()
    );
    let out = Command::new("sh").args(["-c", &script]).env("BOXTEST_MARKER", &s.marker).run();
    assert_eq!(out.status.code(), Some(0), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let ign = u64::from_str_radix(text.trim(), 16).expect("SigIgn");
    for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM, libc::SIGALRM, libc::SIGUSR1] {
        assert_eq!(ign & bit(sig), 0, "{mode}: signal {sig} must start at its default: {text}");
    }
    assert_ne!(ign & bit(libc::SIGPIPE), 0, "{mode}: an ignored SIGPIPE stays ignored: {text}");
}
each_mode!(signals_proc_box_forwards_start_at_default_in_the_job);

/// The same as behaviour: under a launcher that ignores INT, Ctrl-C to the group ends the job,
/// and proc_box passes on INT as its stop signal to a job that can receive it.
fn ctrl_c_to_the_group_ends_a_job_whose_launcher_ignored_int(mode: &str) {
    use std::os::unix::process::CommandExt;
    let s = Scene::new("bgint");
    let script = format!(
        "trap '' INT QUIT; exec {} --track {mode} --stop-signal INT --grace 1h -- sleep 300",
        proc_box()
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("BOXTEST_MARKER", &s.marker)
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    wait_for_tree("sleep to start", pid, || {
        tree_of(pid)
            .into_iter()
            .any(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep"))
            .then_some(())
    });
    // Ctrl-C: the terminal sends SIGINT to the whole foreground group.
    kill(Pid::from_raw(-pid), Signal::SIGINT).unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(130), "{mode}");
    s.assert_no_survivors();
}
each_mode!(ctrl_c_to_the_group_ends_a_job_whose_launcher_ignored_int);

/// coreutils: `(trap '' PIPE; timeout 10 yes | :)` lets yes see EPIPE instead of dying.
#[test]
fn an_ignored_sigpipe_reaches_the_job_in_a_pipeline() {
    let s = Scene::new("yeshead");
    for mode in MODES {
        let script = format!("trap '' PIPE; {} --track {mode} -- yes | head -1", proc_box());
        let out = Command::new("sh").args(["-c", &script]).env("BOXTEST_MARKER", &s.marker).run();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "y\n", "{mode}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("Broken pipe"), "{mode}: yes must see EPIPE: {err}");
    }
    s.assert_no_survivors();
}

/// The man pages and completions in doc/ are generated from the parsers' own definitions, and
/// must not drift from them: regenerate with `proc_box --generate man > doc/proc_box.1`, and
/// likewise for `proc_boxctl` and each shell.
#[test]
fn shipped_man_pages_and_completions_are_current() {
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("doc");
    for bin in [proc_box(), env!("CARGO_BIN_EXE_proc_boxctl")] {
        let name = std::path::Path::new(bin).file_name().unwrap().to_str().unwrap();
        for (what, ext) in [("man", "1"), ("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
            let out = Command::new(bin).args(["--generate", what]).env_clear().run();
            assert_eq!(out.status.code(), Some(0), "{name} {what}");
            let file = format!("{name}.{ext}");
            let shipped = std::fs::read(doc.join(&file)).unwrap();
            assert!(
                out.stdout == shipped,
                "doc/{file} is stale: regenerate it with {name} --generate {what}"
            );
        }
        let man = String::from_utf8(Command::new(bin).args(["--generate", "man"]).run().stdout).unwrap();
        for section in ["EXAMPLES", "ENVIRONMENT", "\"EXIT STATUS\"", "OPTIONS"] {
            assert!(man.contains(&format!(".SH {section}")), "{name}: no {section} section");
        }
        let help = String::from_utf8(Command::new(bin).arg("--help").run().stdout).unwrap();
        assert!(help.contains("--generate <WHAT>"), "{name}: --generate is missing from --help");
    }
    let out = Command::new(proc_box()).args(["--generate", "tcsh"]).run();
    assert_eq!(out.status.code(), Some(125));
}

/// Bash completion offers the Go tool's spelling too: `-tim<TAB>` gives `-timeout`.
#[test]
fn bash_completion_offers_the_go_spelling() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("doc/proc_box.bash");
    let probe = format!(
        "source {}; COMP_WORDS=(proc_box -tim); COMP_CWORD=1; _proc_box proc_box -tim proc_box; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let out = Command::new("bash").args(["-c", &probe]).run();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-timeout\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Arguments are bytes, not text: a file name that is not UTF-8 reaches the job unchanged, and
/// works as the value of one of proc_box's own path options in every spelling; a non-UTF-8
/// value where text is required is a usage error (125), never a crash.
#[test]
fn arguments_that_are_not_utf8() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let s = Scene::new("bytes");
    let name = s.dir.join(OsStr::from_bytes(b"caf\xe9-\xff"));
    std::fs::write(&name, "x").unwrap();
    let out = s.command(&["--"]).arg("ls").arg(&name).run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, [name.as_os_str().as_bytes(), b"\n"].concat());

    for (i, spelling) in ["--stats-file", "-stats-file", "--stats-file=", "-stats-file="].iter().enumerate() {
        let stats =
            s.dir.join(OsStr::from_bytes(&[b"stats-\xff".as_slice(), i.to_string().as_bytes()].concat()));
        let mut c = s.command(&[]);
        if spelling.ends_with('=') {
            c.arg([OsStr::new(spelling), stats.as_os_str()].join(OsStr::new("")));
        } else {
            c.arg(spelling).arg(&stats);
        }
        // The Go spelling after the non-UTF-8 argument is still understood.
        let out = c.args(["-timeout", "30s", "true"]).run();
        assert_eq!(out.status.code(), Some(0), "{spelling}: {}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(&stats).unwrap_or_else(|e| panic!("{spelling}: {e}"));
        assert!(text.contains("\"type\":\"summary\""), "{spelling}: {text}");
    }

    let ran = s.dir.join("ran");
    let out = s.command(&["--id"]).arg(OsStr::from_bytes(b"\xff")).args(["touch"]).arg(&ran).run();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("UTF-8"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ran.exists(), "the command must not run after a usage error");
}

/// proc_boxctl's Go-style global options work on bytes too: a non-UTF-8 `-cacert=PATH` is
/// taken as the path it is (and reported missing), not misread as short flags.
#[test]
fn proc_boxctl_takes_a_non_utf8_path() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(env!("CARGO_BIN_EXE_proc_boxctl"))
        .arg(OsStr::from_bytes(b"-cacert=/nonexistent/ca\xff.pem"))
        .args(["-uri", "amqp://127.0.0.1:1", "send", "--id", "x", "status"])
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--cacert /nonexistent/ca"), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
}

/// Batch users often come from an NSS source other than `/etc/passwd` (systemd, sss, ldap): a
/// uid with no entry anywhere must still run its job, named by number. (A static glibc
/// `dlopen`s those sources and crashed here with SIGSEGV at start.)
#[test]
fn a_user_with_no_passwd_entry_can_run_a_box() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to become an unknown uid");
        return;
    }
    let s = Scene::new("no-passwd");
    let summary = s.dir.join("summary.json");
    std::fs::set_permissions(&s.dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=54321", "--regid=54321", "--clear-groups", proc_box()])
        .args(["--nowarn", "--summary-file", summary.to_str().unwrap(), "--", "true"])
        .env("BOXTEST_MARKER", &s.marker)
        .run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v = read_json(&summary);
    assert_eq!(v["owner"]["uid"], 54321, "{v}");
}
