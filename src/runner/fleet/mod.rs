//! The fleet: the run's task model and every dispatch rule, as plain
//! synchronous code. No I/O, no tokio, no processes: the dispatcher feeds it
//! what happened, one [`Input`] at a time with the time, through
//! [`Fleet::handle`], and carries out the [`Effect`]s it returns.
//!
//! One task model: each task line and its state record sit side by side,
//! found by id through one index (no linear lookups).

mod best_of;
mod conflicts;
mod disk;
mod finished;
pub(crate) mod history;
mod input;
mod proxied;
mod run;
mod running;
mod schedule;
mod stop;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::StopLevel;
use super::credentials::Credentials;
use super::start_from::{DependencyJob, StartError};
use crate::agent::AgentSpec;
use crate::backend::PrepareJob;
use crate::config::Config;
use crate::error::Exit;
use crate::prompt::Template;
use crate::report::Event;
use crate::state::{InvalidTransition, Outcome, State, TaskRecord, TaskStatus};
use crate::tasks::{Task, TaskSet, dependency_order};

pub(crate) use best_of::Judged;
#[cfg(test)]
use finished::REQUEUE_CAP;
pub(crate) use input::Input;

/// The wall clock (for state and credentials) and the monotonic clock (for
/// stagger and quick failures), read once per step by the dispatcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub wall: DateTime<Utc>,
    pub mono: Instant,
}

impl Now {
    pub(crate) fn current() -> Now {
        Now {
            wall: Utc::now(),
            mono: Instant::now(),
        }
    }
}

/// What the dispatcher does for the fleet. (No `Debug`: a start carries a
/// credential's secret.)
pub(crate) enum Effect {
    /// Tell the reporters.
    Emit(Event),
    /// Start an attempt: spawn its executor.
    Spawn(Box<Start>),
    /// Build the start commit of a `start_from = "dependencies"` task off the
    /// dispatch loop, and report it back as [`Input::DependencyStart`].
    ResolveStart(Box<DependencyJob>),
    /// Work out how a failed attempt's retry starts (reads its log and the
    /// branch: off the dispatch loop) and hand it back with
    /// [`Input::RetryPlanned`]. The task does not start until then.
    PlanRetry {
        task: String,
        /// The attempt whose context the retry carries.
        from_attempt: u32,
        /// Start a fresh session (the one to resume is gone).
        fresh_session: bool,
        /// How the attempt ended, when the attempt's own outcome does not
        /// say it (a best-of variant judged out).
        ended: Option<String>,
    },
    /// Raise every running agent's stop level.
    StopAgents(StopLevel),
    /// Work out, off the dispatch loop, what `land` would find now; hand it
    /// back as [`Input::Predicted`].
    Predict(Box<PredictJob>),
    /// Read which paths a new success changed outside its declared footprint
    /// (a tree diff, off the loop); hand them back as
    /// [`Input::FootprintChecked`]. The run's end waits for it.
    CheckFootprint(Box<FootprintJob>),
    /// Prepare the early redo of a task predicted to conflict (its start on
    /// the target plus the tasks it clashed with, the backup of its tip, its
    /// prompt's context), off the loop; hand it back with
    /// [`Input::RedoPrepared`].
    PrepareRedo(Box<RedoJob>),
    /// Judge a best-of task's variants off the dispatch loop (validation,
    /// ranking, the judge agent) and hand the judgement back with
    /// [`Input::Judged`].
    Judge(Box<JudgeJob>),
}

/// The inputs of a conflict prediction: what the predictor's copy of the
/// succeeded records (and of the tasks they depend on) lacks, or holds in
/// an older version, each with its position in the state. The copy is kept
/// between predictions, so that a success costs the records that changed,
/// not a copy of every succeeded one.
pub(crate) struct PredictJob {
    /// The predictor's copy is dropped first: `records` are all of it.
    pub start_over: bool,
    pub records: Vec<(usize, TaskRecord)>,
}

/// What a prediction found.
pub(crate) struct PredictResult {
    pub prediction: Result<crate::land::predict::Prediction, String>,
}

/// A new success of a task with a declared footprint (`"touches"`), to
/// check against it.
pub(crate) struct FootprintJob {
    pub task: String,
    /// The attempt that succeeded (a later success's check answers for it).
    pub attempt: u32,
    pub footprint: crate::tasks::Footprint,
    /// Its record as it succeeded (its work's range).
    pub record: TaskRecord,
    pub repo: PathBuf,
}

/// Why an early redo's start could not be made.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RedoError {
    #[error("the land target {0} is gone")]
    TargetGone(String),
    /// The work of the tasks it clashed with does not combine (says which).
    #[error("{0}")]
    Combine(String),
    #[error("{0}")]
    Git(String),
}

/// The inputs of an early redo.
#[derive(Debug)]
pub(crate) struct RedoJob {
    pub task: String,
    pub branch: String,
    pub repo: PathBuf,
    /// Its last attempt (its tip is kept under that number).
    pub before: u32,
    pub conflict: crate::state::PredictedConflict,
    /// Its record as it succeeded (its earlier work).
    pub record: TaskRecord,
    /// The records of the tasks it clashed with, in landing order.
    pub with: Vec<TaskRecord>,
}

/// The inputs of a best-of task's judgement.
pub(crate) struct JudgeJob {
    pub task: String,
    /// The task's branch: it is pointed at the winner's tip.
    pub branch: String,
    /// The task's rendered prompt (what the judge agent is told the task was).
    pub prompt: String,
    /// The variants' records as they are now, in order of k.
    pub variants: Vec<TaskRecord>,
    /// The judge agent, with `[best_of] judge = true` (its prompt is built
    /// from the variants' diffs once they are known).
    pub agent: Option<Box<JudgeAgent>>,
    /// Said with the judgement (why there is no judge agent).
    pub notice: Option<String>,
}

/// The judge agent's start, as the fleet chose it (pool, credential).
pub(crate) struct JudgeAgent {
    pub id: String,
    pub attempt: u32,
    pub pool: usize,
    pub credential: Option<String>,
    pub prepare: PrepareJob,
    pub spec: AgentSpec,
}

/// One attempt to start, as the fleet decided it.
pub(crate) struct Start {
    pub task: String,
    pub attempt: u32,
    pub pool: usize,
    pub credential: Option<String>,
    pub prepare: PrepareJob,
    pub spec: AgentSpec,
    pub expect_commits: bool,
}

/// A pool as the fleet sees it.
#[derive(Debug, Clone)]
pub(crate) struct PoolSlots {
    pub name: String,
    pub slots: usize,
    pub running: usize,
    /// A pool that lost its host is not used again in this run.
    pub down: Option<String>,
    /// A lost host takes the pool down (false: its scheduler places the
    /// next attempt elsewhere).
    pub host_loss_takes_pool_down: bool,
}

/// A task holding a slot: its attempt runs, or its start is being built.
struct Slot {
    pool: usize,
    credential: Option<crate::agent::spec::Injected>,
    started: Instant,
    /// None while a dependency start is being built.
    attempt: Option<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct RunOptions {
    pub supervise: bool,
    pub max_retries: u32,
    /// Exit (5) instead of waiting when every credential is parked.
    pub no_wait: bool,
    /// Live progress bars when stdout is a terminal (plain lines otherwise);
    /// read by the command that picks the reporters, not by the dispatcher.
    pub progress: bool,
}

/// How a run ended.
pub(crate) struct RunSummary {
    pub exit: Exit,
    pub stopped_because: Option<String>,
    pub interrupted: bool,
}

/// The fleet's inputs.
pub(crate) struct FleetParts {
    pub config: Arc<Config>,
    pub state: State,
    pub tasks: TaskSet,
    /// The tasks this run may start (all of `tasks` when None).
    pub scope: Option<HashSet<String>>,
    pub template: Option<Template>,
    pub pools: Vec<PoolSlots>,
    pub creds: Credentials,
    pub opts: RunOptions,
    pub project_key: String,
}

/// Where a task sits: its line, its place in the dependency order, its record.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    task: Option<usize>,
    order_pos: Option<usize>,
    /// Its place in the start order.
    start_pos: Option<usize>,
    /// The record's place in `state.tasks`, and in its `variants` for a
    /// best-of variant.
    record: Option<(usize, Option<usize>)>,
}

pub(crate) struct Fleet {
    config: Arc<Config>,
    state: State,
    tasks: TaskSet,
    index: HashMap<String, Entry>,
    scope: Option<HashSet<String>>,
    template: Option<Template>,
    pools: Vec<PoolSlots>,
    creds: Credentials,
    running: HashMap<String, Slot>,
    /// Tasks whose retry is being planned ([`Effect::PlanRetry`]).
    planning: HashSet<String>,
    opts: RunOptions,
    project_key: String,
    /// What starts next, and when (`schedule.rs`).
    queue: schedule::Queue,
    /// Quick failures, overloads, the run's cost (`finished.rs`).
    breaker: finished::Breaker,
    /// Ctrl-C, `flocks stop`, and why dispatch stopped (`stop.rs`).
    stopping: stop::Stopping,
    /// Conflict predictions, footprints, early redos (`conflicts.rs`).
    predictions: conflicts::Predictions,
    /// Best-of tasks and their judging (`best_of.rs`).
    judge: best_of::Judging,
    /// Why no new agent starts: the free disk is below `min_free_disk_gb`.
    disk_low: Option<String>,
    dirty: bool,
    /// Illegal status changes seen in this run (bugs; each is also a notice).
    invalid_transitions: u32,
    /// Refused connections already said as `needs_attention` (task,
    /// attempt, host, port).
    denied_seen: HashSet<(String, u32, String, u16)>,
}

impl Fleet {
    pub(crate) fn new(mut p: FleetParts) -> Fleet {
        let best_of = best_of::add_variant_tasks(&mut p.tasks, &p.state);
        let order =
            dependency_order(&p.tasks.tasks).unwrap_or_else(|_| (0..p.tasks.tasks.len()).collect());
        let start_order = history::start_order(&p.tasks, &p.state, &order);
        let mut index: HashMap<String, Entry> = HashMap::with_capacity(p.tasks.tasks.len());
        for (i, t) in p.tasks.tasks.iter().enumerate() {
            index.entry(t.id.clone()).or_default().task.get_or_insert(i);
        }
        for (pos, &i) in order.iter().enumerate() {
            if let Some(e) = index.get_mut(&p.tasks.tasks[i].id) {
                e.order_pos.get_or_insert(pos);
            }
        }
        for (pos, &i) in start_order.order.iter().enumerate() {
            if let Some(e) = index.get_mut(&p.tasks.tasks[i].id) {
                e.start_pos.get_or_insert(pos);
            }
        }
        for (i, r) in p.state.tasks.iter().enumerate() {
            index
                .entry(r.id.clone())
                .or_default()
                .record
                .get_or_insert((i, None));
            for (j, v) in r.variants.iter().enumerate() {
                index
                    .entry(v.id.clone())
                    .or_default()
                    .record
                    .get_or_insert((i, Some(j)));
            }
        }
        let footprint_before = variant_footprints(&p.tasks, &order);
        Fleet {
            queue: schedule::Queue::new(order, start_order),
            predictions: conflicts::Predictions::new(footprint_before),
            judge: best_of::Judging::new(best_of),
            breaker: Default::default(),
            stopping: Default::default(),
            config: p.config,
            state: p.state,
            tasks: p.tasks,
            index,
            scope: p.scope,
            template: p.template,
            pools: p.pools,
            creds: p.creds,
            running: HashMap::new(),
            planning: HashSet::new(),
            opts: p.opts,
            project_key: p.project_key,
            disk_low: None,
            dirty: false,
            invalid_transitions: 0,
            denied_seen: HashSet::new(),
        }
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// For the store's journal commit, which takes what changed.
    pub(crate) fn state_mut(&mut self) -> &mut State {
        &mut self.state
    }

    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Whether state changed since the last call (the dispatcher saves then).
    pub(crate) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub(crate) fn stop_level(&self) -> StopLevel {
        self.stopping.stop_level
    }

    /// Illegal status changes seen so far (each was reported as a notice).
    #[cfg(test)]
    pub(crate) fn invalid_transitions(&self) -> u32 {
        self.invalid_transitions
    }

    fn task(&self, id: &str) -> Option<&Task> {
        self.index
            .get(id)
            .and_then(|e| e.task)
            .map(|i| &self.tasks.tasks[i])
    }

    pub(crate) fn record(&self, id: &str) -> Option<&TaskRecord> {
        match self.index.get(id).and_then(|e| e.record)? {
            (i, None) => self.state.tasks.get(i),
            (i, Some(j)) => self.state.tasks.get(i)?.variants.get(j),
        }
    }

    /// The record to change; it is written to the journal at the next save
    /// (a variant with its task).
    fn record_mut(&mut self, id: &str) -> Option<&mut TaskRecord> {
        let (i, j) = self.index.get(id).and_then(|e| e.record)?;
        self.state.changed.mark(i);
        match j {
            None => self.state.tasks.get_mut(i),
            Some(j) => self.state.tasks.get_mut(i)?.variants.get_mut(j),
        }
    }

    /// In the task list and in the run's scope (a variant: its task is).
    fn in_scope(&self, id: &str) -> bool {
        let Some(task) = self.task(id) else {
            return false;
        };
        let id = task.variant.as_ref().map_or(id, |v| v.task.as_str());
        self.scope.as_ref().is_none_or(|s| s.contains(id))
    }

    /// A best-of task: its variants run, it never does itself.
    fn has_variants(&self, id: &str) -> bool {
        self.record(id).is_some_and(|r| !r.variants.is_empty())
    }

    /// Change a task's status; an illegal change is a bug in flocks: it is
    /// counted and said as a notice, and the status stays as it was.
    fn transition(&mut self, id: &str, to: TaskStatus, out: &mut Vec<Effect>) {
        let Some(rec) = self.record_mut(id) else {
            return;
        };
        let was_failed = fails_dependents(&rec.status);
        let result: Result<(), InvalidTransition> = rec.transition(to);
        match result {
            Ok(()) => {
                self.dirty = true;
                let status = &self.record(id).map(|r| r.status.clone());
                if was_failed || status.as_ref().is_some_and(fails_dependents) {
                    self.queue.blocked_stale = true;
                }
                if status == &Some(TaskStatus::Pending)
                    && let Some(pos) = self.index.get(id).and_then(|e| e.start_pos)
                {
                    self.queue.cursor = self.queue.cursor.min(pos);
                }
            }
            Err(e) => {
                self.invalid_transitions += 1;
                out.push(Effect::Emit(Event::Notice {
                    message: format!("internal error, please report it: {e}"),
                }));
            }
        }
    }
}

/// A status that blocks the task's dependents: it ended, not in success, or
/// it is blocked itself.
fn fails_dependents(status: &TaskStatus) -> bool {
    matches!(status, TaskStatus::Done { outcome } if *outcome != Outcome::Success)
        || matches!(status, TaskStatus::Blocked { .. })
}

/// A duration as chrono's, saturating.
fn chrono_secs(secs: u64) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX / 1000))
}

/// `t` on the monotonic clock, given `now` on both.
fn mono_at(now: Now, t: DateTime<Utc>) -> Instant {
    now.mono + (t - now.wall).to_std().unwrap_or(Duration::ZERO)
}

/// Footprint lanes: a best-of task's variants are alternatives, not
/// neighbours. They never wait for each other (or for their task), and each
/// waits for what its task would wait for: the earlier overlapping tasks.
fn variant_footprints(tasks: &TaskSet, order: &[usize]) -> HashMap<String, Vec<String>> {
    let plain: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| tasks.tasks[i].variant.is_none())
        .collect();
    let mut before = crate::tasks::footprint_before(tasks, &plain);
    for t in &tasks.tasks {
        if let Some(v) = &t.variant
            && let Some(parent) = before.get(&v.task).cloned()
        {
            before.insert(t.id.clone(), parent);
        }
    }
    before
}
