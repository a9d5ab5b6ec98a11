//! The system layer, below everything else: the `/proc` readers and the system-call wrappers,
//! as nix and rustix do it: each call wrapped once, returning `Errno`-style results and owned
//! descriptors, with any `unsafe` inside the wrapper. The tracker (what the tree is) and
//! accounting (how much it used) both read through here, so neither imports the other's
//! readers, and the module graph has no cycle.
//!
//! Raw `libc` stays elsewhere only where a safe wrapper cannot be used: between fork and exec
//! (`spawn.rs`, `inherited.rs`, `cgroup::join_in_child`: async-signal-safe, nothing may
//! allocate), in the fault handler (`fault.rs`), and for signal numbers 32–64, which nix's
//! `Signal` cannot hold (`tracker/ptrace.rs`, `tracker/wait.rs`).

pub mod fd;
pub mod pidfd;
pub mod procfs;
pub mod wait;
