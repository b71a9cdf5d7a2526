//! Local git work through git2: the repository, excludes, commits that flocks
//! makes itself, and commit ranges.

pub(crate) mod cherry_pick;
pub(crate) mod include;
pub(crate) mod intake;
pub(crate) mod provenance;
pub(crate) mod trailer;
pub(crate) mod upkeep;
mod worktree;
pub(crate) use worktree::relative_path;

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, Signature, StatusOptions};

pub(crate) use worktree::{SPARE_DIR, Worktrees, check_task_worktree};

use crate::error::{Context, Error, Result};

/// Open the project's repository with a message that says what to do.
pub(crate) fn open(repo: &Path) -> Result<Repository> {
    Repository::open(repo).map_err(|_| {
        Error::Usage(format!(
            "{} is not a git repository: run flocks in a git repository (`git init` and a first commit make one), or point [workspace] repo in flocks.toml at one",
            repo.display(),
        ))
    })
}

/// The commit a branch points at.
pub(crate) fn branch_tip(repo: &Repository, branch: &str) -> Result<Option<Oid>> {
    match repo.find_reference(&format!("refs/heads/{branch}")) {
        Ok(r) => Ok(Some(
            r.peel_to_commit()
                .ctx(|| format!("read branch {branch}"))?
                .id(),
        )),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("read branch {branch}")),
    }
}

/// The commit a revision (branch, tag, sha) names.
pub(crate) fn resolve_commit(repo: &Repository, rev: &str) -> Result<Oid> {
    let obj = repo.revparse_single(rev).map_err(|_| {
        if has_no_commit(repo) {
            return Error::Usage(format!(
                "the repository at {} has no commit yet, so tasks have nothing to start from: make a first commit (git commit --allow-empty -m \"first commit\") and run again",
                repo.workdir()
                    .unwrap_or(repo.path())
                    .components()
                    .collect::<PathBuf>()
                    .display()
            ));
        }
        Error::Usage(format!(
            "`{rev}` names no commit in {}: set [workspace] base in flocks.toml to a branch, tag or commit there (`git branch` lists the branches)",
            repo.workdir()
                .unwrap_or(repo.path())
                .components()
                .collect::<PathBuf>()
                .display()
        ))
    })?;
    Ok(obj.peel_to_commit().ctx(|| format!("resolve {rev}"))?.id())
}

/// HEAD is unborn and no reference names anything: a repository before its
/// first commit (whatever its initial branch is called).
fn has_no_commit(repo: &Repository) -> bool {
    let unborn = matches!(repo.head(), Err(e) if e.code() == git2::ErrorCode::UnbornBranch);
    unborn
        && repo
            .references()
            .is_ok_and(|mut refs| refs.next().is_none())
}

/// The repo's configured identity, or flocks' fallback.
pub(crate) fn signature(repo: &Repository) -> Signature<'static> {
    repo.signature().map(|s| s.to_owned()).unwrap_or_else(|_| {
        Signature::now("flocks", "flocks@localhost").expect("static signature is valid")
    })
}

/// Add `patterns` to `.git/info/exclude` (of the common dir) if missing. Never
/// touches a tracked file.
pub(crate) fn ensure_excluded(repo: &Repository, patterns: &[String]) -> Result<()> {
    let info = repo.commondir().join("info");
    std::fs::create_dir_all(&info).ctx(|| format!("create {}", info.display()))?;
    let path = info.join("exclude");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut add = String::new();
    for p in patterns {
        if !existing.lines().any(|l| l.trim() == p) {
            add.push_str(p);
            add.push('\n');
        }
    }
    if add.is_empty() {
        return Ok(());
    }
    let mut text = existing;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if !text.contains("# flocks") {
        text.push_str("# flocks: run state and task worktrees\n");
    }
    text.push_str(&add);
    std::fs::write(&path, text).ctx(|| format!("write {}", path.display()))
}

/// Exclude patterns for `.flocks/` and `.worktrees/` relative to the repo root,
/// for the ones that lie inside it.
pub(crate) fn exclude_patterns(repo_root: &Path, dirs: &[PathBuf]) -> Vec<String> {
    dirs.iter()
        .filter_map(|d| d.strip_prefix(repo_root).ok())
        .filter(|rel| !rel.as_os_str().is_empty())
        .map(|rel| format!("/{}/", rel.display()))
        .collect()
}

/// Commit whatever is left uncommitted in `worktree` (ignored files excepted),
/// as its own commit on HEAD. Returns the new commit, if one was needed.
/// Put every tracked file of a worktree back as its HEAD has it (a
/// checkout that a kill cut short), leaving untracked files alone.
pub(crate) fn restore_checkout(worktree: &Path) -> Result<()> {
    let repo =
        Repository::open(worktree).ctx(|| format!("open worktree {}", worktree.display()))?;
    let mut co = git2::build::CheckoutBuilder::new();
    co.force();
    repo.checkout_head(Some(&mut co))
        .ctx(|| format!("check out HEAD in {}", worktree.display()))
}

/// Put a worktree back to its HEAD: tracked files as HEAD has them,
/// untracked ones removed (ignored ones, such as build caches, stay).
pub(crate) fn reset_worktree(worktree: &Path) -> Result<()> {
    let repo =
        Repository::open(worktree).ctx(|| format!("open worktree {}", worktree.display()))?;
    let mut co = git2::build::CheckoutBuilder::new();
    co.force().remove_untracked(true);
    repo.checkout_head(Some(&mut co))
        .ctx(|| format!("reset {}", worktree.display()))?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .ctx(|| "read HEAD".into())?;
    repo.reset(head.as_object(), git2::ResetType::Hard, Some(&mut co))
        .ctx(|| format!("reset {}", worktree.display()))
}

pub(crate) fn commit_leftovers(worktree: &Path, message: &str) -> Result<Option<Oid>> {
    let repo =
        Repository::open(worktree).ctx(|| format!("open worktree {}", worktree.display()))?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    let dirty = !repo
        .statuses(Some(&mut opts))
        .ctx(|| "read worktree status".into())?
        .is_empty();
    if !dirty {
        return Ok(None);
    }
    let mut index = repo.index().ctx(|| "read index".into())?;
    index
        .add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)
        .ctx(|| "stage leftovers".into())?;
    index
        .update_all(["*"].iter(), None)
        .ctx(|| "stage deletions".into())?;
    index.write().ctx(|| "write index".into())?;
    let tree_id = index.write_tree().ctx(|| "write tree".into())?;
    let tree = repo.find_tree(tree_id).ctx(|| "read tree".into())?;
    let parent = match repo.head() {
        Ok(h) => Some(h.peel_to_commit().ctx(|| "read HEAD".into())?),
        Err(_) => None,
    };
    if let Some(p) = &parent
        && p.tree_id() == tree_id
    {
        return Ok(None);
    }
    let sig = signature(&repo);
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let oid = repo
        .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .ctx(|| "commit leftovers".into())?;
    Ok(Some(oid))
}

/// Commits reachable from `tip` that `start` lacks.
pub(crate) fn commits_ahead(repo: &Repository, tip: Oid, start: Oid) -> Result<usize> {
    if tip == start {
        return Ok(0);
    }
    let (ahead, _) = repo
        .graph_ahead_behind(tip, start)
        .ctx(|| "compare commits".into())?;
    Ok(ahead)
}

#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::process::Command;

    /// Run the git CLI in `dir` (with a fixed identity, no system config);
    /// its trimmed stdout, or a panic with its stderr.
    pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "A")
            .env("GIT_AUTHOR_EMAIL", "a@example.com")
            .env("GIT_COMMITTER_NAME", "A")
            .env("GIT_COMMITTER_EMAIL", "a@example.com")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A repo with one commit on `main`, made with the git CLI.
    pub(crate) fn init_repo(dir: &Path) {
        let run = |args: &[&str]| {
            git(dir, args);
        };
        run(&["init", "-q", "-b", "main"]);
        run(&["config", "user.name", "Test"]);
        run(&["config", "user.email", "test@example.com"]);
        std::fs::write(dir.join("README.md"), "hello\n").unwrap();
        run(&["add", "."]);
        run(&["commit", "-q", "-m", "init"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_become_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        testing::init_repo(dir.path());
        assert_eq!(commit_leftovers(dir.path(), "x").unwrap(), None);
        std::fs::write(dir.path().join("new.txt"), "n").unwrap();
        std::fs::remove_file(dir.path().join("README.md")).unwrap();
        let oid = commit_leftovers(dir.path(), "flocks: uncommitted changes left by attempt 1")
            .unwrap()
            .unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        let c = repo.find_commit(oid).unwrap();
        assert_eq!(
            c.message().unwrap(),
            "flocks: uncommitted changes left by attempt 1"
        );
        assert!(c.tree().unwrap().get_name("README.md").is_none());
        assert!(c.tree().unwrap().get_name("new.txt").is_some());
    }

    #[test]
    fn excludes_are_added_once() {
        let dir = tempfile::tempdir().unwrap();
        testing::init_repo(dir.path());
        let repo = Repository::open(dir.path()).unwrap();
        let pats = exclude_patterns(
            dir.path(),
            &[dir.path().join(".flocks"), dir.path().join(".worktrees")],
        );
        ensure_excluded(&repo, &pats).unwrap();
        ensure_excluded(&repo, &pats).unwrap();
        let text = std::fs::read_to_string(dir.path().join(".git/info/exclude")).unwrap();
        assert_eq!(text.matches("/.flocks/").count(), 1);
        assert_eq!(text.matches("/.worktrees/").count(), 1);
    }
}
