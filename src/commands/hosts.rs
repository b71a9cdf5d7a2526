//! `flocks hosts check`: for every host of the ssh and exedev pools, whether it
//! is reachable, has git, has the agent command (and its version), how much disk
//! is free under `remote_dir`, whether the pool's `setup` ran there, and
//! (with a `.worktreeinclude`) whether `tar` is there to receive its files.
//! For a Slurm pool: whether the scheduler answers, the partition exists and
//! takes the pool's jobs, and the same on a compute node, by a short job.

use crate::cli::{HostsAction, HostsArgs};
use crate::error::{Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &HostsArgs) -> Result<Exit> {
    let HostsAction::Check { pool: only } = &args.action;
    let Some(found) = crate::service::pools::check(project, only.as_deref())? else {
        crate::outln!("no ssh, exedev or slurm pools in flocks.toml");
        return Ok(Exit::Ok);
    };
    let mut problems = 0;
    for checked in &found {
        crate::outln!("{}", checked.heading);
        for (k, v) in &checked.lines {
            crate::outln!("  {k:<11} {v}");
        }
        if !checked.ok {
            problems += 1;
        }
    }
    Ok(if problems == 0 {
        Exit::Ok
    } else {
        Exit::CouldNotStart
    })
}
