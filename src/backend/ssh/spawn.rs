//! An agent on a host: started through the helper, its output pumped back,
//! stopped through the helper's control channel.

use std::process::Stdio;
use std::sync::Arc;

use tokio::process::ChildStdin;

use crate::backend::helper::pipe::{Streaming, send_line, stream};

use super::{HEARTBEAT_SECS, Host, PING_EVERY, SshBackend, conn};
use crate::agent::AgentSpec;
use crate::backend::helper::Header;
use crate::backend::{Chunk, Control, ExitInfo, Running, SpawnError, Workspace};

impl SshBackend {
    pub(crate) async fn spawn(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
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
        let mut env = self.identity_for(&root, task);
        env.retain(|(k, _)| !spec.env.iter().any(|(s, _)| s == k));
        env.extend(spec.env.iter().cloned());
        crate::agent::spec::add_agent_git_config(&mut env, 0);
        let header = Header::new("run")
            .line("task", task)
            .and_then(|x| x.line("tag", &spec.tag))
            .and_then(|x| x.line("grace_ds", grace_ds))
            .and_then(|x| x.line("heartbeat", HEARTBEAT_SECS))
            .and_then(|x| x.lines("unset", &spec.remove_env))
            .and_then(|x| x.lines("env", env.iter().map(|(k, v)| format!("{k}={v}"))))
            .and_then(|x| x.line("argv", &spec.program))
            .and_then(|x| x.lines("argv", &spec.args))
            .map_err(|_| SpawnError::Unsendable)?;
        let mut input = header.prompt(spec.prompt.len());
        input.extend_from_slice(spec.prompt.as_bytes());

        let mut cmd = h.target.command(&h.target.helper_command())?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().map_err(|e| SpawnError::Process {
            what: "ssh (is OpenSSH installed?)",
            reason: e.to_string(),
        })?;
        let pid = child.id();
        let cannot_send = |e| {
            SpawnError::Start(format!(
                "host {}: cannot send the agent's start: {e}",
                h.target.host
            ))
        };
        let host = h.target.host.clone();
        let pool = self.pool.clone();
        let end = async move |marker: Option<i32>,
                              status: std::io::Result<std::process::ExitStatus>,
                              tail: String,
                              tx: tokio::sync::mpsc::Sender<Chunk>| {
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
        };
        let Streaming { stdin, output: rx } =
            stream(child, "ssh", &input, PING_EVERY, cannot_send, end).await?;
        Ok(Running {
            output: rx,
            control: Control::Ssh(SshControl { stdin, pid }),
        })
    }
}

/// Stops a remote agent through its helper's control channel.
pub(crate) struct SshControl {
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    pid: Option<u32>,
}

impl SshControl {
    /// TERM to the remote tree, grace, KILL (the helper applies the policy).
    pub(crate) async fn terminate(&self) {
        if !send_line(&self.stdin, "term").await {
            self.kill_client();
        }
    }

    /// KILL the remote tree now.
    pub(crate) async fn kill(&self) {
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

fn task_of(spec: &AgentSpec) -> String {
    spec.env
        .iter()
        .find(|(k, _)| k == "FLOCKS_TASK")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}
