//! One file per subcommand. `dispatch` maps the parsed command line to them.

mod clean;
mod completions;
mod diff;
mod down;
mod hosts;
mod init;
mod land;
mod land_resolve;
mod logs;
mod man;
mod plan;
mod retry;
mod run;
mod sail;
mod shell;
mod status;
mod stop;
mod tasks;
mod up;

use crate::cli::{Cli, Command};
use crate::error::{Exit, Result};
use crate::project::Project;

pub fn dispatch(cli: Cli) -> Result<Exit> {
    crate::output::set_color(cli.color);
    let project = || Project::discover(cli.config.as_deref());
    let result = match &cli.command {
        Command::Run(args) => run::run(project()?, args),
        Command::Status(args) => status::run(&project()?, args),
        Command::Top => crate::tui::run(&project()?),
        Command::Logs(args) => logs::run(&project()?, args),
        Command::Diff(args) => diff::run(&project()?, args),
        Command::Retry(args) => retry::run(project()?, args),
        Command::Stop => stop::run(&project()?),
        Command::Land(args) => land::run(&project()?, args),
        Command::Clean(args) => clean::run(&project()?, args),
        Command::Plan(args) => plan::run(&project()?, args),
        Command::Sail(args) => sail::run(project()?, args),
        Command::Tasks(args) => tasks::run(&project()?, args),
        Command::Init => init::run(cli.config.as_deref()),
        Command::Hosts(args) => hosts::run(&project()?, args),
        Command::Shell(args) => shell::run(&project()?, args),
        Command::Up(args) => up::run(&project()?, args),
        Command::Down(args) => down::run(&project()?, args),
        Command::Completions(args) => completions::run(args),
        Command::Man(args) => man::run(args),
    };
    // Multiplexing masters end with the command that started them.
    crate::backend::ssh::stop_masters();
    result
}
