//! `flocks forget`: drop tasks their task list no longer has (`removed`)
//! from the state, under the project lock; with `branches`, their worktrees
//! and branches too (a branch with commits that have not landed, or a
//! worktree with uncommitted changes, only with `force`). Everything is
//! checked before anything changes.

use git2::{BranchType, Oid, Repository};

use crate::error::{Context, Error, Result};
use crate::git::Worktrees;
use crate::project::Project;
use crate::state::TaskRecord;

#[derive(Debug, Clone, Default)]
pub(crate) struct ForgetOptions {
    pub ids: Vec<String>,
    pub branches: bool,
    pub force: bool,
}

/// What `forget` did.
#[derive(Debug, Default)]
pub(crate) struct Forgotten {
    pub forgot: Vec<String>,
    pub worktrees_removed: Vec<String>,
    pub branches_deleted: Vec<String>,
    /// Branches that stay (without `branches`), by task.
    pub branches_kept: Vec<(String, String)>,
}

impl Forgotten {
    pub(crate) fn render(&self) -> String {
        let mut out = format!(
            "forgot {}: no longer in the state (their logs stay in .flocks/logs)\n",
            self.forgot.join(", ")
        );
        for w in &self.worktrees_removed {
            out.push_str(&format!("removed worktree {w}\n"));
        }
        for b in &self.branches_deleted {
            out.push_str(&format!("deleted branch {b}\n"));
        }
        for (id, b) in &self.branches_kept {
            out.push_str(&format!(
                "kept branch {b} of {id} (`git branch -D {b}` deletes it)\n"
            ));
        }
        out
    }
}

/// One branch or worktree `--branches` would remove.
struct Removal {
    /// The task or variant id (its worktree's name).
    id: String,
    branch: Option<String>,
}

pub(crate) fn forget(project: &Project, opts: &ForgetOptions) -> Result<Forgotten> {
    let repo = project.repo()?;
    let _lock = project.lock("forget")?;
    let mut state = project.store.load()?;
    let config = &project.config;
    let mut problems = Vec::new();
    let mut removals = Vec::new();
    let mut done = Forgotten::default();
    let target = &config.workspace.land_target;
    let target_tip = crate::git::branch_tip(&repo, target)?;
    let landed = crate::land::landed_ids(project, &state);
    for id in &opts.ids {
        let Some(rec) = state.task(id).filter(|r| r.id == *id && !id.contains('@')) else {
            return Err(Error::Usage(format!(
                "no task `{id}` in the run state: `flocks status` lists the tasks (a best-of variant goes with its task)"
            )));
        };
        if let Some(listed) = still_listed(rec, config) {
            return Err(Error::Usage(format!(
                "task `{id}` is still in {listed}: remove its line first (`flocks forget` drops only tasks their task list no longer has)"
            )));
        }
        let records: Vec<&TaskRecord> = std::iter::once(rec).chain(&rec.variants).collect();
        for r in records {
            let tip = crate::git::branch_tip(&repo, &r.branch)?;
            if !opts.branches {
                if tip.is_some() {
                    done.branches_kept.push((r.id.clone(), r.branch.clone()));
                }
                continue;
            }
            if dirty(&project.config.worktrees_dir().join(&r.id)) && !opts.force {
                problems.push(format!(
                    "worktree {} has uncommitted changes",
                    project.config.worktrees_dir().join(&r.id).display()
                ));
            }
            let Some(tip) = tip else {
                removals.push(Removal {
                    id: r.id.clone(),
                    branch: None,
                });
                continue;
            };
            if !r.branch_created {
                problems.push(format!(
                    "{} was not created by flocks: flocks leaves it to you",
                    r.branch
                ));
                continue;
            }
            let landed_here = landed.contains(&rec.id)
                && rec
                    .winner()
                    .unwrap_or(rec)
                    .successful_attempt()
                    .and_then(|a| a.end_tip.as_deref())
                    == Some(tip.to_string().as_str())
                && rec.winner().unwrap_or(rec).id == r.id;
            let unlanded = if landed_here {
                0
            } else {
                unlanded_commits(&repo, tip, target_tip)?
            };
            if unlanded > 0 && !opts.force {
                problems.push(format!(
                    "{} holds {} that {} not landed",
                    r.branch,
                    crate::output::units::count(unlanded, "commit"),
                    crate::output::units::noun_for(unlanded, "has", "have")
                ));
            }
            removals.push(Removal {
                id: r.id.clone(),
                branch: Some(r.branch.clone()),
            });
        }
        done.forgot.push(id.clone());
    }
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "nothing was forgotten: {}; pass --force to delete them all the same, or leave out --branches to keep the branches",
            problems.join("; ")
        )));
    }

    // Worktrees first (a branch checked out in one cannot be deleted).
    let wts = Worktrees::new(project.repo_dir(), &config.worktrees_dir())?;
    for r in &removals {
        if wts.remove(&r.id)? {
            done.worktrees_removed.push(r.id.clone());
        }
        let Some(b) = &r.branch else { continue };
        let mut branch = repo
            .find_branch(b, BranchType::Local)
            .ctx(|| format!("find branch {b}"))?;
        branch.delete().ctx(|| format!("delete branch {b}"))?;
        done.branches_deleted.push(b.clone());
        if let Ok(mut kept) = repo.find_reference(&format!("refs/flocks/cleaned/{b}")) {
            let _ = kept.delete();
        }
    }
    state.forget(&done.forgot);
    project.store.save(&state)?;
    Ok(done)
}

/// The task list that still has this task, if it does: its recorded list
/// (the project's default one for a state that did not record it), read as
/// it is now when it is a file; a `[source]` script is not run, and the
/// task's `removed` mark (from the last run) says.
fn still_listed(rec: &TaskRecord, config: &crate::config::Config) -> Option<String> {
    let source = rec
        .source
        .clone()
        .unwrap_or_else(|| super::merge::default_source(config));
    if source.starts_with('[') {
        return (!rec.removed).then_some(source);
    }
    let Ok(text) = std::fs::read_to_string(&source) else {
        // The file is gone (or unreadable): its tasks are gone with it,
        // unless the last run still saw this one.
        return (!rec.removed && std::path::Path::new(&source).exists()).then_some(source);
    };
    let listed = text.lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(|i| i == rec.id))
            .unwrap_or(false)
    });
    listed.then_some(source)
}

/// Commits of `tip` that the target does not hold.
fn unlanded_commits(repo: &Repository, tip: Oid, target_tip: Option<Oid>) -> Result<usize> {
    let mut walk = repo.revwalk().ctx(|| "walk the branch".into())?;
    walk.push(tip).ctx(|| format!("walk from {tip}"))?;
    if let Some(t) = target_tip {
        walk.hide(t).ctx(|| format!("hide {t}"))?;
    }
    Ok(walk.count())
}

/// A worktree with uncommitted changes (untracked files included).
fn dirty(path: &std::path::Path) -> bool {
    if !path.exists() {
        return false;
    }
    match Repository::open(path) {
        Ok(wt) => {
            let mut o = git2::StatusOptions::new();
            o.include_untracked(true).include_ignored(false);
            wt.statuses(Some(&mut o))
                .map(|s| !s.is_empty())
                .unwrap_or(true)
        }
        Err(_) => true,
    }
}
