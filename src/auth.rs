//! Per-message authentication of control commands and their replies (`--control-token`).
//!
//! On a shared broker anyone who can bind a queue to the exchange reads every command, so a
//! bearer token sent with each one is public and replayable. The secret is therefore never sent:
//! it keys an HMAC-SHA256 over each command, bound to a timestamp, a nonce and its target, and
//! over each reply, bound to the request's nonce. The wire format (the README's "Signed
//! commands") is simple enough to produce with `openssl dgst` and `jq`:
//!
//! ```text
//! {"signed": TEXT, "mac": HEX}
//! TEXT: a JSON object: the command ("command", "arguments") and
//!       "ts" (Unix seconds), "nonce" (16 to 64 of A-Z a-z 0-9 _ -), "to" (the target)
//! HEX:  lowercase hex of HMAC-SHA256(key, "proc_box command v1\n" + TEXT)
//! ```
//!
//! The MAC covers the exact bytes of TEXT (the decoded string), so nothing is canonicalized:
//! what is verified is exactly what is then parsed. A reply is the same envelope with the
//! domain "proc_box reply v1\n", and its TEXT carries "re", the nonce it answers. The domains
//! keep a reply from ever passing as a command.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How far a command's timestamp may be from the box's clock, either way.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Nonces remembered at most: a flood of validly signed commands is refused past it rather
/// than letting memory grow (and forgetting a nonce early would let it be replayed).
const MAX_SEEN: usize = 10_000;
const COMMAND_DOMAIN: &[u8] = b"proc_box command v1\n";
const REPLY_DOMAIN: &[u8] = b"proc_box reply v1\n";

/// The shared secret, ready to MAC with; shared, since every reply carries it to its transport.
#[derive(Clone)]
pub struct Key(std::sync::Arc<Hmac<Sha256>>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Key(…)")
    }
}

impl Key {
    /// The secret's bytes as given (the token's text). HMAC takes a key of any length.
    pub fn new(secret: &[u8]) -> Key {
        Key(std::sync::Arc::new(Hmac::new_from_slice(secret).expect("HMAC takes a key of any length")))
    }

    fn mac(&self, domain: &[u8], text: &str) -> Hmac<Sha256> {
        let mut m = (*self.0).clone();
        m.update(domain);
        m.update(text.as_bytes());
        m
    }

    fn sign(&self, domain: &[u8], text: &str) -> String {
        let envelope = serde_json::json!({
            "signed": text,
            "mac": hex::encode(self.mac(domain, text).finalize().into_bytes()),
        });
        envelope.to_string()
    }

    /// TEXT of an envelope whose MAC is right, compared in constant time.
    fn verify(&self, domain: &[u8], raw: &[u8]) -> Result<String, Unverified> {
        let (text, mac) = envelope(raw)?;
        let mac = hex::decode(mac).map_err(|_| Unverified::MacNotHex)?;
        self.mac(domain, &text).verify_slice(&mac).map_err(|_| Unverified::WrongMac)?;
        Ok(text)
    }
}

/// Why an envelope did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    #[error("not {{\"signed\": TEXT, \"mac\": HEX}} and nothing else")]
    Shape,
    #[error("unsigned")]
    Unsigned,
    #[error("\"mac\" is not hex")]
    MacNotHex,
    #[error("wrong MAC")]
    WrongMac,
}

/// Why a box with a key refused a command. Only [`Refusal::Unverified`] and the malformed
/// ones come before the MAC passed; the rest are a genuine sender's mistakes (a clock, a target).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}: this box takes only commands signed with its control key")]
    Unverified(Unverified),
    #[error("the signed text is not a JSON object")]
    NotAnObject,
    #[error("\"nonce\" must be 16 to 64 of A-Z a-z 0-9 _ -")]
    BadNonce,
    #[error("\"to\" (the target) is missing")]
    NoTarget,
    #[error("signed for another target ({0})")]
    OtherTarget(String),
    #[error("\"ts\" (Unix seconds, an integer) is missing")]
    NoTimestamp,
    #[error("stale: its timestamp is {0}s from the box's clock (at most {max}s)", max = WINDOW.as_secs())]
    Stale(u64),
    #[error("this nonce was already used: a replayed command")]
    Replayed,
    #[error("more than {MAX_SEEN} commands within {window}s", window = 2 * WINDOW.as_secs())]
    Flood,
}

/// `{"signed": TEXT, "mac": HEX}` and nothing else.
fn envelope(raw: &[u8]) -> Result<(String, String), Unverified> {
    let map = match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => map,
        _ => return Err(Unverified::Shape),
    };
    match (map.len(), field(&map, "signed"), field(&map, "mac")) {
        (2, Some(Value::String(text)), Some(Value::String(mac))) => Ok((text.clone(), mac.clone())),
        (_, None, None) => Err(Unverified::Unsigned),
        _ => Err(Unverified::Shape),
    }
}

/// Whether a message is a signed envelope, to say so when the box has no key.
pub fn looks_signed(raw: &[u8]) -> bool {
    envelope(raw).is_ok()
}

/// Keys match case-insensitively, as in commands.
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

fn valid_nonce(n: &str) -> bool {
    (16..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh random nonce: 128 bits, hex.
pub fn nonce() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn unix_now(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Whom a command is for: the `"to"` of its TEXT.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// One box, by its id: `box:<id>`.
    Box(String),
    /// Every box bound to this broadcast control key: `key:<rkey>`.
    Key(String),
    /// Whichever box serves the local socket it is written to: `socket`.
    Socket,
}

impl Target {
    pub fn text(&self) -> String {
        match self {
            Target::Box(id) => format!("box:{id}"),
            Target::Key(k) => format!("key:{k}"),
            Target::Socket => "socket".into(),
        }
    }
}

/// The transport a command came by: `to: "socket"` is taken only from the socket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Via {
    Socket,
    Broker,
}

/// A command, signed for `to` at `now`: the envelope to send, and its nonce (which the reply
/// must carry as `re`). `command` is the object with "command" and "arguments".
pub fn sign_command(key: &Key, command: &Value, to: &Target, now: SystemTime) -> (String, String) {
    let nonce = nonce();
    let mut text = command.clone();
    text["ts"] = unix_now(now).into();
    text["nonce"] = nonce.clone().into();
    text["to"] = to.text().into();
    (key.sign(COMMAND_DOMAIN, &text.to_string()), nonce)
}

/// A reply's TEXT (which carries `re`), signed.
pub fn seal_reply(key: &Key, text: &str) -> String {
    key.sign(REPLY_DOMAIN, text)
}

/// The reply a client sent `nonce` with may trust: right MAC, and `re` is that nonce. Returns
/// the reply object, `re` included.
pub fn open_reply(key: &Key, raw: &[u8], nonce: &str) -> Result<Value, String> {
    let text = key.verify(REPLY_DOMAIN, raw).map_err(|e| e.to_string())?;
    let reply: Value = serde_json::from_str(&text).map_err(|e| format!("signed text is not JSON: {e}"))?;
    match reply.as_object().and_then(|m| field(m, "re")) {
        Some(Value::String(re)) if re == nonce => Ok(reply),
        _ => Err("signed, but for another request".into()),
    }
}

/// A command that passed: its TEXT, to be parsed as a command, and its nonce.
#[derive(Debug, PartialEq)]
pub struct Opened {
    pub text: String,
    pub nonce: String,
}

/// A command that did not, and its nonce once the MAC passed: the refusal is signed with it,
/// so a genuine sender learns why (a skewed clock, say). An unauthenticated command's nonce
/// is never echoed, so no one gets a signed answer for a nonce of their choosing.
#[derive(Debug, PartialEq)]
pub struct Refused {
    pub reason: Refusal,
    pub nonce: Option<String>,
}

/// Nonces accepted within the window, forgotten once their timestamp can no longer pass.
#[derive(Default)]
struct Seen {
    order: VecDeque<(Instant, String)>,
    set: HashSet<String>,
}

impl Seen {
    fn admit(&mut self, nonce: &str, now: Instant) -> Result<(), Refusal> {
        while self.order.front().is_some_and(|(until, _)| *until <= now) {
            if let Some((_, n)) = self.order.pop_front() {
                self.set.remove(&n);
            }
        }
        if self.set.contains(nonce) {
            return Err(Refusal::Replayed);
        }
        if self.set.len() >= MAX_SEEN {
            return Err(Refusal::Flood);
        }
        // A timestamp up to WINDOW ahead stays acceptable for up to 2 × WINDOW from now.
        self.order.push_back((now + 2 * WINDOW, nonce.to_owned()));
        self.set.insert(nonce.to_owned());
        Ok(())
    }
}

/// The box's side: checks each command against the key, its own targets and the nonces seen.
pub struct Guard {
    key: Key,
    targets: Vec<String>,
    seen: Seen,
}

impl Guard {
    /// A box with this id, bound to these broadcast control keys (`--rkey`).
    pub fn new(key: Key, box_id: &str, broadcast_keys: &[String]) -> Guard {
        let mut targets = vec![Target::Box(box_id.to_owned()).text()];
        targets.extend(broadcast_keys.iter().map(|k| Target::Key(k.clone()).text()));
        Guard { key, targets, seen: Seen::default() }
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    /// MAC first (nothing unauthenticated is looked at further), then the target, the
    /// timestamp, and the nonce, which is remembered only once all else passed.
    pub fn open(&mut self, raw: &[u8], via: Via, now: SystemTime, mono: Instant) -> Result<Opened, Refused> {
        let text = self
            .key
            .verify(COMMAND_DOMAIN, raw)
            .map_err(|why| Refused { reason: Refusal::Unverified(why), nonce: None })?;
        let map = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => map,
            _ => return Err(Refused { reason: Refusal::NotAnObject, nonce: None }),
        };
        let nonce = match field(&map, "nonce") {
            Some(Value::String(n)) if valid_nonce(n) => n.clone(),
            _ => return Err(Refused { reason: Refusal::BadNonce, nonce: None }),
        };
        let refuse = |reason: Refusal| Refused { reason, nonce: Some(nonce.clone()) };
        let to = match field(&map, "to") {
            Some(Value::String(t)) => t.as_str(),
            _ => return Err(refuse(Refusal::NoTarget)),
        };
        if !(self.targets.iter().any(|t| t == to) || (to == "socket" && via == Via::Socket)) {
            return Err(refuse(Refusal::OtherTarget(to.to_owned())));
        }
        let ts = match field(&map, "ts") {
            Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or_default(),
            _ => return Err(refuse(Refusal::NoTimestamp)),
        };
        let skew = unix_now(now).abs_diff(ts);
        if skew > WINDOW.as_secs() {
            return Err(refuse(Refusal::Stale(skew)));
        }
        self.seen.admit(&nonce, mono).map_err(refuse)?;
        Ok(Opened { text, nonce })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn guard() -> Guard {
        Guard::new(Key::new(b"s3cret"), "job-1", &["rc".into()])
    }

    fn cmd() -> Value {
        json!({"command": "kill", "arguments": ["9"]})
    }

    #[test]
    fn a_signed_command_opens_once() {
        let key = Key::new(b"s3cret");
        let mut g = guard();
        let (env, nonce) = sign_command(&key, &cmd(), &Target::Box("job-1".into()), now());
        let opened = g.open(env.as_bytes(), Via::Broker, now(), Instant::now()).unwrap();
        assert_eq!(opened.nonce, nonce);
        assert_eq!(
            crate::command::parse(opened.text.as_bytes()),
            Ok(crate::command::Command::Kill(crate::signals::Sig::KILL))
        );
        let again = g.open(env.as_bytes(), Via::Broker, now(), Instant::now()).unwrap_err();
        assert_eq!(again.reason, Refusal::Replayed);
        // A broadcast to a key the box binds.
        let (env, _) = sign_command(&key, &cmd(), &Target::Key("rc".into()), now());
        assert!(g.open(env.as_bytes(), Via::Broker, now(), Instant::now()).is_ok());
    }

    #[test]
    fn what_is_refused() {
        let key = Key::new(b"s3cret");
        let mut g = guard();
        let open = |g: &mut Guard, env: &str, via| g.open(env.as_bytes(), via, now(), Instant::now());
        // Wrong key, another box, another key, the socket's target over the broker.
        let (env, _) = sign_command(&Key::new(b"s3cret!"), &cmd(), &Target::Box("job-1".into()), now());
        let wrong = open(&mut g, &env, Via::Broker).unwrap_err().reason;
        assert_eq!(wrong, Refusal::Unverified(Unverified::WrongMac));
        assert!(wrong.to_string().contains("control key"));
        for to in [Target::Box("job-2".into()), Target::Key("other".into()), Target::Socket] {
            let (env, _) = sign_command(&key, &cmd(), &to, now());
            let r = open(&mut g, &env, Via::Broker).unwrap_err().reason;
            assert!(
                matches!(r, Refusal::OtherTarget(_)) && r.to_string().contains("another target"),
                "{to:?}"
            );
        }
        let (env, _) = sign_command(&key, &cmd(), &Target::Socket, now());
        assert!(open(&mut g, &env, Via::Socket).is_ok());
        // Stale, either way.
        for t in [now() - Duration::from_secs(61), now() + Duration::from_secs(61)] {
            let (env, _) = sign_command(&key, &cmd(), &Target::Box("job-1".into()), t);
            let r = open(&mut g, &env, Via::Broker).unwrap_err();
            assert!(matches!(r.reason, Refusal::Stale(61..)) && r.nonce.is_some(), "{r:?}");
            assert!(r.reason.to_string().starts_with("stale: its timestamp is 6"), "{r:?}");
        }
        // Anything changed in TEXT, or in the MAC.
        let (env, _) = sign_command(&key, &cmd(), &Target::Box("job-1".into()), now());
        let tampered = env.replace(r#"[\"9\"]"#, r#"[\"15\"]"#);
        assert_ne!(tampered, env);
        assert!(open(&mut g, &tampered, Via::Broker).is_err());
        let mut v: Value = serde_json::from_str(&env).unwrap();
        let mac = v["mac"].as_str().unwrap().to_owned();
        v["mac"] = format!("{}{}", if mac.starts_with('0') { "1" } else { "0" }, &mac[1..]).into();
        assert!(open(&mut g, &v.to_string(), Via::Broker).is_err());
        // Unsigned, extra keys, a reply's domain.
        for bad in [
            r#"{"command":"kill"}"#.to_owned(),
            env.replacen('{', r#"{"command":"kill","#, 1),
            seal_reply(&key, r#"{"command":"kill","ts":0,"nonce":"0123456789abcdef","to":"box:job-1"}"#),
        ] {
            assert!(open(&mut g, &bad, Via::Broker).is_err(), "{bad}");
        }
        // The untouched one still opens: none of the above used up its nonce.
        assert!(open(&mut g, &env, Via::Broker).is_ok());
    }

    /// What the README tells a site's script to compute, byte for byte.
    #[test]
    fn the_documented_format() {
        let key = Key::new(b"s3cret");
        let text = r#"{"command":"status","ts":1700000000,"nonce":"0123456789abcdef","to":"box:job-1"}"#;
        let env = key.sign(COMMAND_DOMAIN, text);
        let mut m = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        m.update(format!("proc_box command v1\n{text}").as_bytes());
        let mac = hex::encode(m.finalize().into_bytes());
        assert_eq!(serde_json::from_str::<Value>(&env).unwrap(), json!({"signed": text, "mac": mac}));
        let when = UNIX_EPOCH + Duration::from_secs(1_700_000_030);
        assert!(guard().open(env.as_bytes(), Via::Broker, when, Instant::now()).is_ok());
    }

    #[test]
    fn replies() {
        let key = Key::new(b"s3cret");
        let sealed = seal_reply(&key, r#"{"ok":true,"re":"0123456789abcdef"}"#);
        assert_eq!(open_reply(&key, sealed.as_bytes(), "0123456789abcdef").unwrap()["ok"], true);
        assert!(open_reply(&key, sealed.as_bytes(), "fedcba9876543210").is_err(), "another request");
        assert!(open_reply(&Key::new(b"x"), sealed.as_bytes(), "0123456789abcdef").is_err());
        assert!(open_reply(&key, br#"{"ok":true,"re":"0123456789abcdef"}"#, "0123456789abcdef").is_err());
        // A signed command is no reply.
        let (env, nonce) = sign_command(&key, &cmd(), &Target::Socket, now());
        assert!(open_reply(&key, env.as_bytes(), &nonce).is_err());
    }

    #[test]
    fn nonces_are_bounded_and_forgotten() {
        let mut seen = Seen::default();
        let t0 = Instant::now();
        for i in 0..MAX_SEEN {
            seen.admit(&format!("{i:016}"), t0).unwrap();
        }
        assert_eq!(seen.admit("x".repeat(16).as_str(), t0), Err(Refusal::Flood));
        assert_eq!(Refusal::Flood.to_string(), format!("more than {MAX_SEEN} commands within 120s"));
        assert!(seen.admit(&format!("{:016}", 0), t0 + 2 * WINDOW).is_ok(), "forgotten after the window");
        assert_eq!(seen.set.len(), 1);
    }
}
