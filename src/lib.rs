//! flocks: run a fleet of headless Claude Code agents in parallel on one git
//! repository, each task in its own worktree and branch.
//!
//! `main.rs` parses the command line and calls [`commands::dispatch`]; all
//! the work lives in this library so that tests and benchmarks can drive it.

// `print!`/`println!` panic on a closed pipe: standard output goes through
// `out!`/`outln!` (src/output), and clippy (-D warnings in CI) holds the line.
#![warn(clippy::print_stdout)]
// Only what main, tests and benches use is `pub`; the rest says `pub(crate)`.
#![warn(unreachable_pub)]

pub(crate) mod agent;
pub(crate) mod backend;
pub(crate) mod cgroup;
pub(crate) mod cli;
pub mod commands;
pub mod config;
pub(crate) mod disk;
pub mod error;
pub(crate) mod fsat;
pub(crate) mod git;
pub(crate) mod guard;
pub(crate) mod hash;
pub mod help;
pub mod land;
pub(crate) mod logview;
pub(crate) mod malloc;
pub(crate) mod notify;
pub(crate) mod output;
pub(crate) mod par;
pub mod paths;
pub(crate) mod proc;
pub mod project;
pub(crate) mod prompt;
pub mod proxy;
pub(crate) mod report;
pub(crate) mod retry;
pub(crate) mod runner;
#[cfg(test)]
mod schema;
pub(crate) mod service;
pub mod state;
pub(crate) mod suggest;
pub mod supervisor;
pub(crate) mod tasks;
pub(crate) mod trust;
pub(crate) mod tui;
pub(crate) mod typo;
pub(crate) mod view;
pub(crate) mod watch;
pub(crate) mod web;
