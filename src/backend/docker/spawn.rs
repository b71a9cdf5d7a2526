//! An attempt in the container: the agent's program and environment, its exec,
//! finishing and releasing its workspace.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::scripts::Match;
use super::{
    Ctl, DockerBackend, DockerControl, Exec, Started, Target, conclude, container_lost,
    kill_attempt, lost, owner, scripts, start,
};
use crate::agent::AgentSpec;
use crate::backend::{Chunk, Control, FinishError, Finished, Running, SpawnError, Workspace};
use crate::config::WorkspaceMode;

impl DockerBackend {
    /// `[agent] command` inside the container: a name (found on the
    /// container's PATH), an absolute path there, or a path relative to
    /// flocks.toml's directory that lies inside the repo: in mount mode
    /// through the mount, in clone mode in the task's own clone.
    fn program_in_container(
        &self,
        program: &str,
        t: &Target,
        ws: &Workspace,
    ) -> Result<String, crate::backend::ProgramError> {
        if !program.contains('/') || program.starts_with('/') {
            return Ok(program.to_string());
        }
        let host = crate::paths::normalize(&self.config_dir.join(program));
        let base = match self.mode {
            WorkspaceMode::Clone => Some(ws.agent_cwd.as_str()),
            WorkspaceMode::Mount => t.repo.as_deref(),
        };
        match (host.strip_prefix(&self.repo_dir), base) {
            (Ok(rel), Some(base)) => Ok(Path::new(base).join(rel).display().to_string()),
            _ => Err(crate::backend::ProgramError::OutsideMount {
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

    pub(crate) async fn spawn(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        self.exec(ws, spec, false).await
    }

    /// Start the agent, or (`setup`) one `[workspace] setup` command, in the
    /// container under the reaper. The host `.git` guard watches the agent
    /// until `finish`, and each setup command until it ends (what it changed
    /// comes back as the exit's `violation`).
    pub(super) async fn exec(
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
                info.lost = stop_leftovers(&docker, &t, &spec.tag, grace, what, &tx).await;
            }
            info.violation = end_setup().await;
            let _ = tx.send(Chunk::Exited(info)).await;
        });
        Ok(Running {
            output: rx,
            control: Control::Docker(DockerControl { inner: Some(ctl) }),
        })
    }

    pub(crate) async fn finish(
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
        let result =
            crate::backend::finish_host_worktree(self.repo_dir.clone(), ws, branch, attempt).await;
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
    pub(super) async fn give_back(&self, path: &Path) {
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

    pub(crate) async fn release(&self, task: &str) {
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

/// Stop what an agent or setup command left running in the container, and
/// say so on its stderr; `Some(why)` when the container itself is lost.
async fn stop_leftovers(
    docker: &bollard::Docker,
    t: &Target,
    tag: &str,
    grace: std::time::Duration,
    what: &str,
    tx: &mpsc::Sender<Chunk>,
) -> Option<String> {
    let note = match kill_attempt(docker, t, Match::Exact, tag, grace).await {
        Ok(out) if scripts::stopped_any(&out) => format!(
            "flocks: {what} exited; stopped what it left running ({})\n",
            out.trim()
        ),
        Ok(_) => return None,
        Err(why) => {
            let lost = container_lost(docker, t, None).await;
            let note = format!("flocks: stopping what {what} left running: {why}\n");
            let _ = tx.send(Chunk::Stderr(note.into_bytes())).await;
            return lost;
        }
    };
    let _ = tx.send(Chunk::Stderr(note.into_bytes())).await;
    None
}
