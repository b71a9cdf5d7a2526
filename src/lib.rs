//! flocks: run a fleet of headless Claude Code agents in parallel on one git
//! repository, each task in its own worktree and branch.
//!
//! `main.rs` parses the command line and calls [`commands::dispatch`]; all
//! the work lives in this library so that tests and benchmarks can drive it.

pub mod agent;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod git;
pub mod land;
pub mod logview;
pub mod proc;
pub mod project;
pub mod prompt;
pub mod report;
pub mod retry;
pub mod runner;
pub mod state;
pub mod supervisor;
pub mod tasks;
pub mod trust;
pub mod tui;
