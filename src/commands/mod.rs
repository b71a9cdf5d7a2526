//! One file per subcommand. `dispatch` maps the parsed command line to them.

mod clean;
mod completions;
mod diff;
mod down;
mod forget;
mod hosts;
mod init;
mod land;
pub(crate) mod logs;
mod man;
mod pick;
mod plan;
mod report;
mod retry;
mod run;
mod sail;
mod serve;
mod shell;
mod status;
mod stop;
pub(crate) mod tasks;
mod trust;
mod up;

use crate::cli::{Cli, Command};
use crate::error::{Exit, Result};
use crate::project::Project;

pub fn dispatch(cli: Cli) -> Result<Exit> {
    crate::output::set_color(cli.color);
    let project = || Project::discover(cli.config.as_deref());
    // Commands that may run what flocks.toml, a task source or git's hooks
    // say, on this machine: first check that no agent rewrote them.
    let trusted = |doing: &str| -> Result<Project> {
        let p = project()?;
        crate::trust::check(&p.config, doing)?;
        if crate::trust::has_remote_agents(&p.config) && starts_agents(&cli.command) {
            crate::trust::record(&p.config)?;
        }
        Ok(p)
    };
    let result = match &cli.command {
        Command::Run(args) => run::run(trusted("run")?, args),
        Command::Status(args) => status::run(&project()?, args),
        Command::Top => crate::tui::run(&project()?),
        Command::Serve(args) => serve::run(project()?, args),
        Command::Report(args) => report::run(&project()?, args),
        Command::Logs(args) => logs::run(&project()?, args),
        Command::Diff(args) => diff::run(&project()?, args),
        Command::Pick(args) => pick::run(&project()?, args),
        Command::Retry(args) => retry::run(trusted("retry")?, args),
        Command::Stop => stop::run(&project()?),
        Command::Land(args) => land::run(&trusted("land")?, args),
        Command::Clean(args) => clean::run(&project()?, args),
        Command::Forget(args) => forget::run(&project()?, args),
        Command::Plan(args) => plan::run(&trusted("plan")?, args),
        Command::Sail(args) => sail::run(trusted("sail")?, args),
        Command::Tasks(args) => tasks::run(&trusted("list the tasks")?, args),
        Command::Init => init::run(cli.config.as_deref()),
        Command::Hosts(args) => hosts::run(&trusted("check hosts")?, args),
        Command::Shell(args) => shell::run(&project()?, args),
        Command::Up(args) => up::run(&trusted("up")?, args),
        Command::Down(args) => down::run(&project()?, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
        Command::Trust => trust::run(&project()?),
    };
    // Multiplexing masters end with the command that started them.
    crate::backend::ssh::stop_masters();
    result
}

/// Whether the command starts agents (a run, a retry, a plan).
fn starts_agents(c: &Command) -> bool {
    matches!(
        c,
        Command::Run(_) | Command::Retry(_) | Command::Sail(_) | Command::Plan(_)
    )
}
