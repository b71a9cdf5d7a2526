//! A task's change as `land` would apply it (the range its plan picks), for
//! `flocks diff`. The range comes from the land plan itself, so `diff` and
//! `land` never disagree about what a task changed.

use git2::Oid;

use super::PlanStatus;
use super::plan::plan_with;
use super::record::LandLog;
use crate::error::{Error, Result};
use crate::project::Project;

/// What `land` would apply for task `id` (or applied, when it has landed):
/// `start..tip`.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    pub start: Oid,
    pub tip: Oid,
}

/// The range of task `id` as land's plan computes it. A task with no range
/// (it has not succeeded, or its attempt recorded none) is an error that
/// says why and what to look at instead.
pub(crate) fn change(project: &Project, id: &str) -> Result<Change> {
    let repo = project.repo()?;
    let state = project.store.load()?;
    let log = LandLog::load(&project.state_dir())?;
    let target = &project.config.workspace.land_target;
    let plan = plan_with(&repo, &state, &log, target, &[id.to_string()])?;
    let Some(task) = plan.tasks.into_iter().find(|t| t.id == id) else {
        return Err(Error::Usage(format!(
            "no task `{id}` in the run state: see `flocks status` for the task ids"
        )));
    };
    match (task.start, task.tip) {
        (Some(start), Some(tip)) => Ok(Change { start, tip }),
        _ => {
            let why = match task.status {
                PlanStatus::Refused { reason } => reason,
                _ => "it has no recorded range".into(),
            };
            Err(Error::Usage(format!(
                "task `{id}` has no change that land would apply: {why}; `flocks logs {id}` shows its last attempt"
            )))
        }
    }
}

/// The work of variant `k` of best-of task `id` (`origin..tip`, from
/// [`super::range`]), judged winner or not.
pub(crate) fn variant_change(project: &Project, id: &str, k: u32) -> Result<Change> {
    let repo = project.repo()?;
    let state = project.store.load()?;
    let Some(rec) = state.task(id) else {
        return Err(Error::Usage(format!(
            "no task `{id}` in the run state: see `flocks status` for the task ids"
        )));
    };
    if rec.variants.is_empty() {
        return Err(Error::Usage(format!(
            "task `{id}` has no variants (it is not a best-of task): `flocks diff {id}` shows its change"
        )));
    }
    let Some(v) = rec.variant(k) else {
        return Err(Error::Usage(format!(
            "task `{id}` has variants 1 to {}, not {k}",
            rec.variants.len()
        )));
    };
    match super::range::task_range(&repo, v) {
        Ok(r) => Ok(Change {
            start: r.origin,
            tip: r.tip,
        }),
        Err(why) => Err(Error::Usage(format!(
            "variant {k} of `{id}` has no change to show: {why}; `flocks logs {id} --variant {k}` shows its last attempt"
        ))),
    }
}
