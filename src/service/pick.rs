//! `flocks pick <id> <k>`: override a best-of task's judgement before it
//! lands. Variant k (whose agent succeeded) becomes the task's work: the
//! judgement records the pick, the task succeeds, its branch points at the
//! variant's tip, and a `variant_judged` event (`by: "pick"`) is appended.

use chrono::Utc;

use crate::error::{Error, Result};
use crate::land::judge::{mark_winner, point_branch};
use crate::project::Project;
use crate::report::Event;
use crate::state::{JudgedBy, Judgement, Outcome, TaskStatus};

/// What the pick changed, for the command to say.
pub(crate) struct Picked {
    pub task: String,
    pub variant: u32,
    pub branch: String,
    /// The winner before the pick, if there was one.
    pub before: Option<u32>,
}

pub(crate) fn pick(project: &Project, id: &str, k: u32) -> Result<Picked> {
    project.repo()?;
    let _run = project.lock("pick")?;
    let _land = crate::land::LandLock::acquire(&project.state_dir())?;
    let mut state = project.store.load()?;
    let Some(rec) = state.task(id) else {
        return Err(Error::Usage(format!(
            "no task `{id}` in the run state: `flocks status` lists the tasks"
        )));
    };
    if rec.variants.is_empty() {
        return Err(Error::Usage(format!(
            "task `{id}` has no variants to pick from: `best_of` on its line (or in flocks.toml) runs several"
        )));
    }
    let n = rec.variants.len();
    let Some(v) = rec.variant(k) else {
        return Err(Error::Usage(format!(
            "task `{id}` has variants 1 to {n}, not {k}"
        )));
    };
    let Some(tip) = v
        .status
        .is_success()
        .then(|| v.successful_attempt().and_then(|a| a.end_tip.clone()))
        .flatten()
    else {
        let how = match &v.status {
            TaskStatus::Done { outcome } => outcome.describe(),
            other => other.label().to_string(),
        };
        return Err(Error::Usage(format!(
            "variant {k} of `{id}` did not succeed ({how}): it has no work to pick"
        )));
    };
    let Some(old) = rec.best_of.as_ref().and_then(|b| b.judgement.clone()) else {
        return Err(Error::Usage(format!(
            "the variants of `{id}` have not been judged yet: `flocks run` judges them once they have all ended"
        )));
    };
    if crate::land::landed_ids(project, &state).contains(id) {
        return Err(Error::Usage(format!(
            "task `{id}` has landed already: a pick changes what lands, so it comes before `flocks land`"
        )));
    }
    let branch = rec.branch.clone();
    let reason = match old.winner {
        Some(w) if w == k => format!(
            "picked by hand (the judgement had picked it too: {})",
            old.reason
        ),
        Some(w) => format!("picked by hand over v{w} ({})", old.reason),
        None => format!(
            "picked by hand, although no variant survived ({})",
            old.reason
        ),
    };
    let judgement = Judgement {
        winner: Some(k),
        by: JudgedBy::Pick,
        reason,
        ranking: mark_winner(old.ranking.clone(), k),
        at: Utc::now(),
        notice: None,
        judge_cost_usd: old.judge_cost_usd,
    };
    point_branch(project.repo_dir(), &branch, &tip)?;
    let Some(rec) = state.task_mut(id) else {
        return Err(Error::Internal(format!(
            "task `{id}` vanished from the state"
        )));
    };
    rec.branch_created = true;
    if let Some(b) = rec.best_of.as_mut() {
        b.judgement = Some(judgement.clone());
    }
    // What was predicted and flagged was about the old winner's work
    // (`land --dry-run` checks the new one).
    rec.conflict = None;
    rec.outside_footprint.clear();
    if !rec.status.is_success() {
        rec.transition(TaskStatus::Done {
            outcome: Outcome::Success,
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
    }
    project.store.save(&state)?;
    let event = Event::VariantJudged {
        task: id.to_string(),
        winner: Some(k),
        by: JudgedBy::Pick,
        reason: judgement.reason,
        ranking: judgement.ranking,
        notice: None,
    };
    if let Err(e) = crate::report::jsonl::append_event(&project.events_path(), &event) {
        crate::output::report(&format!("note: could not append to events.jsonl: {e}\n"));
    }
    Ok(Picked {
        task: id.to_string(),
        variant: k,
        branch,
        before: old.winner,
    })
}
