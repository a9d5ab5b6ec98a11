//! Control commands (the JSON language of the socket and AMQP, fixed by the public interface):
//! bytes → [`Command`], and [`Reply`] → bytes.
//!
//! Shared by every transport, so the socket and AMQP accept exactly the same language.

use crate::signals::Sig;
use crate::units::parse_duration;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// The shortest sample interval (`--sint`, `change_sample_rate`). Each sample walks the whole
/// tree and is published: a 1 ns interval is thousands of messages a second and most of a core,
/// and nothing that short is a sensible record of usage.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// Refuses a sample interval below [`MIN_SAMPLE_INTERVAL`], with the reason.
pub fn check_sample_interval(d: Duration) -> Result<Duration, String> {
    if d < MIN_SAMPLE_INTERVAL {
        return Err(format!(
            "the sample interval must be at least {}ms (got {})",
            MIN_SAMPLE_INTERVAL.as_millis(),
            humantime::format_duration(d)
        ));
    }
    Ok(d)
}

#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Stop,
    Suspend,
    Resume,
    Kill(Sig),
    Sample,
    ChangeSampleRate(Duration),
    TimerReset,
    TimerStart,
    TimerStop,
    TimerResume,
    Status,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Stop => "stop",
            Command::Suspend => "suspend",
            Command::Resume => "resume",
            Command::Kill(_) => "kill",
            Command::Sample => "sample",
            Command::ChangeSampleRate(_) => "change_sample_rate",
            Command::TimerReset => "timer_reset",
            Command::TimerStart => "timer_start",
            Command::TimerStop => "timer_stop",
            Command::TimerResume => "timer_resume",
            Command::Status => "status",
        }
    }
}

/// A refused command: the reason, and the command's name when it could be read.
#[derive(Debug, PartialEq)]
pub struct Rejected {
    pub command: Option<String>,
    pub reason: String,
}

/// Any JSON value, an object kept as its list of entries, repeated keys included (a
/// `serde_json::Map` would keep only the last of them, silently).
enum Entries {
    Object(Vec<(String, Value)>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = m.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries::Object(entries))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Entries, A::Error> {
                while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Entries::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Entries, E> {
                Ok(Entries::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Entries, E> {
                Ok(Entries::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Entries, E> {
                Ok(Entries::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Entries, E> {
                Ok(Entries::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Entries, E> {
                Ok(Entries::Other)
            }
            fn visit_unit<E>(self) -> Result<Entries, E> {
                Ok(Entries::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses one command. Keys match case-insensitively, as Go's decoder did.
pub fn parse(raw: &[u8]) -> Result<Command, Rejected> {
    match serde_json::from_slice::<Entries>(raw) {
        Ok(Entries::Object(map)) => command_of(&map),
        Ok(Entries::Other) => Err(reject(None, "a command must be a JSON object".into())),
        Err(e) => Err(reject(None, format!("invalid JSON: {e}"))),
    }
}

fn reject(command: Option<&str>, reason: String) -> Rejected {
    Rejected { command: command.map(str::to_owned), reason }
}

fn command_of(map: &[(String, Value)]) -> Result<Command, Rejected> {
    // Keys match case-insensitively, so two keys that differ only in case (or a repeated key)
    // would make the command ambiguous: `{"command":"status","COMMAND":"timer_stop"}`.
    for (i, (k, _)) in map.iter().enumerate() {
        if map[..i].iter().any(|(other, _)| other.eq_ignore_ascii_case(k)) {
            return Err(reject(None, format!("ambiguous: the key \"{k}\" appears more than once")));
        }
    }
    let field = |key: &str| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v);
    let name = match field("command") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(reject(None, "\"command\" must be a string".into())),
        None => return Err(reject(None, "missing \"command\"".into())),
    };
    let args: Vec<String> = match field("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) if n.as_u64().is_some() => Ok(n.to_string()),
                _ => Err(reject(Some(name), format!("bad argument {v}: use strings, such as [\"15\"]"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(reject(Some(name), "\"arguments\" must be an array".into())),
    };
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(reject(Some(name), format!("{name} takes no arguments")))
        }
    };
    let one_arg = || match args.as_slice() {
        [a] => Ok(a.as_str()),
        _ => Err(reject(Some(name), format!("{name} takes exactly one argument"))),
    };
    match name.to_ascii_lowercase().as_str() {
        "stop" => no_args(Command::Stop),
        "suspend" => no_args(Command::Suspend),
        "resume" => no_args(Command::Resume),
        "sample" => no_args(Command::Sample),
        "status" => no_args(Command::Status),
        "timer_reset" => no_args(Command::TimerReset),
        "timer_start" => no_args(Command::TimerStart),
        "timer_stop" => no_args(Command::TimerStop),
        "timer_resume" => no_args(Command::TimerResume),
        "kill" => match args.as_slice() {
            [] => Ok(Command::Kill(Sig::KILL)),
            [s] => Sig::parse(s).map(Command::Kill).map_err(|e| reject(Some(name), e)),
            _ => Err(reject(Some(name), "kill takes at most one argument".into())),
        },
        "change_sample_rate" => {
            let d = parse_duration(one_arg()?).map_err(|e| reject(Some(name), e))?;
            check_sample_interval(d).map(Command::ChangeSampleRate).map_err(|e| reject(Some(name), e))
        }
        _ => Err(reject(Some(name), format!("unknown command '{name}'"))),
    }
}

/// The answer to one command: `{"ok", "command", "error", "state"}`.
#[derive(Debug, Serialize)]
pub struct Reply {
    pub ok: bool,
    pub command: Option<String>,
    pub error: Option<String>,
    pub state: Value,
    /// The sample a `sample` command produced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample: Option<Value>,
    /// The nonce of the signed command this answers (see `auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub re: Option<String>,
    /// The box's control key: the reply goes out signed with it.
    #[serde(skip)]
    pub key: Option<crate::auth::Key>,
}

impl Reply {
    pub fn new(ok: bool, command: Option<String>, error: Option<String>, state: Value) -> Reply {
        Reply { ok, command, error, state, sample: None, re: None, key: None }
    }

    /// One line of JSON: the reply itself, or, with a key, its signed envelope.
    pub fn to_line(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_else(|_| r#"{"ok":false}"#.into());
        let mut s = match &self.key {
            Some(key) => crate::auth::seal_reply(key, &text),
            None => text,
        };
        s.push('\n');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, Rejected> {
        parse(s.as_bytes())
    }

    #[test]
    fn accepted() {
        assert_eq!(p(r#"{"command": "kill", "arguments": ["15"]}"#), Ok(Command::Kill(Sig::TERM)));
        assert_eq!(p(r#"{"Command": "KILL"}"#), Ok(Command::Kill(Sig::KILL)));
        assert_eq!(p(r#"{"COMMAND": "kill", "Arguments": ["-9"]}"#), Ok(Command::Kill(Sig::KILL)));
        assert_eq!(p(r#"{"command": "kill", "arguments": [15]}"#), Ok(Command::Kill(Sig::TERM)));
        assert_eq!(p(r#"{"command": "suspend", "arguments": []}"#), Ok(Command::Suspend));
        assert_eq!(p(r#"{"command": "status", "arguments": null}"#), Ok(Command::Status));
        assert_eq!(
            p(r#"{"command": "change_sample_rate", "arguments": ["1m30s"]}"#),
            Ok(Command::ChangeSampleRate(Duration::from_secs(90)))
        );
        assert_eq!(
            p(r#"{"command": "change_sample_rate", "arguments": ["100ms"]}"#),
            Ok(Command::ChangeSampleRate(MIN_SAMPLE_INTERVAL))
        );
        for name in ["stop", "resume", "sample", "timer_reset", "timer_start", "timer_stop", "timer_resume"] {
            assert_eq!(p(&format!(r#"{{"command": "{name}"}}"#)).unwrap().name(), name);
        }
    }

    #[test]
    fn rejected_with_reason() {
        for bad in [
            "",
            "not json",
            "[1,2]",
            r#"{"arguments": []}"#,
            r#"{"command": 5}"#,
            r#"{"command": "explode"}"#,
            r#"{"command": "kill", "arguments": ["0"]}"#,
            r#"{"command": "kill", "arguments": [-9]}"#,
            r#"{"command": "kill", "arguments": ["--9"]}"#,
            r#"{"command": "kill", "arguments": ["NOPE"]}"#,
            r#"{"command": "kill", "arguments": "9"}"#,
            r#"{"command": "kill", "arguments": ["9", "15"]}"#,
            r#"{"command": "stop", "arguments": ["now"]}"#,
            r#"{"command": "change_sample_rate", "arguments": ["soon"]}"#,
            r#"{"command": "change_sample_rate", "arguments": ["0s"]}"#,
            r#"{"command": "change_sample_rate"}"#,
            r#"{"command": "change_sample_rate", "arguments": ["1e19"]}"#,
            r#"{"command": "change_sample_rate", "arguments": ["1ns"]}"#,
            r#"{"command": "change_sample_rate", "arguments": ["99ms"]}"#,
            r#"{"command": "status", "COMMAND": "timer_stop"}"#,
            r#"{"command": "status", "command": "timer_stop"}"#,
            r#"{"command": "kill", "arguments": [], "Arguments": ["9"]}"#,
            "42",
            "\"stop\"",
            "null",
        ] {
            let e = p(bad).expect_err(bad);
            assert!(!e.reason.is_empty(), "{bad}");
        }
        assert_eq!(
            p(r#"{"command": "kill", "arguments": ["0"]}"#).unwrap_err().command.as_deref(),
            Some("kill")
        );
        let floor = p(r#"{"command": "change_sample_rate", "arguments": ["1ns"]}"#).unwrap_err().reason;
        assert!(floor.contains("at least 100ms"), "{floor}");
    }
}
