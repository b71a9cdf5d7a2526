//! `flocks down`: remove what `flocks up` created (exe.dev VMs, docker
//! containers), and only that.

use crate::cli::DownArgs;
use crate::error::{Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &DownArgs) -> Result<Exit> {
    let mut said = 0;
    let mut say = |line: String| {
        said += 1;
        crate::outln!("{line}")
    };
    crate::service::pools::down(project, args.pool.as_deref(), &mut say)?;
    if said == 0 {
        crate::outln!("nothing to remove: `flocks up` made no container or VM for this project");
    }
    Ok(Exit::Ok)
}
