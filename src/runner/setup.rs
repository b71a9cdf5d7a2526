//! An attempt's worktree set-up, after `prepare` and before the agent:
//! `.worktreeinclude`'s files copied in (every attempt: a reused worktree is
//! refreshed), then `[workspace] setup`, one command after the other, where
//! the agent runs (the backend's `start_setup`: under the supervisor here, the
//! reaper in a container, the helper on a remote host), with their output in
//! the attempt's log and `setup_timeout_secs` over them all.
//!
//! The commands run in a worktree before its first agent: the worktree
//! records the setup that completed there (a hash of the commands), so that
//! a retry or a spare worktree does not run it again unless `setup_on_reuse`
//! is set or the commands changed. A setup that fails, times out or cannot
//! start ends the attempt as `setup_failed` (the command and its last lines of
//! output), before the agent starts: no model call is spent. When the pool
//! itself cannot start anything (a host that does not answer), the attempt
//! ends as an agent's would: `spawn_failed`, or `host_lost`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::StopLevel;
use super::sink::OutputSink;
use crate::agent::AgentSpec;
use crate::agent::spec::{BASE_URL_VAR, SCRUBBED_VARS};
use crate::backend::{Backend, Chunk, ExitInfo, SpawnError, Workspace};
use crate::config::{CommandSpec, Config};
use crate::proc::TAG_VAR;
use crate::state::Outcome;

/// What sets a worktree up, from flocks.toml.
#[derive(Debug, Clone)]
pub(crate) struct SetupPlan {
    /// The checkout whose `.worktreeinclude` and ignored files are read.
    pub repo_dir: PathBuf,
    /// Never read for `.worktreeinclude`: the worktrees, flocks' own state.
    pub skip: Vec<PathBuf>,
    pub commands: Vec<CommandSpec>,
    pub timeout: Option<Duration>,
    pub on_reuse: bool,
    /// `kill_grace_secs`: TERM, then KILL after this long.
    pub grace: Duration,
    /// The run's last `.worktreeinclude` walk of the checkout.
    pub includes: Arc<super::include_cache::IncludeCache>,
}

impl SetupPlan {
    pub(crate) fn from_config(config: &Config) -> Arc<SetupPlan> {
        Arc::new(SetupPlan {
            repo_dir: config.workspace.repo.clone(),
            skip: vec![config.worktrees_dir(), config.state_dir()],
            commands: config.workspace.setup.clone(),
            timeout: config.workspace.setup_timeout,
            on_reuse: config.workspace.setup_on_reuse,
            grace: config.kill_grace,
            includes: Arc::default(),
        })
    }
}

/// What a worktree records once `commands` completed there.
pub(crate) fn hash(commands: &[CommandSpec]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for c in commands {
        h.update(serde_json::to_string(c).unwrap_or_default());
        h.update(b"\n");
    }
    format!("{:x}", h.finalize())[..16].to_string()
}

/// The worktree's set-up, all of it. Err: how the attempt ends instead.
pub(crate) async fn run(
    plan: &SetupPlan,
    backend: &dyn Backend,
    ws: &Workspace,
    task: &str,
    agent: &AgentSpec,
    sink: &mut OutputSink,
    stop: &mut watch::Receiver<StopLevel>,
) -> Result<(), Outcome> {
    include(plan, backend, ws, task, sink).await?;
    if plan.commands.is_empty() {
        return Ok(());
    }
    let hash = hash(&plan.commands);
    if !plan.on_reuse && ws.setup_mark.as_deref() == Some(hash.as_str()) {
        sink.note("[workspace] setup already ran in this worktree: not run again (setup_on_reuse = false)");
        return Ok(());
    }
    let started = Instant::now();
    let deadline = plan.timeout.map(|t| tokio::time::Instant::now() + t);
    for (n, command) in plan.commands.iter().enumerate() {
        sink.note(&format!("[workspace] setup: $ {command}"));
        let spec = setup_spec(agent, command, n + 1);
        let (exit, ended) = match one(backend, ws, spec, deadline, plan.grace, sink, stop).await {
            Ok(v) => v,
            // The command itself cannot be started that way: the setup's fault.
            Err(why @ (SpawnError::Program(_) | SpawnError::Unsendable)) => {
                let output = sink.command_done();
                return Err(failed(command, format!("could not start: {why}"), output));
            }
            // The pool could not start anything (its host, the supervisor):
            // as for an agent that could not start, the task goes back to the queue.
            Err(why) => {
                sink.command_done();
                return Err(Outcome::SpawnFailed {
                    reason: format!("could not start the setup command `{command}`: {why}"),
                });
            }
        };
        let output = sink.command_done();
        match ended {
            Ended::Stopped => return Err(Outcome::Interrupted),
            Ended::TimedOut => {
                let limit = plan.timeout.unwrap_or_default().as_secs_f64();
                let reason = format!(
                    "timed out after {} ([workspace] setup_timeout_secs)",
                    crate::output::units::duration(limit)
                );
                return Err(failed(command, reason, output));
            }
            Ended::Exited => {}
        }
        if let Some(lost) = exit.lost {
            return Err(Outcome::HostLost { reason: lost });
        }
        if let Some(v) = exit.violation {
            let reason =
                format!("it changed {v} in the host repository's git dir (flocks undid it)");
            return Err(failed(command, reason, output));
        }
        match exit.code {
            Some(0) => {}
            Some(c) => return Err(failed(command, format!("exit status {c}"), output)),
            None => {
                return Err(failed(
                    command,
                    "it ended without an exit status".into(),
                    output,
                ));
            }
        }
    }
    if let Err(e) = backend.mark_setup(ws, task, &hash).await {
        sink.note(&format!(
            "[workspace] setup done, but not recorded (the next attempt in this worktree runs it again): {e}"
        ));
    } else {
        sink.note(&format!(
            "[workspace] setup done in {}",
            crate::output::units::duration(started.elapsed().as_secs_f64())
        ));
    }
    Ok(())
}

fn failed(command: &CommandSpec, reason: String, output: Vec<String>) -> Outcome {
    Outcome::SetupFailed {
        command: command.to_string(),
        reason,
        output,
    }
}

/// `.worktreeinclude`: read the checkout's ignored files it selects and copy them in.
async fn include(
    plan: &SetupPlan,
    backend: &dyn Backend,
    ws: &Workspace,
    task: &str,
    sink: &mut OutputSink,
) -> Result<(), Outcome> {
    use crate::git::include::{FILE_NAME, drop_tracked, summary};
    let fail = |reason: String| Outcome::SetupFailed {
        command: FILE_NAME.into(),
        reason,
        output: Vec::new(),
    };
    let (repo_dir, skip) = (plan.repo_dir.clone(), plan.skip.clone());
    let start = ws.start_commit.clone();
    let includes = plan.includes.clone();
    let set = tokio::task::spawn_blocking(move || {
        let mut set = includes.collect(&repo_dir, &skip)?;
        if let Some(set) = set.as_mut() {
            drop_tracked(set, &repo_dir, &start)?;
        }
        Ok::<_, crate::git::include::IncludeError>(set)
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(e.to_string()))?;
    let Some(set) = set else {
        return Ok(());
    };
    for n in &set.notes {
        sink.note(n);
    }
    if set.files.is_empty() {
        sink.note(&format!(
            "{FILE_NAME}: no ignored file of the checkout matches"
        ));
        return Ok(());
    }
    let copied = backend
        .copy_in(ws, task, Arc::new(set))
        .await
        .map_err(|e| fail(e.to_string()))?;
    for n in &copied.notes {
        sink.note(n);
    }
    let mut line = format!(
        "{FILE_NAME}: copied {}",
        crate::output::units::count(copied.written.len(), "file")
    );
    if !copied.written.is_empty() {
        line.push_str(&format!(" ({})", summary(&copied.written)));
    }
    if copied.unchanged > 0 {
        line.push_str(&format!("; {} already up to date", copied.unchanged));
    }
    sink.note(&line);
    Ok(())
}

/// A setup command as the backend starts it: `sh -c` for a string, argv
/// through `sh` otherwise (so that a relative program is found in the
/// worktree, as the agent would find it); the agent's environment without
/// any credential or model token (the proxy variables stay: under
/// `[network]` they are its way out); its own tag.
fn setup_spec(agent: &AgentSpec, command: &CommandSpec, n: usize) -> AgentSpec {
    let tag = format!("{}:setup{n}", agent.tag);
    let args = match command {
        CommandSpec::Shell(s) => vec!["-c".to_string(), s.clone()],
        CommandSpec::Argv(v) => {
            let mut a = vec!["-c".to_string(), "exec \"$@\"".into(), "sh".into()];
            a.extend(v.iter().cloned());
            a
        }
    };
    let mut env: Vec<(String, String)> = agent
        .env
        .iter()
        .filter(|(k, _)| !SCRUBBED_VARS.contains(&k.as_str()) && k != TAG_VAR && k != BASE_URL_VAR)
        .cloned()
        .collect();
    env.push((TAG_VAR.into(), tag.clone()));
    let mut remove_env = agent.remove_env.clone();
    for v in SCRUBBED_VARS {
        if !remove_env.iter().any(|r| r == v) {
            remove_env.push(v.to_string());
        }
    }
    AgentSpec {
        program: "sh".into(),
        args,
        env,
        remove_env,
        prompt: String::new(),
        tag,
        credential: None,
    }
}

enum Ended {
    Exited,
    TimedOut,
    Stopped,
}

/// The setup command, as the watch sees it: its output in the log.
struct SetupWatcher<'a> {
    sink: &'a mut OutputSink,
}

impl super::watch::Watcher for SetupWatcher<'_> {
    const WHAT: &'static str = "the setup command";

    fn note(&mut self, line: &str) {
        self.sink.note(line);
    }

    async fn output(&mut self, chunk: Chunk) {
        if let Chunk::Stdout(b) | Chunk::Stderr(b) = chunk {
            self.sink.command_output(&b);
        }
    }

    fn timed_out(&mut self) {
        self.sink
            .note("setup_timeout_secs reached: stopping the setup command");
    }
}

/// Run one command to its end, the deadline, or a stop. Err: it could not start.
async fn one(
    backend: &dyn Backend,
    ws: &Workspace,
    spec: AgentSpec,
    deadline: Option<tokio::time::Instant>,
    grace: Duration,
    sink: &mut OutputSink,
    stop: &mut watch::Receiver<StopLevel>,
) -> Result<(ExitInfo, Ended), SpawnError> {
    if *stop.borrow() != StopLevel::Run {
        return Ok((ExitInfo::default(), Ended::Stopped));
    }
    let mut running = backend.start_setup(ws, spec).await?;
    let limits = super::watch::Limits {
        deadline,
        stall: None,
        grace,
    };
    let watched =
        super::watch::watch(&mut running, &limits, stop, &mut SetupWatcher { sink }).await;
    let ended = if watched.stop_requested {
        Ended::Stopped
    } else if watched.why == Some(super::watch::Why::TimedOut) {
        Ended::TimedOut
    } else {
        Ended::Exited
    };
    // A command stopped on a timeout or a stop was not lost.
    let exit = match ended {
        Ended::Exited => watched.exit,
        _ => ExitInfo {
            lost: None,
            ..watched.exit
        },
    };
    Ok((exit, ended))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_specs_carry_no_credential() {
        let agent = AgentSpec {
            program: "claude".into(),
            args: vec!["-p".into()],
            env: vec![
                ("CLAUDE_CODE_OAUTH_TOKEN".into(), "secret".into()),
                ("FOO".into(), "bar".into()),
                (TAG_VAR.into(), "k:t:1".into()),
                (
                    "ANTHROPIC_BASE_URL".into(),
                    "http://127.0.0.1:1/attempt/x".into(),
                ),
                ("HTTPS_PROXY".into(), "http://x:t@127.0.0.1:1".into()),
            ],
            remove_env: vec!["MY_TOKEN".into()],
            prompt: "do it".into(),
            tag: "k:t:1".into(),
            credential: Some(crate::agent::spec::Injected {
                name: "c".into(),
                kind: crate::config::CredentialKind::ApiKey,
                value: "secret".into(),
            }),
        };
        let s = setup_spec(&agent, &CommandSpec::Shell("npm ci".into()), 1);
        assert_eq!(s.program, "sh");
        assert_eq!(s.args, ["-c", "npm ci"]);
        assert!(s.prompt.is_empty());
        assert_eq!(s.tag, "k:t:1:setup1");
        assert!(s.env.contains(&("FOO".into(), "bar".into())));
        assert!(s.env.contains(&(TAG_VAR.into(), "k:t:1:setup1".into())));
        assert!(!s.env.iter().any(|(k, _)| k == "CLAUDE_CODE_OAUTH_TOKEN"));
        assert!(s.credential.is_none());
        assert!(!s.env.iter().any(|(k, _)| k == "ANTHROPIC_BASE_URL"));
        assert!(
            s.env.iter().any(|(k, _)| k == "HTTPS_PROXY"),
            "egress stays"
        );
        for v in ["MY_TOKEN", "ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN"] {
            assert!(s.remove_env.iter().any(|r| r == v), "{v}");
        }
        let a = setup_spec(
            &agent,
            &CommandSpec::Argv(vec!["./x".into(), "a b".into()]),
            2,
        );
        assert_eq!(a.args, ["-c", "exec \"$@\"", "sh", "./x", "a b"]);
        assert_ne!(
            hash(&[CommandSpec::Shell("a".into())]),
            hash(&[CommandSpec::Shell("b".into())])
        );
    }
}
