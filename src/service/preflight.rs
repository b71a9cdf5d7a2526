//! The checks a run (and a dry run) makes before it creates anything: the
//! repository and its base, the agent of every local pool, the jobs of
//! every Slurm pool (would its scheduler take them), the task branches, and
//! no live run holding on without its lock.

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

/// What a Slurm pool's scheduler said of its jobs, before any was submitted.
pub(crate) struct SchedulerCheck {
    pub pool: String,
    /// "Job 3 to start at ... on nodes vm in partition debug"; or why the
    /// scheduler could not be asked (the run then leaves the pool out).
    pub said: std::result::Result<String, String>,
}

/// Every Slurm pool's jobs, as they will be asked for, shown to its
/// scheduler (`sbatch --test-only`: nothing is submitted). A refusal (a
/// partition, account or qos it does not know, an option it rejects) is a
/// config error naming the pool's key; a scheduler that does not answer is
/// said, and the run leaves that pool out.
pub(crate) fn check_schedulers(config: &Config) -> Result<Vec<SchedulerCheck>> {
    let pools: Vec<_> = config
        .pools
        .iter()
        .filter_map(|p| match &p.backend {
            BackendConfig::Slurm(s) => Some((p, s)),
            _ => None,
        })
        .collect();
    if pools.is_empty() {
        return Ok(Vec::new());
    }
    let runtime = super::runtime()?;
    let mut out = Vec::new();
    for (pool, s) in pools {
        use crate::backend::slurm::sched::SchedError;
        match runtime.block_on(crate::backend::slurm::check::test_only(config, pool, s)) {
            Ok(said) => out.push(SchedulerCheck {
                pool: pool.name.clone(),
                said: Ok(said),
            }),
            Err(SchedError::Refused(words)) => {
                let key = ["partition", "account", "qos"]
                    .into_iter()
                    .find(|k| words.to_lowercase().contains(k))
                    .unwrap_or("sbatch_args");
                return Err(Error::input(
                    &config.path,
                    pool_key_line(config, &pool.name, key),
                    Some(&format!("containers.{key}")),
                    format!(
                        "Slurm refuses the jobs of pool `{}`: {words} (nothing was submitted; `sinfo -s` lists the partitions)",
                        pool.name
                    ),
                ));
            }
            Err(e) => out.push(SchedulerCheck {
                pool: pool.name.clone(),
                said: Err(e.to_string()),
            }),
        }
    }
    Ok(out)
}

/// The line of `key` in the `[[containers]]` table named `pool` (or of the
/// table's name), read from flocks.toml's text.
fn pool_key_line(config: &Config, pool: &str, key: &str) -> Option<usize> {
    let text = std::fs::read_to_string(&config.path).ok()?;
    let value = |l: &str, k: &str| {
        l.trim()
            .strip_prefix(k)
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix('='))
            .map(|r| r.trim().to_string())
    };
    let mut in_pool = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('[') {
            if in_pool.is_some() {
                break;
            }
            continue;
        }
        if value(line, "name").is_some_and(|v| v.trim_matches('"') == pool) {
            in_pool = Some(i + 1);
        }
        if in_pool.is_some() && value(line, key).is_some() {
            return Some(i + 1);
        }
    }
    in_pool
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
