//! `[validate] pool`: the validate commands run inside a docker pool's
//! container, at the land worktree's path there (it lives under the repo,
//! which the container mounts), so that the code agents wrote (build
//! scripts, tests) runs where the agents ran and not on the host.
//!
//! Each command starts as an agent does (`docker::start`): under the
//! per-exec reaper, which every descendant reparents to whatever it does
//! (setsid, double forks, removing its `FLOCKS_ATTEMPT=<project>:validate:<n>`
//! tag). When the command exits, the reaper stops what it left running; on a
//! timeout or Ctrl-C flocks tells it TERM over its stdin (TERM,
//! `kill_grace_secs`, KILL); when flocks dies, that stream ends and the
//! reaper stops the tree. The one stop-escalation loop (`crate::watch`)
//! watches each command, as on the host. A tag sweep follows each command. A container
//! without perl gets the `sh` wrapper and the tag alone, and validation says
//! so. The host `.git` guard watches the repo while the commands run, as it
//! does for agents: what they plant there is undone and fails validation.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::validate::{Out, Run, Site, Validation, block_on, each_command, emit};
use crate::backend::docker::{self, DockerControl, Target, scripts};
use crate::backend::{Chunk, Control, ExitInfo, Running};
use crate::config::{CommandSpec, Config, DockerConfig, PoolConfig, WorkspaceMode};
use crate::error::{Error, Result};
use crate::guard::{Guard, Guards};
use crate::watch::StopLevel;

/// The docker pool that validates.
pub(super) struct Place<'a> {
    pub config: &'a Config,
    pub pool: &'a PoolConfig,
    pub docker: &'a DockerConfig,
    /// The host `.git` guards: the run's (judging) or the land's own.
    pub guards: &'a Guards,
}

/// Validate `commit` (checked out in `r.dir` on the host) in the pool's
/// container: in mount mode at `r.dir`'s path there, in clone mode in a
/// worktree of the container's own clone, the commit's objects sent in.
pub(super) fn run(
    r: &Run,
    out: &Out,
    place: &Place,
    commit: git2::Oid,
    stop: &mut watch::Receiver<StopLevel>,
) -> Result<Validation> {
    block_on(run_async(r, out, place, commit, stop))?
}

async fn run_async(
    r: &Run<'_>,
    out: &Out,
    place: &Place<'_>,
    commit: git2::Oid,
    stop: &mut watch::Receiver<StopLevel>,
) -> Result<Validation> {
    let mut site = Container::open(r, out, place, commit).await?;
    let t = &site.t;
    emit(
        out,
        r.echo,
        format!(
            "[flocks] validating in docker container `{}` (pool `{}`) at {}\n",
            t.name, place.pool.name, site.cwd
        )
        .as_bytes(),
    );
    if !site.reaper {
        let note = docker::no_reaper_note(&t.name, "validate commands");
        emit(out, r.echo, format!("[flocks] {note}\n").as_bytes());
    }
    each_command(r, out, &mut site, stop).await
}

/// Validation cannot run in the pool: why.
fn cannot(pool: &str, why: impl std::fmt::Display) -> Error {
    Error::CannotStart(format!(
        "cannot validate in docker pool `{pool}` ([validate] pool): {why}"
    ))
}

/// The pool's container, where each command starts as an agent does; the
/// host `.git` guard watches each one when the container reaches the repo.
struct Container<'r> {
    r: &'r Run<'r>,
    pool: String,
    client: Docker,
    t: Target,
    reaper: bool,
    /// Where the commands run in the container.
    cwd: String,
    /// The project's key, in each command's tag.
    key: String,
    guard: Option<Arc<Guard>>,
    /// The running command's tag and guard ticket.
    tag: String,
    ticket: Option<u64>,
    out: Out,
}

impl<'r> Container<'r> {
    /// Find the pool's container and where in it the commit is checked out.
    async fn open(r: &'r Run<'r>, out: &Out, place: &Place<'_>, commit: git2::Oid) -> Result<Self> {
        let pool = &place.pool.name;
        let (client, t) = docker::find_pool_target(place.config, place.pool, place.docker)
            .await
            .map_err(|why| cannot(pool, why))?;
        let repo_dir = place
            .config
            .workspace
            .repo
            .canonicalize()
            .unwrap_or_else(|_| place.config.workspace.repo.clone());
        let reaper = docker::probe_reaper(&client, &t).await;
        let cwd = workdir(r, place, &client, &t, reaper, &repo_dir, commit).await?;
        let git_dir = crate::git::open(&repo_dir)
            .map(|repo| repo.commondir().to_path_buf())
            .unwrap_or_else(|_| repo_dir.join(".git"));
        // The guard watches the host repo wherever the container can reach it.
        let guard = t.repo.is_some().then(|| place.guards.for_repo(&git_dir));
        Ok(Container {
            r,
            pool: pool.clone(),
            client,
            t,
            reaper,
            cwd,
            key: crate::paths::key_of(&place.config.state_dir()),
            guard,
            tag: String::new(),
            ticket: None,
            out: out.clone(),
        })
    }

    /// The guard's check of the command that ended: what it changed.
    async fn end_guard(&mut self) -> Option<String> {
        match (self.guard.clone(), self.ticket.take()) {
            (Some(g), Some(ticket)) => tokio::task::spawn_blocking(move || g.end(ticket))
                .await
                .unwrap_or(None),
            _ => None,
        }
    }

    fn say(&self, line: &str) {
        emit(
            &self.out,
            self.r.echo,
            format!("[flocks] {line}\n").as_bytes(),
        );
    }

    /// Start `spec` here under the reaper when there is one: its output as
    /// chunks, its exit code (or why it was lost) as the last one, stopped
    /// through the reaper, else by its tag.
    async fn start_in(
        &self,
        spec: &CommandSpec,
    ) -> std::result::Result<Running, docker::ExecError> {
        let argv = spec.argv();
        let Some((program, args)) = argv.split_first() else {
            return Err(docker::ExecError::Engine("the command is empty".into()));
        };
        let x = docker::Exec {
            program: program.clone(),
            args,
            env: command_env(self.r, &self.tag),
            cwd: &self.cwd,
            stdin: Vec::new(),
            grace: self.r.grace,
        };
        let (client, t) = (&self.client, &self.t);
        let docker::Started {
            exec,
            output,
            input,
            writer,
        } = docker::start(client, t, self.reaper, x).await?;
        let (tx, rx) = mpsc::channel(256);
        let control = DockerControl::of(
            client,
            t,
            &self.tag,
            self.r.grace,
            tx.clone(),
            input.clone(),
        );
        let (client, t) = (client.clone(), t.clone());
        tokio::spawn(async move {
            let lost = pump(output, &tx, &t).await;
            writer.abort();
            if let Some(held) = &input
                && let Some(mut w) = held.lock().await.take()
            {
                let _ = w.shutdown().await;
            }
            let info = match lost {
                Some(why) => ExitInfo {
                    lost: Some(why),
                    ..ExitInfo::default()
                },
                None => exit_of(&client, &exec, &t).await,
            };
            let _ = tx.send(Chunk::Exited(info)).await;
        });
        Ok(Running {
            output: rx,
            control: Control::Docker(control),
        })
    }
}

/// Where in the container the commit is checked out: in clone mode a
/// worktree of the container's clone, in mount mode the land worktree's
/// path through the mount.
async fn workdir(
    r: &Run<'_>,
    place: &Place<'_>,
    client: &Docker,
    t: &Target,
    reaper: bool,
    repo_dir: &Path,
    commit: git2::Oid,
) -> Result<String> {
    let host_dir = r.dir.canonicalize().unwrap_or_else(|_| r.dir.to_path_buf());
    match place.docker.workspace {
        WorkspaceMode::Clone => {
            let name = format!(
                "@{}",
                host_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
                    .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
                    .unwrap_or_else(|| "land".into())
            );
            docker::checkout_commit(place.config, place.docker, client, t, reaper, &name, commit)
                .await
                .map_err(|why| cannot(&place.pool.name, why))
        }
        WorkspaceMode::Mount => {
            let rel = host_dir.strip_prefix(repo_dir).map_err(|_| {
                Error::Usage(format!(
                    "the land worktree {} is not inside the repo {} that docker container `{}` mounts, \
                     so [validate] pool cannot run there",
                    host_dir.display(),
                    repo_dir.display(),
                    t.name
                ))
            })?;
            let mount = t.repo.as_deref().unwrap_or_default();
            // This runtime runs nothing else: blocking here is fine.
            docker::give_to_repo_owner(place.config, &host_dir);
            Ok(Path::new(mount).join(rel).display().to_string())
        }
    }
}

impl Site for Container<'_> {
    async fn start(
        &mut self,
        n: usize,
        spec: &CommandSpec,
    ) -> Result<std::result::Result<Running, String>> {
        self.tag = format!("{}:validate:{}-{n}", self.key, std::process::id());
        self.ticket = self.guard.as_ref().map(|g| g.begin());
        match self.start_in(spec).await {
            Ok(running) => Ok(Ok(running)),
            Err(why) => {
                self.end_guard().await;
                Err(cannot(&self.pool, why))
            }
        }
    }

    /// The tag sweep (all there is without the reaper, a second look with
    /// it), then the guard's check.
    async fn ended(&mut self, _n: usize, stopped: bool) -> Option<String> {
        let grace = if stopped {
            self.r.grace
        } else {
            self.r.grace.min(Duration::from_secs(2))
        };
        match docker::stop_tagged(&self.client, &self.t, &self.tag, grace).await {
            Ok(report) if scripts::stopped_any(&report) && !stopped => self.say(&format!(
                "the command exited; stopped what it left running ({})",
                report.trim()
            )),
            Ok(_) => {}
            Err(why) => self.say(&format!("stopping the command: {why}")),
        }
        self.end_guard().await
    }

    fn lost(&self, why: String) -> Result<String> {
        Err(cannot(&self.pool, why))
    }
}

/// A command's environment in the container: its tag, the credential
/// variables to remove, git's trust in the host path.
fn command_env(r: &Run, tag: &str) -> Vec<String> {
    let unset: Vec<&str> = r
        .scrub
        .iter()
        .map(String::as_str)
        .filter(|k| scripts::is_var_name(k))
        .collect();
    vec![
        format!("{}={tag}", crate::proc::TAG_VAR),
        format!("FLOCKS_UNSET={}", unset.join(" ")),
        // git checks ownership along the host path in the worktree's link.
        "GIT_CONFIG_COUNT=1".into(),
        "GIT_CONFIG_KEY_0=safe.directory".into(),
        "GIT_CONFIG_VALUE_0=*".into(),
    ]
}

/// Copy the exec's output to `tx` until it ends. Some(why): the engine
/// failed.
async fn pump<S>(mut output: S, tx: &mpsc::Sender<Chunk>, t: &Target) -> Option<String>
where
    S: futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin,
{
    while let Some(item) = output.next().await {
        let chunk = match item {
            Ok(LogOutput::StdErr { message }) => Chunk::Stderr(message.to_vec()),
            Ok(other) => Chunk::Stdout(other.into_bytes().to_vec()),
            Err(e) => return Some(docker::engine::describe(&e, &t.name)),
        };
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    None
}

/// The exec's exit code once docker says it is over (None: no exit status).
async fn exit_of(client: &Docker, exec: &str, t: &Target) -> ExitInfo {
    for _ in 0..50 {
        match client.inspect_exec(exec).await {
            Ok(i) if i.running == Some(true) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(i) => {
                return ExitInfo {
                    code: i.exit_code.map(|c| c as i32),
                    ..ExitInfo::default()
                };
            }
            Err(e) => {
                return ExitInfo {
                    lost: Some(docker::engine::describe(&e, &t.name)),
                    ..ExitInfo::default()
                };
            }
        }
    }
    ExitInfo::default()
}
