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
pub mod engine;
pub use clone::checkout_commit;
pub mod lifecycle;
mod owner;
pub mod scripts;
mod user;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::InspectContainerOptions;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{
    Backend, BoxFuture, Chunk, Control, ExitInfo, FinishError, Finished, MarkError, PrepareError,
    PrepareJob, Running, SpawnError, Workspace,
};
use crate::agent::AgentSpec;
use crate::backend::helper::session::Known;
use crate::config::{Config, DockerConfig, PoolConfig, WorkspaceMode};
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::guard::{self, Guard};
use engine::{EngineError, Lookup};
use scripts::Match;

/// The container an agent of this pool runs in, as found at the start of the run.
#[derive(Debug, Clone)]
pub struct Target {
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

pub struct DockerBackend {
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

/// `flocks __forward` in a container: the address it listens at there, and
/// its stdin, held open (its end ends the forwarder).
struct Forwarder {
    addr: String,
    _input: Input,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

/// How flocks stops an agent in a container: killer execs.
pub struct DockerControl {
    inner: Option<Arc<Ctl>>,
}

type Input = std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>;

/// A reaper's stdin, held open by flocks for the whole exec: its end is how
/// the reaper learns that flocks is gone.
pub type Held = Arc<tokio::sync::Mutex<Option<Input>>>;

/// An exec's demultiplexed output.
pub type Output = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// What one program to run in a container needs, agent or validate command.
pub struct Exec<'a> {
    pub program: String,
    pub args: &'a [String],
    /// `KEY=value`, with `FLOCKS_UNSET` naming the container's variables to remove.
    pub env: Vec<String>,
    pub cwd: &'a str,
    /// What the program reads on its stdin.
    pub stdin: Vec<u8>,
    /// The reaper's grace between TERM and KILL.
    pub grace: Duration,
}

/// Why docker could not run a program in a container (an agent, a
/// `[validate] pool` command, the killer).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExecError {
    /// The engine refused or failed, in words that name the container.
    #[error("{0}")]
    Engine(String),
    #[error("docker started the exec detached")]
    Detached,
    /// The container has no usable `/bin/sh`.
    #[error(
        "docker container `{container}` cannot run /bin/sh, which flocks needs to start and stop agents: {stderr}"
    )]
    NoShell { container: String, stderr: String },
    /// The killer failed: what it said.
    #[error("in docker container `{container}`: {stderr}")]
    Killer { container: String, stderr: String },
}

/// An exec started by [`start`].
pub struct Started {
    pub exec: String,
    pub output: Output,
    /// The reaper's stdin (None: the `sh` wrapper, stopped by its tag alone).
    pub input: Option<Held>,
    /// Writes the program's stdin.
    pub writer: tokio::task::JoinHandle<()>,
}

/// Start a program in the container the way every agent and every
/// `[validate] pool` command starts: under the reaper when the container has
/// one (`reaper`: [`probe_reaper`]), its stdin held open so that the tree
/// stops on TERM/KILL lines and when flocks goes away; otherwise under the
/// `sh` wrapper, as the exec user. Err: why docker could not start it.
pub async fn start(
    docker: &Docker,
    t: &Target,
    reaper: bool,
    x: Exec<'_>,
) -> Result<Started, ExecError> {
    let Exec {
        program,
        args,
        mut env,
        cwd,
        stdin,
        grace,
    } = x;
    let (argv, user) = if reaper {
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        (
            scripts::reaper_argv(&t.user, secs, program, args),
            "0".to_string(),
        )
    } else {
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            scripts::AGENT.into(),
            scripts::AGENT_NAME.into(),
            program,
        ];
        argv.extend(args.iter().cloned());
        (argv, t.user.clone())
    };
    if reaper && env.iter().any(|kv| kv.starts_with("HOME=")) {
        // Set by the config: the reaper keeps it for the program.
        env.push("FLOCKS_KEEP_HOME=1".into());
    }
    let exec = docker
        .create_exec(
            &t.id,
            CreateExecOptions::<String> {
                cmd: Some(argv),
                env: Some(env),
                user: Some(user),
                working_dir: Some(cwd.to_string()),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ExecError::Engine(engine::describe(&e, &t.name)))?
        .id;
    let (output, mut input) = match docker.start_exec(&exec, None).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => return Err(ExecError::Detached),
        Err(e) => return Err(ExecError::Engine(engine::describe(&e, &t.name))),
    };
    let (writer, held) = if reaper {
        // The reaper reads the program's stdin, then holds the stream.
        let held: Held = Arc::new(tokio::sync::Mutex::new(None));
        let mut slot = held.clone().lock_owned().await;
        let writer = tokio::spawn(async move {
            if input
                .write_all(&scripts::reaper_input(&stdin))
                .await
                .is_ok()
            {
                *slot = Some(input);
            }
        });
        (writer, Some(held))
    } else {
        let writer = tokio::spawn(async move {
            // A program that exits without reading its stdin: fine.
            let _ = input.write_all(&stdin).await;
            let _ = input.shutdown().await;
        });
        (writer, None)
    };
    Ok(Started {
        exec,
        output,
        input: held,
        writer,
    })
}

/// Whether the container can run the reaper (perl, and root able to become
/// the exec user).
pub async fn probe_reaper(docker: &Docker, t: &Target) -> bool {
    engine::run(docker, &t.id, scripts::reaper_probe(&t.user), vec![], "0")
        .await
        .is_ok_and(|o| o.code == Some(0))
}

/// What flocks says when a container cannot run the reaper.
pub fn no_reaper_note(container: &str, what: &str) -> String {
    format!(
        "docker container `{container}` cannot run flocks' reaper (it needs perl, and root able to become the exec user): flocks stops {what} by their FLOCKS_ATTEMPT tag, which they can remove, and cannot stop them if flocks itself is killed (see the manual: Docker pools, Stopping)"
    )
}

struct Ctl {
    docker: Docker,
    target: Target,
    tag: String,
    grace: Duration,
    notes: mpsc::Sender<Chunk>,
    /// The reaper's stdin, held open for the whole attempt (None: no reaper).
    input: Option<Arc<tokio::sync::Mutex<Option<Input>>>>,
}

impl DockerControl {
    pub fn terminate(&self) {
        if let Some(c) = &self.inner {
            tokio::spawn(stop(c.clone(), c.grace));
        }
    }

    pub fn kill(&self) {
        if let Some(c) = &self.inner {
            tokio::spawn(stop(c.clone(), Duration::ZERO));
        }
    }
}

/// Tell the reaper to stop the attempt. Whether it heard.
async fn tell_reaper(c: &Ctl, grace: Duration) -> bool {
    match &c.input {
        Some(input) => tell(input, grace).await,
        None => false,
    }
}

/// Tell a reaper through its held stdin to stop its tree: TERM (then
/// KILL after its grace), or KILL now when `grace` is zero. Whether it heard.
pub async fn tell(input: &Held, grace: Duration) -> bool {
    let mut input = input.lock().await;
    let Some(w) = input.as_mut() else {
        return false;
    };
    let line: &[u8] = if grace.is_zero() {
        b"KILL\n"
    } else {
        b"TERM\n"
    };
    w.write_all(line).await.is_ok() && w.flush().await.is_ok()
}

async fn stop(c: Arc<Ctl>, grace: Duration) {
    if tell_reaper(&c, grace).await {
        return;
    }
    if let Err(why) = kill_attempt(&c.docker, &c.target, Match::Exact, &c.tag, grace).await {
        let _ = c
            .notes
            .send(Chunk::Stderr(
                format!("flocks: stopping the agent: {why}\n").into_bytes(),
            ))
            .await;
    }
}

/// Run the killer for `tag` in the target container. Ok(what it stopped).
async fn kill_attempt(
    docker: &Docker,
    t: &Target,
    m: Match,
    tag: &str,
    grace: Duration,
) -> Result<String, ExecError> {
    let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
    let out = engine::run(
        docker,
        &t.id,
        scripts::killer_argv(m, tag, secs),
        vec![],
        &t.user,
    )
    .await
    .map_err(|e| ExecError::Engine(engine::describe(&e, &t.name)))?;
    match out.code {
        Some(0) => Ok(out.stdout),
        Some(126) | Some(127) => Err(ExecError::NoShell {
            container: t.name.clone(),
            stderr: out.stderr.trim().to_string(),
        }),
        _ => Err(ExecError::Killer {
            container: t.name.clone(),
            stderr: out.stderr.trim().to_string(),
        }),
    }
}

/// A started agent that was lost before it ran.
fn lost(reason: impl Into<String>) -> Running {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Chunk::Exited(ExitInfo {
        code: None,
        lost: Some(reason.into()),
        violation: None,
    }));
    Running {
        output: rx,
        control: Control::Docker(DockerControl { inner: None }),
    }
}

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
    pub fn new(
        config: &Config,
        pool: &PoolConfig,
        d: &DockerConfig,
        worktrees: Arc<Worktrees>,
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
        let project_key = crate::project::key_of(&config.state_dir());
        DockerBackend {
            mode: d.workspace,
            clone_root: clone_root(d, &project_key),
            max_bytes: d.max_fetch_bytes(),
            helper: tokio::sync::OnceCell::new(),
            known: Known::default(),
            worktrees,
            guard: guard::for_repo(&git_dir),
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
    pub async fn connect(&self, notes: &mut Vec<String>) -> Option<String> {
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
    pub fn down_reason(&self) -> Option<String> {
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
    pub async fn target(&self) -> Result<Target, EngineError> {
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
    pub async fn dir_exists(&self, dir: &str) -> Result<bool, String> {
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

    pub async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
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

    /// `[agent] command` inside the container: a name (found on the
    /// container's PATH), an absolute path there, or a path relative to
    /// flocks.toml's directory that lies inside the repo: in mount mode
    /// through the mount, in clone mode in the task's own clone.
    fn program_in_container(
        &self,
        program: &str,
        t: &Target,
        ws: &Workspace,
    ) -> Result<String, super::ProgramError> {
        if !program.contains('/') || program.starts_with('/') {
            return Ok(program.to_string());
        }
        let host = crate::config::normalize_path(&self.config_dir.join(program));
        let base = match self.mode {
            WorkspaceMode::Clone => Some(ws.agent_cwd.as_str()),
            WorkspaceMode::Mount => t.repo.as_deref(),
        };
        match (host.strip_prefix(&self.repo_dir), base) {
            (Ok(rel), Some(base)) => Ok(Path::new(base).join(rel).display().to_string()),
            _ => Err(super::ProgramError::OutsideMount {
                program: program.to_string(),
                container: t.name.clone(),
            }),
        }
    }

    fn env_for(&self, spec: &AgentSpec) -> Vec<String> {
        let ours: HashSet<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
        let mut set: Vec<(String, String)> = self
            .git_env
            .iter()
            .filter(|(k, _)| !ours.contains(k.as_str()))
            .cloned()
            .collect();
        set.extend(spec.env.iter().cloned());
        crate::agent::spec::add_agent_git_config(&mut set, 0);
        let mut env: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let unset: Vec<&str> = spec
            .remove_env
            .iter()
            .map(String::as_str)
            .filter(|k| !ours.contains(k) && scripts::is_var_name(k))
            .collect();
        env.push(format!("FLOCKS_UNSET={}", unset.join(" ")));
        env
    }

    pub async fn spawn(&self, ws: &Workspace, spec: AgentSpec) -> Result<Running, SpawnError> {
        self.exec(ws, spec, false).await
    }

    /// Start the agent, or (`setup`) one `[workspace] setup` command, in the
    /// container under the reaper. The host `.git` guard watches the agent
    /// until `finish`, and each setup command until it ends (what it changed
    /// comes back as the exit's `violation`).
    async fn exec(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
        setup: bool,
    ) -> Result<Running, SpawnError> {
        let t = match self.target().await {
            Ok(t) => t,
            Err(why) => return Ok(lost(why.to_string())),
        };
        let program = self.program_in_container(&spec.program, &t, ws)?;
        let docker = match self.client().await {
            Ok(d) => d,
            Err(e) => return Ok(lost(e.to_string())),
        };
        let reaper = self.has_reaper(&t).await;
        // The guard watches the host repo wherever the container can reach it.
        let ticket = self.guarded(&t).then(|| self.guard.begin());
        let setup_ticket = match ticket {
            Some(ticket) if setup => Some(ticket),
            Some(ticket) => {
                self.tickets
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(ws.host_path.clone(), ticket);
                None
            }
            None => None,
        };
        let guard = self.guard.clone();
        let end_setup = move || async move {
            match setup_ticket {
                Some(t) => tokio::task::spawn_blocking(move || guard.end(t))
                    .await
                    .unwrap_or(None),
                None => None,
            }
        };
        let x = Exec {
            program,
            args: &spec.args,
            env: self.env_for(&spec),
            cwd: &ws.agent_cwd,
            stdin: spec.prompt.clone().into_bytes(),
            grace: self.grace,
        };
        let Started {
            exec,
            output,
            input: held,
            writer,
        } = match start(&docker, &t, reaper, x).await {
            Ok(s) => s,
            Err(why) => {
                end_setup().await;
                return Ok(lost(why.to_string()));
            }
        };
        let (tx, rx) = mpsc::channel(256);
        let ctl = Arc::new(Ctl {
            docker: docker.clone(),
            target: t.clone(),
            tag: spec.tag.clone(),
            grace: self.grace,
            notes: tx.clone(),
            input: held.clone(),
        });
        let grace = self.grace;
        let what = if setup {
            "the setup command"
        } else {
            "the agent"
        };
        tokio::spawn(async move {
            let mut output = output;
            let mut broken = None;
            while let Some(item) = output.next().await {
                let chunk = match item {
                    Ok(LogOutput::StdErr { message }) => Chunk::Stderr(message.to_vec()),
                    Ok(other) => Chunk::Stdout(other.into_bytes().to_vec()),
                    Err(e) => {
                        broken = Some(e.to_string());
                        break;
                    }
                };
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            writer.abort();
            if let Some(h) = &held {
                // The reaper has exited: let the stream go.
                if let Some(mut w) = h.lock().await.take() {
                    let _ = w.shutdown().await;
                }
            }
            let mut info = conclude(&docker, &exec, &t, broken).await;
            if info.lost.is_none() {
                // The agent is gone: stop whatever it left running.
                match kill_attempt(&docker, &t, Match::Exact, &spec.tag, grace).await {
                    Ok(out) if scripts::stopped_any(&out) => {
                        let _ = tx
                            .send(Chunk::Stderr(
                                format!(
                                    "flocks: {what} exited; stopped what it left running ({})\n",
                                    out.trim()
                                )
                                .into_bytes(),
                            ))
                            .await;
                    }
                    Ok(_) => {}
                    Err(why) => {
                        info.lost = container_lost(&docker, &t, None).await;
                        let _ = tx
                            .send(Chunk::Stderr(
                                format!("flocks: stopping what {what} left running: {why}\n")
                                    .into_bytes(),
                            ))
                            .await;
                    }
                }
            }
            info.violation = end_setup().await;
            let _ = tx.send(Chunk::Exited(info)).await;
        });
        Ok(Running {
            output: rx,
            control: Control::Docker(DockerControl { inner: Some(ctl) }),
        })
    }

    pub async fn finish(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        // The guard first: nothing on the host touches git before it is checked.
        let ticket = self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ws.host_path);
        let violation = match ticket {
            Some(t) => {
                let g = self.guard.clone();
                tokio::task::spawn_blocking(move || g.end(t))
                    .await
                    .unwrap_or(None)
            }
            None => None,
        };
        if self.mode == WorkspaceMode::Clone {
            return match (
                self.finish_clone(ws, task, branch, attempt).await,
                violation,
            ) {
                (Ok(mut f), v) => {
                    f.guard_violation = v;
                    Ok(f)
                }
                (Err(e), Some(v)) => Err(FinishError::Measure(format!(
                    "{e}; also, the agent changed {v}"
                ))),
                (Err(e), None) => Err(e),
            };
        }
        let result = super::finish_host_worktree(self.repo_dir.clone(), ws, branch, attempt).await;
        if owner::needs_fixing(self.owner) {
            let (owner, git_dir, path) = (self.owner, self.git_dir.clone(), ws.host_path.clone());
            let repo_dir = self.repo_dir.clone();
            let _ = tokio::task::spawn_blocking(move || {
                owner::give_back(&repo_dir, &path, owner);
                owner::give_back(&repo_dir, &git_dir, owner);
            })
            .await;
        }
        match (result, violation) {
            (Ok(mut f), v) => {
                f.guard_violation = v;
                Ok(f)
            }
            (Err(e), Some(v)) => Err(FinishError::Measure(format!(
                "{e}; also, the agent changed {v}"
            ))),
            (Err(e), None) => Err(e),
        }
    }

    /// When flocks runs as root on someone else's repo: give `path` (in
    /// the repo) and the git dir back to the repo's owner.
    async fn give_back(&self, path: &Path) {
        if !owner::needs_fixing(self.owner) {
            return;
        }
        let (owner, git_dir, path) = (self.owner, self.git_dir.clone(), path.to_path_buf());
        let repo_dir = self.repo_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            owner::give_back(&repo_dir, &path, owner);
            owner::give_back(&repo_dir, &git_dir, owner);
        })
        .await;
    }

    pub async fn release(&self, task: &str) {
        if self.mode == WorkspaceMode::Clone {
            return self.release_clone(task).await;
        }
        let wts = self.worktrees.clone();
        let task = task.to_string();
        let (owner, git_dir) = (self.owner, self.git_dir.clone());
        let repo_dir = self.repo_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _ = wts.recycle(&task);
            if owner::needs_fixing(owner) {
                owner::give_back(&repo_dir, wts.root(), owner);
                owner::give_back(&repo_dir, &git_dir, owner);
            }
        })
        .await;
    }
}

impl DockerBackend {
    /// Said as the run starts when the pool's agents need flocks' proxy and
    /// their container offers no way to it.
    fn unreachable_note(&self, t: &Target) -> Option<String> {
        (self.needs_proxy && t.network.as_deref() != Some("host") && !t.proxy_mount).then(|| {
            format!(
                "docker container `{}` is not on the host's network and does not mount flocks' proxy directory {} at {}, so its agents cannot reach flocks' proxy (model requests, HTTP(S)_PROXY): let `flocks up` make it (`flocks down`, `flocks up`), add that mount (read-only), or give it network = \"host\"",
                t.name,
                self.proxy_dir.as_deref().unwrap_or(Path::new("?")).display(),
                crate::proxy::CONTAINER_DIR
            )
        })
    }

    /// Where the pool's agents reach flocks' proxy: on the host's network,
    /// its own address; otherwise the forwarder this backend starts in the
    /// container (once per run), listening on the container's loopback and
    /// carrying to the proxy's socket in the project's proxy directory,
    /// which the container mounts.
    async fn proxy_address(&self, proxy: &crate::proxy::Endpoint) -> Result<String, SpawnError> {
        let t = self
            .target()
            .await
            .map_err(|e| SpawnError::Start(e.to_string()))?;
        if t.network.as_deref() == Some("host") {
            return Ok(proxy.local_authority());
        }
        let dir = self.proxy_dir.clone().unwrap_or_default();
        if !t.proxy_mount {
            // As before the forwarder: said once as the run starts
            // (`unreachable_note`).
            return Ok(proxy.local_authority());
        }
        let name = match proxy.unix.parent() {
            Some(p) if p == dir => proxy.unix.file_name().map(|n| n.to_os_string()),
            _ => None,
        }
        .ok_or_else(|| {
            SpawnError::Start(format!(
                "flocks' proxy socket {} is not in {} (its path there would be too long for a socket): set XDG_STATE_HOME to a shorter directory",
                proxy.unix.display(),
                dir.display()
            ))
        })?;
        let mut fwd = self.forwarder.lock().await;
        if let Some(f) = fwd.as_ref()
            && !f.ended.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(f.addr.clone());
        }
        let bin = tokio::task::spawn_blocking(move || install_forwarder(&dir))
            .await
            .map_err(|e| SpawnError::Start(e.to_string()))?
            .map_err(SpawnError::Start)?;
        let inner = |p: &std::ffi::OsStr| {
            Path::new(crate::proxy::CONTAINER_DIR)
                .join(p)
                .display()
                .to_string()
        };
        let argv = vec![
            inner(bin.as_os_str()),
            crate::proxy::forward::SUBCOMMAND.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--to".into(),
            inner(&name),
            "--while-stdin".into(),
        ];
        let docker = self
            .client()
            .await
            .map_err(|e| SpawnError::Start(e.to_string()))?;
        let f = start_forwarder(&docker, &t, argv).await?;
        let addr = f.addr.clone();
        *fwd = Some(f);
        Ok(addr)
    }
}

/// Put flocks' own binary in the proxy directory, as `flocks` (a link when
/// it can, else a copy; renamed into place, so that a forwarder running the
/// last one keeps it). Its name in the directory.
fn install_forwarder(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find flocks' own binary for the forwarder: {e}"))?;
    let tmp = dir.join(format!(".flocks-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&exe, &tmp).is_err() {
        std::fs::copy(&exe, &tmp)
            .map_err(|e| format!("cannot copy flocks' binary to {}: {e}", tmp.display()))?;
    }
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755));
    let name = PathBuf::from("flocks");
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot put flocks' binary in {}: {e}", dir.display())
    })?;
    Ok(name)
}

/// Start the forwarder in the container (as root there: the agents, another
/// user, cannot stop it) and read the address it listens at.
async fn start_forwarder(
    docker: &Docker,
    t: &Target,
    argv: Vec<String>,
) -> Result<Forwarder, SpawnError> {
    let failed = |why: String| {
        SpawnError::Start(format!(
            "cannot start flocks' proxy forwarder in docker container `{}`: {why}",
            t.name
        ))
    };
    let exec = docker
        .create_exec(
            &t.id,
            CreateExecOptions::<String> {
                cmd: Some(argv),
                user: Some("0".into()),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(engine::describe(&e, &t.name)))?
        .id;
    let (mut output, input) = match docker.start_exec(&exec, None).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => return Err(failed("docker started it detached".into())),
        Err(e) => return Err(failed(engine::describe(&e, &t.name))),
    };
    let mut said = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = output.next().await {
            let Ok(chunk) = chunk else { break };
            said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if let Some(line) = said.lines().find(|l| l.starts_with("listening ")) {
                return Some(line["listening ".len()..].trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| {
        failed(if said.trim().is_empty() {
            "it said nothing (can the container run flocks' binary? it needs the same C library as this machine)".into()
        } else {
            said.trim().to_string()
        })
    })?;
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mark = ended.clone();
    tokio::spawn(async move {
        // What it says later (a socket it cannot reach) is not read by anyone.
        while output.next().await.is_some() {}
        mark.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(Forwarder {
        addr,
        _input: input,
        ended,
    })
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
}

/// A docker pool's container and a client, found for one use outside a run
/// (`[validate] pool` runs the validate commands there).
pub async fn find_pool_target(
    config: &Config,
    pool: &PoolConfig,
    d: &DockerConfig,
) -> Result<(Docker, Target), EngineError> {
    let repo_dir = config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| config.workspace.repo.clone());
    let owner = owner::owner_of(&repo_dir).unwrap_or((0, 0));
    let project_key = crate::project::key_of(&config.state_dir());
    let docker = engine::connect().await?;
    let info = engine::find(&docker, &lookup_for(&pool.name, d, &project_key)).await?;
    let id = info.id.clone().unwrap_or_default();
    let name = engine::name_of(&info, &id);
    let repo = repo_mount(
        &info,
        &repo_dir,
        d.workspace_mount.as_deref(),
        d.workspace,
        &name,
    )?;
    let t = Target {
        id,
        name,
        repo,
        user: user::exec_user(d, owner),
        network: info
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone()),
        // For `[validate] pool` and `flocks shell`: no agent, no proxy.
        proxy_mount: false,
    };
    user::refuse_root(&docker, &t, d).await?;
    Ok((docker, t))
}

/// When flocks runs as root on a repo that belongs to someone else, give
/// `path` (a worktree flocks wrote on the host, such as the land worktree)
/// to the repo's owner, the pool's default exec user, so that commands in
/// the container can write there.
pub fn give_to_repo_owner(config: &Config, path: &Path) {
    let repo_dir = config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| config.workspace.repo.clone());
    if let Ok(owner) = owner::owner_of(&repo_dir)
        && owner::needs_fixing(owner)
    {
        owner::give_back(&repo_dir, path, owner);
    }
}

/// Stop every process tagged `FLOCKS_ATTEMPT=<tag>` in the container (TERM,
/// `grace`, KILL), as an attempt is stopped. Ok(the killer's report).
pub async fn stop_tagged(
    docker: &Docker,
    t: &Target,
    tag: &str,
    grace: Duration,
) -> Result<String, ExecError> {
    kill_attempt(docker, t, Match::Exact, tag, grace).await
}

/// Where the host repo is in the container: it must be mounted in mount
/// mode; in clone mode, whether the container can reach it at all (the
/// guard stays on when it can).
pub fn repo_mount(
    info: &bollard::models::ContainerInspectResponse,
    repo_dir: &Path,
    workspace_mount: Option<&str>,
    mode: WorkspaceMode,
    name: &str,
) -> Result<Option<String>, EngineError> {
    match engine::repo_in_container(info, repo_dir, workspace_mount, name) {
        Ok(p) => Ok(Some(p)),
        Err(EngineError::NoMount { .. }) if mode == WorkspaceMode::Clone => Ok(None),
        Err(e) => Err(e),
    }
}

/// A clone-mode pool's helper root in the container: one directory per
/// project under `clone_dir`, so that projects sharing a container do not
/// meet.
pub fn clone_root(d: &DockerConfig, project_key: &str) -> String {
    format!("{}/{project_key}", d.clone_dir())
}

/// How a pool finds its container.
pub fn lookup_for(pool: &str, d: &DockerConfig, project_key: &str) -> Lookup {
    if let Some(c) = &d.container {
        Lookup::Name(c.clone())
    } else if let Some(p) = &d.project {
        Lookup::Folder(p.clone())
    } else {
        Lookup::Managed {
            pool: pool.to_string(),
            project_key: project_key.to_string(),
        }
    }
}

/// After the exec's output ended: its exit code, or why the agent was lost.
async fn conclude(docker: &Docker, exec: &str, t: &Target, broken: Option<String>) -> ExitInfo {
    let mut code = None;
    for _ in 0..50 {
        match docker.inspect_exec(exec).await {
            Ok(i) if i.running == Some(true) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(i) => {
                code = i.exit_code.map(|c| c as i32);
                break;
            }
            Err(_) => break,
        }
    }
    // A killed container ends the stream a moment before its state says so;
    // an agent killed by SIGKILL is the sign to look twice.
    let tries = if code == Some(137) || code.is_none() {
        10
    } else {
        1
    };
    let mut lost = None;
    for i in 0..tries {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lost = container_lost(docker, t, broken.clone()).await;
        if lost.is_some() {
            break;
        }
    }
    ExitInfo {
        code,
        lost,
        violation: None,
    }
}

/// Why the container can no longer run the agent, if it cannot.
async fn container_lost(docker: &Docker, t: &Target, broken: Option<String>) -> Option<String> {
    match docker
        .inspect_container(&t.id, None::<InspectContainerOptions>)
        .await
    {
        Err(e) if engine::is_not_found(&e) => Some(format!(
            "docker container `{}` was removed while the agent ran",
            t.name
        )),
        Err(e) => Some(format!(
            "lost docker container `{}`: {}",
            t.name,
            broken.unwrap_or_else(|| e.to_string())
        )),
        Ok(info) => {
            let state = info.state.unwrap_or_default();
            if state.running != Some(true) {
                let status = state.status.map(|s| s.to_string()).unwrap_or_default();
                Some(format!(
                    "docker container `{}` stopped while the agent ran (status {status}, exit code {})",
                    t.name,
                    state.exit_code.unwrap_or(-1)
                ))
            } else {
                broken.map(|b| {
                    format!(
                        "lost the agent's output from docker container `{}`: {b}",
                        t.name
                    )
                })
            }
        }
    }
}
