//! `flocks forget <id>...`: drop tasks their task list no longer has from
//! the state (the work is in [`crate::service::forget`]).

use crate::cli::ForgetArgs;
use crate::error::{Exit, Result};
use crate::project::Project;
use crate::service::forget::{ForgetOptions, forget};

pub(super) fn run(project: &Project, args: &ForgetArgs) -> Result<Exit> {
    let done = forget(
        project,
        &ForgetOptions {
            ids: args.ids.clone(),
            branches: args.branches,
            force: args.force,
        },
    )?;
    crate::output::report(&done.render());
    Ok(Exit::Ok)
}
