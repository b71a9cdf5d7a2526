//! `flocks clean`: remove the worktrees and branches of landed tasks. The
//! work is in [`crate::land::clean`].

use crate::cli::CleanArgs;
use crate::error::{Exit, Result};
use crate::land::{self, CleanOptions, LandLock};
use crate::project::Project;

pub fn run(project: &Project, args: &CleanArgs) -> Result<Exit> {
    // Outside a repository, say so before a lock creates `.flocks/`.
    project.repo()?;
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
