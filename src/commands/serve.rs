//! `flocks serve`: the fleet's dashboard in a web browser (see [`crate::web`]).

use crate::cli::ServeArgs;
use crate::error::{Exit, Result};
use crate::project::Project;
use crate::web::{ServeOptions, serve};

pub(super) fn run(project: Project, args: &ServeArgs) -> Result<Exit> {
    serve(
        project,
        &ServeOptions {
            addr: args.addr.clone(),
            allow_actions: args.allow_actions,
        },
    )
}
