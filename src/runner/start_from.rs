//! The start of a task with `"start_from": "dependencies"`: the base with each
//! dependency's work (`origin..tip` over all its attempts, transitively, in
//! dependency order) cherry-picked onto it, the way `land` replays a range. Only commit
//! objects are built: no checkout, index or ref is touched, so dependencies
//! that do not combine leave nothing behind and the task is blocked instead.

use std::collections::HashSet;

use git2::{Oid, Repository};

use crate::land::{Applied, commits, pick, task_range};
use crate::state::State;
use crate::tasks::TaskSet;

/// Every task `id` depends on, directly or not, each once, in `order`
/// (indices of `tasks` with dependencies first).
pub fn closure(tasks: &TaskSet, order: &[usize], id: &str) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = tasks
        .get(id)
        .map(|t| t.depends_on.iter().map(String::as_str).collect())
        .unwrap_or_default();
    while let Some(d) = stack.pop() {
        if seen.insert(d)
            && let Some(t) = tasks.get(d)
        {
            stack.extend(t.depends_on.iter().map(String::as_str));
        }
    }
    order
        .iter()
        .map(|&i| tasks.tasks[i].id.as_str())
        .filter(|t| seen.contains(t))
        .map(str::to_string)
        .collect()
}

/// One dependency's recorded work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepRange {
    pub id: String,
    pub start: Oid,
    pub tip: Oid,
}

/// The work of `deps`, or why one cannot be had.
pub fn ranges(repo: &Repository, state: &State, deps: &[String]) -> Result<Vec<DepRange>, String> {
    deps.iter()
        .map(|d| {
            let rec = state
                .task(d)
                .ok_or_else(|| format!("its dependency `{d}` has not run"))?;
            let r = task_range(repo, rec)
                .map_err(|why| format!("its dependency `{d}` cannot be started from: {why}"))?;
            Ok(DepRange {
                id: d.clone(),
                start: r.origin,
                tip: r.tip,
            })
        })
        .collect()
}

/// Build the start commit: `base` with each range applied in turn. The error
/// says, for people, which dependency's commit did not apply and where.
pub fn build(repo: &Repository, base: Oid, deps: &[DepRange]) -> Result<Oid, String> {
    let mut tip = base;
    let mut applied: Vec<&str> = Vec::new();
    for d in deps {
        for c in [d.start, d.tip] {
            if repo.find_commit(c).is_err() {
                return Err(format!(
                    "commit {} of its dependency `{}` is not in the repository",
                    short(c),
                    d.id
                ));
            }
        }
        let commits: Vec<Oid> = commits(repo, d.start, d.tip)
            .map_err(|e| format!("cannot read the commits of its dependency `{}`: {e}", d.id))?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let (next, outcome) = pick(repo, tip, &d.id, &commits, false).map_err(|e| {
            format!(
                "cannot apply the work of its dependency `{}` onto the base: {e}",
                d.id
            )
        })?;
        if let Applied::Conflicted { commit, files } = outcome {
            let onto = if applied.is_empty() {
                "the base".to_string()
            } else {
                format!(
                    "the base with {}",
                    applied
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(format!(
                "its dependencies' work conflicts: commit {} of `{}` does not apply onto {onto} (conflicts in {}); \
                 land or reconcile them, then `flocks run` again, or drop \"start_from\" for this task",
                short(commit),
                d.id,
                files.join(", ")
            ));
        }
        applied.push(&d.id);
        tip = next;
    }
    Ok(tip)
}

fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}
