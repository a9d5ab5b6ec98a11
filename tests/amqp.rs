//! AMQP against the real broker that `scripts/test` keeps running on 127.0.0.1:5672. Every
//! test has its own routing keys, so these run side by side; the tests that disturb the
//! broker itself are in `broker_restart.rs`, run alone after the rest.

mod common;

use common::bus::{Bus, URI};
use common::*;
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

#[test]
fn every_command_works_over_amqp_with_replies() {
    for mode in MODES {
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
            (m.iter().filter(|m| m.body["type"] == "sample" && m.body["seq"].as_u64() > Some(seq)).count()
                >= 3)
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
}

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
    // Longer than the socket's line bound: refused the same way.
    let big = format!("{{\"command\":\"status\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    assert!(bus.publish(&key, big.as_bytes(), Some("big")));
    let r = bus.reply("big", DEADLINE).expect("a reply to the long message");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("longer than"), "{r}");
    assert!(r["state"].is_null(), "{r}");
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
    // Port 1 refuses at once: nothing listens there.
    let out = scene
        .command(&[
            "--uri",
            "amqp://127.0.0.1:1",
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
    let files: Vec<_> = std::fs::read_dir(&spool).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(err.contains(&files[0].path().display().to_string()), "the path is printed: {err}");

    let flush = || {
        std::process::Command::new(proc_boxctl())
            .args(["--uri", URI, "flush", "--spool-dir", spool.to_str().unwrap()])
            .run()
    };
    let out = flush();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out2 = flush();
    assert!(String::from_utf8_lossy(&out2.stdout).contains("nothing spooled"));
    let summary = bus.summary("nb");
    assert_eq!(summary.body["exit_code"], 7);
    assert_eq!(summary.props.delivery_mode(), &Some(2));
    bus.drain();
    assert_eq!(bus.summaries().len(), 1, "delivered exactly once");
    assert!(std::fs::read_dir(&spool).unwrap().next().is_none());
}

#[test]
fn a_later_run_sends_what_an_earlier_one_spooled() {
    let scene = Scene::new("amqp-later");
    let mut bus = Bus::new("later");
    let spool = scene.dir.join("spool");
    let s = spool.to_str().unwrap();
    let first = scene
        .command(&[
            "--uri",
            "amqp://127.0.0.1:1",
            "--skey",
            &bus.skey,
            "--id",
            "early",
            "--msgtimeout",
            "1s",
            "--spool-dir",
            s,
            "true",
        ])
        .run();
    assert_eq!(first.status.code(), Some(0));
    let mut args = bus.args("late");
    args.extend(["--spool-dir".into(), s.into(), "true".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(scene.command(&args).run().status.code(), Some(0));
    bus.summary("early");
    bus.summary("late");
    bus.drain();
    assert_eq!(bus.summaries().len(), 2);
    assert!(std::fs::read_dir(&spool).unwrap().next().is_none());
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
fn a_fleet_given_one_uri_list_spreads_over_its_nodes() {
    // Four "nodes": relays of the test's own to the one broker. Each box starts at a random
    // one; had all 16 boxes picked the same, the chance is 4 × 4^-16 < 1e-9.
    let scene = Scene::new("amqp-spread");
    let mut bus = Bus::new("spread");
    let nodes: Vec<common::proxy::Proxy> =
        (0..4).map(|_| common::proxy::Proxy::start("127.0.0.1:5672")).collect();
    let list = nodes.iter().map(|p| p.uri()).collect::<Vec<_>>().join(",");
    let spool = scene.dir.join("spool");
    for i in 0..16 {
        let id = format!("spread{i}");
        #[rustfmt::skip]
        let args = ["--uri", &list, "--rkey", &bus.rkey, "--skey", &bus.skey, "--id", &id,
            "--spool-dir", spool.to_str().unwrap(), "true"];
        let out = scene.command(&args).run();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
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
        let proxy = common::proxy::Proxy::start("127.0.0.1:5672");
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
        assert_eq!(out.lines().count(), 1, "{out:?}");
        assert!(!out.trim_end().chars().any(char::is_control), "json={json}: {out:?}");
    }
}
