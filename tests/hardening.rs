//! Whatever the host throws at the box around the job: a closed or stalled stderr, durations
//! that cannot be represented.

mod common;

use common::*;
use std::process::Stdio;
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
