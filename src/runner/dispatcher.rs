//! The dispatcher: the one owner of run state. It starts attempts on pools,
//! applies what executors report, persists state at transitions, and tells
//! reporters.

mod outcome;
mod schedule;
mod stop;

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
    backend: Arc<dyn Backend>,
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
    pub backends: Vec<Arc<dyn Backend>>,
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

    fn apply(&mut self, ev: RunEvent) {
        match ev {
            RunEvent::Started {
                task,
                attempt,
                worktree,
                start_commit,
                origin,
                created_branch,
                note,
            } => {
                if let Some(rec) = self.state.task_mut(&task) {
                    rec.worktree = worktree;
                    rec.origin = Some(origin);
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
