//! AMQP against the real broker that `scripts/test` keeps running on 127.0.0.1:5672. Every
//! test has its own routing keys, so these run side by side; the tests that disturb the
//! broker itself are in `broker_restart.rs`, run alone after the rest.

use crate::common::bus::{Bus, URI};
use crate::common::proxy::{BlackHole, Proxy};
use crate::common::*;
use serde_json::Value;
use std::process::{Child, Stdio};

fn proc_boxctl() -> &'static str {
    env!("CARGO_BIN_EXE_proc_boxctl")
}

/// A box started in the background with the bus's keys and `extra` arguments.
fn start(scene: &Scene, bus: &Bus, id: &str, extra: &[&str], job: &[&str]) -> Child {
    let mut args: Vec<String> = bus.args(id);
    args.extend(["--spool-dir".to_string(), scene.dir.join("spool").display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(job.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The box's stderr stays in the scene directory, which a failed test keeps.
    let log = std::fs::File::create(scene.dir.join(format!("{id}.stderr"))).unwrap();
    scene.command(&args).stdout(Stdio::null()).stderr(log).spawn().expect("proc_box")
}

fn stderr_of(scene: &Scene, id: &str) -> String {
    std::fs::read_to_string(scene.dir.join(format!("{id}.stderr"))).unwrap_or_default()
}

fn pids_of(reply: &Value) -> Vec<i32> {
    status_pids(&reply["state"])
}

fn every_command_works_over_amqp_with_replies(mode: &str) {
    let scene = Scene::new(&format!("amqp-all-{mode}"));
    let mut bus = Bus::new("all");
    let id = format!("all-{mode}");
    let mut child = start(
        &scene,
        &bus,
        &id,
        &["--track", mode, "--sint", "1h"],
        &["sh", "-c", "sleep 1000 & exec sleep 1000"],
    );
    bus.wait_for_box(&id);
    let tree = wait_for("two processes", || {
        let r = bus.command(Some(&id), "status", &[]);
        (pids_of(&r).len() == 2).then(|| pids_of(&r))
    });

    let r = bus.command(Some(&id), "suspend", &[]);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["state"]["state"], "suspended");
    for &p in &tree {
        wait_for(&format!("{p} stopped"), || is_stopped(p).then_some(()));
    }
    let r = bus.command(Some(&id), "resume", &[]);
    assert_eq!(r["state"]["state"], "running", "{r}");
    for &p in &tree {
        wait_for(&format!("{p} running"), || (!is_stopped(p)).then_some(()));
    }

    let r = bus.command(Some(&id), "sample", &[]);
    assert_eq!(r["ok"], true);
    let seq = r["sample"]["seq"].as_u64().unwrap();
    let sample = bus.wait_message("the sample", |m| {
        m.iter().find(|m| m.body["type"] == "sample" && m.body["seq"] == seq).cloned()
    });
    assert_eq!(
        sample.routing_key,
        format!("{}.{}", bus.skey, nix::unistd::gethostname().unwrap().to_string_lossy())
    );
    assert_eq!(sample.kind().as_deref(), Some("sample"));
    assert_eq!(sample.props.content_type().as_ref().unwrap().as_str(), "application/json");
    assert_eq!(
        sample.props.message_id().as_ref().unwrap().as_str(),
        sample.body["message_id"].as_str().unwrap()
    );
    assert_eq!(sample.props.app_id().as_ref().unwrap().as_str(), "proc_box");
    assert!(sample.props.timestamp().unwrap() > 1_700_000_000);
    assert_eq!(sample.props.delivery_mode(), &Some(1));

    let r = bus.command(Some(&id), "change_sample_rate", &["100ms"]);
    assert_eq!(r["ok"], true, "{r}");
    bus.wait_message("periodic samples", |m| {
        (m.iter().filter(|m| m.body["type"] == "sample" && m.body["seq"].as_u64() > Some(seq)).count() >= 3)
            .then_some(())
    });
    assert_eq!(bus.command(Some(&id), "change_sample_rate", &["1h"])["ok"], true);

    for t in ["timer_stop", "timer_resume", "timer_reset", "timer_start"] {
        let r = bus.command(Some(&id), t, &[]);
        assert_eq!(r["ok"], true, "{t}: {r}");
        assert_eq!(r["command"], t);
    }
    assert_eq!(bus.command(Some(&id), "timer_stop", &[])["state"]["timer"]["enabled"], false);
    assert_eq!(bus.command(Some(&id), "timer_start", &[])["state"]["timer"]["enabled"], true);

    // A bad request gets a clear refusal, and nothing happens to the tree.
    let r = bus.command(Some(&id), "kill", &["0"]);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("signal"), "{r}");
    assert_eq!(pids_of(&bus.command(Some(&id), "status", &[])), tree);

    let r = bus.command(Some(&id), "stop", &[]);
    assert_eq!(r["ok"], true, "{r}");
    let st = wait_exit(&mut child);
    assert_eq!(st.code(), Some(143));
    let summary = bus.summary(&id);
    assert_eq!(summary.body["reason"], "stopped");
    assert_eq!(summary.body["exit_code"], 143);
    assert_eq!(summary.props.delivery_mode(), &Some(2), "the summary is persistent");
    assert_eq!(
        summary.props.message_id().as_ref().unwrap().as_str(),
        summary.body["message_id"].as_str().unwrap()
    );
    bus.drain();
    assert_eq!(bus.summaries().len(), 1);
    scene.assert_no_survivors();
}
each_mode!(every_command_works_over_amqp_with_replies);

#[test]
fn kill_over_amqp_reaches_every_process() {
    let scene = Scene::new("amqp-kill");
    let mut bus = Bus::new("kill");
    let mut child = start(&scene, &bus, "k", &[], &["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    bus.wait_for_box("k");
    wait_for("three processes", || {
        (pids_of(&bus.command(Some("k"), "status", &[])).len() == 3).then_some(())
    });
    // The broker lists the box by name, with product, version and box id.
    let out = std::process::Command::new("rabbitmqctl")
        .args(["list_connections", "--silent", "client_properties"])
        .run();
    let listed = String::from_utf8_lossy(&out.stdout);
    let line = listed
        .lines()
        .find(|l| l.contains(r#"{"connection_name","proc_box k"}"#))
        .unwrap_or_else(|| panic!("{listed}"));
    let version = format!(r#"{{"version","{}"}}"#, env!("CARGO_PKG_VERSION"));
    for want in [r#"{"product","proc_box"}"#, r#"{"box_id","k"}"#, &version] {
        assert!(line.contains(want), "{want} not in {line}");
    }
    assert_eq!(bus.command(Some("k"), "kill", &["-9"])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(137));
    assert_eq!(bus.summary("k").body["reason"], "killed");
    scene.assert_no_survivors();
}

#[test]
fn targeted_commands_reach_one_box_and_broadcasts_reach_all() {
    let scene = Scene::new("amqp-three");
    let mut bus = Bus::new("three");
    let ids = ["b1", "b2", "b3"];
    let mut children: Vec<Child> =
        ids.iter().map(|id| start(&scene, &bus, id, &[], &["sleep", "1000"])).collect();
    for id in ids {
        bus.wait_for_box(id);
    }
    // Targeted: one reply, from b2, and only b2 is suspended.
    let r = bus.command(Some("b2"), "suspend", &[]);
    assert_eq!(r["state"]["box_id"], "b2");
    // Broadcast: every box answers. A queue delivers in order, so had b1 or b3 taken the
    // suspend, it would show here.
    let corr = "broadcast-status";
    assert!(bus.publish(&bus.key(None), br#"{"command":"status"}"#, Some(corr)));
    let mut states = std::collections::BTreeMap::new();
    for _ in ids {
        let r = bus.reply(corr, DEADLINE).expect("a broadcast reply");
        states.insert(r["state"]["box_id"].as_str().unwrap().to_owned(), r["state"]["state"].clone());
    }
    assert_eq!(states["b1"], "running");
    assert_eq!(states["b2"], "suspended");
    assert_eq!(states["b3"], "running");
    // Broadcast stop ends all three.
    assert!(bus.publish(&bus.key(None), br#"{"command":"stop"}"#, None));
    for c in &mut children {
        assert_eq!(wait_exit(c).code(), Some(143));
    }
    for id in ids {
        bus.summary(id);
    }
    scene.assert_no_survivors();
}

#[test]
fn a_thousand_malformed_messages_leave_the_job_untouched() {
    let scene = Scene::new("amqp-malformed");
    let mut bus = Bus::new("malformed");
    let mut child = start(&scene, &bus, "m", &[], &["sleep", "1000"]);
    bus.wait_for_box("m");
    let pid = pids_of(&bus.command(Some("m"), "status", &[]))[0];
    let key = bus.key(Some("m"));
    let mut rng = fastrand::Rng::with_seed(7);
    type Shape = Box<dyn Fn(&mut fastrand::Rng) -> Vec<u8>>;
    let shapes: Vec<Shape> = vec![
        Box::new(|r| (0..r.usize(0..300)).map(|_| r.u8(..)).collect()),
        Box::new(|_| br#"{"command": 5}"#.to_vec()),
        Box::new(|_| br#"{"command": "kill", "arguments": ["0"]}"#.to_vec()),
        Box::new(|_| br#"{"command": "kill", "arguments": ["65"]}"#.to_vec()),
        Box::new(|_| br#"{"command": "kill", "arguments": ["SIGNOPE"]}"#.to_vec()),
        Box::new(|_| br#"{"command": "kill", "arguments": [true]}"#.to_vec()),
        Box::new(|_| br#"{"command": "change_sample_rate", "arguments": ["-1s"]}"#.to_vec()),
        Box::new(|_| br#"{"command": "nope"}"#.to_vec()),
        Box::new(|_| br#"["stop"]"#.to_vec()),
        Box::new(|_| b"".to_vec()),
        Box::new(|_| br#"{"command": "stop", "arguments": {"x": 1}}"#.to_vec()),
    ];
    let mut asked = Vec::new();
    for i in 0..1000 {
        let body = shapes[i % shapes.len()](&mut rng);
        let corr = (i % 10 == 0).then(|| format!("bad{i}"));
        assert!(bus.publish(&key, &body, corr.as_deref()));
        asked.extend(corr);
    }
    for corr in asked {
        let r = bus.reply(&corr, DEADLINE).unwrap_or_else(|| panic!("no reply to {corr}"));
        assert_eq!(r["ok"], false, "{corr}: {r}");
        assert!(r["error"].as_str().is_some_and(|e| !e.is_empty()), "{r}");
        assert!(r["state"].is_null(), "a refusal carries no state: {r}");
    }
    // Longer than the socket's line bound: the box's queue refuses it, so the box never holds it.
    let big = format!("{{\"command\":\"status\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    assert!(bus.publish_nacked(&key, big.as_bytes()), "the queue took a message over 64 KiB");
    let r = bus.command(Some("m"), "status", &[]);
    assert_eq!(r["state"]["state"], "running");
    assert_eq!(pids_of(&r), vec![pid]);
    assert_eq!(state(pid), Some('S'), "the job was touched");
    assert_eq!(bus.command(Some("m"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

#[test]
fn fifty_boxes_each_addressed_by_id() {
    let scene = Scene::new("amqp-fifty");
    let mut bus = Bus::new("fifty");
    let ids: Vec<String> = (0..50).map(|i| format!("f{i}")).collect();
    let mut children: Vec<Child> =
        ids.iter().map(|id| start(&scene, &bus, id, &["--track", "subreaper"], &["sleep", "1000"])).collect();
    for id in &ids {
        let r = bus.wait_for_box(id);
        assert_eq!(r["state"]["box_id"], id.as_str());
    }
    // Each by id: a distinct signal per box shows the command reached that box only.
    for (i, id) in ids.iter().enumerate() {
        let sig = if i % 2 == 0 { "TERM" } else { "INT" };
        assert_eq!(bus.command(Some(id), "kill", &[sig])["state"]["box_id"], id.as_str());
    }
    for (i, c) in children.iter_mut().enumerate() {
        let want = if i % 2 == 0 { 143 } else { 130 };
        assert_eq!(wait_exit(c).code(), Some(want), "box f{i}");
    }
    for id in &ids {
        bus.summary(id);
    }
    bus.drain();
    assert_eq!(bus.summaries().len(), 50);
    scene.assert_no_survivors();
}

#[test]
fn without_a_broker_the_status_is_kept_and_the_summary_spooled_then_flushed_once() {
    let scene = Scene::new("amqp-nobroker");
    let mut bus = Bus::new("nobroker");
    let spool = scene.dir.join("spool");
    // The broker is away: the proxy in front of it closes every connection at once.
    let proxy = Proxy::start("127.0.0.1:5672");
    proxy.cut();
    let out = scene
        .command(&[
            "--uri",
            &proxy.uri(),
            "--skey",
            &bus.skey,
            "--id",
            "nb",
            "--msgtimeout",
            "2s",
            "--spool-dir",
            spool.to_str().unwrap(),
            "sh",
            "-c",
            "exit 7",
        ])
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("cannot reach the broker"), "{err}");
    assert!(err.contains("spooled to"), "{err}");
    let files = spooled(&spool);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(err.contains(&spool.join(&files[0]).display().to_string()), "the path is printed: {err}");

    let flush = |uri: &str| {
        std::process::Command::new(proc_boxctl())
            .args(["--uri", uri, "flush", "--spool-dir", spool.to_str().unwrap()])
            .run()
    };
    // Another broker (the same one under another address) is not where it was going.
    let out = flush(URI);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("spooled for 127.0.0.1:{} (vhost /)", proxy.port)), "{err}");
    assert_eq!(spooled(&spool).len(), 1);
    proxy.forward();
    let out = flush(&proxy.uri());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out2 = flush(&proxy.uri());
    assert!(String::from_utf8_lossy(&out2.stdout).contains("nothing spooled"));
    let summary = bus.summary("nb");
    assert_eq!(summary.body["exit_code"], 7);
    assert_eq!(summary.props.delivery_mode(), &Some(2));
    bus.drain();
    assert_eq!(bus.summaries().len(), 1, "delivered exactly once");
    assert!(spooled(&spool).is_empty());
}

/// The spool's entries (not the dot files of writes in progress).
fn spooled(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.retain(|n| !n.starts_with('.'));
    v.sort();
    v
}

#[test]
fn a_later_run_sends_what_an_earlier_one_spooled_for_its_broker_only() {
    let scene = Scene::new("amqp-later");
    let mut bus = Bus::new("later");
    let spool = scene.dir.join("spool");
    let s = spool.to_str().unwrap();
    let proxy = Proxy::start("127.0.0.1:5672");
    proxy.cut();
    let early = |uri: &str, id: &str| {
        let out = scene
            .command(&[
                "--uri",
                uri,
                "--skey",
                &bus.skey,
                "--id",
                id,
                "--msgtimeout",
                "1s",
                "--spool-dir",
                s,
                "true",
            ])
            .run();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    };
    early(&proxy.uri(), "early");
    early("amqp://127.0.0.1:1", "elsewhere");
    assert_eq!(spooled(&spool).len(), 2);
    proxy.forward();
    let late = ["--uri", &proxy.uri(), "--rkey", &bus.rkey, "--skey", &bus.skey, "--id", "late", "--debug"];
    let log = scene.dir.join("late.stderr");
    let mut child = scene
        .command(&late)
        .args(["--spool-dir", s, "sleep", "1000"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    bus.summary("early");
    wait_for("the late box to leave the other broker's summary alone", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("1 spooled summaries are for other brokers")
            .then_some(())
    });
    assert_eq!(bus.command(Some("late"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    bus.summary("late");
    bus.drain();
    assert_eq!(bus.summaries().len(), 2, "{:?}", bus.summaries());
    let left = spooled(&spool);
    assert_eq!(left.len(), 1, "{left:?}");
    let entry = read_json(&spool.join(&left[0]));
    assert!(entry["body"].as_str().unwrap().contains("\"box_id\":\"elsewhere\""), "{entry}");
    assert_eq!(entry["brokers"][0]["port"], 1, "{entry}");
}

#[test]
fn refused_login_or_missing_vhost_says_so_once_and_keeps_the_status() {
    for (uri, tag) in [
        ("amqp://guest:wrong@127.0.0.1:5672/%2f", "login"),
        ("amqp://guest:guest@127.0.0.1:5672/no-such-vhost", "vhost"),
    ] {
        let scene = Scene::new(&format!("amqp-refused-{tag}"));
        let spool = scene.dir.join("spool");
        let out = scene
            .command(&[
                "--uri",
                uri,
                "--id",
                tag,
                "--spool-dir",
                spool.to_str().unwrap(),
                "sh",
                "-c",
                "sleep 1; exit 3",
            ])
            .run();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{err}");
        assert_eq!(
            err.matches("refused the login").count(),
            2,
            "one clear message, then the spool line: {err}"
        );
        assert!(!err.contains("wrong"), "the password must not be printed: {err}");
        assert!(err.contains("spooled to"), "{err}");
    }
}

#[test]
fn a_short_job_sets_up_no_control_queue_and_a_long_one_answers_once_it_has() {
    let scene = Scene::new("amqp-lazy");
    let mut bus = Bus::new("lazy");
    // Over before the control delay: the summary goes out once, and no control queue was made.
    let spool = scene.dir.join("spool");
    let mut args = bus.args("short");
    args.extend(["--debug", "--spool-dir", spool.to_str().unwrap(), "true"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = scene.command(&args).run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("confirmed the summary"), "{err}");
    assert!(!err.contains("control keys bound"), "{err}");
    bus.summary("short");
    bus.drain();
    let n = bus.summaries().iter().filter(|s| s["box_id"] == "short").count();
    assert_eq!(n, 1, "exactly one summary");

    // A long job binds its keys after the delay, and then answers proc_boxctl.
    let mut child = start(&scene, &bus, "long", &["--debug", "--sint", "1h"], &["sleep", "1000"]);
    let keys = ["--uri", URI, "--rkey", &bus.rkey, "--skey", &bus.skey];
    let out = wait_for("the box to answer proc_boxctl status", || {
        let o = std::process::Command::new(proc_boxctl()).args(keys).args(["status", "long"]).run();
        o.status.success().then_some(o)
    });
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["box_id"], "long");
    assert!(stderr_of(&scene, "long").contains("control keys bound"));
    assert_eq!(bus.command(Some("long"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    bus.summary("long");
}

#[test]
fn a_fleet_given_one_uri_list_spreads_over_its_nodes() {
    // Four "nodes": relays of the test's own to the one broker. Each box starts at a random
    // one; had all 16 boxes picked the same, the chance is 4 × 4^-16 < 1e-9.
    let scene = Scene::new("amqp-spread");
    let mut bus = Bus::new("spread");
    let nodes: Vec<crate::common::proxy::Proxy> =
        (0..4).map(|_| crate::common::proxy::Proxy::start("127.0.0.1:5672")).collect();
    let list = nodes.iter().map(|p| p.uri()).collect::<Vec<_>>().join(",");
    let spool = scene.dir.join("spool");
    for i in 0..16 {
        let id = format!("spread{i}");
        #[rustfmt::skip]
        let args = ["--uri", &list, "--rkey", &bus.rkey, "--skey", &bus.skey, "--id", &id,
            "--spool-dir", spool.to_str().unwrap(), "sleep", "1000"];
        // The job lives until its box is connected: a job that ends first does not wait for
        // a connection still being set up (its summary is spooled instead).
        let mut child = scene.command(&args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        bus.wait_for_box(&id);
        assert_eq!(bus.command(Some(&id), "stop", &[])["ok"], true);
        assert_eq!(wait_exit(&mut child).code(), Some(143));
        bus.summary(&id);
    }
    let used: Vec<usize> = nodes.iter().map(|p| p.accepted()).collect();
    assert!(used.iter().sum::<usize>() >= 16, "{used:?}");
    assert!(used.iter().filter(|&&n| n > 0).count() >= 2, "every box started on one node: {used:?}");
}

/// A broker user of the test's own, with its own permissions on the vhost `/`; deleted when
/// dropped.
struct BrokerUser {
    name: String,
}

impl BrokerUser {
    fn new(tag: &str, configure: &str, write: &str, read: &str) -> BrokerUser {
        let name = format!("pbox-t{}-{tag}", std::process::id());
        let ctl = |args: &[&str]| {
            let out = std::process::Command::new("rabbitmqctl").args(args).run();
            assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let user = BrokerUser { name: name.clone() };
        ctl(&["add_user", &name, "pw"]);
        ctl(&["set_permissions", "-p", "/", &name, configure, write, read]);
        user
    }

    fn uri(&self, port: u16) -> String {
        format!("amqp://{}:pw@127.0.0.1:{port}/%2f", self.name)
    }
}

impl Drop for BrokerUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl").args(["delete_user", &self.name]).run();
    }
}

#[test]
fn a_missing_exchange_or_a_forbidden_bind_is_said_once_and_retried_slowly() {
    // Reads nothing but its own queues: binding to amq.topic is refused (ACCESS_REFUSED).
    let user = BrokerUser::new("nobind", ".*", ".*", r"^amq\.gen-.*");
    let bus = Bus::new("conf");
    let missing = format!("pbox-missing-{}", std::process::id());
    for (tag, exchange, why) in
        [("missing", missing.as_str(), "NOT_FOUND"), ("denied", "amq.topic", "ACCESS_REFUSED")]
    {
        let scene = Scene::new(&format!("amqp-conf-{tag}"));
        // Through a relay of the test's own, which counts the box's connections.
        let proxy = crate::common::proxy::Proxy::start("127.0.0.1:5672");
        let uri = match tag {
            "missing" => proxy.uri(),
            _ => user.uri(proxy.port),
        };
        let spool = scene.dir.join("spool");
        let log = std::fs::File::create(scene.dir.join("box.stderr")).unwrap();
        #[rustfmt::skip]
        let args = ["--uri", &uri, "--exchange", exchange, "--rkey", &bus.rkey, "--skey", &bus.skey,
            "--id", tag, "--spool-dir", spool.to_str().unwrap(), "--", "sh", "-c", "sleep 5; exit 3"];
        let mut child = scene.command(&args).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let told = |e: &str| e.matches("Check --exchange").count();
        wait_for("the configuration error", || {
            (told(&std::fs::read_to_string(scene.dir.join("box.stderr")).unwrap_or_default()) > 0)
                .then_some(())
        });
        assert_eq!(wait_exit(&mut child).code(), Some(3), "the job runs to its own end");
        let err = std::fs::read_to_string(scene.dir.join("box.stderr")).unwrap();
        assert_eq!(told(&err), 1, "said once: {err}");
        assert!(err.contains(&format!("binding '{}' on exchange '{exchange}'", bus.rkey)), "{err}");
        assert!(err.contains(why), "{err}");
        // A fast retry would have connected about ten times in 5 s: once at the start, and
        // perhaps once more for the summary, is what a slow retry allows.
        assert!(proxy.accepted() <= 3, "{} connections: {err}", proxy.accepted());
        if tag == "missing" {
            assert!(err.contains("spooled to"), "{err}");
        }
    }
}

#[test]
fn proc_boxctl_send_status_watch_and_socket() {
    let scene = Scene::new("amqp-ctl");
    let bus = Bus::new("ctl");
    let sock = scene.socket();
    let keys = ["--uri", URI, "--rkey", &bus.rkey, "--skey", &bus.skey];
    // watch first, so it sees the box from its first sample.
    let mut watch = std::process::Command::new(proc_boxctl())
        .args(keys)
        .args(["watch", "--json", "--count", "2", "--id", "c1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::{BufRead, BufReader};
        let mut line = String::new();
        BufReader::new(watch.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("watching"), "{line}");
    }
    let mut child = start(
        &scene,
        &bus,
        "c1",
        &["--control-socket", sock.to_str().unwrap(), "--sint", "1h"],
        &["sleep", "1000"],
    );
    let ctl = |args: &[&str]| std::process::Command::new(proc_boxctl()).args(keys).args(args).run();
    let out = wait_for("the box to answer proc_boxctl", || {
        let o = ctl(&["status", "c1"]);
        o.status.success().then_some(o)
    });
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["box_id"], "c1");

    let out = ctl(&["send", "--id", "c1", "sample"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["ok"], true);

    let out = ctl(&["send", "--all", "--wait", "1s", "kill", "0"]);
    assert_eq!(out.status.code(), Some(2), "a bad signal is refused before sending");
    let out = ctl(&["send", "--id", "nobody", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown box 'nobody'"));
    let out = ctl(&["send", "--all", "--wait", "1s", "timer_stop"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1, "one box, one reply");

    let out = ctl(&["status", "--socket", sock.to_str().unwrap()]);
    assert!(out.status.success());
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["timer"]["enabled"], false);

    let out =
        std::process::Command::new(proc_boxctl()).args(["--uri", "amqp://127.0.0.1:1", "status", "c1"]).run();
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the broker"));

    let out = ctl(&["send", "--id", "c1", "stop"]);
    assert!(out.status.success());
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    let st = wait_exit(&mut watch);
    assert!(st.success());
    let mut text = String::new();
    use std::io::Read;
    watch.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["sample", "summary"], "{text}");
    assert!(!stderr_of(&scene, "c1").contains("warning"), "{}", stderr_of(&scene, "c1"));
}

#[test]
fn proc_boxctl_send_all_prints_each_reply_as_it_comes_and_ends_at_expect() {
    use std::io::{BufRead, BufReader};
    let scene = Scene::new("amqp-expect");
    let mut bus = Bus::new("expect");
    let ids = ["e1", "e2"];
    let mut children: Vec<Child> =
        ids.iter().map(|id| start(&scene, &bus, id, &["--sint", "1h"], &["sleep", "1000"])).collect();
    for id in ids {
        bus.wait_for_box(id);
    }
    let keys = ["--uri", URI, "--rkey", &bus.rkey, "--skey", &bus.skey];
    let ctl = |args: &[&str]| std::process::Command::new(proc_boxctl()).args(keys).args(args).run();

    // --expect 2: it ends once both replied, not after the 10 minutes of --wait (the watchdog
    // would fail the test long before).
    let out = ctl(&["send", "--all", "--wait", "10m", "--expect", "2", "status"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let mut seen: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["state"]["box_id"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ids);

    // Fewer replies than expected within --wait: those that came are printed, and the status says so.
    let out = ctl(&["send", "--all", "--wait", "1s", "--expect", "3", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 of 3 expected replies"));

    // Without --expect, each reply is printed as it comes, while --wait still runs.
    let mut send = std::process::Command::new(proc_boxctl())
        .args(keys)
        .args(["send", "--all", "--wait", "10m", "status"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = send.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    for _ in ids {
        let line = lines.recv_timeout(DEADLINE).expect("a reply printed while --wait runs");
        assert!(serde_json::from_str::<Value>(&line).unwrap()["ok"] == true, "{line}");
    }
    assert!(send.try_wait().unwrap().is_none(), "still waiting for more replies");
    send.kill().unwrap();
    send.wait().unwrap();

    assert!(bus.publish(&bus.key(None), br#"{"command":"stop"}"#, None));
    for c in &mut children {
        assert_eq!(wait_exit(c).code(), Some(143));
    }
    scene.assert_no_survivors();
}

#[test]
fn a_bad_uri_is_a_usage_error() {
    let scene = Scene::new("amqp-baduri");
    // A FIFO as the CA file: refused at once, never waited on.
    let fifo = scene.dir.join("ca.fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = scene.command(&["--uri", URI, "--cacert", fifo.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
    let out = scene.command(&["--uri", "http://u:secret@x", "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("amqp://") && !err.contains("secret"), "{err}");
    let long = "x".repeat(300);
    let out = scene.command(&["--uri", URI, "--id", &long, "true"]).run();
    assert_eq!(out.status.code(), Some(125), "a routing key AMQP cannot carry");
    assert!(String::from_utf8_lossy(&out.stderr).contains("longer than 255"));
    // An empty PBOX_URI means no broker, as unset does.
    let out = scene.command(&["true"]).env("PBOX_URI", "").run();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn samples_are_kept_while_the_broker_is_away_and_overflow_is_counted() {
    let scene = Scene::new("amqp-buffer");
    let spool = scene.dir.join("spool");
    let summary = scene.dir.join("summary.json");
    let out = scene
        .command(&[
            "--uri",
            "amqp://127.0.0.1:1",
            "--msgtimeout",
            "1s",
            "--sample-buffer",
            "3",
            "--sint",
            "100ms",
            "--spool-dir",
            spool.to_str().unwrap(),
            "--summary-file",
            summary.to_str().unwrap(),
            "sleep",
            "2",
        ])
        .run();
    assert_eq!(out.status.code(), Some(0));
    let s = read_json(&summary);
    let dropped = s["samples_dropped"].as_u64().unwrap();
    assert!(dropped >= 10, "every sample made was lost with no broker: {s}");
    assert_eq!(s["samples_emitted"], 0, "{s}");
}

/// A TLS front for the test broker: `socat` terminates TLS with a certificate from a CA made
/// here, so proc_box's rustls client does a real handshake and verifies the chain.
struct TlsFront {
    proxy: Child,
    port: u16,
    ca: std::path::PathBuf,
}

impl TlsFront {
    fn start(dir: &std::path::Path) -> TlsFront {
        let sh = |script: &str| {
            let out = std::process::Command::new("sh").arg("-c").arg(script).current_dir(dir).run();
            assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign");
        sh("openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr");
        sh("printf 'subjectAltName=DNS:localhost\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && \
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out server.pem");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let proxy = std::process::Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert=server.pem,key=server.key,verify=0"
            ))
            .arg("TCP:127.0.0.1:5672")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        wait_for("the TLS front to listen", || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        TlsFront { proxy, port, ca: dir.join("ca.pem") }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
    }
}

#[test]
fn amqps_works_with_a_verified_certificate_and_refuses_an_unknown_one() {
    let scene = Scene::new("amqp-tls");
    let mut bus = Bus::new("tls");
    let front = TlsFront::start(&scene.dir);
    let uri = format!("amqps://guest:guest@localhost:{}/%2f", front.port);
    let spool = scene.dir.join("spool");
    let (rkey, skey) = (bus.rkey.clone(), bus.skey.clone());
    let base = ["--rkey", &rkey, "--skey", &skey, "--spool-dir", spool.to_str().unwrap()];
    let mut child = scene
        .command(&base)
        .args(["--uri", &uri, "--cacert", front.ca.to_str().unwrap(), "--id", "tls", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scene.dir.join("tls.stderr")).unwrap())
        .spawn()
        .unwrap();
    assert_eq!(bus.wait_for_box("tls")["state"]["box_id"], "tls");
    assert_eq!(bus.command(Some("tls"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    bus.summary("tls");

    // Without the CA the certificate is not trusted: the job still runs and keeps its status.
    let out = scene
        .command(&base)
        .args(["--uri", &uri, "--msgtimeout", "1s", "--id", "untrusted", "sh", "-c", "exit 4"])
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("cannot reach the broker") && err.contains("spooled to"), "{err}");
    assert!(!stderr_of(&scene, "tls").contains("warning"), "{}", stderr_of(&scene, "tls"));
}

#[test]
fn proc_boxctl_watch_draws_a_table_on_a_terminal() {
    use std::io::Read;
    let scene = Scene::new("amqp-watch-tty");
    let bus = Bus::new("watchtty");
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut watch = std::process::Command::new(proc_boxctl())
        .args(["--uri", URI, "--skey", &bus.skey, "watch", "--count", "3"])
        .stdin(Stdio::null())
        .stdout(pty.slave)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(watch.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("watching"), "{line}");
    }
    let mut child = start(&scene, &bus, "tty1", &["--sint", "100ms"], &["sleep", "1000"]);
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    let st = wait_exit(&mut watch);
    assert!(st.success());
    let mut buf = [0u8; 65536];
    nix::fcntl::fcntl(&master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("\x1b[H\x1b[2J"), "the table is redrawn in place: {seen:?}");
    let table = seen.rsplit("\x1b[H\x1b[2J").next().unwrap();
    let header = table.lines().next().unwrap();
    for column in ["BOX", "HOST", "STATE", "CPU", "PSS", "PROCS", "ELAPSED", "SEEN"] {
        assert!(header.contains(column), "{header}");
    }
    let row = table.lines().find(|l| l.starts_with("tty1 ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("running"), "{row}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn proc_boxctl_watch_never_prints_a_control_character_from_a_message() {
    let bus = Bus::new("watchesc");
    for json in [false, true] {
        let mut watch = std::process::Command::new(proc_boxctl())
            .args(["--uri", URI, "--skey", &bus.skey, "watch", "--count", "1"])
            .args(json.then_some("--json"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(watch.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
            assert!(line.contains("watching"), "{line}");
        }
        // A hostile publisher on the exchange: escape sequences in every string.
        let body = br#"{"type":"sample","box_id":"x\u001b[2J\u001b]0;owned\u0007","hostname":"h\r\n","state":"\u001b[31mrunning"}"#;
        assert!(bus.publish(&format!("{}.evil", bus.skey), body, None));
        assert!(wait_exit(&mut watch).success());
        let mut out = String::new();
        use std::io::Read;
        watch.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        // Plain lines come after their header.
        assert_eq!(out.lines().count(), if json { 1 } else { 2 }, "{out:?}");
        assert!(!out.split('\n').any(|l| l.chars().any(char::is_control)), "json={json}: {out:?}");
    }
}

#[test]
fn a_symlink_on_the_spool_path_is_refused() {
    let scene = Scene::new("amqp-spool-link");
    let real = scene.dir.join("real");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, scene.dir.join("link")).unwrap();
    let spool = scene.dir.join("link/spool");
    let out = scene
        .command(&[
            "--uri",
            "amqp://127.0.0.1:1",
            "--spool-dir",
            spool.to_str().unwrap(),
            "sh",
            "-c",
            "exit 5",
        ])
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("a symbolic link") && err.contains("not used as a spool"), "{err}");
    assert!(!real.join("spool").exists(), "nothing was created through the link");
}

/// Seconds from the job's last act to proc_box's exit, over a down broker at `uri`.
fn end_delay(scene: &Scene, uri: &str, spool: &std::path::Path) -> f64 {
    let end = scene.dir.join("end");
    let out = scene
        .command(&["--uri", uri, "--msgtimeout", "30s", "--spool-dir", spool.to_str().unwrap()])
        .args(["sh", "-c", &format!("date +%s.%N > {}; exit 3", end.display())])
        .run();
    let exited = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("spooled to"), "{err}");
    let ended: f64 = std::fs::read_to_string(&end).unwrap().trim().parse().unwrap();
    exited - ended
}

#[test]
fn with_the_broker_down_a_job_ends_at_once_with_its_summary_spooled() {
    let scene = Scene::new("amqp-down-fast");
    let hole = BlackHole::new();
    for (uri, tag) in [("amqp://127.0.0.1:1".to_string(), "refused"), (hole.uri(), "black hole")] {
        let spool = scene.dir.join(tag.replace(' ', "-"));
        let delays: Vec<f64> = (0..3).map(|_| end_delay(&scene, &uri, &spool)).collect();
        // Not the 30 s msgtimeout, nor any wait for the broker: how fast exactly is a figure for
        // scripts/bench (0.2 s is the target), not a timed test on a loaded machine.
        assert!(delays.iter().all(|d| *d < 3.0), "{tag}: {delays:?}");
        let files = spooled(&spool);
        assert_eq!(files.len(), 3, "{tag}: every summary is in the spool: {files:?}");
        for f in files {
            let entry = read_json(&spool.join(f));
            let body: Value = serde_json::from_str(entry["body"].as_str().unwrap()).unwrap();
            assert_eq!(body["exit_code"], 3, "{entry}");
        }
    }
}

/// A box through `proxy` whose job ends when the test writes to its stdin.
fn start_via(scene: &Scene, proxy: &Proxy, bus: &Bus, id: &str, extra: &[&str]) -> Child {
    let spool = scene.dir.join("spool");
    let args = ["--uri", &proxy.uri(), "--rkey", &bus.rkey, "--skey", &bus.skey, "--id", id];
    scene
        .command(&args)
        .args(["--spool-dir", spool.to_str().unwrap()])
        .args(extra)
        .args(["head", "-c", "1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(scene.dir.join(format!("{id}.stderr"))).unwrap())
        .spawn()
        .unwrap()
}

fn end_job(child: &mut Child) {
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"x").unwrap();
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    // Our own child, not yet reaped: its pid cannot have been reused.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

#[test]
fn a_stalled_broker_gets_at_most_msgtimeout_and_a_signal_ends_the_wait() {
    use nix::sys::signal::Signal;
    let scene = Scene::new("amqp-stall");
    let mut bus = Bus::new("stall");
    let spool = scene.dir.join("spool");
    // msgtimeout bounds the wait on a connection that is up but silent.
    let proxy = Proxy::start("127.0.0.1:5672");
    let mut child = start_via(&scene, &proxy, &bus, "slow", &["--msgtimeout", "2s"]);
    bus.wait_for_box("slow");
    proxy.stall();
    let ended = std::time::Instant::now();
    end_job(&mut child);
    assert_eq!(wait_exit(&mut child).code(), Some(0));
    let took = ended.elapsed();
    let err = stderr_of(&scene, "slow");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}: {err}");
    assert!(err.contains("not confirmed within --msgtimeout") && err.contains("spooled to"), "{err}");
    assert_eq!(spooled(&spool).len(), 1);
    drop(proxy);

    // SIGTERM ends a wait that msgtimeout would let last a minute; SIGKILL loses nothing.
    for (sig, id) in [(Signal::SIGTERM, "term"), (Signal::SIGKILL, "kill")] {
        let proxy = Proxy::start("127.0.0.1:5672");
        let mut child = start_via(&scene, &proxy, &bus, id, &["--msgtimeout", "60s"]);
        bus.wait_for_box(id);
        proxy.stall();
        let before = spooled(&spool).len();
        end_job(&mut child);
        // Spooled first, before any wait.
        wait_for("the summary in the spool", || (spooled(&spool).len() == before + 1).then_some(()));
        let sent = std::time::Instant::now();
        signal(&child, sig);
        let status = wait_exit(&mut child);
        assert!(sent.elapsed() < std::time::Duration::from_secs(10), "{id}: {:?}", sent.elapsed());
        let err = stderr_of(&scene, id);
        if sig == Signal::SIGTERM {
            assert_eq!(status.code(), Some(0), "{err}");
            assert!(err.contains("interrupted while waiting for the broker"), "{err}");
        }
        assert_eq!(spooled(&spool).len(), before + 1, "{id}: {err}");
        // Delivered later through the same broker, exactly once.
        proxy.forward();
        let out = std::process::Command::new(proc_boxctl())
            .args(["--uri", &proxy.uri(), "flush", "--spool-dir", spool.to_str().unwrap()])
            .run();
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 sent"), "{out:?}");
        assert_eq!(bus.summary(id).body["exit_code"], 0);
    }
}

#[test]
fn a_job_ending_while_its_box_reconnects_still_sends_its_samples() {
    let scene = Scene::new("amqp-reconnect-drain");
    let mut bus = Bus::new("recdrain");
    let proxy = Proxy::start("127.0.0.1:5672");
    let stats = scene.dir.join("stats.jsonl");
    let mut child = start_via(
        &scene,
        &proxy,
        &bus,
        "rd",
        &["--sint", "200ms", "--debug", "--stats-file", stats.to_str().unwrap()],
    );
    bus.wait_message("two samples", |m| {
        (m.iter().filter(|m| m.kind().as_deref() == Some("sample")).count() >= 2).then_some(())
    });
    proxy.cut();
    wait_for("the box to see the broker go", || {
        stderr_of(&scene, "rd").contains("lost the broker").then_some(())
    });
    // A sample made since (in the stats file) is one the broker has not had.
    let made = || std::fs::read_to_string(&stats).unwrap_or_default().lines().count();
    let seen = made();
    wait_for("a sample made while the broker is away", || (made() > seen).then_some(()));
    end_job(&mut child);
    wait_for("the end's drain to wait", || {
        stderr_of(&scene, "rd").contains("still queued at the end; waiting for the broker").then_some(())
    });
    proxy.forward();
    assert_eq!(wait_exit(&mut child).code(), Some(0), "{}", stderr_of(&scene, "rd"));
    let summary = bus.summary("rd").body;
    assert_eq!(summary["samples_dropped"], 0, "{summary}");
    bus.drain();
    let mut seqs: Vec<u64> = bus
        .messages
        .iter()
        .filter(|m| m.kind().as_deref() == Some("sample"))
        .map(|m| m.body["seq"].as_u64().unwrap())
        .collect();
    seqs.sort();
    seqs.dedup();
    let emitted = summary["samples_emitted"].as_u64().unwrap();
    assert!(emitted >= 3, "{summary}");
    assert_eq!(seqs, (1..=emitted).collect::<Vec<_>>(), "every sample arrived: {summary}");
    assert!(spooled(&scene.dir.join("spool")).is_empty());
}

#[test]
fn one_spooled_entry_that_always_fails_costs_only_itself() {
    let scene = Scene::new("amqp-poison");
    let mut bus = Bus::new("poison");
    let spool = scene.dir.join("spool");
    let s = spool.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = scene
            .command(&["--uri", URI, "--msgtimeout", "5s", "--spool-dir", s])
            .args(args)
            .args(["true"])
            .run();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success() && err.contains("spooled to"), "{err}");
    };
    // A mistyped exchange: its summary is spooled under an exchange that does not exist.
    let missing = format!("{}.no-such-exchange", bus.skey);
    run(&["--exchange", &missing, "--skey", &bus.skey, "--id", "typo"]);
    // Then one that no queue took at the time (a key nobody was bound to yet).
    let later_key = format!("{}-2", bus.skey);
    run(&["--skey", &later_key, "--id", "good1"]);
    let mut bus2 = Bus::attach(format!("{}-2", bus.rkey), later_key.clone());
    assert_eq!(spooled(&spool).len(), 2);

    // A box on the same broker: control works, the good entry goes, the bad one is set aside.
    let mut child = start(&scene, &bus, "live", &[], &["sleep", "1000"]);
    bus.wait_for_box("live");
    bus2.summary("good1");
    wait_for("the bad entry set aside", || {
        let f = spooled(&spool);
        (f.len() == 1 && f[0].ends_with(".deferred")).then_some(())
    });
    assert_eq!(bus.command(Some("live"), "status", &[])["ok"], true, "the session survived it");
    assert_eq!(bus.command(Some("live"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    bus.summary("live");
    let err = stderr_of(&scene, "live");
    assert!(err.contains("1 spooled summaries failed again and are set aside"), "{err}");
    assert!(!err.contains("lost the broker"), "{err}");

    // `proc_boxctl flush` goes past it, sends the rest, and says what it kept and why.
    let key3 = format!("{}-3", bus.skey);
    run(&["--skey", &key3, "--id", "good2"]);
    let mut bus3 = Bus::attach(format!("{}-3", bus.rkey), key3);
    let out = std::process::Command::new(proc_boxctl()).args(["--uri", URI, "flush", "--spool-dir", s]).run();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("1 sent, 1 kept"), "{stdout}");
    assert!(stderr.contains("NOT_FOUND") && stderr.contains("attempt 2"), "{stderr}");
    bus3.summary("good2");
    assert_eq!(spooled(&spool).len(), 1);
    bus.drain();
    assert!(bus.summaries().iter().all(|s| s["box_id"] != "typo"));
}

#[test]
fn the_spool_is_bounded_and_names_what_it_drops() {
    let scene = Scene::new("amqp-bound");
    let spool = scene.dir.join("spool");
    let s = spool.to_str().unwrap();
    for i in 0..5 {
        let out = scene
            .command(&["--uri", "amqp://127.0.0.1:1", "--id", &format!("old{i}"), "--spool-dir", s, "true"])
            .run();
        assert_eq!(out.status.code(), Some(0));
        // Distinct spooling times: the order is the spooling order.
        let newest = spooled(&spool)
            .into_iter()
            .find(|f| read_json(&spool.join(f))["body"].as_str().unwrap().contains(&format!("old{i}")));
        let t = nix::sys::time::TimeSpec::new(1_000_000 + i, 0);
        let f = std::fs::File::open(spool.join(newest.unwrap())).unwrap();
        nix::sys::stat::futimens(&f, &t, &t).unwrap();
    }
    // The bound is applied in the background at start: the job waits until it has been.
    let wait = format!("until [ $(ls {s} | wc -l) -le 2 ]; do sleep 0.01; done");
    let out = scene
        .command(&["--uri", "amqp://127.0.0.1:1", "--id", "new", "--spool-dir", s, "sh", "-c", &wait])
        .env("PBOX_SPOOL_MAX_FILES", "3")
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("over its bound of 3 files") && err.contains("dropped the 3 oldest"), "{err}");
    for i in 0..3 {
        assert!(err.contains(&format!("(box old{i})")), "{err}");
    }
    let bodies: Vec<String> = spooled(&spool)
        .iter()
        .map(|f| read_json(&spool.join(f))["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");
    for id in ["old3", "old4", "new"] {
        assert!(bodies.iter().any(|b| b.contains(&format!("\"box_id\":\"{id}\""))), "{id} kept: {bodies:?}");
    }
    // A short job whose summary stays keeps the bound at its end, its own summary kept.
    let out = scene
        .command(&["--uri", "amqp://127.0.0.1:1", "--id", "short", "--spool-dir", s, "true"])
        .env("PBOX_SPOOL_MAX_FILES", "2")
        .run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dropped the 2 oldest") && err.contains("(box old3)") && err.contains("(box old4)"),
        "{err}"
    );
    let bodies: Vec<String> = spooled(&spool)
        .iter()
        .map(|f| read_json(&spool.join(f))["body"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert!(bodies.iter().any(|b| b.contains("\"box_id\":\"short\"")), "{bodies:?}");
}

#[test]
fn a_large_spool_is_sent_in_the_background_behind_control() {
    use proc_box::transport::amqp::link::Outgoing;
    use proc_box::transport::amqp::spool::{Destination, Entry, Spool};
    const N: usize = 20_000;
    let scene = Scene::new("amqp-bigspool");
    let mut bus = Bus::new("bigspool");
    let spool_dir = scene.dir.join("spool");
    // Summaries spooled for this broker under a key no queue is bound to: they come back
    // unroutable and are set aside, one by one.
    let spool = Spool::open(&spool_dir, true).unwrap().unwrap();
    let here = [Destination { host: "127.0.0.1".into(), port: 5672, vhost: "/".into() }];
    let key = format!("{}-unbound.h", bus.skey);
    for i in 0..N {
        let msg = Outgoing::new("summary", format!("big-{i}"), format!("{{\"box_id\":\"big{i}\"}}"), true);
        drop(spool.write(&Entry::new("amq.topic", &key, &here, &msg)).unwrap());
    }
    let due = || spooled(&spool_dir).iter().filter(|f| f.ends_with(".json")).count();
    // A short job waits for neither the spool nor its bound.
    let started = std::time::Instant::now();
    let mut args = bus.args("short");
    args.extend(["--spool-dir".into(), spool_dir.display().to_string(), "true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = scene.command(&args).run();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    // A long one answers its first status while most of the spool is still to be sent.
    let mut child = start(&scene, &bus, "long", &[], &["sleep", "1000"]);
    bus.wait_for_box("long");
    let left = due();
    assert!(left > N / 2, "control waited for the spool: {left} left");
    // What this proves is that every entry is tried, not how fast: 20,000 confirmed publishes
    // and renames take longer than DEADLINE on a loaded machine. So the deadline is on
    // progress: it fails only when no entry was tried for DEADLINE.
    let mut left = due();
    let mut moved = std::time::Instant::now();
    while left > 0 {
        assert!(moved.elapsed() < DEADLINE, "the spool stopped moving with {left} entries left");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let now = due();
        if now < left {
            (left, moved) = (now, std::time::Instant::now());
        }
    }
    assert_eq!(spooled(&spool_dir).len(), N, "all set aside, none lost");
    assert_eq!(bus.command(Some("long"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    bus.summary("long");
    // Confirmed at its end, or (on a loaded machine, not connected by then) spooled and sent
    // by the long box.
    bus.summary("short");
}

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// `proc_boxctl watch --json --count 1 --id ID` on `skey`, once it says it is watching.
fn watch_for(skey: &str, id: &str) -> Child {
    let mut watch = std::process::Command::new(proc_boxctl())
        .args(["--uri", URI, "--skey", skey])
        .args(["watch", "--json", "--count", "1", "--id", id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::{BufRead, BufReader};
    let mut line = String::new();
    BufReader::new(watch.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert!(line.contains("watching"), "{line}");
    watch
}

/// What `watch` printed, once it has exited by itself (0) after one message.
fn watch_output(watch: &mut Child) -> String {
    assert_eq!(wait_exit(watch).code(), Some(0), "watch died");
    let mut text = String::new();
    use std::io::Read;
    watch.stdout.take().unwrap().read_to_string(&mut text).unwrap();
    text
}

/// The deepest header a frame can carry, published raw, at the largest frame this broker
/// accepts (RabbitMQ forwards it whole even to a consumer that negotiated smaller frames):
/// boxes in both tracking modes and `watch` take it, and go on as if nothing happened.
#[test]
fn the_deepest_header_the_broker_passes_crashes_no_box_and_no_watch() {
    use crate::common::raw::{deep_headers, Outcome, Raw};
    let scene = Scene::new("amqp-deep");
    let mut bus = Bus::new("deep");
    // A key of its own: the test's own client must never take the deep header.
    let watched = format!("{}-watch", bus.skey);
    let mut watch = watch_for(&watched, "marker");
    let job = ["sh", "-c", "while [ ! -e \"$FIX_DIR/go\" ]; do sleep 0.05; done; exit 7"];
    let mut boxes: Vec<(String, Child)> = MODES
        .iter()
        .map(|mode| {
            let id = format!("deep-{mode}");
            let child = start(&scene, &bus, &id, &["--track", mode, "--sint", "1h"], &job);
            (id, child)
        })
        .collect();
    for (id, _) in &boxes {
        bus.wait_for_box(id);
    }
    // The publisher is another broker user, as anyone on a shared broker may be, allowed only to
    // publish to amq.topic; it writes frames itself: a library client would recurse to
    // serialize them.
    let hostile = BrokerUser::new("deep", "^$", "^amq\\.topic$", "^$");
    let mut raw = Raw::connect_as(&hostile.name, "pw", u32::MAX).unwrap();
    assert!(raw.frame_max >= 128 * 1024, "the broker's frame_max is {}", raw.frame_max);
    // At most the 128 KiB a box's client can hold whole (RabbitMQ's default limit, as here).
    let frame = raw.frame_max.min(128 * 1024) as usize;
    let header_room = frame - 8 - 12; // frame overhead; class, weight, size
    for tables in [false, true] {
        let (props, depth) = deep_headers(header_room, tables);
        assert!(depth > 20_000, "{depth}");
        let body = br#"{"command":"status"}"#;
        assert_eq!(
            raw.publish(crate::common::bus::EXCHANGE, &bus.key(None), &props, body).unwrap(),
            Outcome::Routed
        );
        // The watch's client drops its connection over the first deep header, and its private
        // queue goes with it until it has reconnected: the second waits for that queue.
        let key = format!("{watched}.deep");
        wait_for("the watch's queue to take a deep header", || {
            let outcome = raw.publish(crate::common::bus::EXCHANGE, &key, &props, b"{}").unwrap();
            (outcome == Outcome::Routed).then_some(())
        });
    }
    // Each box's queue had them ahead of this status. A header over the box's 4 KiB frames
    // makes the client library drop the connection once it has parsed it (the box then
    // reconnects), so the command is repeated until a reply comes.
    for (id, child) in &mut boxes {
        let reply = wait_for(&format!("box {id} to answer after the deep headers"), || {
            let corr = format!("deep{}", fastrand::u64(..));
            let key = bus.key(Some(id));
            bus.publish(&key, br#"{"command":"status"}"#, Some(&corr)).then_some(())?;
            bus.reply(&corr, std::time::Duration::from_secs(2))
        });
        assert_eq!(reply["ok"], true);
        assert!(child.try_wait().unwrap().is_none(), "box {id} ended");
    }
    // watch too lost its connection over the oversized frame, and is watching again: a marker
    // goes out until it has taken one (one sent while it reconnected is lost with its old queue).
    let marker = r#"{"box_id":"marker","type":"sample"}"#;
    wait_for("watch to take a marker after the deep headers", || {
        bus.publish(&format!("{watched}.marker"), marker.as_bytes(), None);
        watch.try_wait().unwrap().map(|_| ())
    });
    assert!(watch_output(&mut watch).contains("marker"));
    std::fs::write(scene.dir.join("go"), "").unwrap();
    for (id, child) in &mut boxes {
        assert_eq!(wait_exit(child).code(), Some(7), "box {id}: {}", stderr_of(&scene, id));
        assert_eq!(bus.summary(id).body["exit_code"], 7);
    }
    scene.assert_no_survivors();
}

/// proc_box raises the default thread stack through `RUST_MIN_STACK` for a moment at start:
/// the job sees the variable exactly as proc_box found it, set or not.
#[test]
fn the_job_inherits_rust_min_stack_unchanged() {
    let scene = Scene::new("amqp-stackenv");
    let job = ["--", "sh", "-c", "echo \"${RUST_MIN_STACK-unset}\""];
    let out = scene.command(&job).env_remove("RUST_MIN_STACK").run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unset\n");
    let out = scene.command(&job).env("RUST_MIN_STACK", "65536").run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65536\n");
}

/// The box's control queue refuses what is longer than a command may be, so sixteen 32 MiB
/// messages never reach the box: its peak RSS stays put, and it goes on answering.
#[test]
fn big_messages_never_reach_the_box() {
    let scene = Scene::new("amqp-big");
    let mut bus = Bus::new("big");
    let mut child = start(&scene, &bus, "big", &["--sint", "1h"], &["sleep", "1000"]);
    bus.wait_for_box("big");
    let before = peak_rss(child.id());
    let body = vec![b' '; 32 << 20];
    for _ in 0..16 {
        assert!(bus.publish_nacked(&bus.key(Some("big")), &body), "the queue took a 32 MiB message");
    }
    // Exactly the bound still passes (and is refused by the box as too long to be a command).
    let at_bound = vec![b' '; 64 * 1024];
    assert!(!bus.publish_nacked(&bus.key(Some("big")), &at_bound));
    assert_eq!(bus.command(Some("big"), "status", &[])["ok"], true);
    let grown = peak_rss(child.id()).saturating_sub(before);
    assert!(grown < 4 << 20, "the box's peak RSS grew by {grown} bytes");
    assert_eq!(bus.command(Some("big"), "stop", &[])["ok"], true);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
    scene.assert_no_survivors();
}

/// Likewise `watch`: a 100 MiB message on the stats key is refused by its queue.
#[test]
fn a_huge_message_never_reaches_watch() {
    let bus = Bus::new("bigwatch");
    let mut watch = watch_for(&bus.skey, "marker");
    let before = peak_rss(watch.id());
    let key = format!("{}.big", bus.skey);
    assert!(bus.publish_nacked(&key, &vec![b' '; 100 << 20]), "watch's queue took a 100 MiB message");
    let grown = peak_rss(watch.id()).saturating_sub(before);
    assert!(grown < 4 << 20, "watch's peak RSS grew by {grown} bytes");
    let marker = r#"{"box_id":"marker","type":"sample"}"#;
    assert!(!bus.publish_nacked(&format!("{}.marker", bus.skey), marker.as_bytes()));
    assert!(watch_output(&mut watch).contains("marker"));
}

/// Someone who sees a command on the broker forges a reply nesting as deep as a frame allows:
/// `send` takes it without overflowing, and ends with its own status for "no reply".
#[test]
fn a_deep_forged_reply_does_not_crash_send() {
    use crate::common::raw::{deep_headers, reply_address, with_correlation, Outcome, Raw};
    let bus = Bus::new("deepreply");
    let mut spy = Raw::connect(u32::MAX).unwrap();
    let queue = spy.bound_queue(crate::common::bus::EXCHANGE, &bus.rkey).unwrap();
    let send = std::process::Command::new(proc_boxctl())
        .args(["--uri", URI, "--rkey", &bus.rkey, "send", "--all", "--wait", "20s", "status"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let header = wait_for("send's command", || spy.get_header(&queue).unwrap());
    let (Some(corr), Some(reply_to)) = reply_address(&header) else { panic!("no reply address") };
    let frame = spy.frame_max.min(128 * 1024) as usize;
    let (props, depth) = deep_headers(frame - 8 - 12 - 1 - corr.len(), false);
    assert!(depth > 20_000, "{depth}");
    let props = with_correlation(props, &corr);
    assert_eq!(spy.publish("", &reply_to, &props, br#"{"ok":true}"#).unwrap(), Outcome::Routed);
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no reply"), "{err}");
}

/// Piped `watch --count 2` on two published samples: its stdout, lines.
fn watch_piped(bus: &Bus, extra: &[&str]) -> Vec<String> {
    let mut watch = std::process::Command::new(proc_boxctl())
        .args(["--uri", URI, "--skey", &bus.skey, "watch", "--count", "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(watch.stderr.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("watching"), "{line}");
    }
    for id in ["h1", "h2"] {
        let body = format!(r#"{{"type":"sample","box_id":"{id}","hostname":"n","state":"running"}}"#);
        assert!(bus.publish(&format!("{}.{id}", bus.skey), body.as_bytes(), None));
    }
    assert!(wait_exit(&mut watch).success());
    let mut out = String::new();
    use std::io::Read;
    watch.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    out.lines().map(str::to_owned).collect()
}

#[test]
fn proc_boxctl_watch_piped_names_its_columns_once_unless_told_not_to() {
    let bus = Bus::new("watchhdr");
    let lines = watch_piped(&bus, &[]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let columns: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(columns, ["BOX", "HOST", "STATE", "CPU", "PSS", "PROCS", "ELAPSED"], "{lines:?}");
    // Each row has as many columns as the header, in its place.
    for (row, id) in lines[1..].iter().zip(["h1", "h2"]) {
        assert!(row.starts_with(&format!("{id} ")) && row.contains(" running "), "{lines:?}");
        assert_eq!(row.split_whitespace().count(), columns.len(), "{lines:?}");
        assert_eq!(row.find(" n ").map(|i| i + 1), lines[0].find("HOST"), "{lines:?}");
    }

    let lines = watch_piped(&bus, &["--no-header"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("h1 ") && lines[1].starts_with("h2 "), "{lines:?}");

    let lines = watch_piped(&bus, &["--json"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, id) in lines.iter().zip(["h1", "h2"]) {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["box_id"], id, "{lines:?}");
    }
}
