//! The command line, with the Go-style rewrite in front of clap: any argument list either
//! parses or is a usage error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    let mut args = vec![OsString::from("proc_box")];
    args.extend(data.split(|&b| b == 0).take(16).map(|a| OsString::from_vec(a.to_vec())));
    if let Ok(c) = proc_box::config::Config::parse_args(args) {
        assert!(!c.command.is_empty());
        let _ = c.token();
    }
});
