//! Signal names and numbers as users write them (`9`, `-9`, `KILL`, `SIGKILL`, `sigterm`).

use nix::sys::signal::Signal;
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
    pub fn parse(text: &str) -> Result<Sig, String> {
        let t = text.trim();
        let bad = || {
            format!(
                "invalid signal '{text}' (use a number from 1 to {} or a name such as TERM, KILL, USR1)",
                libc::SIGRTMAX()
            )
        };
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

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Signal::try_from(self.0) {
            Ok(s) => f.write_str(s.as_str()),
            Err(_) => write!(f, "signal {}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
