//! Whether a path state.json names (agents can write it) is the task's
//! worktree flocks may touch.

use std::fs;
use std::path::{Component, Path, PathBuf};

use git2::Repository;

/// A path state.json names as a task's worktree that flocks will not touch.
#[derive(Debug, thiserror::Error)]
#[error(
    "state.json names {} as task {id}'s worktree, but {why}; flocks leaves it alone",
    .path.display()
)]
pub(crate) struct NotTheWorktree {
    pub path: PathBuf,
    pub id: String,
    pub why: NotTheWorktreeBecause,
}

/// Why a path is not the task's worktree.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotTheWorktreeBecause {
    #[error("it is not {}", .0.display())]
    NotExpected(PathBuf),
    #[error("it is not a directory (a link?)")]
    NotADirectory,
    #[error("it cannot be read ({0})")]
    Unreadable(std::io::Error),
    #[error("it cannot be resolved")]
    Unresolved,
    #[error("a link leads out of the worktrees directory")]
    LinkOut,
    #[error("it is not a linked worktree of this repository")]
    NotLinked,
}

/// Check that `path`, read from state.json (which agents in a container can
/// write), is task `id`'s worktree of the repo at `repo_dir`: exactly
/// `<root>/<id>`, no link on the way, and a linked worktree of this repo.
/// The path, resolved, or why it is not one to touch.
pub(crate) fn check_task_worktree(
    repo_dir: &Path,
    root: &Path,
    id: &str,
    path: &Path,
) -> std::result::Result<PathBuf, NotTheWorktree> {
    use NotTheWorktreeBecause as Because;
    let refuse = |why: Because| {
        Err(NotTheWorktree {
            path: path.to_path_buf(),
            id: id.to_string(),
            why,
        })
    };
    let expected = root.join(id);
    if crate::paths::normalize(path) != crate::paths::normalize(&expected)
        || Path::new(id).components().count() != 1
        || !matches!(
            Path::new(id).components().next(),
            Some(Component::Normal(_))
        )
    {
        return refuse(Because::NotExpected(expected));
    }
    match fs::symlink_metadata(&expected) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return refuse(Because::NotADirectory),
        Err(e) => return refuse(Because::Unreadable(e)),
    }
    let (Ok(root_c), Ok(wt_c)) = (root.canonicalize(), expected.canonicalize()) else {
        return refuse(Because::Unresolved);
    };
    if wt_c.parent() != Some(root_c.as_path()) {
        return refuse(Because::LinkOut);
    }
    let ours = Repository::open(repo_dir).map(|r| r.commondir().canonicalize());
    let theirs = Repository::open(&wt_c).map(|r| (r.is_worktree(), r.commondir().canonicalize()));
    match (ours, theirs) {
        (Ok(Ok(a)), Ok((true, Ok(b)))) if a == b => Ok(wt_c),
        _ => refuse(Because::NotLinked),
    }
}
