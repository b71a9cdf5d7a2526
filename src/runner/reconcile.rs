//! After a crash: tasks a dead run left `running` are stopped (their agents may
//! still be alive), their leftovers committed, and marked interrupted, so that
//! the new run re-queues them without losing or repeating work.

use std::time::Duration;

use chrono::Utc;

use crate::config::Config;
use crate::proc;
use crate::state::{Outcome, State, TaskStatus};

/// Returns what was done, for the user.
pub(crate) fn reconcile(state: &mut State, config: &Config, project_key: &str) -> Vec<String> {
    let mut notes = Vec::new();
    // Tasks and best-of variants (by their ids: `state.task_mut` finds both).
    let running: Vec<String> = state
        .tasks
        .iter()
        .flat_map(|t| std::iter::once(t).chain(&t.variants))
        .filter(|t| matches!(t.status, TaskStatus::Running { .. }))
        .map(|t| t.id.clone())
        .collect();
    let prefix = format!("{project_key}:");
    let survivors = proc::tagged(&prefix);
    if !survivors.is_empty() {
        notes.push(format!(
            "stopping {} left running by an earlier flocks run",
            crate::output::units::count(survivors.len(), "process")
        ));
        proc::stop_all(
            || proc::tagged(&prefix),
            config.kill_grace.min(Duration::from_secs(10)),
            || {},
        );
    }
    // The cgroups of attempts whose supervisor and watchdog were both killed.
    let swept = crate::cgroup::sweep(&crate::cgroup::prefix_for(&prefix));
    if swept > 0 {
        notes.push(format!(
            "stopped what was left in {} of an earlier flocks run's agents",
            crate::output::units::count(swept, "cgroup")
        ));
    }
    if running.is_empty() {
        return notes;
    }
    let pid = state.run.as_ref().map(|r| r.pid).unwrap_or(0);
    notes.push(format!(
        "{} left running by a flocks run that ended abruptly (pid {pid}); {} back to the queue: {}",
        crate::output::units::count(running.len(), "task"),
        crate::output::units::noun_for(running.len(), "it goes", "they go"),
        running.join(", ")
    ));
    for id in running {
        interrupt(state, config, &id, &mut notes);
    }
    notes
}

/// One task a dead run left running: its stale git locks removed, its
/// worktree restored or its leftovers committed, its attempt interrupted.
fn interrupt(state: &mut State, config: &Config, id: &str, notes: &mut Vec<String>) {
    let Some(rec) = state.task_mut(id) else {
        return;
    };
    let id = rec.id.clone();
    let attempt_no = match rec.status {
        TaskStatus::Running { attempt, .. } => attempt,
        _ => return,
    };
    let worktree = rec.worktree.clone();
    let branch = rec.branch.clone();
    let mut tip = None;
    // An attempt whose start was never saved may have died while its
    // worktree was being checked out: what is missing there is not the
    // agent's work, and committing it would delete files on the branch.
    let prepared = rec
        .attempts
        .iter()
        .any(|a| a.number == attempt_no && a.start_commit.is_some());
    remove_stale_locks(config, &id, &branch, notes);
    recover_worktree(config, &id, &worktree, prepared, attempt_no, notes);
    if let Ok(repo) = crate::git::open(&config.workspace.repo)
        && let Ok(Some(t)) = crate::git::branch_tip(&repo, &branch)
    {
        tip = Some(t.to_string());
    }
    if let Some(a) = rec.attempt_mut(attempt_no) {
        a.ended_at = Some(Utc::now());
        a.outcome = Some(Outcome::Interrupted);
        if a.end_tip.is_none() {
            a.end_tip = tip;
        }
    }
    if let Err(e) = rec.transition(TaskStatus::Done {
        outcome: Outcome::Interrupted,
    }) {
        notes.push(format!("internal error, please report it: {e}"));
    }
}

/// A kill in the middle of a ref or index update leaves git's lock file
/// behind; the dead run was the only writer of this task's branch and
/// worktree index, so its locks are stale.
fn remove_stale_locks(config: &Config, id: &str, branch: &str, notes: &mut Vec<String>) {
    // (The branch name comes from state.json, which agents can write: only
    // a valid ref name may become a path.)
    if let Ok(repo) = crate::git::open(&config.workspace.repo)
        && git2::Reference::is_valid_name(&format!("refs/heads/{branch}"))
    {
        let common = repo.commondir().to_path_buf();
        let locks = [
            common.join("refs/heads").join(format!("{branch}.lock")),
            common.join("worktrees").join(id).join("index.lock"),
        ];
        for lock in locks.iter().filter(|l| l.exists()) {
            match std::fs::remove_file(lock) {
                Ok(()) => notes.push(format!(
                    "task {id}: removed {}, left by the run that ended abruptly",
                    lock.display()
                )),
                Err(e) => notes.push(format!(
                    "task {id}: could not remove {} ({e}); remove it by hand",
                    lock.display()
                )),
            }
        }
    }
}

/// Local and container worktrees; remote ones (`host:path`) are the ssh
/// backend's to recover. A path from state.json is used only when it is this
/// repo's worktree of this task (agents can write state.json).
fn recover_worktree(
    config: &Config,
    id: &str,
    worktree: &std::path::Path,
    prepared: bool,
    attempt_no: u32,
    notes: &mut Vec<String>,
) {
    if worktree.exists() {
        match crate::git::check_task_worktree(
            &config.workspace.repo,
            &config.worktrees_dir(),
            id,
            worktree,
        ) {
            Ok(wt) if !prepared => {
                if let Err(e) = crate::git::restore_checkout(&wt) {
                    notes.push(format!("task {id}: could not restore its worktree: {e}"));
                }
            }
            Ok(wt) => {
                let msg = format!("flocks: uncommitted changes left by attempt {attempt_no}");
                if let Err(e) = crate::git::commit_leftovers(&wt, &msg) {
                    notes.push(format!("task {id}: could not commit its leftovers: {e}"));
                }
            }
            Err(why) => notes.push(format!("task {id}: {why}")),
        }
    }
}
