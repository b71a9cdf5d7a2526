//! The SSH backend: agents run on remote hosts (an `ssh` pool's one host, or
//! an `exedev` pool's VMs), and the work moves over git, not a shared disk.
//!
//! ```text
//!  local repo --git push base/branch--> <remote_dir>/mirror.git (bare)
//!  flocks --ssh, header on stdin--> helper.sh prepare: worktrees/<task> on the branch
//!  flocks --ssh, header+prompt--> helper.sh run: agent (own session, tagged)
//!         <--stdout/stderr stream--  "kill"/"term"/"ping" lines -->; EOF = stop
//!  flocks --ssh--> helper.sh finish: commit leftovers; a bundle of the task
//!         <--"head", "bundle N", N bytes--  branch (what the host lacks)
//!  local repo <--intake (quarantine, strict fsck, size cap, range)-- the bundle
//! ```
//!
//! The way in may stay git over ssh (the local repo is the source); the way
//! back is the intake's, as for every backend whose agent has a repository
//! of its own (`git::intake`).

pub(crate) mod conn;
pub(crate) mod exedev;
mod host;
mod house;
mod spawn;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use conn::{SshError, Target, stop_masters};
pub(crate) use host::{Host, connect, setup_hash};
pub(crate) use spawn::SshControl;

use super::helper::session::{CallError, Input, Session, Transport};
use super::helper::{self};
use super::house::{At, Checked, LocalFuture, Records, Shell, ShellTask};
use super::{
    Backend, BoxFuture, FinishError, Finished, MarkError, PrepareError, PrepareJob, Running,
    SpawnError, Workspace,
};
use crate::agent::AgentSpec;
use crate::config::{BackendConfig, CommandSpec, Config, PoolConfig};
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::git::intake::{self, Want};

/// Why the task branch in this repo could not follow the attempt on its
/// host: the messages name the branch or git's reason.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BranchError {
    /// Opening the repo or reading a branch failed.
    #[error(transparent)]
    Repo(#[from] crate::error::Error),
    /// A git operation on a ref or commit failed.
    #[error("{}", .0.message())]
    Git(#[from] git2::Error),
    #[error("cannot set branch {branch}: {}", .source.message())]
    Set { branch: String, source: git2::Error },
}

const OP_LIMIT: Duration = Duration::from_secs(300);
/// The helper stops the agent when flocks has not been heard of for this long.
const HEARTBEAT_SECS: u64 = 60;
const PING_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct SshBackend {
    pool: String,
    hosts: Vec<Host>,
    per_host: usize,
    setup: Vec<CommandSpec>,
    repo_dir: PathBuf,
    worktrees: Arc<Worktrees>,
    grace: Duration,
    /// Which host each task's current attempt uses.
    assigned: Mutex<HashMap<String, usize>>,
    /// Git identity and safe.directory, for the helper's git and the agent.
    identity: Vec<(String, String)>,
    /// Why the pool cannot be used at all (an exedev pool without VMs).
    unusable: Option<String>,
    /// VM records of state.json that flocks refused (said as the run starts).
    refused: Vec<String>,
    /// Why connecting failed for every host.
    down: Mutex<Option<String>>,
}

impl SshBackend {
    pub(crate) fn new(config: &Config, pool: &PoolConfig, worktrees: Arc<Worktrees>) -> SshBackend {
        let (targets, setup, unusable, refused) = match &pool.backend {
            BackendConfig::Ssh(s) => (
                vec![Target::from_config(s)],
                s.setup.clone(),
                None,
                Vec::new(),
            ),
            BackendConfig::Exedev(x) => {
                let state_dir = config.state_dir();
                let state = crate::state::StateStore::new(&state_dir)
                    .load()
                    .unwrap_or_default();
                let made = exedev::Made::load(&state_dir);
                let vms = exedev::targets(
                    &state,
                    &pool.name,
                    x,
                    &crate::paths::key_of(&state_dir),
                    &made,
                );
                let unusable = vms.ok.is_empty().then(|| {
                    let mut why = format!(
                        "exedev pool {} has no VMs: run `flocks up` first",
                        pool.name
                    );
                    for r in &vms.refused {
                        why.push_str(&format!("\n{r}"));
                    }
                    why
                });
                (vms.targets(), x.setup.clone(), unusable, vms.refused)
            }
            _ => (
                Vec::new(),
                Vec::new(),
                Some("not an ssh pool".into()),
                Vec::new(),
            ),
        };
        SshBackend {
            pool: pool.name.clone(),
            hosts: targets.into_iter().map(Host::new).collect(),
            per_host: pool.max_worktrees,
            setup,
            repo_dir: config.workspace.repo.clone(),
            worktrees,
            grace: config.kill_grace,
            assigned: Mutex::new(HashMap::new()),
            identity: git_identity(&config.workspace.repo),
            unusable,
            refused,
            down: Mutex::new(None),
        }
    }

    /// Agent slots: per host, times the hosts that are not known to be down.
    pub(crate) fn slots(&self) -> usize {
        self.per_host * self.hosts.iter().filter(|h| h.down().is_none()).count()
    }

    /// Connect every host now. Returns why the pool cannot be used, if so;
    /// hosts that fail are left out, with `notes` saying so.
    pub(crate) async fn connect_all(&self, notes: &mut Vec<String>) -> Option<String> {
        if let Some(u) = &self.unusable {
            return Some(u.clone());
        }
        notes.extend(self.refused.iter().cloned());
        let mut errors = Vec::new();
        let results = join_all_ordered(
            self.hosts
                .iter()
                .map(|h| Box::pin(h.connect(&self.setup)))
                .collect(),
        )
        .await;
        for (h, r) in self.hosts.iter().zip(results) {
            if let Err(e) = r {
                errors.push(e.to_string());
                if self.hosts.len() > 1 {
                    notes.push(format!(
                        "pool {}: host {} is left out: {e}",
                        self.pool, h.target.host
                    ));
                }
            }
        }
        let down = (errors.len() == self.hosts.len()).then(|| errors.join("; "));
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = down.clone();
        down
    }

    pub(crate) fn down_reason(&self) -> Option<String> {
        self.unusable
            .clone()
            .or_else(|| self.down.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn host_of(&self, task: &str) -> Option<&Host> {
        let i = *self
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task)?;
        self.hosts.get(i)
    }

    fn unassign(&self, task: &str) {
        if let Some(i) = self
            .assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(task)
        {
            self.hosts[i].running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn lost(&self, h: &Host, e: SshError) -> PrepareError {
        match e {
            SshError::Unreachable(m) => PrepareError::HostLost(format!("pool {}: {m}", self.pool)),
            SshError::Failed(m) => PrepareError::Failed(format!("{m} (pool {})", self.pool)),
        }
        .tap_host(&h.target.host)
    }

    pub(crate) async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        let i = {
            let mut a = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
            let i = (0..self.hosts.len())
                .filter(|&i| self.hosts[i].down().is_none())
                .min_by_key(|&i| self.hosts[i].running.load(Ordering::SeqCst))
                .ok_or_else(|| {
                    PrepareError::HostLost(format!("pool {}: no host is reachable", self.pool))
                })?;
            self.hosts[i].running.fetch_add(1, Ordering::SeqCst);
            if let Some(old) = a.insert(job.task.clone(), i) {
                self.hosts[old].running.fetch_sub(1, Ordering::SeqCst);
            }
            i
        };
        let r = self.prepare_on(&self.hosts[i], job).await;
        if r.is_err() {
            self.unassign(&job.task);
        }
        r
    }

    async fn prepare_on(&self, h: &Host, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        let root = h.connect(&self.setup).await.map_err(|e| self.lost(h, e))?;
        // Work an interrupted attempt (flocks was killed) left on this host
        // comes back first, so that the next attempt builds on it.
        let note = if job.fresh {
            None
        } else {
            self.salvage(h, &root, job).await?
        };
        // The local branch is the truth: create it (or start it over) here,
        // then send its tip's objects; the attempt starts from a commit we have.
        let (repo_dir, j) = (self.repo_dir.clone(), job.clone());
        let (start, created) = tokio::task::spawn_blocking(move || {
            local_start(&repo_dir, &j.branch, &j.base, j.fresh)
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))?;
        let oid = git2::Oid::from_str(&start).map_err(|e| PrepareError::Failed(e.to_string()))?;
        let env = self.identity_for(&root, &job.task);
        let session = self.session(h, &env);
        let p = {
            let _guard = h.admin.lock().await;
            session
                .send_start(&job.task, oid)
                .await
                .map_err(|e| self.call_lost(h, e))?;
            session
                .prepare(&job.task, &job.branch, oid)
                .await
                .map_err(|e| self.call_lost(h, e))?
        };
        Ok(Workspace {
            host_path: PathBuf::from(format!("{}:{}", h.target.host, p.worktree)),
            agent_cwd: p.worktree,
            origin: job.origin_for(&start, created),
            start_commit: start,
            created_branch: created,
            note,
            setup_mark: p.setup_mark,
        })
    }

    /// The helper's ops on `h`, whose helper root is `root`.
    fn session<'a>(&'a self, h: &'a Host, env: &'a [(String, String)]) -> Session<'a> {
        Session {
            transport: &h.target,
            repo_dir: &self.repo_dir,
            env,
            max_bytes: intake::DEFAULT_MAX_FETCH_MB << 20,
            known: &h.known,
        }
    }

    /// Bring back what an interrupted attempt left in the task's remote
    /// worktree, through the intake (`Session::salvage`).
    async fn salvage(
        &self,
        h: &Host,
        root: &str,
        job: &PrepareJob,
    ) -> Result<Option<String>, PrepareError> {
        let env = self.identity_for(root, &job.task);
        self.session(h, &env)
            .salvage(
                job,
                Some(self.worktrees.path_for(&job.task)),
                &h.target.host,
            )
            .await
            .map_err(|e| self.call_lost(h, e))
    }

    fn call_lost(&self, h: &Host, e: CallError) -> PrepareError {
        match e {
            CallError::Lost(m) => self.lost(h, SshError::Unreachable(m)),
            e => self.lost(h, SshError::Failed(e.to_string())),
        }
    }

    fn identity_for(&self, root: &str, task: &str) -> Vec<(String, String)> {
        identity_for(&self.identity, root, task)
    }

    pub(crate) async fn finish(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        let r = self.finish_inner(ws, task, branch, attempt).await;
        self.unassign(task);
        r
    }

    async fn finish_inner(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        let h = self.host_of(task).ok_or_else(|| FinishError::NoHost {
            pool: self.pool.clone(),
            task: task.to_string(),
        })?;
        let root = h.connect(&self.setup).await?;
        let env = self.identity_for(&root, task);
        Ok(self
            .session(h, &env)
            .finish(
                task,
                branch,
                attempt,
                &ws.start_commit,
                &ws.origin,
                Some(self.worktrees.path_for(task)),
                "flocks: the attempt's work from its host",
            )
            .await?)
    }

    /// Send `.worktreeinclude`'s files to the task's remote worktree: a tar
    /// stream on the helper's stdin, over the pool's ssh connection.
    pub(crate) async fn copy_in(
        &self,
        task: &str,
        files: Arc<IncludeSet>,
    ) -> Result<Copied, IncludeError> {
        let transfer = |why: String| IncludeError::Transfer {
            host: self.pool.clone(),
            why,
        };
        let h = self
            .host_of(task)
            .ok_or_else(|| transfer(format!("no host was prepared for {task}")))?;
        let host = h.target.host.clone();
        let transfer = |why: String| IncludeError::Transfer {
            host: host.clone(),
            why,
        };
        self.session(h, &[])
            .include(task, files)
            .await
            .map_err(|e| transfer(e.to_string()))
    }

    /// Start a setup command on the task's host, as its agent starts; a
    /// script of several lines goes on its stdin ([`super::script_on_stdin`]).
    pub(crate) async fn start_setup(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        self.spawn(ws, super::script_on_stdin(spec)).await
    }

    /// Record the completed setup in the task's remote worktree.
    pub(crate) async fn mark_setup(&self, task: &str, hash: &str) -> Result<(), MarkError> {
        let h = self.host_of(task).ok_or_else(|| {
            SshError::Failed(format!(
                "pool {}: no host was prepared for {task}",
                self.pool
            ))
        })?;
        Ok(self.session(h, &[]).mark(task, hash).await?)
    }

    /// Pack every connected host's mirror (`pack`), side by side. Not under
    /// the host's admin lock: git's own locks keep the other ops safe, and
    /// a start never waits on it.
    pub(crate) async fn upkeep(&self) -> Vec<crate::git::upkeep::Remote> {
        let futs: Vec<_> = self
            .hosts
            .iter()
            .filter(|h| matches!(h.ready.get(), Some(Ok(_))))
            .map(|h| {
                Box::pin(async move {
                    let done = self.session(h, &[]).pack().await.map_err(|e| e.to_string());
                    crate::git::upkeep::Remote {
                        pool: self.pool.clone(),
                        host: h.target.host.clone(),
                        done,
                    }
                })
            })
            .collect();
        join_all_ordered(futs).await
    }

    pub(crate) async fn release(&self, task: &str) {
        let Some(h) = self.host_of(task).or_else(|| self.hosts.first()) else {
            return;
        };
        let _guard = h.admin.lock().await;
        let _ = self.session(h, &[]).release(task).await;
    }
}

impl Backend for SshBackend {
    fn slots(&self, _pool: &PoolConfig) -> usize {
        SshBackend::slots(self)
    }

    fn connect<'a>(&'a self, notes: &'a mut Vec<String>) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.connect_all(notes))
    }

    fn down_reason(&self) -> Option<String> {
        SshBackend::down_reason(self)
    }

    fn upkeep(&self) -> BoxFuture<'_, Vec<crate::git::upkeep::Remote>> {
        Box::pin(SshBackend::upkeep(self))
    }

    super::attempt_methods!(SshBackend);

    super::setup_methods!(SshBackend, start = start_setup, mark = mark_setup);

    fn abandon<'a>(&'a self, task: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.unassign(task) })
    }

    fn proxy_address<'a>(
        &'a self,
        _ws: &'a Workspace,
        task: &'a str,
        proxy: &'a crate::proxy::Endpoint,
    ) -> BoxFuture<'a, Result<String, SpawnError>> {
        Box::pin(SshBackend::proxy_address(self, task, proxy))
    }

    fn up<'a>(
        &'a self,
        at: &'a At<'a>,
        rec: &'a mut Records<'_>,
    ) -> LocalFuture<'a, crate::error::Result<bool>> {
        Box::pin(self.up_vms(at, rec))
    }

    fn down<'a>(
        &'a self,
        at: &'a At<'a>,
        rec: &'a mut Records<'_>,
    ) -> LocalFuture<'a, crate::error::Result<()>> {
        Box::pin(self.down_vms(at, rec))
    }

    fn check<'a>(
        &'a self,
        at: &'a At<'a>,
        includes: bool,
    ) -> LocalFuture<'a, Option<Vec<Checked>>> {
        Box::pin(async move { Some(self.check_hosts(at, includes).await) })
    }

    fn shell<'a>(
        &'a self,
        at: &'a At<'a>,
        task: &'a ShellTask<'a>,
    ) -> LocalFuture<'a, crate::error::Result<Shell>> {
        Box::pin(async move { self.shell_for(at, task) })
    }
}

impl SshBackend {
    /// The host's loopback address that the pool's ssh connection forwards
    /// to flocks' proxy: one reverse forward per multiplexing master, made
    /// when the first attempt on it asks, and again once the master changed
    /// (its pid). The proxy's tokens are the key; the port is only a way in.
    async fn proxy_address(
        &self,
        task: &str,
        proxy: &crate::proxy::Endpoint,
    ) -> Result<String, SpawnError> {
        let h = self.host_of(task).ok_or_else(|| {
            SpawnError::Start(format!("pool {}: task {task} has no host", self.pool))
        })?;
        let mut forward = h.forward.lock().await;
        let pid = match h.target.master_pid().await {
            Some(p) => p,
            None => {
                // A command starts the master (ControlMaster=auto), which
                // stays for ControlPersist and while the agent runs.
                h.target
                    .output("true", b"", Duration::from_secs(30))
                    .await?;
                h.target.master_pid().await.ok_or_else(|| {
                    SpawnError::Start(format!(
                        "host {}: no ssh multiplexing master to forward flocks' proxy through (does ssh_options turn ControlMaster off?)",
                        h.target.host
                    ))
                })?
            }
        };
        if let Some((p, port)) = *forward
            && p == pid
        {
            return Ok(format!("127.0.0.1:{port}"));
        }
        let port = h.target.forward_remote(&proxy.local_authority()).await?;
        *forward = Some((pid, port));
        Ok(format!("127.0.0.1:{port}"))
    }
}

/// The local repo's git identity, as the environment git reads.
pub(crate) fn git_identity(repo_dir: &std::path::Path) -> Vec<(String, String)> {
    let Ok(repo) = git2::Repository::open(repo_dir) else {
        return Vec::new();
    };
    let sig = crate::git::signature(&repo);
    let name = sig.name().unwrap_or("flocks").to_string();
    let email = sig.email().unwrap_or("flocks@localhost").to_string();
    vec![
        ("GIT_AUTHOR_NAME".into(), name.clone()),
        ("GIT_AUTHOR_EMAIL".into(), email.clone()),
        ("GIT_COMMITTER_NAME".into(), name),
        ("GIT_COMMITTER_EMAIL".into(), email),
    ]
}

/// The git environment of a helper op or an agent on a remote helper root
/// `root`: the local `identity`, and the task's worktree and the mirror
/// as safe directories.
pub(crate) fn identity_for(
    identity: &[(String, String)],
    root: &str,
    task: &str,
) -> Vec<(String, String)> {
    let mut env = identity.to_vec();
    env.extend([
        ("GIT_CONFIG_COUNT".into(), "2".into()),
        ("GIT_CONFIG_KEY_0".into(), "safe.directory".into()),
        (
            "GIT_CONFIG_VALUE_0".into(),
            format!("{root}/worktrees/{task}"),
        ),
        ("GIT_CONFIG_KEY_1".into(), "safe.directory".into()),
        ("GIT_CONFIG_VALUE_1".into(), format!("{root}/mirror.git")),
    ]);
    env
}

/// Where the attempt starts, locally: the branch tip, or the base for a new
/// (or `fresh`) branch, which is created here. Returns (commit, created).
pub(crate) fn local_start(
    repo_dir: &std::path::Path,
    branch: &str,
    base: &str,
    fresh: bool,
) -> Result<(String, bool), BranchError> {
    let repo = crate::git::open(repo_dir)?;
    let base_oid = crate::git::resolve_commit(&repo, base)?;
    let refname = format!("refs/heads/{branch}");
    match crate::git::branch_tip(&repo, branch)? {
        Some(tip) if !fresh => Ok((tip.to_string(), false)),
        existing => {
            repo.reference(
                &refname,
                base_oid,
                true,
                &format!("flocks: start {branch} from {base}"),
            )
            .map_err(|source| BranchError::Set {
                branch: branch.to_string(),
                source,
            })?;
            Ok((base_oid.to_string(), existing.is_none()))
        }
    }
}

/// Await futures concurrently (tokio has no join_all), keeping their order.
async fn join_all_ordered<F, T>(futs: Vec<std::pin::Pin<Box<F>>>) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    use std::task::Poll;
    let mut futs: Vec<Option<std::pin::Pin<Box<F>>>> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in futs.iter_mut().enumerate() {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        out[i] = Some(v);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|v| v.expect("every future finished"))
        .collect()
}

/// The helper over ssh, for the transport-neutral ops.
impl Transport for Target {
    fn call<'a>(
        &'a self,
        input: Input,
        spec: &'static helper::Spec,
        want: Option<&'a Want>,
    ) -> BoxFuture<'a, Result<helper::Reply, CallError>> {
        Box::pin(async move {
            match self
                .helper_reply(input.header, input.body, spec, want, OP_LIMIT)
                .await
            {
                Ok(reply) => Ok(reply?),
                Err(SshError::Unreachable(m)) => Err(CallError::Lost(m)),
                Err(SshError::Failed(m)) => Err(CallError::Failed(m)),
            }
        })
    }
}

trait TapHost {
    fn tap_host(self, host: &str) -> Self;
}

impl TapHost for PrepareError {
    /// Make sure the message names the host.
    fn tap_host(self, host: &str) -> Self {
        match self {
            PrepareError::HostLost(m) if !m.contains(host) => {
                PrepareError::HostLost(format!("{m} (host {host})"))
            }
            PrepareError::Failed(m) if !m.contains(host) => {
                PrepareError::Failed(format!("{m} (host {host})"))
            }
            other => other,
        }
    }
}
