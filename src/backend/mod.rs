//! Execution backends: where an agent runs and how it is stopped.
//!
//! Every backend turns an [`AgentSpec`] into a [`Running`] agent: a channel of
//! output chunks that ends with [`Chunk::Exited`], and a [`Control`] that
//! applies the termination policy (TERM, grace, KILL, to the whole tree) in
//! its own way.

pub(crate) mod bwrap;
pub(crate) mod check;
pub(crate) mod docker;
pub(crate) mod helper;
pub(crate) mod house;
pub(crate) mod local;
pub(crate) mod slurm;
pub(crate) mod ssh;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::agent::AgentSpec;
use crate::config::{BackendConfig, Config, PoolConfig, SandboxMode};
use crate::error::Result;
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::guard::Guards;

/// A piece of agent output, or its end.
#[derive(Debug)]
pub(crate) enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The agent is gone; no chunk follows.
    Exited(ExitInfo),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ExitInfo {
    /// Exit code (128+N for signal N), when known.
    pub code: Option<i32>,
    /// The backend lost the agent (container died, host dropped): the reason.
    pub lost: Option<String>,
    /// A setup command changed the host repository's git setup (flocks
    /// undid it): what changed.
    pub violation: Option<String>,
}

/// A started agent.
pub(crate) struct Running {
    pub output: mpsc::Receiver<Chunk>,
    pub control: Control,
}

/// How to stop a running agent. `terminate` starts the graceful policy (TERM to
/// the tree, grace, KILL); `kill` kills the tree at once.
pub(crate) enum Control {
    Local(local::LocalControl),
    Ssh(ssh::SshControl),
    Docker(docker::DockerControl),
    Slurm(slurm::SlurmControl),
}

impl Control {
    pub(crate) async fn terminate(&self) {
        match self {
            Control::Local(c) => c.terminate(),
            Control::Ssh(c) => c.terminate().await,
            Control::Docker(c) => c.terminate(),
            Control::Slurm(c) => c.terminate().await,
        }
    }

    pub(crate) async fn kill(&self) {
        match self {
            Control::Local(c) => c.kill(),
            Control::Ssh(c) => c.kill().await,
            Control::Docker(c) => c.kill(),
            Control::Slurm(c) => c.kill().await,
        }
    }
}

/// One attempt as a scheduler sees it: which task, which attempt.
#[derive(Debug, Clone)]
pub(crate) struct Ticket {
    pub task: String,
    pub attempt: u32,
}

/// Where an attempt's job stands in its pool's scheduler, as `admit`
/// reports it (each report replaces the one before).
pub(crate) type JobReports = mpsc::UnboundedSender<crate::state::Job>;

/// Where an attempt runs.
#[derive(Debug, Clone)]
pub(crate) struct Workspace {
    /// The worktree on this machine (where logs and git work refer to).
    pub host_path: PathBuf,
    /// The agent's working directory where it runs.
    pub agent_cwd: String,
    pub start_commit: String,
    /// The task's origin (see [`PrepareJob::origin_for`]): work that comes
    /// back must descend from it.
    pub origin: String,
    pub created_branch: bool,
    pub note: Option<String>,
    /// The `[workspace] setup` that last completed in this worktree (its
    /// hash), if one did.
    pub setup_mark: Option<String>,
}

/// What `finish` found.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub tip: String,
    pub leftovers_committed: bool,
    pub new_commits: usize,
    /// The attempt changed the host repo's `.git/config` or `.git/hooks`
    /// (flocks restored them): what changed. Fails the attempt.
    pub guard_violation: Option<String>,
    /// The task's branch held work its worktree did not make (another agent
    /// of the same `.git` put it there): why. flocks moved the branch back
    /// to the attempt's start. Fails the attempt.
    pub refused: Option<String>,
}

/// The job for one attempt, as far as a backend needs to know.
#[derive(Debug, Clone)]
pub(crate) struct PrepareJob {
    pub task: String,
    pub branch: String,
    pub base: String,
    pub fresh: bool,
    /// The task's origin when its branch keeps its work (None: the attempt
    /// creates the branch or starts it over, and its start becomes the origin).
    pub origin: Option<String>,
}

impl PrepareJob {
    /// The task's origin once the attempt starts at `start` (`created`: the
    /// attempt created the branch): kept across attempts, unless this
    /// attempt created the branch or started it over (`retry --fresh`, a
    /// `land --resolve` redo).
    pub(crate) fn origin_for(&self, start: &str, created: bool) -> String {
        match &self.origin {
            Some(o) if !self.fresh && !created => o.clone(),
            _ => start.to_string(),
        }
    }
}

/// Why an attempt could not be prepared.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum PrepareError {
    /// The worktree or branch could not be set up: the attempt fails.
    #[error("{0}")]
    Failed(String),
    /// The pool's host is down or unreachable: the reason names it.
    #[error("{0}")]
    HostLost(String),
}

/// Why `[agent] command` cannot run where a pool runs it.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ProgramError {
    #[error(
        "agent command {} is not an executable file (check [agent] command in flocks.toml)",
        .0.display()
    )]
    NotExecutable(PathBuf),
    #[error(
        "agent command `{0}` not found on PATH: install it, or set [agent] command in flocks.toml to its path"
    )]
    NotFound(String),
    /// A docker pool runs a relative `[agent] command` through the repo's
    /// mount, so it must lie inside the repo.
    #[error(
        "agent command {program} is outside the repo that docker container `{container}` mounts: give a path inside the container"
    )]
    OutsideMount { program: String, container: String },
}

/// Why the agent could not be started in a prepared workspace.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SpawnError {
    /// `[agent] command` is not there (local pools).
    #[error(transparent)]
    Program(#[from] ProgramError),
    /// The flocks binary that supervises a local agent is not found.
    #[error(transparent)]
    Supervisor(#[from] crate::supervisor::ExeError),
    /// The pool's host did not answer, or its helper failed (ssh pools).
    #[error(transparent)]
    Host(#[from] ssh::SshError),
    /// A value for a remote agent (argv, env, tag) holds a newline or a NUL
    /// byte, which the helper's line protocol cannot carry.
    #[error("a value for the remote agent holds a newline; refusing to send it")]
    Unsendable,
    /// The process that runs the agent (the supervisor, `docker exec`, the
    /// ssh helper) did not start: what and why.
    #[error("cannot start {what}: {reason}")]
    Process { what: &'static str, reason: String },
    /// The pool could not start it (container, host): the reason says what to check.
    #[error("{0}")]
    Start(String),
}

/// Why an attempt's end could not be measured (leftovers, tip, commits).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FinishError {
    /// The branch or worktree could not be read back: the reason names it.
    #[error("{0}")]
    Measure(String),
    /// Reading the worktree or the branch in this repo failed.
    #[error(transparent)]
    Repo(#[from] crate::error::Error),
    /// No host of the pool holds the task's attempt (ssh pools).
    #[error("pool {pool}: no host ran {task}")]
    NoHost { pool: String, task: String },
    /// The pool's host did not answer, or its helper failed (ssh pools).
    #[error(transparent)]
    Host(#[from] ssh::SshError),
    /// The helper failed, its reply was refused, or the intake refused
    /// the work that came back.
    #[error(transparent)]
    Helper(#[from] helper::session::CallError),
}

/// Why a completed setup could not be recorded in the worktree.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MarkError {
    #[error("cannot record the setup in {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] ssh::SshError),
    /// The helper failed (clone-style backends).
    #[error(transparent)]
    Helper(#[from] helper::session::CallError),
}

/// A boxed future, so that backends are used as `Arc<dyn Backend>`.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One pool's backend: where its agents run. The runner holds
/// `Arc<dyn Backend>` and never asks which one it has.
///
/// The defaults are those of a pool on this machine: `max_worktrees` slots,
/// nothing to connect to, never down. A backend's attempt methods
/// (`prepare`, `spawn`, `finish`, `release`) are its inherent `async fn`s of
/// the same names, boxed by [`attempt_methods!`].
pub(crate) trait Backend: Send + Sync {
    /// Agent slots of the pool (an exedev pool has `max_worktrees` per VM).
    fn slots(&self, pool: &PoolConfig) -> usize {
        pool.max_worktrees
    }

    /// Connect to the pool's hosts before the run; why it cannot be used, if
    /// so. `notes` collects hosts left out of a pool that still works.
    fn connect<'a>(&'a self, _notes: &'a mut Vec<String>) -> BoxFuture<'a, Option<String>> {
        Box::pin(async { None })
    }

    /// Why the pool is not usable in this run (found by `connect`), if so.
    fn down_reason(&self) -> Option<String> {
        None
    }

    /// Does a lost host take the pool out of the run? Yes where the pool is
    /// its hosts (ssh, exe.dev, a container); no where a scheduler places
    /// the next attempt on another node (Slurm).
    fn host_loss_takes_pool_down(&self) -> bool {
        true
    }

    /// Wait until the pool's scheduler runs the attempt (a Slurm job),
    /// reporting where its job stands on `jobs`. A stop while it waits
    /// drops this future: the backend then lets go of the job. The
    /// default: nothing to wait for.
    fn admit<'a>(
        &'a self,
        _ticket: &'a Ticket,
        _jobs: JobReports,
    ) -> BoxFuture<'a, Result<(), PrepareError>> {
        Box::pin(async { Ok(()) })
    }

    /// The attempt is over (after `finish` and `release`, or when it ended
    /// before its agent ran): let go of what `admit` took. Returns the
    /// job's accounting when the attempt ran as a scheduler's job.
    fn end<'a>(&'a self, _task: &'a str) -> BoxFuture<'a, Option<crate::state::Job>> {
        Box::pin(async { None })
    }

    /// The task's worktree and branch, ready for the agent.
    fn prepare<'a>(&'a self, job: &'a PrepareJob)
    -> BoxFuture<'a, Result<Workspace, PrepareError>>;

    /// Start the agent in `ws`.
    fn spawn<'a>(
        &'a self,
        ws: &'a Workspace,
        spec: AgentSpec,
    ) -> BoxFuture<'a, Result<Running, SpawnError>>;

    /// After the agent ended: commit leftovers, read the tip.
    fn finish<'a>(
        &'a self,
        ws: &'a Workspace,
        task: &'a str,
        branch: &'a str,
        attempt: u32,
    ) -> BoxFuture<'a, Result<Finished, FinishError>>;

    /// The task succeeded and its work is on its branch: give its worktree back.
    fn release<'a>(&'a self, task: &'a str) -> BoxFuture<'a, ()>;

    /// Copy `.worktreeinclude`'s files (read on this machine) into `ws`.
    fn copy_in<'a>(
        &'a self,
        ws: &'a Workspace,
        task: &'a str,
        files: Arc<IncludeSet>,
    ) -> BoxFuture<'a, Result<Copied, IncludeError>>;

    /// Start one `[workspace] setup` command in `ws`, where and the way the
    /// agent starts (supervisor, reaper, remote helper); `spec` carries no
    /// credential.
    fn start_setup<'a>(
        &'a self,
        ws: &'a Workspace,
        spec: AgentSpec,
    ) -> BoxFuture<'a, Result<Running, SpawnError>>;

    /// Record in `ws` that the setup `hash` completed there.
    fn mark_setup<'a>(
        &'a self,
        ws: &'a Workspace,
        task: &'a str,
        hash: &'a str,
    ) -> BoxFuture<'a, Result<(), MarkError>>;

    /// The attempt ends before its agent started (its setup failed): let go
    /// of what `prepare` took. The worktree stays for the next attempt.
    fn abandon<'a>(&'a self, task: &'a str) -> BoxFuture<'a, ()>;

    /// Repository upkeep where the pool's agents borrow objects (a remote
    /// host's `mirror.git`, a Slurm pool's on the shared filesystem: the
    /// helper's `pack` op), off the dispatch path: the run calls it between
    /// waves, beside its own (`git::upkeep`). One answer per place it
    /// looked (the host's name, what it did or why it failed); a Slurm
    /// pool may answer for a pack it did since the last wave. The default:
    /// nothing of the pool's own to pack.
    fn upkeep(&self) -> BoxFuture<'_, Vec<crate::git::upkeep::Remote>> {
        Box::pin(async { Vec::new() })
    }

    /// The `host:port` at which the agent of `task` (in `ws`) reaches
    /// flocks' proxy, which listens at `proxy` as this machine sees it;
    /// asked before its setup commands run. The default, the proxy's TCP
    /// address, serves agents that share this machine's network (local
    /// agents, a devcontainer on the host network). A backend whose agents
    /// have no network of their own binds `proxy.unix` in and starts
    /// `flocks __forward --listen 127.0.0.1:0 --to <socket>` beside them
    /// (its `listening` line gives the port); a remote one forwards a port
    /// back over its connection.
    fn proxy_address<'a>(
        &'a self,
        _ws: &'a Workspace,
        _task: &'a str,
        proxy: &'a crate::proxy::Endpoint,
    ) -> BoxFuture<'a, Result<String, SpawnError>> {
        Box::pin(async move { Ok(proxy.local_authority()) })
    }

    /// `flocks up`: make what the pool needs before a run (exe.dev VMs, a
    /// docker container from an image), recorded in `rec`. Whether the
    /// pool has anything `up` makes; the default: nothing.
    fn up<'a>(
        &'a self,
        _at: &'a house::At<'a>,
        _rec: &'a mut house::Records<'_>,
    ) -> house::LocalFuture<'a, Result<bool>> {
        Box::pin(async { Ok(false) })
    }

    /// `flocks down`: remove what `up` made for the pool, and only that
    /// (the rest goes to `rec.refused`). The default: nothing.
    fn down<'a>(
        &'a self,
        _at: &'a house::At<'a>,
        _rec: &'a mut house::Records<'_>,
    ) -> house::LocalFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    /// `flocks hosts check`: what each host of the pool (or its scheduler)
    /// says, with `tar` wanted when `.worktreeinclude` has files to carry
    /// (`includes`); `None` for a pool on this machine or in a container.
    fn check<'a>(
        &'a self,
        _at: &'a house::At<'a>,
        _includes: bool,
    ) -> house::LocalFuture<'a, Option<Vec<house::Checked>>> {
        Box::pin(async { None })
    }

    /// `flocks shell`: the shell to open in `task`'s worktree, where its
    /// agent ran.
    fn shell<'a>(
        &'a self,
        at: &'a house::At<'a>,
        task: &'a house::ShellTask<'a>,
    ) -> house::LocalFuture<'a, Result<house::Shell>>;
}

/// Copy `.worktreeinclude`'s files into a worktree on this machine.
pub(crate) async fn copy_into_host(
    ws: &Workspace,
    files: Arc<IncludeSet>,
) -> Result<Copied, IncludeError> {
    let path = ws.host_path.clone();
    tokio::task::spawn_blocking(move || crate::git::include::copy_into(&files, &path))
        .await
        .unwrap_or_else(|e| {
            Err(IncludeError::Write {
                rel: PathBuf::from("."),
                worktree: ws.host_path.clone(),
                source: std::io::Error::other(e.to_string()),
            })
        })
}

/// A setup command for a remote helper, whose header is line by line: a
/// shell script that spans lines (`sh -c SCRIPT`) goes on the command's
/// stdin instead, and runs with /dev/null as its own.
pub(crate) fn script_on_stdin(mut spec: AgentSpec) -> AgentSpec {
    if spec.args.iter().any(|a| a.contains('\n')) && spec.args.len() == 2 && spec.args[0] == "-c" {
        spec.prompt = spec.args.pop().unwrap_or_default();
        spec.args = vec![
            "-c".into(),
            "script=$(cat) && exec sh -c \"$script\" sh </dev/null".into(),
        ];
    }
    spec
}

/// Record a completed setup for a worktree on this machine.
pub(crate) async fn mark_host_setup(
    worktrees: &Arc<Worktrees>,
    task: &str,
    hash: &str,
) -> Result<(), MarkError> {
    let (wts, id, hash) = (worktrees.clone(), task.to_string(), hash.to_string());
    let path = worktrees.path_for(task);
    tokio::task::spawn_blocking(move || wts.mark_setup(&id, &hash))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        .map_err(|source| MarkError::Io { path, source })
}

/// The attempt methods of [`Backend`] for `$backend`, whose inherent
/// `async fn prepare/spawn/finish/release` (same arguments, same results)
/// do the work: each is boxed so that the backend is usable as
/// `Arc<dyn Backend>`. Used inside `impl Backend for $backend`.
macro_rules! attempt_methods {
    ($backend:ty) => {
        fn prepare<'a>(
            &'a self,
            job: &'a $crate::backend::PrepareJob,
        ) -> $crate::backend::BoxFuture<
            'a,
            Result<$crate::backend::Workspace, $crate::backend::PrepareError>,
        > {
            Box::pin(<$backend>::prepare(self, job))
        }

        fn spawn<'a>(
            &'a self,
            ws: &'a $crate::backend::Workspace,
            spec: $crate::agent::AgentSpec,
        ) -> $crate::backend::BoxFuture<
            'a,
            Result<$crate::backend::Running, $crate::backend::SpawnError>,
        > {
            Box::pin(<$backend>::spawn(self, ws, spec))
        }

        fn finish<'a>(
            &'a self,
            ws: &'a $crate::backend::Workspace,
            task: &'a str,
            branch: &'a str,
            attempt: u32,
        ) -> $crate::backend::BoxFuture<
            'a,
            Result<$crate::backend::Finished, $crate::backend::FinishError>,
        > {
            Box::pin(<$backend>::finish(self, ws, task, branch, attempt))
        }

        fn release<'a>(&'a self, task: &'a str) -> $crate::backend::BoxFuture<'a, ()> {
            Box::pin(<$backend>::release(self, task))
        }
    };
}
use attempt_methods;

/// The setup methods of [`Backend`] for `$backend`, whose worktrees live
/// where its helper runs (ssh, Slurm, bwrap): `copy_in` and `mark_setup`
/// go by task to its inherent `copy_in(task, files)` and
/// `$mark(task, hash)`, and a setup command starts as `$start(ws, spec)`
/// does. Used inside `impl Backend for $backend`.
macro_rules! setup_methods {
    ($backend:ty, start = $start:ident, mark = $mark:ident) => {
        fn copy_in<'a>(
            &'a self,
            _ws: &'a $crate::backend::Workspace,
            task: &'a str,
            files: std::sync::Arc<$crate::git::include::IncludeSet>,
        ) -> $crate::backend::BoxFuture<
            'a,
            Result<$crate::git::include::Copied, $crate::git::include::IncludeError>,
        > {
            Box::pin(<$backend>::copy_in(self, task, files))
        }

        fn start_setup<'a>(
            &'a self,
            ws: &'a $crate::backend::Workspace,
            spec: $crate::agent::AgentSpec,
        ) -> $crate::backend::BoxFuture<
            'a,
            Result<$crate::backend::Running, $crate::backend::SpawnError>,
        > {
            Box::pin(<$backend>::$start(self, ws, spec))
        }

        fn mark_setup<'a>(
            &'a self,
            _ws: &'a $crate::backend::Workspace,
            task: &'a str,
            hash: &'a str,
        ) -> $crate::backend::BoxFuture<'a, Result<(), $crate::backend::MarkError>> {
            Box::pin(<$backend>::$mark(self, task, hash))
        }
    };
}
use setup_methods;

/// How a pool's agents are kept from the host repository, in the words
/// `flocks status`, the run header and `status --json` use: `clone` (docker,
/// a repository of its own in the container), `mount (guarded)` (docker,
/// the host's worktree through the mount, under the `.git` guard), `remote
/// clone` (ssh, exe.dev: a repository on another machine), `bwrap` (local, a
/// sandbox with a repository of its own), `none` (local, unsandboxed).
pub(crate) fn isolation(pool: &PoolConfig) -> &'static str {
    match &pool.backend {
        BackendConfig::Local if pool.sandbox == SandboxMode::Bwrap => "bwrap",
        BackendConfig::Local => "none",
        BackendConfig::Docker(d) => match d.workspace {
            crate::config::WorkspaceMode::Clone => "clone",
            crate::config::WorkspaceMode::Mount => "mount (guarded)",
        },
        BackendConfig::Ssh(_) | BackendConfig::Exedev(_) | BackendConfig::Slurm(_) => {
            "remote clone"
        }
    }
}

/// The backend of `pool`; a docker pool's host `.git` guard is the run's
/// one for the repository, in `guards`.
pub(crate) fn for_pool(
    config: &Config,
    pool: &PoolConfig,
    worktrees: Arc<Worktrees>,
    guards: &Guards,
) -> Result<Arc<dyn Backend>> {
    Ok(match &pool.backend {
        BackendConfig::Local if pool.sandbox == SandboxMode::Bwrap => {
            Arc::new(bwrap::BwrapBackend::new(config, pool, worktrees))
        }
        BackendConfig::Local => Arc::new(local::LocalBackend::new(config, worktrees)),
        BackendConfig::Ssh(_) | BackendConfig::Exedev(_) => {
            Arc::new(ssh::SshBackend::new(config, pool, worktrees))
        }
        BackendConfig::Docker(d) => Arc::new(docker::DockerBackend::new(
            config, pool, d, worktrees, guards,
        )),
        BackendConfig::Slurm(s) => Arc::new(slurm::SlurmBackend::new(config, pool, s, worktrees)),
    })
}

/// Prepare through `backend`, with the task's branch exempt from the run's
/// host `.git` guards while flocks and its own agent move it.
pub(crate) async fn prepare(
    guards: &Guards,
    backend: &dyn Backend,
    job: &PrepareJob,
) -> Result<Workspace, PrepareError> {
    guards.exempt_branch(&job.branch);
    backend.prepare(job).await
}

/// Finish through `backend`; then flocks is done moving the branch: it is
/// guarded again, where flocks left it.
pub(crate) async fn finish(
    guards: &Arc<Guards>,
    backend: &dyn Backend,
    ws: &Workspace,
    task: &str,
    branch: &str,
    attempt: u32,
) -> Result<Finished, FinishError> {
    let finished = backend.finish(ws, task, branch, attempt).await;
    settle(guards, branch).await;
    finished
}

/// flocks is done moving `branch` (the attempt finished, or ended before its
/// agent ran): it is guarded again, where flocks left it.
pub(crate) async fn settle(guards: &Arc<Guards>, branch: &str) {
    let (guards, b) = (guards.clone(), branch.to_string());
    let _ = tokio::task::spawn_blocking(move || guards.settle_branch(&b)).await;
}

/// Commit leftovers in a host worktree and measure the attempt: shared by the
/// backends whose worktrees live on this machine.
pub(crate) async fn finish_host_worktree(
    repo_dir: PathBuf,
    ws: &Workspace,
    branch: &str,
    attempt: u32,
) -> Result<Finished, FinishError> {
    let path = ws.host_path.clone();
    let start = ws.start_commit.clone();
    let branch = branch.to_string();
    tokio::task::spawn_blocking(move || -> Result<Finished> {
        // The branch first: nothing another agent put there is committed on.
        if let Some(refused) = refuse_foreign_work(&repo_dir, &path, &branch, &start)? {
            return Ok(Finished {
                tip: start.clone(),
                leftovers_committed: false,
                new_commits: 0,
                guard_violation: None,
                refused: Some(refused),
            });
        }
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
            refused: None,
        })
    })
    .await
    .map_err(|e| FinishError::Measure(e.to_string()))?
    .map_err(FinishError::Repo)
}

/// When `branch` holds work its worktree (`path`) did not make since the
/// attempt's `start` ([`crate::git::provenance`]): move the branch back to
/// `start`, reset the worktree to it, and say why.
fn refuse_foreign_work(
    repo_dir: &std::path::Path,
    path: &std::path::Path,
    branch: &str,
    start: &str,
) -> Result<Option<String>> {
    let Some(id) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(None);
    };
    let repo = crate::git::open(repo_dir)?;
    let Some(tip) = crate::git::branch_tip(&repo, branch)? else {
        return Ok(None);
    };
    let start_oid =
        git2::Oid::from_str(start).map_err(|e| crate::error::Error::Other(e.to_string()))?;
    let Some(why) = crate::git::provenance::foreign_work(&repo, id, branch, start_oid, tip)? else {
        return Ok(None);
    };
    repo.reference(
        &format!("refs/heads/{branch}"),
        start_oid,
        true,
        "flocks: undo work its worktree did not make",
    )
    .map_err(|e| crate::error::Error::Other(format!("move {branch} back to {start}: {e}")))?;
    if path.exists() {
        crate::git::reset_worktree(path)?;
    }
    let short = &start[..start.len().min(10)];
    Ok(Some(format!(
        "{why}; flocks moved {branch} back to where it left it ({short}) and reset the worktree to it"
    )))
}
