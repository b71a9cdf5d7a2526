//! `flocks stop`: ask the running dispatcher to stop its agents gracefully.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::ProjectLock;

pub(super) fn run(project: &Project) -> Result<Exit> {
    let Some(holder) = ProjectLock::holder(&project.state_dir()) else {
        crate::outln!("no flocks run is going in {}", project.config.dir.display());
        return Ok(Exit::Ok);
    };
    if holder.pid == 0 {
        return Err(Error::Other(
            "the lock is held, but its holder is unknown".into(),
        ));
    }
    kill(Pid::from_raw(holder.pid as i32), Signal::SIGTERM)
        .map_err(|e| Error::Other(format!("cannot signal {}: {e}", holder.describe())))?;
    crate::outln!(
        "asked {} to stop its agents gracefully; state is kept. `flocks run` continues later",
        holder.describe()
    );
    Ok(Exit::Ok)
}
