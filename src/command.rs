//! Control commands (the JSON language of the socket and AMQP, fixed by the public interface):
//! bytes → [`Command`], and [`Reply`] (with the box's [`Status`]) → bytes.
//!
//! Shared by every transport, so the socket and AMQP accept exactly the same language.

use crate::signals::{BadSignal, Sig};
use crate::units::parse_duration;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// The shortest sample interval (`--sint`, `change_sample_rate`). Each sample walks the whole
/// tree and is published: a 1 ns interval is thousands of messages a second and most of a core,
/// and nothing that short is a sensible record of usage.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// A sample interval below [`MIN_SAMPLE_INTERVAL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the sample interval must be at least {}ms (got {})", MIN_SAMPLE_INTERVAL.as_millis(), humantime::format_duration(*.0))]
pub struct IntervalTooShort(pub Duration);

/// Refuses a sample interval below [`MIN_SAMPLE_INTERVAL`].
pub fn check_sample_interval(d: Duration) -> Result<Duration, IntervalTooShort> {
    if d < MIN_SAMPLE_INTERVAL {
        return Err(IntervalTooShort(d));
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

/// Why a command could not be read. Each is a different mistake of the sender's, and the
/// reply's `error` is its text.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("a command must be a JSON object")]
    NotAnObject,
    /// Keys match case-insensitively, so a repeated key would make the command ambiguous.
    #[error("ambiguous: the key \"{0}\" appears more than once")]
    AmbiguousKey(String),
    #[error("missing \"command\"")]
    MissingCommand,
    #[error("\"command\" must be a string")]
    CommandNotString,
    #[error("unknown command '{0}'")]
    Unknown(String),
    #[error("\"arguments\" must be an array")]
    ArgumentsNotArray,
    #[error("bad argument {0}: use strings, such as [\"15\"]")]
    BadArgument(String),
    #[error("{0} takes no arguments")]
    NoArguments(String),
    #[error("{0} takes exactly one argument")]
    OneArgument(String),
    #[error("kill takes at most one argument")]
    KillArguments,
    #[error(transparent)]
    Signal(#[from] BadSignal),
    /// The duration's own parser says what is wrong with it.
    #[error("{0}")]
    Duration(String),
    #[error(transparent)]
    SampleInterval(#[from] IntervalTooShort),
}

/// A refused command: why, and the command's name when it could be read.
#[derive(Debug, PartialEq)]
pub struct Rejected {
    pub command: Option<String>,
    pub error: ParseError,
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
        Ok(Entries::Other) => Err(reject(None, ParseError::NotAnObject)),
        Err(e) => Err(reject(None, ParseError::Json(e.to_string()))),
    }
}

fn reject(command: Option<&str>, error: impl Into<ParseError>) -> Rejected {
    Rejected { command: command.map(str::to_owned), error: error.into() }
}

fn command_of(map: &[(String, Value)]) -> Result<Command, Rejected> {
    // Keys match case-insensitively, so two keys that differ only in case (or a repeated key)
    // would make the command ambiguous: `{"command":"status","COMMAND":"timer_stop"}`.
    for (i, (k, _)) in map.iter().enumerate() {
        if map[..i].iter().any(|(other, _)| other.eq_ignore_ascii_case(k)) {
            return Err(reject(None, ParseError::AmbiguousKey(k.clone())));
        }
    }
    let field = |key: &str| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v);
    let name = match field("command") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(reject(None, ParseError::CommandNotString)),
        None => return Err(reject(None, ParseError::MissingCommand)),
    };
    let args: Vec<String> = match field("arguments") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) if n.as_u64().is_some() => Ok(n.to_string()),
                _ => Err(reject(Some(name), ParseError::BadArgument(v.to_string()))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(reject(Some(name), ParseError::ArgumentsNotArray)),
    };
    let no_args = |cmd: Command| {
        if args.is_empty() {
            Ok(cmd)
        } else {
            Err(reject(Some(name), ParseError::NoArguments(name.to_owned())))
        }
    };
    let one_arg = || match args.as_slice() {
        [a] => Ok(a.as_str()),
        _ => Err(reject(Some(name), ParseError::OneArgument(name.to_owned()))),
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
            _ => Err(reject(Some(name), ParseError::KillArguments)),
        },
        "change_sample_rate" => {
            let d = parse_duration(one_arg()?).map_err(|e| reject(Some(name), ParseError::Duration(e)))?;
            check_sample_interval(d).map(Command::ChangeSampleRate).map_err(|e| reject(Some(name), e))
        }
        _ => Err(reject(Some(name), ParseError::Unknown(name.to_owned()))),
    }
}

/// The box's state, as `status` (and every accepted command's reply) reports it. Part of the
/// public interface: the names and shapes of these fields are fixed. Fields are declared in
/// the order the reply has always shown them (alphabetical).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    pub box_id: String,
    /// Seconds since the box started.
    pub elapsed_seconds: f64,
    pub main_running: bool,
    pub pid: i32,
    pub pids: Vec<i32>,
    pub processes: usize,
    pub processes_peak: usize,
    pub processes_started: u64,
    pub processes_started_exact: bool,
    /// Why the box is ending the job, once it is: the summary's `reason`.
    pub reason: Option<&'static str>,
    /// "running" | "suspended" | "stopping".
    pub state: &'static str,
    pub timer: TimerStatus,
    /// "ptrace" | "subreaper".
    pub track: &'static str,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimerStatus {
    pub elapsed_seconds: f64,
    pub enabled: bool,
    /// Null without a timeout.
    pub remaining_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
}

/// The answer to one command: `{"ok", "command", "error", "state"}`.
#[derive(Debug, Serialize)]
pub struct Reply {
    pub ok: bool,
    pub command: Option<String>,
    pub error: Option<String>,
    /// Null in a refusal: whoever sent a bad command learns the reason, never the box's state.
    pub state: Option<Box<Status>>,
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
    /// An accepted command's reply, with the box's state.
    pub fn ok(command: &str, state: Status) -> Reply {
        Reply {
            ok: true,
            command: Some(command.into()),
            error: None,
            state: Some(Box::new(state)),
            sample: None,
            re: None,
            key: None,
        }
    }

    /// A refusal: the reason, and the command's name when it could be read; no state.
    pub fn refused(command: Option<String>, error: String) -> Reply {
        Reply { ok: false, command, error: Some(error), state: None, sample: None, re: None, key: None }
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
            assert!(!e.error.to_string().is_empty(), "{bad}");
        }
        assert_eq!(
            p(r#"{"command": "kill", "arguments": ["0"]}"#).unwrap_err().command.as_deref(),
            Some("kill")
        );
        let floor = p(r#"{"command": "change_sample_rate", "arguments": ["1ns"]}"#).unwrap_err().error;
        assert!(floor.to_string().contains("at least 100ms"), "{floor}");
        let kinds = [
            ("not json", ParseError::Json(String::new())),
            ("[1]", ParseError::NotAnObject),
            (r#"{"command": "x"}"#, ParseError::Unknown("x".into())),
            (r#"{"command": "stop", "arguments": ["1"]}"#, ParseError::NoArguments("stop".into())),
            (r#"{"command": "kill", "arguments": ["NOPE"]}"#, ParseError::Signal(BadSignal("NOPE".into()))),
        ];
        for (raw, want) in kinds {
            let got = p(raw).unwrap_err().error;
            assert_eq!(std::mem::discriminant(&got), std::mem::discriminant(&want), "{raw}: {got}");
        }
    }

    /// `state` is public interface: exactly these fields, in these shapes.
    #[test]
    fn status_fields() {
        let status = Status {
            box_id: "b".into(),
            elapsed_seconds: 1.5,
            main_running: true,
            pid: 7,
            pids: vec![7, 8],
            processes: 2,
            processes_peak: 2,
            processes_started: 2,
            processes_started_exact: true,
            reason: None,
            state: "running",
            timer: TimerStatus {
                elapsed_seconds: 1.0,
                enabled: true,
                remaining_seconds: None,
                timeout_seconds: None,
            },
            track: "ptrace",
        };
        let line = Reply::ok("status", status).to_line();
        assert_eq!(
            line,
            concat!(
                r#"{"ok":true,"command":"status","error":null,"state":{"box_id":"b","elapsed_seconds":1.5,"#,
                r#""main_running":true,"pid":7,"pids":[7,8],"processes":2,"processes_peak":2,"#,
                r#""processes_started":2,"processes_started_exact":true,"reason":null,"state":"running","#,
                r#""timer":{"elapsed_seconds":1.0,"enabled":true,"remaining_seconds":null,"timeout_seconds":null},"#,
                r#""track":"ptrace"}}"#,
                "\n"
            )
        );
        let refused = Reply::refused(None, "no".into()).to_line();
        assert_eq!(refused, "{\"ok\":false,\"command\":null,\"error\":\"no\",\"state\":null}\n");
    }
}
