//! flocks: run a fleet of headless Claude Code agents in parallel on one git
//! repository, each task in its own worktree and branch.
//!
//! `main.rs` parses the command line and calls [`commands::dispatch`]; all
//! the work lives in this library so that tests and benchmarks can drive it.

// `print!`/`println!` panic on a closed pipe: standard output goes through
// `out!`/`outln!` (src/output), and clippy (-D warnings in CI) holds the line.
#![warn(clippy::print_stdout)]

pub mod agent;
pub mod backend;
pub mod cgroup;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod git;
pub mod help;
pub mod land;
pub mod logview;
pub mod output;
pub mod proc;
pub mod project;
pub mod prompt;
pub mod report;
pub mod retry;
pub mod runner;
pub(crate) mod service;
pub mod state;
pub mod suggest;
pub mod supervisor;
pub mod tasks;
pub mod tui;
pub(crate) mod view;
