//! The docker backend: agents run inside a running container (a devcontainer)
//! through the Docker Engine API, in the task's worktree, which lives on the
//! host inside the repo the container mounts.
//!
//! ```text
//!  host                                   container
//!  repo/.worktrees/<task>  ── bind ──▶    <workspace_mount>/.worktrees/<task>
//!  flocks ── create/start exec (root) ─▶ perl REAPER (subreaper) ─▶ claude (as the user) ─▶ tools
//!         ── stdin: prompt, TERM/KILL ──▶  (every descendant reparents to the reaper;
//!         ◀── stdout/stderr (demuxed) ──    it stops them all at exit, on TERM/KILL,
//!                                            and when stdin ends: flocks is gone)
//!         ── after the exec: sh KILLER <tag> ─▶ TERM, grace, KILL by the FLOCKS_ATTEMPT tag
//! ```
//!
//! A container without perl gets the `sh` wrapper instead, and stopping
//! relies on the tag alone (the run says so as it starts).
//!
//! The container is found once per run, as the run starts (`connect`: by name,
//! by the devcontainer label, or as the one `flocks up` made). A container that
//! is missing or stopped then takes its pool out of the run with a reason that
//! names it; one that dies during an attempt ends that attempt as lost (the
//! task fails with a reason naming it, and the pool is not used again).

mod clone;
pub(crate) mod engine;
mod exec;
mod forward;
pub(crate) mod house;
pub(crate) use clone::checkout_commit;
pub(crate) use exec::{
    DockerControl, Exec, ExecError, Started, no_reaper_note, probe_reaper, start, tell,
};
pub(crate) mod lifecycle;
mod owner;
mod pool;
pub(crate) use pool::{
    clone_root, find_pool_target, give_to_repo_owner, lookup_for, repo_mount, stop_tagged,
};
pub(crate) mod scripts;
mod spawn;
mod user;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;

use super::{
    Backend, BoxFuture, MarkError, PrepareError, PrepareJob, Running, SpawnError, Workspace,
};
use crate::agent::AgentSpec;
use crate::backend::helper::session::Known;
use crate::config::{Config, DockerConfig, PoolConfig, WorkspaceMode};
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::guard::{Guard, Guards};
use engine::{EngineError, Lookup};
use exec::{Ctl, conclude, container_lost, kill_attempt, lost};
use forward::Forwarder;
use scripts::Match;

/// The container an agent of this pool runs in, as found at the start of the run.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub id: String,
    pub name: String,
    /// The host repo's path inside the container, when the container mounts
    /// it (always, in mount mode).
    pub repo: Option<String>,
    /// The exec user (`uid:gid` or a name).
    pub user: String,
    /// Its network (`HostConfig.NetworkMode`: "none", "host", a network).
    pub network: Option<String>,
    /// It mounts the project's proxy directory at [`crate::proxy::CONTAINER_DIR`].
    pub proxy_mount: bool,
}

pub(crate) struct DockerBackend {
    /// `workspace`: clone (a repository in the container) or mount.
    mode: WorkspaceMode,
    /// Clone mode: the helper's root in the container (`clone_dir/<project key>`).
    clone_root: String,
    /// `max_fetch_mb`, in bytes.
    max_bytes: u64,
    /// Clone mode: the helper set up in the container (its root), once.
    helper: tokio::sync::OnceCell<Result<String, String>>,
    /// Clone mode: commits the container's mirror is known to have.
    known: Known,
    worktrees: Arc<Worktrees>,
    repo_dir: PathBuf,
    config_dir: PathBuf,
    grace: Duration,
    lookup: Lookup,
    workspace_mount: Option<String>,
    user: String,
    docker_config: DockerConfig,
    project_key: String,
    /// The container, found by `connect` (or the first attempt).
    target: tokio::sync::OnceCell<Result<Target, EngineError>>,
    client: tokio::sync::OnceCell<Docker>,
    /// Whether the container runs the reaper (has perl), probed once.
    reaper: tokio::sync::OnceCell<bool>,
    guard: Arc<Guard>,
    /// Guard tickets of running attempts, by worktree.
    tickets: Mutex<HashMap<PathBuf, u64>>,
    /// Owner of the repo on the host: the default exec user.
    owner: (u32, u32),
    git_dir: PathBuf,
    /// Git identity and `safe.directory`, for the agent's environment.
    git_env: Vec<(String, String)>,
    /// The project's proxy directory on this machine ([`crate::proxy::shared_dir`]).
    proxy_dir: Option<PathBuf>,
    /// Its agents get flocks' proxy (a flocks credential, `[network]`).
    needs_proxy: bool,
    /// `[network] allow` binds this pool (a clone-mode container with no
    /// network): its container must have none.
    enforced: bool,
    /// The forwarder in the container, once an attempt needed it.
    forwarder: tokio::sync::Mutex<Option<Forwarder>>,
}

type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// Containers whose mount of the repository the run has mentioned.
fn said_mounted() -> &'static Mutex<HashSet<String>> {
    static SET: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    SET.get_or_init(Default::default)
}

/// Containers whose survivors of earlier runs were stopped in this process.
fn reconciled() -> &'static Mutex<HashSet<String>> {
    static SET: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    SET.get_or_init(Default::default)
}

impl DockerBackend {
    pub(crate) fn new(
        config: &Config,
        pool: &PoolConfig,
        d: &DockerConfig,
        worktrees: Arc<Worktrees>,
        guards: &Guards,
    ) -> DockerBackend {
        let repo_dir = config
            .workspace
            .repo
            .canonicalize()
            .unwrap_or_else(|_| config.workspace.repo.clone());
        let owner = owner::owner_of(&repo_dir).unwrap_or((0, 0));
        let (git_dir, git_env) = match crate::git::open(&repo_dir) {
            Ok(repo) => {
                let sig = crate::git::signature(&repo);
                let name = sig.name().unwrap_or("flocks").to_string();
                let email = sig.email().unwrap_or("flocks@localhost").to_string();
                let env = vec![
                    ("GIT_AUTHOR_NAME".into(), name.clone()),
                    ("GIT_AUTHOR_EMAIL".into(), email.clone()),
                    ("GIT_COMMITTER_NAME".into(), name),
                    ("GIT_COMMITTER_EMAIL".into(), email),
                    // git checks ownership along the host path in the
                    // worktree's back link, which does not exist in the container.
                    ("GIT_CONFIG_COUNT".into(), "1".into()),
                    ("GIT_CONFIG_KEY_0".into(), "safe.directory".into()),
                    ("GIT_CONFIG_VALUE_0".into(), "*".into()),
                ];
                (repo.commondir().to_path_buf(), env)
            }
            Err(_) => (repo_dir.join(".git"), Vec::new()),
        };
        let project_key = crate::paths::key_of(&config.state_dir());
        DockerBackend {
            mode: d.workspace,
            clone_root: clone_root(d, &project_key),
            max_bytes: d.max_fetch_bytes(),
            helper: tokio::sync::OnceCell::new(),
            known: Known::default(),
            worktrees,
            guard: guards.for_repo(&git_dir),
            git_dir,
            repo_dir,
            config_dir: config.dir.clone(),
            grace: config.kill_grace,
            lookup: lookup_for(&pool.name, d, &project_key),
            workspace_mount: d.workspace_mount.clone(),
            user: user::exec_user(d, owner),
            docker_config: d.clone(),
            project_key,
            target: tokio::sync::OnceCell::new(),
            client: tokio::sync::OnceCell::new(),
            reaper: tokio::sync::OnceCell::new(),
            tickets: Mutex::new(HashMap::new()),
            owner,
            git_env,
            proxy_dir: crate::proxy::shared_dir(config),
            needs_proxy: config.network.is_some()
                || pool.credential != crate::config::CredentialChoice::Default,
            enforced: config.network.is_some() && pool.egress_enforced(config.sandbox.network),
            forwarder: tokio::sync::Mutex::new(None),
        }
    }

    /// Find the pool's container and stop what an earlier run left in it.
    /// Why the pool cannot be used, if it cannot.
    pub(crate) async fn connect(&self, notes: &mut Vec<String>) -> Option<String> {
        let first = self.target.get().is_none();
        match self.target().await {
            Ok(t) => {
                if first {
                    self.reconcile(&t, notes).await;
                    if !self.has_reaper(&t).await {
                        notes.push(no_reaper_note(&t.name, "its agents"));
                    }
                    notes.extend(self.unreachable_note(&t));
                    if self.mode == WorkspaceMode::Clone
                        && let Some(mount) = &t.repo
                        && said_mounted()
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(t.id.clone())
                    {
                        notes.push(format!(
                            "docker container `{}` can reach the repository through its mount at {mount}: \
                             its agents work in their own clones under {}, and flocks keeps the .git guard on",
                            t.name, self.clone_root
                        ));
                    }
                }
                if self.mode == WorkspaceMode::Clone
                    && let Err(why) = self.helper_ready().await
                {
                    return Some(why);
                }
                None
            }
            Err(e) => Some(e.to_string()),
        }
    }

    /// Why this pool is out of the run (found by `connect`), if it is.
    pub(crate) fn down_reason(&self) -> Option<String> {
        match (self.target.get(), self.helper.get()) {
            (Some(Err(e)), _) => Some(e.to_string()),
            (_, Some(Err(e))) => Some(e.clone()),
            _ => None,
        }
    }

    /// Whether the host `.git` guard watches this pool's attempts: always
    /// in mount mode, and in clone mode when the container can reach the
    /// repository through a mount of its own.
    fn guarded(&self, t: &Target) -> bool {
        self.mode == WorkspaceMode::Mount || t.repo.is_some()
    }

    /// The pool's container, found once per process.
    pub(crate) async fn target(&self) -> Result<Target, EngineError> {
        self.target
            .get_or_init(|| async {
                let docker = self.client().await?;
                let info = engine::find(&docker, &self.lookup).await?;
                let id = info.id.clone().unwrap_or_default();
                let name = engine::name_of(&info, &id);
                let repo = repo_mount(
                    &info,
                    &self.repo_dir,
                    self.workspace_mount.as_deref(),
                    self.mode,
                    &name,
                )?;
                let network = info
                    .host_config
                    .as_ref()
                    .and_then(|h| h.network_mode.clone());
                let proxy_mount = self.proxy_dir.as_ref().is_some_and(|dir| {
                    info.mounts.iter().flatten().any(|m| {
                        m.destination.as_deref() == Some(crate::proxy::CONTAINER_DIR)
                            && m.source.as_deref().map(Path::new) == Some(dir.as_path())
                    })
                });
                if self.enforced && network.as_deref() != Some("none") {
                    return Err(EngineError::Inspect(format!(
                        "docker container `{name}` is on network {}, so [network] allow could not bind its agents as this clone-mode pool says (`network = \"none\"`, or a container `flocks up` makes): recreate it with `flocks down` and `flocks up`, or set the pool's `network` to the one it has (the allowlist is then advisory)",
                        network.as_deref().unwrap_or("default")
                    )));
                }
                let t = Target {
                    id,
                    name,
                    repo,
                    user: self.user.clone(),
                    network,
                    proxy_mount,
                };
                user::refuse_root(&docker, &t, &self.docker_config).await?;
                Ok(t)
            })
            .await
            .clone()
    }

    /// Stop survivors of an earlier run of this project in the container
    /// (once per container and flocks process: pools may share one).
    async fn reconcile(&self, t: &Target, notes: &mut Vec<String>) {
        let first = reconciled()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.id.clone());
        if !first {
            return;
        }
        let Ok(docker) = self.client().await else {
            return;
        };
        let grace = self.grace.min(Duration::from_secs(10));
        let tag = format!("{}:", self.project_key);
        match kill_attempt(&docker, t, Match::Prefix, &tag, grace).await {
            Ok(out) if scripts::stopped_any(&out) => notes.push(format!(
                "stopped processes an earlier flocks run left in docker container `{}`",
                t.name
            )),
            Ok(_) => {}
            Err(e) => notes.push(format!(
                "could not look for processes an earlier flocks run left: {e}"
            )),
        }
    }

    /// Whether `dir` is a directory in the pool's container (as its exec user).
    pub(crate) async fn dir_exists(&self, dir: &str) -> Result<bool, String> {
        let t = self.target().await.map_err(|e| e.to_string())?;
        let docker = self.client().await.map_err(|e| e.to_string())?;
        let argv = ["test", "-d", dir].map(String::from).to_vec();
        engine::run(&docker, &t.id, argv, vec![], &t.user)
            .await
            .map(|o| o.code == Some(0))
            .map_err(|e| engine::describe(&e, &t.name))
    }

    /// Whether the container can run the reaper (probed once).
    async fn has_reaper(&self, t: &Target) -> bool {
        *self
            .reaper
            .get_or_init(|| async {
                let Ok(docker) = self.client().await else {
                    return false;
                };
                probe_reaper(&docker, t).await
            })
            .await
    }

    async fn client(&self) -> Result<Docker, EngineError> {
        self.client.get_or_try_init(engine::connect).await.cloned()
    }

    pub(crate) async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        match self.mode {
            WorkspaceMode::Clone => self.prepare_clone(job).await,
            WorkspaceMode::Mount => self.prepare_mount(job).await,
        }
    }

    /// Mount mode: the task's worktree on the host, in the repo the
    /// container mounts.
    async fn prepare_mount(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        let t = self
            .target()
            .await
            .map_err(|e| PrepareError::HostLost(e.to_string()))?;
        let wts = self.worktrees.clone();
        let j = job.clone();
        let owner = self.owner;
        let git_dir = self.git_dir.clone();
        let repo_dir = self.repo_dir.clone();
        let p = tokio::task::spawn_blocking(move || -> crate::error::Result<_> {
            let p = wts.prepare(&j.task, &j.branch, &j.base, j.fresh)?;
            // An agent that runs `git worktree prune` in the container, where
            // the host path of the worktree does not exist, must not remove it.
            if let Ok(repo) = crate::git::open(&repo_dir)
                && let Ok(wt) = repo.find_worktree(&j.task)
                && matches!(wt.is_locked(), Ok(git2::WorktreeLockStatus::Unlocked))
            {
                let _ = wt.lock(Some("flocks: a container agent works here"));
            }
            if owner::needs_fixing(owner) {
                owner::give_back_one(&repo_dir, wts.root(), owner);
                owner::give_back(&repo_dir, &p.path, owner);
                owner::give_back(&repo_dir, &git_dir, owner);
            }
            let mark = wts.setup_mark(&j.task);
            Ok((p, mark))
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))?;
        let (p, setup_mark) = p;
        let rel = p.path.strip_prefix(&self.repo_dir).map_err(|_| {
            PrepareError::Failed(format!(
                "the worktree {} is not inside the repo {}",
                p.path.display(),
                self.repo_dir.display()
            ))
        })?;
        let mount = t.repo.as_deref().ok_or_else(|| {
            PrepareError::HostLost(format!(
                "docker container `{}` does not mount the repo {}",
                t.name,
                self.repo_dir.display()
            ))
        })?;
        let agent_cwd = Path::new(mount).join(rel).display().to_string();
        Ok(Workspace {
            agent_cwd,
            host_path: p.path,
            start_commit: p.start_commit.to_string(),
            origin: job.origin_for(&p.start_commit.to_string(), p.created_branch),
            created_branch: p.created_branch,
            note: p.note,
            setup_mark,
        })
    }
}

impl Backend for DockerBackend {
    fn connect<'a>(&'a self, notes: &'a mut Vec<String>) -> BoxFuture<'a, Option<String>> {
        Box::pin(DockerBackend::connect(self, notes))
    }

    fn down_reason(&self) -> Option<String> {
        DockerBackend::down_reason(self)
    }

    super::attempt_methods!(DockerBackend);

    /// Mount mode: the container sees the worktree through the repo's
    /// mount, so copying on the host is enough (then the files go to the
    /// repo's owner, as everything flocks writes there). Clone mode: a tar
    /// stream to the helper in the container.
    fn copy_in<'a>(
        &'a self,
        ws: &'a Workspace,
        task: &'a str,
        files: Arc<IncludeSet>,
    ) -> BoxFuture<'a, Result<Copied, IncludeError>> {
        Box::pin(async move {
            if self.mode == WorkspaceMode::Clone {
                return self.copy_in_clone(task, files).await;
            }
            let copied = super::copy_into_host(ws, files).await?;
            if !copied.written.is_empty() {
                self.give_back(&ws.host_path).await;
            }
            Ok(copied)
        })
    }

    fn start_setup<'a>(
        &'a self,
        ws: &'a Workspace,
        spec: AgentSpec,
    ) -> BoxFuture<'a, Result<Running, SpawnError>> {
        Box::pin(self.exec(ws, spec, true))
    }

    fn mark_setup<'a>(
        &'a self,
        _ws: &'a Workspace,
        task: &'a str,
        hash: &'a str,
    ) -> BoxFuture<'a, Result<(), MarkError>> {
        match self.mode {
            WorkspaceMode::Clone => Box::pin(self.mark_clone(task, hash)),
            WorkspaceMode::Mount => Box::pin(super::mark_host_setup(&self.worktrees, task, hash)),
        }
    }

    fn proxy_address<'a>(
        &'a self,
        _ws: &'a Workspace,
        _task: &'a str,
        proxy: &'a crate::proxy::Endpoint,
    ) -> BoxFuture<'a, Result<String, SpawnError>> {
        Box::pin(DockerBackend::proxy_address(self, proxy))
    }

    fn abandon<'a>(&'a self, task: &'a str) -> BoxFuture<'a, ()> {
        let path = self.worktrees.path_for(task);
        Box::pin(async move {
            if self.mode == WorkspaceMode::Mount {
                self.give_back(&path).await
            }
        })
    }

    fn up<'a>(
        &'a self,
        at: &'a super::house::At<'a>,
        rec: &'a mut super::house::Records<'_>,
    ) -> super::house::LocalFuture<'a, crate::error::Result<bool>> {
        Box::pin(self.up_container(at, rec))
    }

    fn down<'a>(
        &'a self,
        at: &'a super::house::At<'a>,
        rec: &'a mut super::house::Records<'_>,
    ) -> super::house::LocalFuture<'a, crate::error::Result<()>> {
        Box::pin(house::remove_recorded(at.key, rec, |p| p == at.pool.name))
    }

    fn shell<'a>(
        &'a self,
        at: &'a super::house::At<'a>,
        task: &'a super::house::ShellTask<'a>,
    ) -> super::house::LocalFuture<'a, crate::error::Result<super::house::Shell>> {
        Box::pin(self.shell_in(at, task.record))
    }
}
