//! The event loop's mio token space, allocated in one place: each source owns a fixed token or
//! a range, so no two can collide and every wake-up names its source ([`source`]).

use mio::Token;

/// The signalfd: SIGCHLD and every signal proc_box acts on.
pub const SIGNALS: Token = Token(0);
/// Transport threads (AMQP requests) and the relays (stdout crossed its limit).
pub const WAKER: Token = Token(1);
/// The control socket's listener.
pub const LISTENER: Token = Token(2);
/// The job's stdout and stderr pipes, until their relay threads start.
pub const OUTPUTS: [Token; 2] = [Token(3), Token(4)];
/// Fault signals sent to proc_box with kill(2), passed on by the fault handler.
pub const SENT_FAULTS: Token = Token(5);
/// The process events connector, polled only to enforce `--pids-limit` at each fork.
pub const FORK_EVENTS: Token = Token(6);
/// The control socket's connections, one token per slot.
const FIRST_CONN: usize = 16;
pub const MAX_CONNS: usize = 64;
/// Tokens at and above this value belong to the tracker's pidfds, one per watched process.
pub const FIRST_PIDFD: usize = 1 << 20;

/// The token of the control socket's connection in `slot` (below [`MAX_CONNS`]).
pub fn conn(slot: usize) -> Token {
    Token(FIRST_CONN + slot)
}

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Signals,
    Waker,
    Listener,
    /// 0 for stdout, 1 for stderr.
    Output(usize),
    SentFaults,
    ForkEvents,
    /// A control socket connection, by slot.
    Conn(usize),
    Pidfd,
    Unknown,
}

pub fn source(token: Token) -> Source {
    match token {
        SIGNALS => Source::Signals,
        WAKER => Source::Waker,
        LISTENER => Source::Listener,
        SENT_FAULTS => Source::SentFaults,
        FORK_EVENTS => Source::ForkEvents,
        t if OUTPUTS.contains(&t) => Source::Output(usize::from(t == OUTPUTS[1])),
        Token(n) if (FIRST_CONN..FIRST_CONN + MAX_CONNS).contains(&n) => Source::Conn(n - FIRST_CONN),
        Token(n) if n >= FIRST_PIDFD => Source::Pidfd,
        _ => Source::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_names_one_source() {
        assert_eq!(source(conn(0)), Source::Conn(0));
        assert_eq!(source(conn(MAX_CONNS - 1)), Source::Conn(MAX_CONNS - 1));
        assert_eq!(source(conn(MAX_CONNS)), Source::Unknown);
        assert_eq!(source(OUTPUTS[1]), Source::Output(1));
        assert_eq!(source(Token(FIRST_PIDFD)), Source::Pidfd);
        let fixed = [SIGNALS, WAKER, LISTENER, OUTPUTS[0], OUTPUTS[1], SENT_FAULTS, FORK_EVENTS];
        for (i, a) in fixed.iter().enumerate() {
            assert!(a.0 < FIRST_CONN && !fixed[..i].contains(a), "{a:?}");
        }
    }
}
