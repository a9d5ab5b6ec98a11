//! A TCP relay of the test's own in front of the broker, to make it fail for one box without
//! touching the shared broker: forward, stall (connections stay open, nothing moves: a slow or
//! black-holed broker), or cut (every connection closed, new ones closed at once: a broker
//! gone). It counts the connections it accepted, so a test sees how often a box connects, and
//! through which of several relays.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const FORWARD: u8 = 0;
const STALL: u8 = 1;
const CUT: u8 = 2;

#[derive(Default)]
struct Shared {
    mode: AtomicU8,
    stop: AtomicBool,
    accepted: AtomicUsize,
    /// Every socket of every connection, to close them on a cut.
    socks: Mutex<Vec<TcpStream>>,
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Relays 127.0.0.1:<a free port> to `upstream` (such as "127.0.0.1:5672"), forwarding.
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let (s, upstream) = (shared.clone(), upstream.to_owned());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                if s.mode.load(Ordering::SeqCst) == CUT {
                    continue; // dropped: closed at once
                }
                let Ok(upstream) = TcpStream::connect(&upstream) else { continue };
                let mut socks = s.socks.lock().unwrap();
                for sock in [&client, &upstream] {
                    socks.push(sock.try_clone().unwrap());
                }
                drop(socks);
                for (from, to) in
                    [(client.try_clone().unwrap(), upstream.try_clone().unwrap()), (upstream, client)]
                {
                    let s = s.clone();
                    std::thread::spawn(move || pump(from, to, &s));
                }
            }
        });
        Proxy { port, shared }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// The test broker's URI, through this relay.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Connections stay open, and nothing more passes either way, until [`Proxy::forward`].
    pub fn stall(&self) {
        self.shared.mode.store(STALL, Ordering::SeqCst);
    }

    /// Closes every connection; new ones are closed at once until [`Proxy::forward`].
    pub fn cut(&self) {
        self.shared.mode.store(CUT, Ordering::SeqCst);
        for s in self.shared.socks.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    pub fn forward(&self) {
        self.shared.mode.store(FORWARD, Ordering::SeqCst);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared) {
    let mut buf = [0u8; 16384];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Stalled: hold what was read until the proxy forwards again or is cut.
        while s.mode.load(Ordering::SeqCst) == STALL && !s.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if s.mode.load(Ordering::SeqCst) == CUT || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wakes the accepting thread so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A black hole: a listener that never accepts, so a connection succeeds (the kernel completes
/// the handshake) and then nothing ever answers.
pub struct BlackHole {
    _listener: TcpListener,
    pub port: u16,
}

impl BlackHole {
    pub fn new() -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        BlackHole { _listener: listener, port }
    }

    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}
