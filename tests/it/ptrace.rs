//! When ptrace is refused (seccomp, Yama), and jobs that want ptrace themselves.

use crate::common::*;
use std::process::{Command, Stdio};

/// proc_box under a seccomp filter that makes ptrace(2) fail with EPERM.
fn without_ptrace(scene: &Scene, args: &[&str]) -> Command {
    let mut c = Command::new(fixture("no_ptrace"));
    c.arg(proc_box())
        .args(args)
        .env("FIX_DIR", &scene.dir)
        .env("BOXTEST_MARKER", &scene.marker)
        .stdin(Stdio::null());
    c
}

#[test]
fn explicit_ptrace_mode_fails_with_125_and_says_what_to_do() {
    let s = Scene::new("refused");
    let ran = s.dir.join("ran");
    let touch = format!("touch {}", ran.display());
    let out = without_ptrace(&s, &["--track", "ptrace", "sh", "-c", &touch]).run();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--track subreaper"), "{err}");
    assert!(!ran.exists(), "the job must not run when its box cannot be built");
    s.assert_no_survivors();
}

#[test]
fn auto_mode_falls_back_to_subreaper_with_one_warning() {
    let s = Scene::new("fallback");
    let sock = s.socket().display().to_string();
    let tree = fixture("fork_tree");
    let mut child = without_ptrace(&s, &["--control-socket", &sock, "--", tree.to_str().unwrap(), "stay"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for n in ["child0", "child1", "grand0", "grand1", "main"] {
        s.pid(n);
    }
    let mut ctl = Control::connect(&s.socket());
    assert_eq!(ctl.status()["track"], "subreaper");
    // The cgroup subreaper mode uses, made only now that the mode is known: the job is in it,
    // and so is what it forked.
    if nix::unistd::geteuid().is_root() {
        for n in ["main", "grand1"] {
            let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", s.pid(n))).unwrap();
            assert!(cg.contains("/proc_box."), "{n} is not in the box's cgroup: {cg}");
        }
    }
    wait_for("every process to be listed", || (ctl.status()["processes"] == 5).then_some(()));
    ctl.ok("stop", &[]);
    let out = child.stderr.take().unwrap();
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    let err = std::io::read_to_string(out).unwrap();
    assert_eq!(err.matches("warning: ptrace is not permitted").count(), 1, "{err}");
    s.assert_no_survivors();
}

#[test]
fn jobs_that_use_ptrace_need_subreaper_mode() {
    let s = Scene::new("gdb");
    let job = fixture("wants_ptrace");
    let out = s.command(&["--track", "ptrace", job.to_str().unwrap()]).run();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ptrace: Operation not permitted\n");
    let out = s.command(&["--track", "subreaper", job.to_str().unwrap()]).run();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ptrace: ok\n");
    let out = s.command(&["sh", "-c", "echo $PROC_BOX_TRACK"]).run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ptrace\n", "the job can tell how it is boxed");
}

/// `--track auto` where ptrace works (the usual case) makes no cgroup and starts no watcher:
/// ptrace mode does not use them, and they cost start-up time. strace, watching proc_box
/// itself, sees every directory it makes.
#[test]
fn auto_mode_makes_no_cgroup_when_ptrace_works() {
    let s = Scene::new("auto-nocg");
    let log = s.dir.join("strace.log");
    let out = Command::new("strace")
        .args(["-qq", "-e", "trace=mkdir,mkdirat", "-o"])
        .arg(&log)
        .arg(proc_box())
        .args(["--", "true"])
        .env("BOXTEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .output()
        .expect("strace");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(!calls.contains("proc_box."), "ptrace mode made a cgroup: {calls}");
    // The same, in subreaper mode: the check sees a cgroup when one is made (as root).
    let out = Command::new("strace")
        .args(["-qq", "-e", "trace=mkdir,mkdirat", "-o"])
        .arg(&log)
        .arg(proc_box())
        .args(["--track", "subreaper", "--", "true"])
        .env("BOXTEST_MARKER", &s.marker)
        .stdin(Stdio::null())
        .output()
        .expect("strace");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    if nix::unistd::geteuid().is_root() {
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(calls.contains("proc_box."), "subreaper mode made no cgroup: {calls}");
    }
}
