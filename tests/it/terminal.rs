//! Interactive use under a real pseudo-terminal: reading the terminal, Ctrl-C, Ctrl-Z and fg.

use crate::common::*;
use nix::pty::openpty;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Child;

struct Tty {
    child: Child,
    master: std::fs::File,
    seen: String,
}

/// Starts proc_box as the session leader of a new pty, which becomes its controlling terminal,
/// the way a login shell's foreground job has one.
fn on_pty(scene: &Scene, args: &[&str]) -> Tty {
    let pty = openpty(None, None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = scene.command(args);
    cmd.stdin(slave.try_clone().unwrap()).stdout(slave.try_clone().unwrap()).stderr(slave);
    // SAFETY: setsid and ioctl are async-signal-safe; this runs in the forked child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    let master = std::fs::File::from(pty.master);
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
    Tty { child, master, seen: String::new() }
}

impl Tty {
    fn type_in(&mut self, text: &[u8]) {
        self.master.write_all(text).unwrap();
    }

    fn expect(&mut self, what: &str) {
        wait_for(&format!("{what:?} on the terminal"), || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            self.seen.contains(what).then_some(())
        });
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }
}

#[test]
fn the_job_reads_the_terminal_without_being_stopped() {
    let s = Scene::new("tty-read");
    let summary = s.dir.join("summary.json");
    let mut tty = on_pty(
        &s,
        &["--summary-file", summary.to_str().unwrap(), "sh", "-c", "read line; echo \"got:$line\""],
    );
    tty.type_in(b"hello\n");
    tty.expect("got:hello");
    assert_eq!(wait_exit(&mut tty.child).code(), Some(0));
    // The job wrote to the terminal itself: not counted, and said so.
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    assert!(v["stdout_bytes"].is_null() && v["stderr_bytes"].is_null(), "{v}");
}

fn ctrl_c_ends_the_job_and_its_tree(track: &str) {
    let s = Scene::new("tty-int");
    let tree = fixture("setsid");
    let mut tty = on_pty(&s, &["--track", track, "--", tree.to_str().unwrap(), "stay"]);
    s.pid("session");
    s.pid("main");
    tty.type_in(b"\x03");
    assert_eq!(wait_exit(&mut tty.child).code(), Some(130), "{track}");
    s.assert_no_survivors();
}
each_mode!(ctrl_c_ends_the_job_and_its_tree);

fn ctrl_z_suspends_the_whole_tree_and_continue_resumes_it(track: &str) {
    let s = Scene::new("tty-stop");
    let tree = fixture("setsid");
    let mut tty = on_pty(&s, &["--track", track, "--", tree.to_str().unwrap(), "stay"]);
    // "session" left the job's process group: the terminal's SIGTSTP never reaches it.
    let pids = [s.pid("session"), s.pid("main")];
    tty.type_in(b"\x1a");
    wait_for("proc_box to stop like a shell job", || {
        match waitpid(tty.pid(), Some(WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Stopped(_, Signal::SIGSTOP)) => Some(()),
            _ => None,
        }
    });
    // Said while proc_box is stopped, as a shell's "[1]+ Stopped" is, not after `fg`.
    tty.expect("job suspended with the whole tree");
    wait_for("every process of the tree to be stopped", || pids.iter().all(|&p| is_stopped(p)).then_some(()));
    let frozen = s.count("session");

    kill(tty.pid(), Signal::SIGCONT).unwrap(); // what the shell's `fg` sends
    wait_for("the tree to run again", || (s.count("session") > frozen && s.count("main") > 0).then_some(()));
    assert!(pids.iter().all(|&p| !is_stopped(p)));
    // The job has the terminal again: Ctrl-C reaches it.
    tty.type_in(b"\x03");
    assert_eq!(wait_exit(&mut tty.child).code(), Some(130), "{track}");
    s.assert_no_survivors();
}
each_mode!(ctrl_z_suspends_the_whole_tree_and_continue_resumes_it);

/// The summary's `limits` says what really holds stdout to `--stdoutlimit`: the relay for a
/// pipe, the monitor (the file offset) for a file, and nothing for a terminal, where the job
/// writes directly. There, a limit asked for is a usage error (125) before the job runs; the
/// default one is reported as unenforced and does not fail the run.
#[test]
fn stdoutlimit_says_what_enforces_it() {
    let s = Scene::new("tty-limit");
    let ran = s.dir.join("ran");
    let job = format!("touch {}; yes | head -c 200000", ran.display());
    let mut tty = on_pty(&s, &["--stdoutlimit", "1K", "sh", "-c", &job]);
    tty.expect("--stdoutlimit cannot be enforced");
    assert_eq!(wait_exit(&mut tty.child).code(), Some(125));
    assert!(!ran.exists(), "the job ran");

    let summary = s.dir.join("summary.json");
    let by = |summary: &std::path::Path| read_json(summary)["limits"]["stdout_bytes"]["enforced_by"].clone();
    let mut tty = on_pty(&s, &["--summary-file", summary.to_str().unwrap(), "sh", "-c", "echo hi"]);
    tty.expect("hi");
    assert_eq!(wait_exit(&mut tty.child).code(), Some(0));
    assert!(by(&summary).is_null(), "{}", read_json(&summary));

    let out =
        s.command(&["--stdoutlimit", "1K", "--summary-file", summary.to_str().unwrap(), "echo", "hi"]).run();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(by(&summary), "relay");
    let file = std::fs::File::create(s.dir.join("out")).unwrap();
    let st = s
        .command(&["--stdoutlimit", "1K", "--summary-file", summary.to_str().unwrap(), "echo", "hi"])
        .stdout(file)
        .run_status();
    assert_eq!(st.code(), Some(0));
    assert_eq!(by(&summary), "monitor");
}
