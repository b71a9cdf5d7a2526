//! The runner: dispatching tasks to pools and watching them.
//!
//! ```text
//!                  RunEvent (mpsc)                      Event
//!  executor ──┐                      ┌────────────┐  ┌──────────────┐
//!  executor ──┼────────────────────▶ │ dispatcher │─▶│ reporters    │ terminal,
//!  executor ──┘                      │ owns State │  │ (display only)│ events.jsonl
//!       ▲  StopLevel (watch)         └─────┬──────┘  └──────────────┘
//!       └──────────────────────────────────┤ state.json (atomic, at transitions)
//!                                          ▼
//!  each executor: prepare worktree → spawn agent on its backend → stream
//!  output to .flocks/logs/<task>/<n>.log (not through the dispatcher) →
//!  enforce timeout/stall/stop → commit leftovers → classify → Finished.
//! ```
//!
//! The dispatcher is one `tokio::select!` loop over executor events, signals
//! (Ctrl-C drains, stops, kills; SIGTERM from `flocks stop` stops), wake-ups
//! (stagger, parked credentials, backoff) and a one-second tick.

pub mod credentials;
pub mod dispatcher;
pub mod executor;
pub mod reconcile;
pub mod sink;
pub mod start_from;

use std::path::PathBuf;

use crate::state::{Outcome, ResultInfo};

pub use dispatcher::{Dispatcher, RunOptions};

/// How hard to stop running agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopLevel {
    Run,
    /// SIGTERM, grace, SIGKILL.
    Graceful,
    /// SIGKILL now.
    Kill,
}

/// What executors tell the dispatcher.
#[derive(Debug)]
pub enum RunEvent {
    Started {
        task: String,
        attempt: u32,
        worktree: PathBuf,
        start_commit: String,
        /// The task's origin (the attempt's start when it created or reset the branch).
        origin: String,
        created_branch: bool,
        note: Option<String>,
    },
    Session {
        task: String,
        attempt: u32,
        session_id: String,
    },
    Activity {
        task: String,
        attempt: u32,
        activity: String,
    },
    /// No output for `stall_timeout_secs`: the executor is stopping the agent.
    Stalled {
        task: String,
        attempt: u32,
        quiet_secs: f64,
    },
    Finished {
        task: String,
        attempt: u32,
        report: Box<AttemptReport>,
    },
}

#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub result: Option<ResultInfo>,
    pub session_id: Option<String>,
    pub start_commit: Option<String>,
    pub end_tip: Option<String>,
    pub leftovers_committed: bool,
    /// Commits this attempt added (after leftovers).
    pub new_commits: usize,
    /// The agent said its session does not exist (a `--resume` that failed).
    pub no_conversation: bool,
    pub duration_secs: f64,
}
