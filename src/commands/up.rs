//! `flocks up`: create what pools need before a run (exe.dev VMs, docker
//! containers), recorded in state.json so that `flocks down` removes exactly
//! those.

use crate::cli::UpArgs;
use crate::error::{Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &UpArgs) -> Result<Exit> {
    let mut say = |line: String| crate::outln!("{line}");
    let did = crate::service::pools::up(project, args.pool.as_deref(), &mut say)?;
    if !did {
        crate::outln!(
            "no pool needs `flocks up` (only exedev pools, and docker pools with an image, do)"
        );
    }
    Ok(Exit::Ok)
}
