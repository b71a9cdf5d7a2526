//! One attempt, start to end: prepare the worktree, set it up, start the agent on its
//! backend, stream its output into the log, enforce timeout, stall and stop
//! (through `watch.rs`, the one stop-escalation loop), commit leftovers,
//! classify, and report to the dispatcher.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::sink::OutputSink;
use super::watch::Why;
use super::{AttemptReport, RunEvent, StopLevel};
use crate::agent::classify::{AttemptFacts, EndedBy};
use crate::agent::{AgentSpec, Redactor, StreamEvent, classify};
use crate::backend::{Backend, Chunk, ExitInfo, PrepareError, PrepareJob, Running, Ticket};
use crate::state::{Job, Outcome};

pub(crate) struct AttemptJob {
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
    /// The run's host `.git` guards (the task's branch is exempt while it runs).
    pub guards: Arc<crate::guard::Guards>,
}

/// The attempt's end is already reported (a step ended it early).
struct Reported;

/// How a step that ends the attempt early undoes what came before it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Undo {
    /// Nothing was prepared.
    Nothing,
    /// flocks is done moving the branch.
    Settle,
    /// The backend lets go of the prepared worktree, then settle.
    Abandon,
}

/// One attempt as it runs: what every step needs.
struct Attempt {
    job: AttemptJob,
    events: mpsc::Sender<RunEvent>,
    /// When it started running (after its scheduler's queue, if any).
    started: Instant,
    /// How long a scheduler kept the attempt waiting (Slurm pools).
    pending: Option<f64>,
}

/// How the agent ended, as the watch saw it.
struct AgentEnd {
    exit: ExitInfo,
    ended_by: EndedBy,
    /// The proxy said the agent's first request could not reach the model API.
    unreachable: Option<String>,
}

/// What `backend::finish` brought back.
struct TakenBack {
    finished: Option<crate::backend::Finished>,
    /// What the task holds beyond its origin, whichever attempt made it.
    task_commits: usize,
    /// Why the work could not be read back.
    error: Option<String>,
}

/// Run one attempt, step by step (open the log, prepare, set up, spawn,
/// watch, finish, count, release); the dispatcher hears `Started`, then
/// `Finished` (a step that ends it early sends that itself).
pub(crate) async fn run_attempt(
    mut job: AttemptJob,
    events: mpsc::Sender<RunEvent>,
    mut stop: watch::Receiver<StopLevel>,
) {
    let mut spec = std::mem::take(&mut job.spec);
    let mut a = Attempt {
        job,
        events,
        started: Instant::now(),
        pending: None,
    };
    let Ok(mut sink) = a.open_log().await else {
        return;
    };
    let Ok(ws) = a.prepare(&mut sink, &mut stop).await else {
        return;
    };
    let Ok(admission) = a.set_up(&ws, &mut spec, &mut sink, &mut stop).await else {
        return;
    };
    // Where the attempt's time goes (the `finished` event's `phases`).
    let prepared_at = Instant::now();
    let Ok(mut running) = a.spawn(&ws, spec, &mut sink).await else {
        return;
    };
    let spawned_at = Instant::now();
    let end = a.watch(&mut running, admission, &mut sink, &mut stop).await;
    let agent_ended_at = Instant::now();
    let back = a.finish(&ws, &mut sink).await;
    let outcome = a.count(&end, &back, &mut sink);
    let job = a.release(&outcome, &mut sink).await;
    let mut report = a.report(outcome);
    report.exit_code = end.exit.code;
    report.result = sink.parser.result.clone();
    report.session_id = sink.parser.session_id.clone();
    report.start_commit = Some(ws.start_commit.clone());
    if let Some(f) = back.finished {
        report.end_tip = Some(f.tip);
        report.leftovers_committed = f.leftovers_committed;
        report.new_commits = f.new_commits;
    }
    report.no_conversation = sink
        .stderr_tail
        .iter()
        .any(|l| l.contains("No conversation found with session ID"));
    report.job = job;
    report.phases = Some(crate::report::event::Phases {
        prepare_secs: (prepared_at - a.started).as_secs_f64(),
        spawn_secs: (spawned_at - prepared_at).as_secs_f64(),
        agent_secs: (agent_ended_at - spawned_at).as_secs_f64(),
        finish_secs: agent_ended_at.elapsed().as_secs_f64(),
    });
    a.send(report).await;
}

impl Attempt {
    /// A report of `outcome` and nothing else yet.
    fn report(&self, outcome: Outcome) -> AttemptReport {
        AttemptReport::new(outcome, self.started.elapsed().as_secs_f64(), self.pending)
    }

    async fn send(&self, report: AttemptReport) {
        let _ = self
            .events
            .send(RunEvent::Finished {
                task: self.job.task.clone(),
                attempt: self.job.attempt,
                report: Box::new(report),
            })
            .await;
    }

    /// End the attempt before its agent ran: undo, say why in the log,
    /// report `outcome` (at the worktree's start, when there is one).
    async fn end_early(
        &self,
        sink: &mut OutputSink,
        outcome: Outcome,
        note: &str,
        ws: Option<&crate::backend::Workspace>,
        undo: Undo,
    ) -> Reported {
        if undo == Undo::Abandon {
            self.job.backend.abandon(&self.job.task).await;
        }
        if undo != Undo::Nothing {
            crate::backend::settle(&self.job.guards, &self.job.prepare.branch).await;
        }
        sink.note(note);
        let mut r = self.report(outcome);
        if let Some(ws) = ws {
            r.start_commit = Some(ws.start_commit.clone());
            r.end_tip = Some(ws.start_commit.clone());
        }
        r.job = self.job.backend.end(&self.job.task).await;
        self.send(r).await;
        Reported
    }

    /// Open the attempt's log.
    async fn open_log(&self) -> Result<OutputSink, Reported> {
        match OutputSink::create(&self.job.log_path, self.job.redactor.clone()) {
            Ok(s) => Ok(s),
            Err(e) => {
                let reason = format!("cannot write the log {}: {e}", self.job.log_path.display());
                self.send(self.report(Outcome::SpawnFailed { reason }))
                    .await;
                Err(Reported)
            }
        }
    }

    /// Wait for the pool's scheduler (if it has one), prepare the worktree
    /// and say the attempt started.
    async fn prepare(
        &mut self,
        sink: &mut OutputSink,
        stop: &mut watch::Receiver<StopLevel>,
    ) -> Result<crate::backend::Workspace, Reported> {
        // A pool with a scheduler (Slurm) runs the attempt once its job runs:
        // until then it is pending, and a stop ends the wait.
        let ticket = Ticket {
            task: self.job.task.clone(),
            attempt: self.job.attempt,
        };
        let admitted = match wait_for_job(&self.job, &ticket, &self.events, stop, sink).await {
            Admitted::Now => Ok(()),
            Admitted::After(secs) => {
                self.pending = Some(secs);
                self.started = Instant::now();
                Ok(())
            }
            Admitted::Refused(e) => Err(e),
            Admitted::Stopped => {
                let note =
                    "flocks is stopping: the job waiting in the scheduler's queue was cancelled";
                let outcome = Outcome::Interrupted;
                return Err(self
                    .end_early(sink, outcome, note, None, Undo::Nothing)
                    .await);
            }
        };
        let prepared = match admitted {
            Ok(()) => {
                let (guards, backend) = (&self.job.guards, self.job.backend.as_ref());
                crate::backend::prepare(guards, backend, &self.job.prepare).await
            }
            Err(e) => Err(e),
        };
        let ws = match prepared {
            Ok(ws) => ws,
            Err(PrepareError::Failed(e)) => {
                let reason = format!("cannot prepare the worktree: {e}");
                let note = reason.clone();
                let outcome = Outcome::SpawnFailed { reason };
                return Err(self
                    .end_early(sink, outcome, &note, None, Undo::Settle)
                    .await);
            }
            Err(PrepareError::HostLost(reason)) => {
                let note = reason.clone();
                let outcome = Outcome::HostLost { reason };
                return Err(self
                    .end_early(sink, outcome, &note, None, Undo::Settle)
                    .await);
            }
        };
        // The task's origin (`ws.origin`): kept across attempts, unless this
        // attempt created the branch or started it over (`retry --fresh`, a
        // `land --resolve` redo).
        let _ = self
            .events
            .send(RunEvent::Started {
                task: self.job.task.clone(),
                attempt: self.job.attempt,
                worktree: ws.host_path.clone(),
                start_commit: ws.start_commit.clone(),
                origin: ws.origin.clone(),
                created_branch: ws.created_branch,
                note: ws.note.clone(),
            })
            .await;
        Ok(ws)
    }

    /// Admit the attempt to the proxy, then set its worktree up.
    ///
    /// The proxy: a flocks credential becomes a token for it, and with
    /// `[network]` it is the agent's way out. Admitted before the setup (its
    /// commands get the proxy variables, not the token); revoked once the
    /// agent has ended.
    async fn set_up(
        &self,
        ws: &crate::backend::Workspace,
        spec: &mut AgentSpec,
        sink: &mut OutputSink,
        stop: &mut watch::Receiver<StopLevel>,
    ) -> Result<Option<crate::proxy::Admission>, Reported> {
        let (task, attempt) = (&self.job.task, self.job.attempt);
        let backend = self.job.backend.as_ref();
        let (admission, unadmitted) =
            admit_to_proxy(self.job.proxy.as_deref(), backend, ws, task, attempt, spec).await;
        if let Some(a) = &admission {
            sink.also_redact(a.secrets());
        }
        if let Some(reason) = unadmitted {
            let note = format!("could not start the agent: {reason}");
            let outcome = Outcome::SpawnFailed { reason };
            return Err(self
                .end_early(sink, outcome, &note, Some(ws), Undo::Abandon)
                .await);
        }
        let plan = &self.job.setup;
        if let Err(outcome) = super::setup::run(plan, backend, ws, task, spec, sink, stop).await {
            // The agent never started: nothing to commit or measure.
            let note = format!("attempt {attempt} {}", outcome.describe());
            return Err(self
                .end_early(sink, outcome, &note, Some(ws), Undo::Abandon)
                .await);
        }
        Ok(admission)
    }

    /// Start the agent on its backend.
    async fn spawn(
        &self,
        ws: &crate::backend::Workspace,
        spec: AgentSpec,
        sink: &mut OutputSink,
    ) -> Result<Running, Reported> {
        match self.job.backend.spawn(ws, spec).await {
            Ok(r) => Ok(r),
            Err(e) => {
                let note = format!("could not start the agent: {e}");
                let reason = e.to_string();
                let outcome = Outcome::SpawnFailed { reason };
                Err(self
                    .end_early(sink, outcome, &note, Some(ws), Undo::Settle)
                    .await)
            }
        }
    }

    /// Stream the agent's output into the log until it ends, enforcing its
    /// timeout, stall limit, stops and the proxy's word; then revoke its
    /// tokens.
    async fn watch(
        &self,
        running: &mut Running,
        admission: Option<crate::proxy::Admission>,
        sink: &mut OutputSink,
        stop: &mut watch::Receiver<StopLevel>,
    ) -> AgentEnd {
        let limits = super::watch::Limits {
            deadline: self.job.timeout.map(|t| tokio::time::Instant::now() + t),
            stall: self.job.stall,
            grace: self.job.grace,
        };
        let mut watcher = AgentWatcher {
            sink,
            events: &self.events,
            task: &self.job.task,
            attempt: self.job.attempt,
            started: self.started,
            session_sent: false,
            signals_open: admission.is_some(),
            admission,
            unreachable: None,
        };
        let watched = super::watch::watch(running, &limits, stop, &mut watcher).await;
        let ended_by = match watched.why {
            None => EndedBy::Exited,
            Some(Why::TimedOut) => EndedBy::TimedOut,
            Some(Why::Stalled) => EndedBy::Stalled,
            Some(Why::Stop | Why::Asked) => EndedBy::Cancelled,
        };
        // A signal that came with the agent's end (the select took the end first).
        if watcher.unreachable.is_none()
            && let Some(a) = watcher.admission.as_mut()
            && let Ok(crate::proxy::Signal::Unreachable(why)) = a.signals.try_recv()
        {
            watcher.sink.note(&why);
            watcher.unreachable = Some(why);
        }
        // The agent has ended: its tokens die now.
        drop(watcher.admission.take());
        for ev in watcher.sink.finish() {
            let (task, attempt) = (watcher.task, watcher.attempt);
            forward(watcher.events, task, attempt, ev, &mut watcher.session_sent).await;
        }
        AgentEnd {
            exit: watched.exit,
            ended_by,
            unreachable: watcher.unreachable,
        }
    }

    /// Take the attempt's work back (leftovers committed) and count what
    /// the task holds beyond its origin.
    async fn finish(&self, ws: &crate::backend::Workspace, sink: &mut OutputSink) -> TakenBack {
        let (task, attempt) = (&self.job.task, self.job.attempt);
        let backend = self.job.backend.as_ref();
        let branch = &self.job.prepare.branch;
        let guards = &self.job.guards;
        let (finished, error) =
            match crate::backend::finish(guards, backend, ws, task, branch, attempt).await {
                Ok(f) => (Some(f), None),
                Err(e) => (None, Some(e.to_string())),
            };
        let task_commits = match &finished {
            // The attempt started at the task's origin (its first, or one
            // that started over): the backend already counted them.
            Some(f) if ws.origin == ws.start_commit => Ok(f.new_commits),
            Some(f) => {
                let (repo, tip) = (self.job.repo_dir.clone(), f.tip.clone());
                commits_beyond(repo, tip, ws.origin.clone()).await
            }
            None => Ok(0),
        };
        let (task_commits, error) = match (task_commits, error) {
            (Ok(n), e) => (n, e),
            (Err(e), None) => (0, Some(e.to_string())),
            (Err(_), Some(e)) => (0, Some(e)),
        };
        if finished.as_ref().is_some_and(|f| f.leftovers_committed) {
            sink.note(&format!(
                "committed changes the agent left uncommitted (attempt {attempt})"
            ));
        }
        TakenBack {
            finished,
            task_commits,
            error,
        }
    }

    /// The attempt's outcome: how the agent ended and what it left.
    fn count(&self, end: &AgentEnd, back: &TakenBack, sink: &mut OutputSink) -> Outcome {
        let facts = AttemptFacts {
            ended_by: end.ended_by,
            exit_code: end.exit.code,
            result: sink.parser.result.clone(),
            rate_limit: sink.parser.rate_limit.map(|(_, at)| at),
            assistant_error: sink.parser.assistant_error.clone(),
            task_commits: back.task_commits,
            expect_commits: self.job.expect_commits,
            credential: self.job.credential.clone(),
            stderr_tail: sink.stderr_tail.clone(),
            saw_output: sink.saw_stdout,
        };
        let mut outcome = classify(&facts);
        if let Some(lost) = &end.exit.lost
            && end.ended_by == EndedBy::Exited
        {
            outcome = Outcome::HostLost {
                reason: lost.clone(),
            };
        }
        if let Some(why) = &end.unreachable
            && !matches!(outcome, Outcome::Success)
        {
            outcome = Outcome::SpawnFailed {
                reason: why.clone(),
            };
        }
        if let Some(e) = &back.error {
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
        let finished = back.finished.as_ref();
        if let Some(why) = finished.and_then(|f| f.refused.clone()) {
            outcome = Outcome::Failed { reason: why };
        }
        if let Some(changed) = finished.and_then(|f| f.guard_violation.as_ref()) {
            outcome = Outcome::Failed {
                reason: format!(
                    "the agent changed the host repository's git setup ({changed}); flocks restored it"
                ),
            };
        }
        sink.note(&format!(
            "attempt {} {}",
            self.job.attempt,
            outcome.describe()
        ));
        outcome
    }

    /// Let go of the attempt's backend resources: a success's worktree is
    /// released; its job (Slurm pools) ends.
    async fn release(&self, outcome: &Outcome, sink: &mut OutputSink) -> Option<Job> {
        if matches!(outcome, Outcome::Success) {
            self.job.backend.release(&self.job.task).await;
        }
        let ended_job = self.job.backend.end(&self.job.task).await;
        if let Some(j) = &ended_job {
            sink.note(&j.describe());
        }
        ended_job
    }
}

/// The agent, as the watch sees it: its output into the log and to the
/// dispatcher, and the proxy's signals.
struct AgentWatcher<'a> {
    sink: &'a mut OutputSink,
    events: &'a mpsc::Sender<RunEvent>,
    task: &'a str,
    attempt: u32,
    started: Instant,
    session_sent: bool,
    admission: Option<crate::proxy::Admission>,
    signals_open: bool,
    unreachable: Option<String>,
}

impl super::watch::Watcher for AgentWatcher<'_> {
    const WHAT: &'static str = "the agent";

    fn note(&mut self, line: &str) {
        self.sink.note(line);
    }

    async fn output(&mut self, chunk: Chunk) {
        match chunk {
            Chunk::Stdout(bytes) => {
                for ev in self.sink.stdout(&bytes) {
                    forward(
                        self.events,
                        self.task,
                        self.attempt,
                        ev,
                        &mut self.session_sent,
                    )
                    .await;
                }
            }
            Chunk::Stderr(bytes) => self.sink.stderr(&bytes),
            Chunk::Exited(_) => {}
        }
    }

    fn timed_out(&mut self) {
        let after = crate::output::units::duration(self.started.elapsed().as_secs_f64());
        self.sink.note(&format!(
            "agent_timeout_secs reached after {after}: stopping the agent"
        ));
    }

    async fn stalled(&mut self, quiet_secs: f64) {
        self.sink
            .note("no output for stall_timeout_secs: the agent is stalled; stopping it");
        let _ = self
            .events
            .send(RunEvent::Stalled {
                task: self.task.to_string(),
                attempt: self.attempt,
                quiet_secs,
            })
            .await;
    }

    /// The proxy's first word that the model API cannot be reached.
    async fn asks_to_stop(&mut self) -> String {
        loop {
            if !self.signals_open {
                std::future::pending::<()>().await;
            }
            match next_signal(&mut self.admission).await {
                Some(crate::proxy::Signal::Unreachable(why)) if self.unreachable.is_none() => {
                    self.unreachable = Some(why.clone());
                    return why;
                }
                Some(_) => {}
                None => self.signals_open = false,
            }
        }
    }
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
