//! The start of a task with `"start_from": "dependencies"`: the base with each
//! dependency's work (`origin..tip` over all its attempts, transitively, in
//! dependency order) cherry-picked onto it, the way `land` replays a range. Only commit
//! objects are built: no checkout, index or ref is touched, so dependencies
//! that do not combine leave nothing behind and the task is blocked instead.

use std::path::PathBuf;

use git2::{Oid, Repository};

use crate::git::cherry_pick::{Applied, pick};
use crate::land::{NoRange, commits, task_range};
use crate::state::TaskRecord;

/// The inputs of a dependency start: the records of the task's dependencies
/// (transitively, in dependency order) as they are now.
#[derive(Debug)]
pub(crate) struct DependencyJob {
    pub task: String,
    pub branch: String,
    pub repo: PathBuf,
    pub base: String,
    pub fresh: bool,
    pub deps: Vec<TaskRecord>,
}

/// Why a task cannot start from its dependencies' work. The task is blocked
/// with this reason, which says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The repo, the task's branch or its base could not be read.
    #[error(transparent)]
    Repo(#[from] crate::error::Error),
    #[error("its dependency `{id}` cannot be started from: {why}")]
    NoRange { id: String, why: NoRange },
    #[error("commit {} of its dependency `{id}` is not in the repository", short(*.commit))]
    Missing { id: String, commit: Oid },
    #[error("cannot read the commits of its dependency `{id}`: {source}")]
    Commits {
        id: String,
        source: crate::error::Error,
    },
    #[error("cannot apply the work of its dependency `{id}` onto the base: {source}")]
    Apply {
        id: String,
        source: crate::error::Error,
    },
    /// A dependency's commit does not apply onto the base with the work of
    /// the dependencies before it (`onto` says which).
    #[error(
        "its dependencies' work conflicts: commit {} of `{id}` does not apply onto {onto} (conflicts in {}); \
         land or reconcile them, then `flocks run` again, or drop \"start_from\" for this task",
        short(*.commit),
        .files.join(", ")
    )]
    Conflict {
        id: String,
        commit: Oid,
        onto: String,
        files: Vec<String>,
    },
    /// Building the start panicked (a bug).
    #[error("internal error, please report it: building its start failed: {0}")]
    Panicked(String),
}

/// The start of the task in `job`: None when its branch exists and is kept
/// (a retry builds on it; `--fresh` rebuilds the start), or why the
/// dependencies' work cannot be combined. Runs off the dispatch loop.
pub(crate) fn dependency_start(job: &DependencyJob) -> Result<Option<String>, StartError> {
    let repo = crate::git::open(&job.repo)?;
    let exists = crate::git::branch_tip(&repo, &job.branch)?.is_some();
    if exists && !job.fresh {
        return Ok(None);
    }
    let base = crate::git::resolve_commit(&repo, &job.base)?;
    let ranges = ranges(&repo, &job.deps)?;
    build(&repo, base, &ranges).map(|oid| Some(oid.to_string()))
}

/// One dependency's recorded work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DepRange {
    pub id: String,
    pub start: Oid,
    pub tip: Oid,
}

/// The work of `deps` (their records), or why one cannot be had.
pub(crate) fn ranges(repo: &Repository, deps: &[TaskRecord]) -> Result<Vec<DepRange>, StartError> {
    deps.iter()
        .map(|rec| {
            let d = &rec.id;
            let r =
                task_range(repo, rec).map_err(|why| StartError::NoRange { id: d.clone(), why })?;
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
pub(crate) fn build(repo: &Repository, base: Oid, deps: &[DepRange]) -> Result<Oid, StartError> {
    let mut tip = base;
    let mut applied: Vec<&str> = Vec::new();
    for d in deps {
        for c in [d.start, d.tip] {
            if repo.find_commit(c).is_err() {
                return Err(StartError::Missing {
                    id: d.id.clone(),
                    commit: c,
                });
            }
        }
        let commits: Vec<Oid> = commits(repo, d.start, d.tip)
            .map_err(|source| StartError::Commits {
                id: d.id.clone(),
                source,
            })?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let (next, outcome) =
            pick(repo, tip, &d.id, &commits, false).map_err(|source| StartError::Apply {
                id: d.id.clone(),
                source,
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
            return Err(StartError::Conflict {
                id: d.id.clone(),
                commit,
                onto,
                files,
            });
        }
        applied.push(&d.id);
        tip = next;
    }
    Ok(tip)
}

fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}
