//! The dispatcher: the one owner of run state. It starts attempts on pools,
//! applies what executors report, persists state at transitions, and tells
//! reporters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use super::credentials::{Availability, Credentials, DEFAULT_LOGIN};
use super::executor::{AttemptJob, run_attempt};
use super::start_from;
use super::{AttemptReport, RunEvent, StopLevel};
use crate::agent::Redactor;
use crate::agent::spec::{self, SpecInput};
use crate::backend::{Backend, PrepareJob};
use crate::config::Config;
use crate::error::Exit;
use crate::project::Project;
use crate::prompt::Template;
use crate::report::{Event, PoolInfo, Reporter};
use crate::state::{Attempt, NextAttempt, Outcome, State, StateStore, TaskStatus};
use crate::tasks::{StartFrom, Task, TaskSet, dependency_order};

/// Quick failures in a row that stop dispatching.
const BREAKER_LIMIT: u32 = 3;
/// An attempt that fails this fast, without a result, is a "quick failure".
const QUICK_FAILURE: Duration = Duration::from_secs(30);
/// Times a task may go back to the queue for reasons not its own.
const REQUEUE_CAP: u32 = 8;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub supervise: bool,
    pub max_retries: u32,
    /// Exit (5) instead of waiting when every credential is parked.
    pub no_wait: bool,
    /// Live progress bars when stdout is a terminal (plain lines otherwise);
    /// read by the command that picks the reporters, not by the dispatcher.
    pub progress: bool,
}

pub struct RunSummary {
    pub exit: Exit,
    pub stopped_because: Option<String>,
    pub interrupted: bool,
}

struct PoolRt {
    name: String,
    slots: usize,
    running: usize,
    backend: Arc<Backend>,
    /// A pool that lost its host is not used again in this run.
    down: Option<String>,
}

struct Slot {
    pool: usize,
    credential: Option<String>,
    stop: watch::Sender<StopLevel>,
    started: tokio::time::Instant,
}

pub struct Dispatcher {
    config: Arc<Config>,
    log_root: std::path::PathBuf,
    store: StateStore,
    state: State,
    tasks: TaskSet,
    scope: Option<std::collections::HashSet<String>>,
    order: Vec<usize>,
    template: Option<Template>,
    pools: Vec<PoolRt>,
    creds: Credentials,
    redactor: Arc<Redactor>,
    reporters: Vec<Box<dyn Reporter>>,
    tx: mpsc::Sender<RunEvent>,
    rx: mpsc::Receiver<RunEvent>,
    running: HashMap<String, Slot>,
    opts: RunOptions,
    project_key: String,
    draining: bool,
    stop_level: StopLevel,
    interrupts: u32,
    next_start: tokio::time::Instant,
    quick_failures: u32,
    stopped_because: Option<(String, Exit)>,
    run_cost: f64,
    overloads: u32,
    waiting_note: Option<DateTime<Utc>>,
    dirty: bool,
}

pub struct DispatcherParts {
    pub project: Project,
    pub state: State,
    pub tasks: TaskSet,
    /// The tasks this run may start (all of `tasks` when None).
    pub scope: Option<std::collections::HashSet<String>>,
    pub template: Option<Template>,
    pub backends: Vec<Arc<Backend>>,
    pub creds: Credentials,
    pub redactor: Arc<Redactor>,
    pub reporters: Vec<Box<dyn Reporter>>,
    pub opts: RunOptions,
    pub project_key: String,
}

impl Dispatcher {
    pub fn new(p: DispatcherParts) -> Dispatcher {
        let order =
            dependency_order(&p.tasks.tasks).unwrap_or_else(|_| (0..p.tasks.tasks.len()).collect());
        let pools = p
            .project
            .config
            .pools
            .iter()
            .zip(p.backends)
            .map(|(cfg, backend)| PoolRt {
                name: cfg.name.clone(),
                slots: backend.slots(cfg),
                running: 0,
                down: backend.down_reason(),
                backend,
            })
            .collect();
        let (tx, rx) = mpsc::channel(1024);
        let log_root = p.project.state_dir().join("logs");
        Dispatcher {
            config: Arc::new(p.project.config.clone()),
            log_root,
            store: p.project.store.clone(),
            state: p.state,
            tasks: p.tasks,
            scope: p.scope,
            order,
            template: p.template,
            pools,
            creds: p.creds,
            redactor: p.redactor,
            reporters: p.reporters,
            tx,
            rx,
            running: HashMap::new(),
            opts: p.opts,
            project_key: p.project_key,
            draining: false,
            stop_level: StopLevel::Run,
            interrupts: 0,
            next_start: tokio::time::Instant::now(),
            quick_failures: 0,
            stopped_because: None,
            run_cost: 0.0,
            overloads: 0,
            waiting_note: None,
            dirty: false,
        }
    }

    fn emit(&mut self, event: Event) {
        for r in &mut self.reporters {
            r.event(&event);
        }
    }

    fn save(&mut self) {
        if !self.dirty {
            return;
        }
        if let Err(e) = self.store.save(&self.state) {
            let message = format!("could not save state: {e}");
            self.emit(Event::Notice { message });
        }
        self.dirty = false;
    }

    fn in_scope(&self, id: &str) -> bool {
        self.tasks.get(id).is_some() && self.scope.as_ref().is_none_or(|s| s.contains(id))
    }

    pub async fn run(mut self) -> RunSummary {
        let pending = self
            .state
            .tasks
            .iter()
            .filter(|t| self.in_scope(&t.id) && t.status == TaskStatus::Pending)
            .count();
        let run_id = self
            .state
            .run
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let pools = self
            .config
            .pools
            .iter()
            .map(|p| PoolInfo {
                name: p.name.clone(),
                backend: p.backend.kind().into(),
                slots: p.max_worktrees,
            })
            .collect();
        self.emit(Event::RunStarted {
            run_id,
            tasks: self.tasks.tasks.len(),
            pending,
            pools,
        });
        let queued: Vec<String> = self
            .order
            .iter()
            .map(|&i| &self.tasks.tasks[i].id)
            .filter(|id| {
                self.in_scope(id)
                    && self
                        .state
                        .task(id)
                        .is_some_and(|r| r.status == TaskStatus::Pending)
            })
            .cloned()
            .collect();
        for task in queued {
            self.emit(Event::Queued { task });
        }
        let mut sigint = signal(SignalKind::interrupt()).ok();
        let mut sigterm = signal(SignalKind::terminate()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            self.update_blocked();
            self.dispatch_ready();
            self.save();
            if self.is_done() {
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                Some(ev) = self.rx.recv() => self.apply(ev),
                _ = recv_signal(&mut sigint) => self.interrupt(),
                _ = recv_signal(&mut sigterm) => self.stop_requested(),
                _ = tokio::time::sleep_until(wake) => {}
                _ = tick.tick() => {
                    for r in &mut self.reporters { r.tick(); }
                }
            }
        }
        self.finish()
    }

    /// The earliest time something may become startable.
    fn next_wake(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        if self.next_start > now {
            wake = wake.min(self.next_start);
        }
        let to_instant = |t: DateTime<Utc>| {
            let d = (t - Utc::now()).to_std().unwrap_or_default();
            now + d + Duration::from_millis(50)
        };
        if let Some(b) = self.state.backoff_until {
            wake = wake.min(to_instant(b));
        }
        for c in self.state.credentials.values() {
            if let Some(t) = c.parked_until {
                wake = wake.min(to_instant(t));
            }
        }
        wake
    }

    /// Pending tasks whose dependencies failed for good become blocked.
    fn update_blocked(&mut self) {
        let mut changes = Vec::new();
        for &i in &self.order {
            let task = &self.tasks.tasks[i];
            if !self.in_scope(&task.id) {
                continue;
            }
            let Some(rec) = self.state.task(&task.id) else {
                continue;
            };
            if rec.status != TaskStatus::Pending
                && !matches!(rec.status, TaskStatus::Blocked { .. })
            {
                continue;
            }
            let failed: Vec<String> = task
                .depends_on
                .iter()
                .filter(|d| {
                    self.state.task(d).is_some_and(|r| {
                        matches!(&r.status, TaskStatus::Done { outcome } if *outcome != Outcome::Success)
                            || matches!(r.status, TaskStatus::Blocked { .. })
                    })
                })
                .cloned()
                .collect();
            match (&rec.status, failed.is_empty()) {
                (TaskStatus::Pending, false) => changes.push((
                    task.id.clone(),
                    TaskStatus::Blocked {
                        on: failed,
                        reason: None,
                    },
                )),
                // Blocked with a reason (its dependencies' work conflicts)
                // stays blocked for this run: trying again would conflict again.
                (TaskStatus::Blocked { reason: None, .. }, true) => {
                    changes.push((task.id.clone(), TaskStatus::Pending))
                }
                _ => {}
            }
        }
        for (id, status) in changes {
            if let TaskStatus::Blocked { on, .. } = &status {
                let on = on.clone();
                self.emit(Event::Blocked {
                    task: id.clone(),
                    on,
                    reason: None,
                });
            }
            if let Some(rec) = self.state.task_mut(&id) {
                let _ = rec.transition(status);
                self.dirty = true;
            }
        }
    }

    fn ready(&self, id: &str) -> bool {
        let Some(task) = self.tasks.get(id) else {
            return false;
        };
        self.in_scope(id)
            && self
                .state
                .task(id)
                .is_some_and(|r| r.status == TaskStatus::Pending)
            && task
                .depends_on
                .iter()
                .all(|d| self.state.task(d).is_some_and(|r| r.status.is_success()))
    }

    fn dispatch_ready(&mut self) {
        if self.draining || self.stop_level != StopLevel::Run || self.stopped_because.is_some() {
            return;
        }
        if let Some(b) = self.state.backoff_until {
            if b > Utc::now() {
                return;
            }
            self.state.backoff_until = None;
            self.dirty = true;
        }
        loop {
            if self.running.len() >= self.config.max_agents
                || tokio::time::Instant::now() < self.next_start
            {
                return;
            }
            let Some(id) = self
                .order
                .iter()
                .map(|&i| self.tasks.tasks[i].id.clone())
                .find(|id| self.ready(id))
            else {
                return;
            };
            let preferred = self
                .state
                .task(&id)
                .and_then(|r| r.next.as_ref())
                .and_then(|n| n.resume_pool.clone());
            let Some((pool, injected)) = self.choose_pool(preferred.as_deref()) else {
                return;
            };
            self.start(&id, pool, injected);
            if !self.config.stagger_delay.is_zero() {
                self.next_start = tokio::time::Instant::now() + self.config.stagger_delay;
            }
        }
    }

    /// The least-loaded pool with a free slot and a usable credential.
    fn choose_pool(&mut self, preferred: Option<&str>) -> Option<(usize, Option<spec::Injected>)> {
        let now = Utc::now();
        let mut candidates: Vec<(usize, Option<spec::Injected>)> = Vec::new();
        let mut parked_until: Option<DateTime<Utc>> = None;
        let mut unusable: Vec<String> = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            if p.down.is_some() || p.running >= p.slots {
                continue;
            }
            match self
                .creds
                .available(&self.config.pools[i].credential, &self.state, now)
            {
                Availability::Ready(c) => candidates.push((i, c)),
                Availability::ParkedUntil(t) => {
                    parked_until = Some(parked_until.map_or(t, |x| x.min(t)))
                }
                Availability::Unusable(why) => unusable.push(format!("pool {}: {why}", p.name)),
            }
        }
        if candidates.is_empty() {
            if let Some(t) = parked_until
                && self.running.is_empty()
                && self.waiting_note != Some(t)
            {
                self.waiting_note = Some(t);
                if self.opts.no_wait {
                    self.stopped_because = Some((
                        format!(
                            "every usable credential is parked until {} and --no-wait was given",
                            t.with_timezone(&chrono::Local).format("%H:%M:%S")
                        ),
                        Exit::CouldNotStart,
                    ));
                } else {
                    let secs = (t - now).num_seconds().max(0);
                    let message = format!(
                        "every usable credential is parked: waiting until {} ({}); Ctrl-C to stop",
                        t.with_timezone(&chrono::Local).format("%H:%M:%S"),
                        crate::report::human_duration(secs as f64)
                    );
                    self.emit(Event::Notice { message });
                    self.emit(Event::Waiting { until: t });
                }
            }
            return None;
        }
        if let Some(name) = preferred
            && let Some(pos) = candidates
                .iter()
                .position(|(i, _)| self.pools[*i].name == name)
        {
            return Some(candidates.swap_remove(pos));
        }
        candidates.sort_by(|(a, _), (b, _)| {
            let la = self.pools[*a].running as f64 / self.pools[*a].slots as f64;
            let lb = self.pools[*b].running as f64 / self.pools[*b].slots as f64;
            la.partial_cmp(&lb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        });
        Some(candidates.swap_remove(0))
    }

    fn start(&mut self, id: &str, pool: usize, injected: Option<spec::Injected>) {
        let Some(task) = self.tasks.get(id).cloned() else {
            return;
        };
        let Some(rec) = self.state.task(id) else {
            return;
        };
        let number = rec.attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
        let next = rec.next.clone().unwrap_or(NextAttempt {
            fresh: false,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: None,
            base: None,
        });
        let mut base = self.config.workspace.base.clone();
        if let Some(given) = &next.base {
            // `land --resolve`: redo from the target as it is now.
            base = given.clone();
        } else if task.start_from == StartFrom::Dependencies && !task.depends_on.is_empty() {
            match self.dependency_start(&task, next.fresh) {
                Ok(Some(start)) => base = start.to_string(),
                Ok(None) => {}
                Err(reason) => {
                    self.block_with_reason(id, reason);
                    return;
                }
            }
        }
        let pool_name = self.pools[pool].name.clone();
        let base_prompt =
            match crate::prompt::render(self.template.as_ref(), &task, &self.tasks.source) {
                Ok(p) => p,
                Err(e) => {
                    self.finish_without_running(
                        id,
                        pool,
                        Outcome::Failed {
                            reason: e.to_string(),
                        },
                    );
                    return;
                }
            };
        let resume = next
            .resume_session
            .clone()
            .filter(|_| next.resume_pool.as_deref() == Some(pool_name.as_str()) && !next.fresh);
        let prompt = crate::retry::prompt_for(&base_prompt, &next, resume.is_some());
        let tag = format!("{}:{}:{}", self.project_key, id, number);
        let spec = spec::build(SpecInput {
            config: &self.config,
            pool: &self.config.pools[pool],
            credential: injected.as_ref(),
            task_id: id,
            prompt,
            tag: tag.clone(),
            resume: resume.as_deref(),
        });
        let now = Utc::now();
        let credential = injected.as_ref().map(|c| c.name.clone());
        let rec = self.state.task_mut(id).expect("checked above");
        rec.attempts.push(Attempt {
            number,
            pool: pool_name.clone(),
            credential: credential.clone(),
            started_at: now,
            ended_at: None,
            start_commit: None,
            end_tip: None,
            session_id: None,
            resumed_from: resume.clone(),
            outcome: None,
            exit_code: None,
            result: None,
            leftovers_committed: false,
            tag,
        });
        let _ = rec.transition(TaskStatus::Running {
            attempt: number,
            pool: pool_name.clone(),
            started_at: now,
        });
        let fresh = next.fresh;
        rec.next = None;
        let worktree = rec.worktree.display().to_string();
        self.dirty = true;

        let (stop_tx, stop_rx) = watch::channel(self.stop_level);
        self.pools[pool].running += 1;
        if let Some(c) = &credential {
            self.creds.acquire(c);
        }
        self.running.insert(
            id.to_string(),
            Slot {
                pool,
                credential: credential.clone(),
                stop: stop_tx,
                started: tokio::time::Instant::now(),
            },
        );
        let job = AttemptJob {
            task: id.to_string(),
            attempt: number,
            prepare: PrepareJob {
                task: id.to_string(),
                branch: task.branch.clone(),
                base,
                fresh,
            },
            backend: self.pools[pool].backend.clone(),
            spec,
            credential: credential.clone(),
            log_path: self.log_root.join(id).join(format!("{number}.log")),
            redactor: self.redactor.clone(),
            timeout: self.config.agent_timeout,
            stall: self.config.stall_timeout,
            grace: self.config.kill_grace,
        };
        tokio::spawn(run_attempt(job, self.tx.clone(), stop_rx));
        self.emit(Event::Started {
            task: id.to_string(),
            attempt: number,
            pool: pool_name,
            worktree,
            credential,
            resumed: resume.is_some(),
        });
    }

    /// The start of a task that starts from its dependencies: None when its
    /// branch exists and is kept (a retry builds on it; `--fresh` rebuilds the
    /// start), or why the dependencies' work cannot be combined.
    fn dependency_start(&self, task: &Task, fresh: bool) -> Result<Option<git2::Oid>, String> {
        let repo = crate::git::open(&self.config.workspace.repo).map_err(|e| e.to_string())?;
        let exists = crate::git::branch_tip(&repo, &task.branch)
            .map_err(|e| e.to_string())?
            .is_some();
        if exists && !fresh {
            return Ok(None);
        }
        let base = crate::git::resolve_commit(&repo, &self.config.workspace.base)
            .map_err(|e| e.to_string())?;
        let deps = start_from::closure(&self.tasks, &self.order, &task.id);
        let ranges = start_from::ranges(&self.state, &deps)?;
        // A few in-memory cherry-picks: short enough to do in the loop.
        start_from::build(&repo, base, &ranges).map(Some)
    }

    /// The task cannot start, for a reason that retrying in this run would not change.
    fn block_with_reason(&mut self, id: &str, reason: String) {
        let on = self
            .tasks
            .get(id)
            .map(|t| t.depends_on.clone())
            .unwrap_or_default();
        if let Some(rec) = self.state.task_mut(id) {
            let _ = rec.transition(TaskStatus::Blocked {
                on: on.clone(),
                reason: Some(reason.clone()),
            });
            self.dirty = true;
        }
        self.emit(Event::Blocked {
            task: id.to_string(),
            on,
            reason: Some(reason),
        });
    }

    /// An attempt that ends before anything ran (e.g. its prompt cannot render).
    fn finish_without_running(&mut self, id: &str, _pool: usize, outcome: Outcome) {
        if let Some(rec) = self.state.task_mut(id) {
            let _ = rec.transition(TaskStatus::Done {
                outcome: outcome.clone(),
            });
            self.dirty = true;
        }
        self.emit(Event::Finished {
            task: id.to_string(),
            attempt: 0,
            outcome,
            duration_secs: 0.0,
            cost_usd: 0.0,
            turns: 0,
            commits: 0,
        });
    }

    fn apply(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Started {
                task,
                attempt,
                worktree,
                start_commit,
                created_branch,
                note,
            } => {
                if let Some(rec) = self.state.task_mut(&task) {
                    rec.worktree = worktree;
                    if created_branch {
                        rec.branch_created = true;
                    }
                    if let Some(a) = rec.attempt_mut(attempt) {
                        a.start_commit = Some(start_commit);
                    }
                    self.dirty = true;
                }
                if let Some(message) = note {
                    self.emit(Event::Notice { message });
                }
            }
            RunEvent::Session {
                task,
                attempt,
                session_id,
            } => {
                if let Some(a) = self
                    .state
                    .task_mut(&task)
                    .and_then(|r| r.attempt_mut(attempt))
                {
                    a.session_id = Some(session_id);
                    self.dirty = true;
                }
            }
            RunEvent::Activity {
                task,
                attempt,
                activity,
            } => {
                let activity = self.redactor.redact(&activity).into_owned();
                self.emit(Event::Activity {
                    task,
                    attempt,
                    activity,
                });
            }
            RunEvent::Stalled {
                task,
                attempt,
                quiet_secs,
            } => self.emit(Event::Stalled {
                task,
                attempt,
                quiet_secs,
            }),
            RunEvent::Finished {
                task,
                attempt,
                report,
            } => self.finished(&task, attempt, *report),
        }
    }

    fn finished(&mut self, id: &str, attempt: u32, report: AttemptReport) {
        let slot = self.running.remove(id);
        if let Some(s) = &slot {
            self.pools[s.pool].running = self.pools[s.pool].running.saturating_sub(1);
            if let Some(c) = &s.credential {
                self.creds.release(c);
            }
        }
        let quick = slot
            .as_ref()
            .is_some_and(|s| s.started.elapsed() < QUICK_FAILURE);
        let credential = slot.as_ref().and_then(|s| s.credential.clone());
        let now = Utc::now();
        let mut outcome = report.outcome.clone();
        let cost = report
            .result
            .as_ref()
            .and_then(|r| r.total_cost_usd)
            .unwrap_or(0.0);
        let turns = report
            .result
            .as_ref()
            .and_then(|r| r.num_turns)
            .unwrap_or(0);
        self.run_cost += cost;

        // A resume the agent could not find: start fresh, without counting it.
        let resumed = self
            .state
            .task(id)
            .and_then(|r| r.attempts.iter().find(|a| a.number == attempt))
            .is_some_and(|a| a.resumed_from.is_some());
        let lost_session =
            resumed && report.no_conversation && !matches!(outcome, Outcome::Success);
        if lost_session {
            outcome = Outcome::SpawnFailed {
                reason: "the session to resume no longer exists; starting fresh".into(),
            };
        }

        let Some(rec) = self.state.task_mut(id) else {
            return;
        };
        if let Some(a) = rec.attempt_mut(attempt) {
            a.ended_at = Some(now);
            a.outcome = Some(outcome.clone());
            a.exit_code = report.exit_code;
            a.result = report.result.clone();
            if report.session_id.is_some() {
                a.session_id = report.session_id.clone();
            }
            if a.start_commit.is_none() {
                a.start_commit = report.start_commit.clone();
            }
            a.end_tip = report.end_tip.clone();
            a.leftovers_committed = report.leftovers_committed;
        }
        self.dirty = true;

        // Breaker: quick failures without a result in a row stop dispatching.
        let quick_failure = quick
            && report.result.is_none()
            && matches!(
                outcome,
                Outcome::SpawnFailed { .. } | Outcome::Failed { .. }
            )
            && !lost_session;
        let quick_failure =
            quick_failure || matches!(outcome, Outcome::CredentialRejected { .. }) && quick;
        if quick_failure {
            self.quick_failures += 1;
        } else if report.result.is_some() || matches!(outcome, Outcome::Success) {
            self.quick_failures = 0;
        }

        let max_attempts = 1 + self.opts.max_retries;
        let requeue_reason: Option<String>;
        let rec = self.state.task_mut(id).expect("present");
        let status = match &outcome {
            Outcome::Success => {
                requeue_reason = None;
                TaskStatus::Done {
                    outcome: outcome.clone(),
                }
            }
            Outcome::Failed { .. } | Outcome::TimedOut | Outcome::Stalled => {
                let used = rec.counted_failures();
                if self.opts.supervise && used < max_attempts {
                    rec.next = Some(crate::retry::next_after_failure(
                        rec,
                        attempt,
                        &self.config,
                        &self.log_root,
                    ));
                    requeue_reason = Some(format!(
                        "{}; retry {used} of {}",
                        outcome.describe(),
                        self.opts.max_retries
                    ));
                    TaskStatus::Pending
                } else {
                    requeue_reason = None;
                    TaskStatus::Done {
                        outcome: outcome.clone(),
                    }
                }
            }
            Outcome::Interrupted => {
                requeue_reason = None;
                TaskStatus::Done {
                    outcome: outcome.clone(),
                }
            }
            Outcome::HostLost { .. } if !self.opts.supervise => {
                requeue_reason = None;
                TaskStatus::Done {
                    outcome: outcome.clone(),
                }
            }
            Outcome::SpawnFailed { .. }
            | Outcome::RateLimited { .. }
            | Outcome::Overloaded
            | Outcome::CredentialRejected { .. }
            | Outcome::HostLost { .. } => {
                rec.requeues += 1;
                if lost_session {
                    // Start fresh, carrying the context of the attempt it meant to resume.
                    let resumed_from = rec
                        .attempts
                        .iter()
                        .rev()
                        .find(|a| a.number < attempt && a.session_id.is_some())
                        .map(|a| a.number)
                        .unwrap_or(attempt);
                    let mut next = crate::retry::next_after_failure(
                        rec,
                        resumed_from,
                        &self.config,
                        &self.log_root,
                    );
                    next.resume_session = None;
                    rec.next = Some(next);
                }
                if rec.requeues > REQUEUE_CAP {
                    requeue_reason = None;
                    TaskStatus::Done {
                        outcome: outcome.clone(),
                    }
                } else {
                    requeue_reason = Some(outcome.describe());
                    TaskStatus::Pending
                }
            }
        };
        let _ = rec.transition(status.clone());
        let commits = report.new_commits;
        self.emit(Event::Finished {
            task: id.to_string(),
            attempt,
            outcome: outcome.clone(),
            duration_secs: report.duration_secs,
            cost_usd: cost,
            turns,
            commits,
        });
        if let Some(reason) = requeue_reason {
            self.emit(Event::Requeued {
                task: id.to_string(),
                reason,
            });
        }

        // What the outcome says about credentials, pools and the API.
        match &outcome {
            Outcome::RateLimited { resets_at, .. } => {
                let name = credential.clone().unwrap_or_else(|| DEFAULT_LOGIN.into());
                self.park(&name, *resets_at, "rate limited");
            }
            Outcome::CredentialRejected { reason, .. } => {
                let name = credential.clone().unwrap_or_else(|| DEFAULT_LOGIN.into());
                let entry = self.state.credentials.entry(name.clone()).or_default();
                entry.disabled = Some(reason.clone());
                self.emit(Event::CredentialDisabled {
                    credential: name,
                    reason: reason.clone(),
                });
            }
            Outcome::Overloaded => {
                self.overloads += 1;
                let secs = (30u64 << self.overloads.min(5)).min(600);
                let until = now + chrono::Duration::seconds(secs as i64);
                self.state.backoff_until = Some(until);
                self.emit(Event::Notice {
                    message: format!("the API is overloaded (529): pausing new agents for {secs}s"),
                });
            }
            Outcome::HostLost { reason } => {
                if let Some(s) = &slot
                    && self.config.pools[s.pool].backend.kind() != "local"
                {
                    self.pools[s.pool].down = Some(reason.clone());
                    let message = format!(
                        "pool {} is not used again in this run: {reason}",
                        self.pools[s.pool].name
                    );
                    self.emit(Event::Notice { message });
                }
            }
            Outcome::Success => {
                self.overloads = 0;
            }
            _ => {}
        }

        if self.quick_failures >= BREAKER_LIMIT && self.stopped_because.is_none() {
            let reason = format!(
                "dispatch stopped: {} attempts in a row failed within {}s of starting; the last one {}",
                self.quick_failures,
                QUICK_FAILURE.as_secs(),
                outcome.describe()
            );
            self.emit(Event::Notice {
                message: reason.clone(),
            });
            self.stopped_because = Some((reason, Exit::CouldNotStart));
        }
        if let Some(limit) = self.config.max_cost_usd
            && self.run_cost >= limit
            && self.stopped_because.is_none()
        {
            let reason = format!(
                "the run has cost ${:.2}, reaching max_cost_usd = {limit}: no new agents start; running ones finish",
                self.run_cost
            );
            self.emit(Event::Notice {
                message: reason.clone(),
            });
            self.stopped_because = Some((reason, Exit::TasksFailed));
        }
    }

    fn park(&mut self, name: &str, resets_at: Option<DateTime<Utc>>, why: &str) {
        let now = Utc::now();
        let entry = self.state.credentials.entry(name.to_string()).or_default();
        let until = match resets_at {
            Some(t) if t > now => {
                entry.backoff_level = 0;
                t
            }
            _ => {
                let secs = (60u64 << entry.backoff_level.min(6)).min(3600);
                entry.backoff_level += 1;
                now + chrono::Duration::seconds(secs as i64)
            }
        };
        entry.parked_until = Some(until);
        self.dirty = true;
        self.emit(Event::CredentialParked {
            credential: name.to_string(),
            until,
            reason: why.to_string(),
        });
    }

    fn interrupt(&mut self) {
        self.interrupts += 1;
        match self.interrupts {
            1 => {
                self.draining = true;
                let n = self.running.len();
                let message = if n == 0 {
                    "interrupted: stopping".to_string()
                } else {
                    format!(
                        "interrupted: no new agents will start; {n} running agent(s) may finish. Ctrl-C again to stop them, a third time to kill them"
                    )
                };
                self.emit(Event::Notice { message });
            }
            2 => self.set_stop(StopLevel::Graceful),
            _ => self.set_stop(StopLevel::Kill),
        }
    }

    /// SIGTERM (`flocks stop`): stop agents gracefully and save.
    fn stop_requested(&mut self) {
        self.draining = true;
        self.interrupts = self.interrupts.max(2);
        self.set_stop(StopLevel::Graceful);
    }

    fn set_stop(&mut self, level: StopLevel) {
        self.draining = true;
        if level <= self.stop_level {
            return;
        }
        self.stop_level = level;
        let n = self.running.len();
        let message = match level {
            StopLevel::Graceful => format!(
                "stopping {n} agent(s): SIGTERM, then SIGKILL after {}s. Ctrl-C again to kill them now",
                self.config.kill_grace.as_secs_f64()
            ),
            StopLevel::Kill => format!("killing {n} agent(s)"),
            StopLevel::Run => return,
        };
        self.emit(Event::Notice { message });
        for slot in self.running.values() {
            let _ = slot.stop.send(level);
        }
    }

    fn is_done(&mut self) -> bool {
        if !self.running.is_empty() {
            return false;
        }
        if self.draining || self.stopped_because.is_some() {
            return true;
        }
        let ready: Vec<String> = self
            .tasks
            .tasks
            .iter()
            .map(|t| t.id.clone())
            .filter(|id| self.ready(id))
            .collect();
        if ready.is_empty() {
            return true;
        }
        // Something is ready but nothing runs: is any pool ever usable?
        let now = Utc::now();
        let mut reasons = Vec::new();
        let mut any_waitable = false;
        for (i, p) in self.pools.iter().enumerate() {
            if let Some(d) = &p.down {
                reasons.push(format!("pool {}: {d}", p.name));
                continue;
            }
            match self
                .creds
                .available(&self.config.pools[i].credential, &self.state, now)
            {
                Availability::Ready(_) | Availability::ParkedUntil(_) => any_waitable = true,
                Availability::Unusable(why) => reasons.push(format!("pool {}: {why}", p.name)),
            }
        }
        if !any_waitable {
            let reason = format!("no pool can run agents: {}", reasons.join("; "));
            self.emit(Event::Notice {
                message: reason.clone(),
            });
            self.stopped_because = Some((reason, Exit::CouldNotStart));
            return true;
        }
        false
    }

    fn finish(mut self) -> RunSummary {
        // Tasks that can no longer start because of a failed dependency.
        self.update_blocked();
        if let Some(run) = self.state.run.as_mut() {
            run.ended_at = Some(Utc::now());
        }
        self.dirty = true;
        self.save();
        let (mut succeeded, mut failed, mut blocked, mut pending) = (0, 0, 0, 0);
        for t in self.tasks.tasks.iter().filter(|t| self.in_scope(&t.id)) {
            match self.state.task(&t.id).map(|r| &r.status) {
                Some(s) if s.is_success() => succeeded += 1,
                Some(TaskStatus::Blocked { .. }) => blocked += 1,
                Some(TaskStatus::Pending)
                | Some(TaskStatus::Done {
                    outcome: Outcome::Interrupted,
                }) => pending += 1,
                _ => failed += 1,
            }
        }
        let interrupted = self.interrupts > 0;
        let event = Event::RunFinished {
            succeeded,
            failed,
            blocked,
            pending,
            cost_usd: self.run_cost,
            interrupted,
        };
        self.emit(event);
        for r in &mut self.reporters {
            r.finish();
        }
        let exit = if interrupted {
            Exit::Interrupted
        } else if let Some((_, exit)) = &self.stopped_because {
            *exit
        } else if failed + blocked + pending == 0 {
            Exit::Ok
        } else {
            Exit::TasksFailed
        };
        RunSummary {
            exit,
            stopped_because: self.stopped_because.map(|(r, _)| r),
            interrupted,
        }
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
