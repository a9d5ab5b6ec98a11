//! The local control socket: one JSON command per line in, one JSON reply per line out.
//!
//! Non-blocking and owned by the event loop. A slow or hostile client can cost a bounded amount
//! of memory (line and reply-buffer caps, a connection cap) and never blocks the loop.

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const LISTENER: Token = Token(2);
const FIRST_CONN: usize = 16;
const MAX_CONNS: usize = 64;
/// A longer line is answered with an error and skipped.
pub const MAX_LINE: usize = 64 * 1024;
/// A client that stops reading its replies is dropped past this much pending output.
const MAX_PENDING: usize = 1 << 20;

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
}

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    ino: u64,
    conns: Vec<Option<Conn>>,
}

/// What a connection produced: complete lines to answer, or a line refused for its length.
pub enum Input {
    Line(Vec<u8>),
    TooLong,
}

impl ControlSocket {
    /// Binds `path` with mode 0600. A stale socket left by a dead box is replaced; a live one,
    /// or any other kind of file, is an error.
    pub fn bind(path: &Path) -> Result<ControlSocket, String> {
        let shown = path.display();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(format!("control socket {shown}: a file that is not a socket is in the way"));
            }
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(format!("control socket {shown} is in use by a running process")),
                Err(_) => std::fs::remove_file(path)
                    .map_err(|e| format!("control socket {shown}: cannot remove the stale socket: {e}"))?,
            }
        }
        // umask is process-wide; proc_box is still single-threaded here.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| format!("control socket {shown}: {e}"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("control socket {shown}: {e}"))?;
        let ino = std::fs::metadata(path).map(|m| m.ino()).unwrap_or(0);
        Ok(ControlSocket {
            listener,
            path: path.to_owned(),
            ino,
            conns: (0..MAX_CONNS).map(|_| None).collect(),
        })
    }

    pub fn register(&mut self, registry: &Registry) -> io::Result<()> {
        registry.register(&mut self.listener, LISTENER, Interest::READABLE)
    }

    pub fn owns(token: Token) -> bool {
        token == LISTENER || (FIRST_CONN..FIRST_CONN + MAX_CONNS).contains(&token.0)
    }

    /// Handles readiness on one of our tokens; returns the input to answer, in order.
    pub fn ready(&mut self, token: Token, registry: &Registry) -> Vec<(Token, Input)> {
        if token == LISTENER {
            self.accept(registry);
            return Vec::new();
        }
        let slot = token.0 - FIRST_CONN;
        let Some(conn) = self.conns[slot].as_mut() else {
            return Vec::new();
        };
        let mut input = Vec::new();
        let mut buf = [0u8; 4096];
        let mut failed = false;
        while !conn.eof && conn.out.len() < MAX_PENDING {
            match conn.stream.read(&mut buf) {
                Ok(0) => conn.eof = true,
                Ok(n) => conn.take(&buf[..n], &mut |i| input.push((token, i))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if conn.eof && !conn.discarding && !conn.inbuf.is_empty() {
            // A last command without a newline still counts.
            let line = std::mem::take(&mut conn.inbuf);
            if !line.trim_ascii().is_empty() {
                input.push((token, Input::Line(line)));
            }
        }
        conn.unanswered += input.len();
        if failed {
            self.close(slot, registry);
        } else {
            self.flush(slot, registry);
        }
        input
    }

    /// Queues a reply line on a connection and writes what the peer will take now.
    pub fn reply(&mut self, token: Token, line: &str, registry: &Registry) {
        let slot = token.0 - FIRST_CONN;
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.out.extend_from_slice(line.as_bytes());
            conn.unanswered = conn.unanswered.saturating_sub(1);
            self.flush(slot, registry);
        }
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let Some(slot) = self.conns.iter().position(Option::is_none) else {
                        crate::warn!("control socket: more than {MAX_CONNS} clients; closing the newest");
                        continue;
                    };
                    let token = Token(FIRST_CONN + slot);
                    if registry.register(&mut stream, token, Interest::READABLE).is_ok() {
                        self.conns[slot] = Some(Conn {
                            stream,
                            inbuf: Vec::new(),
                            out: Vec::new(),
                            discarding: false,
                            eof: false,
                            unanswered: 0,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::warn!("control socket: accept failed: {e}");
                    return;
                }
            }
        }
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
        let _ = registry.reregister(&mut conn.stream, Token(FIRST_CONN + slot), interest);
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(mut conn) = self.conns[slot].take() {
            let _ = registry.deregister(&mut conn.stream);
        }
    }
}

impl Conn {
    /// Splits incoming bytes into lines, enforcing [`MAX_LINE`].
    fn take(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(Input)) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if self.discarding {
                self.discarding = false;
            } else if self.inbuf.len() + nl > MAX_LINE {
                emit(Input::TooLong);
            } else {
                self.inbuf.extend_from_slice(&bytes[..nl]);
                let line = std::mem::take(&mut self.inbuf);
                if !line.trim_ascii().is_empty() {
                    emit(Input::Line(line));
                }
            }
            self.inbuf.clear();
            bytes = &bytes[nl + 1..];
        }
        if self.discarding {
            return;
        }
        self.inbuf.extend_from_slice(bytes);
        if self.inbuf.len() > MAX_LINE {
            emit(Input::TooLong);
            self.inbuf.clear();
            self.discarding = true;
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
