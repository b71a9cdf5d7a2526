//! Which succeeded tasks are on the target already, for `status`, `tasks`,
//! the dashboard and the run summary. Read from the target's history (the
//! `Flocks-Task` trailers) and the land records through land's own plan, so
//! state.json needs no field for it and an undone land shows as not landed
//! again.
//!
//! The dashboard asks at every refresh; the answer is kept until the target,
//! the land records or the succeeded attempts change.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use super::PlanStatus;
use super::plan::plan_with;
use super::record::{self, LandLog};
use super::trailer::Landed;
use crate::project::Project;
use crate::state::State;

/// What the answer depends on.
#[derive(PartialEq, Eq)]
struct Key {
    state_dir: PathBuf,
    target: String,
    target_tip: Option<git2::Oid>,
    land_log: Option<(SystemTime, u64)>,
    /// A hash of (task, start, tip) of each succeeded attempt: kept, not
    /// copied (10,000 tasks' ids and commits, for one `status`).
    attempts: u64,
}

static LAST: Mutex<Option<(Key, HashSet<String>)>> = Mutex::new(None);

/// The ids of the succeeded tasks in `state` whose work is on the land
/// target. Best effort: when the repository, the target or the land records
/// cannot be read, no task is reported as landed.
pub(crate) fn landed_ids(project: &Project, state: &State) -> HashSet<String> {
    let succeeded: Vec<&str> = state
        .tasks
        .iter()
        .filter(|t| t.successful_attempt().is_some())
        .map(|t| t.id.as_str())
        .collect();
    if succeeded.is_empty() {
        return HashSet::new();
    }
    let attempts = {
        use std::hash::{Hash, Hasher};
        let mut h = crate::hash::Fx::default();
        for t in &state.tasks {
            if let Some(a) = t.successful_attempt() {
                (&t.id, &a.start_commit, &a.end_tip).hash(&mut h);
            }
        }
        h.finish()
    };
    let Ok(repo) = project.repo() else {
        return HashSet::new();
    };
    let target = &project.config.workspace.land_target;
    let key = Key {
        state_dir: project.state_dir(),
        target: target.clone(),
        target_tip: crate::git::branch_tip(&repo, target).ok().flatten(),
        land_log: std::fs::metadata(record::path(&project.state_dir()))
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len()))),
        attempts,
    };
    if let Ok(last) = LAST.lock()
        && let Some((k, ids)) = last.as_ref()
        && *k == key
    {
        return ids.clone();
    }
    let Ok(log) = LandLog::load(&project.state_dir()) else {
        return HashSet::new();
    };
    // Only a task with a trailer on the target, or one a land recorded, can
    // be on it: plan just those (planning every succeeded task walks each
    // one's commits, which is most of the time `status` takes on a big run).
    let Some(tip) = key.target_tip else {
        return HashSet::new();
    };
    // Tasks share origins (the base): each is looked up once.
    let mut origins: Vec<git2::Oid> = state
        .tasks
        .iter()
        .filter(|t| t.successful_attempt().is_some())
        .filter_map(|t| t.origin_commit())
        .collect::<HashSet<String>>()
        .into_iter()
        .filter_map(|o| o.parse::<git2::Oid>().ok())
        .filter(|o| repo.find_commit(*o).is_ok())
        .collect();
    origins.sort_unstable();
    let Ok(trailers) = Landed::scan(&repo, tip, &origins) else {
        return HashSet::new();
    };
    let recorded: HashSet<&str> = log
        .lands
        .iter()
        .flat_map(|l| l.tasks.iter().map(|t| t.id.as_str()))
        .collect();
    let candidates: Vec<String> = succeeded
        .iter()
        .filter(|id| !trailers.commits(id).is_empty() || recorded.contains(*id))
        .map(|id| id.to_string())
        .collect();
    let ids: HashSet<String> = if candidates.is_empty() {
        HashSet::new()
    } else {
        match plan_with(&repo, state, &log, target, &candidates) {
            Ok(plan) => plan
                .tasks
                .into_iter()
                .filter(|t| t.status == PlanStatus::AlreadyLanded)
                .map(|t| t.id)
                .collect(),
            Err(_) => return HashSet::new(),
        }
    };
    if let Ok(mut last) = LAST.lock() {
        *last = Some((key, ids.clone()));
    }
    ids
}
