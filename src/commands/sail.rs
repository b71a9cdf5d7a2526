//! `flocks sail "<objective>"`: plan, then run the plan with `--supervise`.

use super::plan::make_plan;
use crate::cli::SailArgs;
use crate::error::{Exit, Result};
use crate::project::Project;
use crate::runner::RunOptions;
use crate::service::load;
use crate::service::run::{Requeue, RunRequest, execute};

pub(super) fn run(project: Project, args: &SailArgs) -> Result<Exit> {
    // The plan's lock is released before the run takes its own.
    let tasks = match make_plan(&project, &args.objective, &args.plan)? {
        Ok(tasks) => tasks,
        Err(exit) => return Ok(exit),
    };
    let template = load::load_template(&project.config, &tasks)?;
    let opts = RunOptions {
        supervise: true,
        max_retries: args.max_retries.unwrap_or(project.config.max_retries),
        no_wait: args.no_wait,
        progress: !args.no_progress,
    };
    crate::outln!("sailing: running the plan with --supervise");
    let finished = execute(
        project,
        RunRequest {
            tasks,
            template,
            scope: None,
            opts,
            command: "sail",
            requeue: Requeue::Nothing,
        },
    )?;
    finished.print();
    Ok(finished.exit)
}
