//! The local backend: agents run on this machine, in the task's worktree,
//! under a per-attempt supervisor process (see `supervisor.rs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::{
    Backend, BoxFuture, Chunk, Control, ExitInfo, FinishError, Finished, MarkError, PrepareError,
    PrepareJob, Running, SpawnError, Workspace,
};
use crate::agent::AgentSpec;
use crate::config::Config;
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};

pub(crate) struct LocalBackend {
    worktrees: Arc<Worktrees>,
    repo_dir: PathBuf,
    config_dir: PathBuf,
    grace: Duration,
}

pub(crate) struct LocalControl {
    supervisor: i32,
}

impl LocalControl {
    pub(crate) fn terminate(&self) {
        let _ = kill(Pid::from_raw(self.supervisor), Signal::SIGTERM);
    }

    pub(crate) fn kill(&self) {
        let _ = kill(Pid::from_raw(self.supervisor), Signal::SIGUSR1);
    }
}

impl LocalBackend {
    pub(crate) fn new(config: &Config, worktrees: Arc<Worktrees>) -> Self {
        LocalBackend {
            worktrees,
            repo_dir: config.workspace.repo.clone(),
            config_dir: config.dir.clone(),
            grace: config.kill_grace,
        }
    }

    pub(crate) async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        let wts = self.worktrees.clone();
        let j = job.clone();
        let (p, setup_mark) = tokio::task::spawn_blocking(move || {
            let p = wts.prepare(&j.task, &j.branch, &j.base, j.fresh)?;
            Ok::<_, crate::error::Error>((p, wts.setup_mark(&j.task)))
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))?;
        Ok(Workspace {
            agent_cwd: p.path.display().to_string(),
            host_path: p.path,
            start_commit: p.start_commit.to_string(),
            origin: job.origin_for(&p.start_commit.to_string(), p.created_branch),
            created_branch: p.created_branch,
            note: p.note,
            setup_mark,
        })
    }

    pub(crate) async fn spawn(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        let program = resolve_program(&spec.program, &self.config_dir, &spec.env)?;
        let mut argv = vec![program.into_os_string()];
        argv.extend(spec.args.iter().map(OsString::from));
        let mut env = spec.env;
        let inherited = crate::agent::spec::inherited_git_config_count(&spec.remove_env);
        crate::agent::spec::add_agent_git_config(&mut env, inherited);
        start_supervised(Supervised {
            argv,
            cwd: ws.host_path.clone(),
            env,
            remove_env: spec.remove_env,
            prompt: spec.prompt,
            grace: self.grace,
            wrapped: false,
            quiet: false,
        })
    }

    pub(crate) async fn finish(
        &self,
        ws: &Workspace,
        _task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        super::finish_host_worktree(self.repo_dir.clone(), ws, branch, attempt).await
    }

    pub(crate) async fn release(&self, task: &str) {
        let wts = self.worktrees.clone();
        let task = task.to_string();
        let _ = tokio::task::spawn_blocking(move || wts.recycle(&task)).await;
    }
}

/// A command to run on this machine under a per-attempt supervisor.
pub(crate) struct Supervised {
    /// Program (a path) and arguments.
    pub argv: Vec<OsString>,
    /// Where it starts.
    pub cwd: PathBuf,
    /// Set on top of flocks' own environment.
    pub env: Vec<(String, String)>,
    /// Removed from flocks' own environment first.
    pub remove_env: Vec<String>,
    /// Its stdin.
    pub prompt: String,
    /// TERM, then KILL after this long.
    pub grace: Duration,
    /// The command is a sandbox (`bwrap ... --`): the supervisor's TERM
    /// goes to what runs in it (`__supervise --wrapped`).
    pub wrapped: bool,
    /// The supervisor does not say which containment it uses (the output
    /// is the user's: validation).
    pub quiet: bool,
}

/// Start `s` under `flocks __supervise`: its output as chunks, its end as
/// [`Chunk::Exited`], stopped through the supervisor.
pub(crate) fn start_supervised(s: Supervised) -> Result<Running, SpawnError> {
    let supervisor = crate::supervisor::exe()?;
    let mut cmd = Command::new(supervisor);
    cmd.arg(crate::supervisor::SUBCOMMAND)
        .arg("--parent")
        .arg(std::process::id().to_string())
        .arg("--grace-ms")
        .arg(s.grace.as_millis().to_string());
    if s.wrapped {
        cmd.arg("--wrapped");
    }
    if s.quiet {
        cmd.arg("--quiet");
    }
    cmd.arg("--")
        .args(&s.argv)
        .current_dir(&s.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the terminal's Ctrl-C goes to flocks only.
        .process_group(0);
    for k in &s.remove_env {
        cmd.env_remove(k);
    }
    cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
    let failed = |reason: String| SpawnError::Process {
        what: "the flocks supervisor",
        reason,
    };
    let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
    let pid = child
        .id()
        .ok_or_else(|| failed("it exited at once".into()))? as i32;

    let (tx, rx) = mpsc::channel(256);
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| failed("no stdin pipe".into()))?;
    let prompt = s.prompt;
    tokio::spawn(async move {
        // An agent that exits without reading its prompt closes the pipe: fine.
        let _ = stdin.write_all(prompt.as_bytes()).await;
        let _ = stdin.shutdown().await;
    });
    let out = tokio::spawn(pump(child.stdout.take(), tx.clone(), true));
    let err = tokio::spawn(pump(child.stderr.take(), tx.clone(), false));
    tokio::spawn(async move {
        let status = child.wait().await;
        // The supervisor stops the agent's leftovers before it exits, so
        // the pipes close; do not wait forever for a pipe held elsewhere.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = out.await;
            let _ = err.await;
        })
        .await;
        let info = match status {
            Ok(s) => ExitInfo {
                code: crate::supervisor::exit_code(s),
                lost: None,
                violation: None,
            },
            Err(e) => ExitInfo {
                code: None,
                lost: Some(format!("lost the supervisor: {e}")),
                violation: None,
            },
        };
        let _ = tx.send(Chunk::Exited(info)).await;
    });
    Ok(Running {
        output: rx,
        control: Control::Local(LocalControl { supervisor: pid }),
    })
}

async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, tx: mpsc::Sender<Chunk>, stdout: bool) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let data = buf[..n].to_vec();
                let chunk = if stdout {
                    Chunk::Stdout(data)
                } else {
                    Chunk::Stderr(data)
                };
                if tx.send(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
}

impl Backend for LocalBackend {
    super::attempt_methods!(LocalBackend);

    fn copy_in<'a>(
        &'a self,
        ws: &'a Workspace,
        _task: &'a str,
        files: Arc<IncludeSet>,
    ) -> BoxFuture<'a, Result<Copied, IncludeError>> {
        Box::pin(super::copy_into_host(ws, files))
    }

    /// A setup command runs as the agent does: under the supervisor, here.
    fn start_setup<'a>(
        &'a self,
        ws: &'a Workspace,
        spec: AgentSpec,
    ) -> BoxFuture<'a, Result<Running, SpawnError>> {
        Box::pin(LocalBackend::spawn(self, ws, spec))
    }

    fn mark_setup<'a>(
        &'a self,
        _ws: &'a Workspace,
        task: &'a str,
        hash: &'a str,
    ) -> BoxFuture<'a, Result<(), MarkError>> {
        Box::pin(super::mark_host_setup(&self.worktrees, task, hash))
    }

    fn abandon<'a>(&'a self, _task: &'a str) -> BoxFuture<'a, ()> {
        // Nothing is held: the worktree stays for the next attempt.
        Box::pin(async {})
    }

    fn shell<'a>(
        &'a self,
        at: &'a super::house::At<'a>,
        task: &'a super::house::ShellTask<'a>,
    ) -> super::house::LocalFuture<'a, crate::error::Result<super::house::Shell>> {
        Box::pin(async move { super::house::local_shell(at.config, task.record) })
    }
}

/// `[agent] command` on this machine: a path (relative to flocks.toml's
/// directory) or a name on the agent's PATH.
pub(crate) fn resolve_program(
    program: &str,
    config_dir: &Path,
    env: &[(String, String)],
) -> Result<PathBuf, super::ProgramError> {
    if program.contains('/') {
        let p = crate::config::resolve_path(config_dir, Path::new(program));
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(super::ProgramError::NotExecutable(p))
        };
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    Err(super::ProgramError::NotFound(program.to_string()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
