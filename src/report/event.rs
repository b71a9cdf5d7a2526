//! Public events: what the dispatcher tells reporters (terminal output,
//! events.jsonl). Reporters only display; they never touch state.
//!
//! # The events.jsonl shape
//!
//! `.flocks/events.jsonl` holds one JSON object per line, appended as the
//! state changes. Every line has `event` (the kind, below) and `ts` (RFC 3339,
//! UTC, milliseconds). Fields are only ever added; readers must ignore fields
//! and event kinds they do not know. `activity` events are not written (they
//! are frequent and not state changes). Several runs append to the same file;
//! `run_started` opens each.
//!
//! | event | fields |
//! |---|---|
//! | `run_started` | `run_id`, `tasks` (in the task file), `pending` (to run now), `pools`: [{`name`, `backend`, `slots`}] |
//! | `notice` | `message`: something for people to read |
//! | `queued` | `task`: waits for a slot (one per pending task at run start) |
//! | `started` | `task`, `attempt` (1-based), `pool`, `worktree`, `credential` (name or null), `resumed` (bool: resumes the last session) |
//! | `stalled` | `task`, `attempt`, `quiet_secs`: no output that long; the agent is being stopped, `finished` follows |
//! | `finished` | `task`, `attempt`, `outcome` ({`kind`, ...} as in state.json), `duration_secs`, `cost_usd`, `turns`, `commits` (new on the branch) |
//! | `requeued` | `task`, `reason`: back in the queue (retry, limit, overload) |
//! | `blocked` | `task`, `on`: the dependencies that did not succeed |
//! | `credential_parked` | `credential`, `until` (RFC 3339), `reason` |
//! | `credential_disabled` | `credential`, `reason` |
//! | `waiting` | `until`: every usable credential is parked; dispatch resumes then |
//! | `variant_judged` | `task`, `winner` (k, or null: no variant survived), `by` (`ranking`, `judge` or `pick`), `reason`, `ranking`: [{`variant`, `outcome` (`winner`, `passed`, `failed_validation`, `failed`), `reason`, `lines` (added + removed), `cost_usd`}], winner first; `notice` when a judge's answer could not be used |
//! | `landed` | `task`, `commits`, `target` (written by `flocks land`) |
//! | `run_finished` | `succeeded`, `failed`, `blocked`, `pending`, `cost_usd` (this run), `interrupted` |
//!
//! `outcome.kind` is one of `success`, `failed` (+`reason`), `timed_out`,
//! `stalled`, `interrupted`, `spawn_failed` (+`reason`), `rate_limited`
//! (+`credential`, `resets_at`), `overloaded`, `credential_rejected`
//! (+`credential`, `reason`), `host_lost` (+`reason`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{JudgedBy, Outcome, Verdict};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// The executor saw no output for `stall_timeout_secs` and is stopping
    /// the agent; a `finished` event with outcome `stalled` follows.
    Stalled {
        task: String,
        attempt: u32,
        quiet_secs: f64,
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
    /// Every usable credential is parked and nothing runs: dispatch resumes
    /// at `until` (unless the run was started with `--no-wait`).
    Waiting {
        until: DateTime<Utc>,
    },
    /// A best-of task's variants were judged (by the run, or by `flocks pick`).
    VariantJudged {
        task: String,
        winner: Option<u32>,
        by: JudgedBy,
        reason: String,
        ranking: Vec<Verdict>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        notice: Option<String>,
    },
    /// `flocks land` applied a task's work onto the target branch.
    Landed {
        task: String,
        commits: usize,
        target: String,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolInfo {
    pub name: String,
    pub backend: String,
    pub slots: usize,
}
