//! An agent on a host: started through the helper, its output pumped back,
//! stopped through the helper's control channel.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;

use crate::backend::helper::pipe::{pump, send_line};

use super::{HEARTBEAT_SECS, Host, PING_EVERY, SshBackend, conn};
use crate::agent::AgentSpec;
use crate::backend::helper::Header;
use crate::backend::{Chunk, Control, ExitInfo, Running, SpawnError, Workspace};

impl SshBackend {
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

fn task_of(spec: &AgentSpec) -> String {
    spec.env
        .iter()
        .find(|(k, _)| k == "FLOCKS_TASK")
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}
