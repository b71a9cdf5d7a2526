//! What a land would do: the tasks in landing order, each with the commits of
//! its work (`origin..tip` over all its attempts, from [`super::range`]) and
//! whether it is ready, empty, already landed or refused. Reading only:
//! planning writes nothing.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use git2::{Oid, Repository};

use super::range::{CommitInfo, commits, task_range};
use super::record::{LandLog, LandState};
use super::target;
use super::trailer::Landed;
use crate::error::{Context, Error, Result};
use crate::project::Project;
use crate::state::{State, TaskRecord};

/// What `flocks land` would do, computed without writing anything.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The branch to land on (`[workspace] land_target`).
    pub target: String,
    /// Its tip when the plan was made; the land refuses to go on if it moves.
    pub target_tip: Oid,
    /// The worktree where the target is checked out, if any.
    pub checkout: Option<PathBuf>,
    /// Tracked files with uncommitted changes in that checkout: land refuses.
    pub dirty: Vec<String>,
    /// The tasks in landing order (task-list order, dependencies first).
    pub tasks: Vec<PlannedTask>,
    /// Succeeded tasks not on the target that their task list no longer has
    /// (`removed`): left out, since no id was named.
    pub left_out: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PlannedTask {
    pub id: String,
    pub branch: String,
    pub depends_on: Vec<String>,
    /// The task's origin and recorded tip: its work is `start..tip`.
    pub start: Option<Oid>,
    pub tip: Option<Oid>,
    /// `start..tip`, oldest first.
    pub commits: Vec<CommitInfo>,
    pub status: PlanStatus,
    /// Where its cherry-pick will conflict, when predicted
    /// ([`super::predict_conflicts`], for `--dry-run`).
    pub conflict: Option<crate::state::PredictedConflict>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanStatus {
    /// Its commits will be cherry-picked.
    Ready,
    /// `start..tip` holds no commit: nothing to land (e.g. a task with
    /// `"expect_commits": false`).
    Empty,
    /// A commit with its `Flocks-Task` trailer is on the target already.
    AlreadyLanded,
    /// It will not land, for this reason (which says what to do).
    Refused { reason: String },
}

impl Plan {
    /// Tasks that will be cherry-picked.
    pub fn ready(&self) -> impl Iterator<Item = &PlannedTask> {
        self.tasks.iter().filter(|t| t.status == PlanStatus::Ready)
    }

    pub fn has_work(&self) -> bool {
        self.ready().next().is_some()
    }
}

/// Plan a land of `ids` (every succeeded task when empty, but those
/// `removed` from their task list) from the state as it is now. An unknown
/// id is a usage error.
pub fn plan(project: &Project, ids: &[String]) -> Result<Plan> {
    let state = project.store.load()?;
    let repo = crate::git::open(project.repo_dir())?;
    let log = LandLog::load(&project.state_dir())?;
    plan_with(
        &repo,
        &state,
        &log,
        &project.config.workspace.land_target,
        ids,
    )
}

pub(crate) fn plan_with(
    repo: &Repository,
    state: &State,
    log: &LandLog,
    target: &str,
    ids: &[String],
) -> Result<Plan> {
    let target_tip = crate::git::branch_tip(repo, target)?.ok_or_else(|| {
        Error::Usage(format!(
            "land_target `{target}` is not a branch of {}: create it, or set [workspace] land_target",
            repo.path().display()
        ))
    })?;
    let tasks = plan_tasks(repo, state, log, target, target_tip, ids)?;
    // What a land of everything leaves out: removed tasks with work to land.
    let removed: Vec<String> = state
        .tasks
        .iter()
        .filter(|t| ids.is_empty() && t.removed && t.successful_attempt().is_some())
        .map(|t| t.id.clone())
        .collect();
    let left_out = if removed.is_empty() {
        Vec::new()
    } else {
        plan_tasks(repo, state, log, target, target_tip, &removed)?
            .into_iter()
            .filter(|t| !matches!(t.status, PlanStatus::AlreadyLanded | PlanStatus::Empty))
            .map(|t| t.id)
            .collect()
    };
    let checkouts = target::checkouts(repo, &format!("refs/heads/{target}"))?;
    if checkouts.len() > 1 {
        let list: Vec<String> = checkouts.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Usage(format!(
            "{target} is checked out in more than one worktree ({}): check out another branch in all but one",
            list.join(", ")
        )));
    }
    let checkout = checkouts.into_iter().next();
    let dirty = match &checkout {
        Some(p) => target::dirty_files(p)?,
        None => Vec::new(),
    };

    Ok(Plan {
        target: target.to_string(),
        target_tip,
        checkout,
        dirty,
        tasks,
        left_out,
    })
}

/// The tasks of a plan, in landing order, against the target at
/// `target_tip` (no look at its checkout): what `land` and the run's
/// conflict prediction both start from.
pub(crate) fn plan_tasks(
    repo: &Repository,
    state: &State,
    log: &LandLog,
    target: &str,
    target_tip: Oid,
    ids: &[String],
) -> Result<Vec<PlannedTask>> {
    for id in ids {
        if let Some((task, k)) = crate::tasks::split_variant_id(id)
            && state.task(id).is_some()
        {
            return Err(Error::Usage(format!(
                "`{id}` is variant {k} of best-of task `{task}`, not a task: `flocks pick {task} {k}` makes it the task's work, then `flocks land {task}` lands it"
            )));
        }
        if state.task(id).is_none() {
            return Err(Error::Usage(format!(
                "no task `{id}` in {}: see `flocks status` for the task ids",
                "the run state"
            )));
        }
    }
    let selected: Vec<&TaskRecord> = if ids.is_empty() {
        // A task its task list no longer has lands only when named.
        state
            .tasks
            .iter()
            .filter(|t| t.successful_attempt().is_some() && !t.removed)
            .collect()
    } else {
        state.tasks.iter().filter(|t| ids.contains(&t.id)).collect()
    };
    let ordered = dependencies_first(&selected);

    // The tasks' and their dependencies' starts bound the history walk.
    let deps = ordered
        .iter()
        .flat_map(|t| t.depends_on.iter().filter_map(|d| state.task(d)));
    let starts: Vec<Oid> = ordered
        .iter()
        .copied()
        .chain(deps)
        .filter_map(|t| t.origin_commit()?.parse().ok())
        .filter(|o| repo.find_commit(*o).is_ok())
        .collect();
    let landed = Landed::scan(repo, target_tip, &starts)?;

    let mut tasks: Vec<PlannedTask> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for t in ordered {
        let mut planned = classify(repo, t, target, target_tip, &landed, log)?;
        if matches!(planned.status, PlanStatus::Ready | PlanStatus::Empty) {
            let earlier = |d: &str| at.get(d).map(|&i| &tasks[i].status);
            if let Some(reason) = unmet_dependency(repo, state, t, &earlier, target_tip, &landed) {
                planned.status = PlanStatus::Refused { reason };
            }
        }
        at.insert(planned.id.clone(), tasks.len());
        tasks.push(planned);
    }
    Ok(tasks)
}

/// Task-list order, each task's (selected) dependencies before it.
pub(super) fn dependencies_first<'a>(selected: &[&'a TaskRecord]) -> Vec<&'a TaskRecord> {
    let by_id: HashMap<&str, &TaskRecord> = selected.iter().map(|t| (t.id.as_str(), *t)).collect();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    fn visit<'a>(
        t: &'a TaskRecord,
        by_id: &HashMap<&str, &'a TaskRecord>,
        seen: &mut HashSet<String>,
        out: &mut Vec<&'a TaskRecord>,
    ) {
        if !seen.insert(t.id.clone()) {
            return;
        }
        for d in &t.depends_on {
            if let Some(dep) = by_id.get(d.as_str()) {
                visit(dep, by_id, seen, out);
            }
        }
        out.push(t);
    }
    for t in selected {
        visit(t, &by_id, &mut seen, &mut out);
    }
    out
}

pub(super) fn classify(
    repo: &Repository,
    t: &TaskRecord,
    target: &str,
    target_tip: Oid,
    landed: &Landed,
    log: &LandLog,
) -> Result<PlannedTask> {
    let mut planned = PlannedTask {
        id: t.id.clone(),
        branch: t.branch.clone(),
        depends_on: t.depends_on.clone(),
        start: None,
        tip: None,
        commits: Vec::new(),
        status: PlanStatus::Ready,
        conflict: None,
    };
    let refuse = |mut p: PlannedTask, reason: String| {
        p.status = PlanStatus::Refused { reason };
        Ok(p)
    };
    let (start, tip, ended) = match task_range(repo, t) {
        Ok(r) => (r.origin, r.tip, r.ended),
        Err(why) => return refuse(planned, why.to_string()),
    };
    planned.start = Some(start);
    planned.tip = Some(tip);

    if landed.is_landed(repo, &t.id, start, ended)
        || recorded_as_landed(repo, log, target, target_tip, &t.id, tip)
    {
        planned.status = PlanStatus::AlreadyLanded;
        return Ok(planned);
    }

    // No commit to land (a task with `"expect_commits": false`, say): its
    // branch is not needed, and may be gone (`flocks clean`).
    if start == tip {
        planned.status = PlanStatus::Empty;
        return Ok(planned);
    }

    match crate::git::branch_tip(repo, &t.branch)? {
        Some(now) if now == tip => {}
        Some(now) => {
            return refuse(
                planned,
                format!(
                    "branch {} moved since the task succeeded: recorded {}, now {}; \
                     look at what changed ({}), then retry the task ({}) \
                     or land by hand",
                    t.branch,
                    short(tip),
                    short(now),
                    crate::suggest::command(&[
                        "git",
                        "log",
                        &format!("{}..{}", short(tip), t.branch)
                    ]),
                    crate::suggest::command(&["flocks", "retry", &t.id]),
                ),
            );
        }
        None => {
            return refuse(
                planned,
                format!(
                    "branch {} no longer exists (recorded tip {}); recreate it there ({}) to land it",
                    t.branch,
                    short(tip),
                    crate::suggest::command(&["git", "branch", &t.branch, &tip.to_string()]),
                ),
            );
        }
    }

    // A task that landed and then went on (`retry --force` keeps its branch)
    // lands only what came after its last landing: never a commit twice.
    let start = landed_up_to(repo, log, target, target_tip, &t.id, start, tip).unwrap_or(start);
    planned.start = Some(start);
    planned.commits = commits(repo, start, tip)?;
    if planned.commits.is_empty() {
        planned.status = PlanStatus::Empty;
        return Ok(planned);
    }
    for c in &planned.commits {
        let commit = repo
            .find_commit(c.id)
            .ctx(|| format!("read commit {}", c.id))?;
        if commit.parent_count() != 1 {
            let what = if commit.parent_count() == 0 {
                "a root commit"
            } else {
                "a merge commit"
            };
            return refuse(
                planned.clone(),
                format!(
                    "{} is {what}; land cherry-picks linear history only: \
                     rebase the branch onto its start ({}) and retry, or land it by hand",
                    short(c.id),
                    short(start)
                ),
            );
        }
    }
    Ok(planned)
}

/// Where the task's last landing on `target` ended on its branch, when that
/// landing is still in the target's history and lies inside `origin..tip`.
fn landed_up_to(
    repo: &Repository,
    log: &LandLog,
    target: &str,
    target_tip: Oid,
    id: &str,
    origin: Oid,
    tip: Oid,
) -> Option<Oid> {
    let within = |a: Oid, b: Oid| a == b || repo.graph_descendant_of(b, a).unwrap_or(false);
    log.lands
        .iter()
        .rev()
        .filter(|r| r.target == target && r.state != LandState::Undone)
        .filter(|r| {
            r.new_tip
                .parse::<Oid>()
                .is_ok_and(|n| within(n, target_tip))
        })
        .flat_map(|r| r.tasks.iter().filter(|t| t.id == id))
        .filter_map(|t| t.tip.parse::<Oid>().ok())
        .find(|&landed| landed != tip && within(origin, landed) && within(landed, tip))
}

/// A task whose every commit was already on the target lands without a
/// trailer; land.json remembers it, as long as that land is still in the
/// target's history.
fn recorded_as_landed(
    repo: &Repository,
    log: &LandLog,
    target: &str,
    target_tip: Oid,
    id: &str,
    tip: Oid,
) -> bool {
    let tip = tip.to_string();
    log.lands.iter().any(|r| {
        r.target == target
            && r.state != LandState::Undone
            && r.tasks
                .iter()
                .any(|t| t.id == id && t.tip == tip && t.commits.is_empty())
            && r.new_tip.parse::<Oid>().is_ok_and(|n| {
                n == target_tip || repo.graph_descendant_of(target_tip, n).unwrap_or(false)
            })
    })
}

/// A dependency that has not landed, nor lands before this task, refuses it.
/// `earlier`: the plan status of a task planned before this one.
pub(super) fn unmet_dependency<'p>(
    repo: &Repository,
    state: &State,
    t: &TaskRecord,
    earlier: &dyn Fn(&str) -> Option<&'p PlanStatus>,
    target_tip: Oid,
    landed: &Landed,
) -> Option<String> {
    for d in &t.depends_on {
        let Some(dep) = state.task(d) else { continue };
        if let Some(status) = earlier(d) {
            match status {
                PlanStatus::Ready | PlanStatus::Empty | PlanStatus::AlreadyLanded => continue,
                PlanStatus::Refused { .. } => {
                    return Some(format!("it depends on `{d}`, which is refused too"));
                }
            }
        }
        let range = task_range(repo, dep).ok();
        if let Some(r) = range
            && landed.is_landed(repo, d, r.origin, r.ended)
        {
            continue;
        }
        if let Some((start, tip)) = range.map(|r| (r.origin, r.tip))
            && (start == tip
                || tip == target_tip
                || repo.graph_descendant_of(target_tip, tip).unwrap_or(false))
        {
            continue;
        }
        return Some(format!(
            "it depends on `{d}`, which has not landed: land both ({})",
            crate::suggest::command(&["flocks", "land", d.as_str(), t.id.as_str()])
        ));
    }
    None
}

pub(crate) use super::range::short;
