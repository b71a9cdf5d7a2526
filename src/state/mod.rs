//! Run state: what every task is doing and has done, persisted in
//! `.flocks/state.json`. Only the holder of `.flocks/lock` writes it.

mod index;
mod journal;
mod lock;
pub(crate) mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use index::{Changes, TaskIndex};
pub use lock::{LockInfo, ProjectLock};
pub(crate) use lock::{outside_dir, process_alive, process_start};
pub(crate) use store::StateReader;
pub use store::StateStore;

/// Bumped when the shape changes in a way old readers cannot follow.
/// 2: a task has one `origin`, and its work is `origin..tip` over all its
/// attempts (format 1 files are upgraded on load, see [`State::upgrade`]).
pub(crate) const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    /// The current or last run.
    #[serde(default)]
    pub run: Option<RunInfo>,
    /// Tasks in the order they were first seen (task-file order).
    #[serde(default)]
    pub tasks: Vec<TaskRecord>,
    /// Parked and disabled credentials, by name.
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialState>,
    /// A global pause after an overload (529) signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<DateTime<Utc>>,
    /// What flocks created and must remove (`flocks up`/`down`), per backend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub managed: Vec<Managed>,
    /// The generation of the snapshot this state was read from: the journal
    /// that continues it names the same one in its header. Written by
    /// [`StateStore::save`], 0 in a file that never had a journal.
    #[serde(default, skip_serializing)]
    pub journal_generation: u64,
    /// Where each task is in `tasks`, by id (built on load, kept by
    /// [`State::push_task`]): `tasks` only grows, through `push_task`.
    #[serde(skip)]
    pub index: TaskIndex,
    /// The tasks changed since state was last written, for the journal:
    /// task changes go through [`State::task_mut`] or [`State::push_task`].
    #[serde(skip)]
    pub changed: Changes,
}

impl Default for State {
    fn default() -> Self {
        State {
            format_version: FORMAT_VERSION,
            run: None,
            tasks: Vec::new(),
            credentials: BTreeMap::new(),
            backoff_until: None,
            managed: Vec::new(),
            journal_generation: 0,
            index: TaskIndex::default(),
            changed: Changes::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub supervise: bool,
    /// The start time of `pid` (see [`process_start`]): a run whose process
    /// still has it is alive, whatever happened to `.flocks/lock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
    /// Why no new agent starts now although tasks are ready (free disk
    /// below `min_free_disk_gb`); None while dispatch goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// A resource that `flocks up` created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Managed {
    Container {
        pool: String,
        id: String,
        name: String,
    },
    Vm {
        pool: String,
        name: String,
        ssh_dest: String,
        ssh_port: u16,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: String,
    pub branch: String,
    /// The task's worktree on the host (the same path on every attempt).
    pub worktree: PathBuf,
    pub prompt_hash: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub status: TaskStatus,
    #[serde(default, deserialize_with = "tight_vec")]
    pub attempts: Vec<Attempt>,
    /// flocks created the branch (so it may reuse it), or started an attempt
    /// that creates it (saved before the attempt runs).
    #[serde(default)]
    pub branch_created: bool,
    /// Times the task went back to the queue for reasons not its own
    /// (rate limits, overload); capped.
    #[serde(default)]
    pub requeues: u32,
    /// How the next attempt should start, set by a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextAttempt>,
    /// The commit the task's branch started from (the base, or the start that
    /// `start_from = "dependencies"` built). Set when the branch is created,
    /// and again only by `retry --fresh` and a `land --resolve` redo. The
    /// task's work is `origin..tip`, over all its attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `"expect_commits": false` on the task line: a clean success result is
    /// enough, no commit needed.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub expect_commits: bool,
    /// Why the task was not retried although its retries allowed it (its
    /// `max_cost_usd` was reached); cleared when it starts again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_retried: Option<String>,
    /// Its work will not apply where `land` puts it: predicted during the
    /// run, each time a task succeeds (cleared when it applies again or a new
    /// attempt starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<PredictedConflict>,
    /// The run ended before its conflict prediction was worked out: its
    /// conflicts are unknown (left to `land`), not absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub conflict_unknown: bool,
    /// Paths its work changed outside its declared footprint (`"touches"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outside_footprint: Vec<String>,
    /// A best-of task's variants, each a record of its own (id `<id>@v<k>`,
    /// branch `<branch>@v<k>`, its own worktree, origin and attempts), in
    /// order of k. Empty for other tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<TaskRecord>,
    /// How a best-of task's variants were judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<BestOf>,
    /// The task list it was last read from (a file's absolute path, or
    /// `[source] script ...`), when it is not the project's default list
    /// (`[source]`, or tasks.jsonl): None is that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// That task list was read again without it: the task is `removed`
    /// (`land` leaves it out unless named; `flocks forget` drops it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// The last run that read its task list did not include it (a `retry`
    /// of other tasks): while that run lives, it does not start it, so a
    /// pending task is shown as `not queued`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_in_run: bool,
}

/// A succeeded task whose commits will not apply when `land` builds its
/// result (the target, then every succeeded task before it in landing order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct PredictedConflict {
    /// Its commit that does not apply.
    pub commit: String,
    /// Where.
    pub files: Vec<String>,
    /// The earlier tasks (landing order) whose work changes those files.
    #[serde(default)]
    pub with: Vec<String>,
    /// It does not apply on the land target alone either: the target changed
    /// those files since the task started.
    #[serde(default)]
    pub with_target: bool,
    /// The land target it was predicted against, and its tip then.
    pub target: String,
    pub target_tip: String,
}

impl PredictedConflict {
    /// "will conflict with `api-auth` in src/auth.rs".
    pub fn describe(&self) -> String {
        let mut who: Vec<String> = self.with.iter().map(|w| format!("`{w}`")).collect();
        if self.with_target || who.is_empty() {
            who.insert(0, format!("`{}`", self.target));
        }
        let shown = 3;
        let mut files = self
            .files
            .iter()
            .take(shown)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if self.files.len() > shown {
            files.push_str(&format!(" and {} more", self.files.len() - shown));
        }
        format!("will conflict with {} in {files}", who.join(", "))
    }
}

/// A best-of task's judging.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BestOf {
    /// Judgements that found no survivor (what `max_retries` counts for it).
    #[serde(default)]
    pub failed_rounds: u32,
    /// The last judgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
}

/// Which variant won, how, and why; the others' verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Judgement {
    /// The winning variant's k; None: no variant survived.
    #[serde(default)]
    pub winner: Option<u32>,
    pub by: JudgedBy,
    /// Why the winner won (or why none did).
    pub reason: String,
    /// Every variant, the winner first, then in rank order.
    #[serde(default)]
    pub ranking: Vec<Verdict>,
    pub at: DateTime<Utc>,
    /// Something the user should know (a judge answer that could not be used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// What the judge agent cost.
    #[serde(default)]
    pub judge_cost_usd: f64,
}

/// Who picked the winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum JudgedBy {
    /// Validation, then the smallest change, then the lowest cost.
    Ranking,
    /// The judge agent (`[best_of] judge = true`).
    Judge,
    /// `flocks pick`.
    Pick,
}

impl JudgedBy {
    pub fn label(self) -> &'static str {
        match self {
            JudgedBy::Ranking => "ranking",
            JudgedBy::Judge => "judge",
            JudgedBy::Pick => "pick",
        }
    }
}

/// One variant's place in a judgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Verdict {
    pub variant: u32,
    pub outcome: VerdictOutcome,
    pub reason: String,
    /// Lines added + removed by its work (variants that succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<u64>,
    #[serde(default)]
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum VerdictOutcome {
    Winner,
    /// Passed validation, ranked below the winner.
    Passed,
    FailedValidation,
    /// The variant's agent did not succeed.
    Failed,
}

impl VerdictOutcome {
    pub fn label(self) -> &'static str {
        match self {
            VerdictOutcome::Winner => "winner",
            VerdictOutcome::Passed => "passed",
            VerdictOutcome::FailedValidation => "failed validation",
            VerdictOutcome::Failed => "failed",
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A task's life. Changes go through [`TaskRecord::transition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting for its dependencies or a slot.
    Pending,
    Running {
        attempt: u32,
        pool: String,
        started_at: DateTime<Utc>,
    },
    /// The last attempt ended this way; final until retried.
    Done { outcome: Outcome },
    /// A dependency did not succeed, or (with a `reason`) the dependencies
    /// succeeded but their work could not be combined into the task's start.
    Blocked {
        on: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl TaskStatus {
    pub fn label(&self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running { .. } => "running",
            TaskStatus::Done { outcome } => outcome.label(),
            TaskStatus::Blocked { .. } => "blocked",
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(
            self,
            TaskStatus::Done {
                outcome: Outcome::Success
            }
        )
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failed {
        reason: String,
    },
    TimedOut,
    Stalled,
    Interrupted,
    SpawnFailed {
        reason: String,
    },
    RateLimited {
        #[serde(default)]
        credential: Option<String>,
        #[serde(default)]
        resets_at: Option<DateTime<Utc>>,
    },
    Overloaded,
    CredentialRejected {
        #[serde(default)]
        credential: Option<String>,
        reason: String,
    },
    HostLost {
        reason: String,
    },
    /// The worktree could not be set up (`.worktreeinclude` or `[workspace]
    /// setup`): the agent did not start.
    SetupFailed {
        /// The setup command that failed, or `.worktreeinclude`.
        command: String,
        reason: String,
        /// Its last lines of output (redacted).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        output: Vec<String>,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Success => "succeeded",
            Outcome::Failed { .. } => "failed",
            Outcome::TimedOut => "timed out",
            Outcome::Stalled => "stalled",
            Outcome::Interrupted => "interrupted",
            Outcome::SpawnFailed { .. } => "spawn failed",
            Outcome::RateLimited { .. } => "rate limited",
            Outcome::Overloaded => "overloaded",
            Outcome::CredentialRejected { .. } => "credential rejected",
            Outcome::HostLost { .. } => "host lost",
            Outcome::SetupFailed { .. } => "setup failed",
        }
    }

    /// Does this outcome use one of the task's `max_retries`?
    pub fn counts_against_retries(&self) -> bool {
        match self {
            Outcome::Failed { .. }
            | Outcome::TimedOut
            | Outcome::Stalled
            | Outcome::SetupFailed { .. } => true,
            Outcome::Success
            | Outcome::Interrupted
            | Outcome::SpawnFailed { .. }
            | Outcome::RateLimited { .. }
            | Outcome::Overloaded
            | Outcome::CredentialRejected { .. }
            | Outcome::HostLost { .. } => false,
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Success => "succeeded".into(),
            Outcome::Failed { reason } => format!("failed: {reason}"),
            Outcome::TimedOut => "timed out (agent_timeout_secs)".into(),
            Outcome::Stalled => "stalled: no output for stall_timeout_secs".into(),
            Outcome::Interrupted => "interrupted".into(),
            Outcome::SpawnFailed { reason } => format!("could not start: {reason}"),
            Outcome::RateLimited {
                credential,
                resets_at,
            } => {
                let mut s = "rate limited".to_string();
                if let Some(c) = credential {
                    s.push_str(&format!(" (credential {c})"));
                }
                if let Some(t) = resets_at {
                    s.push_str(&format!(
                        ", resets at {}",
                        t.format("%Y-%m-%d %H:%M:%S UTC")
                    ));
                }
                s
            }
            Outcome::Overloaded => "API overloaded (529)".into(),
            Outcome::CredentialRejected { credential, reason } => match credential {
                Some(c) => format!("credential {c} rejected: {reason}"),
                None => format!("credential rejected: {reason}"),
            },
            Outcome::HostLost { reason } => format!("host lost: {reason}"),
            Outcome::SetupFailed {
                command,
                reason,
                output,
            } => {
                let mut s = format!("setup failed: `{command}`: {reason}");
                if let Some(last) = output.iter().rev().find(|l| !l.trim().is_empty()) {
                    s.push_str(&format!(" (last output: {})", last.trim()));
                }
                s
            }
        }
    }
}

/// A list read with the capacity it needs: a task has one or two attempts,
/// and the default growth (room for four) costs tens of MiB at 10,000 tasks.
fn tight_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Tight<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Tight<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::new();
            while let Some(x) = seq.next_element()? {
                v.reserve_exact(1);
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Tight(std::marker::PhantomData))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Attempt {
    pub number: u32,
    pub pool: String,
    #[serde(default)]
    pub credential: Option<String>,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub ended_at: Option<DateTime<Utc>>,
    /// The branch tip when the attempt started (history only: the task's
    /// work is `origin..tip`, see [`TaskRecord::origin`]).
    #[serde(default)]
    pub start_commit: Option<String>,
    /// The branch tip when it ended (after flocks committed leftovers).
    #[serde(default)]
    pub end_tip: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// The session this attempt resumed, if it did.
    #[serde(default)]
    pub resumed_from: Option<String>,
    #[serde(default)]
    pub outcome: Option<Outcome>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub result: Option<ResultInfo>,
    /// flocks committed changes the agent left uncommitted.
    #[serde(default)]
    pub leftovers_committed: bool,
    /// The `FLOCKS_ATTEMPT` tag in the agent's environment.
    pub tag: String,
    /// The hash of the task's prompt this attempt was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_hash: Option<String>,
    /// Tokens and their cost as flocks' proxy read them from the API's
    /// answers, live while the attempt runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Connections `[network] allow` refused.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_denied: u32,
    /// Seconds the attempt waited in its pool's scheduler before its job
    /// ran (Slurm pools), counted apart from its run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_secs: Option<f64>,
    /// The scheduler's job that ran the attempt (Slurm pools).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Job>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What an attempt's answers used, summed as flocks' proxy read them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Usage {
    /// Answers read.
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// What they cost by the proxy's price table (the manual lists it: docs/src/threat-model/proxy.md).
    pub cost_usd: f64,
    /// A model the price table does not know: its tokens are counted, not priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpriced_model: Option<String>,
}

/// A scheduler's job (Slurm): one per attempt of a Slurm pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Job {
    /// The scheduler's job id.
    pub id: String,
    /// As the scheduler says: `PENDING`, `RUNNING`, then how it ended
    /// (`COMPLETED`, `CANCELLED`, `NODE_FAIL`, `PREEMPTED`, ...).
    pub state: String,
    /// Why it waits (`Priority`, `Resources`, `QOSMaxJobsPerUserLimit`, ...),
    /// while it is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The node it ran on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When it started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Its run time, from its start to its end (once it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_secs: Option<f64>,
}

impl Job {
    /// It waits in the scheduler's queue.
    pub fn is_pending(&self) -> bool {
        self.state == "PENDING"
    }

    /// "pending in Slurm: Priority (job 123)", "Slurm job 123 runs on
    /// node7", "Slurm job 123 ended CANCELLED".
    pub fn describe(&self) -> String {
        match self.state.as_str() {
            "PENDING" => {
                let reason = self.reason.as_deref().unwrap_or("queued");
                format!("pending in Slurm: {reason} (job {})", self.id)
            }
            "RUNNING" => match &self.node {
                Some(n) => format!("Slurm job {} runs on {n}", self.id),
                None => format!("Slurm job {} runs", self.id),
            },
            state => format!("Slurm job {} ended {state}", self.id),
        }
    }
}

impl Attempt {
    /// How long it has waited, or waited, for its scheduler (None: it did
    /// not wait for one).
    pub fn pending_at(&self, now: DateTime<Utc>) -> Option<f64> {
        if let Some(p) = self.pending_secs {
            return Some(p);
        }
        let job = self.job.as_ref()?;
        let until = match job.started_at {
            Some(t) => t,
            None if job.is_pending() && self.ended_at.is_none() => now,
            None => self.ended_at?,
        };
        Some(((until - self.started_at).num_milliseconds().max(0)) as f64 / 1000.0)
    }

    /// The result's `total_cost_usd` when the agent reported one; else what
    /// the proxy priced its answers at (live while it runs); else 0.
    pub fn cost(&self) -> f64 {
        self.result
            .as_ref()
            .and_then(|r| r.total_cost_usd)
            .or_else(|| self.usage.as_ref().map(|u| u.cost_usd))
            .unwrap_or(0.0)
    }

    /// The connections `[network] allow` refused in this attempt.
    pub fn denied(&self) -> u64 {
        u64::from(self.egress_denied)
    }

    pub fn turns(&self) -> u64 {
        self.result.as_ref().and_then(|r| r.num_turns).unwrap_or(0)
    }
}

/// What the agent's result object said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ResultInfo {
    #[serde(default)]
    pub subtype: Option<String>,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub num_turns: Option<u64>,
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// The result text (cut to a few KB).
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub api_error_status: Option<serde_json::Value>,
    #[serde(default)]
    pub terminal_reason: Option<String>,
    /// The result's `usage`: tokens the attempt used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Tokens>,
}

/// Tokens, as the result's `usage` counts them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Tokens {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

/// How a retried task's next attempt starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NextAttempt {
    /// Start the branch over from the base.
    #[serde(default)]
    pub fresh: bool,
    /// Resume this claude session (on the same pool and path) if possible.
    #[serde(default)]
    pub resume_session: Option<String>,
    #[serde(default)]
    pub resume_pool: Option<String>,
    /// How the previous attempt ended, for the follow-up prompt of a resume.
    #[serde(default)]
    pub ended: Option<String>,
    /// The context of the previous attempt, for a prompt that starts fresh.
    #[serde(default)]
    pub context: Option<String>,
    /// Start (with `fresh`) from this commit instead of `[workspace] base`:
    /// `land --resolve` redoes a conflicted task on the current target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CredentialState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked_until: Option<DateTime<Utc>>,
    /// Consecutive parks without a reset time, for the exponential backoff.
    #[serde(default)]
    pub backoff_level: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<String>,
}

/// An invalid task status change: a bug in flocks, never user input.
#[derive(Debug, thiserror::Error)]
#[error("task `{task}`: cannot go from {from} to {to}")]
pub(crate) struct InvalidTransition {
    pub task: String,
    pub from: &'static str,
    pub to: &'static str,
}

impl TaskRecord {
    /// The one place a task's status changes.
    #[must_use = "an illegal transition is a bug to surface, not to drop"]
    pub(crate) fn transition(&mut self, to: TaskStatus) -> Result<(), InvalidTransition> {
        use TaskStatus::*;
        let ok = match (&self.status, &to) {
            (Pending, Running { .. }) => true,
            (Pending, Blocked { .. }) => true,
            (Pending, Pending) => true,
            (Running { .. }, Done { .. }) => true,
            (Running { .. }, Pending) => true, // re-queued (rate limit, interrupted, retry)
            (Done { .. }, Pending) => true,    // retried
            (Done { .. }, Done { .. }) => true, // reconciled
            (Blocked { .. }, Pending) => true, // its dependency was retried
            (Blocked { .. }, Blocked { .. }) => true,
            (Pending, Done { .. }) => true, // e.g. re-queue cap reached, dependency failed for good
            (Running { .. }, Running { .. })
            | (Running { .. }, Blocked { .. })
            | (Done { .. }, Running { .. })
            | (Done { .. }, Blocked { .. })
            | (Blocked { .. }, Running { .. })
            | (Blocked { .. }, Done { .. }) => false,
        };
        if !ok {
            return Err(InvalidTransition {
                task: self.id.clone(),
                from: self.status.label(),
                to: to.label(),
            });
        }
        self.status = to;
        Ok(())
    }

    pub fn last_attempt(&self) -> Option<&Attempt> {
        self.attempts.last()
    }

    pub(crate) fn attempt_mut(&mut self, number: u32) -> Option<&mut Attempt> {
        self.attempts.iter_mut().find(|a| a.number == number)
    }

    /// Attempts that used up one of `max_retries`'s tries.
    pub(crate) fn counted_failures(&self) -> u32 {
        self.attempts
            .iter()
            .filter(|a| {
                a.outcome
                    .as_ref()
                    .is_some_and(Outcome::counts_against_retries)
            })
            .count() as u32
    }

    /// What the task cost: its attempts, its variants' and its judge's.
    pub fn cost(&self) -> f64 {
        let judge = self
            .best_of
            .as_ref()
            .and_then(|b| b.judgement.as_ref())
            .map_or(0.0, |j| j.judge_cost_usd);
        crate::output::units::sum_costs(
            self.attempts
                .iter()
                .map(Attempt::cost)
                .chain(self.variants.iter().map(TaskRecord::cost))
                .chain([judge]),
        )
    }

    pub fn turns(&self) -> u64 {
        self.attempts.iter().map(Attempt::turns).sum::<u64>()
            + self.variants.iter().map(TaskRecord::turns).sum::<u64>()
    }

    /// Connections `[network] allow` refused, over its attempts and variants.
    pub fn egress_denied(&self) -> u64 {
        self.attempts.iter().map(Attempt::denied).sum::<u64>()
            + self
                .variants
                .iter()
                .map(TaskRecord::egress_denied)
                .sum::<u64>()
    }

    /// Variant `k` (1-based) of a best-of task.
    pub fn variant(&self, k: u32) -> Option<&TaskRecord> {
        let id = crate::tasks::variant_id(&self.id, k);
        self.variants.iter().find(|v| v.id == id)
    }

    /// The variant whose work is a succeeded best-of task's work.
    pub fn winner(&self) -> Option<&TaskRecord> {
        if !self.status.is_success() {
            return None;
        }
        let k = self.best_of.as_ref()?.judgement.as_ref()?.winner?;
        self.variant(k)
    }

    /// The task's origin: the recorded one, or, for a record that never got
    /// one (an attempt that started just before a crash), what its attempts'
    /// commits say. A best-of task's is its winner's.
    pub fn origin_commit(&self) -> Option<String> {
        if let Some(w) = self.winner() {
            return w.origin_commit();
        }
        self.origin.clone().or_else(|| v1_origin(&self.attempts))
    }

    /// The attempt that succeeded last: its end tip is the task's tip. A
    /// best-of task's is its winner's.
    pub fn successful_attempt(&self) -> Option<&Attempt> {
        if !self.status.is_success() {
            return None;
        }
        if let Some(w) = self.winner() {
            return w.successful_attempt();
        }
        self.attempts
            .iter()
            .rev()
            .find(|a| a.outcome == Some(Outcome::Success))
    }
}

impl State {
    /// Bring a state read from an older format up to [`FORMAT_VERSION`].
    ///
    /// Format 1 had no task origin: it becomes the first attempt's start, or,
    /// when a later attempt started elsewhere than where the one before it
    /// ended (`retry --fresh`, a `land --resolve` redo), that attempt's start.
    pub(crate) fn upgrade(&mut self) {
        if self.format_version < 2 {
            for t in &mut self.tasks {
                if t.origin.is_none() {
                    t.origin = v1_origin(&t.attempts);
                }
                // Format 1 kept the hash of the prompt the last attempts ran.
                for a in &mut t.attempts {
                    if a.prompt_hash.is_none() {
                        a.prompt_hash = Some(t.prompt_hash.clone());
                    }
                }
            }
        }
        self.format_version = FORMAT_VERSION;
    }

    /// A task, or a best-of task's variant (`<id>@v<k>`), by id.
    pub fn task(&self, id: &str) -> Option<&TaskRecord> {
        if let Some(i) = self.index.find(&self.tasks, id) {
            return self.tasks.get(i);
        }
        let (parent, _) = crate::tasks::split_variant_id(id)?;
        let i = self.index.find(&self.tasks, parent)?;
        self.tasks.get(i)?.variants.iter().find(|v| v.id == id)
    }

    /// The task (or variant) to change; it is written to the journal at the
    /// next commit (a variant with its task).
    pub fn task_mut(&mut self, id: &str) -> Option<&mut TaskRecord> {
        if !self.index.covers(&self.tasks) {
            self.index.rebuild(&self.tasks);
        }
        if let Some(i) = self.index.find(&self.tasks, id) {
            self.changed.mark(i);
            return self.tasks.get_mut(i);
        }
        let (parent, _) = crate::tasks::split_variant_id(id)?;
        let i = self.index.find(&self.tasks, parent)?;
        self.changed.mark(i);
        self.tasks
            .get_mut(i)?
            .variants
            .iter_mut()
            .find(|v| v.id == id)
    }

    /// Add a task at the end (task-file order), or replace the one with its id.
    pub fn push_task(&mut self, record: TaskRecord) {
        if let Some(t) = self.task_mut(&record.id) {
            *t = record;
            return;
        }
        let i = self.tasks.len();
        self.index.insert(record.id.clone(), i);
        self.tasks.push(record);
        self.changed.mark(i);
    }

    /// Build the id index (after `tasks` was read or replaced).
    pub(crate) fn reindex(&mut self) {
        self.index.rebuild(&self.tasks);
    }

    /// Drop these tasks from the state (`flocks forget`); the caller saves a
    /// snapshot (the journal only replaces and adds). Returns the ids dropped.
    pub(crate) fn forget(&mut self, ids: &[String]) -> Vec<String> {
        let mut dropped = Vec::new();
        self.tasks.retain(|t| {
            let forget = ids.contains(&t.id);
            if forget {
                dropped.push(t.id.clone());
            }
            !forget
        });
        self.reindex();
        dropped
    }

    pub fn total_cost(&self) -> f64 {
        crate::output::units::sum_costs(self.tasks.iter().map(TaskRecord::cost))
    }
}

/// The origin of a format-1 task, from its attempts' recorded commits.
fn v1_origin(attempts: &[Attempt]) -> Option<String> {
    let mut origin: Option<String> = None;
    let mut prev_end: Option<&str> = None;
    for a in attempts {
        let Some(start) = a.start_commit.as_deref() else {
            continue;
        };
        let restarted = prev_end.is_some_and(|end| end != start);
        if origin.is_none() || restarted {
            origin = Some(start.to_string());
        }
        prev_end = a.end_tip.as_deref();
    }
    origin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_1_fixture() {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let mut state: State = serde_json::from_str(text).unwrap();
        assert_eq!(state.format_version, 1);
        state.upgrade();
        assert_eq!(state.format_version, FORMAT_VERSION);
        assert_eq!(
            state.tasks[0].origin.as_deref(),
            Some("1111111111111111111111111111111111111111")
        );
        assert_eq!(state.tasks[1].origin, None);
        assert!(state.tasks[0].status.is_success());
        assert_eq!(state.tasks[1].status.label(), "timed out");
        assert_eq!(
            state.tasks[0]
                .successful_attempt()
                .unwrap()
                .end_tip
                .as_deref(),
            Some("2222222222222222222222222222222222222222")
        );
    }

    #[test]
    fn v1_origin_follows_restarts() {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let state: State = serde_json::from_str(text).unwrap();
        let a = |start: &str, end: Option<&str>| Attempt {
            start_commit: Some(start.into()),
            end_tip: end.map(str::to_string),
            ..state.tasks[0].attempts[0].clone()
        };
        // Attempt 2 built on attempt 1; attempt 3 started over (--fresh).
        let attempts = [a("a", Some("b")), a("b", Some("c")), a("z", Some("y"))];
        assert_eq!(v1_origin(&attempts[..2]).as_deref(), Some("a"));
        assert_eq!(v1_origin(&attempts).as_deref(), Some("z"));
        // A crash left no end tip: the next attempt continues the same work.
        let attempts = [a("a", None), a("b", Some("c"))];
        assert_eq!(v1_origin(&attempts).as_deref(), Some("a"));
    }

    #[test]
    fn a_predicted_conflict_reads_for_people() {
        let mut c = PredictedConflict {
            commit: "c0ffee".into(),
            files: vec!["src/auth.rs".into()],
            with: vec!["api-auth".into()],
            with_target: false,
            target: "main".into(),
            target_tip: "abc".into(),
        };
        assert_eq!(c.describe(), "will conflict with `api-auth` in src/auth.rs");
        c.with_target = true;
        c.files = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(
            c.describe(),
            "will conflict with `main`, `api-auth` in a, b, c and 2 more"
        );
        c.with.clear();
        c.with_target = false;
        assert_eq!(
            c.describe(),
            "will conflict with `main` in a, b, c and 2 more",
            "no task to name: the target"
        );
        // In state.json, and read back from a file without the fields.
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<PredictedConflict>(&text).unwrap(), c);
        let state: State =
            serde_json::from_str(include_str!("../../tests/fixtures/state-v1.json")).unwrap();
        assert!(state.tasks[0].conflict.is_none());
        assert!(state.tasks[0].outside_footprint.is_empty());
    }

    #[test]
    fn transitions_are_checked() {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let mut state: State = serde_json::from_str(text).unwrap();
        let t = &mut state.tasks[0];
        assert!(
            t.transition(TaskStatus::Blocked {
                on: vec![],
                reason: None
            })
            .is_err()
        );
        assert!(t.transition(TaskStatus::Pending).is_ok());
    }
}
