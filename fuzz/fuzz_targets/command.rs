//! Control commands come from anyone who can reach the socket or the broker: parsing any bytes
//! must never panic, and a refusal always has a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let (_, Err(r)) = proc_box::command::parse_with_token(data) {
        assert!(!r.reason.is_empty());
    }
});
