//! Signed control (`--control-token`): every command and reply carries an HMAC bound to a
//! timestamp, a nonce and its target. What another user of the same broker can capture, replay
//! or forge, and the broker permissions that keep them off a user's keys. Against the real
//! broker and the real socket.

use crate::common::bus::{EXCHANGE, URI};
use crate::common::*;
use futures_lite::future::or;
use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::BasicProperties;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};
use proc_box::auth::{self, Key, Target};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

fn proc_boxctl() -> &'static str {
    env!("CARGO_BIN_EXE_proc_boxctl")
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    async_global_executor::block_on(f)
}

/// A key file with this secret.
fn key_file(scene: &Scene, secret: &str) -> PathBuf {
    let path = scene.dir.join("control.key");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

/// The README's script: the signed command line, and its nonce.
fn script_sign(key: &Path, to: &str, command: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pbox-sign"))
        .arg(to)
        .arg(command)
        .args(args)
        .env("PBOX_CONTROL_TOKEN_FILE", key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// The README's script checking a reply: Some(reply) only if signed with the key for `nonce`.
fn script_check(key: &Path, reply: &Value, nonce: &str) -> Option<Value> {
    use std::io::Write;
    let mut child = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pbox-sign"))
        .args(["--reply", nonce])
        .env("PBOX_CONTROL_TOKEN_FILE", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{reply}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// What a signed envelope says, unverified (for refusals a test cannot verify).
fn inside(envelope: &Value) -> Value {
    assert!(envelope["mac"].is_string(), "a signed reply: {envelope}");
    serde_json::from_str(envelope["signed"].as_str().unwrap()).unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn over_the_socket_only_signed_commands_act() {
    let s = Scene::new("auth-socket");
    let sock = s.socket().display().to_string();
    let file = key_file(&s, "s3cret");
    let mut child = s
        .command(&["--control-socket", &sock, "--control-token-file", file.to_str().unwrap()])
        .args(["--", "sleep", "100"])
        .spawn()
        .unwrap();
    let mut ctl = Control::connect(&s.socket());
    let key = Key::new(b"s3cret");
    let stop = json!({"command": "stop"});
    let now = SystemTime::now();
    let minute_and_half = Duration::from_secs(90);
    let refused = [
        (r#"{"command":"stop"}"#.to_owned(), "unsigned"),
        (r#"{"command":"stop","token":"s3cret"}"#.to_owned(), "unsigned"),
        (auth::sign_command(&Key::new(b"s3cret!"), &stop, &Target::Socket, now).0, "control key"),
        (auth::sign_command(&key, &stop, &Target::Socket, now - minute_and_half).0, "stale"),
        (auth::sign_command(&key, &stop, &Target::Socket, now + minute_and_half).0, "stale"),
        (auth::sign_command(&key, &stop, &Target::Box("another".into()), now).0, "another target"),
    ];
    for (line, why) in refused {
        let r = inside(&ctl.raw(&line));
        assert_eq!(r["ok"], false, "{line}: {r}");
        assert!(r["error"].as_str().unwrap().contains(why), "{why}: {r}");
        assert!(r["state"].is_null(), "a refusal carries no state: {r}");
    }
    assert!(child.try_wait().unwrap().is_none(), "nothing happened");

    // The README's script signs; its reply checks against the nonce it sent.
    let (line, nonce) = script_sign(&file, "socket", "status", &[]);
    let reply = ctl.raw(&line);
    let r = script_check(&file, &reply, &nonce).expect("a reply signed for this command");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["state"]["state"], "running");
    assert!(script_check(&file, &reply, "0123456789abcdef").is_none(), "bound to its own nonce");
    // The same line again is a replay: refused, and the box lives on.
    let r = script_check(&file, &ctl.raw(&line), &nonce).expect("a signed refusal");
    assert_eq!(r["ok"], false);
    assert!(r["error"].as_str().unwrap().contains("replayed"), "{r}");
    let (suspend, _) = script_sign(&file, "socket", "suspend", &[]);
    assert_eq!(inside(&ctl.raw(&suspend))["ok"], true);
    assert_eq!(inside(&ctl.raw(&suspend))["ok"], false, "a replayed suspend");

    // proc_boxctl: unsigned without a key (the refusal is shown, exit 1), signed with it.
    let ctl_cmd = |args: &[&str]| -> Output {
        Command::new(proc_boxctl()).args(["send", "--socket", &sock]).args(args).output().unwrap()
    };
    let out = ctl_cmd(&["resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unsigned"), "{}", text(&out.stdout));
    let out = ctl_cmd(&["--control-token", "wrong", "resume"]);
    assert_eq!(out.status.code(), Some(3), "a reply signed with another key is not believed");
    assert!(text(&out.stderr).contains("not signed with the control key"), "{}", text(&out.stderr));
    let out = ctl_cmd(&["--control-token-file", file.to_str().unwrap(), "resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = Command::new(proc_boxctl())
        .args(["send", "--socket", &sock, "stop"])
        .env("PBOX_CONTROL_TOKEN", "s3cret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(r#""ok":true"#), "{}", text(&out.stdout));
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

#[test]
fn the_key_is_given_safely_and_a_keyless_box_refuses_signed_commands() {
    let s = Scene::new("auth-key");
    let file = key_file(&s, "s3cret");
    // The key stays out of the job's environment.
    let out = s
        .command(&["--", "sh", "-c", "env | grep -c PBOX_CONTROL_TOKEN"])
        .env("PBOX_CONTROL_TOKEN", "x")
        .run();
    assert_eq!(text(&out.stdout), "0\n");
    let out =
        s.command(&["--control-token", "a", "--control-token-file", file.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    // A FIFO as the key file would block before the job starts: refused instead.
    let fifo = s.dir.join("key.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = s.command(&["--control-token-file", fifo.to_str().unwrap(), "true"]).run();
    assert_eq!(out.status.code(), Some(125));
    // A box without a key says so to a signed command rather than act on what it cannot check.
    let sock = s.socket().display().to_string();
    let mut child = s.command(&["--control-socket", &sock, "--", "sleep", "100"]).spawn().unwrap();
    let mut ctl = Control::connect(&s.socket());
    let (line, _) = script_sign(&file, "socket", "stop", &[]);
    let r = ctl.raw(&line);
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("no control key"), "{r}");
    ctl.ok("stop", &[]);
    assert_eq!(wait_exit(&mut child).code(), Some(143));
}

/// Another broker client, as a hostile user would be: taps keys, publishes what it likes.
struct Peer {
    conn: Connection,
}

impl Peer {
    fn connect(uri: &str) -> Peer {
        Peer {
            conn: block(Connection::connect(uri, ConnectionProperties::default())).expect("the test broker"),
        }
    }

    /// A private queue bound to `key` on the exchange, consumed; Err if the broker refuses.
    fn tap(&self, key: &str) -> Result<Consumer, lapin::Error> {
        block(async {
            let ch = self.conn.create_channel().await?;
            let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            let q = ch.queue_declare("".into(), excl, FieldTable::default()).await?;
            let opts = QueueBindOptions::default();
            ch.queue_bind(q.name().clone(), EXCHANGE.into(), key.into(), opts, FieldTable::default()).await?;
            let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
            ch.basic_consume(q.name().clone(), "".into(), no_ack, FieldTable::default()).await
        })
    }

    /// A private queue with no binding, for replies: its name and consumer.
    fn reply_queue(&self) -> (String, Consumer) {
        block(async {
            let ch = self.conn.create_channel().await.unwrap();
            let excl = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            let q = ch.queue_declare("".into(), excl, FieldTable::default()).await.unwrap();
            let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
            let c =
                ch.basic_consume(q.name().clone(), "".into(), no_ack, FieldTable::default()).await.unwrap();
            (q.name().to_string(), c)
        })
    }

    /// Publishes with confirms on a channel of its own; Err if the broker refuses it.
    fn publish(
        &self,
        exchange: &str,
        key: &str,
        body: &[u8],
        reply: Option<(&str, &str)>,
    ) -> Result<(), String> {
        let mut props = BasicProperties::default();
        if let Some((to, corr)) = reply {
            props = props.with_correlation_id(corr.into());
            if !to.is_empty() {
                props = props.with_reply_to(to.into());
            }
        }
        block(async {
            let ch = self.conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            let confirm = ch
                .basic_publish(exchange.into(), key.into(), BasicPublishOptions::default(), body, props)
                .await?
                .await?;
            // A refused publish closes the channel; a round trip after it shows that.
            ch.basic_qos(1, Default::default()).await?;
            Ok::<_, lapin::Error>(confirm)
        })
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = block(self.conn.close(200, "OK".into()));
    }
}

fn next(consumer: &mut Consumer, wait: Duration) -> Option<Delivery> {
    block(or(async { consumer.next().await.map(|d| d.expect("a delivery")) }, async {
        async_io::Timer::after(wait).await;
        None
    }))
}

/// The next `command` on the tap that was signed for `to`.
fn captured(tap: &mut Consumer, to: &str, command: &str) -> Delivery {
    let until = Instant::now() + DEADLINE;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let d = next(tap, left).unwrap_or_else(|| panic!("no command for {to} captured"));
        let envelope: Value = serde_json::from_slice(&d.data).unwrap_or(Value::Null);
        if envelope["signed"].is_string()
            && inside(&envelope)["to"] == to
            && inside(&envelope)["command"] == command
        {
            return d;
        }
    }
}

/// A box on the broker with these keys and this control key file.
fn start_box(scene: &Scene, uri: &str, rkey: &str, skey: &str, id: &str, key: &Path) -> Child {
    let log = std::fs::File::create(scene.dir.join(format!("{id}.stderr"))).unwrap();
    let spool = scene.dir.join("spool").display().to_string();
    scene
        .command(&["--uri", uri, "--rkey", rkey, "--skey", skey, "--id", id, "--spool-dir", &spool])
        .args(["--control-token-file", key.to_str().unwrap(), "--sint", "1h", "--", "sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn ctl(uri: &str, rkey: &str, key: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(proc_boxctl());
    c.args(["--uri", uri, "--rkey", rkey]).args(args).args(["--control-token-file", key.to_str().unwrap()]);
    c.env_remove("PBOX_CONTROL_TOKEN");
    c
}

/// Until box `id` answers a signed `status`.
fn wait_ready(uri: &str, rkey: &str, key: &Path, id: &str) {
    wait_for(&format!("box {id} to answer"), || {
        ctl(uri, rkey, key, &["status", id]).output().unwrap().status.success().then_some(())
    });
}

fn unique(tag: &str) -> String {
    format!("t{}.{tag}.{}", std::process::id(), fastrand::u32(..))
}

#[test]
fn a_captured_command_cannot_be_replayed_retargeted_or_forged() {
    let s = Scene::new("auth-replay");
    let (rkey, skey) = (unique("auth-rc"), unique("auth-stats"));
    let file = key_file(&s, "s3cret");
    let key = Key::new(b"s3cret");
    let mut a = start_box(&s, URI, &rkey, &skey, "a", &file);
    let mut b = start_box(&s, URI, &rkey, &skey, "b", &file);
    wait_ready(URI, &rkey, &file, "a");
    wait_ready(URI, &rkey, &file, "b");
    // Another user binds to every control key, and sees the operator suspend and resume box a.
    let peer = Peer::connect(URI);
    let mut tap = peer.tap(&format!("{rkey}.#")).unwrap();
    for cmd in ["suspend", "resume"] {
        let out = ctl(URI, &rkey, &file, &["send", "--id", "a", cmd]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{cmd}: {}", text(&out.stderr));
    }
    let suspend = captured(&mut tap, "box:a", "suspend");
    let text_of = |d: &Delivery| inside(&serde_json::from_slice(&d.data).unwrap());
    assert_eq!(text_of(&suspend)["command"], "suspend");
    let nonce = text_of(&suspend)["nonce"].as_str().unwrap().to_owned();
    assert!(!text(&suspend.data).contains("s3cret"), "the key itself never travels");
    let (reply_queue, mut replies) = peer.reply_queue();
    let mut ask = |target: &str, body: &[u8]| -> Value {
        let corr = format!("c{}", fastrand::u64(..));
        peer.publish(EXCHANGE, &format!("{rkey}.{target}"), body, Some((&reply_queue, &corr))).unwrap();
        let d = next(&mut replies, DEADLINE).expect("a reply");
        assert_eq!(d.properties.correlation_id().as_ref().map(|c| c.to_string()), Some(corr));
        let reply: Value = serde_json::from_slice(&d.data).unwrap();
        assert!(inside(&reply)["state"].is_null(), "a refusal carries no state: {reply}");
        reply
    };
    // Replayed to a, sent on to b, at once: both refused. The refusal to the replay is signed
    // for the nonce, so the genuine sender could trust it.
    let r = auth::open_reply(&key, ask("a", &suspend.data).to_string().as_bytes(), &nonce).unwrap();
    assert!(r["error"].as_str().unwrap().contains("replayed"), "{r}");
    let r = inside(&ask("b", &suspend.data));
    assert!(r["error"].as_str().unwrap().contains("another target"), "{r}");
    // Signed with a guessed key, or stale: refused.
    let kill = json!({"command": "kill", "arguments": ["9"]});
    let guessed =
        auth::sign_command(&Key::new(b"guess"), &kill, &Target::Box("a".into()), SystemTime::now()).0;
    assert!(inside(&ask("a", guessed.as_bytes()))["error"].as_str().unwrap().contains("control key"));
    let old = SystemTime::now() - Duration::from_secs(120);
    let stale = auth::sign_command(&key, &kill, &Target::Box("a".into()), old).0;
    assert!(inside(&ask("a", stale.as_bytes()))["error"].as_str().unwrap().contains("stale"));
    // The old bearer token: unsigned.
    let bearer = br#"{"command":"kill","arguments":["9"],"token":"s3cret"}"#;
    assert!(inside(&ask("a", bearer))["error"].as_str().unwrap().contains("unsigned"));
    // Both boxes live, and a is running (the replayed suspend did nothing).
    assert!(a.try_wait().unwrap().is_none() && b.try_wait().unwrap().is_none());
    let out = ctl(URI, &rkey, &file, &["status", "a"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains(r#""state": "running""#), "{}", text(&out.stdout));

    // proc_boxctl believes only replies signed with the key, for its own command.
    let forge = |tap: &mut Consumer, to: &str| {
        let cmd = captured(tap, to, "status");
        let reply_to = cmd.properties.reply_to().as_ref().unwrap().to_string();
        let corr = cmd.properties.correlation_id().as_ref().unwrap().to_string();
        let nonce = text_of(&cmd)["nonce"].as_str().unwrap().to_owned();
        let forged = json!({"ok": true, "command": "status", "error": null, "state": {"box_id": "FORGED"}, "re": nonce});
        let guessed = auth::seal_reply(&Key::new(b"guess"), &forged.to_string());
        let other_request =
            auth::seal_reply(&key, &json!({"ok": true, "re": "0123456789abcdef"}).to_string());
        for body in [forged.to_string(), guessed, other_request] {
            peer.publish("", &reply_to, body.as_bytes(), Some(("", &corr))).unwrap();
            // no reply_to
        }
    };
    let send_all = |wait: &str| {
        ctl(URI, &rkey, &file, &["send", "--all", "--wait", wait, "status"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // With the two boxes: each counted once, the three forgeries ignored and said so.
    let child = send_all("3s");
    forge(&mut tap, &format!("key:{rkey}"));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stdout.contains("FORGED"), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert_eq!(
        stderr.matches("ignored a reply that was not signed with the control key").count(),
        3,
        "{stderr}"
    );
    // With no box left: only forgeries came, so no box answered.
    let out = ctl(URI, &rkey, &file, &["send", "--all", "--expect", "2", "stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(wait_exit(&mut a).code(), Some(143));
    assert_eq!(wait_exit(&mut b).code(), Some(143));
    let child = send_all("2s"); // routed to the tap alone
    forge(&mut tap, &format!("key:{rkey}"));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("no reply signed with the control key within 2s (3 ignored"), "{stderr}");
}

/// rabbitmqctl, which must succeed.
fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", text(&out.stderr));
}

/// A vhost and users of this test's own, deleted at the end whatever happens.
struct BrokerUsers {
    vhost: String,
    users: Vec<String>,
}

impl Drop for BrokerUsers {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("rabbitmqctl").args(["delete_user", u]).output();
        }
        let _ = Command::new("rabbitmqctl").args(["delete_vhost", &self.vhost]).output();
    }
}

/// The README's recipe: each user may declare only server-named queues, and on amq.topic may
/// bind and publish only keys under its own name.
#[test]
fn broker_permissions_keep_a_user_off_another_users_keys() {
    let tag = format!("{}-{}", std::process::id(), fastrand::u32(..));
    let (alice, bob) = (format!("pbox-alice-{tag}"), format!("pbox-bob-{tag}"));
    let vhost = format!("pbox-auth-{tag}");
    let _cleanup = BrokerUsers { vhost: vhost.clone(), users: vec![alice.clone(), bob.clone()] };
    rabbitmqctl(&["add_vhost", &vhost]);
    for user in [&alice, &bob] {
        rabbitmqctl(&["add_user", user, "pw"]);
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &vhost,
            user,
            r"^amq\.gen-.*",
            r"^(amq\.gen-.*|amq\.topic|amq\.default)$",
            r"^(amq\.gen-.*|amq\.topic)$",
        ]);
        let own = r"^(ctl|stats)\.{username}(\..*)?$";
        rabbitmqctl(&["set_topic_permissions", "-p", &vhost, user, "amq.topic", own, own]);
    }
    let uri = |user: &str| format!("amqp://{user}:pw@127.0.0.1:5672/{vhost}");
    let s = Scene::new("auth-perms");
    let file = key_file(&s, "s3cret");
    let (rkey, skey) = (format!("ctl.{alice}"), format!("stats.{alice}"));
    let mut boxed = start_box(&s, &uri(&alice), &rkey, &skey, "job", &file);
    // Alice's box works for alice.
    wait_ready(&uri(&alice), &rkey, &file, "job");

    let peer = Peer::connect(&uri(&bob));
    // Bob cannot bind to alice's control keys, by name or by pattern.
    for key in [format!("{rkey}.job"), format!("{rkey}.#"), "ctl.#".to_owned(), "#".to_owned()] {
        let e = peer.tap(&key).err().unwrap_or_else(|| panic!("bob bound {key}"));
        assert!(e.to_string().contains("ACCESS_REFUSED"), "{key}: {e}");
    }
    // Nor publish to them; proc_boxctl as bob is refused the same way.
    for key in [rkey.clone(), format!("{rkey}.job")] {
        let e = peer.publish(EXCHANGE, &key, br#"{"command":"stop"}"#, None).err();
        assert!(e.is_some_and(|e| e.contains("ACCESS_REFUSED")), "bob published on {key}");
    }
    let out = ctl(&uri(&bob), &rkey, &file, &["send", "--id", "job", "stop"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", text(&out.stdout));
    // While his own keys work (so the refusals above are the topic permissions at work).
    assert!(peer.tap(&format!("ctl.{bob}.#")).is_ok());
    assert!(peer.publish(EXCHANGE, &format!("ctl.{bob}"), b"{}", None).is_ok());

    assert!(boxed.try_wait().unwrap().is_none(), "alice's box lives");
    let out = ctl(&uri(&alice), &rkey, &file, &["send", "--id", "job", "stop"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(wait_exit(&mut boxed).code(), Some(143));
}
