//! Public events: what the dispatcher tells reporters (terminal output,
//! events.jsonl). Reporters only display; they never touch state.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::state::Outcome;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        tasks: usize,
        pending: usize,
        pools: Vec<PoolInfo>,
    },
    /// Something the user should read (drain, reconcile, prompt changes...).
    Notice {
        message: String,
    },
    Queued {
        task: String,
    },
    Started {
        task: String,
        attempt: u32,
        pool: String,
        worktree: String,
        credential: Option<String>,
        resumed: bool,
    },
    /// The agent's current activity (last tool call).
    Activity {
        task: String,
        attempt: u32,
        activity: String,
    },
    Finished {
        task: String,
        attempt: u32,
        outcome: Outcome,
        duration_secs: f64,
        cost_usd: f64,
        turns: u64,
        commits: usize,
    },
    /// The task goes back to the queue (limit, overload, retry).
    Requeued {
        task: String,
        reason: String,
    },
    Blocked {
        task: String,
        on: Vec<String>,
        /// Why, when it is not that a dependency failed (their work conflicts).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    CredentialParked {
        credential: String,
        until: DateTime<Utc>,
        reason: String,
    },
    CredentialDisabled {
        credential: String,
        reason: String,
    },
    RunFinished {
        succeeded: usize,
        failed: usize,
        blocked: usize,
        pending: usize,
        cost_usd: f64,
        interrupted: bool,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolInfo {
    pub name: String,
    pub backend: String,
    pub slots: usize,
}

impl Event {
    pub fn task(&self) -> Option<&str> {
        match self {
            Event::Queued { task }
            | Event::Started { task, .. }
            | Event::Activity { task, .. }
            | Event::Finished { task, .. }
            | Event::Requeued { task, .. }
            | Event::Blocked { task, .. } => Some(task),
            Event::RunStarted { .. }
            | Event::Notice { .. }
            | Event::CredentialParked { .. }
            | Event::CredentialDisabled { .. }
            | Event::RunFinished { .. } => None,
        }
    }
}
