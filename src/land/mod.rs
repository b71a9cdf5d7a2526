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
mod bisect;
mod chain;
mod change;
mod clean;
pub(crate) mod judge;
mod landed;
mod overlap;
mod plan;
pub(crate) mod predict;
mod prediction;
pub(crate) mod push;
pub(crate) mod range;
mod record;
mod render;
pub(crate) mod resolve;
mod scratch;
mod signals;
mod target;
mod trailer;
mod validate;
mod validate_docker;
mod validator;

use std::path::PathBuf;

use git2::Oid;

pub(crate) use change::{change, variant_change};
pub use clean::{CleanOptions, CleanReport, clean};
pub(crate) use landed::landed_ids;
pub use plan::{Plan, PlanStatus, PlannedTask, plan};
pub use predict::{Prediction, Predictor, predict_conflicts};
pub(crate) use range::{NoRange, commits, task_range};
pub use record::{CommitMap, LandLock, LandLog, LandRecord, LandState, LandedTask, Pushed};
pub use render::{CommitJson, ConflictJson, PlanJson, PlanTaskJson};
pub use target::Stop;
pub(crate) use target::{dirty_files, dirty_message};
pub use validate::Validation;

use crate::error::{Context, Error, Exit, Result};
use crate::project::Project;
use chain::Chain;
use range::short;
use validator::Validator;

/// How to land.
#[derive(Debug, Clone, Default)]
pub struct LandOptions {
    /// Skip `[validate] commands`.
    pub no_validate: bool,
    /// Copy the validate commands' output to stdout.
    pub echo: bool,
    /// When validation fails, find the tasks that break it and land the rest.
    pub bisect: bool,
    /// Told what is being validated, as it happens (one line each).
    pub progress: Option<fn(&str)>,
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
    /// How many times the target moved (`--resolve` lands twice).
    pub lands: u32,
    /// Where the target is checked out (its files moved too).
    pub checkout: Option<PathBuf>,
    pub tasks: Vec<TaskReport>,
    pub validation: Validation,
    /// The log of the validation that decided (the last one that ran).
    pub log: Option<PathBuf>,
    /// With `bisect`: every validation, in order.
    pub rounds: Vec<Round>,
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
    /// More to say about this task (e.g. why `--resolve` did not resolve it).
    pub note: Option<String>,
}

/// One validation of a bisection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// 1-based.
    pub number: usize,
    /// The tasks of the validated result, in landing order (none: the target
    /// alone).
    pub tasks: Vec<String>,
    pub tip: Oid,
    pub validation: Validation,
    pub log: PathBuf,
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
    /// Bisection found that it breaks validation: the shortest failing prefix
    /// of the batch ends with it. Nothing of it was applied.
    Culprit {
        commits: usize,
        /// The round that condemns it, how it failed, and the end of its output.
        round: usize,
        failure: Validation,
        log: PathBuf,
        tail: Vec<String>,
    },
    /// It conflicted, `flocks land --resolve` redid it on the new target
    /// (attempt `attempt`), and that landed.
    Resolved {
        attempt: u32,
        commits: usize,
    },
}

impl TaskOutcome {
    /// Lands (or is already on the target): its dependents may land.
    pub fn lands(&self) -> bool {
        !matches!(
            self,
            TaskOutcome::Refused { .. }
                | TaskOutcome::Conflicted { .. }
                | TaskOutcome::Culprit { .. }
        )
    }
}

impl Report {
    /// How many validations ran (bisection rounds, or the one validation).
    pub fn validations(&self) -> usize {
        match (&self.rounds[..], &self.validation) {
            (
                [],
                Validation::Passed | Validation::Failed { .. } | Validation::Interrupted { .. },
            ) => 1,
            (rounds, _) => rounds.len(),
        }
    }

    /// 0, or 4 when anything conflicted or broke validation, validation
    /// failed or the land stopped; 130 when validation was interrupted.
    pub fn exit(&self) -> Exit {
        if matches!(self.validation, Validation::Interrupted { .. }) {
            return Exit::Interrupted;
        }
        let conflicted = self.tasks.iter().any(|t| {
            matches!(
                t.outcome,
                TaskOutcome::Conflicted { .. } | TaskOutcome::Culprit { .. }
            )
        });
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
/// With `bisect`, a failing validation is followed by a search for the tasks
/// that break it; the others land.
pub(crate) fn execute(
    project: &Project,
    plan: &Plan,
    opts: &LandOptions,
    lock: &LandLock,
) -> Result<Report> {
    let repo = crate::git::open(project.repo_dir())?;
    let mut report = Report {
        target: plan.target.clone(),
        old_tip: plan.target_tip,
        new_tip: plan.target_tip,
        moved: false,
        lands: 0,
        checkout: plan.checkout.clone(),
        tasks: Vec::new(),
        validation: Validation::NotNeeded,
        log: None,
        rounds: Vec::new(),
        stopped: None,
    };
    report.stopped = refusal(&repo, plan)?;
    if report.stopped.is_some() {
        return Ok(report);
    }
    // Build the chain, task by task, then validate it in the land worktree.
    let mut chain = Chain::build(&repo, plan)?;
    if chain.tip() != plan.target_tip {
        report.validation = validate_chain(project, &repo, plan, &mut chain, opts, &mut report)?;
    }
    let tip = chain.tip();
    report.tasks = chain.reports(plan);
    report.new_tip = tip;
    if report.validation.failed() {
        return Ok(report);
    }
    let mut log = LandLog::load(&project.state_dir())?;
    let mut record = LandRecord {
        at: chrono::Utc::now(),
        target: plan.target.clone(),
        old_tip: plan.target_tip.to_string(),
        new_tip: tip.to_string(),
        state: LandState::Pending,
        validated: false,
        undone_at: None,
        pushed: None,
        redo_run: None,
        tasks: chain.landed(),
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
    record.validated = report.validation == Validation::Passed;
    // Record the intent, move, record the result.
    log.lands.push(record);
    log.save(&project.state_dir(), lock)?;
    move_target(&repo, plan, tip, &mut report, &mut log)?;
    log.save(&project.state_dir(), lock)?;
    Ok(report)
}

/// Why the land cannot begin (nothing changed): the target's checkout has
/// uncommitted changes, or the target moved since the plan was made.
fn refusal(repo: &git2::Repository, plan: &Plan) -> Result<Option<String>> {
    if let Some(wt) = &plan.checkout
        && !plan.dirty.is_empty()
        && plan.has_work()
    {
        return Ok(Some(target::dirty_message(&plan.target, wt, &plan.dirty)));
    }
    let now = crate::git::branch_tip(repo, &plan.target)?;
    if now != Some(plan.target_tip) {
        return Ok(Some(format!(
            "{} moved since the plan was made (was {}, now {}); nothing was changed: run flocks land again",
            plan.target,
            short(plan.target_tip),
            now.map(short).unwrap_or_else(|| "gone".into())
        )));
    }
    Ok(None)
}

/// Validate the chain's tip (or, with `--bisect`, find the tasks that break
/// it and leave them out of the chain); the log and why it stopped go in
/// `report`.
fn validate_chain(
    project: &Project,
    repo: &git2::Repository,
    plan: &Plan,
    chain: &mut Chain,
    opts: &LandOptions,
    report: &mut Report,
) -> Result<Validation> {
    if opts.no_validate {
        return Ok(Validation::Skipped);
    }
    if project.config.validate.commands.is_empty() {
        return Ok(Validation::NotConfigured);
    }
    // The land's own host `.git` guards (a land is not part of a run).
    let guards = crate::guard::Guards::default();
    let validator = Validator::new(project, repo, &guards)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let logs = project.state_dir().join("land-logs");
    if !opts.bisect {
        let log = logs.join(format!("{stamp}.log"));
        report.log = Some(log.clone());
        return validator.run(repo, chain.tip(), &log, opts.echo);
    }
    let mut b = bisect::Bisection {
        repo,
        plan,
        chain,
        validator: &validator,
        dir: logs.join(format!("{stamp}-bisect")),
        rounds: &mut report.rounds,
        echo: opts.echo,
        progress: opts.progress,
    };
    let found = b.run()?;
    report.log = found.log;
    report.stopped = found.stopped;
    Ok(found.validation)
}

/// Move the target to `tip` (refused when its checkout or the target
/// changed meanwhile: `report.stopped` says so, and the pending record is
/// dropped).
fn move_target(
    repo: &git2::Repository,
    plan: &Plan,
    tip: Oid,
    report: &mut Report,
    log: &mut LandLog,
) -> Result<()> {
    let landed = report
        .tasks
        .iter()
        .filter(|t| matches!(t.outcome, TaskOutcome::Landed { .. }))
        .count();
    let message = format!(
        "flocks land: {}",
        crate::output::units::count(landed, "task")
    );
    let refname = format!("refs/heads/{}", plan.target);
    match target::move_ref(repo, &refname, plan.target_tip, tip, &message)? {
        Ok(checkout) => {
            report.moved = true;
            report.lands = 1;
            report.checkout = checkout;
            if let Some(last) = log.lands.last_mut() {
                last.state = LandState::Done;
            }
        }
        Err(stop) => {
            report.stopped = Some(stop.to_string());
            log.lands.pop();
        }
    }
    Ok(())
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
    /// Their branches that are gone (`flocks clean`, or by hand), with the
    /// tip each had when it landed: the undo makes them again, so that
    /// `land` can bring the work back.
    pub restore: Vec<Restore>,
    pub checkout: Option<PathBuf>,
    pub dirty: Vec<String>,
    /// `land --push` pushed it: undoing it here leaves the remote ahead.
    pub pushed: Option<Pushed>,
    index: usize,
}

/// A task branch `--undo` makes again.
#[derive(Debug, Clone)]
pub struct Restore {
    pub task: String,
    pub branch: String,
    pub tip: Oid,
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
             so flocks will not undo that land; reset it by hand if you mean to ({})",
            now.map(short).unwrap_or_else(|| "nothing".into()),
            short(from),
            crate::suggest::command(&["git", "reset", "--hard", &short(to)])
        )));
    }
    // After the undo, `land` needs each task's branch at its recorded tip.
    let mut restore = Vec::new();
    let mut missing = Vec::new();
    for t in &record.tasks {
        if crate::git::branch_tip(&repo, &t.branch)?.is_some() {
            continue;
        }
        match t.tip.parse::<Oid>() {
            Ok(tip) if repo.find_commit(tip).is_ok() => restore.push(Restore {
                task: t.id.clone(),
                branch: t.branch.clone(),
                tip,
            }),
            _ => missing.push(format!(
                "{} (task {}) is gone, and so is its tip {}",
                t.branch,
                t.id,
                t.tip.get(..10).unwrap_or(&t.tip)
            )),
        }
    }
    if !missing.is_empty() {
        return Err(Error::LandStopped(format!(
            "flocks will not undo the last land of {target}: its work would be lost, since what `land` \
             needs to bring it back is missing: branch {}. Nothing was changed; {} still has that work \
             (undo it by hand if you mean to: {})",
            missing.join("; branch "),
            target,
            crate::suggest::command(&["git", "reset", "--hard", &short(to)])
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
        restore,
        checkout,
        dirty,
        pushed: record.pushed.clone(),
        index,
    })
}

/// Put the target back where the last land found it. `Ok(Err(reason))`
/// when refused (nothing changed).
pub fn undo(
    project: &Project,
    plan: &UndoPlan,
    lock: &LandLock,
) -> Result<std::result::Result<(), target::Stop>> {
    let repo = crate::git::open(project.repo_dir())?;
    let refname = format!("refs/heads/{}", plan.target);
    let message = format!("flocks land --undo: back to {}", short(plan.to));
    let moved = target::move_ref(&repo, &refname, plan.from, plan.to, &message)?;
    let moved = moved.map(|_| ());
    if moved.is_ok() {
        for r in &plan.restore {
            let commit = repo
                .find_commit(r.tip)
                .ctx(|| format!("find commit {}", r.tip))?;
            // `force = false`: a branch made meanwhile is left as it is.
            match repo.branch(&r.branch, &commit, false) {
                Ok(_) => {
                    // The branch holds the tip now.
                    if let Ok(mut kept) = repo.find_reference(&clean::cleaned_ref(&r.branch)) {
                        let _ = kept.delete();
                    }
                }
                Err(e) => {
                    eprintln!(
                        "note: could not restore branch {} at {} (task {}): {}",
                        r.branch,
                        short(r.tip),
                        r.task,
                        e.message()
                    );
                }
            }
        }
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
