//! Interactive use: the job's process group owns the terminal while it runs, as under tini.
//!
//! Without this, a job that reads the terminal would be stopped by SIGTTIN, and Ctrl-C would
//! hit proc_box instead of the job. proc_box takes the terminal back when the job is suspended
//! (Ctrl-Z) and at exit.

use crate::sys::fd::standard;
use nix::unistd::{getpgrp, isatty, tcgetpgrp, tcsetpgrp, Pid};
use std::os::fd::RawFd;

pub struct Terminal {
    fd: RawFd,
    own_pgrp: Pid,
    job_pgrp: Option<Pid>,
}

impl Terminal {
    /// The controlling terminal on stdin, if proc_box is in its foreground process group.
    /// A box started in the background leaves the terminal alone.
    pub fn detect() -> Option<Terminal> {
        let fd = 0;
        let stdin = standard(fd)?;
        if !isatty(stdin).unwrap_or(false) {
            return None;
        }
        let own_pgrp = getpgrp();
        (tcgetpgrp(stdin).ok()? == own_pgrp).then_some(Terminal { fd, own_pgrp, job_pgrp: None })
    }

    pub fn fd(&self) -> RawFd {
        self.fd
    }

    pub fn set_job(&mut self, pgrp: i32) {
        self.job_pgrp = Some(Pid::from_raw(pgrp));
    }

    /// Gives the foreground to the job (SIGTTOU is blocked in proc_box, so this works even
    /// while proc_box itself is in the background).
    pub fn give_to_job(&self) {
        if let Some(pgrp) = self.job_pgrp {
            if let Some(tty) = standard(self.fd) {
                let _ = tcsetpgrp(tty, pgrp);
            }
        }
    }

    pub fn take_back(&self) {
        if let Some(tty) = standard(self.fd) {
            let _ = tcsetpgrp(tty, self.own_pgrp);
        }
    }
}
