//! The runner: dispatching tasks to pools and watching them.
//!
//! ```text
//!                   RunEvent (mpsc)              Input, now (handle)
//!  executor ──┐                      ┌────────────┐ ─────────────▶ ┌──────────────┐
//!  executor ──┼────────────────────▶ │ dispatcher │                │ fleet: tasks │
//!  executor ──┘                      │  select!   │ ◀───────────── │ + every rule │
//!       ▲  StopLevel (watch)         └─┬───┬───┬──┘  Step: effects └──────────────┘
//!       └──────────────────────────────┘   │   │            (sync: no I/O, no tokio)
//!  JoinSet<Input>: dependency start, ◀─────┘   ├─▶ reporters (terminal, events.jsonl)
//!    retry plan (git, logs), conflict       └─▶ state.journal (one batch per wake-up)
//!    prediction, footprint check, early
//!    redo, upkeep ── Input ──▶ loop
//!  judge (best of N): validation off the loop,
//!    then the judge agent via the executor ── Input ──▶ loop
//!
//!  each executor: prepare worktree → set it up (setup.rs) → spawn agent on its backend → stream
//!  output to .flocks/logs/<task>/<n>.log (not through the dispatcher) →
//!  enforce timeout/stall/stop → commit leftovers → classify → Finished.
//! ```
//!
//! The fleet ([`fleet::Fleet`]) owns the run: the task lines and their
//! records, indexed by id, pools, credentials, the stop level. It is fed what
//! happened as one [`fleet::Input`] at a time (an executor's event, a job's
//! result, a signal, the loop's turn) with the time, through
//! `Fleet::handle`, which hands each to the rule file that owns it, and
//! answers with [`fleet::Effect`]s: emit an event, spawn an executor,
//! build a dependency start, plan a retry, predict land conflicts, check a
//! success against its footprint, prepare an early redo, stop agents. The git work of these runs off the loop in
//! one `JoinSet<Input>`: each job maps its own result and panic into the
//! input it comes back as. Its rules are unit tested without a process.
//!
//! The dispatcher is one `tokio::select!` loop over executor events, finished
//! dependency starts, signals (Ctrl-C drains, stops, kills; SIGTERM from
//! `flocks stop` stops), wake-ups (stagger, parked credentials, back-off) and
//! a one-second tick. It carries out the fleet's effects in order and, once
//! per wake-up when the fleet says it changed, appends the changed records to
//! `.flocks/state.journal` (one fsync); attempts started in that wake-up are
//! spawned only after it, so an attempt never acts before its start is on
//! disk. The run's end compacts the journal into state.json.

pub(crate) mod credentials;
pub(crate) mod dispatcher;
pub(crate) mod executor;
pub(crate) mod fleet;
pub(crate) mod include_cache;
pub(crate) mod judge;
pub(crate) mod predict;
pub(crate) mod reconcile;
pub(crate) mod setup;
pub(crate) mod sink;
pub(crate) mod start_from;
pub(crate) mod upkeep;
// The one stop-escalation loop lives below land/ (validation uses it too).
use crate::watch;

use std::path::PathBuf;

use crate::state::{Outcome, ResultInfo};

pub(crate) use dispatcher::{Dispatcher, RunOptions};

pub(crate) use crate::watch::StopLevel;

/// What executors tell the dispatcher.
#[derive(Debug)]
pub(crate) enum RunEvent {
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
    /// The attempt's job in its pool's scheduler changed (Slurm).
    Job {
        task: String,
        attempt: u32,
        job: crate::state::Job,
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
pub(crate) struct AttemptReport {
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
    /// Its run time: from when its pool's scheduler ran it (at once,
    /// without one) to its end.
    pub duration_secs: f64,
    /// How long it waited for its pool's scheduler (Slurm pools).
    pub pending_secs: Option<f64>,
    /// Its job, as it ended (Slurm pools).
    pub job: Option<crate::state::Job>,
    /// Where its time went (None: its agent never ran).
    pub phases: Option<crate::report::event::Phases>,
}

impl AttemptReport {
    /// An attempt that ended with `outcome` after `duration_secs` (and
    /// `pending_secs` in its scheduler's queue), nothing else known yet.
    pub(crate) fn new(
        outcome: Outcome,
        duration_secs: f64,
        pending_secs: Option<f64>,
    ) -> AttemptReport {
        AttemptReport {
            outcome,
            exit_code: None,
            result: None,
            session_id: None,
            start_commit: None,
            end_tip: None,
            leftovers_committed: false,
            new_commits: 0,
            no_conversation: false,
            duration_secs,
            pending_secs,
            job: None,
            phases: None,
        }
    }
}
