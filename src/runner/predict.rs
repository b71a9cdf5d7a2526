//! The git work behind the fleet's conflict rules, off the dispatch loop:
//! the prediction of what `land` will find (in memory, [`crate::land::predict`]),
//! the footprint check of new successes, and the start of an early redo.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use git2::Oid;

use super::fleet::{FootprintJob, PredictJob, PredictResult, RedoError, RedoJob};
use super::start_from;
use crate::land::predict::Predictor;
use crate::land::{LandLog, task_range};
use crate::state::NextAttempt;

/// Where the work happens.
#[derive(Debug, Clone)]
pub(crate) struct Where {
    pub repo: PathBuf,
    pub target: String,
    pub state_dir: PathBuf,
}

/// Predict with `predictor` (the chain it kept from last time) or a new one;
/// hand the predictor back for the next time.
/// Given up between two tasks once `cancel` is set (the run ended).
pub(crate) fn predict(
    predictor: Option<Predictor>,
    job: &PredictJob,
    at: &Where,
    cancel: &AtomicBool,
) -> (Option<Predictor>, PredictResult) {
    let mut predictor = match predictor {
        Some(p) => Ok(p),
        None => Predictor::open(&at.repo, &at.target),
    };
    let prediction = match &mut predictor {
        Ok(p) => LandLog::load(&at.state_dir).and_then(|log| {
            p.predict_until(&job.state, &log, cancel)?.map_err(|_| {
                crate::error::Error::Other("the run ended before it was worked out".into())
            })
        }),
        Err(e) => Err(crate::error::Error::Other(e.to_string())),
    };
    let result = PredictResult {
        prediction: prediction.map_err(|e| e.to_string()),
    };
    // A predictor whose last prediction failed starts over next time.
    let keep = match (&result.prediction, predictor) {
        (Ok(_), Ok(p)) => Some(p),
        _ => None,
    };
    (keep, result)
}

/// The paths a new success changed outside its footprint, sorted.
pub(crate) fn outside_footprint(job: &FootprintJob) -> Result<Vec<String>, String> {
    let paths = changed_paths(&job.repo, &job.record).map_err(|e| e.to_string())?;
    Ok(job.footprint.outside(paths.iter().map(String::as_str)))
}

/// The paths a succeeded task's work (`origin..tip`) changes, sorted.
fn changed_paths(repo: &Path, rec: &crate::state::TaskRecord) -> crate::error::Result<Vec<String>> {
    use crate::error::Context;
    let repo = crate::git::open(repo)?;
    let Ok(r) = task_range(&repo, rec) else {
        return Ok(Vec::new());
    };
    let tree = |o: Oid| {
        repo.find_commit(o)
            .and_then(|c| c.tree())
            .ctx(|| format!("read the tree of {o}"))
    };
    let (old, new) = (tree(r.origin)?, tree(r.tip)?);
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .ctx(|| "diff the task's work".into())?;
    let mut paths: Vec<String> = Vec::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path().and_then(|p| p.to_str())
                && !paths.iter().any(|x| x == p)
            {
                paths.push(p.to_string());
            }
        }
    }
    paths.sort();
    Ok(paths)
}

/// The start of an early redo: the land target as it is now with the work
/// of the tasks it clashed with; the task's tip kept under
/// `refs/flocks/backup/<id>/<attempt>`; its prompt's context.
pub(crate) fn prepare_redo(job: &RedoJob) -> Result<NextAttempt, RedoError> {
    let git = |e: crate::error::Error| RedoError::Git(e.to_string());
    let repo = crate::git::open(&job.repo).map_err(git)?;
    let target = &job.conflict.target;
    let onto = crate::git::branch_tip(&repo, target)
        .map_err(git)?
        .ok_or_else(|| RedoError::TargetGone(target.clone()))?;
    let ranges =
        start_from::ranges(&repo, &job.with).map_err(|e| RedoError::Combine(e.to_string()))?;
    let base =
        start_from::build(&repo, onto, &ranges).map_err(|e| RedoError::Combine(e.to_string()))?;
    let earlier = task_range(&repo, &job.record)
        .ok()
        .map(|r| (r.origin, r.tip));
    let backup =
        crate::land::resolve::backup(&repo, &job.branch, &job.task, job.before).map_err(git)?;
    let context = crate::land::resolve::early_context(
        &repo,
        &job.branch,
        &job.conflict,
        earlier,
        base,
        backup.as_ref().map(|(name, _)| name.as_str()),
    )
    .map_err(git)?;
    Ok(NextAttempt {
        fresh: true,
        resume_session: None,
        resume_pool: None,
        ended: None,
        context: Some(context),
        base: Some(base.to_string()),
    })
}
