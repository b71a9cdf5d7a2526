//! Moving the target branch: where it is checked out, whether that checkout
//! is clean, and the move itself (checkout, then a compare-and-swap of the
//! ref).
//!
//! Where the target is checked out (the main worktree or a linked one), its
//! working tree and index move with it. A checkout with uncommitted changes
//! to tracked files is refused outright, before anything is built: flocks
//! does not try to apply around dirty files, because a half-merged checkout
//! of the user's main branch is worse than a land that waits for a commit or
//! a stash. Untracked and ignored files are left alone; if one is in the way
//! of a file the move adds (a land, or an `--undo` that brings a file back),
//! the move is refused before anything is written, naming it: the user's
//! ignored `local.env` is never overwritten nor deleted.
//!
//! Order of the move, for crash safety: (1) the checkout's files and index are
//! brought to the new tree, writing only the files that differ (libgit2 checks
//! every conflict before it writes anything); (2) the ref moves by
//! compare-and-swap. A crash between the two leaves the ref where it was and
//! the new files uncommitted in the checkout: nothing has landed, and
//! `git reset --hard` in that checkout puts it back. If the ref moved meanwhile
//! the checkout is put back and the land stops.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository, StatusOptions, build::CheckoutBuilder};

use super::range::short;
use crate::error::{Context, Result};

/// The worktrees (main first) whose HEAD is `refname`.
pub(super) fn checkouts(repo: &Repository, refname: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let head_of = |r: &Repository| {
        r.find_reference("HEAD")
            .ok()
            .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
    };
    let main = Repository::open(repo.commondir())
        .ctx(|| format!("open {}", repo.commondir().display()))?;
    if !main.is_bare()
        && head_of(&main).as_deref() == Some(refname)
        && let Some(w) = main.workdir()
    {
        // Without libgit2's trailing slash, as people write paths.
        out.push(w.components().collect());
    }
    if let Ok(names) = main.worktrees() {
        for name in names.iter().flatten().flatten() {
            let Ok(wt) = main.find_worktree(name) else {
                continue;
            };
            let path = wt.path().to_path_buf();
            if !path.exists() {
                continue;
            }
            if let Ok(r) = Repository::open(&path)
                && head_of(&r).as_deref() == Some(refname)
            {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Tracked files with uncommitted changes (staged or not) in a worktree.
pub(crate) fn dirty_files(worktree: &Path) -> Result<Vec<String>> {
    let repo = Repository::open(worktree).ctx(|| format!("open {}", worktree.display()))?;
    let mut opts = StatusOptions::new();
    opts.include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .ctx(|| format!("read the status of {}", worktree.display()))?;
    Ok(statuses
        .iter()
        .filter(|s| !s.status().is_empty() && !s.status().is_ignored())
        .map(|s| String::from_utf8_lossy(s.path_bytes()).into_owned())
        .collect())
}

/// Why a move did not happen. Nothing was changed when one is returned;
/// each message says what to do.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Stop {
    #[error(
        "{branch} is checked out in more than one worktree ({}); nothing was changed: \
         check out another branch in all but one",
        .worktrees.join(", ")
    )]
    CheckedOutTwice {
        branch: String,
        worktrees: Vec<String>,
    },
    #[error("{}", dirty_message(.branch, .checkout, .files))]
    Dirty {
        branch: String,
        checkout: PathBuf,
        files: Vec<String>,
    },
    #[error("{}", moved_message(.branch, *.expected, *.now))]
    Moved {
        branch: String,
        expected: Oid,
        now: Oid,
    },
    /// Untracked or ignored files of the checkout are where the move writes
    /// (`files`: their names, or git's words).
    #[error(
        "updating the checkout of {branch} at {} would overwrite files there that git does \
         not track ({files}); nothing was changed: move them away (or commit them) and run again",
        .checkout.display()
    )]
    InTheWay {
        branch: String,
        checkout: PathBuf,
        files: String,
    },
}

/// Move `refname` from `from` to `to`, with its checkout if it has one (looked
/// up now, not when the land was planned). `Ok(Err(reason))` means the move
/// was refused and nothing changed; `Ok(Ok(checkout))` says which checkout
/// moved along.
pub(super) fn move_ref(
    repo: &Repository,
    refname: &str,
    from: Oid,
    to: Oid,
    reflog: &str,
) -> Result<std::result::Result<Option<PathBuf>, Stop>> {
    let branch = refname.trim_start_matches("refs/heads/");
    let checkouts = checkouts(repo, refname)?;
    if checkouts.len() > 1 {
        let list: Vec<String> = checkouts.iter().map(|p| p.display().to_string()).collect();
        return Ok(Err(Stop::CheckedOutTwice {
            branch: branch.to_string(),
            worktrees: list,
        }));
    }
    let checkout = checkouts.into_iter().next();
    if let Some(wt) = &checkout {
        let dirty = dirty_files(wt)?;
        if !dirty.is_empty() {
            return Ok(Err(Stop::Dirty {
                branch: branch.to_string(),
                checkout: wt.clone(),
                files: dirty,
            }));
        }
    }
    let now = repo
        .find_reference(refname)
        .and_then(|r| r.peel_to_commit())
        .ctx(|| format!("read {refname}"))?
        .id();
    if now != from {
        return Ok(Err(Stop::Moved {
            branch: branch.to_string(),
            expected: from,
            now,
        }));
    }

    let mut checked_out = None;
    if let Some(wt) = &checkout {
        let wt_repo = Repository::open(wt).ctx(|| format!("open {}", wt.display()))?;
        let blocking = in_the_way(&wt_repo, wt, from, to)?;
        if !blocking.is_empty() {
            return Ok(Err(Stop::InTheWay {
                branch: branch.to_string(),
                checkout: wt.clone(),
                files: blocking.join(", "),
            }));
        }
        {
            let target = wt_repo.find_commit(to).ctx(|| format!("read {to}"))?;
            // libgit2 finds every conflict before it writes anything, so a
            // refused checkout leaves the files and index as they were.
            let conflicts = std::cell::RefCell::new(Vec::<String>::new());
            let mut co = CheckoutBuilder::new();
            co.safe().overwrite_ignored(false);
            co.notify_on(git2::CheckoutNotificationType::CONFLICT);
            co.notify(|_, path, _, _, _| {
                if let Some(p) = path {
                    conflicts.borrow_mut().push(p.display().to_string());
                }
                true
            });
            let result = wt_repo.checkout_tree(target.as_object(), Some(&mut co));
            drop(co);
            match result {
                Ok(()) => {}
                Err(e) if e.code() == git2::ErrorCode::Conflict => {
                    let files = conflicts.into_inner();
                    let files = if files.is_empty() {
                        e.message().to_string()
                    } else {
                        files.join(", ")
                    };
                    return Ok(Err(Stop::InTheWay {
                        branch: branch.to_string(),
                        checkout: wt.clone(),
                        files,
                    }));
                }
                Err(e) => return Err(e).ctx(|| format!("update the checkout at {}", wt.display())),
            }
        }
        checked_out = Some(wt_repo);
    }

    match repo.reference_matching(refname, to, true, from, reflog) {
        Ok(_) => Ok(Ok(checkout)),
        Err(e) => {
            // Someone moved the ref in the tiny window: put the files back.
            if let Some(wt_repo) = checked_out {
                put_back(&wt_repo, to, from)?;
            }
            let now = repo
                .find_reference(refname)
                .and_then(|r| r.peel_to_commit())
                .map(|c| c.id())
                .unwrap_or(from);
            if now != from {
                Ok(Err(Stop::Moved {
                    branch: branch.to_string(),
                    expected: from,
                    now,
                }))
            } else {
                Err(e).ctx(|| format!("move {refname}"))
            }
        }
    }
}

/// Files the move from `from`'s tree to `to`'s would write where the
/// checkout has an untracked or ignored file (or an untracked file where a
/// directory must go), each named with what it is.
fn in_the_way(wt: &Repository, dir: &Path, from: Oid, to: Oid) -> Result<Vec<String>> {
    let tree = |c: Oid| {
        wt.find_commit(c)
            .and_then(|c| c.tree())
            .ctx(|| format!("read the tree of {c}"))
    };
    let (old, new) = (tree(from)?, tree(to)?);
    let diff = wt
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .ctx(|| "compare trees".into())?;
    let index = wt
        .index()
        .ctx(|| format!("read the index of {}", dir.display()))?;
    let tracked = |p: &Path| {
        index.get_path(p, 0).is_some() || index.find_prefix(format!("{}/", p.display())).is_ok()
    };
    let mut out: Vec<String> = Vec::new();
    for d in diff.deltas() {
        if d.status() == git2::Delta::Deleted {
            continue;
        }
        let Some(path) = d.new_file().path() else {
            continue;
        };
        // The file itself, and each directory it needs.
        let mut candidates: Vec<&Path> = path
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        candidates.reverse();
        for (i, p) in candidates.iter().enumerate() {
            let is_leaf = i + 1 == candidates.len();
            let Ok(meta) = std::fs::symlink_metadata(dir.join(p)) else {
                break;
            };
            if !is_leaf && meta.is_dir() {
                continue;
            }
            if tracked(p) {
                break;
            }
            let what = if wt.status_should_ignore(p).unwrap_or(false) {
                "ignored"
            } else {
                "untracked"
            };
            let name = format!("{} ({what})", p.display());
            if !out.contains(&name) {
                out.push(name);
            }
            break;
        }
    }
    if out.len() > 10 {
        let more = out.len() - 10;
        out.truncate(10);
        out.push(format!("and {more} more"));
    }
    Ok(out)
}

/// Undo a checkout from `from`'s tree to `to`'s, for the files that differ.
fn put_back(wt: &Repository, moved_to: Oid, back_to: Oid) -> Result<()> {
    let new_tree = wt
        .find_commit(moved_to)
        .and_then(|c| c.tree())
        .ctx(|| "read tree".into())?;
    let old = wt.find_commit(back_to).ctx(|| "read commit".into())?;
    let old_tree = old.tree().ctx(|| "read tree".into())?;
    let diff = wt
        .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
        .ctx(|| "compare trees".into())?;
    let mut co = CheckoutBuilder::new();
    co.force();
    let mut any = false;
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path() {
                co.path(p);
                any = true;
            }
        }
    }
    if any {
        wt.checkout_tree(old.as_object(), Some(&mut co))
            .ctx(|| "put the checkout back".into())?;
    }
    Ok(())
}

pub(crate) fn dirty_message(branch: &str, wt: &Path, dirty: &[String]) -> String {
    let mut list: Vec<&str> = dirty.iter().take(10).map(String::as_str).collect();
    if dirty.len() > 10 {
        list.push("...");
    }
    format!(
        "{branch} is checked out at {} with uncommitted changes to tracked files ({}); \
         land moves that checkout with the branch, so it refuses rather than mix your \
         changes with landed work: commit or stash them (git stash), then run again",
        wt.display(),
        list.join(", ")
    )
}

fn moved_message(branch: &str, expected: Oid, now: Oid) -> String {
    format!(
        "{branch} moved while land worked (expected {}, now {}); nothing was changed: run flocks land again",
        short(expected),
        short(now)
    )
}
