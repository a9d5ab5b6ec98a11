//! The local control socket: one JSON command per line in, one JSON reply per line out.
//!
//! Non-blocking and owned by the event loop. A slow or hostile client can cost a bounded amount
//! of memory (line and reply-buffer caps, a connection cap) and never blocks the loop. Clients
//! are served fairly: at most [`LINES_PER_TURN`] lines of one client per loop turn, so timers
//! and signals wait a few milliseconds at most, however fast a client streams. A client that
//! still has input is served again on the next turn ([`ControlSocket::has_more`]).

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys::fd::{peer_credentials, readable_now};
use crate::tokens::{self, Source, LISTENER, MAX_CONNS};

use crate::control::MAX_LINE;
/// A client that stops reading its replies is dropped past this much pending output.
const MAX_PENDING: usize = 1 << 20;
/// Past this much unsent output, a client's further input waits until it reads its replies.
const BACKPRESSURE: usize = 64 * 1024;
/// Lines of one client handled per loop turn.
pub const LINES_PER_TURN: usize = 16;
/// A connection with nothing in flight for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection quiet for less than this is never closed to make room: a client that just
/// connected has not had the time to send its command.
const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);

struct Conn {
    stream: UnixStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    /// The peer closed its side: answer what it sent, flush, then drop.
    eof: bool,
    /// Lines handed out by `ready` and not yet answered.
    unanswered: usize,
    /// Input may be left to read or to split: serve again next turn.
    more: bool,
    last_active: Instant,
}

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
    conns: Vec<Option<Conn>>,
    /// Every slot was taken when a client knocked: accept it once one frees.
    accept_waiting: bool,
    /// Whether processes of the box's own tree may control it.
    allow_job_control: bool,
}

/// What a connection produced: complete lines to answer, or a line refused for its length.
pub enum Input {
    Line(Vec<u8>),
    TooLong,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A stale socket left by a dead box is replaced; a live one,
    /// or any other kind of file, is an error.
    pub fn bind(path: &Path, allow_job_control: bool) -> Result<ControlSocket, String> {
        let shown = path.display();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(format!("control socket {shown}: a file that is not a socket is in the way"));
            }
            // A non-blocking connect: a listener whose backlog is full (or planted by someone
            // who never accepts) must not hang proc_box before the job starts.
            match UnixStream::connect(path) {
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => std::fs::remove_file(path)
                    .map_err(|e| format!("control socket {shown}: cannot remove the stale socket: {e}"))?,
                Ok(_) | Err(_) => {
                    return Err(format!("control socket {shown} is in use by a running process"))
                }
            }
        }
        // umask is process-wide; proc_box is still single-threaded here.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        // Mode 0600 from the umask at bind: a chmod after it would follow a symlink planted
        // in between.
        let listener = bound.map_err(|e| format!("control socket {shown}: {e}"))?;
        let ino = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            ino,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
            accept_waiting: false,
            allow_job_control,
        })
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)
    }

    /// Handles readiness on one of our tokens; returns the input to answer, in order.
    pub fn ready(&mut self, token: Token, registry: &Registry) -> Vec<(Token, Input)> {
        let mut input = Vec::new();
        match tokens::source(token) {
            Source::Listener => self.accept(registry),
            Source::Conn(slot) => self.serve(slot, registry, &mut input),
            _ => {}
        }
        input
    }

    /// Whether a client has input left that the last turn's budget did not reach.
    pub fn has_more(&self) -> bool {
        self.accept_waiting && self.conns.iter().any(Option::is_none)
            || self.conns.iter().flatten().any(|c| c.more && c.out.len() < BACKPRESSURE)
    }

    /// One more turn for every client with input left, and for a client waiting for a slot.
    pub fn serve_more(&mut self, registry: &Registry) -> Vec<(Token, Input)> {
        if self.accept_waiting && self.conns.iter().any(Option::is_none) {
            self.accept(registry);
        }
        let mut input = Vec::new();
        for slot in 0..MAX_CONNS {
            if self.conns[slot].as_ref().is_some_and(|c| c.more && c.out.len() < BACKPRESSURE) {
                self.serve(slot, registry, &mut input);
            }
        }
        input
    }

    /// Closes connections idle for [`IDLE_TIMEOUT`], and lets a waiting client in if an idle
    /// one can make room. Call now and then (the loop's tick).
    pub fn sweep(&mut self, registry: &Registry, now: Instant) {
        if self.accept_waiting {
            self.accept(registry); // an idle client may have become old enough to make room
        }
        for slot in 0..MAX_CONNS {
            let idle = self.conns[slot]
                .as_ref()
                .is_some_and(|c| c.idle() && now.saturating_duration_since(c.last_active) >= IDLE_TIMEOUT);
            if idle {
                self.close(slot, registry);
            }
        }
    }

    /// Reads and splits at most [`LINES_PER_TURN`] lines of one client.
    fn serve(&mut self, slot: usize, registry: &Registry, input: &mut Vec<(Token, Input)>) {
        let token = tokens::conn(slot);
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.last_active = Instant::now();
        let mut buf = [0u8; 4096];
        let mut failed = false;
        let mut taken = 0;
        conn.more = true;
        loop {
            if taken == LINES_PER_TURN || conn.out.len() >= BACKPRESSURE {
                break; // the rest waits for the next turn, or for the client to read
            }
            if let Some(line) = conn.next_line() {
                input.push((token, line));
                taken += 1;
                continue;
            }
            if conn.eof {
                conn.more = false;
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.eof = true,
                Ok(n) => conn.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.more = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if conn.eof && !conn.more && !conn.discarding && !conn.inbuf.is_empty() {
            // A last command without a newline still counts.
            let line = std::mem::take(&mut conn.inbuf);
            if !line.trim_ascii().is_empty() {
                input.push((token, Input::Line(line)));
                taken += 1;
            }
        }
        conn.unanswered += taken;
        if failed {
            self.close(slot, registry);
        } else {
            self.flush(slot, registry);
        }
    }

    /// Queues a reply line on a connection and writes what the peer will take now.
    pub fn reply(&mut self, token: Token, line: &str, registry: &Registry) {
        let Source::Conn(slot) = tokens::source(token) else {
            return;
        };
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.out.extend_from_slice(line.as_bytes());
            conn.unanswered = conn.unanswered.saturating_sub(1);
            self.flush(slot, registry);
        }
    }

    /// Accepts waiting clients. With every slot taken, the oldest idle client makes room; if
    /// none is idle, the newcomer waits in the listen backlog (never accepted and dropped).
    fn accept(&mut self, registry: &Registry) {
        loop {
            let slot = match self.conns.iter().position(Option::is_none) {
                Some(slot) => slot,
                // Make room only for a client that is really waiting in the backlog.
                None if !self.listener_has_pending() => return,
                None => match self.oldest_idle() {
                    Some(slot) => {
                        crate::debug!("control socket: closing the oldest idle client to make room");
                        self.close(slot, registry);
                        slot
                    }
                    None => {
                        if !self.accept_waiting {
                            crate::warn!(
                                "control socket: {MAX_CONNS} clients busy; a new one waits for a slot"
                            );
                        }
                        self.accept_waiting = true;
                        return;
                    }
                },
            };
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if let Err(why) = peer_allowed(&stream, self.allow_job_control) {
                        crate::warn!("control socket: refused a client: {why}");
                        let reply = crate::command::Reply::refused(None, format!("refused: {why}"));
                        let _ = stream.write(reply.to_line().as_bytes());
                        continue;
                    }
                    let token = tokens::conn(slot);
                    if registry.register(&mut stream, token, Interest::READABLE).is_ok() {
                        self.conns[slot] = Some(Conn {
                            stream,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            discarding: false,
                            eof: false,
                            unanswered: 0,
                            more: false,
                            last_active: Instant::now(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_waiting = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::warn!("control socket: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn listener_has_pending(&self) -> bool {
        readable_now(&self.listener)
    }

    fn oldest_idle(&self) -> Option<usize> {
        let now = Instant::now();
        (0..MAX_CONNS)
            .filter_map(|i| {
                let c = self.conns[i].as_ref()?;
                let quiet = now.saturating_duration_since(c.last_active) >= MIN_IDLE_TO_EVICT;
                (quiet && c.idle()).then_some((c.last_active, i))
            })
            .min()
            .map(|(_, i)| i)
    }

    fn flush(&mut self, slot: usize, registry: &Registry) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        while !conn.out.is_empty() {
            match conn.stream.write(&conn.out) {
                Ok(n) => {
                    conn.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.close(slot, registry),
            }
        }
        if conn.out.len() > MAX_PENDING {
            crate::warn!("control socket: a client is not reading its replies; dropping it");
            return self.close(slot, registry);
        }
        if conn.eof && conn.out.is_empty() && conn.unanswered == 0 {
            return self.close(slot, registry);
        }
        let interest =
            if conn.out.is_empty() { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE };
        let _ = registry.reregister(&mut conn.stream, tokens::conn(slot), interest);
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = registry.deregister(&mut conn.stream);
        }
    }
}

/// Who may control the box: root or proc_box's own user (`SO_PEERCRED`), and never a process
/// of the box's own tree (a job must not stop its own timer) unless `--allow-job-control`.
fn peer_allowed(stream: &UnixStream, allow_job_control: bool) -> Result<(), &'static str> {
    let Ok(cred) = peer_credentials(stream) else {
        return Err("its credentials cannot be read");
    };
    if cred.uid != 0 && cred.uid != rustix::process::geteuid().as_raw() {
        return Err("another user (only root and the box's own user may control it)");
    }
    if !allow_job_control && in_own_tree(cred.pid) {
        return Err("a process of the box's own tree (see --allow-job-control)");
    }
    Ok(())
}

/// Whether `pid` descends from proc_box (every process of the tree does: proc_box is their
/// subreaper), from the parent chain in /proc.
fn in_own_tree(mut pid: i32) -> bool {
    let me = std::process::id() as i32;
    for _ in 0..4096 {
        if pid <= 1 {
            return false;
        }
        if pid == me {
            return true;
        }
        match crate::sys::procfs::parent_of(pid) {
            Some(ppid) => pid = ppid,
            None => return false,
        }
    }
    false
}

impl Conn {
    /// Nothing in flight: no input left (read or still in the kernel's buffer), no reply owed
    /// or unsent. Only such a connection may be closed to make room.
    fn idle(&self) -> bool {
        if self.unanswered != 0 || !self.out.is_empty() || !self.inbuf.is_empty() || self.more {
            return false;
        }
        !readable_now(&self.stream)
    }

    /// The next complete line of the input, enforcing [`MAX_LINE`].
    fn next_line(&mut self) -> Option<Input> {
        loop {
            match self.inbuf.iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    let line: Vec<u8> = self.inbuf.drain(..=nl).take(nl).collect();
                    if std::mem::take(&mut self.discarding) {
                        continue; // the tail of an over-long line
                    }
                    if line.len() > MAX_LINE {
                        return Some(Input::TooLong);
                    }
                    if !line.trim_ascii().is_empty() {
                        return Some(Input::Line(line));
                    }
                }
                None if self.inbuf.len() > MAX_LINE => {
                    self.inbuf.clear();
                    if std::mem::replace(&mut self.discarding, true) {
                        continue; // still inside the same over-long line
                    }
                    return Some(Input::TooLong);
                }
                None => return None,
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // Remove the socket only if it is still the one we bound.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
