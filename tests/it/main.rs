//! The integration tests: one binary, so that lapin, rustls and the rest are linked once.
//! Each module runs the real binaries against real processes, brokers and databases.

#[macro_use]
mod common;

mod accounting;
mod amqp;
mod auth;
mod broker_restart;
mod browser;
mod cgroup;
mod cli;
mod control;
mod escape;
mod hardening;
mod ledger;
mod ledger_samples;
mod limits;
mod plot;
mod ptrace;
mod report_html;
mod signals;
mod terminal;
