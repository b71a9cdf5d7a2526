//! Bringing a task list into state: what the command asks to run again is
//! queued first ([`Requeue`]), then new tasks are queued, interrupted ones
//! re-queued and changed prompts reported.

use std::collections::HashSet;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::runner::RunOptions;
use crate::state::{NextAttempt, Outcome, State, TaskRecord, TaskStatus};
use crate::tasks::TaskSet;

/// What a command runs again before the task list is merged.
#[derive(Debug, Clone, Default)]
pub(crate) enum Requeue {
    /// `run`, `sail`: only what merging the task list queues.
    #[default]
    Nothing,
    /// `retry`: these tasks with what their last attempt learned; `fresh`
    /// keeps the old tip under `refs/flocks/backup/` and starts over.
    Retry { ids: Vec<String>, fresh: bool },
    /// `land --resolve`: these tasks start over from the target at `onto`.
    Redo { onto: git2::Oid, tasks: Vec<Redo> },
}

/// One conflicted task that `land --resolve` redoes.
#[derive(Debug, Clone)]
pub(crate) struct Redo {
    pub id: String,
    /// Its last attempt before the redo.
    pub before: u32,
    /// What its prompt gets: its earlier diff and the conflicting files.
    pub context: String,
}

/// Queue what `requeue` names (in state, under the project lock).
pub(crate) fn requeue(state: &mut State, config: &Config, requeue: Requeue) -> Result<()> {
    match requeue {
        Requeue::Nothing => Ok(()),
        Requeue::Retry { ids, fresh } => retry(state, config, &ids, fresh),
        Requeue::Redo { onto, tasks } => redo(state, config, onto, tasks),
    }
}

fn retry(state: &mut State, config: &Config, ids: &[String], fresh: bool) -> Result<()> {
    let log_root = config.state_dir().join("logs");
    for id in ids {
        let Some(rec) = state.task_mut(id) else {
            continue;
        };
        let last = rec.last_attempt().map(|a| a.number).unwrap_or(0);
        let mut next = crate::retry::next_after_failure(rec, last, config, &log_root);
        if fresh {
            backup_and_reset(config, &rec.branch, id, last)?;
            next.fresh = true;
            next.resume_session = None;
            next.context = None;
        }
        rec.next = Some(next);
        rec.requeues = 0;
        if rec.status != TaskStatus::Pending {
            rec.transition(TaskStatus::Pending)
                .map_err(|e| crate::error::Error::Other(e.to_string()))?;
        }
    }
    Ok(())
}

/// `--fresh`: keep the old tip under refs/flocks/backup/<id>/<attempt>, then the
/// branch starts over from the base when the next attempt prepares it.
fn backup_and_reset(config: &Config, branch: &str, id: &str, attempt: u32) -> Result<()> {
    let repo = crate::git::open(&config.workspace.repo)?;
    if let Some(tip) = crate::git::branch_tip(&repo, branch)? {
        let name = format!("refs/flocks/backup/{id}/{attempt}");
        repo.reference(&name, tip, true, "flocks: backup before retry --fresh")
            .map_err(|e| Error::Other(format!("cannot back up {branch}: {}", e.message())))?;
        crate::outln!(
            "{branch} was at {} (kept as {name}); the retry starts it over from its start \
             ({} or, for start_from = \"dependencies\", its dependencies' work)",
            &tip.to_string()[..10],
            config.workspace.base
        );
    }
    Ok(())
}

fn redo(state: &mut State, config: &Config, onto: git2::Oid, tasks: Vec<Redo>) -> Result<()> {
    let repo = crate::git::open(&config.workspace.repo)?;
    let onto = onto.to_string();
    for Redo {
        id,
        before,
        context,
    } in tasks
    {
        let Some(rec) = state.task_mut(&id) else {
            continue;
        };
        if let Some((name, tip)) = crate::land::resolve::backup(&repo, &rec.branch, &id, before)? {
            crate::output::report(&format!(
                "resolve: {id}: {} was at {} (kept as {name}); it starts over from {}\n",
                rec.branch,
                &tip.to_string()[..10],
                &onto[..10]
            ));
        }
        rec.next = Some(NextAttempt {
            fresh: true,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: Some(context),
            base: Some(onto.clone()),
        });
        rec.requeues = 0;
        if rec.status != TaskStatus::Pending {
            rec.transition(TaskStatus::Pending)
                .map_err(|e| crate::error::Error::Other(e.to_string()))?;
        }
    }
    Ok(())
}

/// Bring the task list into state: new tasks are queued, interrupted ones
/// re-queued, changed prompts reported; failed tasks outside `scope` (when
/// there is one) are left as they are. Returns notices for the user.
pub(crate) fn merge_tasks(
    state: &mut State,
    tasks: &TaskSet,
    config: &Config,
    opts: &RunOptions,
    scope: Option<&HashSet<String>>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let worktrees = config.worktrees_dir();
    let mut failed_before = Vec::new();
    for t in &tasks.tasks {
        let hash = t.prompt_hash();
        let Some(rec) = state.task_mut(&t.id) else {
            state.push_task(TaskRecord {
                id: t.id.clone(),
                branch: t.branch.clone(),
                worktree: worktrees.join(&t.id),
                prompt_hash: hash,
                title: t.title.clone(),
                depends_on: t.depends_on.clone(),
                status: TaskStatus::Pending,
                attempts: Vec::new(),
                branch_created: false,
                requeues: 0,
                next: None,
                origin: None,
                expect_commits: t.expect_commits,
                not_retried: None,
                conflict: None,
                outside_footprint: Vec::new(),
            });
            continue;
        };
        rec.title = t.title.clone();
        rec.expect_commits = t.expect_commits;
        rec.depends_on = t.depends_on.clone();
        if rec.branch != t.branch && rec.attempts.is_empty() {
            rec.branch = t.branch.clone();
            rec.branch_created = false;
        }
        let changed = rec.prompt_hash != hash;
        match rec.status.clone() {
            TaskStatus::Done {
                outcome: Outcome::Success,
            } => {
                if changed {
                    notes.push(format!(
                        "task {} succeeded with an earlier prompt, and its prompt has changed since: it is not run again; `{}` runs it with the new one",
                        t.id,
                        crate::suggest::command(&["flocks", "retry", "--force", &t.id])
                    ));
                }
                continue;
            }
            TaskStatus::Done { outcome } if outcome.counts_against_retries() => {
                if scope.is_some_and(|s| !s.contains(&t.id)) {
                    continue;
                }
                if opts.supervise && rec.counted_failures() < 1 + opts.max_retries {
                    let last = rec.last_attempt().map(|a| a.number).unwrap_or(0);
                    rec.next = Some(crate::retry::next_after_failure(
                        rec,
                        last,
                        config,
                        &config.state_dir().join("logs"),
                    ));
                    if let Err(e) = rec.transition(TaskStatus::Pending) {
                        notes.push(format!("internal error, please report it: {e}"));
                    }
                } else {
                    failed_before.push(t.id.clone());
                    continue;
                }
            }
            TaskStatus::Done { .. } | TaskStatus::Blocked { .. } | TaskStatus::Running { .. } => {
                if let Err(e) = rec.transition(TaskStatus::Pending) {
                    notes.push(format!("internal error, please report it: {e}"));
                }
            }
            TaskStatus::Pending => {}
        }
        rec.requeues = 0;
        // It runs in this run: the attempt gets the new prompt, and the
        // dispatcher says how when it starts (fresh session or follow-up).
        if changed {
            rec.prompt_hash = hash;
        }
    }
    if !failed_before.is_empty() {
        notes.push(format!(
            "{} task(s) failed in an earlier run and are not run again: {} (`flocks retry --all-failed`, or `flocks run --supervise`)",
            failed_before.len(),
            failed_before.join(", ")
        ));
    }
    notes
}
