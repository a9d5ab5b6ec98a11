//! The system layer, below everything else: the `/proc` readers and the system-call wrappers,
//! as nix and rustix do it: each call wrapped once, returning `Errno`-style results and owned
//! descriptors, with any `unsafe` inside the wrapper. The tracker (what the tree is) and
//! accounting (how much it used) both read through here, so neither imports the other's
//! readers, and the module graph has no cycle.
//!
//! Raw `libc` stays outside only where no wrapper fits: between fork and exec (`spawn.rs`,
//! `inherited.rs`, the cgroup watcher and the guard: async-signal-safe, nothing may allocate),
//! in the fault handler (`fault.rs`), and for signal numbers 32–64, which neither rustix's nor
//! nix's signal type may carry (`tracker/ptrace.rs`, `signals.rs`, the signalfd read). The
//! README's "unsafe" section lists every remaining block.

pub mod fd;
pub mod pidfd;
pub mod procfs;
pub mod wait;
