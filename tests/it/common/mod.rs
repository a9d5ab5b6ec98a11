//! Helpers for the integration tests: they run the real proc_box binary on real fixture
//! processes and read the real /proc. Nothing here waits, traces or reaps in the test process
//! beyond its own direct child, so tests can run side by side.
#![allow(dead_code)]

pub mod bus;
pub mod proxy;
pub mod raw;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Generous: CI is a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub const MODES: [&str; 2] = ["ptrace", "subreaper"];

pub fn proc_box() -> &'static str {
    env!("CARGO_BIN_EXE_proc_box")
}

fn tmp_root() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Builds `fixtures/NAME.c` once per test binary (atomically, so parallel binaries agree).
pub fn fixture(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(format!("{name}.c"));
    let dir = tmp_root().join("fixtures");
    let out = dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|b| b == name) {
        return out;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let status = Command::new("cc")
        .args(["-O1", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .expect("a C compiler (cc) is needed to build the fixtures");
    assert!(status.success(), "building fixture {name} failed");
    std::fs::rename(&tmp, &out).unwrap();
    built.push(name.to_owned());
    out
}

/// Like [`wait_for`], but a timeout also dumps where the tree under `root` is stuck.
pub fn wait_for_tree<T>(what: &str, root: i32, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= DEADLINE {
            panic!("timed out waiting for {what}; the tree:\n{}", watchdog_dump(root));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `check` until it returns Some, or panics after [`DEADLINE`] naming `what`.
pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One test's world: a scratch directory for the fixtures' files and a marker in the
/// environment of every process the test starts, so survivors can be found in /proc.
pub struct Scene {
    pub dir: PathBuf,
    pub marker: String,
}

impl Scene {
    pub fn new(tag: &str) -> Scene {
        static N: AtomicUsize = AtomicUsize::new(0);
        let marker = format!("{tag}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        let dir = tmp_root().join("scenes").join(&marker);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scene { dir, marker }
    }

    /// proc_box with the given arguments, in this scene's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(proc_box());
        c.args(args).env("FIX_DIR", &self.dir).env("BOXTEST_MARKER", &self.marker).stdin(Stdio::null());
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// Waits until worker NAME has started; returns its pid.
    pub fn pid(&self, name: &str) -> i32 {
        let path = self.dir.join(format!("{name}.pid"));
        wait_for(&format!("worker {name} to start"), || {
            std::fs::read_to_string(&path).ok()?.trim().parse().ok()
        })
    }

    pub fn count(&self, name: &str) -> u64 {
        std::fs::read_to_string(self.dir.join(format!("{name}.count")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn has_file(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    /// Live processes (not zombies) carrying this scene's marker.
    pub fn survivors(&self) -> Vec<i32> {
        let needle = format!("BOXTEST_MARKER={}", self.marker);
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(env) = std::fs::read(entry.path().join("environ")) else {
                continue;
            };
            // A process that is gone by the time its state is read did not survive.
            let alive = state(pid).is_some_and(|s| s != 'Z');
            if env.split(|&b| b == 0).any(|var| var == needle.as_bytes()) && alive {
                found.push(pid);
            }
        }
        found
    }

    /// Right after the box exited: nothing of its tree may be alive. On failure, says where
    /// each survivor is (state, parent, tracer, stack), so a rare failure names its process.
    pub fn assert_no_survivors(&self) {
        let left = self.survivors();
        let dump: String = left
            .iter()
            .map(|&p| {
                let ppid = std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1).map(str::to_owned))
                    .unwrap_or_default();
                format!("parent {ppid}: {}", watchdog_dump(p))
            })
            .collect();
        assert!(left.is_empty(), "processes survived the box: {left:?}\n{dump}");
    }

    /// For the case where the kernel ends the tree asynchronously (EXITKILL).
    pub fn wait_no_survivors(&self) {
        wait_for("every process of the tree to die", || self.survivors().is_empty().then_some(()));
    }
}

impl Drop for Scene {
    /// A failed test must not leave its box running (it would hold the test runner's pipes):
    /// everything carrying the marker, proc_box included, is killed.
    fn drop(&mut self) {
        for pid in self.survivors() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The one-letter state of a process from /proc/PID/stat.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Stopped by a signal (`T`) or held in a ptrace stop (`t`).
pub fn is_stopped(pid: i32) -> bool {
    matches!(state(pid), Some('T') | Some('t'))
}

/// Waits for the child with a deadline. Past it, the watchdog dumps where every process of
/// the child's tree is stuck, kills the tree, and fails the test.
pub fn wait_exit(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > DEADLINE {
            let dump = watchdog_dump(child.id() as i32);
            kill_tree(child.id() as i32);
            let _ = child.kill();
            let _ = child.wait();
            panic!("watchdog: the box did not exit within {DEADLINE:?}; where its tree was:\n{dump}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every test runs the box through these, so a hang anywhere fails with a stack dump
/// instead of blocking the suite.
pub trait Watched {
    /// Like `output()` (stdin null, stdout and stderr captured), under the watchdog.
    fn run(&mut self) -> Output;
    /// Like `status()` (stdio as set, or inherited), under the watchdog.
    fn run_status(&mut self) -> ExitStatus;
}

impl Watched for Command {
    fn run(&mut self) -> Output {
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the command");
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(child.stdout.take().map(|o| Box::new(o) as Box<dyn Read + Send>));
        let err = drain(child.stderr.take().map(|e| Box::new(e) as Box<dyn Read + Send>));
        let status = wait_exit(&mut child);
        // A process outside the box may hold the pipes; do not wait for it forever.
        let join = |h: std::thread::JoinHandle<Vec<u8>>| {
            let start = Instant::now();
            while !h.is_finished() {
                assert!(start.elapsed() < DEADLINE, "watchdog: the job's output pipes never closed");
                std::thread::sleep(Duration::from_millis(5));
            }
            h.join().unwrap()
        };
        Output { status, stdout: join(out), stderr: join(err) }
    }

    fn run_status(&mut self) -> ExitStatus {
        let mut child = self.spawn().expect("spawning the command");
        wait_exit(&mut child)
    }
}

/// Parent of every process, from /proc.
fn parents() -> Vec<(i32, i32)> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if let Some(ppid) = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
        {
            v.push((pid, ppid));
        }
    }
    v
}

/// `root` and all its descendants (a subreaper's adopted orphans included).
pub fn tree_of(root: i32) -> Vec<i32> {
    let all = parents();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let p = tree[i];
        tree.extend(all.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    tree
}

/// Where each process of the tree is: state, tracer, wchan, and the kernel stack of each thread.
pub fn watchdog_dump(root: i32) -> String {
    let mut out = String::new();
    for pid in tree_of(root) {
        let read = |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        let status = read("status");
        let field =
            |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(str::trim).unwrap_or("?").to_owned();
        out += &format!(
            "pid {pid} ({}) state {} tracer {} wchan {}\n  cmdline: {}\n",
            read("comm").trim(),
            field("State:"),
            field("TracerPid:"),
            read("wchan"),
            read("cmdline").replace('\0', " ")
        );
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
        for task in tasks {
            let tid = task.file_name().to_string_lossy().into_owned();
            let stack = std::fs::read_to_string(task.path().join("stack")).unwrap_or_default();
            let wchan = std::fs::read_to_string(task.path().join("wchan")).unwrap_or_default();
            out += &format!("  task {tid} wchan {wchan}\n");
            for line in stack.lines() {
                out += &format!("    {line}\n");
            }
        }
    }
    out
}

fn kill_tree(root: i32) {
    for pid in tree_of(root) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

/// A line-oriented client of the control socket.
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Control {
    pub fn connect(path: &Path) -> Control {
        let stream = wait_for("the control socket", || UnixStream::connect(path).ok());
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        Control { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
    }

    /// Sends one raw line and returns the parsed reply.
    pub fn raw(&mut self, line: &str) -> Value {
        self.writer.write_all(line.as_bytes()).unwrap();
        self.writer.write_all(b"\n").unwrap();
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("a reply line");
        serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply:?}"))
    }

    /// Sends a command that must succeed.
    pub fn ok(&mut self, command: &str, args: &[&str]) -> Value {
        let line = serde_json::json!({"command": command, "arguments": args}).to_string();
        let reply = self.raw(&line);
        assert_eq!(reply["ok"], true, "{command} failed: {reply}");
        assert_eq!(reply["command"], command.to_ascii_lowercase());
        reply
    }

    pub fn status(&mut self) -> Value {
        self.ok("status", &[])["state"].clone()
    }
}

/// A JSON file the box wrote (a summary).
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}: {text:?}", path.display()))
}

/// The pids a `status` reply lists.
pub fn status_pids(state: &Value) -> Vec<i32> {
    state["pids"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap() as i32).collect()
}

/// One test a configuration, so that each passes, fails and is timed on its own, and the
/// harness runs them side by side: `each_mode!(f)` turns `fn f(mode: &str)` into the tests
/// `f::ptrace` and `f::subreaper`.
macro_rules! each_mode {
    ($f:ident) => {
        mod $f {
            #[test]
            fn ptrace() {
                super::$f("ptrace")
            }
            #[test]
            fn subreaper() {
                super::$f("subreaper")
            }
        }
    };
}

/// As `each_mode!`, for `fn f(mode: &str, cgroup: &str)`: each tracking mode with its cgroup
/// (`--cgroup auto`) and without (`--cgroup off`).
macro_rules! each_setup {
    ($f:ident) => {
        mod $f {
            #[test]
            fn ptrace_cgroup() {
                super::$f("ptrace", "auto")
            }
            #[test]
            fn ptrace_no_cgroup() {
                super::$f("ptrace", "off")
            }
            #[test]
            fn subreaper_cgroup() {
                super::$f("subreaper", "auto")
            }
            #[test]
            fn subreaper_no_cgroup() {
                super::$f("subreaper", "off")
            }
        }
    };
}
