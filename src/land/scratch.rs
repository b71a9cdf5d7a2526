//! The land worktree, `.worktrees/.land`: a detached checkout where the
//! landed result is validated. It is kept between lands so that ignored build
//! output (target/, node_modules/) stays warm.

use std::fs;
use std::path::{Path, PathBuf};

use git2::{Oid, Repository, build::CheckoutBuilder};

use crate::error::{Context, Result};

pub(super) fn path(worktrees_dir: &Path) -> PathBuf {
    worktrees_dir.join(".land")
}

/// Where best-of variants are validated (`.worktrees/.judge`), apart from
/// the land worktree so that a `flocks land` and a run's judging never share one.
pub(super) fn judge_path(worktrees_dir: &Path) -> PathBuf {
    worktrees_dir.join(".judge")
}

/// The name of a scratch worktree's admin dir under `.git/worktrees/`:
/// `flocks-land` for `.land`, `flocks-judge` for `.judge`.
fn admin_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
        .unwrap_or_default();
    format!("flocks-{name}")
}

/// Check `commit` out (detached) in the land worktree at `path`, creating it
/// when needed. Untracked files that are not ignored are removed; ignored
/// ones stay.
pub(super) fn checkout(repo: &Repository, path: &Path, commit: Oid) -> Result<()> {
    if !is_worktree_of(repo, path) {
        create(repo, path, commit)?;
    }
    let wt = Repository::open(path).ctx(|| format!("open the land worktree {}", path.display()))?;
    let target = wt.find_commit(commit).ctx(|| format!("read {commit}"))?;
    let mut co = CheckoutBuilder::new();
    co.force().remove_untracked(true);
    wt.checkout_tree(target.as_object(), Some(&mut co))
        .ctx(|| format!("check out {commit} in {}", path.display()))?;
    wt.set_head_detached(commit)
        .ctx(|| format!("set HEAD of {}", path.display()))?;
    Ok(())
}

/// Remove the land worktree and its admin dir.
pub(super) fn remove(repo: &Repository, path: &Path) -> Result<bool> {
    let rel = Path::new("worktrees").join(admin_name(path));
    let existed = fs::symlink_metadata(path).is_ok();
    if existed {
        crate::fsat::remove_all(path).ctx(|| format!("remove {}", path.display()))?;
    }
    crate::fsat::remove_in(repo.commondir(), &rel)
        .ctx(|| format!("remove {}", repo.commondir().join(&rel).display()))?;
    Ok(existed)
}

fn is_worktree_of(repo: &Repository, path: &Path) -> bool {
    if !path.join(".git").is_file() {
        return false;
    }
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    Repository::open(path).is_ok_and(|wt| canon(wt.commondir()) == canon(repo.commondir()))
}

/// A linked worktree with a detached HEAD, made by hand the way git lays one
/// out (git2 only adds worktrees on a branch).
fn create(repo: &Repository, path: &Path, commit: Oid) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        crate::fsat::remove_all(path)
            .ctx(|| format!("remove the broken land worktree {}", path.display()))?;
    }
    fs::create_dir_all(path).ctx(|| format!("create {}", path.display()))?;
    let path = path
        .canonicalize()
        .ctx(|| format!("resolve {}", path.display()))?;
    let common = repo
        .commondir()
        .canonicalize()
        .ctx(|| "resolve the git dir".into())?;
    let admin = common.join("worktrees").join(admin_name(&path));
    crate::fsat::remove_in(&common, &Path::new("worktrees").join(admin_name(&path)))
        .ctx(|| format!("remove {}", admin.display()))?;
    fs::create_dir_all(&admin).ctx(|| format!("create {}", admin.display()))?;
    let write =
        |p: PathBuf, text: String| fs::write(&p, text).ctx(|| format!("write {}", p.display()));
    write(admin.join("HEAD"), format!("{commit}\n"))?;
    write(admin.join("commondir"), "../..\n".into())?;
    write(
        admin.join("gitdir"),
        format!("{}\n", path.join(".git").display()),
    )?;
    // Relative, so that git works where the repo is mounted elsewhere (a
    // `[validate] pool` container).
    let rel = crate::git::relative_path(&path, &admin);
    write(path.join(".git"), format!("gitdir: {}\n", rel.display()))?;
    Ok(())
}
