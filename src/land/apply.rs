//! The cherry-picks of a land: each ready task's commits, oldest first, on
//! top of the result so far (`git::cherry_pick`, commit objects only).

use git2::{Oid, Repository};

use super::plan::PlannedTask;
use crate::error::Result;
use crate::git::cherry_pick::{Applied, pick};

/// Cherry-pick `task`'s commits onto `onto`. Returns the new tip (== `onto`
/// when the task conflicted or changed nothing) and what happened.
pub(super) fn apply_task(
    repo: &Repository,
    onto: Oid,
    task: &PlannedTask,
) -> Result<(Oid, Applied)> {
    let commits: Vec<Oid> = task.commits.iter().map(|c| c.id).collect();
    pick(repo, onto, &task.id, &commits, true)
}
