//! Signal names and numbers as users write them (`9`, `-9`, `KILL`, `SIGKILL`, `sigterm`), and
//! what each signal sent to proc_box means (the README's table is [`meaning`]).

use nix::sys::signal::{SigSet, Signal};
use std::fmt;
use std::str::FromStr;

/// A validated signal number, 1 ..= SIGRTMAX. Real-time signals are allowed, so this is not
/// `nix::Signal`, which only knows the classic ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sig(i32);

impl Sig {
    pub const HUP: Sig = Sig(libc::SIGHUP);
    pub const INT: Sig = Sig(libc::SIGINT);
    pub const QUIT: Sig = Sig(libc::SIGQUIT);
    pub const KILL: Sig = Sig(libc::SIGKILL);
    pub const TERM: Sig = Sig(libc::SIGTERM);
    pub const STOP: Sig = Sig(libc::SIGSTOP);
    pub const CONT: Sig = Sig(libc::SIGCONT);
    pub const TSTP: Sig = Sig(libc::SIGTSTP);

    /// Accepts any number the kernel knows, refusing 0 and negatives.
    pub fn from_raw(n: i32) -> Option<Sig> {
        (1..=libc::SIGRTMAX()).contains(&n).then_some(Sig(n))
    }

    pub fn raw(self) -> i32 {
        self.0
    }

    /// Parses `9`, `-9` (the `kill -9` spelling), `KILL`, `SIGKILL`, case-insensitively.
    pub fn parse(text: &str) -> Result<Sig, BadSignal> {
        let t = text.trim();
        let bad = || BadSignal(text.to_owned());
        let body = t.strip_prefix('-').unwrap_or(t);
        if body.starts_with(['-', '+']) {
            return Err(bad());
        }
        if let Ok(n) = body.parse::<i32>() {
            return Sig::from_raw(n).ok_or_else(bad);
        }
        let upper = body.to_ascii_uppercase();
        let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
        Signal::from_str(&name).map(|s| Sig(s as i32)).map_err(|_| bad())
    }
}

/// A signal name or number that is no signal; shows what was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid signal '{0}' (use a number from 1 to {max} or a name such as TERM, KILL, USR1)", max = libc::SIGRTMAX())]
pub struct BadSignal(pub String);

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Signal::try_from(self.0) {
            Ok(s) => f.write_str(s.as_str()),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

/// Signals whose handler is `fault.rs`'s. SIGABRT is also read from the signalfd (it stays
/// blocked; `abort()` unblocks it before raising).
pub const FAULTS: [i32; 7] =
    [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP, libc::SIGSYS, libc::SIGABRT];

/// Every signal proc_box can catch: all are blocked and read from the signalfd, so none can
/// kill proc_box while it holds a tree (only SIGKILL can, and a real fault of its own). The job
/// starts with proc_box's original mask instead. What each one means is [`meaning`]'s table.
/// glibc keeps 32 and 33 for itself. The fault signals are [`FAULTS`]: the kernel forces a real
/// fault through a block, so those reach a handler, and come to the loop through a pipe when sent.
pub fn handled_signals() -> SigSet {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a valid sigset_t; sigaddset refuses numbers it does not take, harmlessly.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in 1..=libc::SIGRTMAX() {
            let fault_only = FAULTS.contains(&sig) && sig != libc::SIGABRT;
            if !matches!(sig, libc::SIGKILL | libc::SIGSTOP) && !fault_only {
                libc::sigaddset(&mut set, sig);
            }
        }
    }
    // SAFETY: initialised by sigemptyset above.
    unsafe { SigSet::from_sigset_t_unchecked(set) }
}

/// What a signal sent to proc_box means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// SIGCHLD: a child changed state.
    Child,
    /// SIGINT, SIGTERM, SIGQUIT: graceful stop; a second one kills.
    Stop,
    /// SIGHUP: emit a sample.
    Sample,
    /// SIGTSTP, SIGTTIN, SIGTTOU: suspend the tree and proc_box (terminal job control).
    Suspend,
    /// SIGCONT: resume after a suspend; otherwise forwarded.
    Continue,
    /// Everything else: sent on to every process of the tree, as it was sent.
    Forward,
}

pub fn meaning(sig: i32) -> Meaning {
    match sig {
        libc::SIGCHLD => Meaning::Child,
        libc::SIGINT | libc::SIGTERM | libc::SIGQUIT => Meaning::Stop,
        libc::SIGHUP => Meaning::Sample,
        libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => Meaning::Suspend,
        libc::SIGCONT => Meaning::Continue,
        _ => Meaning::Forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's SIGNALS table, row by row; every other signal is forwarded.
    #[test]
    fn meaning_table() {
        let table = [
            (libc::SIGCHLD, Meaning::Child),
            (libc::SIGINT, Meaning::Stop),
            (libc::SIGTERM, Meaning::Stop),
            (libc::SIGQUIT, Meaning::Stop),
            (libc::SIGHUP, Meaning::Sample),
            (libc::SIGTSTP, Meaning::Suspend),
            (libc::SIGTTIN, Meaning::Suspend),
            (libc::SIGTTOU, Meaning::Suspend),
            (libc::SIGCONT, Meaning::Continue),
        ];
        for sig in 1..=libc::SIGRTMAX() {
            let want = table.iter().find(|(s, _)| *s == sig).map_or(Meaning::Forward, |(_, m)| *m);
            assert_eq!(meaning(sig), want, "signal {sig}");
        }
        let handled = handled_signals();
        for sig in [libc::SIGUSR1, libc::SIGWINCH, libc::SIGABRT, libc::SIGRTMIN(), libc::SIGRTMAX()] {
            assert!(handled.contains(Signal::try_from(sig).unwrap_or(Signal::SIGUSR1)), "{sig}");
        }
        for sig in [Signal::SIGKILL, Signal::SIGSTOP, Signal::SIGSEGV] {
            assert!(!handled.contains(sig), "{sig}");
        }
    }

    #[test]
    fn spellings() {
        for ok in ["9", "-9", "KILL", "kill", "SIGKILL", "sigkill", " 9 "] {
            assert_eq!(Sig::parse(ok), Ok(Sig::KILL), "{ok}");
        }
        assert_eq!(Sig::parse("TERM"), Ok(Sig::TERM));
        assert_eq!(Sig::parse("34").map(Sig::raw), Ok(34));
        for bad in ["0", "-0", "--9", "+9", "-", "", "FOO", "SIG", "999", "1.5", "-1x"] {
            assert!(Sig::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn display() {
        assert_eq!(Sig::TERM.to_string(), "SIGTERM");
        assert_eq!(Sig::from_raw(40).unwrap().to_string(), "signal 40");
    }
}
