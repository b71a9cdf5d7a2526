//! `[validate] commands`, run one after the other in the land worktree on the
//! landed result. `timeout_secs` bounds the whole validation. Output is shown
//! as it comes (when asked) and logged. Credential variables are removed from
//! the commands' environment.
//!
//! Each command runs under the same per-attempt supervisor as a local agent
//! (`supervisor.rs`: its own cgroup where the machine allows, else a
//! subreaper), so what it starts in a new session is stopped with it: on
//! expiry of `timeout_secs` the whole tree gets SIGTERM, then SIGKILL after
//! `kill_grace_secs`, and whatever a command leaves running when it exits is
//! stopped too. The supervisor has its own process group, so a Ctrl-C on the
//! terminal reaches flocks only: while a command runs, SIGINT and SIGTERM
//! become a stop (`signals.rs`), passed on the same way as a timeout.
//!
//! Host and docker pool alike, each command is watched by the one
//! stop-escalation loop (`crate::watch`): the deadline, a stop from the
//! caller (`StopLevel`), TERM, then KILL. A [`Site`] says where a command
//! starts and what follows its end.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::local::{Supervised, start_supervised};
use crate::backend::{Chunk, Running, SpawnError};
use crate::config::CommandSpec;
use crate::error::{Context, Result};
use crate::watch::{Limits, StopLevel, Watcher, Why};

/// How validation went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// Nothing new to validate: the target does not move.
    NotNeeded,
    /// `--no-validate`.
    Skipped,
    /// No `[validate] commands`.
    NotConfigured,
    Passed,
    /// `command` failed for `reason` (exit status, signal, timeout).
    Failed {
        command: String,
        reason: String,
    },
    /// Ctrl-C (or SIGTERM) while `command` ran; it was stopped.
    Interrupted {
        command: String,
    },
}

impl Validation {
    pub fn failed(&self) -> bool {
        matches!(
            self,
            Validation::Failed { .. } | Validation::Interrupted { .. }
        )
    }
}

/// Where and how to run the commands.
pub(super) struct Run<'a> {
    pub commands: &'a [CommandSpec],
    pub dir: &'a Path,
    pub timeout: Option<Duration>,
    pub grace: Duration,
    /// Environment variables to remove (credentials).
    pub scrub: &'a [String],
    pub log: &'a Path,
    /// Also copy the output to this process's stdout.
    pub echo: bool,
    /// What the commands are, for the log ("validation", "after_push").
    pub what: &'a str,
    /// Variables to set for the commands.
    pub env: &'a [(String, String)],
}

/// The validation log, shared by whatever copies output into it.
pub(super) type Out = Arc<Mutex<File>>;

/// Create the validation log `r.log`, for [`run`] or the docker pool's run.
pub(super) fn open_log(r: &Run) -> Result<Out> {
    // `.flocks/land-logs/` is agent-writable: no link is followed.
    let opened = crate::fsat::create(r.log).ctx(|| format!("create {}", r.log.display()))?;
    crate::fsat::tell(&opened.notes);
    Ok(Arc::new(Mutex::new(opened.file)))
}

/// Run the commands here, on the host, logging to `out`, until `stop`
/// (Ctrl-C caught by the caller, or a run's dispatcher) says to stop.
pub(super) fn run(r: &Run, out: &Out, stop: &mut watch::Receiver<StopLevel>) -> Result<Validation> {
    block_on(each_command(r, out, &mut Host { r }, stop))?
}

/// Run `f` to its end on a runtime of its own: land is not async, and the
/// commands are watched by the async loop the runner uses.
pub(super) fn block_on<F: std::future::Future>(f: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ctx(|| "start the async runtime that watches validation".into())?;
    Ok(runtime.block_on(f))
}

/// Where the commands run: the host, or a docker pool's container.
pub(super) trait Site {
    /// Start command `n`. Ok(Err(reason)): it could not start, and the
    /// validation fails with `reason`; Err: validation cannot run here.
    async fn start(
        &mut self,
        n: usize,
        spec: &CommandSpec,
    ) -> Result<std::result::Result<Running, String>>;
    /// Command `n` ended (`stopped`: by the watch). Some(reason): what it
    /// did fails the validation whatever its exit.
    async fn ended(&mut self, _n: usize, _stopped: bool) -> Option<String> {
        None
    }
    /// The command was lost (`why`): the failure's reason, or Err when
    /// validation cannot go on here.
    fn lost(&self, why: String) -> Result<String> {
        Ok(why)
    }
}

/// Run `r.commands` one after the other at `site`, within `r.timeout`,
/// until one fails or `stop` says to stop.
pub(super) async fn each_command<S: Site>(
    r: &Run<'_>,
    out: &Out,
    site: &mut S,
    stop: &mut watch::Receiver<StopLevel>,
) -> Result<Validation> {
    let limits = Limits {
        deadline: r.timeout.map(|t| Instant::now() + t),
        stall: None,
        grace: r.grace,
    };
    for (n, spec) in r.commands.iter().enumerate() {
        emit(out, r.echo, format!("$ {spec}\n").as_bytes());
        if *stop.borrow() != StopLevel::Run {
            return Ok(interrupted(r, out, spec));
        }
        let mut running = match site.start(n, spec).await? {
            Ok(running) => running,
            Err(reason) => {
                emit(out, r.echo, format!("{reason}\n").as_bytes());
                return Ok(Validation::Failed {
                    command: spec.to_string(),
                    reason,
                });
            }
        };
        let mut echo = Echo { out, echo: r.echo };
        let watched = crate::watch::watch(&mut running, &limits, stop, &mut echo).await;
        let violation = site.ended(n, watched.why.is_some()).await;
        let reason = match (watched.exit.lost, violation, watched.why) {
            (Some(lost), _, None) => site.lost(lost)?,
            (_, Some(v), _) => format!("it changed {v} in the host's git dir (undone)"),
            (_, None, Some(Why::Stop | Why::Asked)) => return Ok(interrupted(r, out, spec)),
            (_, None, Some(Why::TimedOut | Why::Stalled)) => format!(
                "timed out after {}s ([validate] timeout_secs)",
                r.timeout.unwrap_or_default().as_secs_f64()
            ),
            (None, None, None) => match watched.exit.code {
                Some(0) => continue,
                Some(c) => format!("exit status {c}"),
                None => "no exit status (the container may have stopped)".into(),
            },
        };
        emit(
            out,
            r.echo,
            format!("{} failed: {spec}: {reason}\n", r.what).as_bytes(),
        );
        return Ok(Validation::Failed {
            command: spec.to_string(),
            reason,
        });
    }
    Ok(Validation::Passed)
}

fn interrupted(r: &Run, out: &Out, spec: &CommandSpec) -> Validation {
    emit(out, r.echo, format!("interrupted: {spec}\n").as_bytes());
    Validation::Interrupted {
        command: spec.to_string(),
    }
}

/// On the host, each command under the per-attempt supervisor.
struct Host<'r, 'a> {
    r: &'r Run<'a>,
}

impl Site for Host<'_, '_> {
    async fn start(
        &mut self,
        _n: usize,
        spec: &CommandSpec,
    ) -> Result<std::result::Result<Running, String>> {
        let r = self.r;
        let started = start_supervised(Supervised {
            argv: spec.argv().into_iter().map(OsString::from).collect(),
            cwd: r.dir.to_path_buf(),
            env: r.env.to_vec(),
            remove_env: r.scrub.to_vec(),
            prompt: String::new(),
            grace: r.grace,
            wrapped: false,
            quiet: true,
        });
        Ok(started.map_err(|e| match e {
            SpawnError::Process { reason, .. } => format!("could not start: {reason}"),
            other => other.to_string(),
        }))
    }
}

/// The watch's ears: a command's output goes to the log (and stdout).
struct Echo<'o> {
    out: &'o Out,
    echo: bool,
}

impl Watcher for Echo<'_> {
    const WHAT: &'static str = "the command";

    /// The outcome's line says why it stopped ("interrupted", "timed out").
    fn note(&mut self, _line: &str) {}

    async fn output(&mut self, chunk: Chunk) {
        if let Chunk::Stdout(bytes) | Chunk::Stderr(bytes) = chunk {
            emit(self.out, self.echo, &bytes);
        }
    }

    fn timed_out(&mut self) {}
}

pub(super) fn emit(out: &Out, echo: bool, bytes: &[u8]) {
    if let Ok(mut f) = out.lock() {
        let _ = f.write_all(bytes);
    }
    if echo {
        // Quiet on a closed pipe: validation goes on, its log has it all.
        let _ = crate::output::stdout().write_all(bytes);
    }
}
