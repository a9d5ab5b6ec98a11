//! Tests that disturb the broker itself: every connection closed, and the whole app stopped
//! and started. They do it only to a private node that `scripts/cluster` starts for them (a
//! lone node on 5680), never to the shared broker the other tests use, so they run beside
//! those; one at a time among themselves. Each leaves its node running, whatever happens.

use crate::common::bus::Bus;
use crate::common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};

/// The private node these tests may stop: `scripts/cluster`'s lone node.
const URI: &str = "amqp://guest:guest@127.0.0.1:5680/%2f";

/// One broker-disturbing test at a time, even if run with several threads.
static BROKER: Mutex<()> = Mutex::new(());

fn cluster() -> Command {
    let mut c = Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster"));
    c.stdin(Stdio::null());
    c
}

/// Holds the lock on the private node, started if it is not running yet (`scripts/test` starts
/// it beforehand and stops it at the end; `scripts/cluster down solo` stops it otherwise).
fn private_node() -> std::sync::MutexGuard<'static, ()> {
    let guard = BROKER.lock().unwrap_or_else(|e| e.into_inner());
    static UP: Once = Once::new();
    UP.call_once(|| {
        let out = cluster().args(["up", "solo"]).output().expect("scripts/cluster");
        assert!(out.status.success(), "scripts/cluster up solo: {}", String::from_utf8_lossy(&out.stderr));
    });
    guard
}

/// `scripts/cluster VERB 0`: pause or resume the private lone node, which the script
/// refuses to do to any node it did not start.
fn private(verb: &str) {
    let out = cluster().args([verb, "0"]).output().expect("scripts/cluster");
    assert!(out.status.success(), "scripts/cluster {verb} 0: {}", String::from_utf8_lossy(&out.stderr));
}

/// Starts the private node's broker again when a test ends, failed or not.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        let _ = cluster().args(["resume", "0"]).output();
    }
}

fn start(scene: &Scene, rkey: &str, skey: &str, id: &str) -> Child {
    let mut args = crate::common::bus::args_on(URI, rkey, skey, id);
    let spool = scene.dir.join("spool").display().to_string();
    args.extend([
        "--spool-dir".into(),
        spool,
        "--sint".into(),
        "200ms".into(),
        "sleep".into(),
        "1000".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = std::fs::File::create(scene.dir.join(format!("{id}.stderr"))).unwrap();
    scene.command(&args).stdout(Stdio::null()).stderr(log).spawn().expect("proc_box")
}

fn stderr_of(scene: &Scene, id: &str) -> String {
    std::fs::read_to_string(scene.dir.join(format!("{id}.stderr"))).unwrap_or_default()
}

/// Ends the box over the broker and checks its summary arrives exactly once, with no sample
/// dropped: everything made while the broker was away waited in the buffer.
fn stop_and_count(bus: &mut Bus, child: &mut Child, id: &str) {
    assert_eq!(bus.command(Some(id), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(child).code(), Some(143));
    let summary = bus.summary(id);
    assert_eq!(summary.body["samples_dropped"], 0, "{}", summary.body);
    bus.drain();
    let n = bus.summaries().iter().filter(|s| s["box_id"] == id).count();
    assert_eq!(n, 1, "the summary arrived {n} times");
}

/// The broker closes every connection mid-job (its application stopped and started again at
/// once): the box reconnects and loses nothing.
#[test]
fn closing_every_connection_mid_job_loses_nothing() {
    let _one = private_node();
    let _restart = Restart;
    let scene = Scene::new("broker-close");
    let bus = Bus::new_on(URI, "close");
    let (rkey, skey) = (bus.rkey.clone(), bus.skey.clone());
    let mut child = start(&scene, &rkey, &skey, "cl");
    let mut bus = bus;
    bus.wait_for_box("cl");
    let before = bus.command(Some("cl"), "sample", &[])["sample"].clone();
    private("pause");
    private("resume");
    // The test's own connection went too: attach again on the same keys.
    drop(bus);
    let mut bus = Bus::attach_to(URI, rkey, skey);
    bus.wait_for_box("cl");
    let log = stderr_of(&scene, "cl");
    assert!(log.contains("lost the broker") && log.contains("reconnected"), "{log}");
    // The lost connection's threads exited: their I/O must not pass for the job's. `sleep`
    // does none after start-up; a thread's last moments unseen may leave a few bytes.
    let after = bus.command(Some("cl"), "sample", &[])["sample"].clone();
    for field in ["io_rchar", "io_wchar"] {
        let grew = after[field].as_u64().unwrap() - before[field].as_u64().unwrap();
        assert!(grew < 256, "{field} grew by {grew}: {before} → {after}");
    }
    stop_and_count(&mut bus, &mut child, "cl");
    scene.assert_no_survivors();
}

#[test]
fn a_broker_down_at_start_and_restarted_mid_job_harms_nothing() {
    let _one = private_node();
    let _restart = Restart;
    let scene = Scene::new("broker-restart");
    let bus = Bus::new_on(URI, "restart");
    let (rkey, skey) = (bus.rkey.clone(), bus.skey.clone());
    drop(bus);

    private("pause");
    let mut child = start(&scene, &rkey, &skey, "rs");
    wait_for("the box to say the broker is away", || {
        stderr_of(&scene, "rs").contains("cannot reach").then_some(())
    });
    private("resume");
    let mut bus = Bus::attach_to(URI, rkey.clone(), skey.clone());
    bus.wait_for_box("rs");

    private("pause");
    drop(bus);
    wait_for("the box to see the broker go", || {
        stderr_of(&scene, "rs").contains("lost the broker").then_some(())
    });
    assert!(child.try_wait().unwrap().is_none(), "the job must keep running");
    private("resume");
    let mut bus = Bus::attach_to(URI, rkey, skey);
    bus.wait_for_box("rs");
    stop_and_count(&mut bus, &mut child, "rs");
    scene.assert_no_survivors();
}
