//! The `Flocks-Task: <id>` trailer every landed commit carries, and reading
//! "already landed" back from the target's history.
//!
//! The trailer, not a file, is the record that a task landed: a crash between
//! moving the ref and writing `land.json` can therefore never land it twice.

use std::collections::HashMap;

use git2::{Oid, Repository, Sort};

use crate::error::{Context, Result};

use crate::git::trailer::task_ids;

/// Where each task's landed commits are in the target's history.
#[derive(Debug, Default)]
pub(super) struct Landed {
    /// Each landed commit with its committer time (seconds).
    by_task: HashMap<String, Vec<(Oid, i64)>>,
}

impl Landed {
    /// Walk the target's history from `tip` down to what it shares with every
    /// one of `starts` (the start commits of the tasks in question), collecting
    /// `Flocks-Task` trailers. The walk stops at the common ancestor, so it
    /// reads only the commits made on the target since the tasks forked.
    pub(super) fn scan(repo: &Repository, tip: Oid, starts: &[Oid]) -> Result<Landed> {
        let mut walk = repo.revwalk().ctx(|| "walk the target's history".into())?;
        walk.set_sorting(Sort::NONE)
            .ctx(|| "walk the target's history".into())?;
        walk.push(tip).ctx(|| "walk the target's history".into())?;
        if !starts.is_empty() {
            let mut all = vec![tip];
            all.extend_from_slice(starts);
            // The ancestor common to all of them (`git merge-base
            // --octopus`); `merge_base_many` is `git merge-base`, which
            // stops at the tip when a start is the tip itself.
            if let Ok(base) = repo.merge_base_octopus(&all) {
                walk.hide(base).ctx(|| "walk the target's history".into())?;
            }
        }
        let mut landed = Landed::default();
        for oid in walk {
            let oid = oid.ctx(|| "walk the target's history".into())?;
            let commit = repo.find_commit(oid).ctx(|| format!("read commit {oid}"))?;
            let message = String::from_utf8_lossy(commit.message_raw_bytes());
            for id in task_ids(&message) {
                let when = commit.committer().when().seconds();
                landed.by_task.entry(id).or_default().push((oid, when));
            }
        }
        Ok(landed)
    }

    /// Has the attempt of task `id` that started at `start` and ended at
    /// `ended` (unix seconds) landed? Only a trailer commit made after the
    /// attempt ended can be its landing: an earlier one landed an earlier
    /// attempt (the task was retried after it landed). And a trailer commit
    /// that `start` already contains is an earlier landing the attempt was
    /// built on (the task was redone from a base that held it).
    pub(super) fn is_landed(
        &self,
        repo: &Repository,
        id: &str,
        start: Oid,
        ended: Option<i64>,
    ) -> bool {
        self.commits(id).iter().any(|&(c, when)| {
            ended.is_none_or(|e| when >= e)
                && c != start
                && !repo.graph_descendant_of(start, c).unwrap_or(false)
        })
    }

    /// The landed commits of a task, with their committer times.
    pub(super) fn commits(&self, id: &str) -> &[(Oid, i64)] {
        self.by_task.get(id).map(Vec::as_slice).unwrap_or(&[])
    }
}
