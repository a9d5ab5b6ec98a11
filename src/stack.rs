//! Thread stacks big enough for the deepest AMQP header a broker can deliver.
//!
//! AMQP field tables nest, and the client library parses (and later drops) them recursively,
//! on threads it spawns itself with std's default stack size. A header that nests a few
//! thousand tables overflows a 2 MiB stack, and a stack overflow kills the whole process. The
//! nesting is bounded by the frame that carries it, and the frame by the library's receive
//! buffer, so a stack sized for that buffer cannot overflow, whatever arrives.
//!
//! The bound, step by step:
//! * Each nesting level costs at least 5 bytes on the wire: a field array in an array is its
//!   type byte `A` and a 4-byte length; a table in a table costs 6 (an empty name's length
//!   byte, `F`, a 4-byte length). Nothing else in a frame recurses.
//! * lapin parses a frame only once all of it sits in its receive buffer, 32 frames of
//!   `frame_max` (at least 4 KiB). The broker does not hold a content header to the consumer's
//!   `frame_max`: RabbitMQ forwards a header as large as the publisher's, up to its own limit
//!   (128 KiB by default). So the buffer, not the negotiated frame size, bounds the frame: with
//!   the 4 KiB frames proc_box always asks for, [`WORST_FRAME`] is 128 KiB.
//! * The stack a frame needs is at most its size times the worst stack bytes per wire byte,
//!   measured for parsing and for dropping, tables and arrays, in this build's profile
//!   ([`PER_BYTE`]), plus what the thread uses before the parse. [`AMQP`] adds half again.

/// Frame size asked of the broker, AMQP's minimum; larger messages are split. It also sizes
/// lapin's receive buffer (32 frames), which bounds the largest frame it can parse and so the
/// stack that parsing needs: a URI's own `frame_max` is overridden (`transport::amqp::link`).
pub const FRAME_MAX: u32 = 4 * 1024;

/// Frames lapin's receive buffer holds (its `FRAMES_STORAGE`): the largest frame it can ever
/// parse is this many `frame_max`.
pub const LAPIN_FRAMES: usize = 32;

/// The largest frame the AMQP client can parse.
pub const WORST_FRAME: usize = LAPIN_FRAMES * FRAME_MAX as usize;

/// Stack bytes per wire byte of a maximally nested header, the worst of parse and drop over
/// tables and arrays, in lapin's own I/O thread. Measured in proc_box on a 128 KiB frame:
/// debug 2,300 (arrays; tables 2,140), release 174 (tables; arrays 120), rounded up here. A
/// drop needs a tenth of that or less (debug 138, release 13), a clone or `{:?}` under a third
/// (neither is done on broker data). Unoptimized code keeps every intermediate on the stack,
/// hence the tenfold difference.
pub const PER_BYTE: usize = if cfg!(debug_assertions) { 2_300 } else { 250 };

/// What a thread may already use when the parse starts, and the margin on top.
const BASE: usize = 1 << 20;

/// The stack for every thread that parses or drops what the broker sent: about 450 MiB of
/// address space in a debug build, 48 MiB in a release one. Only the pages a frame really
/// reaches are ever touched.
pub const AMQP: usize = WORST_FRAME * PER_BYTE / 2 * 3 + BASE;

// RabbitMQ's default frame_max: the largest header it forwards fits the buffer, just.
const _: () = assert!(WORST_FRAME == 128 * 1024);

/// proc_box's own threads that never hold broker data keep std's usual stack.
pub const PLAIN: usize = 2 << 20;

/// Makes [`AMQP`] the default stack of every thread spawned from now on (lapin's I/O thread
/// and the executor's among them: their size is not ours to pass), unless `RUST_MIN_STACK`
/// already asks for more. Call in `main` while the process has one thread, and before
/// anything spawns a thread without a size.
///
/// std reads `RUST_MIN_STACK` once, at the first spawn without an explicit size, and keeps
/// it. So: set it, spawn one thread that does nothing, and restore the environment exactly as
/// it was, so that the job never inherits the change.
pub fn raise_default() {
    const VAR: &str = "RUST_MIN_STACK";
    let before = std::env::var_os(VAR);
    let theirs = before.as_ref().and_then(|v| v.to_str()).and_then(|v| v.trim().parse::<usize>().ok());
    if theirs.is_some_and(|n| n >= AMQP) {
        return;
    }
    // Sound only while no other thread reads the environment: proc_box has one thread here.
    std::env::set_var(VAR, AMQP.to_string());
    let probe = std::thread::Builder::new().spawn(|| {
        // A signal must not land on this thread before proc_box decides where signals go.
        let _ = nix::sys::signal::SigSet::all().thread_block();
    });
    if let Ok(t) = probe {
        let _ = t.join();
    }
    match before {
        Some(v) => std::env::set_var(VAR, v),
        None => std::env::remove_var(VAR),
    }
}

/// Starts the executor lapin runs on with one thread: each costs [`AMQP`] of address space,
/// and the work (one connection) needs no more. `ASYNC_GLOBAL_EXECUTOR_THREADS` still wins.
pub fn one_executor_thread() {
    async_global_executor::init_with_config(
        async_global_executor::GlobalExecutorConfig::default().with_min_threads(1),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::frame::{parse_frame, AMQPFrame};

    /// A content header frame of `size` bytes whose only property is a `headers` table nested
    /// as deep as the frame allows: arrays in arrays, or tables in tables.
    fn deepest_header(size: usize, tables: bool) -> Vec<u8> {
        let per = if tables { 6 } else { 5 };
        // frame head 7 + class, weight, body size 12 + flags 2 + table length 4 + top name 1
        // + frame end 1
        let fixed = 7 + 12 + 2 + 4 + 1 + 1;
        let depth = (size - fixed + usize::from(tables)) / per;
        let table_len = per * depth - usize::from(tables) + 1;
        let mut props = Vec::with_capacity(size);
        props.extend_from_slice(&0x2000u16.to_be_bytes());
        props.extend_from_slice(&(table_len as u32).to_be_bytes());
        props.push(0);
        for level in 0..depth {
            if tables && level > 0 {
                props.push(0);
            }
            props.push(if tables { b'F' } else { b'A' });
            props.extend_from_slice(&((per * (depth - 1 - level)) as u32).to_be_bytes());
        }
        let payload_len = 12 + props.len();
        let mut f = vec![2u8, 0, 1];
        f.extend_from_slice(&(payload_len as u32).to_be_bytes());
        f.extend_from_slice(&60u16.to_be_bytes());
        f.extend_from_slice(&[0; 10]);
        f.extend_from_slice(&props);
        f.push(0xCE);
        assert!(f.len() <= size && f.len() + per > size, "{} for {size}", f.len());
        f
    }

    /// The worst frame, parsed and dropped by the client library's own parser on a thread with
    /// exactly the stack proc_box gives such threads (in the profile the tests are built in).
    #[test]
    fn the_deepest_frame_fits_the_stack() {
        for tables in [false, true] {
            let frame = deepest_header(WORST_FRAME, tables);
            let t = std::thread::Builder::new().stack_size(AMQP).spawn(move || {
                let (rest, parsed) = parse_frame(&frame[..]).map_err(|e| e.to_string())?;
                let AMQPFrame::Header(_, header) = parsed else { return Err("not a header".to_string()) };
                let nested = header.properties.headers().as_ref().map_or(0, |h| h.inner().len());
                drop(header);
                Ok((rest.len(), nested))
            });
            assert_eq!(t.unwrap().join().unwrap(), Ok((0, 1)), "tables: {tables}");
        }
    }
}
