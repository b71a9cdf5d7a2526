//! One attempt, start to end: prepare the worktree, set it up, start the agent on its
//! backend, stream its output into the log, enforce timeout, stall and stop,
//! commit leftovers, classify, and report to the dispatcher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use super::sink::OutputSink;
use super::{AttemptReport, RunEvent, StopLevel};
use crate::agent::classify::{AttemptFacts, EndedBy};
use crate::agent::{AgentSpec, Redactor, StreamEvent, classify};
use crate::backend::{Backend, Chunk, ExitInfo, PrepareError, PrepareJob, Ticket};
use crate::state::{Job, Outcome};

pub struct AttemptJob {
    pub task: String,
    pub attempt: u32,
    pub prepare: PrepareJob,
    pub backend: Arc<dyn Backend>,
    pub spec: AgentSpec,
    pub credential: Option<String>,
    pub log_path: PathBuf,
    pub redactor: Arc<Redactor>,
    pub timeout: Option<Duration>,
    pub stall: Option<Duration>,
    pub grace: Duration,
    /// The task line's `expect_commits`.
    pub expect_commits: bool,
    /// The repository on this machine (every backend brings the branch back here).
    pub repo_dir: PathBuf,
    /// `.worktreeinclude` and `[workspace] setup`.
    pub setup: Arc<super::setup::SetupPlan>,
    /// The run's proxy (None: the run needs none: no flocks credential,
    /// no `[network]`).
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
}

/// How long after a kill flocks waits for the backend to confirm the end.
const AFTER_KILL: Duration = Duration::from_secs(10);

pub async fn run_attempt(
    job: AttemptJob,
    events: mpsc::Sender<RunEvent>,
    mut stop: watch::Receiver<StopLevel>,
) {
    let mut started = Instant::now();
    let task = job.task.clone();
    let attempt = job.attempt;
    // How long a scheduler kept the attempt waiting (Slurm pools).
    let mut pending: Option<f64> = None;
    let report = |outcome: Outcome, started: Instant, pending: Option<f64>| AttemptReport {
        outcome,
        exit_code: None,
        result: None,
        session_id: None,
        start_commit: None,
        end_tip: None,
        leftovers_committed: false,
        new_commits: 0,
        no_conversation: false,
        duration_secs: started.elapsed().as_secs_f64(),
        pending_secs: pending,
        job: None,
        phases: None,
    };
    let finished = |report: AttemptReport| RunEvent::Finished {
        task: task.clone(),
        attempt,
        report: Box::new(report),
    };

    let mut sink = match OutputSink::create(&job.log_path, job.redactor.clone()) {
        Ok(s) => s,
        Err(e) => {
            let reason = format!("cannot write the log {}: {e}", job.log_path.display());
            let _ = events
                .send(finished(report(
                    Outcome::SpawnFailed { reason },
                    started,
                    pending,
                )))
                .await;
            return;
        }
    };

    // A pool with a scheduler (Slurm) runs the attempt once its job runs:
    // until then it is pending, and a stop ends the wait.
    let ticket = Ticket {
        task: task.clone(),
        attempt,
    };
    let admitted = match wait_for_job(&job, &ticket, &events, &mut stop, &mut sink).await {
        Admitted::Now => Ok(()),
        Admitted::After(secs) => {
            pending = Some(secs);
            started = Instant::now();
            Ok(())
        }
        Admitted::Refused(e) => Err(e),
        Admitted::Stopped => {
            sink.note("flocks is stopping: the job waiting in the scheduler's queue was cancelled");
            let mut r = report(Outcome::Interrupted, started, pending);
            r.job = job.backend.end(&task).await;
            let _ = events.send(finished(r)).await;
            return;
        }
    };
    let prepared = match admitted {
        Ok(()) => crate::backend::prepare(job.backend.as_ref(), &job.prepare).await,
        Err(e) => Err(e),
    };
    let ws = match prepared {
        Ok(ws) => ws,
        Err(PrepareError::Failed(e)) => {
            crate::backend::settle(&job.prepare.branch).await;
            let reason = format!("cannot prepare the worktree: {e}");
            sink.note(&reason);
            let mut r = report(Outcome::SpawnFailed { reason }, started, pending);
            r.job = job.backend.end(&task).await;
            let _ = events.send(finished(r)).await;
            return;
        }
        Err(PrepareError::HostLost(reason)) => {
            crate::backend::settle(&job.prepare.branch).await;
            sink.note(&reason);
            let mut r = report(Outcome::HostLost { reason }, started, pending);
            r.job = job.backend.end(&task).await;
            let _ = events.send(finished(r)).await;
            return;
        }
    };
    // The task's origin: kept across attempts, unless this attempt created
    // the branch or started it over (`retry --fresh`, a `land --resolve` redo).
    let origin = ws.origin.clone();
    let _ = events
        .send(RunEvent::Started {
            task: task.clone(),
            attempt,
            worktree: ws.host_path.clone(),
            start_commit: ws.start_commit.clone(),
            origin: origin.clone(),
            created_branch: ws.created_branch,
            note: ws.note.clone(),
        })
        .await;

    // The proxy: a flocks credential becomes a token for it, and with
    // `[network]` it is the agent's way out. Admitted before the setup (its
    // commands get the proxy variables, not the token); revoked once the
    // agent has ended.
    let mut spec = job.spec;
    let (mut admission, unadmitted) = admit_to_proxy(
        job.proxy.as_deref(),
        job.backend.as_ref(),
        &ws,
        &task,
        attempt,
        &mut spec,
    )
    .await;
    if let Some(a) = &admission {
        sink.also_redact(a.secrets());
    }
    if let Some(reason) = unadmitted {
        job.backend.abandon(&task).await;
        crate::backend::settle(&job.prepare.branch).await;
        sink.note(&format!("could not start the agent: {reason}"));
        let mut r = report(Outcome::SpawnFailed { reason }, started, pending);
        r.start_commit = Some(ws.start_commit.clone());
        r.end_tip = Some(ws.start_commit.clone());
        r.job = job.backend.end(&task).await;
        let _ = events.send(finished(r)).await;
        return;
    }

    if let Err(outcome) = super::setup::run(
        &job.setup,
        job.backend.as_ref(),
        &ws,
        &task,
        &spec,
        &mut sink,
        &mut stop,
    )
    .await
    {
        // The agent never started: nothing to commit or measure.
        job.backend.abandon(&task).await;
        crate::backend::settle(&job.prepare.branch).await;
        sink.note(&format!("attempt {attempt} {}", outcome.describe()));
        let mut r = report(outcome, started, pending);
        r.start_commit = Some(ws.start_commit.clone());
        r.end_tip = Some(ws.start_commit.clone());
        r.job = job.backend.end(&task).await;
        let _ = events.send(finished(r)).await;
        return;
    }

    // Where the attempt's time goes (the `finished` event's `phases`).
    let prepared_at = Instant::now();
    let mut running = match job.backend.spawn(&ws, spec).await {
        Ok(r) => r,
        Err(e) => {
            crate::backend::settle(&job.prepare.branch).await;
            sink.note(&format!("could not start the agent: {e}"));
            let mut r = report(
                Outcome::SpawnFailed {
                    reason: e.to_string(),
                },
                started,
                pending,
            );
            r.start_commit = Some(ws.start_commit.clone());
            r.end_tip = Some(ws.start_commit.clone());
            r.job = job.backend.end(&task).await;
            let _ = events.send(finished(r)).await;
            return;
        }
    };

    let spawned_at = Instant::now();
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let deadline = job
        .timeout
        .map(|t| tokio::time::Instant::now() + t)
        .unwrap_or(far);
    let stall_after = job.stall;
    let mut last_output = tokio::time::Instant::now();
    let mut ended_by = EndedBy::Exited;
    // After a terminate: when to escalate to kill; after a kill: when to give up.
    let mut escalate_at = far;
    let mut give_up_at = far;
    let mut exit = ExitInfo::default();
    let mut session_sent = false;
    // The proxy said the agent's first request could not reach the model API.
    let mut unreachable: Option<String> = None;
    let mut signals_open = admission.is_some();

    loop {
        let stall_deadline = stall_after.map(|s| last_output + s).unwrap_or(far);
        tokio::select! {
            chunk = running.output.recv() => match chunk {
                Some(Chunk::Stdout(bytes)) => {
                    last_output = tokio::time::Instant::now();
                    for ev in sink.stdout(&bytes) {
                        forward(&events, &task, attempt, ev, &mut session_sent).await;
                    }
                }
                Some(Chunk::Stderr(bytes)) => {
                    last_output = tokio::time::Instant::now();
                    sink.stderr(&bytes);
                }
                Some(Chunk::Exited(info)) => { exit = info; break; }
                None => { exit.lost = Some("the agent's output ended without an exit status".into()); break; }
            },
            _ = sleep_until(deadline), if ended_by == EndedBy::Exited => {
                ended_by = EndedBy::TimedOut;
                sink.note(&format!("agent_timeout_secs reached after {}: stopping the agent", crate::report::human_duration(started.elapsed().as_secs_f64())));
                running.control.terminate().await;
                escalate_at = tokio::time::Instant::now() + job.grace + Duration::from_secs(5);
            }
            _ = sleep_until(stall_deadline), if ended_by == EndedBy::Exited => {
                ended_by = EndedBy::Stalled;
                sink.note("no output for stall_timeout_secs: the agent is stalled; stopping it");
                let quiet_secs = last_output.elapsed().as_secs_f64();
                let _ = events.send(RunEvent::Stalled { task: task.clone(), attempt, quiet_secs }).await;
                running.control.terminate().await;
                escalate_at = tokio::time::Instant::now() + job.grace + Duration::from_secs(5);
            }
            changed = stop.changed() => {
                if changed.is_err() { continue; }
                let level = *stop.borrow();
                match level {
                    StopLevel::Run => {}
                    StopLevel::Graceful => {
                        if ended_by == EndedBy::Exited { ended_by = EndedBy::Cancelled; }
                        sink.note("flocks is stopping: stopping the agent");
                        running.control.terminate().await;
                        escalate_at = tokio::time::Instant::now() + job.grace + Duration::from_secs(5);
                    }
                    StopLevel::Kill => {
                        if ended_by == EndedBy::Exited { ended_by = EndedBy::Cancelled; }
                        sink.note("flocks is stopping: killing the agent");
                        running.control.kill().await;
                        give_up_at = tokio::time::Instant::now() + AFTER_KILL;
                    }
                }
            }
            _ = sleep_until(escalate_at) => {
                running.control.kill().await;
                escalate_at = far;
                give_up_at = tokio::time::Instant::now() + AFTER_KILL;
            }
            _ = sleep_until(give_up_at) => {
                exit.lost = Some("the agent did not end after SIGKILL".into());
                break;
            }
            signal = next_signal(&mut admission), if signals_open => match signal {
                Some(crate::proxy::Signal::Unreachable(why)) if unreachable.is_none() => {
                    sink.note(&format!("{why}: stopping the agent"));
                    unreachable = Some(why);
                    if ended_by == EndedBy::Exited { ended_by = EndedBy::Cancelled; }
                    running.control.terminate().await;
                    escalate_at = tokio::time::Instant::now() + job.grace + Duration::from_secs(5);
                }
                Some(_) => {}
                None => signals_open = false,
            },
        }
    }
    // A signal that came with the agent's end (the select took the end first).
    if unreachable.is_none()
        && let Some(a) = admission.as_mut()
        && let Ok(crate::proxy::Signal::Unreachable(why)) = a.signals.try_recv()
    {
        sink.note(&why);
        unreachable = Some(why);
    }
    // The agent has ended: its tokens die now.
    drop(admission);
    for ev in sink.finish() {
        forward(&events, &task, attempt, ev, &mut session_sent).await;
    }
    let agent_ended_at = Instant::now();

    let finish = crate::backend::finish(
        job.backend.as_ref(),
        &ws,
        &task,
        &job.prepare.branch,
        attempt,
    )
    .await;
    let (end_tip, leftovers, new_commits, finish_error, guard_violation, refused) = match finish {
        Ok(f) => (
            Some(f.tip),
            f.leftovers_committed,
            f.new_commits,
            None,
            f.guard_violation,
            f.refused,
        ),
        Err(e) => (None, false, 0, Some(e.to_string()), None, None),
    };
    // What the task holds beyond its origin, whichever attempt made it.
    let task_commits = match &end_tip {
        Some(tip) => commits_beyond(job.repo_dir.clone(), tip.clone(), origin.clone()).await,
        None => Ok(0),
    };
    let (task_commits, finish_error) = match (task_commits, finish_error) {
        (Ok(n), e) => (n, e),
        (Err(e), None) => (0, Some(e.to_string())),
        (Err(_), Some(e)) => (0, Some(e)),
    };
    if leftovers {
        sink.note(&format!(
            "committed changes the agent left uncommitted (attempt {attempt})"
        ));
    }
    let no_conversation = sink
        .stderr_tail
        .iter()
        .any(|l| l.contains("No conversation found with session ID"));
    let facts = AttemptFacts {
        ended_by,
        exit_code: exit.code,
        result: sink.parser.result.clone(),
        rate_limit: sink.parser.rate_limit.map(|(_, at)| at),
        assistant_error: sink.parser.assistant_error.clone(),
        task_commits,
        expect_commits: job.expect_commits,
        credential: job.credential.clone(),
        stderr_tail: sink.stderr_tail.clone(),
        saw_output: sink.saw_stdout,
    };
    let mut outcome = classify(&facts);
    if let Some(lost) = &exit.lost
        && ended_by == EndedBy::Exited
    {
        outcome = Outcome::HostLost {
            reason: lost.clone(),
        };
    }
    if let Some(why) = unreachable
        && !matches!(outcome, Outcome::Success)
    {
        outcome = Outcome::SpawnFailed { reason: why };
    }
    if let Some(e) = finish_error {
        // The work could not be taken back (an intake refusal, a helper that
        // failed): said in the log, and the outcome of an agent that
        // otherwise succeeded, rather than "no commits".
        sink.note(&format!("could not read the attempt's work: {e}"));
        let succeeded = matches!(outcome, Outcome::Success)
            || matches!(
                classify(&AttemptFacts {
                    task_commits: 1,
                    ..facts.clone()
                }),
                Outcome::Success
            );
        if succeeded {
            outcome = Outcome::Failed {
                reason: format!("could not read the result: {e}"),
            };
        }
    }
    if let Some(why) = refused {
        outcome = Outcome::Failed { reason: why };
    }
    if let Some(changed) = guard_violation {
        outcome = Outcome::Failed {
            reason: format!(
                "the agent changed the host repository's git setup ({changed}); flocks restored it"
            ),
        };
    }
    sink.note(&format!("attempt {attempt} {}", outcome.describe()));
    if matches!(outcome, Outcome::Success) {
        job.backend.release(&task).await;
    }
    let ended_job = job.backend.end(&task).await;
    if let Some(j) = &ended_job {
        sink.note(&j.describe());
    }
    let report = AttemptReport {
        outcome,
        exit_code: exit.code,
        result: sink.parser.result.clone(),
        session_id: sink.parser.session_id.clone(),
        start_commit: Some(ws.start_commit.clone()),
        end_tip,
        leftovers_committed: leftovers,
        new_commits,
        no_conversation,
        duration_secs: started.elapsed().as_secs_f64(),
        pending_secs: pending,
        job: ended_job,
        phases: Some(crate::report::event::Phases {
            prepare_secs: (prepared_at - started).as_secs_f64(),
            spawn_secs: (spawned_at - prepared_at).as_secs_f64(),
            agent_secs: (agent_ended_at - spawned_at).as_secs_f64(),
            finish_secs: agent_ended_at.elapsed().as_secs_f64(),
        }),
    };
    let _ = events.send(finished(report)).await;
}

/// Admit the attempt to the proxy when it needs it (a flocks credential,
/// `[network]`): the model token, URL and proxy variables go into `spec`.
/// Returns the admission, or why the agent cannot start (its side cannot
/// reach the proxy).
async fn admit_to_proxy(
    proxy: Option<&crate::proxy::Proxy>,
    backend: &dyn Backend,
    ws: &crate::backend::Workspace,
    task: &str,
    attempt: u32,
    spec: &mut AgentSpec,
) -> (Option<crate::proxy::Admission>, Option<String>) {
    let credential = spec.credential.take();
    let gate = proxy.is_some_and(|p| p.gates_egress());
    if credential.is_none() && !gate {
        return (None, None);
    }
    let Some(proxy) = proxy else {
        let name = credential.map(|c| c.name).unwrap_or_default();
        return (
            None,
            Some(format!(
                "internal error, please report it: no proxy holds credential {name} for this attempt"
            )),
        );
    };
    let address = match backend.proxy_address(ws, task, proxy.endpoint()).await {
        Ok(a) => a,
        Err(e) => {
            return (
                None,
                Some(format!("the agent cannot reach flocks' proxy: {e}")),
            );
        }
    };
    let admission = proxy.admit(task, attempt, credential, &address);
    for (k, v) in &admission.env {
        spec.env.retain(|(key, _)| key != k);
        spec.env.push((k.clone(), v.clone()));
    }
    for k in &admission.remove_env {
        if !spec.remove_env.contains(k) {
            spec.remove_env.push(k.clone());
        }
    }
    (Some(admission), None)
}

/// The proxy's next signal for this attempt (never, without an admission).
async fn next_signal(
    admission: &mut Option<crate::proxy::Admission>,
) -> Option<crate::proxy::Signal> {
    match admission {
        Some(a) => a.signals.recv().await,
        None => std::future::pending().await,
    }
}

/// How `wait_for_job` went.
enum Admitted {
    /// Nothing to wait for.
    Now,
    /// The job ran after this many seconds in its scheduler's queue.
    After(f64),
    /// The scheduler would not take it, or the pool is gone.
    Refused(PrepareError),
    /// A stop came while it waited: the backend let go of the job.
    Stopped,
}

/// Wait for the pool's scheduler to run the attempt, passing on where its
/// job stands; a stop (Ctrl-C, `flocks stop`) ends the wait.
async fn wait_for_job(
    job: &AttemptJob,
    ticket: &Ticket,
    events: &mpsc::Sender<RunEvent>,
    stop: &mut watch::Receiver<StopLevel>,
    sink: &mut OutputSink,
) -> Admitted {
    let waited = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let mut reported = false;
    let pass_on = |j: Job, sink: &mut OutputSink| {
        sink.note(&j.describe());
        let ev = RunEvent::Job {
            task: ticket.task.clone(),
            attempt: ticket.attempt,
            job: j,
        };
        async move {
            let _ = events.send(ev).await;
        }
    };
    if *stop.borrow() > StopLevel::Run {
        return Admitted::Stopped;
    }
    let result = {
        let fut = job.backend.admit(ticket, tx);
        tokio::pin!(fut);
        let mut watching = true;
        loop {
            tokio::select! {
                r = &mut fut => break Some(r),
                Some(j) = rx.recv() => {
                    reported = true;
                    pass_on(j, sink).await;
                }
                changed = stop.changed(), if watching => match changed {
                    Ok(()) if *stop.borrow() > StopLevel::Run => break None,
                    Ok(()) => {}
                    Err(_) => watching = false,
                },
            }
        }
    };
    // What it said before it returned.
    while let Ok(j) = rx.try_recv() {
        reported = true;
        pass_on(j, sink).await;
    }
    match result {
        None => Admitted::Stopped,
        Some(Err(e)) => Admitted::Refused(e),
        Some(Ok(())) if reported => Admitted::After(waited.elapsed().as_secs_f64()),
        Some(Ok(())) => Admitted::Now,
    }
}

/// Commits on `tip` that `origin` lacks, in the host repository.
async fn commits_beyond(
    repo_dir: PathBuf,
    tip: String,
    origin: String,
) -> crate::error::Result<usize> {
    use crate::error::Error;
    tokio::task::spawn_blocking(move || -> crate::error::Result<usize> {
        let repo = crate::git::open(&repo_dir)?;
        let parse = |s: &str| git2::Oid::from_str(s).map_err(|e| Error::Other(e.to_string()));
        crate::git::commits_ahead(&repo, parse(&tip)?, parse(&origin)?)
    })
    .await
    .map_err(|e| Error::Other(e.to_string()))?
}

async fn forward(
    events: &mpsc::Sender<RunEvent>,
    task: &str,
    attempt: u32,
    ev: StreamEvent,
    session_sent: &mut bool,
) {
    match ev {
        StreamEvent::Init { session_id, .. } if !*session_sent => {
            *session_sent = true;
            let _ = events
                .send(RunEvent::Session {
                    task: task.to_string(),
                    attempt,
                    session_id,
                })
                .await;
        }
        // What it does now, as `logview::activity` reads it from the log:
        // its last tool call or its last words.
        StreamEvent::ToolUse(activity) => {
            let _ = events
                .send(RunEvent::Activity {
                    task: task.to_string(),
                    attempt,
                    activity,
                })
                .await;
        }
        StreamEvent::Text(text) => {
            if let Some(activity) = crate::agent::stream::text_activity(&text) {
                let _ = events
                    .send(RunEvent::Activity {
                        task: task.to_string(),
                        attempt,
                        activity,
                    })
                    .await;
            }
        }
        _ => {}
    }
}
