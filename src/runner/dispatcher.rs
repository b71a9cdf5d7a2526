//! The dispatcher: one `tokio::select!` loop that feeds what happens
//! (executor events, signals, finished dependency starts, wake-ups) to the
//! [`Fleet`] and carries out the effects it returns: spawning executors,
//! building starts off the loop, stopping agents, saving state, telling
//! reporters.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::credentials::Credentials;
use super::executor::{AttemptJob, run_attempt};
use super::fleet::{
    Effect, Fleet, FleetParts, Judged, Now, PoolSlots, PredictResult, RedoError, Start,
};
use super::judge::{JudgeEnv, JudgeError, judge};
use super::start_from::{self, StartError};
use super::{RunEvent, StopLevel, predict};
use crate::agent::Redactor;
use crate::backend::Backend;
use crate::land::predict::Predictor;
use crate::project::Project;
use crate::prompt::Template;
use crate::proxy::ProxyEvent;
use crate::report::{Event, Reporter};
use crate::state::{NextAttempt, State, StateStore};
use crate::tasks::TaskSet;

pub use super::fleet::{RunOptions, RunSummary};

pub struct Dispatcher {
    fleet: Fleet,
    log_root: PathBuf,
    store: StateStore,
    backends: Vec<Arc<dyn Backend>>,
    redactor: Arc<Redactor>,
    reporters: Vec<Box<dyn Reporter>>,
    tx: mpsc::Sender<RunEvent>,
    rx: mpsc::Receiver<RunEvent>,
    /// Each running attempt's stop channel.
    stops: HashMap<String, watch::Sender<StopLevel>>,
    /// Dependency starts being built (git work, off the loop).
    resolving: JoinSet<(String, Result<Option<String>, StartError>)>,
    /// Retries being planned (their log and branch are read off the loop).
    planning: JoinSet<(String, NextAttempt)>,
    /// The conflict prediction being worked out (one at a time), and the
    /// predictor that keeps what it worked out between them.
    predicting: JoinSet<Predicted>,
    predictor: Option<Predictor>,
    /// Set at the run's end: the prediction still being worked out stops.
    predict_cancel: Arc<std::sync::atomic::AtomicBool>,
    /// When the last prediction ended and how long it took: the next one
    /// starts no sooner than twice that after it, so that predictions on a
    /// large fleet of quick tasks take at most a third of a core.
    last_prediction: Option<(std::time::Instant, Duration)>,
    /// Early redos being prepared.
    redoing: JoinSet<(String, Result<NextAttempt, RedoError>)>,
    /// Best-of tasks being judged (git, validation, the judge agent).
    judging: JoinSet<(String, Result<Option<Judged>, JudgeError>)>,
    judge_env: Arc<JudgeEnv>,
    /// Which task each blocking job is for, should one panic.
    jobs: HashMap<tokio::task::Id, String>,
    /// Attempts started since the last save, spawned once their start is
    /// saved: an attempt never acts (creates its branch, runs the agent)
    /// before its record is on disk.
    to_spawn: Vec<(AttemptJob, watch::Receiver<StopLevel>)>,
    /// When the free disk space was last read (for `min_free_disk_gb`).
    disk_read_at: Option<std::time::Instant>,
    disk_unreadable: bool,
    /// Judgings decided since the last save, started once it is on disk.
    to_judge: Vec<super::fleet::JudgeJob>,
    /// The run's model proxy and egress gate, and what it tells the run.
    proxy: Option<Arc<crate::proxy::Proxy>>,
    proxy_events: Option<mpsc::Receiver<ProxyEvent>>,
    /// Repository upkeep (`git::upkeep`), one at a time, off the loop;
    /// attempts ended since the last one was started, and how many make a
    /// wave (the run's slots): one is started per wave.
    upkeep: JoinSet<crate::git::upkeep::Wave>,
    ended_since_upkeep: usize,
    upkeep_wave: usize,
}

/// A prediction as it came back, with how long its git work took.
struct Predicted {
    took: Duration,
    done: Result<(Option<Predictor>, PredictResult), tokio::task::JoinError>,
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
    /// The run's proxy (None: no pool injects a credential and `[network]`
    /// is not set) and its events.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
    pub proxy_events: Option<mpsc::Receiver<ProxyEvent>>,
}

impl Dispatcher {
    pub fn new(p: DispatcherParts) -> Dispatcher {
        let pools: Vec<PoolSlots> = p
            .project
            .config
            .pools
            .iter()
            .zip(&p.backends)
            .map(|(cfg, backend)| PoolSlots {
                name: cfg.name.clone(),
                slots: backend.slots(cfg),
                running: 0,
                down: backend.down_reason(),
                host_loss_takes_pool_down: backend.host_loss_takes_pool_down(),
            })
            .collect();
        let upkeep_wave = pools.iter().map(|p| p.slots).sum::<usize>().max(1);
        let (tx, rx) = mpsc::channel(1024);
        let log_root = p.project.state_dir().join("logs");
        let judge_env = Arc::new(JudgeEnv {
            project: p.project.clone(),
            log_root: log_root.clone(),
            backends: p.backends.clone(),
            redactor: p.redactor.clone(),
            proxy: p.proxy.clone(),
        });
        let fleet = Fleet::new(FleetParts {
            config: Arc::new(p.project.config.clone()),
            state: p.state,
            tasks: p.tasks,
            scope: p.scope,
            template: p.template,
            pools,
            creds: p.creds,
            opts: p.opts,
            project_key: p.project_key,
        });
        Dispatcher {
            fleet,
            log_root,
            store: p.project.store.clone(),
            backends: p.backends,
            redactor: p.redactor,
            reporters: p.reporters,
            tx,
            rx,
            stops: HashMap::new(),
            resolving: JoinSet::new(),
            planning: JoinSet::new(),
            predicting: JoinSet::new(),
            predictor: None,
            predict_cancel: Default::default(),
            last_prediction: None,
            redoing: JoinSet::new(),
            judging: JoinSet::new(),
            judge_env,
            jobs: HashMap::new(),
            to_spawn: Vec::new(),
            disk_read_at: None,
            disk_unreadable: false,
            to_judge: Vec::new(),
            proxy: p.proxy,
            proxy_events: p.proxy_events,
            upkeep: JoinSet::new(),
            ended_since_upkeep: 0,
            upkeep_wave,
        }
    }

    /// Between waves (as many ended attempts as the run has slots), look
    /// at the repository and pack what is due, in the background: never
    /// while a start waits (it runs beside the loop), one at a time.
    fn maybe_upkeep(&mut self) {
        if self.ended_since_upkeep < self.upkeep_wave || !self.upkeep.is_empty() {
            return;
        }
        self.ended_since_upkeep = 0;
        let repo = self.fleet.config().workspace.repo.clone();
        let backends = self.backends.clone();
        self.upkeep.spawn(crate::git::upkeep::wave(repo, backends));
    }

    fn upkeep_done(&mut self, joined: Result<crate::git::upkeep::Wave, tokio::task::JoinError>) {
        match joined {
            Ok(wave) => {
                for e in wave.events() {
                    self.emit(&e);
                }
            }
            Err(e) => {
                let message = format!("internal error, please report it: repository upkeep: {e}");
                self.emit(&Event::Notice { message });
            }
        }
    }

    /// With `min_free_disk_gb`: read the free space of the worktrees' and
    /// `.flocks/`'s filesystems (at most once a second: the tick brings the
    /// next look while dispatch waits) and hand the lower to the fleet.
    fn read_free_disk(&mut self) {
        if self.fleet.config().min_free_disk.is_none()
            || self
                .disk_read_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.disk_read_at = Some(std::time::Instant::now());
        let config = self.fleet.config();
        let dirs = [config.worktrees_dir(), config.state_dir()];
        match crate::disk::lowest_free(&dirs) {
            Ok((free, place)) => {
                let effects = self.fleet.on_free_disk(free.free, &place);
                self.carry_out(effects);
            }
            Err(e) => {
                // Said once: a filesystem that cannot say its free space
                // does not stop the run.
                if !self.disk_unreadable {
                    self.disk_unreadable = true;
                    let message = format!(
                        "cannot read the free disk space of {} ({e}): min_free_disk_gb is not checked",
                        dirs[0].display()
                    );
                    self.emit(&Event::Notice { message });
                }
            }
        }
    }

    fn emit(&mut self, event: &Event) {
        for r in &mut self.reporters {
            r.event(event);
        }
    }

    /// What reporters have to tell people (a failing notifier), as notices.
    fn emit_notices(&mut self) {
        let notices: Vec<String> = self
            .reporters
            .iter_mut()
            .flat_map(|r| r.notices())
            .collect();
        for message in notices {
            let message = self.redactor.redact(&message).into_owned();
            self.emit(&Event::Notice { message });
        }
    }

    /// Persist what the fleet changed: one journal batch, one fsync (group
    /// commit per wake-up); then start the attempts that waited for it.
    fn save(&mut self) {
        if self.fleet.take_dirty()
            && let Err(e) = self.store.commit(self.fleet.state_mut())
        {
            let message = format!("could not save state: {e}");
            self.emit(&Event::Notice { message });
        }
        for (job, stop) in self.to_spawn.drain(..) {
            tokio::spawn(run_attempt(job, self.tx.clone(), stop));
        }
        for job in std::mem::take(&mut self.to_judge) {
            let task = job.task.clone();
            let (stop_tx, stop_rx) = watch::channel(self.fleet.stop_level());
            self.stops.insert(crate::tasks::judge_id(&task), stop_tx);
            let env = self.judge_env.clone();
            let handle = self.judging.spawn(async move {
                let id = job.task.clone();
                (id, judge(job, env, stop_rx).await)
            });
            self.jobs.insert(handle.id(), task);
        }
    }

    /// Carry out what the fleet decided, in order.
    fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Emit(event) => self.emit(&event),
                Effect::Spawn(start) => self.spawn(*start),
                Effect::ResolveStart(job) => {
                    let task = job.task.clone();
                    let handle = self.resolving.spawn_blocking(move || {
                        let start = start_from::dependency_start(&job);
                        (job.task, start)
                    });
                    self.jobs.insert(handle.id(), task);
                }
                Effect::PlanRetry {
                    task,
                    from_attempt,
                    fresh_session,
                    ended,
                } => {
                    let Some(rec) = self.fleet.record(&task).cloned() else {
                        self.fleet.plan_failed(&task);
                        continue;
                    };
                    let config = self.fleet.config().clone();
                    let log_root = self.log_root.clone();
                    let id = task.clone();
                    let handle = self.planning.spawn_blocking(move || {
                        let mut next = crate::retry::next_after_failure(
                            &rec,
                            from_attempt,
                            &config,
                            &log_root,
                        );
                        if fresh_session {
                            next.resume_session = None;
                        }
                        if ended.is_some() {
                            next.ended = ended;
                        }
                        (task, next)
                    });
                    self.jobs.insert(handle.id(), id);
                }
                Effect::Predict(job) => {
                    let config = self.fleet.config();
                    let at = predict::Where {
                        repo: config.workspace.repo.clone(),
                        target: config.workspace.land_target.clone(),
                        state_dir: config.state_dir(),
                    };
                    let predictor = self.predictor.take();
                    let cancel = self.predict_cancel.clone();
                    let wait = self
                        .last_prediction
                        .map(|(end, took)| {
                            (end + 2 * took).saturating_duration_since(std::time::Instant::now())
                        })
                        .unwrap_or_default();
                    self.predicting.spawn(async move {
                        tokio::time::sleep(wait).await;
                        let started = std::time::Instant::now();
                        let done = tokio::task::spawn_blocking(move || {
                            predict::predict(predictor, &job, &at, &cancel)
                        })
                        .await;
                        Predicted {
                            took: started.elapsed(),
                            done,
                        }
                    });
                }
                Effect::PrepareRedo(job) => {
                    let task = job.task.clone();
                    let handle = self.redoing.spawn_blocking(move || {
                        let next = predict::prepare_redo(&job);
                        (job.task, next)
                    });
                    self.jobs.insert(handle.id(), task);
                }
                Effect::StopAgents(level) => {
                    for stop in self.stops.values() {
                        // Fails only when the executor already ended: nothing to stop.
                        let _ = stop.send(level);
                    }
                    // A best-of task's validation being judged stops too.
                    if level > StopLevel::Run && !self.judging.is_empty() {
                        crate::land::interrupt_validation();
                    }
                }
                // Started at the next save, once the task's branch is
                // recorded as flocks' own.
                Effect::Judge(job) => self.to_judge.push(*job),
            }
        }
    }

    fn spawn(&mut self, start: Start) {
        let (stop_tx, stop_rx) = watch::channel(self.fleet.stop_level());
        self.stops.insert(start.task.clone(), stop_tx);
        let config = self.fleet.config();
        let job = AttemptJob {
            log_path: self
                .log_root
                .join(&start.task)
                .join(format!("{}.log", start.attempt)),
            task: start.task,
            attempt: start.attempt,
            prepare: start.prepare,
            backend: self.backends[start.pool].clone(),
            spec: start.spec,
            credential: start.credential,
            redactor: self.redactor.clone(),
            timeout: config.agent_timeout,
            stall: config.stall_timeout,
            grace: config.kill_grace,
            expect_commits: start.expect_commits,
            repo_dir: config.workspace.repo.clone(),
            setup: super::setup::SetupPlan::from_config(config),
            proxy: self.proxy.clone(),
        };
        // Spawned at the next save, once this attempt's start is on disk.
        self.to_spawn.push((job, stop_rx));
    }

    pub async fn run(mut self) -> RunSummary {
        let opening = self.fleet.on_run_started();
        self.carry_out(opening);
        let mut sigint = signal(SignalKind::interrupt()).ok();
        let mut sigterm = signal(SignalKind::terminate()).ok();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            self.read_free_disk();
            let now = Now::current();
            let starts = self.fleet.start_ready(now);
            self.carry_out(starts);
            self.save();
            self.maybe_upkeep();
            let (done, effects) = self.fleet.is_done(now);
            self.carry_out(effects);
            if done {
                break;
            }
            let wake = self.fleet.next_wake(now);
            let wake = self.fleet.end_wait_until(now).map_or(wake, |w| wake.min(w));
            let wake = tokio::time::Instant::from_std(wake);
            tokio::select! {
                Some(ev) = self.rx.recv() => self.apply(ev),
                Some(ev) = recv_proxy(&mut self.proxy_events) => {
                    let effects = self.fleet.on_proxy(ev, Now::current());
                    self.carry_out(effects);
                }
                Some(joined) = self.resolving.join_next_with_id() => {
                    let (task, start) = match joined {
                        Ok((id, done)) => {
                            self.jobs.remove(&id);
                            done
                        }
                        // The git work panicked (a bug): the task cannot start.
                        Err(e) => {
                            let task = self.jobs.remove(&e.id()).unwrap_or_default();
                            (task, Err(StartError::Panicked(e.to_string())))
                        }
                    };
                    let effects = self.fleet.on_dependency_start(&task, start, Now::current());
                    self.carry_out(effects);
                }
                Some(joined) = self.planning.join_next_with_id() => match joined {
                    Ok((id, (task, next))) => {
                        self.jobs.remove(&id);
                        self.fleet.set_next(&task, next);
                    }
                    // Reading the log or the branch panicked (a bug): the
                    // retry starts without the earlier attempt's context.
                    Err(e) => {
                        let task = self.jobs.remove(&e.id()).unwrap_or_default();
                        let message = format!("internal error, please report it: planning the retry of {task} failed: {e}");
                        self.emit(&Event::Notice { message });
                        self.fleet.plan_failed(&task);
                    }
                },
                Some(joined) = self.predicting.join_next() => {
                    let done = match joined {
                        Ok(p) => {
                            self.last_prediction = Some((std::time::Instant::now(), p.took));
                            p.done
                        }
                        Err(e) => Err(e),
                    };
                    let result = match done {
                        Ok((predictor, result)) => {
                            self.predictor = predictor;
                            result
                        }
                        // The git work panicked (a bug): say so; the next
                        // success predicts again from scratch.
                        Err(e) => PredictResult {
                            prediction: Err(format!("internal error, please report it: {e}")),
                            outside: Vec::new(),
                        },
                    };
                    let effects = self.fleet.on_prediction(result);
                    self.carry_out(effects);
                }
                Some(joined) = self.redoing.join_next_with_id() => {
                    let (task, next) = match joined {
                        Ok((id, done)) => {
                            self.jobs.remove(&id);
                            done
                        }
                        Err(e) => {
                            let task = self.jobs.remove(&e.id()).unwrap_or_default();
                            (task, Err(RedoError::Git(format!("internal error, please report it: {e}"))))
                        }
                    };
                    let effects = self.fleet.on_redo_prepared(&task, next);
                    self.carry_out(effects);
                }
                Some(joined) = self.judging.join_next_with_id() => {
                    let (task, judged) = match joined {
                        Ok((id, done)) => {
                            self.jobs.remove(&id);
                            done
                        }
                        Err(e) => {
                            let task = self.jobs.remove(&e.id()).unwrap_or_default();
                            (task, Err(JudgeError::Join(e)))
                        }
                    };
                    self.stops.remove(&crate::tasks::judge_id(&task));
                    let effects = match judged {
                        Ok(Some(j)) => self.fleet.on_judged(&task, j, Now::current()),
                        Ok(None) => self.fleet.on_judge_abandoned(&task, None),
                        Err(e) => self.fleet.on_judge_abandoned(&task, Some(e.to_string())),
                    };
                    self.carry_out(effects);
                }
                Some(joined) = self.upkeep.join_next() => self.upkeep_done(joined),
                _ = recv_signal(&mut sigint) => {
                    let effects = self.fleet.on_interrupt();
                    self.carry_out(effects);
                }
                _ = recv_signal(&mut sigterm) => {
                    let effects = self.fleet.on_stop_requested();
                    self.carry_out(effects);
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = tick.tick() => {
                    for r in &mut self.reporters { r.tick(); }
                    self.emit_notices();
                }
            }
        }
        // What prediction has not worked out is left to `land`.
        self.predict_cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.predicting.abort_all();
        // An upkeep under way ends before the run does: `land` may follow.
        while let Some(joined) = self.upkeep.join_next().await {
            self.upkeep_done(joined);
        }
        let (summary, effects) = self.fleet.finish(Now::current());
        // The run's end compacts the journal into state.json.
        self.fleet.take_dirty();
        if let Err(e) = self.store.save(self.fleet.state()) {
            let message = format!("could not save state: {e}");
            self.emit(&Event::Notice { message });
        }
        self.carry_out(effects);
        // Notifiers deliver what is pending (bounded), then say what failed.
        for r in &mut self.reporters {
            r.drain();
        }
        self.emit_notices();
        for r in &mut self.reporters {
            r.finish();
        }
        summary
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
                self.fleet.on_started(
                    &task,
                    attempt,
                    worktree,
                    start_commit,
                    origin,
                    created_branch,
                );
                if let Some(message) = note {
                    self.emit(&Event::Notice { message });
                }
            }
            RunEvent::Session {
                task,
                attempt,
                session_id,
            } => self.fleet.on_session(&task, attempt, session_id),
            RunEvent::Activity {
                task,
                attempt,
                activity,
            } => {
                let activity = self.redactor.redact(&activity).into_owned();
                self.emit(&Event::Activity {
                    task,
                    attempt,
                    activity,
                });
            }
            RunEvent::Job { task, attempt, job } => {
                let effects = self.fleet.on_job(&task, attempt, job, Now::current());
                self.carry_out(effects);
            }
            RunEvent::Stalled {
                task,
                attempt,
                quiet_secs,
            } => self.emit(&Event::Stalled {
                task,
                attempt,
                quiet_secs,
            }),
            RunEvent::Finished {
                task,
                attempt,
                report,
            } => {
                self.stops.remove(&task);
                self.ended_since_upkeep += 1;
                let effects = self
                    .fleet
                    .on_finished(&task, attempt, &report, Now::current());
                self.carry_out(effects);
            }
        }
    }
}

/// The proxy's next event (never, without a proxy).
async fn recv_proxy(rx: &mut Option<mpsc::Receiver<ProxyEvent>>) -> Option<ProxyEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
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
