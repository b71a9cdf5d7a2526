//! `flocks sail "<objective>"`: plan, then run the plan with `--supervise`.

use clap::Args;

use super::plan::{PlanOptions, make_plan};
use crate::error::{Exit, Result};
use crate::project::Project;
use crate::runner::RunOptions;

#[derive(Args, Debug, Clone)]
pub struct SailArgs {
    /// What the fleet should achieve
    pub objective: String,
    #[command(flatten)]
    pub plan: PlanOptions,
    /// Extra attempts after a failure (default: max_retries from flocks.toml)
    #[arg(long, value_name = "N")]
    pub max_retries: Option<u32>,
    /// Exit (code 5) instead of waiting when every credential is parked
    #[arg(long)]
    pub no_wait: bool,
    /// Plain line-by-line output even on a terminal
    #[arg(long)]
    pub no_progress: bool,
}

pub fn run(project: Project, args: &SailArgs) -> Result<Exit> {
    // The plan's lock is released before the run takes its own.
    let tasks = match make_plan(&project, &args.objective, &args.plan)? {
        Ok(tasks) => tasks,
        Err(exit) => return Ok(exit),
    };
    let template = super::run::load_template(&project.config, &tasks)?;
    let opts = RunOptions {
        supervise: true,
        max_retries: args.max_retries.unwrap_or(project.config.max_retries),
        no_wait: args.no_wait,
        progress: !args.no_progress,
    };
    crate::outln!("sailing: running the plan with --supervise");
    super::run::execute(project, tasks, template, None, opts, "sail", |_, _| Ok(()))
}
