//! `flocks clean`: remove the worktrees and branches of landed tasks (with
//! `all`, of failed ones too), the spare worktrees and the land worktree. A
//! landed best-of task's losing variants go too, branches and all (they
//! were kept for `flocks pick` until it landed), and its judge's.
//!
//! A branch is deleted only when it holds nothing unlanded: it is still at
//! the landed attempt's recorded tip, or it is contained in the target. Other
//! branches stay, and the report says why. The tip of a deleted branch that
//! a land in `.flocks/land.json` brought is kept under
//! `refs/flocks/cleaned/<branch>` (no branch, but git keeps its commits), so
//! that `land --undo` can make the branch again for `land` to bring the work
//! back; such refs go once no recorded land names their branch. A worktree with uncommitted
//! changes (untracked files included) stays too. Needs the project lock (it
//! changes task worktrees) and the land lock (it removes the land worktree).

use std::collections::HashSet;

use git2::{BranchType, Oid, Repository};

use super::plan::plan_with;
use super::record::{LandLock, LandLog, LandState};
use super::{PlanStatus, scratch};
use crate::error::{Context, Result};
use crate::git::Worktrees;
use crate::project::Project;
use crate::state::{ProjectLock, TaskRecord, TaskStatus};

#[derive(Debug, Clone, Default)]
pub struct CleanOptions {
    /// Also the worktrees (and fully landed branches) of failed tasks.
    pub all: bool,
}

#[derive(Debug, Clone, Default)]
pub struct CleanReport {
    pub worktrees_removed: Vec<String>,
    pub branches_deleted: Vec<String>,
    /// (task id, what stayed and why)
    pub kept: Vec<(String, String)>,
    pub spares_removed: usize,
    pub land_worktree_removed: bool,
    /// Tasks whose bwrap sandbox (home and repository) was removed.
    pub sandboxes_removed: Vec<String>,
    /// Deleted branches whose tips were kept under `refs/flocks/cleaned/`
    /// for `land --undo`.
    pub tips_kept: Vec<String>,
}

/// Where `clean` keeps the tip of a landed branch it deleted.
pub(crate) fn cleaned_ref(branch: &str) -> String {
    format!("refs/flocks/cleaned/{branch}")
}

impl CleanReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        out.push_str(&format!(
            "Removed worktrees: {}\n",
            list(&self.worktrees_removed)
        ));
        out.push_str(&format!(
            "Deleted branches: {}\n",
            list(&self.branches_deleted)
        ));
        if self.spares_removed > 0 {
            out.push_str(&format!(
                "Removed {}\n",
                crate::output::units::count(self.spares_removed, "spare worktree")
            ));
        }
        if self.land_worktree_removed {
            out.push_str("Removed the land worktree\n");
        }
        if !self.sandboxes_removed.is_empty() {
            out.push_str(&format!(
                "Removed sandboxes: {}\n",
                self.sandboxes_removed.join(", ")
            ));
        }
        for (id, why) in &self.kept {
            out.push_str(&format!("Kept {id}: {why}\n"));
        }
        if !self.tips_kept.is_empty() {
            out.push_str(&format!(
                "Kept the tips of {} under refs/flocks/cleaned/: `flocks land --undo` makes {} again for `flocks land`\n",
                self.tips_kept.join(", "),
                crate::output::units::noun_for(self.tips_kept.len(), "that branch", "those branches")
            ));
        }
        out
    }
}

pub fn clean(
    project: &Project,
    opts: &CleanOptions,
    _run: &ProjectLock,
    _land: &LandLock,
) -> Result<CleanReport> {
    let state = project.store.load()?;
    let repo = crate::git::open(project.repo_dir())?;
    let target = &project.config.workspace.land_target;
    let log = LandLog::load(&project.state_dir())?;
    let ids: Vec<String> = state
        .tasks
        .iter()
        .filter(|t| t.successful_attempt().is_some())
        .map(|t| t.id.clone())
        .collect();
    let plan = if ids.is_empty() {
        None
    } else {
        Some(plan_with(&repo, &state, &log, target, &ids)?)
    };
    let target_tip = crate::git::branch_tip(&repo, target)?;
    let wts = Worktrees::new(project.repo_dir(), &project.config.worktrees_dir())?;
    let mut report = CleanReport::default();
    // Sandboxed tasks' homes and repositories (outside the checkout).
    let sandboxes = crate::backend::bwrap::layout::Layout::for_config(&project.config).ok();
    // The branches of the lands `land --undo` can still undo (one after
    // the other): after an undo, `land` needs them again.
    let undo: HashSet<String> = log
        .lands
        .iter()
        .filter(|r| r.target == *target && r.state == LandState::Done)
        .flat_map(|r| r.tasks.iter().map(|t| t.branch.clone()))
        .collect();

    for t in &state.tasks {
        let landed = plan
            .as_ref()
            .and_then(|p| p.tasks.iter().find(|p| p.id == t.id))
            .is_some_and(|p| matches!(p.status, PlanStatus::AlreadyLanded | PlanStatus::Empty));
        // Done without success: failed, timed out, stalled, interrupted, ...
        let failed = matches!(t.status, TaskStatus::Done { .. }) && !t.status.is_success();
        if !(landed || (opts.all && failed)) {
            if t.status.is_success() {
                report.kept.push((t.id.clone(), "not landed yet".into()));
            }
            continue;
        }
        clean_task(&repo, &wts, t, landed, target_tip, &undo, &mut report)?;
        clean_variants(&repo, &wts, t, landed, target_tip, &undo, &mut report)?;
        if let Some(l) = &sandboxes {
            remove_sandboxes(l, t, &mut report);
        }
    }
    drop_unneeded_tips(&repo, &undo)?;

    report.spares_removed = wts.remove_spares()?;
    report.land_worktree_removed =
        scratch::remove(&repo, &scratch::path(&project.config.worktrees_dir()))?;
    scratch::remove(&repo, &scratch::judge_path(&project.config.worktrees_dir()))?;
    Ok(report)
}

/// The bwrap sandboxes of a cleaned task, its variants and its judge: the
/// work is on the branches (or the task failed and `--all` was asked).
fn remove_sandboxes(
    layout: &crate::backend::bwrap::layout::Layout,
    t: &TaskRecord,
    report: &mut CleanReport,
) {
    let ids = std::iter::once(t.id.clone())
        .chain(t.variants.iter().map(|v| v.id.clone()))
        .chain(std::iter::once(crate::tasks::judge_id(&t.id)));
    for id in ids {
        match layout.remove_task(&id) {
            Ok(true) => report.sandboxes_removed.push(id),
            Ok(false) => {}
            Err(e) => report
                .kept
                .push((id, format!("its sandbox could not be removed: {e}"))),
        }
    }
}

/// A best-of task's variants and judge, once the task is cleaned: the
/// winner like any task; the losers' worktrees and branches go (they were
/// kept for `flocks pick` and `flocks diff --variant`), and the judge's.
fn clean_variants(
    repo: &Repository,
    wts: &Worktrees,
    t: &TaskRecord,
    landed: bool,
    target_tip: Option<Oid>,
    undo: &HashSet<String>,
    report: &mut CleanReport,
) -> Result<()> {
    if t.variants.is_empty() {
        return Ok(());
    }
    let winner = t.winner().map(|w| w.id.clone());
    for v in &t.variants {
        // The winner, and every variant of a task that did not land (`--all`):
        // like any task (a branch with unlanded work stays).
        if !landed || Some(&v.id) == winner.as_ref() {
            clean_task(repo, wts, v, landed, target_tip, undo, report)?;
            continue;
        }
        if !remove_worktree(wts, v, report)? || !v.branch_created {
            continue;
        }
        // A loser of a landed task: it was kept for `flocks pick` and
        // `flocks diff --variant` until the task landed.
        if let Ok(mut b) = repo.find_branch(&v.branch, BranchType::Local) {
            match b.delete() {
                Ok(()) => report.branches_deleted.push(v.branch.clone()),
                Err(e) => report.kept.push((
                    v.id.clone(),
                    format!("branch {} could not be deleted: {}", v.branch, e.message()),
                )),
            }
        }
    }
    let judge = crate::tasks::judge_id(&t.id);
    if wts.path_for(&judge).exists() && wts.remove(&judge)? {
        report.worktrees_removed.push(judge);
    }
    if let Ok(mut b) = repo.find_branch(&format!("{}@judge", t.branch), BranchType::Local) {
        let name = format!("{}@judge", t.branch);
        if b.delete().is_ok() {
            report.branches_deleted.push(name);
        }
    }
    Ok(())
}

fn clean_task(
    repo: &Repository,
    wts: &Worktrees,
    t: &TaskRecord,
    landed: bool,
    target_tip: Option<Oid>,
    undo: &HashSet<String>,
    report: &mut CleanReport,
) -> Result<()> {
    if !remove_worktree(wts, t, report)? {
        return Ok(());
    }
    delete_branch(repo, t, landed, target_tip, undo, report)
}

/// Remove a task's worktree unless it holds uncommitted changes (then it is
/// kept, and the report says so). False when it was kept.
fn remove_worktree(wts: &Worktrees, t: &TaskRecord, report: &mut CleanReport) -> Result<bool> {
    let path = wts.path_for(&t.id);
    if path.exists() {
        let dirty = match Repository::open(&path) {
            Ok(wt) => {
                let mut o = git2::StatusOptions::new();
                o.include_untracked(true).include_ignored(false);
                wt.statuses(Some(&mut o))
                    .map(|s| !s.is_empty())
                    .unwrap_or(true)
            }
            Err(_) => true,
        };
        if dirty {
            report.kept.push((
                t.id.clone(),
                format!("worktree {} has uncommitted changes (or is not a worktree); look, then remove it by hand", path.display()),
            ));
            return Ok(false);
        }
        if wts.remove(&t.id)? {
            report.worktrees_removed.push(t.id.clone());
        }
    }
    Ok(true)
}

/// Delete a task's branch when it holds nothing unlanded and flocks made it.
fn delete_branch(
    repo: &Repository,
    t: &TaskRecord,
    landed: bool,
    target_tip: Option<Oid>,
    undo: &HashSet<String>,
    report: &mut CleanReport,
) -> Result<()> {
    let Some(tip) = crate::git::branch_tip(repo, &t.branch)? else {
        return Ok(());
    };
    let recorded_tip = super::range::task_range(repo, t).ok().map(|r| r.tip);
    let in_target = target_tip
        .is_some_and(|tt| tt == tip || repo.graph_descendant_of(tt, tip).unwrap_or(false));
    let safe = in_target || (landed && recorded_tip == Some(tip));
    if !safe {
        report.kept.push((
            t.id.clone(),
            format!("branch {} holds commits that have not landed", t.branch),
        ));
        return Ok(());
    }
    if !t.branch_created {
        report.kept.push((
            t.id.clone(),
            format!("branch {} was not created by flocks", t.branch),
        ));
        return Ok(());
    }
    if undo.contains(&t.branch) {
        repo.reference(
            &cleaned_ref(&t.branch),
            tip,
            true,
            "flocks clean: kept for land --undo",
        )
        .ctx(|| format!("keep the tip of {}", t.branch))?;
        report.tips_kept.push(t.branch.clone());
    }
    let mut branch = repo
        .find_branch(&t.branch, BranchType::Local)
        .ctx(|| format!("find branch {}", t.branch))?;
    match branch.delete() {
        Ok(()) => report.branches_deleted.push(t.branch.clone()),
        Err(e) => report.kept.push((
            t.id.clone(),
            format!("branch {} could not be deleted: {}", t.branch, e.message()),
        )),
    }
    Ok(())
}

/// Remove the kept tips (`refs/flocks/cleaned/`) of branches no recorded
/// land names any more: no `land --undo` brings their work back.
fn drop_unneeded_tips(repo: &Repository, undo: &HashSet<String>) -> Result<()> {
    let prefix = cleaned_ref("");
    let names: Vec<String> = repo
        .references_glob(&format!("{prefix}*"))
        .ctx(|| "list refs/flocks/cleaned/".into())?
        .flatten()
        .filter_map(|r| r.name().ok().map(str::to_string))
        .collect();
    for name in names {
        let branch = &name[prefix.len()..];
        if !undo.contains(branch)
            && let Ok(mut r) = repo.find_reference(&name)
        {
            r.delete().ctx(|| format!("delete {name}"))?;
        }
    }
    Ok(())
}
