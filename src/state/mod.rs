//! Run state: what every task is doing and has done, persisted in
//! `.flocks/state.json`. Only the holder of `.flocks/lock` writes it.

mod best_of;
mod index;
mod journal;
mod lock;
mod mapped;
mod outcome;
mod record;
mod snapshot;
mod stamp;
pub(crate) mod store;
mod tagged;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use best_of::{BestOf, JudgedBy, Judgement, Verdict, VerdictOutcome};
pub use index::{Changes, TaskIndex};
pub use lock::{LockInfo, ProjectLock};
pub(crate) use lock::{outside_dir, process_alive, process_start};
pub use outcome::{Attempt, Job, Outcome, ResultInfo, Tokens, Usage};
pub(crate) use record::InvalidTransition;
pub use record::{TaskRecord, TaskStatus};
pub(crate) use store::StateReader;
pub use store::StateStore;

/// A reader about to exit leaves what it read to the operating system:
/// freeing a big state (10,000 tasks' records, and the views built from
/// them) one allocation at a time is work nobody waits for.
pub(crate) fn leave<T>(value: T) {
    std::mem::forget(value);
}

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

    /// Where task `id` (not a variant) is in `tasks`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.index.find(&self.tasks, id)
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
        self.index.insert(&record.id, i);
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
