//! `run --dry-run`: the checks a real run makes, with the same errors and
//! exit codes, then which pool each task would go to, in dependency order.

use std::path::PathBuf;

use super::preflight::{check_agents, check_branches, check_repo};
use crate::error::Result;
use crate::project::Project;
use crate::tasks::{TaskSet, dependency_order};

/// One task of the dry-run plan.
pub(crate) struct PlannedRun {
    /// 1-based position in dependency order.
    pub order: usize,
    pub id: String,
    pub branch: String,
    pub worktree: PathBuf,
    /// The pool it would go to; `None`: it succeeded already and is skipped.
    pub pool: Option<String>,
    pub depends_on: Vec<String>,
    /// `new`, `landed`, or its status label.
    pub status: &'static str,
    /// Its variants (`best_of`; 1: a plain task).
    pub variants: u32,
    /// The agent runs it implies at least: one per variant, and a judge
    /// agent for a best-of task with `[best_of] judge = true` (0: skipped).
    pub agent_runs: u32,
}

/// Check as a run would, then plan the pools without running anything.
pub(crate) fn plan(project: &Project, tasks: &TaskSet) -> Result<Vec<PlannedRun>> {
    let config = &project.config;
    let repo = check_repo(config)?;
    check_agents(config)?;
    let state = project.store.load()?;
    check_branches(&repo, &state, tasks)?;
    drop(repo);
    let landed = crate::land::landed_ids(project, &state);
    let order = dependency_order(&tasks.tasks).unwrap_or_else(|_| (0..tasks.tasks.len()).collect());
    let mut assigned = vec![0usize; config.pools.len()];
    let mut rows = Vec::new();
    for (step, &i) in order.iter().enumerate() {
        let t = &tasks.tasks[i];
        let status = match state.task(&t.id) {
            Some(_) if landed.contains(&t.id) => crate::view::LANDED,
            Some(r) => r.status.label(),
            None => "new",
        };
        let skip = state.task(&t.id).is_some_and(|r| r.status.is_success());
        let pool = if skip {
            None
        } else {
            let p = (0..config.pools.len())
                .min_by(|&a, &b| {
                    let la = assigned[a] as f64 / config.pools[a].max_worktrees as f64;
                    let lb = assigned[b] as f64 / config.pools[b].max_worktrees as f64;
                    la.partial_cmp(&lb).unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0);
            assigned[p] += 1;
            Some(config.pools[p].name.clone())
        };
        let variants = t.best_of.unwrap_or(config.best_of.n);
        let judge = u32::from(variants > 1 && config.best_of.judge);
        let agent_runs = if skip { 0 } else { variants + judge };
        rows.push(PlannedRun {
            order: step + 1,
            id: t.id.clone(),
            branch: t.branch.clone(),
            worktree: config.worktrees_dir().join(&t.id),
            pool,
            depends_on: t.depends_on.clone(),
            status,
            variants,
            agent_runs,
        });
    }
    Ok(rows)
}
