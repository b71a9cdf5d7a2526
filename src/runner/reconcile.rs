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
    let running: Vec<usize> = state
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.status, TaskStatus::Running { .. }))
        .map(|(i, _)| i)
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
        running
            .iter()
            .map(|&i| state.tasks[i].id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for i in running {
        let rec = &mut state.tasks[i];
        let id = rec.id.clone();
        let attempt_no = match rec.status {
            TaskStatus::Running { attempt, .. } => attempt,
            _ => continue,
        };
        let worktree = rec.worktree.clone();
        let branch = rec.branch.clone();
        let mut tip = None;
        if worktree.exists() {
            let msg = format!("flocks: uncommitted changes left by attempt {attempt_no}");
            if let Err(e) = crate::git::commit_leftovers(&worktree, &msg) {
                notes.push(format!("task {id}: could not commit its leftovers: {e}"));
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
        if let Err(e) = rec.transition(TaskStatus::Done {
            outcome: Outcome::Interrupted,
        }) {
            notes.push(format!("internal error, please report it: {e}"));
        }
    }
    notes
}
