//! Running one program in a container and stopping it: the reaper or the `sh`
//! wrapper, killer execs, the exit code.

use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::query_parameters::InspectContainerOptions;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::scripts::Match;
use super::{Input, Target, engine, scripts};
use crate::backend::{Chunk, Control, ExitInfo, Running};

/// How flocks stops an agent in a container: killer execs.
pub(crate) struct DockerControl {
    pub(super) inner: Option<Arc<Ctl>>,
}

/// A reaper's stdin, held open by flocks for the whole exec: its end is how
/// the reaper learns that flocks is gone.
pub(super) type Held = Arc<tokio::sync::Mutex<Option<Input>>>;

/// An exec's demultiplexed output.
pub(super) type Output = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
>;

/// What one program to run in a container needs, agent or validate command.
pub(crate) struct Exec<'a> {
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
pub(crate) enum ExecError {
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
pub(crate) struct Started {
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
pub(crate) async fn start(
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
pub(crate) async fn probe_reaper(docker: &Docker, t: &Target) -> bool {
    engine::run(docker, &t.id, scripts::reaper_probe(&t.user), vec![], "0")
        .await
        .is_ok_and(|o| o.code == Some(0))
}

/// What flocks says when a container cannot run the reaper.
pub(crate) fn no_reaper_note(container: &str, what: &str) -> String {
    format!(
        "docker container `{container}` cannot run flocks' reaper (it needs perl, and root able to become the exec user): flocks stops {what} by their FLOCKS_ATTEMPT tag, which they can remove, and cannot stop them if flocks itself is killed (see the manual: Docker pools, Stopping)"
    )
}

pub(super) struct Ctl {
    pub(super) docker: Docker,
    pub(super) target: Target,
    pub(super) tag: String,
    pub(super) grace: Duration,
    pub(super) notes: mpsc::Sender<Chunk>,
    /// The reaper's stdin, held open for the whole attempt (None: no reaper).
    pub(super) input: Option<Arc<tokio::sync::Mutex<Option<Input>>>>,
}

impl DockerControl {
    /// How to stop a program [`start`]ed outside an attempt (a `[validate]
    /// pool` command): through its reaper's stdin (`input`), else by its
    /// tag; what goes wrong goes to `notes`.
    pub(crate) fn of(
        docker: &Docker,
        t: &Target,
        tag: &str,
        grace: Duration,
        notes: mpsc::Sender<Chunk>,
        input: Option<Held>,
    ) -> DockerControl {
        DockerControl {
            inner: Some(Arc::new(Ctl {
                docker: docker.clone(),
                target: t.clone(),
                tag: tag.to_string(),
                grace,
                notes,
                input,
            })),
        }
    }

    pub(crate) fn terminate(&self) {
        if let Some(c) = &self.inner {
            tokio::spawn(stop(c.clone(), c.grace));
        }
    }

    pub(crate) fn kill(&self) {
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
pub(crate) async fn tell(input: &Held, grace: Duration) -> bool {
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
pub(super) async fn kill_attempt(
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
pub(super) fn lost(reason: impl Into<String>) -> Running {
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

/// After the exec's output ended: its exit code, or why the agent was lost.
pub(super) async fn conclude(
    docker: &Docker,
    exec: &str,
    t: &Target,
    broken: Option<String>,
) -> ExitInfo {
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
pub(super) async fn container_lost(
    docker: &Docker,
    t: &Target,
    broken: Option<String>,
) -> Option<String> {
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
