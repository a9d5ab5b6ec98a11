//! proc_box's whole argv, as main reads it (the cgroup watcher's re-exec included), through
//! the Go-style rewrite and clap: any list of byte strings either parses or is a usage error,
//! never a panic. `config::tests::random_byte_argvs_never_panic` runs the same on stable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proc_box::config::Invocation;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

fuzz_target!(|data: &[u8]| {
    let mut args = vec![OsString::from("proc_box")];
    args.extend(data.split(|&b| b == 0).take(16).map(|a| OsString::from_vec(a.to_vec())));
    match Invocation::from_args(args) {
        Invocation::Box(Ok(c)) => {
            assert!(!c.command.is_empty());
            let _ = c.token();
        }
        Invocation::Box(Err(_)) | Invocation::CgroupWatcher(_) => {}
    }
});
