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
use crate::state::{NextAttempt, State};

/// Where the work happens.
#[derive(Debug, Clone)]
pub(crate) struct Where {
    pub repo: PathBuf,
    pub target: String,
    pub state_dir: PathBuf,
}

/// What predictions keep between them: the predictor (the chain it worked
/// out) and its copy of the records it reads.
pub(crate) struct Predicting {
    predictor: Predictor,
    copied: Copied,
}

/// The predictor's copy of the succeeded records and of the tasks they
/// depend on, in the state's order, brought up to date by each
/// [`PredictJob`] with the records that changed. A record that no longer
/// succeeds stays, up to date: a round reads only the succeeded ones and
/// their dependencies, as `land` does from the whole state.
#[derive(Default)]
struct Copied {
    state: State,
    /// The run's state position of each of `state.tasks`, ascending.
    positions: Vec<usize>,
}

impl Copied {
    fn update(&mut self, job: PredictJob) {
        if job.start_over {
            *self = Copied::default();
        }
        let mut reindex = false;
        for (position, record) in job.records {
            match self.positions.binary_search(&position) {
                Ok(k) => {
                    reindex |= self.state.tasks[k].id != record.id;
                    self.state.tasks[k] = record;
                }
                Err(k) if k == self.positions.len() => {
                    self.state.index.insert(&record.id, k);
                    self.positions.push(position);
                    self.state.tasks.push(record);
                }
                Err(k) => {
                    reindex = true;
                    self.positions.insert(k, position);
                    self.state.tasks.insert(k, record);
                }
            }
        }
        if reindex {
            self.state.reindex();
        }
    }
}

/// Predict with what the last prediction kept (or from scratch), after
/// bringing its copy of the records up to date with `job`; hand it back for
/// the next time. Given up between two tasks once `cancel` is set (the run
/// ended).
pub(crate) fn predict(
    kept: Option<Predicting>,
    job: PredictJob,
    at: &Where,
    cancel: &AtomicBool,
) -> (Option<Predicting>, PredictResult) {
    // A job that only brings a copy up to date needs the copy (the fleet
    // starts over after every failed prediction, so this is a bug).
    if kept.is_none() && !job.start_over {
        let why = "internal error, please report it: the predictor's copy of the records was lost (the next prediction starts over)";
        let prediction = Err(why.to_string());
        return (None, PredictResult { prediction });
    }
    let (mut predictor, mut copied) = match kept {
        Some(k) => (Ok(k.predictor), k.copied),
        None => (Predictor::open(&at.repo, &at.target), Copied::default()),
    };
    copied.update(job);
    let prediction = match &mut predictor {
        Ok(p) => LandLog::load(&at.state_dir).and_then(|log| {
            p.predict_until(&copied.state, &log, cancel)?.map_err(|_| {
                crate::error::Error::Other("the run ended before it was worked out".into())
            })
        }),
        Err(e) => Err(crate::error::Error::Other(e.to_string())),
    };
    let result = PredictResult {
        prediction: prediction.map_err(|e| e.to_string()),
    };
    // A predictor whose last prediction failed starts over next time (and
    // the fleet sends it every record it needs).
    let keep = match (&result.prediction, predictor) {
        (Ok(_), Ok(predictor)) => Some(Predicting { predictor, copied }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> crate::state::TaskRecord {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let one: State = serde_json::from_str(text).unwrap();
        crate::state::TaskRecord {
            id: id.into(),
            ..one.tasks[0].clone()
        }
    }

    fn job(start_over: bool, records: &[(usize, &str)]) -> PredictJob {
        PredictJob {
            start_over,
            records: records.iter().map(|(i, id)| (*i, record(id))).collect(),
        }
    }

    fn ids(c: &Copied) -> Vec<&str> {
        c.state.tasks.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn an_update_without_the_copy_it_updates_fails_and_keeps_nothing() {
        let at = Where {
            repo: "/nonexistent".into(),
            target: "main".into(),
            state_dir: "/nonexistent/.flocks".into(),
        };
        let cancel = AtomicBool::new(false);
        let (kept, result) = predict(None, job(false, &[(0, "a")]), &at, &cancel);
        assert!(kept.is_none());
        let why = result.prediction.err().unwrap();
        assert!(why.contains("starts over"), "{why}");
    }

    #[test]
    fn the_copy_keeps_the_states_order_whatever_order_records_come_in() {
        let mut c = Copied::default();
        c.update(job(true, &[(4, "e")]));
        c.update(job(false, &[(1, "b"), (7, "h")]));
        c.update(job(false, &[(0, "a"), (4, "e")]));
        assert_eq!(ids(&c), ["a", "b", "e", "h"]);
        assert_eq!(c.positions, [0, 1, 4, 7]);
        for id in ["a", "b", "e", "h"] {
            assert_eq!(c.state.task(id).unwrap().id, id);
        }
        // A newer version replaces the old one in its place.
        let mut newer = job(false, &[(1, "b")]);
        newer.records[0].1.requeues = 9;
        c.update(newer);
        assert_eq!(c.state.task("b").unwrap().requeues, 9);
        assert_eq!(ids(&c), ["a", "b", "e", "h"]);
        // Starting over drops the rest.
        c.update(job(true, &[(2, "c")]));
        assert_eq!(ids(&c), ["c"]);
        assert!(c.state.task("a").is_none());
    }
}
