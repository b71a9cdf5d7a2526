//! The start of a task with `"start_from": "dependencies"`: the base with each
//! dependency's work (`origin..tip` over all its attempts, transitively, in
//! dependency order) cherry-picked onto it, the way `land` replays a range. Only commit
//! objects are built: no checkout, index or ref is touched, so dependencies
//! that do not combine leave nothing behind and the task is blocked instead.

use git2::{Oid, Repository};

use super::fleet::DependencyJob;
use crate::land::{Applied, commits, pick, task_range};
use crate::state::TaskRecord;

/// The start of the task in `job`: None when its branch exists and is kept
/// (a retry builds on it; `--fresh` rebuilds the start), or why the
/// dependencies' work cannot be combined. Runs off the dispatch loop.
pub fn dependency_start(job: &DependencyJob) -> Result<Option<String>, String> {
    let repo = crate::git::open(&job.repo).map_err(|e| e.to_string())?;
    let exists = crate::git::branch_tip(&repo, &job.branch)
        .map_err(|e| e.to_string())?
        .is_some();
    if exists && !job.fresh {
        return Ok(None);
    }
    let base = crate::git::resolve_commit(&repo, &job.base).map_err(|e| e.to_string())?;
    let ranges = ranges(&repo, &job.deps)?;
    build(&repo, base, &ranges).map(|oid| Some(oid.to_string()))
}

/// One dependency's recorded work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepRange {
    pub id: String,
    pub start: Oid,
    pub tip: Oid,
}

/// The work of `deps` (their records), or why one cannot be had.
pub fn ranges(repo: &Repository, deps: &[TaskRecord]) -> Result<Vec<DepRange>, String> {
    deps.iter()
        .map(|rec| {
            let d = &rec.id;
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
