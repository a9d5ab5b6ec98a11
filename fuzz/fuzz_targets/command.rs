//! Control commands come from anyone who can reach the socket or the broker: parsing or
//! authenticating any bytes must never panic, and a refusal always has a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proc_box::auth::{self, Guard, Key, Via};
use std::time::{Instant, SystemTime};

fuzz_target!(|data: &[u8]| {
    if let Err(r) = proc_box::command::parse(data) {
        assert!(!r.error.to_string().is_empty());
    }
    let mut guard = Guard::new(Key::new(b"key"), "box", &["rc".into()]);
    if let Err(r) = guard.open(data, Via::Broker, SystemTime::now(), Instant::now()) {
        assert!(!r.reason.to_string().is_empty());
    }
    let _ = auth::open_reply(&Key::new(b"key"), data, "0123456789abcdef");
});
