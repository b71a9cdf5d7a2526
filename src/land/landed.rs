//! Which succeeded tasks are on the target already, for `status`, `tasks` and
//! the run summary. Read from the target's history (the `Flocks-Task`
//! trailers) and the land records, the way `land` itself decides, so state.json
//! needs no field for it and an undone land shows as not landed again.

use std::collections::HashSet;

use super::PlanStatus;
use super::plan::plan_with;
use super::record::LandLog;
use crate::project::Project;
use crate::state::State;

/// The ids of the succeeded tasks in `state` whose work is on the land
/// target. Best effort: when the repository, the target or the land records
/// cannot be read, no task is reported as landed.
pub fn landed_ids(project: &Project, state: &State) -> HashSet<String> {
    if !state.tasks.iter().any(|t| t.successful_attempt().is_some()) {
        return HashSet::new();
    }
    let Ok(repo) = project.repo() else {
        return HashSet::new();
    };
    let Ok(log) = LandLog::load(&project.state_dir()) else {
        return HashSet::new();
    };
    let target = &project.config.workspace.land_target;
    match plan_with(&repo, state, &log, target, &[]) {
        Ok(plan) => plan
            .tasks
            .into_iter()
            .filter(|t| t.status == PlanStatus::AlreadyLanded)
            .map(|t| t.id)
            .collect(),
        Err(_) => HashSet::new(),
    }
}
