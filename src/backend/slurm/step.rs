//! The helper as steps of an attempt's job: each op is one
//! `srun --jobid=<job> --overlap` running the helper script (`sh -c`) on
//! the job's node with stdin and stdout forwarded; the agent (`run`) is a
//! step whose stdout and stderr stream back, and whose stdin stays open as
//! the helper's control channel (it ends the agent when it closes).
//!
//! Nothing runs in `remote_dir` on the login node: the helper, on the
//! compute node, is the only thing that touches it, and what it prints is
//! read strictly (`helper::read_reply`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::process::ChildStdin;

use crate::backend::helper::pipe::{Streaming, exchange, send_line, stream};

use super::alloc::Alloc;
use super::sched;
use crate::backend::helper::session::{CallError, Input, Transport};
use crate::backend::helper::{ROOT_VAR, Reply, ReplyError, SCRIPT, Spec};
use crate::backend::{BoxFuture, Chunk, Control, ExitInfo, Running, SpawnError};
use crate::git::intake::Want;

/// How long one helper op may take (a bundle each way, a checkout).
const OP_LIMIT: Duration = Duration::from_secs(600);
/// The helper stops the agent when flocks has not been heard of for this long.
pub(crate) const HEARTBEAT_SECS: u64 = 60;
const PING_EVERY: Duration = Duration::from_secs(10);

/// Before `init`, the root's parent is made private to the user (the
/// helper would make a missing parent sticky and world-writable, as for
/// `/var/tmp`; `remote_dir` on a shared filesystem is the user's own).
const INIT_PRELUDE: &str = "umask 077; mkdir -p -- \"${FLOCKS_HELPER_ROOT%/*}\" || exit 2; exec /bin/sh -c \"$0\" flocks-helper";

/// The helper on a step of `alloc`.
pub(crate) struct Step<'a> {
    pub alloc: &'a Arc<Alloc>,
    /// The helper's root (absolute, on the shared filesystem).
    pub root: &'a str,
    /// Variables left out of the step's environment (the credentials').
    pub scrub: &'a [String],
}

impl Step<'_> {
    /// `srun --jobid=J --overlap ... /bin/sh -c <script> flocks-helper`
    /// (or `argv` instead of the helper), in `cwd`.
    pub(crate) fn command(&self, argv: &[&str], cwd: &str) -> tokio::process::Command {
        let mut c = sched::command("srun", self.scrub);
        c.arg(format!("--jobid={}", self.alloc.id))
            .args([
                "--overlap",
                "--nodes=1",
                "--ntasks=1",
                "--quiet",
                "--kill-on-bad-exit=1",
            ])
            .arg(format!("--chdir={cwd}"))
            .arg("--")
            .args(argv)
            .env(ROOT_VAR, self.root)
            .stdin(std::process::Stdio::piped());
        c
    }

    fn helper(&self, op: &str) -> tokio::process::Command {
        if op == "init" {
            self.command(&["/bin/sh", "-c", INIT_PRELUDE, SCRIPT], "/")
        } else {
            self.command(&["/bin/sh", "-c", SCRIPT, "flocks-helper"], "/")
        }
    }

    /// Why a step could not run: the job is gone, or srun failed.
    fn lost(&self, words: &str) -> CallError {
        match self.alloc.gone() {
            Some(how) => CallError::Lost(format!("Slurm job {} ended ({how})", self.alloc.id)),
            None => CallError::Lost(format!(
                "Slurm job {} on {}: a step did not run: {words}",
                self.alloc.id, self.alloc.node
            )),
        }
    }

    /// Start the agent (a `run` header and its prompt in `input`) as a step
    /// whose output streams back.
    pub(crate) async fn run(&self, input: Vec<u8>) -> Result<Running, SpawnError> {
        if let Some(how) = self.alloc.gone() {
            return Err(SpawnError::Start(format!(
                "Slurm job {} ended ({how})",
                self.alloc.id
            )));
        }
        let child = self
            .helper("run")
            .spawn()
            .map_err(|e| SpawnError::Process {
                what: "srun (is Slurm installed on this machine?)",
                reason: e.to_string(),
            })?;
        let (job, node) = (self.alloc.id.clone(), self.alloc.node.clone());
        let cannot_send = |e| {
            SpawnError::Start(format!(
                "Slurm job {}: cannot send the agent's start: {e}",
                self.alloc.id
            ))
        };
        let end = async move |marker: Option<i32>,
                              status: std::io::Result<std::process::ExitStatus>,
                              _tail: String,
                              tx: tokio::sync::mpsc::Sender<Chunk>| {
            let code = marker.or_else(|| status.as_ref().ok().and_then(|s| s.code()));
            let mut info = ExitInfo {
                code,
                lost: None,
                violation: None,
            };
            // Without the helper's last word, the step was ended from
            // outside: a node that failed or was drained, a preemption.
            if marker.is_none() {
                let (lost, said) = ended_from_outside(&job, &node).await;
                info.lost = lost;
                let _ = tx
                    .send(Chunk::Stderr(format!("flocks: {said}\n").into_bytes()))
                    .await;
            }
            let _ = tx.send(Chunk::Exited(info)).await;
        };
        let Streaming { stdin, output: rx } =
            stream(child, "srun", &input, PING_EVERY, cannot_send, end).await?;
        Ok(Running {
            output: rx,
            control: Control::Slurm(SlurmControl {
                alloc: self.alloc.clone(),
                stdin,
            }),
        })
    }
}

/// The agent's step ended without the helper's exit line: why, as the
/// scheduler tells. Returns (lost: the reason, when the job's node or place
/// was lost; what to note in the log).
async fn ended_from_outside(job: &str, node: &str) -> (Option<String>, String) {
    let row = sched::jobs(&[job.to_string()])
        .await
        .ok()
        .and_then(|mut r| r.remove(job));
    let state = row.as_ref().map(|r| r.state.clone());
    if let Some(s) = state.as_deref()
        && sched::lost_state(s)
    {
        let why = format!("Slurm job {job} on {node} ended {s}");
        return (Some(why.clone()), why);
    }
    if let Some((ns, reason)) = sched::node_state(node).await
        && sched::node_unusable(&ns)
    {
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        };
        let why = format!("node {node} of Slurm job {job} is {ns}{reason}");
        return (Some(why.clone()), why);
    }
    let said = match state {
        Some(s) => format!(
            "the agent's step of Slurm job {job} ended without the helper's exit status (the job is {s})"
        ),
        None => {
            format!("the agent's step of Slurm job {job} ended without the helper's exit status")
        }
    };
    (None, said)
}

/// Stops an agent that runs as a step of its job: scancel.
pub(crate) struct SlurmControl {
    alloc: Arc<Alloc>,
    /// The step's stdin: the helper's control channel.
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
}

impl SlurmControl {
    /// TERM to every process of the job's steps (the helper then stops the
    /// agent's whole tree, KILL after the grace); the job ends by scancel
    /// once its work came back.
    pub(crate) async fn terminate(&self) {
        self.alloc.stopped.store(true, Ordering::SeqCst);
        if sched::cancel(std::slice::from_ref(&self.alloc.id), Some("TERM"))
            .await
            .is_err()
        {
            send_line(&self.stdin, "term").await;
        }
    }

    /// KILL the job's steps now (not the job: the attempt's work still
    /// comes back through a step of it).
    pub(crate) async fn kill(&self) {
        self.alloc.stopped.store(true, Ordering::SeqCst);
        let steps = sched::steps(&self.alloc.id).await.unwrap_or_default();
        let killed = !steps.is_empty() && sched::cancel(&steps, Some("KILL")).await.is_ok();
        if !killed {
            send_line(&self.stdin, "kill").await;
        }
    }
}

/// One helper op, one step.
impl Transport for Step<'_> {
    fn call<'a>(
        &'a self,
        input: Input,
        spec: &'static Spec,
        want: Option<&'a Want>,
    ) -> BoxFuture<'a, Result<Reply, CallError>> {
        Box::pin(async move {
            if let Some(how) = self.alloc.gone() {
                return Err(CallError::Lost(format!(
                    "Slurm job {} ended ({how})",
                    self.alloc.id
                )));
            }
            let child = self
                .helper(spec.op)
                .spawn()
                .map_err(|e| CallError::Lost(format!("cannot run srun: {e}")))?;
            let (reply, err, status) =
                exchange(child, &input.header, input.body, spec, want, OP_LIMIT)
                    .await
                    .ok_or_else(|| {
                        CallError::Lost(format!(
                            "Slurm job {}: the helper did not answer within {}s",
                            self.alloc.id,
                            OP_LIMIT.as_secs()
                        ))
                    })?;
            let err = String::from_utf8_lossy(&err);
            match (reply, status) {
                (Err(ReplyError::Intake(e)), _) => Err(CallError::Intake(e)),
                (reply, Ok(s)) if s.success() => Ok(reply?),
                // The helper ran and failed: its words.
                (_, Ok(_)) if helper_words(&err).is_some() => {
                    Err(CallError::Failed(helper_words(&err).unwrap_or_default()))
                }
                (_, Ok(_)) => Err(self.lost(&sched::last_words(&err))),
                (_, Err(e)) => Err(CallError::Lost(format!("srun: {e}"))),
            }
        })
    }
}

/// The helper's last `flocks-helper: ...` line on stderr, if it said one.
fn helper_words(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("flocks-helper: "))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l).to_string())
}
