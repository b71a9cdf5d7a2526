//! The SSH backend: agents run on remote hosts (an `ssh` pool's one host, or
//! an `exedev` pool's VMs), and the work moves over git, not a shared disk.
//!
//! ```text
//!  local repo --git push base/branch--> <remote_dir>/mirror.git (bare)
//!  flocks --ssh, header on stdin--> helper.sh prepare: worktrees/<task> on the branch
//!  flocks --ssh, header+prompt--> helper.sh run: agent (own session, tagged)
//!         <--stdout/stderr stream--  "kill"/"term"/"ping" lines -->; EOF = stop
//!  flocks --ssh--> helper.sh finish: commit leftovers
//!  local repo <--git fetch task branch-- mirror.git
//! ```

pub mod conn;
pub mod exedev;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::sync::OnceCell;

pub use conn::{SshError, Target, stop_masters};

use super::{
    Backend, BoxFuture, Chunk, Control, ExitInfo, FinishError, Finished, MarkError, PrepareError,
    PrepareJob, Running, SpawnError, Workspace,
};
use crate::agent::AgentSpec;
use crate::config::{BackendConfig, CommandSpec, Config, PoolConfig};
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};

/// Why the task branch in this repo could not follow the attempt on its
/// host: the messages name the branch or git's reason.
#[derive(Debug, thiserror::Error)]
pub enum BranchError {
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

/// One host of a pool, connected on first use.
pub struct Host {
    pub target: Target,
    /// The absolute remote dir once the helper is installed and setup ran.
    ready: OnceCell<Result<String, SshError>>,
    running: AtomicUsize,
    /// Serializes git ref and worktree changes in the host's mirror.
    admin: tokio::sync::Mutex<()>,
    /// The reverse forward to flocks' proxy on this host: the multiplexing
    /// master that holds it (pid) and the host's loopback port.
    forward: tokio::sync::Mutex<Option<(u32, u16)>>,
}

impl Host {
    pub fn new(target: Target) -> Host {
        Host {
            target,
            ready: OnceCell::new(),
            running: AtomicUsize::new(0),
            admin: tokio::sync::Mutex::new(()),
            forward: tokio::sync::Mutex::new(None),
        }
    }

    /// Install the helper, make the mirror, run `setup` once per host.
    pub async fn connect(&self, setup: &[CommandSpec]) -> Result<String, SshError> {
        self.ready
            .get_or_init(|| connect(&self.target, setup))
            .await
            .clone()
    }

    fn down(&self) -> Option<String> {
        match self.ready.get() {
            Some(Err(SshError::Unreachable(m))) => Some(m.clone()),
            // Not tried yet, connected, or up but its setup failed.
            None | Some(Ok(_)) | Some(Err(SshError::Failed(_))) => None,
        }
    }
}

/// What `setup` hashes to: the marker under `remote_dir` says it ran.
pub fn setup_hash(setup: &[CommandSpec]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in setup {
        h.update(serde_json::to_string(c).unwrap_or_default());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// Connect one host: helper, mirror, setup. Returns the absolute remote dir.
pub async fn connect(t: &Target, setup: &[CommandSpec]) -> Result<String, SshError> {
    t.install_helper().await?;
    let hash = setup_hash(setup);
    let out = t
        .helper(
            &format!("FLOCKS-HELPER 1\nop init\nsetup_hash {hash}\nend\n"),
            OP_LIMIT,
        )
        .await?;
    let root = field(&out, "root")
        .ok_or_else(|| SshError::Failed(format!("host {}: the helper said no root", t.host)))?;
    if !setup.is_empty() && field(&out, "setup").as_deref() != Some("done") {
        run_setup(t, setup, &hash).await?;
    }
    Ok(root)
}

/// Run the pool's `setup` commands (the user's own config) in `remote_dir`,
/// then record that they ran.
pub async fn run_setup(t: &Target, setup: &[CommandSpec], hash: &str) -> Result<(), SshError> {
    let d = t.remote_dir_word();
    for c in setup {
        let cmd = match c {
            CommandSpec::Shell(s) => format!("cd {d} && sh -c {}", conn::sh_quote(s)),
            CommandSpec::Argv(v) => format!(
                "cd {d} && {}",
                v.iter()
                    .map(|w| conn::sh_quote(w))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        t.output(&cmd, b"", Duration::from_secs(3600))
            .await
            .map_err(|e| match e {
                SshError::Failed(m) => SshError::Failed(format!("setup command `{c}` failed {m}")),
                other => other,
            })?;
    }
    t.output(
        &format!("printf '%s\\n' {hash} >{d}/setup.done"),
        b"",
        OP_LIMIT,
    )
    .await
    .map(|_| ())
}

/// The value of a `key value` line of helper output.
pub fn field(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_string))
}

pub struct SshBackend {
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
    /// Why connecting failed for every host.
    down: Mutex<Option<String>>,
}

impl SshBackend {
    pub fn new(config: &Config, pool: &PoolConfig, worktrees: Arc<Worktrees>) -> SshBackend {
        let (targets, setup, unusable) = match &pool.backend {
            BackendConfig::Ssh(s) => (vec![Target::from_config(s)], s.setup.clone(), None),
            BackendConfig::Exedev(x) => {
                let state = crate::state::StateStore::new(&config.state_dir())
                    .load()
                    .unwrap_or_default();
                let targets = exedev::targets(&state, &pool.name, x);
                let unusable = targets.is_empty().then(|| {
                    format!(
                        "exedev pool {} has no VMs: run `flocks up` first",
                        pool.name
                    )
                });
                (targets, x.setup.clone(), unusable)
            }
            _ => (Vec::new(), Vec::new(), Some("not an ssh pool".into())),
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
            down: Mutex::new(None),
        }
    }

    /// Agent slots: per host, times the hosts that are not known to be down.
    pub fn slots(&self) -> usize {
        self.per_host * self.hosts.iter().filter(|h| h.down().is_none()).count()
    }

    /// Connect every host now. Returns why the pool cannot be used, if so;
    /// hosts that fail are left out, with `notes` saying so.
    pub async fn connect_all(&self, notes: &mut Vec<String>) -> Option<String> {
        if let Some(u) = &self.unusable {
            return Some(u.clone());
        }
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

    pub fn down_reason(&self) -> Option<String> {
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

    pub async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
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
        // then push its tip; the attempt starts from a commit we have.
        let (repo_dir, j) = (self.repo_dir.clone(), job.clone());
        let (start, created) = tokio::task::spawn_blocking(move || {
            local_start(&repo_dir, &j.branch, &j.base, j.fresh)
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))?;
        let _guard = h.admin.lock().await;
        self.git(
            h,
            &root,
            &[
                "push",
                "--quiet",
                "--force",
                "--no-verify",
                &h.target.git_url(&root),
                &format!("{start}:refs/flocks/start/{}", job.task),
            ],
        )
        .await
        .map_err(|e| self.lost(h, e))?;
        let mut header = format!(
            "FLOCKS-HELPER 1\nop prepare\ntask {}\nbranch {}\nstart {start}\n",
            job.task, job.branch
        );
        push_env(&mut header, &self.identity_for(&root, &job.task));
        header.push_str("end\n");
        let out = h
            .target
            .helper(&header, OP_LIMIT)
            .await
            .map_err(|e| self.lost(h, e))?;
        let worktree = field(&out, "worktree").ok_or_else(|| {
            PrepareError::Failed(format!(
                "host {}: the helper made no worktree",
                h.target.host
            ))
        })?;
        Ok(Workspace {
            host_path: PathBuf::from(format!("{}:{worktree}", h.target.host)),
            agent_cwd: worktree,
            start_commit: start,
            created_branch: created,
            note,
            setup_mark: field(&out, "setup_mark").filter(|m| !m.is_empty()),
        })
    }

    /// Bring back what an interrupted attempt left in the task's remote
    /// worktree: its leftovers committed there, its branch fetched, and the
    /// local branch fast-forwarded to it. A remote branch that went another
    /// way is kept under `refs/flocks/backup/<task>/remote` instead.
    async fn salvage(
        &self,
        h: &Host,
        root: &str,
        job: &PrepareJob,
    ) -> Result<Option<String>, PrepareError> {
        let mut header = format!(
            "FLOCKS-HELPER 1\nop salvage\ntask {}\nbranch {}\n",
            job.task, job.branch
        );
        push_env(&mut header, &self.identity_for(root, &job.task));
        header.push_str("end\n");
        let out = h
            .target
            .helper(&header, OP_LIMIT)
            .await
            .map_err(|e| self.lost(h, e))?;
        let Some(head) = field(&out, "head").filter(|h| h != "none") else {
            return Ok(None);
        };
        let fetched = format!("refs/flocks/fetch/{}", job.task);
        {
            let _guard = h.admin.lock().await;
            self.git(
                h,
                root,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    &h.target.git_url(root),
                    &format!("+refs/heads/{}:{fetched}", job.branch),
                ],
            )
            .await
            .map_err(|e| self.lost(h, e))?;
        }
        let (repo_dir, local_wt, branch, task, host) = (
            self.repo_dir.clone(),
            self.worktrees.path_for(&job.task),
            job.branch.clone(),
            job.task.clone(),
            h.target.host.clone(),
        );
        tokio::task::spawn_blocking(move || {
            salvage_local(&repo_dir, &local_wt, &branch, &task, &fetched, &head, &host)
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))
    }

    /// The system git, in the local repo, talking to `h` through flocks' ssh.
    async fn git(&self, h: &Host, root: &str, args: &[&str]) -> Result<(), SshError> {
        let out = tokio::process::Command::new("git")
            .args(args)
            .current_dir(&self.repo_dir)
            .env("GIT_SSH_COMMAND", h.target.git_ssh_command()?)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| SshError::Failed(format!("cannot run git: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let why = conn::last_words(&String::from_utf8_lossy(&out.stderr));
        // Was it the connection? Ask ssh itself.
        match h.target.output("true", b"", Duration::from_secs(30)).await {
            Err(e @ SshError::Unreachable(_)) => Err(e),
            _ => Err(SshError::Failed(format!(
                "git {} with host {} ({root}) failed: {why}",
                args[0], h.target.host
            ))),
        }
    }

    fn identity_for(&self, root: &str, task: &str) -> Vec<(String, String)> {
        let mut env = self.identity.clone();
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

    pub async fn spawn(&self, ws: &Workspace, spec: AgentSpec) -> Result<Running, SpawnError> {
        let task = task_of(&spec);
        let h = self.host_of(&task).ok_or_else(|| {
            SpawnError::Start(format!(
                "pool {}: no host was prepared for {task}",
                self.pool
            ))
        })?;
        let r = self.spawn_on(h, ws, &task, spec).await;
        if r.is_err() {
            self.unassign(&task);
        }
        r
    }

    async fn spawn_on(
        &self,
        h: &Host,
        _ws: &Workspace,
        task: &str,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        let root = h.connect(&self.setup).await?;
        let grace_ds = (self.grace.as_millis() / 100).max(1);
        let mut header = format!(
            "FLOCKS-HELPER 1\nop run\ntask {task}\ntag {}\ngrace_ds {grace_ds}\nheartbeat {HEARTBEAT_SECS}\n",
            one_line(&spec.tag)?
        );
        for k in &spec.remove_env {
            header.push_str(&format!("unset {k}\n"));
        }
        let mut env = self.identity_for(&root, task);
        env.retain(|(k, _)| !spec.env.iter().any(|(s, _)| s == k));
        env.extend(spec.env.iter().cloned());
        for (k, v) in &env {
            header.push_str(&format!("env {k}={}\n", one_line(v)?));
        }
        header.push_str(&format!("argv {}\n", one_line(&spec.program)?));
        for a in &spec.args {
            header.push_str(&format!("argv {}\n", one_line(a)?));
        }
        header.push_str(&format!("prompt {}\n", spec.prompt.len()));
        let mut input = header.into_bytes();
        input.extend_from_slice(spec.prompt.as_bytes());

        let mut cmd = h.target.command(&h.target.helper_command())?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| SpawnError::Process {
            what: "ssh (is OpenSSH installed?)",
            reason: e.to_string(),
        })?;
        let pid = child.id();
        let mut stdin = child.stdin.take().ok_or(SpawnError::Process {
            what: "ssh",
            reason: "no stdin pipe".into(),
        })?;
        stdin.write_all(&input).await.map_err(|e| {
            SpawnError::Start(format!(
                "host {}: cannot send the agent's start: {e}",
                h.target.host
            ))
        })?;
        let _ = stdin.flush().await;
        let stdin = Arc::new(tokio::sync::Mutex::new(Some(stdin)));

        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let out = tokio::spawn(pump(child.stdout.take(), tx.clone(), true));
        let err = tokio::spawn(pump(child.stderr.take(), tx.clone(), false));
        let pinger = {
            let stdin = stdin.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PING_EVERY).await;
                    if !send_line(&stdin, "ping").await {
                        return;
                    }
                }
            })
        };
        let host = h.target.host.clone();
        let pool = self.pool.clone();
        let stdin_end = stdin.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            pinger.abort();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let _ = out.await;
            })
            .await;
            let tail = tokio::time::timeout(Duration::from_secs(5), err)
                .await
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_default();
            stdin_end.lock().await.take();
            let marker = tail
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("flocks-helper: exit rc="))
                .and_then(|c| c.trim().parse::<i32>().ok());
            let info = match (marker, status) {
                (Some(code), _) => ExitInfo {
                    code: Some(code),
                    lost: None,
                    violation: None,
                },
                (None, Ok(s)) if s.code() == Some(255) || s.code().is_none() => ExitInfo {
                    code: None,
                    lost: Some(format!(
                        "lost host {host} (pool {pool}): {}",
                        conn::last_words(&tail)
                    )),
                    violation: None,
                },
                (None, Ok(s)) => ExitInfo {
                    code: s.code(),
                    lost: None,
                    violation: None,
                },
                (None, Err(e)) => ExitInfo {
                    code: None,
                    lost: Some(format!("lost the ssh client for host {host}: {e}")),
                    violation: None,
                },
            };
            let _ = tx.send(Chunk::Exited(info)).await;
        });
        Ok(Running {
            output: rx,
            control: Control::Ssh(SshControl { stdin, pid }),
        })
    }

    pub async fn finish(
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
        let mut header = format!("FLOCKS-HELPER 1\nop finish\ntask {task}\nattempt {attempt}\n");
        push_env(&mut header, &self.identity_for(&root, task));
        header.push_str("end\n");
        let out = h.target.helper(&header, OP_LIMIT).await?;
        let leftovers = field(&out, "leftovers").as_deref() == Some("yes");
        let fetched = format!("refs/flocks/fetch/{task}");
        {
            let _guard = h.admin.lock().await;
            self.git(
                h,
                &root,
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--no-write-fetch-head",
                    &h.target.git_url(&root),
                    &format!("+refs/heads/{branch}:{fetched}"),
                ],
            )
            .await?;
        }
        let repo_dir = self.repo_dir.clone();
        let local_wt = self.worktrees.path_for(task);
        let (branch, start) = (branch.to_string(), ws.start_commit.clone());
        tokio::task::spawn_blocking(move || {
            land_fetched(&repo_dir, &local_wt, &branch, &fetched, &start, leftovers)
        })
        .await
        .map_err(|e| FinishError::Measure(e.to_string()))?
        .map_err(FinishError::Branch)
    }

    /// Send `.worktreeinclude`'s files to the task's remote worktree: a tar
    /// stream on the helper's stdin, over the pool's ssh connection.
    pub async fn copy_in(
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
        let (set, t) = (files.clone(), task.to_string());
        let input = tokio::task::spawn_blocking(move || include_archive(&t, &set))
            .await
            .map_err(|e| transfer(e.to_string()))??;
        h.target
            .output_file(&h.target.helper_command(), input, OP_LIMIT)
            .await
            .map_err(|e| transfer(e.to_string()))?;
        Ok(Copied {
            written: files.files.iter().map(|f| f.rel.clone()).collect(),
            ..Copied::default()
        })
    }

    /// Start a setup command on the task's host, as its agent starts. The
    /// helper's header is line by line, so a shell script that spans lines
    /// goes on the command's stdin instead, and runs with /dev/null as its own.
    pub async fn start_setup(
        &self,
        ws: &Workspace,
        mut spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        if spec.args.iter().any(|a| a.contains('\n'))
            && spec.args.len() == 2
            && spec.args[0] == "-c"
        {
            spec.prompt = spec.args.pop().unwrap_or_default();
            spec.args = vec![
                "-c".into(),
                "script=$(cat) && exec sh -c \"$script\" sh </dev/null".into(),
            ];
        }
        self.spawn(ws, spec).await
    }

    /// Record the completed setup in the task's remote worktree.
    pub async fn mark_setup(&self, task: &str, hash: &str) -> Result<(), SshError> {
        let h = self.host_of(task).ok_or_else(|| {
            SshError::Failed(format!(
                "pool {}: no host was prepared for {task}",
                self.pool
            ))
        })?;
        let header = format!("FLOCKS-HELPER 1\nop mark\ntask {task}\nsetup_hash {hash}\nend\n");
        h.target.helper(&header, OP_LIMIT).await.map(|_| ())
    }

    pub async fn release(&self, task: &str) {
        let Some(h) = self.host_of(task).or_else(|| self.hosts.first()) else {
            return;
        };
        let _guard = h.admin.lock().await;
        let header = format!("FLOCKS-HELPER 1\nop release\ntask {task}\nend\n");
        let _ = h.target.helper(&header, OP_LIMIT).await;
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

    super::attempt_methods!(SshBackend);

    fn copy_in<'a>(
        &'a self,
        _ws: &'a Workspace,
        task: &'a str,
        files: Arc<IncludeSet>,
    ) -> BoxFuture<'a, Result<Copied, IncludeError>> {
        Box::pin(SshBackend::copy_in(self, task, files))
    }

    fn start_setup<'a>(
        &'a self,
        ws: &'a Workspace,
        spec: AgentSpec,
    ) -> BoxFuture<'a, Result<Running, SpawnError>> {
        Box::pin(SshBackend::start_setup(self, ws, spec))
    }

    fn mark_setup<'a>(
        &'a self,
        _ws: &'a Workspace,
        task: &'a str,
        hash: &'a str,
    ) -> BoxFuture<'a, Result<(), MarkError>> {
        Box::pin(async move { Ok(SshBackend::mark_setup(self, task, hash).await?) })
    }

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

/// The helper's `include` input: its header, then `.worktreeinclude`'s
/// files as a tar stream (each directory above a file with its mode, then
/// the file with its mode; plain relative paths, extracted in the
/// worktree). Written to an unnamed temporary file, so that large files
/// stream from the disk to ssh instead of through memory.
fn include_archive(task: &str, set: &IncludeSet) -> Result<std::fs::File, IncludeError> {
    use std::io::{Seek, Write};
    let io = |what: &std::path::Path, e: std::io::Error| IncludeError::Transfer {
        host: String::new(),
        why: format!("{}: {e}", what.display()),
    };
    let tmp = std::env::temp_dir();
    let mut file = unnamed_file(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(format!("FLOCKS-HELPER 1\nop include\ntask {task}\nend\n").as_bytes())
        .map_err(|e| io(&tmp, e))?;
    let mut b = tar::Builder::new(file);
    let mut dirs = std::collections::BTreeSet::new();
    for f in &set.files {
        let mut d = PathBuf::new();
        if let Some(parent) = f.rel.parent() {
            for (i, c) in parent.iter().enumerate() {
                d.push(c);
                if dirs.insert(d.clone()) {
                    let mut h = tar::Header::new_ustar();
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(f.dir_modes.get(i).copied().unwrap_or(0o755));
                    h.set_size(0);
                    h.set_mtime(0);
                    b.append_data(&mut h, &d, std::io::empty())
                        .map_err(|e| io(&d, e))?;
                }
            }
        }
        let src = set.open(f)?;
        let len = src.metadata().map_err(|e| io(&f.rel, e))?.len();
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(f.mode);
        h.set_size(len);
        h.set_mtime(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        );
        // Exactly `len` bytes, as the header says, should the file change meanwhile.
        let body = std::io::Read::take(
            std::io::Read::chain(std::io::Read::take(src, len), std::io::repeat(0)),
            len,
        );
        b.append_data(&mut h, &f.rel, body)
            .map_err(|e| io(&f.rel, e))?;
    }
    let mut file = b.into_inner().map_err(|e| io(&tmp, e))?;
    file.rewind().map_err(|e| io(&tmp, e))?;
    Ok(file)
}

/// A new file in `dir` that no name leads to (removed as soon as made).
fn unnamed_file(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    let (fd, path) = nix::unistd::mkstemp(&dir.join("flocks-include-XXXXXX"))?;
    let _ = std::fs::remove_file(&path);
    Ok(std::fs::File::from(fd))
}

/// Stops a remote agent through its helper's control channel.
pub struct SshControl {
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    pid: Option<u32>,
}

impl SshControl {
    /// TERM to the remote tree, grace, KILL (the helper applies the policy).
    pub async fn terminate(&self) {
        if !send_line(&self.stdin, "term").await {
            self.kill_client();
        }
    }

    /// KILL the remote tree now.
    pub async fn kill(&self) {
        if !send_line(&self.stdin, "kill").await {
            self.kill_client();
        }
    }

    /// The channel is gone: end our ssh client (the helper sees EOF and
    /// stops the tree if it still can).
    fn kill_client(&self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn send_line(stdin: &tokio::sync::Mutex<Option<ChildStdin>>, line: &str) -> bool {
    let mut g = stdin.lock().await;
    let Some(s) = g.as_mut() else { return false };
    let ok = s.write_all(format!("{line}\n").as_bytes()).await.is_ok() && s.flush().await.is_ok();
    if !ok {
        g.take();
    }
    ok
}

/// Forward output; the stderr pump returns the last few KB of stderr (where
/// the helper's exit line is).
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    stdout: bool,
) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let Some(mut reader) = reader else {
        return String::new();
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let data = buf[..n].to_vec();
                if !stdout {
                    tail.extend_from_slice(&data);
                    if tail.len() > 8192 {
                        tail.drain(..tail.len() - 4096);
                    }
                }
                let chunk = if stdout {
                    Chunk::Stdout(data)
                } else {
                    Chunk::Stderr(data)
                };
                let _ = tx.send(chunk).await;
            }
        }
    }
    String::from_utf8_lossy(&tail).into_owned()
}

/// Header values are lines: a newline in one would forge the next line.
fn one_line(v: &str) -> Result<&str, SpawnError> {
    if v.contains('\n') || v.contains('\0') {
        Err(SpawnError::Unsendable)
    } else {
        Ok(v)
    }
}

fn push_env(header: &mut String, env: &[(String, String)]) {
    for (k, v) in env {
        if !v.contains('\n') {
            header.push_str(&format!("env {k}={v}\n"));
        }
    }
}

fn task_of(spec: &AgentSpec) -> String {
    spec.env
        .iter()
        .find(|(k, _)| k == "FLOCKS_TASK")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// The local repo's git identity, as the environment git reads.
fn git_identity(repo_dir: &std::path::Path) -> Vec<(String, String)> {
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

/// Where the attempt starts, locally: the branch tip, or the base for a new
/// (or `fresh`) branch, which is created here. Returns (commit, created).
fn local_start(
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

/// The local half of `salvage`: fast-forward the task branch to the fetched
/// remote tip, or keep that tip aside when the branches went different ways.
fn salvage_local(
    repo_dir: &std::path::Path,
    local_wt: &std::path::Path,
    branch: &str,
    task: &str,
    fetched: &str,
    head: &str,
    host: &str,
) -> Result<Option<String>, BranchError> {
    let repo = crate::git::open(repo_dir)?;
    let remote = take_fetched(&repo, fetched)?;
    let local = crate::git::branch_tip(&repo, branch)?;
    let note = match local {
        Some(l) if l == remote || repo.graph_descendant_of(l, remote).unwrap_or(false) => {
            return Ok(None);
        }
        Some(l) if !repo.graph_descendant_of(remote, l).unwrap_or(false) => {
            let keep = format!("refs/flocks/backup/{task}/remote");
            repo.reference(
                &keep,
                remote,
                true,
                "flocks: remote work of an interrupted attempt",
            )?;
            format!(
                "task {task}: the work an interrupted attempt left on {host} ({}) went another way than {branch}; kept as {keep}",
                &head[..head.len().min(10)]
            )
        }
        _ => {
            let n = match local {
                Some(l) => crate::git::commits_ahead(&repo, remote, l)?,
                None => 0,
            };
            move_branch(
                &repo,
                local_wt,
                branch,
                remote,
                "flocks: work an interrupted attempt left on its host",
            )?;
            format!("task {task}: recovered {n} commit(s) an interrupted attempt left on {host}")
        }
    };
    Ok(Some(note))
}

/// The commit a temporary fetch ref points at; the ref is removed.
fn take_fetched(repo: &git2::Repository, fetched: &str) -> Result<git2::Oid, git2::Error> {
    let oid = repo
        .find_reference(fetched)
        .and_then(|r| r.peel_to_commit())?
        .id();
    if let Ok(mut r) = repo.find_reference(fetched) {
        let _ = r.delete();
    }
    Ok(oid)
}

/// Point the local task branch at `tip`. A local worktree of an earlier
/// attempt that has the branch checked out is detached first, so that moving
/// the branch does not leave it looking changed.
fn move_branch(
    repo: &git2::Repository,
    local_wt: &std::path::Path,
    branch: &str,
    tip: git2::Oid,
    why: &str,
) -> Result<(), git2::Error> {
    let refname = format!("refs/heads/{branch}");
    if local_wt.exists()
        && let Ok(wt) = git2::Repository::open(local_wt)
        && let Ok(head) = wt.head()
        && head.name().ok() == Some(refname.as_str())
        && let Some(oid) = head.target()
    {
        let _ = wt.set_head_detached(oid);
    }
    repo.reference(&refname, tip, true, why).map(|_| ())
}

/// Move the fetched tip onto the local task branch and measure the attempt.
fn land_fetched(
    repo_dir: &std::path::Path,
    local_wt: &std::path::Path,
    branch: &str,
    fetched: &str,
    start: &str,
    leftovers: bool,
) -> Result<Finished, BranchError> {
    let repo = crate::git::open(repo_dir)?;
    let tip = take_fetched(&repo, fetched)?;
    move_branch(
        &repo,
        local_wt,
        branch,
        tip,
        "flocks: fetch the attempt from its host",
    )?;
    let start = git2::Oid::from_str(start)?;
    let new_commits = crate::git::commits_ahead(&repo, tip, start)?;
    Ok(Finished {
        tip: tip.to_string(),
        leftovers_committed: leftovers,
        new_commits,
        guard_violation: None,
    })
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
