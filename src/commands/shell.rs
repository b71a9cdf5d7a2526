//! `flocks shell <task>`: an interactive shell in the task's worktree, wherever
//! it runs: this machine, or the remote host of an ssh or exedev pool.

use std::path::PathBuf;
use std::process::Command;

use crate::backend::ssh::conn::{self, Target};
use crate::backend::ssh::exedev;
use crate::cli::ShellArgs;
use crate::config::BackendConfig;
use crate::error::{Error, Exit, Result};
use crate::project::Project;

pub fn run(project: &Project, args: &ShellArgs) -> Result<Exit> {
    let config = &project.config;
    let state = project.store.load()?;
    let rec = state.task(&args.task).ok_or_else(|| {
        Error::Usage(format!(
            "no task `{}` in this project's state: `flocks status` lists them",
            args.task
        ))
    })?;
    let pool = rec
        .attempts
        .last()
        .and_then(|a| config.pool(&a.pool))
        .map(|p| (p.name.clone(), &p.backend));
    let worktree = rec.worktree.display().to_string();
    match pool {
        None | Some((_, BackendConfig::Local)) => local_shell(&rec.worktree),
        Some((_, BackendConfig::Ssh(s))) => {
            let t = Target::from_config(s);
            remote_shell(&t, &worktree, &args.task)
        }
        Some((name, BackendConfig::Exedev(x))) => {
            let t = exedev::targets(&state, &name, x)
                .into_iter()
                .find(|t| worktree.starts_with(&format!("{}:", t.host)))
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "task {} ran on a VM of pool {name} that is no longer recorded (`flocks status` lists the VMs)",
                        args.task
                    ))
                })?;
            remote_shell(&t, &worktree, &args.task)
        }
        Some((name, BackendConfig::Docker(_))) => Err(Error::Usage(format!(
            "task {} runs in docker pool {name}: `flocks shell` does not open container shells yet; use `docker exec -it <container> sh` in {worktree}",
            args.task
        ))),
    }
}

fn local_shell(worktree: &PathBuf) -> Result<Exit> {
    if !worktree.is_dir() {
        return Err(Error::Usage(format!(
            "the task's worktree {} does not exist (a task that succeeded gives its worktree back)",
            worktree.display()
        )));
    }
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    Command::new(&shell)
        .current_dir(worktree)
        .status()
        .map_err(|e| Error::Other(format!("cannot start {shell}: {e}")))?;
    Ok(Exit::Ok)
}

/// `ssh -t host` with a fixed command; the path is quoted, never spliced raw.
fn remote_shell(t: &Target, worktree: &str, task: &str) -> Result<Exit> {
    let path = worktree
        .strip_prefix(&format!("{}:", t.host))
        .filter(|p| p.starts_with('/'))
        .ok_or_else(|| {
            Error::Usage(format!(
                "task {task} has not run on host {} yet: nothing to open",
                t.host
            ))
        })?;
    let remote = format!(
        "cd {} && exec \"${{SHELL:-/bin/sh}}\" -l",
        conn::sh_quote(path)
    );
    conn::register_master(t);
    // No process group of its own here: the shell needs the terminal.
    let status = Command::new("ssh")
        .args(t.options())
        .arg("-t")
        .arg("--")
        .arg(&t.host)
        .arg(remote)
        .status()
        .map_err(|e| Error::Other(format!("cannot run ssh: {e}")))?;
    if status.code() == Some(255) {
        return Err(Error::CannotStart(format!(
            "cannot open a shell on host {} (ssh exited with 255)",
            t.host
        )));
    }
    Ok(Exit::Ok)
}
