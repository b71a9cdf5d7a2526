//! `flocks down`: remove what `flocks up` created (exe.dev VMs, docker
//! containers), and only that.

use crate::cli::DownArgs;
use crate::error::{Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &DownArgs) -> Result<Exit> {
    let mut say = |line: String| crate::outln!("{line}");
    crate::service::pools::down(project, args.pool.as_deref(), &mut say)?;
    Ok(Exit::Ok)
}
