//! Sandboxed local pools (`sandbox = "bwrap"`): every attempt's agent, its
//! `[workspace] setup` commands and flocks' helper run in a bubblewrap
//! sandbox, with a repository of their own.
//!
//! ```text
//!  host repo ──start bundle (what the task's mirror lacks)──▶ helper, in the sandbox
//!                                                            /var/tmp/flocks/work: mirror.git,
//!                                                            worktrees/<task> (read-write)
//!  flocks __supervise --wrapped ──▶ bwrap ... -- agent      (cwd: the worktree; HOME: the
//!        (TERM, grace, KILL;         its own PID and         task's private home)
//!         timeouts)                  network namespaces
//!  network = "proxy" (the default): bwrap ... -- flocks __forward --listen 127.0.0.1:3128
//!        --to /var/tmp/flocks/proxy/proxy.sock -- agent   (the proxy's socket directory
//!        bound read-only; the agent's ANTHROPIC_BASE_URL and HTTP(S)_PROXY name 127.0.0.1:3128)
//!  host repo ◀──intake (quarantine, strict fsck, size cap, range)── the branch as a bundle
//! ```
//!
//! What the sandbox shows is [`sandbox::Sandbox`], built here from the
//! config ([`View`]) and the task ([`layout::Layout`]). flocks never runs git
//! in, or reads, what an agent can write: the helper does that inside the
//! same sandbox, over pipes (`helper::process::Process`), and the work comes
//! back as a bundle through `git::intake`.

pub(crate) mod layout;
pub(crate) mod sandbox;
mod view;
pub(crate) use view::View;
use view::helper_env;

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use git2::Oid;
use tokio::sync::OnceCell;

use self::layout::{BASE_REF, INNER_BASE, INNER_WORK, Layout};
use self::sandbox::{Env, Mount, Sandbox};
use super::helper::process::Process;
use super::helper::session::{self, CallError, Known, Session};
use super::{
    Backend, BoxFuture, FinishError, Finished, MarkError, PrepareError, PrepareJob, Running,
    SpawnError, Workspace,
};
use crate::agent::AgentSpec;
use crate::config::{Config, CredentialChoice, PoolConfig, SandboxNetwork};
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::git::intake;

/// How long one helper call may take.
const OP_LIMIT: Duration = Duration::from_secs(300);

/// How an attempt's workspace path reads in state and `status` (the host
/// path of its worktree, which flocks never opens: an agent wrote it).
pub(crate) const PATH_PREFIX: &str = "bwrap:";

/// Variables that name host places the sandbox hides (or that would send a
/// program looking for them): removed from what runs inside.
const UNSET: &[&str] = &[
    "TMPDIR",
    "SSH_AUTH_SOCK",
    "SSH_AGENT_PID",
    "XDG_RUNTIME_DIR",
    "DBUS_SESSION_BUS_ADDRESS",
];

/// Where flocks' proxy socket's directory is bound in a sandbox with
/// `network = "proxy"`.
const INNER_PROXY: &str = "/var/tmp/flocks/proxy";
/// Where the forwarder listens in such a sandbox: its network namespace is
/// fresh, so the address is free and known before the agent starts.
pub(crate) const INNER_PROXY_ADDR: &str = "127.0.0.1:3128";

/// `bwrap` on PATH.
pub(crate) fn find_bwrap() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bwrap"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether a sandbox (its own PID and network namespaces, no capabilities)
/// starts on this machine: `flocks init` writes `sandbox = "bwrap"` then.
pub(crate) fn probe() -> bool {
    let Some(bwrap) = find_bwrap() else {
        return false;
    };
    let s = Sandbox {
        bwrap,
        mounts: Vec::new(),
        network: SandboxNetwork::None,
        env: Env::default(),
        chdir: None,
        interactive: false,
    };
    let argv = s.argv([OsString::from("true")]);
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How to get bubblewrap, for the messages that need it.
pub(crate) const INSTALL: &str = "install bubblewrap (Debian and Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)";

/// Link a task's mirror to the base: `base.git` as its alternate, the base
/// tip as a ref it has. flocks' own constant text; the tip comes as `$1`.
const LINK_BASE: &str = r#"set -e
M="$FLOCKS_HELPER_ROOT/mirror.git"
printf '%s\n' "$2/objects" >"$M/objects/info/alternates"
git --git-dir="$M" update-ref "$3" "$1"
"#;

pub(crate) struct BwrapBackend {
    pool: String,
    repo_dir: PathBuf,
    config_dir: PathBuf,
    base: String,
    worktrees: Arc<Worktrees>,
    grace: Duration,
    bwrap: Option<PathBuf>,
    layout: Result<Layout, String>,
    view: Result<View, String>,
    /// The host repository's git identity, for the helper's git and the
    /// agent's (its private home has no git config).
    identity: Vec<(String, String)>,
    credential_default: bool,
    /// The base mirror brought up to date and a sandbox started: the base's
    /// tip, or why the pool cannot run agents.
    ready: OnceCell<Result<Oid, String>>,
    /// What each task's mirror is known to have.
    known: Mutex<HashMap<String, Arc<Known>>>,
    /// Tasks whose mirror was linked to the base in this process.
    linked: Mutex<HashSet<String>>,
    /// The proxy's unix socket, once an attempt asked for it
    /// ([`Backend::proxy_address`]): agents and setup commands then run
    /// behind a forwarder to it.
    proxy_socket: Mutex<Option<PathBuf>>,
}

impl BwrapBackend {
    pub(crate) fn new(
        config: &Config,
        pool: &PoolConfig,
        worktrees: Arc<Worktrees>,
    ) -> BwrapBackend {
        BwrapBackend {
            pool: pool.name.clone(),
            repo_dir: config.workspace.repo.clone(),
            config_dir: config.dir.clone(),
            base: config.workspace.base.clone(),
            worktrees,
            grace: config.kill_grace,
            bwrap: find_bwrap(),
            layout: Layout::for_config(config).map_err(|e| e.to_string()),
            view: View::new(config),
            identity: super::ssh::git_identity(&config.workspace.repo),
            credential_default: pool.credential == CredentialChoice::Default,
            ready: OnceCell::new(),
            known: Mutex::new(HashMap::new()),
            linked: Mutex::new(HashSet::new()),
            proxy_socket: Mutex::new(None),
        }
    }

    /// The parts every sandbox needs, or why there are none.
    fn parts(&self) -> Result<(&Path, &Layout, &View), String> {
        let bwrap = self
            .bwrap
            .as_deref()
            .ok_or_else(|| format!("bwrap is not on PATH: {INSTALL}"))?;
        let layout = self.layout.as_ref().map_err(Clone::clone)?;
        let view = self.view.as_ref().map_err(Clone::clone)?;
        Ok((bwrap, layout, view))
    }

    /// Once per process: the base mirror up to date and a probe sandbox
    /// started. The base's tip, or why the pool cannot run agents.
    async fn ready(&self) -> Result<Oid, String> {
        self.ready
            .get_or_init(|| async {
                let (bwrap, layout, view) = self.parts()?;
                let missing = view.missing_reads();
                if !missing.is_empty() {
                    let list: Vec<String> =
                        missing.iter().map(|p| p.display().to_string()).collect();
                    return Err(format!(
                        "[sandbox] read names what is not on this machine: {} (remove it, or install it there)",
                        list.join(", ")
                    ));
                }
                let (repo_dir, base, l) =
                    (self.repo_dir.clone(), self.base.clone(), layout.clone());
                let tip = tokio::task::spawn_blocking(move || -> Result<Oid, String> {
                    let repo = crate::git::open(&repo_dir).map_err(|e| e.to_string())?;
                    let tip =
                        crate::git::resolve_commit(&repo, &base).map_err(|e| e.to_string())?;
                    l.refresh_base(&repo_dir, tip).map_err(|e| e.to_string())?;
                    Ok(tip)
                })
                .await
                .map_err(|e| e.to_string())??;
                let probe = view.sandbox(bwrap, None).argv([OsString::from("true")]);
                let out = tokio::process::Command::new(&probe[0])
                    .args(&probe[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .output();
                match tokio::time::timeout(Duration::from_secs(30), out).await {
                    Ok(Ok(o)) if o.status.success() => Ok(tip),
                    Ok(Ok(o)) => Err(format!(
                        "bwrap cannot start a sandbox here: {}",
                        super::helper::process::last_words(&o.stderr)
                    )),
                    Ok(Err(e)) => Err(format!("cannot run {}: {e}", bwrap.display())),
                    Err(_) => Err("bwrap did not start a sandbox within 30s".into()),
                }
            })
            .await
            .clone()
    }

    /// The helper of `task`, in its sandbox.
    fn transport(&self, task: &str) -> Result<Process, String> {
        let (bwrap, layout, view) = self.parts()?;
        let mut s = view.sandbox(bwrap, Some((layout, task)));
        s.env = helper_env(view);
        Ok(Process {
            prefix: s.prefix(),
            env: Vec::new(),
            root: INNER_WORK.to_string(),
            limit: OP_LIMIT,
        })
    }

    fn known(&self, task: &str) -> Arc<Known> {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(task.to_string())
            .or_default()
            .clone()
    }

    fn failed(&self, why: impl std::fmt::Display) -> PrepareError {
        PrepareError::Failed(format!("pool {}: {why}", self.pool))
    }

    fn call_failed(&self, e: CallError) -> PrepareError {
        match e {
            // Sandboxes that stopped starting: the pool is unusable.
            CallError::Lost(m) => PrepareError::HostLost(format!("pool {}: {m}", self.pool)),
            e => self.failed(e),
        }
    }

    pub(crate) async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        let base_tip = self
            .ready()
            .await
            .map_err(|e| PrepareError::HostLost(format!("pool {}: {e}", self.pool)))?;
        let (_, layout, _) = self.parts().map_err(|e| self.failed(e))?;
        layout.ensure_task(&job.task).map_err(|e| self.failed(e))?;
        let transport = self.transport(&job.task).map_err(|e| self.failed(e))?;
        session::init(&transport, "")
            .await
            .map_err(|e| self.call_failed(e))?;
        self.link_base(&job.task, base_tip).await?;
        let known = self.known(&job.task);
        let session = Session {
            transport: &transport,
            repo_dir: &self.repo_dir,
            env: &self.identity,
            max_bytes: intake::DEFAULT_MAX_FETCH_MB << 20,
            known: &known,
        };
        // Work an interrupted attempt (flocks was killed) left in the
        // sandbox comes back first, through the intake.
        let note = if job.fresh {
            None
        } else {
            session
                .salvage(job, Some(self.worktrees.path_for(&job.task)), "its sandbox")
                .await
                .map_err(|e| self.call_failed(e))?
        };
        let (repo_dir, j) = (self.repo_dir.clone(), job.clone());
        let (start, created) = tokio::task::spawn_blocking(move || {
            super::ssh::local_start(&repo_dir, &j.branch, &j.base, j.fresh)
        })
        .await
        .map_err(|e| self.failed(e))?
        .map_err(|e| self.failed(e))?;
        let oid = Oid::from_str(&start).map_err(|e| self.failed(e))?;
        session
            .send_start(&job.task, oid)
            .await
            .map_err(|e| self.call_failed(e))?;
        let p = session
            .prepare(&job.task, &job.branch, oid)
            .await
            .map_err(|e| self.call_failed(e))?;
        let expected = format!("{INNER_WORK}/worktrees/{}", job.task);
        if p.worktree != expected {
            return Err(self.failed(format!(
                "the helper prepared {} instead of {expected}",
                p.worktree
            )));
        }
        Ok(Workspace {
            host_path: PathBuf::from(format!(
                "{PATH_PREFIX}{}",
                layout.host_worktree(&job.task).display()
            )),
            agent_cwd: p.worktree,
            origin: job.origin_for(&start, created),
            start_commit: start,
            created_branch: created,
            note,
            setup_mark: p.setup_mark,
        })
    }

    /// Once per task and process: the task's mirror borrows the base's
    /// objects (read-only) and names its tip, so that only what the base
    /// lacks travels in a start bundle.
    async fn link_base(&self, task: &str, tip: Oid) -> Result<(), PrepareError> {
        if self
            .linked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(task)
        {
            return Ok(());
        }
        let t = self.transport(task).map_err(|e| self.failed(e))?;
        let mut argv = t.prefix.clone();
        argv.extend(
            [
                "/bin/sh",
                "-c",
                LINK_BASE,
                "flocks-link",
                &tip.to_string(),
                INNER_BASE,
                BASE_REF,
            ]
            .map(OsString::from),
        );
        let out = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(OP_LIMIT, out).await {
            Ok(Ok(o)) if o.status.success() => {
                self.linked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(task.to_string());
                Ok(())
            }
            Ok(Ok(o)) => Err(self.failed(format!(
                "cannot link task {task}'s repository to the base: {}",
                super::helper::process::last_words(&o.stderr)
            ))),
            Ok(Err(e)) => Err(PrepareError::HostLost(format!(
                "pool {}: cannot start bwrap: {e}",
                self.pool
            ))),
            Err(_) => Err(self.failed("linking the base timed out")),
        }
    }

    /// The task a workspace of this backend belongs to.
    fn task_of(ws: &Workspace) -> Option<&str> {
        ws.agent_cwd
            .strip_prefix(INNER_WORK)?
            .strip_prefix("/worktrees/")
            .filter(|t| !t.contains('/'))
    }

    /// The agent (or a setup command) in the task's sandbox, under the
    /// supervisor: TERM, grace and KILL reach what runs inside; its PID
    /// namespace ends the rest with it.
    pub(crate) async fn spawn(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        let task = Self::task_of(ws)
            .ok_or_else(|| SpawnError::Start(format!("{} is not a sandbox's", ws.agent_cwd)))?;
        let program = super::local::resolve_program(&spec.program, &self.config_dir, &spec.env)?;
        let (bwrap, layout, view) = self
            .parts()
            .map_err(|e| SpawnError::Start(format!("pool {}: {e}", self.pool)))?;
        let mut s = view.sandbox(bwrap, Some((layout, task)));
        let program = view.show_program(&mut s, &program);
        s.chdir = Some(ws.agent_cwd.clone());
        let mut command = Vec::new();
        let socket = self
            .proxy_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(socket) = socket
            && view.network == SandboxNetwork::Proxy
        {
            command = self.forwarder(view, &mut s, &socket)?;
        }
        command.push(program.into_os_string());
        command.extend(spec.args.iter().map(OsString::from));
        let mut env = self.identity.clone();
        env.extend(spec.env);
        // The sandbox keeps flocks' environment (but `UNSET`).
        let inherited = crate::agent::spec::inherited_git_config_count(&spec.remove_env);
        crate::agent::spec::add_agent_git_config(&mut env, inherited);
        super::local::start_supervised(super::local::Supervised {
            argv: s.argv(command),
            cwd: PathBuf::from("/"),
            env,
            remove_env: spec.remove_env,
            prompt: spec.prompt,
            grace: self.grace,
            wrapped: true,
            quiet: false,
        })
    }

    /// `flocks __forward --listen 127.0.0.1:3128 --to <socket> --`, with
    /// flocks' binary shown in `s` and the socket's directory bound in
    /// (read-only: connecting needs no write to the directory).
    fn forwarder(
        &self,
        view: &View,
        s: &mut Sandbox,
        socket: &Path,
    ) -> Result<Vec<OsString>, SpawnError> {
        let no_socket = || {
            SpawnError::Start(format!(
                "pool {}: flocks' proxy socket {} has no directory and name",
                self.pool,
                socket.display()
            ))
        };
        let (dir, name) = socket
            .parent()
            .zip(socket.file_name())
            .ok_or_else(no_socket)?;
        let exe = std::env::current_exe().map_err(|e| {
            SpawnError::Start(format!(
                "pool {}: cannot find flocks' own binary to forward the proxy into the sandbox: {e}",
                self.pool
            ))
        })?;
        let exe = view.show_program(s, &exe);
        s.mounts.push(Mount::ReadOnly {
            src: dir.to_path_buf(),
            dest: INNER_PROXY.into(),
        });
        Ok(vec![
            exe.into_os_string(),
            crate::proxy::forward::SUBCOMMAND.into(),
            "--listen".into(),
            INNER_PROXY_ADDR.into(),
            "--to".into(),
            Path::new(INNER_PROXY).join(name).into_os_string(),
            "--".into(),
        ])
    }

    /// Where the agent of a sandbox reaches flocks' proxy: with `network =
    /// "proxy"`, the forwarder [`Self::spawn`] starts in its network
    /// namespace; with `"host"`, the proxy's own address. `"none"` has no
    /// way to it.
    fn proxy_address(&self, proxy: &crate::proxy::Endpoint) -> Result<String, SpawnError> {
        let view = self
            .view
            .as_ref()
            .map_err(|e| SpawnError::Start(format!("pool {}: {e}", self.pool)))?;
        match view.network {
            SandboxNetwork::Host => Ok(proxy.local_authority()),
            SandboxNetwork::Proxy => {
                *self.proxy_socket.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(proxy.unix.clone());
                Ok(INNER_PROXY_ADDR.to_string())
            }
            SandboxNetwork::None => Err(SpawnError::Start(format!(
                "pool {}: [sandbox] network = \"none\" leaves the agent no way to flocks' proxy; use \"proxy\"",
                self.pool
            ))),
        }
    }

    fn session_for<'a>(&'a self, transport: &'a Process, known: &'a Known) -> Session<'a> {
        Session {
            transport,
            repo_dir: &self.repo_dir,
            env: &self.identity,
            max_bytes: intake::DEFAULT_MAX_FETCH_MB << 20,
            known,
        }
    }

    pub(crate) async fn finish(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        let transport = self.transport(task).map_err(FinishError::Measure)?;
        let known = self.known(task);
        Ok(self
            .session_for(&transport, &known)
            .finish(
                task,
                branch,
                attempt,
                &ws.start_commit,
                &ws.origin,
                Some(self.worktrees.path_for(task)),
                "flocks: the attempt's work from its sandbox",
            )
            .await?)
    }

    /// The task succeeded: its worktree goes; its home and mirror stay
    /// (claude's sessions, the objects a retry would need) until `clean`.
    pub(crate) async fn release(&self, task: &str) {
        if let Ok(t) = self.transport(task) {
            let known = self.known(task);
            let _ = self.session_for(&t, &known).release(task).await;
        }
    }

    async fn copy_in(&self, task: &str, files: Arc<IncludeSet>) -> Result<Copied, IncludeError> {
        let transfer = |why: String| IncludeError::Transfer {
            host: format!("the sandbox of pool {}", self.pool),
            why,
        };
        let t = self.transport(task).map_err(transfer)?;
        let known = self.known(task);
        self.session_for(&t, &known)
            .include(task, files)
            .await
            .map_err(|e| transfer(e.to_string()))
    }

    async fn mark(&self, task: &str, hash: &str) -> Result<(), MarkError> {
        let t = self
            .transport(task)
            .map_err(|e| MarkError::Helper(CallError::Lost(format!("pool {}: {e}", self.pool))))?;
        let known = self.known(task);
        Ok(self.session_for(&t, &known).mark(task, hash).await?)
    }

    /// Before the run: the base mirror, a probe sandbox; notes on what the
    /// sandbox does not cover here.
    async fn connect_pool(&self, notes: &mut Vec<String>) -> Option<String> {
        if let Err(why) = self.ready().await {
            return Some(why);
        }
        if nix::unistd::geteuid().is_root() {
            notes.push(format!(
                "pool {}: flocks runs as root, so sandboxed agents are uid 0 (without capabilities): files only root may read stay readable in their read-only view of this machine; run flocks as a normal user for the sandbox to hide them",
                self.pool
            ));
        }
        if self.credential_default {
            notes.push(format!(
                "pool {}: sandboxed agents have a private home, so a claude login kept in yours is not theirs: give the pool a [[credentials]] entry (or an API key in the environment)",
                self.pool
            ));
        }
        None
    }

    /// `flocks shell`: the argv of an interactive shell in `task`'s sandbox,
    /// in its worktree (or its workspace when the worktree is gone), with a
    /// clean environment (the sandbox's home holds what the agent wrote).
    pub(crate) fn shell_argv(&self, task: &str) -> Result<Vec<OsString>, String> {
        let (bwrap, layout, view) = self.parts()?;
        if !layout.work(task).is_dir() {
            return Err(format!(
                "task {task} has no sandbox on this machine (none ran here, or `flocks clean` removed it)"
            ));
        }
        let mut s = view.sandbox(bwrap, Some((layout, task)));
        s.interactive = true;
        s.env = helper_env(view);
        s.env.set.retain(|(k, _)| k != super::helper::ROOT_VAR);
        for k in ["TERM", "COLORTERM"] {
            if let Ok(v) = std::env::var(k) {
                s.env.set.push((k.into(), v));
            }
        }
        s.env.set.extend(self.identity.iter().cloned());
        let wt = format!("{INNER_WORK}/worktrees/{task}");
        s.chdir = Some(if layout.host_worktree(task).is_dir() {
            wt
        } else {
            INNER_WORK.to_string()
        });
        // The home is the agent's: no rc file of it runs in a person's shell.
        let shell = std::env::var("SHELL").unwrap_or_default();
        let command: Vec<&str> = match Path::new(&shell).file_name().and_then(|n| n.to_str()) {
            Some("bash") => vec!["/bin/sh", "-c", "exec bash --noprofile --norc -i"],
            Some("zsh") => vec!["/bin/sh", "-c", "exec zsh -f -i"],
            _ => vec!["/bin/sh", "-i"],
        };
        s.env
            .set
            .push(("PS1".into(), format!("[{task} sandbox] $ ")));
        Ok(s.argv(command.into_iter().map(OsString::from)))
    }
}

impl BwrapBackend {
    /// `flocks shell` in `task`'s sandbox of pool `pool`.
    fn shell_in(&self, pool: &str, task: &str) -> crate::error::Result<super::house::Shell> {
        use crate::error::Error;
        if self.bwrap.is_none() {
            return Err(Error::CannotStart(format!(
                "task {task} ran in a bwrap sandbox (pool {pool}), and bwrap is not on PATH: {INSTALL}"
            )));
        }
        let argv = self.shell_argv(task).map_err(Error::Usage)?;
        Ok(super::house::Shell {
            argv,
            dir: None,
            note: Some(format!(
                "flocks: a shell in task {task}'s sandbox (pool {pool}): what its agent sees; `exit` leaves it"
            )),
            cannot_start: "cannot run bwrap".into(),
            start_error: Error::Other,
            end: super::house::ShellEnd::Status,
        })
    }
}

impl Backend for BwrapBackend {
    super::attempt_methods!(BwrapBackend);

    fn connect<'a>(&'a self, notes: &'a mut Vec<String>) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.connect_pool(notes))
    }

    fn down_reason(&self) -> Option<String> {
        self.ready.get().and_then(|r| r.as_ref().err().cloned())
    }

    // A setup command runs as the agent does: in the task's sandbox.
    super::setup_methods!(BwrapBackend, start = spawn, mark = mark);

    fn abandon<'a>(&'a self, _task: &'a str) -> BoxFuture<'a, ()> {
        // Nothing is held: the sandbox's directories stay for the next attempt.
        Box::pin(async {})
    }

    fn proxy_address<'a>(
        &'a self,
        _ws: &'a Workspace,
        _task: &'a str,
        proxy: &'a crate::proxy::Endpoint,
    ) -> BoxFuture<'a, Result<String, SpawnError>> {
        Box::pin(async move { BwrapBackend::proxy_address(self, proxy) })
    }

    /// A shell in the task's sandbox: the view its agent had (its
    /// repository, its home, no network unless the pool shares the
    /// host's), in its worktree. The environment is a clean one, and the
    /// home's rc files (the agent's) are not read.
    fn shell<'a>(
        &'a self,
        at: &'a super::house::At<'a>,
        task: &'a super::house::ShellTask<'a>,
    ) -> super::house::LocalFuture<'a, crate::error::Result<super::house::Shell>> {
        Box::pin(async move { self.shell_in(&at.pool.name, &task.record.id) })
    }
}
