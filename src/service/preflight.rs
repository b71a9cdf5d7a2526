//! The checks a run (and a dry run) makes before it creates anything: the
//! repository and its base, the agent of every local pool, the task
//! branches, and no live run holding on without its lock.

use crate::config::{BackendConfig, Config, SandboxMode};
use crate::error::{Error, Result};
use crate::project::Project;
use crate::state::State;
use crate::tasks::TaskSet;

/// The repository and its base, as every run (and dry run) needs them.
pub(crate) fn check_repo(config: &Config) -> Result<git2::Repository> {
    let repo = crate::git::open(&config.workspace.repo)?;
    crate::git::resolve_commit(&repo, &config.workspace.base)?;
    Ok(repo)
}

/// A task's branch must not exist unless flocks created it for that task.
pub(crate) fn check_branches(
    repo: &git2::Repository,
    state: &State,
    tasks: &TaskSet,
) -> Result<()> {
    for t in &tasks.tasks {
        let ours = state
            .task(&t.id)
            .is_some_and(|r| r.branch_created && r.branch == t.branch);
        if ours {
            continue;
        }
        if crate::git::branch_tip(repo, &t.branch)?.is_some() {
            return Err(Error::input(
                &tasks.source,
                Some(t.line),
                Some("branch"),
                format!(
                    "branch `{}` already exists and flocks did not create it for task `{}`: choose another branch, or delete it if it holds nothing you need",
                    t.branch, t.id
                ),
            ));
        }
    }
    Ok(())
}

/// Fail early, before any worktree, when a local pool cannot find the agent
/// (or, sandboxed, bubblewrap).
pub(crate) fn check_agents(config: &Config) -> Result<()> {
    for p in &config.pools {
        if let BackendConfig::Local = p.backend {
            if p.sandbox == SandboxMode::Bwrap && crate::backend::bwrap::find_bwrap().is_none() {
                return Err(Error::CannotStart(format!(
                    "pool {} has sandbox = \"bwrap\", and bwrap is not on PATH: {}; or set sandbox = \"none\" in flocks.toml (agents then run unsandboxed)",
                    p.name,
                    crate::backend::bwrap::INSTALL
                )));
            }
            let env: Vec<(String, String)> = config
                .agent
                .env
                .iter()
                .chain(p.env.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            crate::backend::local::resolve_program(&config.agent.command, &config.dir, &env)
                .map_err(|e| Error::CannotStart(format!("pool {}: {e}", p.name)))?;
        }
    }
    Ok(())
}

/// The lock was free, yet the last run may still be alive (its lock taken
/// away by hand): never reconcile, kill or rerun the tasks of a live run.
pub(crate) fn check_no_live_run(project: &Project, state: &State) -> Result<()> {
    if let Some(run) = &state.run
        && run.ended_at.is_none()
        && run.pid != std::process::id()
        && crate::state::process_alive(run.pid, run.pid_start)
    {
        return Err(Error::CannotStart(format!(
            "flocks run {} (pid {}) is still running, although {} is not held: \
             wait for it to end, or stop it (flocks stop, or kill {})",
            run.id,
            run.pid,
            project.state_dir().join("lock").display(),
            run.pid
        )));
    }
    Ok(())
}
