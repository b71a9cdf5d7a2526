//! `flocks shell <task>`: an interactive shell in the task's worktree, wherever
//! it runs: this machine (in the task's bwrap sandbox for a sandboxed pool),
//! a docker pool's container, or the remote host of an ssh or exedev pool.

use std::path::PathBuf;
use std::process::Command;

use crate::backend::ssh::conn::{self, Target};
use crate::backend::ssh::exedev;
use crate::cli::ShellArgs;
use crate::config::{BackendConfig, WorkspaceMode};
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
    // A best-of task runs in its variants' worktrees: its winner's, or say which.
    let rec = match (rec.variants.is_empty(), rec.winner()) {
        (true, _) => rec,
        (false, Some(w)) => w,
        (false, None) => {
            let ids: Vec<&str> = rec.variants.iter().map(|v| v.id.as_str()).collect();
            return Err(Error::Usage(format!(
                "task `{}` is a best-of task with no winner (yet): open one of its variants, `flocks shell {}`",
                rec.id,
                ids.join("` or `flocks shell ")
            )));
        }
    };
    let pool = rec
        .attempts
        .last()
        .and_then(|a| config.pool(&a.pool))
        .map(|p| (p.name.clone(), &p.backend));
    let worktree = rec.worktree.display().to_string();
    let sandboxed = rec
        .attempts
        .last()
        .and_then(|a| config.pool(&a.pool))
        .filter(|p| crate::backend::isolation(p) == "bwrap");
    if let Some(p) = sandboxed {
        return sandbox_shell(project, p, &rec.id);
    }
    match pool {
        None | Some((_, BackendConfig::Local)) => local_shell(&checked(project, rec)?),
        Some((_, BackendConfig::Ssh(s))) => {
            let t = Target::from_config(s);
            remote_shell(&t, &worktree, &args.task)
        }
        Some((name, BackendConfig::Exedev(x))) => {
            let made = exedev::Made::load(&project.state_dir());
            let t = exedev::targets(&state, &name, x, &project.key(), &made)
                .targets()
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
        Some((name, BackendConfig::Docker(d))) if d.workspace == WorkspaceMode::Clone => {
            clone_shell(project, &name, d, &rec.id)
        }
        Some((name, BackendConfig::Docker(d))) => {
            container_shell(project, &name, d, &checked(project, rec)?)
        }
        Some((name, BackendConfig::Slurm(s))) => slurm_shell(&name, s, &worktree, &args.task),
    }
}

/// A shell in a Slurm task's worktree is a job of its own: `srun --pty`
/// in the pool's partition, in the worktree on the shared filesystem.
fn slurm_shell(
    pool: &str,
    s: &crate::config::SlurmConfig,
    worktree: &str,
    task: &str,
) -> Result<Exit> {
    let dir = worktree
        .strip_prefix(&format!("{pool}:"))
        .filter(|d| d.starts_with('/'))
        .ok_or_else(|| {
            Error::Usage(format!(
                "task {task} has no worktree recorded on Slurm pool {pool} (it has not run there yet)"
            ))
        })?;
    let mut argv: Vec<String> = vec!["srun".into(), "--pty".into()];
    argv.extend(crate::backend::slurm::job_options(s, None));
    argv.push(format!("--chdir={dir}"));
    argv.extend(["/bin/sh", "-c", "exec \"${SHELL:-/bin/sh}\" -i"].map(String::from));
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|e| {
            Error::CannotStart(format!("cannot run srun (is Slurm installed here?): {e}"))
        })?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::Unexpected
    })
}

/// The task's worktree on this machine, checked to be this repo's (state.json
/// is writable by agents in containers).
fn checked(project: &Project, rec: &crate::state::TaskRecord) -> Result<std::path::PathBuf> {
    if !rec.worktree.exists() {
        // Said below, in the words of each kind of shell.
        return Ok(rec.worktree.clone());
    }
    crate::git::check_task_worktree(
        project.repo_dir(),
        &project.config.worktrees_dir(),
        &rec.id,
        &rec.worktree,
    )
    .map_err(|e| Error::Usage(e.to_string()))
}

/// `docker exec -it` into the pool's container, at the worktree's path there.
/// The docker CLI gives the terminal handling; the container is found the way
/// a run finds it.
fn container_shell(
    project: &Project,
    pool: &str,
    d: &crate::config::DockerConfig,
    worktree: &std::path::Path,
) -> Result<Exit> {
    use std::sync::Arc;
    let config = &project.config;
    if !worktree.is_dir() {
        return Err(Error::Usage(format!(
            "the task's worktree {} does not exist (a task that succeeded gives its worktree back)",
            worktree.display()
        )));
    }
    let Some(pool_cfg) = config.pool(pool) else {
        return Err(Error::Usage(format!(
            "pool {pool} is no longer in flocks.toml"
        )));
    };
    let worktrees = Arc::new(crate::git::Worktrees::new(
        &config.workspace.repo,
        &config.worktrees_dir(),
    )?);
    let backend = crate::backend::docker::DockerBackend::new(config, pool_cfg, d, worktrees);
    let target = crate::service::runtime()?
        .block_on(backend.target())
        .map_err(|e| Error::CannotStart(e.to_string()))?;
    let repo = config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| config.workspace.repo.clone());
    let wt = worktree
        .canonicalize()
        .unwrap_or_else(|_| worktree.to_path_buf());
    let rel = wt.strip_prefix(&repo).map_err(|_| {
        Error::Other(format!(
            "{} is not inside the repo {}",
            wt.display(),
            repo.display()
        ))
    })?;
    let Some(mount) = &target.repo else {
        return Err(Error::CannotStart(format!(
            "docker container `{}` does not mount the repo {}",
            target.name,
            repo.display()
        )));
    };
    let dir = format!("{mount}/{}", rel.display());
    docker_exec_shell(&target, &dir)
}

/// Clone mode: a shell in the task's own clone in the container
/// (`clone_dir/<project key>/worktrees/<task>`, where its agent worked).
fn clone_shell(
    project: &Project,
    pool: &str,
    d: &crate::config::DockerConfig,
    task: &str,
) -> Result<Exit> {
    use std::sync::Arc;
    let config = &project.config;
    let Some(pool_cfg) = config.pool(pool) else {
        return Err(Error::Usage(format!(
            "pool {pool} is no longer in flocks.toml"
        )));
    };
    let worktrees = Arc::new(crate::git::Worktrees::new(
        &config.workspace.repo,
        &config.worktrees_dir(),
    )?);
    let backend = crate::backend::docker::DockerBackend::new(config, pool_cfg, d, worktrees);
    let rt = crate::service::runtime()?;
    let target = rt
        .block_on(backend.target())
        .map_err(|e| Error::CannotStart(e.to_string()))?;
    let dir = format!(
        "{}/worktrees/{task}",
        crate::backend::docker::clone_root(d, &project.key())
    );
    let there = rt
        .block_on(backend.dir_exists(&dir))
        .map_err(|e| Error::CannotStart(e.to_string()))?;
    if !there {
        return Err(Error::Usage(format!(
            "task {task} has no clone in docker container `{}` ({dir} is not there: a task that succeeded gives its clone back)",
            target.name
        )));
    }
    docker_exec_shell(&target, &dir)
}

/// `docker exec -it` as the pool's exec user, at `dir`.
fn docker_exec_shell(target: &crate::backend::docker::Target, dir: &str) -> Result<Exit> {
    use std::io::IsTerminal;
    let tty = if std::io::stdin().is_terminal() {
        "-it"
    } else {
        "-i"
    };
    let status = Command::new("docker")
        .args(["exec", tty, "-u", &target.user, "-w", dir])
        .args([
            "-e",
            "GIT_CONFIG_COUNT=1",
            "-e",
            "GIT_CONFIG_KEY_0=safe.directory",
            "-e",
            "GIT_CONFIG_VALUE_0=*",
        ])
        .arg(&target.id)
        .args(["sh", "-c", "exec \"${SHELL:-sh}\""])
        .status()
        .map_err(|e| {
            Error::CannotStart(format!(
                "`flocks shell` needs the docker CLI for a container shell: {e}"
            ))
        })?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::Unexpected
    })
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

/// A shell in the task's bubblewrap sandbox: the view its agent had (its
/// repository, its home, no network unless the pool shares the host's), in
/// its worktree. The environment is a clean one, and the home's rc files
/// (the agent's) are not read.
fn sandbox_shell(project: &Project, pool: &crate::config::PoolConfig, task: &str) -> Result<Exit> {
    use std::sync::Arc;
    let config = &project.config;
    if crate::backend::bwrap::find_bwrap().is_none() {
        return Err(Error::CannotStart(format!(
            "task {task} ran in a bwrap sandbox (pool {}), and bwrap is not on PATH: {}",
            pool.name,
            crate::backend::bwrap::INSTALL
        )));
    }
    let worktrees = Arc::new(crate::git::Worktrees::new(
        &config.workspace.repo,
        &config.worktrees_dir(),
    )?);
    let backend = crate::backend::bwrap::BwrapBackend::new(config, pool, worktrees);
    let argv = backend.shell_argv(task).map_err(Error::Usage)?;
    crate::outln!(
        "flocks: a shell in task {task}'s sandbox (pool {}): what its agent sees; `exit` leaves it",
        pool.name
    );
    // No process group of its own: the shell needs the terminal.
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .map_err(|e| Error::Other(format!("cannot run bwrap: {e}")))?;
    Ok(if status.success() {
        Exit::Ok
    } else {
        Exit::Unexpected
    })
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
    let options = t.options().map_err(|e| Error::CannotStart(e.to_string()))?;
    conn::register_master(t);
    // No process group of its own here: the shell needs the terminal.
    let status = Command::new("ssh")
        .args(options)
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
