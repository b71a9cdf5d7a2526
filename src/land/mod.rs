//! `flocks land`: cherry-pick the work of succeeded tasks onto
//! `[workspace] land_target`, validate it, and only then move the target.
//!
//! ```text
//!  state.json ─┐ (read only)
//!  land.json ──┼─> plan ──> Plan ──(confirm)──> execute:
//!  target log ─┘                                  apply: commit objects, no refs
//!                                                 validate: .worktrees/.land
//!                                                 land.json: pending
//!                                                 target: checkout, CAS ref
//!                                                 land.json: done
//! ```
//!
//! `land` never takes `.flocks/lock` nor writes state.json, so it works while
//! a run is going; two lands are kept apart by `.flocks/land.lock`. What has
//! landed is read from the target's history (`Flocks-Task` trailers), so a
//! crash at any point never lands a task twice.

mod apply;
mod clean;
mod plan;
mod record;
mod render;
mod scratch;
mod target;
mod trailer;
mod validate;

use std::path::PathBuf;

use git2::Oid;

pub use clean::{CleanOptions, CleanReport, clean};
pub use plan::{CommitInfo, Plan, PlanStatus, PlannedTask, plan};
pub use record::{CommitMap, LandLock, LandLog, LandRecord, LandState, LandedTask};
pub use trailer::{KEY as TRAILER_KEY, task_ids as trailer_task_ids};
pub use validate::Validation;

use crate::error::{Error, Exit, Result};
use crate::project::Project;
use apply::Applied;
use plan::short;

/// How to land.
#[derive(Debug, Clone, Default)]
pub struct LandOptions {
    /// Skip `[validate] commands`.
    pub no_validate: bool,
    /// Copy the validate commands' output to stdout.
    pub echo: bool,
}

/// What a land did.
#[derive(Debug, Clone)]
pub struct Report {
    pub target: String,
    /// The target before the land.
    pub old_tip: Oid,
    /// The result that was built (== `old_tip` when nothing new was built).
    pub new_tip: Oid,
    /// The target now points at `new_tip`.
    pub moved: bool,
    /// Where the target is checked out (its files moved too).
    pub checkout: Option<PathBuf>,
    pub tasks: Vec<TaskReport>,
    pub validation: Validation,
    /// The validation log, when validation ran.
    pub log: Option<PathBuf>,
    /// The land stopped before moving the target, for this reason.
    pub stopped: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TaskReport {
    pub id: String,
    pub branch: String,
    pub start: Option<Oid>,
    pub tip: Option<Oid>,
    pub outcome: TaskOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Its commits were cherry-picked (`dropped` changed nothing on the
    /// target). They are on the target if the report says `moved`.
    Landed {
        commits: usize,
        dropped: usize,
    },
    /// `start..tip` was empty.
    Empty,
    AlreadyLanded,
    /// `commit` conflicted in `files`; nothing of the task was applied.
    Conflicted {
        commit: Oid,
        files: Vec<String>,
    },
    Refused {
        reason: String,
    },
}

impl Report {
    /// 0, or 4 when anything conflicted, validation failed or the land
    /// stopped; 130 when validation was interrupted.
    pub fn exit(&self) -> Exit {
        if matches!(self.validation, Validation::Interrupted { .. }) {
            return Exit::Interrupted;
        }
        let conflicted = self
            .tasks
            .iter()
            .any(|t| matches!(t.outcome, TaskOutcome::Conflicted { .. }));
        if conflicted || self.validation.failed() || self.stopped.is_some() {
            Exit::LandStopped
        } else {
            Exit::Ok
        }
    }
}

/// Plan and execute in one go (takes the land lock): for tests and `-y`.
pub fn land(project: &Project, ids: &[String], opts: &LandOptions) -> Result<Report> {
    let lock = LandLock::acquire(&project.state_dir())?;
    let plan = plan(project, ids)?;
    execute(project, &plan, opts, &lock)
}

/// Land what `plan` says. Nothing on the target changes unless every step
/// before the move succeeded; the move is refused (and reported in
/// `stopped`) when the target's checkout is dirty or the target moved.
pub fn execute(
    project: &Project,
    plan: &Plan,
    opts: &LandOptions,
    lock: &LandLock,
) -> Result<Report> {
    let repo = crate::git::open(project.repo_dir())?;
    let refname = format!("refs/heads/{}", plan.target);
    let mut report = Report {
        target: plan.target.clone(),
        old_tip: plan.target_tip,
        new_tip: plan.target_tip,
        moved: false,
        checkout: plan.checkout.clone(),
        tasks: Vec::new(),
        validation: Validation::NotNeeded,
        log: None,
        stopped: None,
    };
    let task_report = |t: &PlannedTask, outcome: TaskOutcome| TaskReport {
        id: t.id.clone(),
        branch: t.branch.clone(),
        start: t.start,
        tip: t.tip,
        outcome,
    };

    if let Some(wt) = &plan.checkout
        && !plan.dirty.is_empty()
        && plan.has_work()
    {
        report.stopped = Some(target::dirty_message(&plan.target, wt, &plan.dirty));
        return Ok(report);
    }
    let now = crate::git::branch_tip(&repo, &plan.target)?;
    if now != Some(plan.target_tip) {
        report.stopped = Some(format!(
            "{} moved since the plan was made (was {}, now {}); nothing was changed: run flocks land again",
            plan.target,
            short(plan.target_tip),
            now.map(short).unwrap_or_else(|| "gone".into())
        ));
        return Ok(report);
    }

    // Build the chain, task by task.
    let mut tip = plan.target_tip;
    let mut not_landing: Vec<&str> = Vec::new();
    let mut landed_tasks: Vec<LandedTask> = Vec::new();
    for t in &plan.tasks {
        let outcome = match &t.status {
            PlanStatus::Empty => TaskOutcome::Empty,
            PlanStatus::AlreadyLanded => TaskOutcome::AlreadyLanded,
            PlanStatus::Refused { reason } => TaskOutcome::Refused {
                reason: reason.clone(),
            },
            PlanStatus::Ready => match t
                .depends_on
                .iter()
                .find(|d| not_landing.contains(&d.as_str()))
            {
                Some(d) => TaskOutcome::Refused {
                    reason: format!("it depends on `{d}`, which does not land this time"),
                },
                None => {
                    let (next, applied) = apply::apply_task(&repo, tip, t)?;
                    tip = next;
                    match applied {
                        Applied::Picked { commits, dropped } => {
                            landed_tasks.push(LandedTask {
                                id: t.id.clone(),
                                branch: t.branch.clone(),
                                start: t.start.map(|o| o.to_string()).unwrap_or_default(),
                                tip: t.tip.map(|o| o.to_string()).unwrap_or_default(),
                                commits: commits
                                    .iter()
                                    .map(|(from, to)| CommitMap {
                                        from: from.to_string(),
                                        to: to.to_string(),
                                    })
                                    .collect(),
                                dropped,
                            });
                            TaskOutcome::Landed {
                                commits: commits.len(),
                                dropped,
                            }
                        }
                        Applied::Conflicted { commit, files } => {
                            TaskOutcome::Conflicted { commit, files }
                        }
                    }
                }
            },
        };
        if matches!(
            outcome,
            TaskOutcome::Refused { .. } | TaskOutcome::Conflicted { .. }
        ) {
            not_landing.push(&t.id);
        }
        report.tasks.push(task_report(t, outcome));
    }
    report.new_tip = tip;

    let mut log = LandLog::load(&project.state_dir())?;
    let mut record = LandRecord {
        at: chrono::Utc::now(),
        target: plan.target.clone(),
        old_tip: plan.target_tip.to_string(),
        new_tip: tip.to_string(),
        state: LandState::Pending,
        validated: false,
        undone_at: None,
        tasks: landed_tasks,
    };
    if tip == plan.target_tip {
        // Nothing new; remember tasks whose change the target already had.
        if !record.tasks.is_empty() {
            record.state = LandState::Done;
            log.lands.push(record);
            log.save(&project.state_dir(), lock)?;
        }
        return Ok(report);
    }

    // Validate in the land worktree.
    report.validation = if opts.no_validate {
        Validation::Skipped
    } else if project.config.validate.commands.is_empty() {
        Validation::NotConfigured
    } else {
        let repo_root = repo.workdir().unwrap_or(project.repo_dir()).to_path_buf();
        let excludes = crate::git::exclude_patterns(
            &repo_root,
            &[project.state_dir(), project.config.worktrees_dir()],
        );
        crate::git::ensure_excluded(&repo, &excludes)?;
        let wt = scratch::path(&project.config.worktrees_dir());
        scratch::checkout(&repo, &wt, tip)?;
        let log_path = project.state_dir().join("land-logs").join(format!(
            "{}.log",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        ));
        report.log = Some(log_path.clone());
        let mut scrub: Vec<String> = [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        scrub.extend(project.config.credentials.iter().map(|c| c.env.clone()));
        validate::run(&validate::Run {
            commands: &project.config.validate.commands,
            dir: &wt,
            timeout: project.config.validate.timeout,
            grace: project.config.kill_grace,
            scrub: &scrub,
            log: &log_path,
            echo: opts.echo,
        })?
    };
    if report.validation.failed() {
        return Ok(report);
    }
    record.validated = report.validation == Validation::Passed;

    // Record the intent, move, record the result.
    log.lands.push(record);
    log.save(&project.state_dir(), lock)?;
    let message = format!(
        "flocks land: {} task(s)",
        report
            .tasks
            .iter()
            .filter(|t| matches!(t.outcome, TaskOutcome::Landed { .. }))
            .count()
    );
    let moved = target::move_ref(&repo, &refname, plan.target_tip, tip, &message)?;
    match moved {
        Ok(checkout) => {
            report.moved = true;
            report.checkout = checkout;
            if let Some(last) = log.lands.last_mut() {
                last.state = LandState::Done;
            }
        }
        Err(stop) => {
            report.stopped = Some(stop);
            log.lands.pop();
        }
    }
    log.save(&project.state_dir(), lock)?;
    Ok(report)
}

/// What `--undo` would do.
#[derive(Debug, Clone)]
pub struct UndoPlan {
    pub target: String,
    /// Where the target is (where the last land left it).
    pub from: Oid,
    /// Where the last land found it.
    pub to: Oid,
    /// The tasks that land brought.
    pub tasks: Vec<String>,
    pub checkout: Option<PathBuf>,
    pub dirty: Vec<String>,
    index: usize,
}

/// Find the last land of the target and check it can be undone: the target
/// must still be where that land left it.
pub fn plan_undo(project: &Project) -> Result<UndoPlan> {
    let repo = crate::git::open(project.repo_dir())?;
    let target = &project.config.workspace.land_target;
    let log = LandLog::load(&project.state_dir())?;
    let Some((index, record)) = log.last_move(target) else {
        return Err(Error::Usage(format!(
            "no land of {target} to undo (none recorded in .flocks/land.json)"
        )));
    };
    let parse = |s: &str| {
        s.parse::<Oid>()
            .map_err(|_| Error::Other(format!("land.json: bad commit id `{s}`")))
    };
    let (from, to) = (parse(&record.new_tip)?, parse(&record.old_tip)?);
    let now = crate::git::branch_tip(&repo, target)?;
    if now != Some(from) {
        return Err(Error::Usage(format!(
            "{target} is at {}, not where the last land left it ({}): something else moved it since, \
             so flocks will not undo that land; reset it by hand if you mean to (git reset --hard {})",
            now.map(short).unwrap_or_else(|| "nothing".into()),
            short(from),
            short(to)
        )));
    }
    let checkouts = target::checkouts(&repo, &format!("refs/heads/{target}"))?;
    let checkout = checkouts.into_iter().next();
    let dirty = match &checkout {
        Some(p) => target::dirty_files(p)?,
        None => Vec::new(),
    };
    Ok(UndoPlan {
        target: target.clone(),
        from,
        to,
        tasks: record.tasks.iter().map(|t| t.id.clone()).collect(),
        checkout,
        dirty,
        index,
    })
}

/// Put the target back where the last land found it. `Ok(Err(reason))`
/// when refused (nothing changed).
pub fn undo(
    project: &Project,
    plan: &UndoPlan,
    lock: &LandLock,
) -> Result<std::result::Result<(), String>> {
    let repo = crate::git::open(project.repo_dir())?;
    let refname = format!("refs/heads/{}", plan.target);
    let message = format!("flocks land --undo: back to {}", short(plan.to));
    let moved = target::move_ref(&repo, &refname, plan.from, plan.to, &message)?;
    let moved = moved.map(|_| ());
    if moved.is_ok() {
        let mut log = LandLog::load(&project.state_dir())?;
        if let Some(r) = log.lands.get_mut(plan.index)
            && r.new_tip == plan.from.to_string()
        {
            r.state = LandState::Undone;
            r.undone_at = Some(chrono::Utc::now());
        }
        log.save(&project.state_dir(), lock).ctx_land()?;
    }
    Ok(moved)
}

trait CtxLand<T> {
    fn ctx_land(self) -> Result<T>;
}

impl<T> CtxLand<T> for Result<T> {
    fn ctx_land(self) -> Result<T> {
        self.map_err(|e| {
            Error::Other(format!(
                "the target moved back, but recording it failed: {e}"
            ))
        })
    }
}
