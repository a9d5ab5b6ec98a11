//! proc_box: run a command in a box that holds its whole process tree.
//!
//! Data flows one way: kernel events → [`tracker`] (what the tree is) → [`policy`] (what to do)
//! → actions carried out by the [`event_loop`]; the [`transport`]s feed commands in, through
//! the [`control`] door.

#[macro_use]
pub mod log;
pub mod accounting;
pub mod auth;
pub mod cgroup;
pub mod command;
pub mod config;
pub mod control;
pub mod emitter;
pub mod event_loop;
pub mod fault;
pub mod inherited;
pub mod manual;
pub mod policy;
pub mod relay;
pub mod schedule;
pub mod signals;
pub mod spawn;
pub mod stack;
pub mod sys;
pub mod terminal;
pub mod tokens;
pub mod tracker;
pub mod transport;
pub mod units;
