//! Every escape trick, in both tracking modes: the box must hold, signal, suspend, resume and
//! end every process, and leave nothing behind.

use crate::common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

struct Case {
    name: &'static str,
    /// The escapees the fixture starts, besides the main process.
    workers: &'static [&'static str],
    /// proc_box's status after a `stop` command.
    stop_code: i32,
}

/// The job's argv for `mode` ("stay" or "exit").
fn job(case: &Case, mode: &str) -> Vec<String> {
    let w = fixture("fork_tree").display().to_string();
    let shell = |escape: String| {
        let tail = if mode == "stay" {
            format!("exec {w} worker main")
        } else {
            format!("exec {w} waitfor {}", case.workers[0])
        };
        vec!["sh".into(), "-c".into(), format!("{escape}\n{tail}")]
    };
    match case.name {
        "subshell" => shell(format!("({w} worker subshell &)")),
        "nohup" => shell(format!("nohup {w} worker nohup >/dev/null 2>&1 &")),
        name => vec![fixture(name).display().to_string(), mode.into()],
    }
}

fn start(scene: &Scene, track: &str, extra: &[&str], argv: &[String]) -> Child {
    let mut args = vec!["--track", track, "--grace", "2s"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(argv.iter().map(String::as_str));
    scene.command(&args).spawn().expect("proc_box starts")
}

/// A worker outside any box: proof that time passed while the boxed ones did not move.
struct Reference {
    child: Child,
    scene: Scene,
}

impl Reference {
    fn new() -> Reference {
        let scene = Scene::new("reference");
        let child = Command::new(fixture("fork_tree"))
            .args(["worker", "ref"])
            .env("FIX_DIR", &scene.dir)
            .env("BOXTEST_MARKER", &scene.marker)
            .spawn()
            .unwrap();
        scene.pid("ref");
        Reference { child, scene }
    }

    /// Waits until the reference has done `ticks` more rounds of work.
    fn let_time_pass(&self, ticks: u64) {
        let from = self.scene.count("ref");
        wait_for("the reference worker to progress", || {
            (self.scene.count("ref") >= from + ticks).then_some(())
        });
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The job stays; the box must list, suspend, resume, signal and stop every process of it.
fn held(case: &Case, track: &str) {
    let scene = Scene::new(case.name);
    let sock = scene.socket().display().to_string();
    let mut child = start(&scene, track, &["--control-socket", &sock], &job(case, "stay"));
    let names: Vec<&str> = case.workers.iter().copied().chain(["main"]).collect();
    let pids: Vec<i32> = names.iter().map(|n| scene.pid(n)).collect();
    let mut ctl = Control::connect(&scene.socket());

    wait_for("status to list every process", || {
        let listed = status_pids(&ctl.status());
        pids.iter().all(|p| listed.contains(p)).then_some(())
    });
    assert_eq!(ctl.status()["track"], track);

    let reply = ctl.ok("suspend", &[]);
    assert_eq!(reply["state"]["state"], "suspended");
    wait_for("every process to be stopped", || pids.iter().all(|&p| is_stopped(p)).then_some(()));
    let frozen: Vec<u64> = names.iter().map(|n| scene.count(n)).collect();
    Reference::new().let_time_pass(20);
    let after: Vec<u64> = names.iter().map(|n| scene.count(n)).collect();
    assert_eq!(frozen, after, "a suspended process kept working ({names:?})");

    assert_eq!(ctl.ok("resume", &[])["state"]["state"], "running");
    wait_for("every process to work again", || {
        names.iter().zip(&frozen).all(|(n, &c)| scene.count(n) > c).then_some(())
    });

    kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1).unwrap();
    wait_for("SIGUSR1 to reach every process", || {
        names.iter().all(|n| scene.has_file(&format!("{n}.usr1"))).then_some(())
    });

    ctl.ok("stop", &[]);
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(case.stop_code), "exit status after stop");
    scene.assert_no_survivors();
}

/// The main process exits; every leftover is ended, and proc_box does not hang on a pipe a
/// daemon holds.
fn leftovers(case: &Case, track: &str) {
    let scene = Scene::new(case.name);
    let mut args = vec!["--track".to_string(), track.into(), "--grace".into(), "2s".into(), "--".into()];
    args.extend(job(case, "exit"));
    let mut child = scene
        .command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for mut pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = tx.send(text);
        });
    }
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(3), "the main process's own status");
    for n in case.workers {
        assert!(scene.has_file(&format!("{n}.pid")), "escapee {n} never started");
    }
    scene.assert_no_survivors();
    let out: Vec<String> =
        (0..2).map(|_| rx.recv_timeout(DEADLINE).expect("stdout and stderr reach EOF")).collect();
    let stderr = out.iter().find(|t| t.contains("proc_box:")).cloned().unwrap_or_default();
    assert!(stderr.contains("leftover process"), "the leftover count is logged: {stderr:?}");
}

macro_rules! escape_cases {
    ($($name:ident: [$($w:literal),*], $code:literal;)*) => {$(
        mod $name {
            use super::*;
            const CASE: Case = Case { name: stringify!($name), workers: &[$($w),*], stop_code: $code };
            #[test] fn ptrace_held() { held(&CASE, "ptrace") }
            #[test] fn subreaper_held() { held(&CASE, "subreaper") }
            #[test] fn ptrace_leftovers() { leftovers(&CASE, "ptrace") }
            #[test] fn subreaper_leftovers() { leftovers(&CASE, "subreaper") }
        }
    )*};
}

escape_cases! {
    fork_tree: ["child0", "child1", "grand0", "grand1"], 143;
    setsid: ["session"], 143;
    daemon: ["daemon"], 143;
    daemon_stdout: ["daemon_out"], 143;
    subshell: ["subshell"], 143;
    nohup: ["nohup"], 143;
    vfork: ["vforked"], 143;
    clone_parent: ["sibling"], 143;
    threads: ["from_thread"], 143;
    sigchld_ign: ["ign_child", "ign_grand"], 143;
    ignore_term: ["stubborn"], 137;
    untraced: ["untraced", "untraced_grand"], 143;
}

fn kill_command_reaches_every_process(track: &str) {
    let scene = Scene::new("kill");
    let sock = scene.socket().display().to_string();
    let case = Case { name: "fork_tree", workers: &[], stop_code: 0 };
    let mut child = start(&scene, track, &["--control-socket", &sock], &job(&case, "stay"));
    for n in ["child0", "child1", "grand0", "grand1", "main"] {
        scene.pid(n);
    }
    Control::connect(&scene.socket()).ok("kill", &["SIGKILL"]);
    assert_eq!(wait_exit(&mut child).code(), Some(137), "{track}");
    scene.assert_no_survivors();
}
each_mode!(kill_command_reaches_every_process);

#[test]
fn sigkill_of_proc_box_takes_the_tree_with_it_under_ptrace() {
    let scene = Scene::new("sigkill");
    let case = Case { name: "fork_tree", workers: &[], stop_code: 0 };
    let mut child = start(&scene, "ptrace", &[], &job(&case, "stay"));
    for n in ["child0", "child1", "grand0", "grand1", "main"] {
        scene.pid(n);
    }
    child.kill().unwrap(); // SIGKILL: proc_box gets no chance to clean up
    child.wait().unwrap();
    scene.wait_no_survivors();
}

/// A `clone(CLONE_UNTRACED)` escapee that cannot be seized (traced by its own parent through
/// `PTRACE_TRACEME`, or not dumpable for a tracer without CAP_SYS_PTRACE) is out of EXITKILL's
/// reach. A SIGKILL of proc_box must still leave nothing behind: as root and as `nobody`.
#[test]
fn sigkill_of_proc_box_takes_unseizable_escapees_with_it() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let fixture = fixture("unseizable").display().to_string();
    let mut cases = vec![("traceme", None)];
    if root {
        cases.extend([("nodump", Some(65534)), ("traceme", Some(65534))]);
    } else {
        cases.push(("nodump", None));
        eprintln!("as nobody: skipped, needs root to become another user");
    }
    for (how, uid) in cases {
        let scene = Scene::new("unseizable");
        std::fs::set_permissions(&scene.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let sock = scene.socket().display().to_string();
        let mut cmd =
            scene.command(&["--track", "ptrace", "--control-socket", &sock, "--", &fixture, how, "stay"]);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid).env("XDG_STATE_HOME", &scene.dir);
        }
        let mut child = cmd.spawn().unwrap();
        let pids: Vec<i32> =
            ["unseizable", "unseizable_grand", "main"].iter().map(|n| scene.pid(n)).collect();
        // Listed once the backstop walk met them (and failed to seize the escapee).
        let mut ctl = Control::connect(&scene.socket());
        wait_for("the backstop walk to find the escapees", || {
            let listed = status_pids(&ctl.status());
            pids.iter().all(|p| listed.contains(p)).then_some(())
        });
        let tracer = |pid: i32| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).ok().and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("TracerPid:").map(|v| v.trim().to_owned()))
            })
        };
        let box_pid = child.id().to_string();
        assert_ne!(
            tracer(pids[0]).as_deref(),
            Some(box_pid.as_str()),
            "{how}: the escapee was seized after all"
        );
        child.kill().unwrap(); // SIGKILL: proc_box gets no chance to clean up
        child.wait().unwrap();
        scene.wait_no_survivors();
        eprintln!("{how} as uid {uid:?}: nothing survived");
    }
}

/// Subreaper mode without a cgroup has no EXITKILL and no cgroup watcher: the pidfd guard holds
/// every member, so a SIGKILL of proc_box still takes the tree with it (setsid and double-fork
/// escapes included), as root and as `nobody`.
#[test]
fn sigkill_of_proc_box_in_subreaper_mode_without_a_cgroup_takes_the_tree_with_it() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid cannot fail.
    let users: &[Option<u32>] = if unsafe { libc::geteuid() } == 0 { &[None, Some(65534)] } else { &[None] };
    for &uid in users {
        for case in [
            Case { name: "fork_tree", workers: &["child0", "child1", "grand0", "grand1"], stop_code: 0 },
            Case { name: "daemon", workers: &["daemon"], stop_code: 0 },
        ] {
            let scene = Scene::new("sigkill-subreaper");
            std::fs::set_permissions(&scene.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
            let sock = scene.socket().display().to_string();
            let mut args = vec!["--track", "subreaper", "--cgroup", "off", "--control-socket", &sock, "--"];
            let job = job(&case, "stay");
            args.extend(job.iter().map(String::as_str));
            let mut cmd = scene.command(&args);
            if let Some(uid) = uid {
                cmd.uid(uid).gid(uid).env("XDG_STATE_HOME", &scene.dir);
            }
            let mut child = cmd.spawn().unwrap();
            let pids: Vec<i32> = case.workers.iter().chain(&["main"]).map(|n| scene.pid(n)).collect();
            let mut ctl = Control::connect(&scene.socket());
            wait_for("every process to be listed", || {
                let listed = status_pids(&ctl.status());
                pids.iter().all(|p| listed.contains(p)).then_some(())
            });
            child.kill().unwrap(); // SIGKILL: proc_box gets no chance to clean up
            child.wait().unwrap();
            scene.wait_no_survivors();
            eprintln!("{} as uid {uid:?}: nothing survived", case.name);
        }
    }
}
