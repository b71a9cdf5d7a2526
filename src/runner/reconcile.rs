//! After a crash: tasks a dead run left `running` are stopped (their agents may
//! still be alive), their leftovers committed, and marked interrupted, so that
//! the new run re-queues them without losing or repeating work.

use std::time::Duration;

use chrono::Utc;

use crate::config::Config;
use crate::proc;
use crate::state::{Outcome, State, TaskStatus};

/// Returns what was done, for the user.
pub fn reconcile(state: &mut State, config: &Config, project_key: &str) -> Vec<String> {
    let mut notes = Vec::new();
    let running: Vec<String> = state
        .tasks
        .iter()
        .filter(|t| matches!(t.status, TaskStatus::Running { .. }))
        .map(|t| t.id.clone())
        .collect();
    let prefix = format!("{project_key}:");
    let survivors = proc::tagged(&prefix);
    if !survivors.is_empty() {
        notes.push(format!(
            "stopping {} process(es) left running by an earlier flocks run",
            survivors.len()
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
            "stopped what was left in {swept} cgroup(s) of an earlier flocks run's agents"
        ));
    }
    if running.is_empty() {
        return notes;
    }
    let pid = state.run.as_ref().map(|r| r.pid).unwrap_or(0);
    notes.push(format!(
        "{} task(s) were left running by a flocks run that ended abruptly (pid {pid}); they go back to the queue: {}",
        running.len(),
        running.join(", ")
    ));
    for id in running {
        let Some(rec) = state.task_mut(&id) else {
            continue;
        };
        let attempt_no = match rec.status {
            TaskStatus::Running { attempt, .. } => attempt,
            _ => continue,
        };
        let worktree = rec.worktree.clone();
        let branch = rec.branch.clone();
        let mut tip = None;
        // Local and container worktrees; remote ones (`host:path`) are the
        // ssh backend's to recover.
        if worktree.exists() {
            match crate::git::check_task_worktree(
                &config.workspace.repo,
                &config.worktrees_dir(),
                &id,
                &worktree,
            ) {
                Ok(wt) => {
                    let msg = format!("flocks: uncommitted changes left by attempt {attempt_no}");
                    if let Err(e) = crate::git::commit_leftovers(&wt, &msg) {
                        notes.push(format!("task {id}: could not commit its leftovers: {e}"));
                    }
                }
                Err(why) => notes.push(format!("task {id}: {why}")),
            }
        }
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
        let _ = rec.transition(TaskStatus::Done {
            outcome: Outcome::Interrupted,
        });
    }
    notes
}
