//! Execution backends: where an agent runs and how it is stopped.
//!
//! Every backend turns an [`AgentSpec`] into a [`Running`] agent: a channel of
//! output chunks that ends with [`Chunk::Exited`], and a [`Control`] that
//! applies the termination policy (TERM, grace, KILL, to the whole tree) in
//! its own way.

pub mod docker;
pub mod local;
pub mod ssh;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::agent::AgentSpec;
use crate::config::{BackendConfig, Config, PoolConfig};
use crate::error::Result;
use crate::git::Worktrees;

/// A piece of agent output, or its end.
#[derive(Debug)]
pub enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The agent is gone; no chunk follows.
    Exited(ExitInfo),
}

#[derive(Debug, Clone, Default)]
pub struct ExitInfo {
    /// Exit code (128+N for signal N), when known.
    pub code: Option<i32>,
    /// The backend lost the agent (container died, host dropped): the reason.
    pub lost: Option<String>,
}

/// A started agent.
pub struct Running {
    pub output: mpsc::Receiver<Chunk>,
    pub control: Control,
}

/// How to stop a running agent. `terminate` starts the graceful policy (TERM to
/// the tree, grace, KILL); `kill` kills the tree at once.
pub enum Control {
    Local(local::LocalControl),
    Ssh(ssh::SshControl),
    Docker(docker::DockerControl),
}

impl Control {
    pub async fn terminate(&self) {
        match self {
            Control::Local(c) => c.terminate(),
            Control::Ssh(c) => c.terminate().await,
            Control::Docker(c) => c.terminate(),
        }
    }

    pub async fn kill(&self) {
        match self {
            Control::Local(c) => c.kill(),
            Control::Ssh(c) => c.kill().await,
            Control::Docker(c) => c.kill(),
        }
    }
}

/// Where an attempt runs.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The worktree on this machine (where logs and git work refer to).
    pub host_path: PathBuf,
    /// The agent's working directory where it runs.
    pub agent_cwd: String,
    pub start_commit: String,
    pub created_branch: bool,
    pub note: Option<String>,
}

/// What `finish` found.
#[derive(Debug, Clone)]
pub struct Finished {
    pub tip: String,
    pub leftovers_committed: bool,
    pub new_commits: usize,
    /// The attempt changed the host repo's `.git/config` or `.git/hooks`
    /// (flocks restored them): what changed. Fails the attempt.
    pub guard_violation: Option<String>,
}

/// The job for one attempt, as far as a backend needs to know.
#[derive(Debug, Clone)]
pub struct PrepareJob {
    pub task: String,
    pub branch: String,
    pub base: String,
    pub fresh: bool,
}

/// Why an attempt could not be prepared.
#[derive(Debug, Clone)]
pub enum PrepareError {
    Failed(String),
    /// The pool's host is down or unreachable: the reason names it.
    HostLost(String),
}

impl std::fmt::Display for PrepareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareError::Failed(m) | PrepareError::HostLost(m) => f.write_str(m),
        }
    }
}

/// One pool's backend.
pub enum Backend {
    Local(local::LocalBackend),
    Ssh(ssh::SshBackend),
    Docker(Box<docker::DockerBackend>),
}

impl Backend {
    pub fn new(config: &Config, pool: &PoolConfig, worktrees: Arc<Worktrees>) -> Result<Backend> {
        match &pool.backend {
            BackendConfig::Local => Ok(Backend::Local(local::LocalBackend::new(config, worktrees))),
            BackendConfig::Ssh(_) | BackendConfig::Exedev(_) => {
                Ok(Backend::Ssh(ssh::SshBackend::new(config, pool, worktrees)))
            }
            BackendConfig::Docker(d) => Ok(Backend::Docker(Box::new(docker::DockerBackend::new(
                config, pool, d, worktrees,
            )))),
        }
    }

    /// Agent slots of the pool (an exedev pool has `max_worktrees` per VM).
    pub fn slots(&self, pool: &PoolConfig) -> usize {
        match self {
            Backend::Ssh(b) => b.slots(),
            _ => pool.max_worktrees,
        }
    }

    /// Connect to the pool's hosts before the run; why it cannot be used, if
    /// so. `notes` collects hosts left out of a pool that still works.
    pub async fn connect(&self, notes: &mut Vec<String>) -> Option<String> {
        match self {
            Backend::Ssh(b) => b.connect_all(notes).await,
            Backend::Docker(b) => b.connect(notes).await,
            _ => None,
        }
    }

    /// Why the pool is not usable in this run (found by `connect`), if so.
    pub fn down_reason(&self) -> Option<String> {
        match self {
            Backend::Ssh(b) => b.down_reason(),
            Backend::Docker(b) => b.down_reason(),
            _ => None,
        }
    }

    pub async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        // Moved by flocks and its own agent while container agents run.
        docker::guard::exempt_branch(&job.branch);
        match self {
            Backend::Local(b) => b.prepare(job).await.map_err(PrepareError::Failed),
            Backend::Ssh(b) => b.prepare(job).await,
            Backend::Docker(b) => b.prepare(job).await,
        }
    }

    pub async fn spawn(&self, ws: &Workspace, spec: AgentSpec) -> Result<Running, String> {
        match self {
            Backend::Local(b) => b.spawn(ws, spec).await,
            Backend::Ssh(b) => b.spawn(ws, spec).await,
            Backend::Docker(b) => b.spawn(ws, spec).await,
        }
    }

    /// After the agent ended: commit leftovers, read the tip.
    pub async fn finish(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, String> {
        let finished = match self {
            Backend::Local(b) => b.finish(ws, task, branch, attempt).await,
            Backend::Ssh(b) => b.finish(ws, task, branch, attempt).await,
            Backend::Docker(b) => b.finish(ws, task, branch, attempt).await,
        };
        // flocks is done moving it: guarded again, where flocks left it.
        let b = branch.to_string();
        let _ = tokio::task::spawn_blocking(move || docker::guard::settle_branch(&b)).await;
        finished
    }

    /// The task succeeded and its work is on its branch: give its worktree back.
    pub async fn release(&self, task: &str) {
        match self {
            Backend::Local(b) => b.release(task).await,
            Backend::Ssh(b) => b.release(task).await,
            Backend::Docker(b) => b.release(task).await,
        }
    }
}

/// Commit leftovers in a host worktree and measure the attempt: shared by the
/// backends whose worktrees live on this machine.
pub(crate) async fn finish_host_worktree(
    repo_dir: PathBuf,
    ws: &Workspace,
    branch: &str,
    attempt: u32,
) -> Result<Finished, String> {
    let path = ws.host_path.clone();
    let start = ws.start_commit.clone();
    let branch = branch.to_string();
    tokio::task::spawn_blocking(move || -> Result<Finished> {
        let msg = format!("flocks: uncommitted changes left by attempt {attempt}");
        let leftovers = if path.exists() {
            crate::git::commit_leftovers(&path, &msg)?.is_some()
        } else {
            false
        };
        let repo = crate::git::open(&repo_dir)?;
        let tip = crate::git::branch_tip(&repo, &branch)?.ok_or_else(|| {
            crate::error::Error::Other(format!("branch {branch} disappeared during the attempt"))
        })?;
        let start =
            git2::Oid::from_str(&start).map_err(|e| crate::error::Error::Other(e.to_string()))?;
        let new_commits = crate::git::commits_ahead(&repo, tip, start)?;
        Ok(Finished {
            tip: tip.to_string(),
            leftovers_committed: leftovers,
            new_commits,
            guard_violation: None,
        })
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}
