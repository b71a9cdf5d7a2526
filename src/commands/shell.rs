//! `flocks shell <task>`: an interactive shell in the task's worktree, wherever
//! it runs: this machine (in the task's bwrap sandbox for a sandboxed pool),
//! a docker pool's container, the remote host of an ssh or exedev pool, or
//! a Slurm job. The pool's backend says which shell; this runs it.

use std::process::Command;

use crate::backend::house::ShellEnd;
use crate::cli::ShellArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &ShellArgs) -> Result<Exit> {
    let shell = crate::service::pools::shell(project, &args.task)?;
    if let Some(note) = &shell.note {
        crate::outln!("{note}");
    }
    let mut cmd = Command::new(&shell.argv[0]);
    cmd.args(&shell.argv[1..]);
    if let Some(dir) = &shell.dir {
        cmd.current_dir(dir);
    }
    // No process group of its own: the shell needs the terminal.
    let status = cmd
        .status()
        .map_err(|e| (shell.start_error)(format!("{}: {e}", shell.cannot_start)))?;
    match shell.end {
        ShellEnd::Fine => Ok(Exit::Ok),
        ShellEnd::Status if status.success() => Ok(Exit::Ok),
        ShellEnd::Status => Ok(Exit::Unexpected),
        ShellEnd::Ssh(why) if status.code() == Some(255) => Err(Error::CannotStart(why)),
        ShellEnd::Ssh(_) => Ok(Exit::Ok),
    }
}
