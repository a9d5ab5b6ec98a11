//! The door every control command passes, whichever transport brought it (the socket or
//! AMQP): the size bound, the token check (`--control-token`) and parsing; on the way out, the
//! reply, sealed for the command it answers. The loop sees only commands that passed.

use crate::auth::{self, Guard, Via};
use crate::command::{self, Command, ParseError, Reply, Status};
use std::time::{Instant, SystemTime};

/// The longest command, on the socket (a line) and over AMQP (a message). A longer line is
/// answered with an error and skipped.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a command was refused, at the door or by the box. The reply's `error` is its text.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("{what} longer than {MAX_LINE} bytes")]
    TooLong { what: &'static str },
    /// The box has a key, and the command did not pass it.
    #[error(transparent)]
    Auth(auth::Refusal),
    /// A signed command to a box without a key: the sender thinks it needs one.
    #[error("this box has no control key (--control-token): send the command unsigned")]
    NoKey,
    #[error(transparent)]
    Parse(ParseError),
    /// Well formed, but not now (see the policy).
    #[error(transparent)]
    Policy(#[from] crate::policy::Refused),
}

/// A command that passed the door, and the nonce its reply must carry.
#[derive(Debug)]
pub struct Admitted {
    pub command: Command,
    nonce: Option<String>,
}

/// A command refused at the door: why, its name when it could be read, and the nonce to sign
/// the refusal with (only once the MAC passed: see `auth::Refused`).
#[derive(Debug)]
pub struct Rejected {
    pub refusal: Refusal,
    pub command: Option<String>,
    nonce: Option<String>,
}

pub struct Control {
    /// Every command must be signed with this key (`--control-token`).
    guard: Option<Guard>,
}

impl Control {
    pub fn new(guard: Option<Guard>) -> Control {
        Control { guard }
    }

    /// Bound, authenticate, parse. Every refusal is logged here, once.
    pub fn admit(&mut self, raw: &[u8], via: Via) -> Result<Admitted, Rejected> {
        if raw.len() > MAX_LINE {
            return Err(Control::too_long(via));
        }
        let (text, nonce) = match self.guard.as_mut() {
            None => (std::borrow::Cow::Borrowed(raw), None),
            Some(guard) => match guard.open(raw, via, SystemTime::now(), Instant::now()) {
                Ok(opened) => (std::borrow::Cow::Owned(opened.text.into_bytes()), Some(opened.nonce)),
                Err(refused) => {
                    crate::warn!("refused a command: {}", refused.reason);
                    let refusal = Refusal::Auth(refused.reason);
                    return Err(Rejected { refusal, command: None, nonce: refused.nonce });
                }
            },
        };
        match command::parse(&text) {
            Ok(command) => Ok(Admitted { command, nonce }),
            Err(r) => {
                let refusal = if self.guard.is_none() && auth::looks_signed(raw) {
                    Refusal::NoKey
                } else {
                    Refusal::Parse(r.error)
                };
                crate::warn!("rejected command: {refusal}");
                Err(Rejected { refusal, command: r.command, nonce })
            }
        }
    }

    /// A command longer than [`MAX_LINE`] (the socket finds its own while splitting lines).
    pub fn too_long(via: Via) -> Rejected {
        let what = match via {
            Via::Socket => "line",
            Via::Broker => "message",
        };
        match via {
            Via::Socket => crate::warn!("control socket: rejected a line longer than {MAX_LINE} bytes"),
            Via::Broker => crate::warn!("AMQP: rejected a message longer than {MAX_LINE} bytes"),
        }
        Rejected { refusal: Refusal::TooLong { what }, command: None, nonce: None }
    }

    /// The reply to an admitted command: the box's state (and the sample a `sample` took), or
    /// the box's refusal.
    pub fn answer(
        &self,
        admitted: Admitted,
        outcome: Result<(Status, Option<serde_json::Value>), crate::policy::Refused>,
    ) -> Reply {
        let name = admitted.command.name();
        match outcome {
            Ok((status, sample)) => {
                let mut reply = Reply::ok(name, status);
                reply.sample = sample;
                self.seal(reply, admitted.nonce)
            }
            Err(e) => {
                crate::warn!("command {name} refused: {e}");
                let rejected =
                    Rejected { refusal: e.into(), command: Some(name.into()), nonce: admitted.nonce };
                self.refuse(rejected)
            }
        }
    }

    /// A refusal carries no state: whoever sent a bad command (an unauthenticated one
    /// included) learns the reason, never the box's pids, id or timer.
    pub fn refuse(&self, rejected: Rejected) -> Reply {
        self.seal(Reply::refused(rejected.command, rejected.refusal.to_string()), rejected.nonce)
    }

    /// With a control key, the reply is signed, bound to the nonce of the command it answers.
    fn seal(&self, mut reply: Reply, nonce: Option<String>) -> Reply {
        if let Some(guard) = &self.guard {
            reply.re = nonce;
            reply.key = Some(guard.key().clone());
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{sign_command, Key, Target};
    use serde_json::json;

    fn keyed() -> Control {
        Control::new(Some(Guard::new(Key::new(b"k"), "b", &[])))
    }

    #[test]
    fn refusals_tell_their_kind() {
        let mut open = Control::new(None);
        let long = vec![b' '; MAX_LINE + 1];
        assert_eq!(open.admit(&long, Via::Broker).unwrap_err().refusal, Refusal::TooLong { what: "message" });
        let r = open.admit(br#"{"command":"kill","arguments":["0"]}"#, Via::Socket).unwrap_err();
        assert!(matches!(r.refusal, Refusal::Parse(ParseError::Signal(_))), "{r:?}");
        assert_eq!(r.command.as_deref(), Some("kill"));
        let (env, _) =
            sign_command(&Key::new(b"k"), &json!({"command": "status"}), &Target::Socket, SystemTime::now());
        assert_eq!(open.admit(env.as_bytes(), Via::Socket).unwrap_err().refusal, Refusal::NoKey);
        let mut keyed = keyed();
        let r = keyed.admit(br#"{"command":"status"}"#, Via::Socket).unwrap_err();
        assert!(matches!(r.refusal, Refusal::Auth(auth::Refusal::Unverified(auth::Unverified::Unsigned))));
        let reply = keyed.refuse(r);
        assert_eq!((reply.ok, reply.re.as_deref(), reply.state.is_none()), (false, None, true));
    }

    #[test]
    fn a_signed_command_is_answered_under_its_nonce() {
        let mut keyed = keyed();
        let (env, nonce) =
            sign_command(&Key::new(b"k"), &json!({"command": "suspend"}), &Target::Socket, SystemTime::now());
        let admitted = keyed.admit(env.as_bytes(), Via::Socket).unwrap();
        assert_eq!(admitted.command, Command::Suspend);
        let reply = keyed.answer(admitted, Err(crate::policy::Refused::Stopping));
        assert_eq!(reply.re.as_deref(), Some(nonce.as_str()));
        assert_eq!(reply.error.as_deref(), Some("the box is stopping; suspend refused"));
        assert!(auth::open_reply(&Key::new(b"k"), reply.to_line().trim_end().as_bytes(), &nonce).is_ok());
    }
}
