//! A minimal AMQP 0-9-1 client written frame by frame over TCP, for what a library client
//! cannot send or must not parse: a content header of any size and nesting. It recurses
//! nowhere, so a frame that would overflow a parser's stack costs it nothing.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const FRAME_END: u8 = 0xCE;
const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;

/// One frame as read: type, channel, payload.
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub payload: Vec<u8>,
}

impl Frame {
    /// (class, method) of a method frame.
    pub fn method(&self) -> Option<(u16, u16)> {
        (self.kind == METHOD && self.payload.len() >= 4).then(|| {
            (
                u16::from_be_bytes([self.payload[0], self.payload[1]]),
                u16::from_be_bytes([self.payload[2], self.payload[3]]),
            )
        })
    }
}

/// What the broker did with a published message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Confirmed, and routed to at least one queue.
    Routed,
    /// Confirmed, but no queue was bound to the key (basic.return).
    Unroutable,
    Nacked,
    /// The broker closed the channel or the connection: its code and text.
    Closed(u16, String),
}

pub struct Raw {
    stream: TcpStream,
    /// The frame size both sides agreed on.
    pub frame_max: u32,
}

fn shortstr(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

fn longstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + args.len());
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(args);
    p
}

impl Raw {
    /// Logs in as guest on vhost `/` of 127.0.0.1:5672, asking for `frame_max` (the broker
    /// may lower it), and opens channel 1 in confirm mode.
    pub fn connect(frame_max: u32) -> std::io::Result<Raw> {
        Raw::connect_as("guest", "guest", frame_max)
    }

    /// The same as another broker user.
    pub fn connect_as(user: &str, password: &str, frame_max: u32) -> std::io::Result<Raw> {
        let stream = TcpStream::connect("127.0.0.1:5672")?;
        stream.set_read_timeout(Some(super::DEADLINE))?;
        stream.set_write_timeout(Some(super::DEADLINE))?;
        let mut raw = Raw { stream, frame_max };
        raw.stream.write_all(b"AMQP\x00\x00\x09\x01")?;
        raw.expect(0, (10, 10))?; // connection.start
        let mut a = Vec::new();
        a.extend_from_slice(&0u32.to_be_bytes()); // client-properties: empty table
        shortstr(&mut a, "PLAIN");
        longstr(&mut a, format!("\0{user}\0{password}").as_bytes());
        shortstr(&mut a, "en_US");
        raw.send(METHOD, 0, &method(10, 11, &a))?;
        let tune = raw.expect(0, (10, 30))?;
        let channel_max = u16::from_be_bytes([tune.payload[4], tune.payload[5]]);
        let theirs = u32::from_be_bytes([tune.payload[6], tune.payload[7], tune.payload[8], tune.payload[9]]);
        if theirs != 0 && theirs < raw.frame_max {
            raw.frame_max = theirs;
        }
        let mut a = Vec::new();
        a.extend_from_slice(&channel_max.to_be_bytes());
        a.extend_from_slice(&raw.frame_max.to_be_bytes());
        a.extend_from_slice(&0u16.to_be_bytes()); // no heartbeat
        raw.send(METHOD, 0, &method(10, 31, &a))?;
        let mut a = Vec::new();
        shortstr(&mut a, "/");
        shortstr(&mut a, "");
        a.push(0);
        raw.send(METHOD, 0, &method(10, 40, &a))?;
        raw.expect(0, (10, 41))?;
        raw.send(METHOD, 1, &method(20, 10, &[0]))?;
        raw.expect(1, (20, 11))?;
        raw.send(METHOD, 1, &method(85, 10, &[0]))?;
        raw.expect(1, (85, 11))?;
        Ok(raw)
    }

    fn send(&mut self, kind: u8, channel: u16, payload: &[u8]) -> std::io::Result<()> {
        let mut f = Vec::with_capacity(payload.len() + 8);
        f.push(kind);
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(FRAME_END);
        self.stream.write_all(&f)
    }

    pub fn read(&mut self) -> std::io::Result<Frame> {
        let mut head = [0u8; 7];
        self.stream.read_exact(&mut head)?;
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        self.stream.read_exact(&mut payload)?;
        if payload.pop() != Some(FRAME_END) {
            return Err(std::io::Error::other("bad frame end"));
        }
        Ok(Frame { kind: head[0], channel: u16::from_be_bytes([head[1], head[2]]), payload })
    }

    /// Reads until method `want` arrives on `channel`; a close on the way is an error.
    fn expect(&mut self, channel: u16, want: (u16, u16)) -> std::io::Result<Frame> {
        loop {
            let f = self.read()?;
            match f.method() {
                Some(m) if m == want && f.channel == channel => return Ok(f),
                Some((10, 50)) | Some((20, 40)) => {
                    return Err(std::io::Error::other(format!("closed by the broker: {}", close_text(&f))))
                }
                _ => {}
            }
        }
    }

    /// Publishes a message whose content header carries `properties` (flags and property list,
    /// already encoded), mandatory, and waits for the broker's verdict.
    pub fn publish(
        &mut self,
        exchange: &str,
        key: &str,
        properties: &[u8],
        body: &[u8],
    ) -> std::io::Result<Outcome> {
        let mut a = Vec::new();
        a.extend_from_slice(&0u16.to_be_bytes());
        shortstr(&mut a, exchange);
        shortstr(&mut a, key);
        a.push(1); // mandatory
        self.send(METHOD, 1, &method(60, 40, &a))?;
        let mut h = Vec::with_capacity(12 + properties.len());
        h.extend_from_slice(&60u16.to_be_bytes());
        h.extend_from_slice(&0u16.to_be_bytes());
        h.extend_from_slice(&(body.len() as u64).to_be_bytes());
        h.extend_from_slice(properties);
        self.send(HEADER, 1, &h)?;
        let chunk = (self.frame_max as usize).saturating_sub(8).max(1);
        for part in body.chunks(chunk) {
            self.send(BODY, 1, part)?;
        }
        let mut returned = false;
        loop {
            let f = self.read()?;
            match f.method() {
                Some((60, 50)) => returned = true,
                Some((60, 80)) => return Ok(if returned { Outcome::Unroutable } else { Outcome::Routed }),
                Some((60, 120)) => return Ok(Outcome::Nacked),
                Some((10, 50)) | Some((20, 40)) => {
                    let code = u16::from_be_bytes([f.payload[4], f.payload[5]]);
                    return Ok(Outcome::Closed(code, close_text(&f)));
                }
                _ => {}
            }
        }
    }

    /// Declares an exclusive server-named queue bound to `key` on `exchange`; returns its name.
    pub fn bound_queue(&mut self, exchange: &str, key: &str) -> std::io::Result<String> {
        let mut a = Vec::new();
        a.extend_from_slice(&0u16.to_be_bytes());
        shortstr(&mut a, "");
        a.push(0b1100); // exclusive, auto-delete
        a.extend_from_slice(&0u32.to_be_bytes());
        self.send(METHOD, 1, &method(50, 10, &a))?;
        let ok = self.expect(1, (50, 11))?;
        let len = ok.payload[4] as usize;
        let name = String::from_utf8_lossy(&ok.payload[5..5 + len]).into_owned();
        let mut a = Vec::new();
        a.extend_from_slice(&0u16.to_be_bytes());
        shortstr(&mut a, &name);
        shortstr(&mut a, exchange);
        shortstr(&mut a, key);
        a.push(0);
        a.extend_from_slice(&0u32.to_be_bytes());
        self.send(METHOD, 1, &method(50, 20, &a))?;
        self.expect(1, (50, 21))?;
        Ok(name)
    }

    /// basic.get from `queue`: the raw content header frame's payload of the next message, or
    /// None if the queue is empty.
    pub fn get_header(&mut self, queue: &str) -> std::io::Result<Option<Vec<u8>>> {
        let mut a = Vec::new();
        a.extend_from_slice(&0u16.to_be_bytes());
        shortstr(&mut a, queue);
        a.push(1); // no-ack
        self.send(METHOD, 1, &method(60, 70, &a))?;
        loop {
            let f = self.read()?;
            match f.method() {
                Some((60, 72)) => return Ok(None),
                Some((60, 71)) => {
                    let h = self.read()?;
                    let size = u64::from_be_bytes(h.payload[4..12].try_into().unwrap_or_default());
                    let mut got = 0u64;
                    while got < size {
                        got += self.read()?.payload.len() as u64;
                    }
                    return Ok(Some(h.payload));
                }
                Some((10, 50)) | Some((20, 40)) => {
                    return Err(std::io::Error::other(format!("closed by the broker: {}", close_text(&f))))
                }
                _ => {}
            }
        }
    }

    pub fn set_read_timeout(&self, d: Duration) {
        let _ = self.stream.set_read_timeout(Some(d));
    }
}

/// The reply text of a connection.close or channel.close.
fn close_text(f: &Frame) -> String {
    let len = f.payload.get(6).copied().unwrap_or(0) as usize;
    let code = f.payload.get(4..6).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    format!("{code} {}", String::from_utf8_lossy(f.payload.get(7..7 + len).unwrap_or_default()))
}

/// The content header properties (flags, then the list) of a message whose only property is
/// a `headers` table nested as deep as `size` bytes allow: arrays in arrays, the cheapest
/// nesting on the wire (5 bytes a level: type `A` and a 4-byte length), under one entry with an
/// empty name. With `tables`, tables in tables instead (6 bytes a level: an empty name, `F`
/// and a length). Returns the properties and the nesting depth.
pub fn deep_headers(size: usize, tables: bool) -> (Vec<u8>, usize) {
    // flags (2) + the headers table's length (4) + its one entry's empty name (1)
    let fixed = 2 + 4 + 1;
    let per = if tables { 6 } else { 5 };
    // The entry's value is the first level; each level is `per` bytes, the name included for
    // tables (the top entry's name is counted in `fixed`, so the first level costs one less).
    let depth = if tables { (size - fixed + 1) / per } else { (size - fixed) / per };
    let mut props = Vec::with_capacity(size);
    props.extend_from_slice(&0x2000u16.to_be_bytes()); // only `headers`
    props.extend_from_slice(&((per * depth - usize::from(tables) + 1) as u32).to_be_bytes());
    props.push(0); // the top entry's empty name
    for level in 0..depth {
        if tables && level > 0 {
            props.push(0); // this entry's empty name in the enclosing table
        }
        props.push(if tables { b'F' } else { b'A' });
        props.extend_from_slice(&((per * (depth - 1 - level)) as u32).to_be_bytes());
    }
    (props, depth)
}

/// Adds a `correlation-id` to properties made by [`deep_headers`] (it follows `headers` on
/// the wire, and nothing else is set).
pub fn with_correlation(mut props: Vec<u8>, corr: &str) -> Vec<u8> {
    props[0] |= 0x04;
    shortstr(&mut props, corr);
    props
}

/// The `correlation-id` and `reply-to` of a content header's payload (as `get_header` returns).
pub fn reply_address(header: &[u8]) -> (Option<String>, Option<String>) {
    let flags = u16::from_be_bytes([header[12], header[13]]);
    let mut at = 14;
    let short = |at: &mut usize| {
        let len = header[*at] as usize;
        let s = String::from_utf8_lossy(&header[*at + 1..*at + 1 + len]).into_owned();
        *at += 1 + len;
        s
    };
    let (mut corr, mut reply_to) = (None, None);
    for bit in (9..16).rev() {
        if flags & (1 << bit) == 0 {
            continue;
        }
        match bit {
            15 | 14 => drop(short(&mut at)),
            13 => {
                let len = u32::from_be_bytes(header[at..at + 4].try_into().unwrap()) as usize;
                at += 4 + len;
            }
            12 | 11 => at += 1,
            10 => corr = Some(short(&mut at)),
            _ => reply_to = Some(short(&mut at)),
        }
    }
    (corr, reply_to)
}
