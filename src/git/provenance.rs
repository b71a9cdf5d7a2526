//! Which commits on a task's branch its own worktree made.
//!
//! On local pools and in docker's mount mode every agent shares the repo's
//! `.git`, so one agent can commit onto, or `update-ref`, another task's
//! branch while that task runs. As the attempt ends flocks takes the task's
//! new commits (those on its branch and not at the attempt's start, nor on a
//! branch that is not a task's) only when its worktree's HEAD reached each
//! of them: git records every commit, reset, rebase and merge a worktree
//! makes in that worktree's own reflog (`.git/worktrees/<id>/logs/HEAD`), and
//! a commit another worktree made, or a branch moved by `update-ref`, is not
//! there. A branch moved back behind the start is taken only when the
//! worktree was there itself. What fails the check is refused by the caller.
//!
//! An agent that deliberately writes another worktree's reflog, or commits
//! from inside that worktree, still passes: only a repository of the
//! agent's own (docker `workspace = "clone"`) makes that structural.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use git2::{Oid, Repository};

use crate::error::{Context, Result};

/// A reflog larger than this is not read (its worktree's commits are then
/// not attributable).
const MAX_REFLOG: u64 = 64 << 20;

/// Why `tip`, on `branch` (checked out in worktree `id`), is not the work of
/// that worktree since `start`; None when it is.
pub(crate) fn foreign_work(
    repo: &Repository,
    id: &str,
    branch: &str,
    start: Oid,
    tip: Oid,
) -> Result<Option<String>> {
    if tip == start {
        return Ok(None);
    }
    let Some(reached) = reached_by(repo, id)? else {
        // Reflogs are off in this repo: nothing to attribute by.
        return Ok(None);
    };
    let task_prefix = format!(
        "refs/heads/{}",
        branch
            .strip_suffix(id)
            .filter(|p| !p.is_empty())
            .unwrap_or("flocks/")
    );
    // The common case first: the worktree reached every new commit. The
    // refs hidden below only take commits out of the foreign ones, so
    // there is nothing to refuse, and no need to read every ref (thousands,
    // in a big run) at every attempt's end.
    let back_elsewhere =
        !repo.graph_descendant_of(tip, start).unwrap_or(false) && !reached.contains(&tip);
    if !back_elsewhere {
        let mut walk = repo.revwalk().ctx(|| "walk the branch".into())?;
        walk.push(tip).ctx(|| format!("read {tip}"))?;
        walk.hide(start).ctx(|| format!("read {start}"))?;
        let mut all_reached = true;
        for oid in walk {
            if !reached.contains(&oid.ctx(|| "walk the branch".into())?) {
                all_reached = false;
                break;
            }
        }
        if all_reached {
            return Ok(None);
        }
    }
    let mut walk = repo.revwalk().ctx(|| "walk the branch".into())?;
    walk.push(tip).ctx(|| format!("read {tip}"))?;
    walk.hide(start).ctx(|| format!("read {start}"))?;
    // Work brought in from a branch that is not a task's (the target the
    // agent merged, tags, remotes) is not the agents' to attribute.
    if let Ok(refs) = repo.references() {
        for r in refs.flatten() {
            let Ok(name) = r.name() else { continue };
            if name.starts_with(&task_prefix) || name.starts_with("refs/flocks/") {
                continue;
            }
            if let Some(oid) = r.target() {
                let _ = walk.hide(oid);
            }
        }
    }
    let mut foreign = Vec::new();
    for oid in walk {
        let oid = oid.ctx(|| "walk the branch".into())?;
        if !reached.contains(&oid) {
            foreign.push(oid);
        }
    }
    // Moved back behind the start: only to where the worktree itself was.
    if foreign.is_empty() && !back_elsewhere {
        return Ok(None);
    }
    let mut why = if foreign.is_empty() {
        format!(
            "{branch} was moved to {}, behind where flocks left it, and not in its worktree",
            short(tip)
        )
    } else {
        let shown: Vec<String> = foreign
            .iter()
            .take(5)
            .map(|o| {
                let subject = repo
                    .find_commit(*o)
                    .ok()
                    .and_then(|c| {
                        c.summary_bytes()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                    })
                    .unwrap_or_default();
                format!("{} {subject}", short(*o))
            })
            .collect();
        let more = foreign.len().saturating_sub(shown.len());
        let mut s = format!(
            "{branch} holds {} not made in its worktree (another agent may have put them there): {}",
            crate::output::units::count(foreign.len(), "commit"),
            shown.join(", ")
        );
        if more > 0 {
            s.push_str(&format!(" and {more} more"));
        }
        s
    };
    why.push_str(&format!(" (its tip was {tip})"));
    Ok(Some(why))
}

fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}

/// Every commit worktree `id`'s HEAD has been at (its reflog); None when the
/// repo does not keep reflogs (`core.logAllRefUpdates = false`).
fn reached_by(repo: &Repository, id: &str) -> Result<Option<HashSet<Oid>>> {
    let path = repo
        .commondir()
        .join("worktrees")
        .join(id)
        .join("logs/HEAD");
    let text = match read_capped(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let off = repo
                .config()
                .and_then(|c| c.get_bool("core.logAllRefUpdates"))
                .is_ok_and(|on| !on);
            return Ok(if off { None } else { Some(HashSet::new()) });
        }
        Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
    };
    Ok(Some(
        text.lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter_map(|o| Oid::from_str(o).ok())
            .collect(),
    ))
}

/// A regular file's text, read without following a link or blocking.
fn read_capped(path: &Path) -> std::io::Result<String> {
    let f = crate::fsat::read(path)?;
    let mut bytes = Vec::new();
    f.take(MAX_REFLOG).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::git::testing::git;

    #[test]
    fn only_the_worktrees_own_commits_pass() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("main");
        std::fs::create_dir(&main).unwrap();
        git(&main, &["init", "-q", "-b", "main"]);
        git(&main, &["commit", "-q", "--allow-empty", "-m", "base"]);
        git(&main, &["worktree", "add", "-q", "-b", "flocks/a", "../a"]);
        git(&main, &["worktree", "add", "-q", "-b", "flocks/b", "../b"]);
        let repo = Repository::open(&main).unwrap();
        let start = repo.refname_to_id("refs/heads/main").unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        // a's own commits, a merge of main, an amend: all a's.
        git(&a, &["commit", "-q", "--allow-empty", "-m", "mine"]);
        git(&main, &["commit", "-q", "--allow-empty", "-m", "on main"]);
        git(&a, &["merge", "-q", "--no-edit", "main"]);
        git(
            &a,
            &[
                "commit",
                "-q",
                "--amend",
                "--allow-empty",
                "-m",
                "mine, amended",
            ],
        );
        let tip = repo.refname_to_id("refs/heads/flocks/a").unwrap();
        assert_eq!(
            foreign_work(&repo, "a", "flocks/a", start, tip).unwrap(),
            None
        );
        // b puts a commit of its own on a's branch.
        git(&b, &["commit", "-q", "--allow-empty", "-m", "planted"]);
        let planted = git(&b, &["rev-parse", "HEAD"]);
        git(&b, &["update-ref", "refs/heads/flocks/a", &planted]);
        let why = foreign_work(&repo, "a", "flocks/a", start, planted.parse().unwrap())
            .unwrap()
            .unwrap();
        assert!(
            why.contains("not made in its worktree") && why.contains("planted"),
            "{why}"
        );
        // Or moves it back behind where flocks left it, where a never was.
        let on_main = repo.refname_to_id("refs/heads/main").unwrap();
        let why = foreign_work(&repo, "a", "flocks/a", tip, on_main)
            .unwrap()
            .unwrap();
        assert!(why.contains("behind where flocks left it"), "{why}");
    }
}
