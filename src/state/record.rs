//! A task's record: its life (`TaskStatus`, changed through one transition),
//! its attempts and what they add up to.

use std::path::PathBuf;

use super::{Attempt, BestOf, NextAttempt, Outcome, PredictedConflict, v1_origin};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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
    #[serde(deserialize_with = "super::tagged::read_status")]
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
    pub next: Option<Box<NextAttempt>>,
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
    pub conflict: Option<Box<PredictedConflict>>,
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
    pub best_of: Option<Box<BestOf>>,
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
        #[serde(deserialize_with = "super::stamp::read")]
        started_at: DateTime<Utc>,
    },
    /// The last attempt ended this way; final until retried.
    Done {
        #[serde(deserialize_with = "super::tagged::read_outcome")]
        outcome: Outcome,
    },
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
