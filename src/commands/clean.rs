//! `flocks clean`: remove the worktrees and branches of landed tasks (the
//! work is in [`crate::land::clean`]); `--logs --older-than AGE`: remove old
//! attempt and land logs instead.

use std::collections::HashSet;

use crate::cli::CleanArgs;
use crate::error::{Exit, Result};
use crate::land::{self, CleanOptions, LandLock};
use crate::project::Project;
use crate::state::TaskStatus;

pub(super) fn run(project: &Project, args: &CleanArgs) -> Result<Exit> {
    // Outside a repository, say so before a lock creates `.flocks/`.
    project.repo()?;
    if args.logs {
        return clean_logs(project, args.older_than.unwrap_or_default());
    }
    // Clean changes task worktrees: not while a run is going.
    let run_lock = project.lock("clean")?;
    let land_lock = LandLock::acquire(&project.state_dir())?;
    let report = land::clean(
        project,
        &CleanOptions { all: args.all },
        &run_lock,
        &land_lock,
    )?;
    crate::output::report(&report.render());
    Ok(Exit::Ok)
}

/// Remove the log files last written more than `age` ago. Needs no lock
/// (a run may go on): the logs of tasks the state calls running stay, and
/// a log being written is never old.
fn clean_logs(project: &Project, age: std::time::Duration) -> Result<Exit> {
    let state = project.store.load()?;
    // A best-of task's variants run under ids of their own.
    let running: HashSet<String> = state
        .tasks
        .iter()
        .flat_map(|t| std::iter::once(t).chain(&t.variants))
        .filter(|t| matches!(t.status, TaskStatus::Running { .. }))
        .map(|t| t.id.clone())
        .collect();
    let dir = project.state_dir();
    let attempts = crate::disk::remove_old_files(&dir.join("logs"), age, &running);
    let land = crate::disk::remove_old_files(&dir.join("land-logs"), age, &HashSet::new());
    let age_text = crate::output::units::duration(age.as_secs_f64());
    let mut out = format!(
        "Removed {} and {} older than {age_text} ({})\n",
        crate::output::units::count(attempts.files, "attempt log file"),
        crate::output::units::count(land.files, "land log file"),
        crate::output::units::bytes(attempts.bytes + land.bytes)
    );
    if !running.is_empty() {
        let mut ids: Vec<&String> = running.iter().collect();
        ids.sort();
        let ids: Vec<&str> = ids.into_iter().map(String::as_str).collect();
        out.push_str(&format!(
            "Kept the logs of running tasks: {}\n",
            ids.join(", ")
        ));
    }
    for note in attempts.notes.iter().chain(&land.notes) {
        out.push_str(&format!("Note: {note}\n"));
    }
    for (path, why) in attempts.failed.iter().chain(&land.failed) {
        out.push_str(&format!("Could not remove {}: {why}\n", path.display()));
    }
    crate::output::report(&out);
    Ok(if attempts.failed.is_empty() && land.failed.is_empty() {
        Exit::Ok
    } else {
        Exit::Unexpected
    })
}
