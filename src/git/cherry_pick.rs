//! Cherry-picks as commit objects only: no ref, index or working tree is
//! touched, so a task that conflicts simply leaves nothing behind. `land`
//! builds its chain with them, `start_from` a dependent's start.

use git2::{Oid, Repository};

use crate::error::{Context, Result};

/// What happened to one task's commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Applied {
    /// Its commits are in the chain (`commits` new ones; `dropped` changed
    /// nothing because the target already had their change).
    Picked {
        commits: Vec<(Oid, Oid)>,
        dropped: usize,
    },
    /// `commit` did not apply; nothing of the task is in the chain.
    Conflicted { commit: Oid, files: Vec<String> },
}

/// The paths with a conflict in a merged `index`, sorted, each once.
pub(crate) fn conflicted_files(index: &git2::Index) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for c in index.conflicts().ctx(|| "read conflicts".into())? {
        let c = c.ctx(|| "read conflicts".into())?;
        if let Some(e) = c.our.or(c.their).or(c.ancestor) {
            files.push(String::from_utf8_lossy(&e.path).into_owned());
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// Cherry-pick `commits` (oldest first) of task `id` onto `onto`, as commit
/// objects only; with `trailer`, each new commit carries `Flocks-Task: <id>`.
/// Also builds the start of a task that starts from its dependencies.
pub(crate) fn pick(
    repo: &Repository,
    onto: Oid,
    id: &str,
    commits: &[Oid],
    trailer: bool,
) -> Result<(Oid, Applied)> {
    let committer = crate::git::signature(repo);
    let mut head = repo.find_commit(onto).ctx(|| format!("read {onto}"))?;
    let mut picked = Vec::new();
    let mut dropped = 0;
    for &oid in commits {
        let commit = repo.find_commit(oid).ctx(|| format!("read commit {oid}"))?;
        let mut index = repo
            .cherrypick_commit(&commit, &head, 0, None)
            .ctx(|| format!("cherry-pick {} of task {id}", short(oid)))?;
        if index.has_conflicts() {
            let files = conflicted_files(&index)?;
            return Ok((onto, Applied::Conflicted { commit: oid, files }));
        }
        let tree_id = index
            .write_tree_to(repo)
            .ctx(|| "write the cherry-picked tree".into())?;
        if tree_id == head.tree_id() {
            dropped += 1;
            continue;
        }
        let tree = repo
            .find_tree(tree_id)
            .ctx(|| "read the cherry-picked tree".into())?;
        let original = String::from_utf8_lossy(commit.message_raw_bytes());
        let message = if trailer {
            super::trailer::add(&original, id)
        } else {
            original.into_owned()
        };
        let new = repo
            .commit(
                None,
                &commit.author(),
                &committer,
                &message,
                &tree,
                &[&head],
            )
            .ctx(|| format!("commit the cherry-pick of {}", short(oid)))?;
        picked.push((oid, new));
        head = repo.find_commit(new).ctx(|| format!("read {new}"))?;
    }
    Ok((
        head.id(),
        Applied::Picked {
            commits: picked,
            dropped,
        },
    ))
}

fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}
