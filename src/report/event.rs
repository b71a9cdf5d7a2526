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
//! | `run_started` | `run_id`, `tasks` (in the task file), `pending` (tasks to run now; a best-of task counts once), `pools`: [{`name`, `backend`, `slots`, `isolation` (`clone`, `mount (guarded)`, `bwrap`, `none`, `remote clone`)}], `best_of` and `variants` (of `pending`, the best-of tasks and the variants they run; absent when none) |
//! | `notice` | `message`: something for people to read |
//! | `queued` | `task`: waits for a slot (one per pending task at run start) |
//! | `started` | `task`, `attempt` (1-based), `pool`, `worktree`, `credential` (name or null), `resumed` (bool: resumes the last session) |
//! | `job` | `task`, `attempt`, `pool`, `job`: {`id`, `state`, `reason`, `node`, `started_at`, `elapsed_secs`} as in state.json, `pending_secs`: the attempt's job in its pool's scheduler (Slurm) changed. `state` `PENDING` with its `reason` (`Priority`, `Resources`, `QOSMaxJobsPerUserLimit`, ...; written again when the reason changes), then `RUNNING` with its `node` (`pending_secs`: how long it waited), then how it ended (`COMPLETED`, `CANCELLED`, `NODE_FAIL`, ...) with `elapsed_secs`, its run time (from `sacct` where accounting runs, else from `squeue` and the exit); `finished` follows the last |
//! | `stalled` | `task`, `attempt`, `quiet_secs`: no output that long; the agent is being stopped, `finished` follows |
//! | `finished` | `task`, `attempt`, `outcome` ({`kind`, ...} as in state.json), `duration_secs` (its run time: the time its job waited in a scheduler's queue is `pending_secs` of its `job` events), `cost_usd`, `turns`, `commits` (new on the branch), `phases` (when its agent ran: {`prepare_secs`, `spawn_secs`, `agent_secs`, `finish_secs`}, where its time went; the rest since `started` is the dispatcher's) |
//! | `requeued` | `task`, `reason`: back in the queue (retry, limit, overload) |
//! | `blocked` | `task`, `on`: the dependencies that did not succeed |
//! | `credential_parked` | `credential`, `until` (RFC 3339), `reason` |
//! | `credential_disabled` | `credential`, `reason`, `retired` (true when it reached its `max_cost_usd` for the run; absent otherwise) |
//! | `waiting` | `until`: every usable credential is parked; dispatch resumes then. Or `reason` (no `until`): free disk below `min_free_disk_gb`; dispatch resumes when space comes back |
//! | `conflict_predicted` | `task`, `with` (earlier tasks in landing order whose work changes those files), `with_target` (bool: it conflicts with the land target alone), `files`, `commit` (its commit that will not apply), `target`: when a task succeeds, flocks works out in memory what `land` will build; this task's work will not apply there. Written again when what it clashes with changes |
//! | `variant_judged` | `task`, `winner` (k, or null: no variant survived), `by` (`ranking`, `judge` or `pick`), `reason`, `ranking`: [{`variant`, `outcome` (`winner`, `passed`, `failed_validation`, `failed`), `reason`, `lines` (added + removed), `cost_usd`}], winner first; `notice` when a judge's answer could not be used |
//! | `landed` | `task`, `commits`, `target` (written by `flocks land`) |
//! | `run_finished` | `succeeded`, `failed`, `blocked`, `pending`, `cost_usd` (this run), `interrupted` |
//! | `needs_attention` | `cause`, `message`, `task` or `credential` (when it is about one): something a person has to act on (below) |
//! | `usage` | `task`, `attempt`, `requests`, `input_tokens`, `output_tokens`, `cache_creation_input_tokens`, `cache_read_input_tokens`, `cost_usd`, `unpriced_model` (a model the price table lacks): the attempt's totals so far, as flocks' proxy read them from the API's answers; written at each answer's start and end while it runs (the `finished` event's `cost_usd` is the result's `total_cost_usd` when the agent reports one) |
//! | `egress_denied` | `task`, `attempt`, `host`, `port`: `[network] allow` refused a connection the agent asked flocks' proxy for |
//! | `upkeep` | `packed_refs` (loose refs packed by `git pack-refs --all`; 0: not run), `gc` (bool: `git gc --auto` ran, its threshold `gc.auto` and `gc.autoPackLimit` read from the repository's config), `loose_objects` (git's estimate before, from `objects/17`), `packs` (before), `secs`, and for a remote `mirror.git` `pool` and `host` (an ssh or exe.dev host's; a Slurm pool's on the shared filesystem, `host` the node of the job whose step packed it) (there `gc` is `git repack -a -d -l -k`, which drops nothing): flocks packed the repository in the background while the run went on (agents run with `gc.auto=0`); written only when it did something |
//!
//! `outcome.kind` is one of `success`, `failed` (+`reason`), `timed_out`,
//! `stalled`, `interrupted`, `spawn_failed` (+`reason`), `rate_limited`
//! (+`credential`, `resets_at`), `overloaded`, `credential_rejected`
//! (+`credential`, `reason`), `host_lost` (+`reason`), `setup_failed`
//! (+`command`, `reason`, `output`: its last lines; the agent did not start).
//! (+`credential`, `reason`), `host_lost` (+`reason`).
//!
//! `needs_attention.cause` is one of `task_failed` (a task failed and is not
//! retried again), `credential_disabled`, `credentials_parked` (every usable
//! credential is parked), `egress_denied` (with `[network] notify_denied =
//! true`: the first refusal of each host and port in an attempt), written by
//! the run, and `land_conflict`,
//! `land_culprit` (bisection found it breaks validation) and
//! `land_validation_failed` (validation failed, no culprit was searched),
//! written by `flocks land`. It follows the event it sums up (`finished`,
//! `credential_disabled`, `waiting`), so that `[[notify]]` can ask for just
//! these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{Job, JudgedBy, Outcome, Verdict};

/// Where an attempt's time went, in seconds, as its executor timed it:
/// the rest of the time from its `started` event to its `finished` event is
/// the dispatcher's (recording the start and the end in state, handing the
/// report over).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Phases {
    /// The worktree made ready: branch and checkout, `.worktreeinclude`,
    /// `[workspace] setup`, the proxy's admission.
    pub prepare_secs: f64,
    /// The backend started the agent (its supervisor, on its host).
    pub spawn_secs: f64,
    /// The agent ran, until its exit and its last output.
    pub agent_secs: f64,
    /// Its work taken back: leftovers committed, commits counted, the
    /// worktree released.
    pub finish_secs: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    RunStarted {
        run_id: String,
        tasks: usize,
        /// Tasks to run now (a best-of task once).
        pending: usize,
        pools: Vec<PoolInfo>,
        /// Of `pending`, the best-of tasks, and the variants they run.
        #[serde(default, skip_serializing_if = "is_zero")]
        best_of: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        variants: usize,
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
    /// The attempt's job in its pool's scheduler (Slurm) changed: it is
    /// pending (with its reason), runs (on its node), or ended.
    Job {
        task: String,
        attempt: u32,
        pool: String,
        job: Job,
        /// How long it waited in the queue (once it ran; while it is
        /// pending, how long it has waited so far).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_secs: Option<f64>,
    },
    /// The executor saw no output for `stall_timeout_secs` and is stopping
    /// the agent; a `finished` event with outcome `stalled` follows.
    Stalled {
        task: String,
        attempt: u32,
        quiet_secs: f64,
    },
    /// What the agent does now: its last tool call, or the last line of its
    /// last words (`logview::activity` reads the same from its log).
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
        /// Where the attempt's time went (attempts whose agent ran).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phases: Option<Phases>,
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
        /// It reached its `max_cost_usd` for this run: retired until the
        /// next run, nothing to fix (false: rejected, see `reason`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        retired: bool,
    },
    /// No new agent starts now although tasks are ready. Every usable
    /// credential is parked and nothing runs: dispatch resumes at `until`
    /// (unless the run was started with `--no-wait`). Or the free disk is
    /// below `min_free_disk_gb`: no `until`, `reason` says so, and dispatch
    /// resumes when space comes back (a notice says it).
    Waiting {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A succeeded task's work will not apply where `land` puts it (the
    /// target, then the succeeded tasks before it in landing order).
    ConflictPredicted {
        task: String,
        with: Vec<String>,
        with_target: bool,
        files: Vec<String>,
        commit: String,
        target: String,
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
    /// Something a person has to act on; it follows the event it sums up.
    NeedsAttention {
        cause: AttentionCause,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential: Option<String>,
    },
    /// A running attempt's tokens and cost so far, as flocks' proxy read
    /// them from the API's answers.
    Usage {
        task: String,
        attempt: u32,
        #[serde(flatten)]
        usage: crate::state::Usage,
    },
    /// `[network] allow` refused a connection the agent asked the proxy for.
    EgressDenied {
        task: String,
        attempt: u32,
        host: String,
        port: u16,
    },
    /// flocks packed the repository's refs or objects, in the background
    /// (`git::upkeep`); with `pool` and `host`, a remote host's `mirror.git`
    /// (the helper's `pack` op: `gc` is then a repack that drops nothing).
    Upkeep {
        packed_refs: usize,
        gc: bool,
        loose_objects: usize,
        packs: usize,
        secs: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
}

/// Why a `needs_attention` event was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub(crate) enum AttentionCause {
    /// A task failed and is not retried again.
    TaskFailed,
    CredentialDisabled,
    /// Every usable credential is parked: nothing runs until one resets.
    CredentialsParked,
    LandConflict,
    /// Bisection found that the task breaks validation.
    LandCulprit,
    /// Validation failed and no culprit was searched (`land` without `--bisect`).
    LandValidationFailed,
    /// `[network] allow` refused a connection (with `notify_denied = true`).
    EgressDenied,
}

impl Event {
    /// The kind, as the `event` field spells it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::Notice { .. } => "notice",
            Event::Queued { .. } => "queued",
            Event::Started { .. } => "started",
            Event::Job { .. } => "job",
            Event::Stalled { .. } => "stalled",
            Event::Activity { .. } => "activity",
            Event::Finished { .. } => "finished",
            Event::Requeued { .. } => "requeued",
            Event::Blocked { .. } => "blocked",
            Event::CredentialParked { .. } => "credential_parked",
            Event::CredentialDisabled { .. } => "credential_disabled",
            Event::Waiting { .. } => "waiting",
            Event::ConflictPredicted { .. } => "conflict_predicted",
            Event::VariantJudged { .. } => "variant_judged",
            Event::Landed { .. } => "landed",
            Event::RunFinished { .. } => "run_finished",
            Event::NeedsAttention { .. } => "needs_attention",
            Event::Usage { .. } => "usage",
            Event::EgressDenied { .. } => "egress_denied",
            Event::Upkeep { .. } => "upkeep",
        }
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct PoolInfo {
    pub name: String,
    pub backend: String,
    pub slots: usize,
    /// How its agents are kept from the host repository
    /// (`backend::isolation`); empty in events of older runs.
    #[serde(default)]
    pub isolation: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config::EVENT_KINDS` lists exactly the variants serde knows (its "unknown variant"
    /// error names them all), and `kind` agrees with the serialized tag.
    #[test]
    fn kinds_are_every_variant() {
        let err = serde_json::from_str::<Event>(r#"{"event":"no_such_kind"}"#)
            .unwrap_err()
            .to_string();
        let listed: Vec<&str> = err
            .split('`')
            .skip(3)
            .step_by(2)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(listed, crate::config::EVENT_KINDS, "{err}");
        let event = Event::NeedsAttention {
            cause: AttentionCause::TaskFailed,
            message: "m".into(),
            task: Some("a".into()),
            credential: None,
        };
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["event"], event.kind());
        assert_eq!(v["cause"], "task_failed");
        assert!(v.get("credential").is_none());
        // Usage is flat in its line, and reads back.
        let usage = Event::Usage {
            task: "a".into(),
            attempt: 2,
            usage: crate::state::Usage {
                requests: 3,
                input_tokens: 10,
                output_tokens: 5,
                cost_usd: 0.25,
                ..Default::default()
            },
        };
        let v = serde_json::to_value(&usage).unwrap();
        assert_eq!(v["event"], "usage");
        assert_eq!(
            (v["requests"].as_u64(), v["cost_usd"].as_f64()),
            (Some(3), Some(0.25))
        );
        assert!(v.get("unpriced_model").is_none());
        assert_eq!(serde_json::from_value::<Event>(v).unwrap(), usage);
    }
}
