//! Durations and sizes from flags, the environment and commands: never a panic, and never a
//! duration past the cap that keeps every deadline from overflowing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proc_box::units::{parse_duration, parse_size, MAX_DURATION};

fuzz_target!(|text: &str| {
    if let Ok(d) = parse_duration(text) {
        assert!(d <= MAX_DURATION, "{text:?} gave {d:?}");
        let _ = std::time::Instant::now() + d;
    }
    let _ = parse_size(text);
});
