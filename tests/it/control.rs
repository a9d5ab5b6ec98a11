//! The local control socket : every command, the timer, and bad input.

use crate::common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Child;

fn boxed(scene: &Scene, extra: &[&str]) -> (Child, Control) {
    let sock = scene.socket().display().to_string();
    let mut args = vec!["--control-socket", &sock];
    args.extend_from_slice(extra);
    let tree = fixture("fork_tree");
    args.extend(["--", tree.to_str().unwrap(), "stay"]);
    let child = scene.command(&args).spawn().unwrap();
    scene.pid("main");
    (child, Control::connect(&scene.socket()))
}

fn secs(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn malformed_input_is_refused_and_the_job_is_untouched() {
    let s = Scene::new("malformed");
    let (mut child, mut ctl) = boxed(&s, &[]);
    for line in [
        "not json",
        "[]",
        "{}",
        r#"{"command": 9}"#,
        r#"{"command": "explode"}"#,
        r#"{"command": "kill", "arguments": ["0"]}"#,
        r#"{"command": "kill", "arguments": [-15]}"#,
        r#"{"command": "kill", "arguments": ["SIGNOPE"]}"#,
        r#"{"command": "kill", "arguments": ["999"]}"#,
        r#"{"command": "change_sample_rate", "arguments": ["whenever"]}"#,
        r#"{"command": "stop", "arguments": ["now"]}"#,
    ] {
        let reply = ctl.raw(line);
        assert_eq!(reply["ok"], false, "{line}");
        assert!(reply["error"].as_str().is_some_and(|e| !e.is_empty()), "{line}: {reply}");
        assert_eq!(reply["state"], serde_json::Value::Null, "a refusal carries no state: {reply}");
    }
    let huge = format!(r#"{{"command": "status", "pad": "{}"}}"#, "x".repeat(100_000));
    let reply = ctl.raw(&huge);
    assert_eq!(reply["ok"], false);
    // The connection still works, and the job was never touched.
    let before = s.count("main");
    assert_eq!(ctl.ok("STATUS", &[])["state"]["state"], "running");
    wait_for("the job to keep working", || (s.count("main") > before + 3).then_some(()));
    for n in ["child0", "child1", "grand0", "grand1"] {
        assert!(!is_stopped(s.pid(n)));
    }
    // Keys are matched case-insensitively, as Go's decoder did.
    let reply = ctl.raw(r#"{"Command": "kill", "Arguments": ["KILL"]}"#);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(wait_exit(&mut child).code(), Some(137));
    s.assert_no_survivors();
}

#[test]
fn several_commands_in_one_write_and_a_last_line_without_newline() {
    let s = Scene::new("pipelined");
    let (mut child, _ctl) = boxed(&s, &[]);
    let mut raw = UnixStream::connect(s.socket()).unwrap();
    raw.set_read_timeout(Some(DEADLINE)).unwrap();
    raw.write_all(b"{\"command\":\"status\"}\n\n{\"command\":\"timer_stop\"}\n{\"command\":\"kill\",\"arguments\":[\"TERM\"]}").unwrap();
    raw.shutdown(std::net::Shutdown::Write).unwrap();
    let replies: Vec<Value> =
        BufReader::new(raw).lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let names: Vec<&str> = replies.iter().map(|r| r["command"].as_str().unwrap()).collect();
    assert_eq!(names, ["status", "timer_stop", "kill"]);
    assert!(replies.iter().all(|r| r["ok"] == true));
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    s.assert_no_survivors();
}

#[test]
fn timer_commands() {
    let s = Scene::new("timer");
    let (mut child, mut ctl) = boxed(&s, &["--timeout", "1h"]);
    let timer = |ctl: &mut Control| ctl.status()["timer"].clone();
    assert_eq!(timer(&mut ctl)["enabled"], true);
    assert_eq!(secs(&timer(&mut ctl)["timeout_seconds"]), 3600.0);

    ctl.ok("timer_stop", &[]);
    let stopped = secs(&timer(&mut ctl)["elapsed_seconds"]);
    let box_t0 = secs(&ctl.status()["elapsed_seconds"]);
    wait_for("the box clock to move", || {
        (secs(&ctl.status()["elapsed_seconds"]) > box_t0 + 0.3).then_some(())
    });
    let t = timer(&mut ctl);
    assert_eq!(t["enabled"], false);
    assert_eq!(secs(&t["elapsed_seconds"]), stopped, "a stopped timer does not count");

    ctl.ok("timer_resume", &[]);
    wait_for("the timer to count again", || {
        (secs(&timer(&mut ctl)["elapsed_seconds"]) > stopped + 0.1).then_some(())
    });

    ctl.ok("timer_reset", &[]);
    let t = timer(&mut ctl);
    assert_eq!((t["enabled"].clone(), secs(&t["elapsed_seconds"])), (Value::Bool(false), 0.0));

    ctl.ok("timer_start", &[]);
    let t = timer(&mut ctl);
    assert_eq!(t["enabled"], true);
    assert!(secs(&t["elapsed_seconds"]) < stopped + 1.0);
    ctl.ok("kill", &["9"]);
    assert_eq!(wait_exit(&mut child).code(), Some(137));
}

#[test]
fn timeout_is_paused_while_suspended_and_restarts_with_timer_start() {
    let s = Scene::new("timeout");
    let (mut child, mut ctl) = boxed(&s, &["--timeout", "3s"]);
    ctl.ok("suspend", &[]);
    wait_for("the box to outlive its timeout while suspended", || {
        (secs(&ctl.status()["elapsed_seconds"]) > 3.5).then_some(())
    });
    let st = ctl.status();
    assert_eq!(st["state"], "suspended");
    assert!(secs(&st["timer"]["elapsed_seconds"]) < 3.0, "{st}");
    ctl.ok("resume", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(124));
    s.assert_no_survivors();

    // timer_stop holds off the timeout; timer_start counts from zero again.
    let s = Scene::new("timeout2");
    let (mut child, mut ctl) = boxed(&s, &["--timeout", "3s"]);
    ctl.ok("timer_stop", &[]);
    wait_for("the box to outlive its timeout", || {
        (secs(&ctl.status()["elapsed_seconds"]) > 3.5).then_some(())
    });
    assert_eq!(ctl.status()["state"], "running");
    ctl.ok("timer_start", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(124));
    s.assert_no_survivors();
}

#[test]
fn sample_command_replies_with_a_sample() {
    let s = Scene::new("sample");
    let (mut child, mut ctl) = boxed(&s, &[]);
    for n in ["child0", "child1", "grand0", "grand1"] {
        s.pid(n);
    }
    wait_for("a sample listing every process", || {
        let reply = ctl.ok("sample", &[]);
        let sample = &reply["sample"];
        assert_eq!(sample["type"], "sample");
        (sample["processes"] == 5).then_some(())
    });
    let reply = ctl.ok("change_sample_rate", &["250ms"]);
    assert!(reply["sample"].is_null());
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

#[test]
fn socket_is_private_and_removed_at_exit() {
    let s = Scene::new("sockfile");
    let (mut child, mut ctl) = boxed(&s, &[]);
    let meta = std::fs::metadata(s.socket()).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    ctl.ok("stop", &[]);
    wait_exit(&mut child);
    assert!(!s.socket().exists(), "the socket file is removed at exit");
}

#[test]
fn socket_path_conflicts() {
    let s = Scene::new("conflict");
    let sock = s.socket().display().to_string();
    // A stale socket (nobody listening) is replaced.
    drop(UnixListener::bind(s.socket()).unwrap());
    assert_eq!(s.command(&["--control-socket", &sock, "true"]).run_status().code(), Some(0));
    // A live one is not taken over.
    let _live = UnixListener::bind(s.socket()).unwrap();
    let out = s.command(&["--control-socket", &sock, "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use"));
    // Nor is a regular file.
    let file = s.dir.join("plain");
    std::fs::write(&file, "keep me").unwrap();
    let out = s.command(&["--control-socket", file.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn many_clients_at_once() {
    let s = Scene::new("clients");
    let (mut child, mut ctl) = boxed(&s, &[]);
    let mut clients: Vec<Control> = (0..20).map(|_| Control::connect(&s.socket())).collect();
    for c in &mut clients {
        assert_eq!(c.status()["state"], "running");
    }
    drop(clients);
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

/// `status`'s state is public interface: exactly these fields, with these JSON types, on the
/// socket as on every transport (the reply is built once for all of them).
#[test]
fn status_has_exactly_the_documented_fields() {
    let s = Scene::new("status-fields");
    let (mut child, mut ctl) = boxed(&s, &["--timeout", "1h"]);
    let reply = ctl.raw(r#"{"command": "status"}"#);
    let keys = |v: &Value| {
        let mut k: Vec<String> =
            v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&reply), ["command", "error", "ok", "state"]);
    let st = &reply["state"];
    assert_eq!(
        keys(st),
        [
            "box_id",
            "elapsed_seconds",
            "main_running",
            "pid",
            "pids",
            "processes",
            "processes_peak",
            "processes_started",
            "processes_started_exact",
            "reason",
            "state",
            "timer",
            "track"
        ]
    );
    assert_eq!(keys(&st["timer"]), ["elapsed_seconds", "enabled", "remaining_seconds", "timeout_seconds"]);
    assert!(st["box_id"].is_string() && st["state"] == "running" && st["track"].is_string());
    assert!(st["pid"].is_i64() && st["pids"].is_array() && st["main_running"] == true);
    for n in ["processes", "processes_peak", "processes_started"] {
        assert!(st[n].is_u64(), "{n}: {st}");
    }
    assert!(st["processes_started_exact"].is_boolean() && st["reason"].is_null());
    assert!(st["elapsed_seconds"].is_f64() && st["timer"]["enabled"] == true);
    assert_eq!(st["timer"]["timeout_seconds"], 3600.0);
    assert!(st["timer"]["remaining_seconds"].is_f64() && st["timer"]["elapsed_seconds"].is_f64());
    ctl.ok("kill", &["KILL"]);
    assert_eq!(wait_exit(&mut child).code(), Some(137));
}
