//! The dispatcher: one `tokio::select!` loop that feeds what happens
//! (executor events, signals, off-loop jobs, the proxy, wake-ups) to the
//! [`Fleet`] as [`Input`]s and carries out the effects it returns: spawning
//! executors, running jobs off the loop, stopping agents, saving state,
//! telling reporters. Every off-loop job (a dependency start, a retry's
//! plan, a prediction, an early redo, a judgement, repository upkeep) runs
//! in one `JoinSet<Input>` and maps its own result, and its panic, into the
//! input it comes back as.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use super::credentials::Credentials;
use super::executor::{AttemptJob, run_attempt};
use super::fleet::{
    Effect, Fleet, FleetParts, Input, JudgeJob, Now, PoolSlots, PredictJob, PredictResult,
    RedoError, Start,
};
use super::judge::{JudgeEnv, JudgeError, judge};
use super::start_from::{self, StartError};
use super::{RunEvent, StopLevel, predict};
use crate::agent::Redactor;
use crate::backend::Backend;
use crate::project::Project;
use crate::prompt::Template;
use crate::proxy::ProxyEvent;
use crate::report::{Event, Reporter};
use crate::state::{State, StateStore};
use crate::tasks::TaskSet;

pub(crate) use super::fleet::{RunOptions, RunSummary};

pub(crate) struct Dispatcher {
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
    /// Every job off the loop; each comes back as the fleet's input.
    jobs: JoinSet<Input>,
    /// The prediction being worked out (one at a time): aborted at the run's end.
    predicting: Option<AbortHandle>,
    /// What predictions keep between them.
    predictor: Arc<Mutex<PredictorSlot>>,
    /// Set at the run's end: the prediction still being worked out stops.
    predict_cancel: Arc<std::sync::atomic::AtomicBool>,
    judge_env: Arc<JudgeEnv>,
    /// Attempts started since the last save, spawned once their start is
    /// saved: an attempt never acts (creates its branch, runs the agent)
    /// before its record is on disk.
    to_spawn: Vec<(AttemptJob, watch::Receiver<StopLevel>)>,
    /// When the free disk space was last read (for `min_free_disk_gb`).
    disk_read_at: Option<Instant>,
    disk_unreadable: bool,
    /// Judgings decided since the last save, started once it is on disk.
    to_judge: Vec<JudgeJob>,
    /// The run's model proxy and egress gate, and what it tells the run.
    proxy: Option<Arc<crate::proxy::Proxy>>,
    proxy_events: Option<mpsc::Receiver<ProxyEvent>>,
    /// Repository upkeep (`git::upkeep`), one at a time, off the loop;
    /// attempts ended since the last one was started, and how many make a
    /// wave (the run's slots): one is started per wave.
    upkeep_running: bool,
    ended_since_upkeep: usize,
    upkeep_wave: usize,
}

/// The predictor that keeps what predictions worked out between them, and
/// when the last prediction ended and how long it took: the next one starts
/// no sooner than twice that after it, so that predictions on a large fleet
/// of quick tasks take at most a third of a core.
#[derive(Default)]
struct PredictorSlot {
    predictor: Option<predict::Predicting>,
    last: Option<(Instant, Duration)>,
}

pub(crate) struct DispatcherParts {
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
    /// The run's host `.git` guards (the ones its backends were made with).
    pub guards: Arc<crate::guard::Guards>,
}

impl Dispatcher {
    pub(crate) fn new(p: DispatcherParts) -> Dispatcher {
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
            guards: p.guards,
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
            jobs: JoinSet::new(),
            predicting: None,
            predictor: Default::default(),
            predict_cancel: Default::default(),
            judge_env,
            to_spawn: Vec::new(),
            disk_read_at: None,
            disk_unreadable: false,
            to_judge: Vec::new(),
            proxy: p.proxy,
            proxy_events: p.proxy_events,
            upkeep_running: false,
            ended_since_upkeep: 0,
            upkeep_wave,
        }
    }

    /// Run `work` off the loop, on a blocking thread; its result, or its
    /// panic, comes back as the input `back` makes of it.
    fn off_loop<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
        back: impl FnOnce(Result<T, JoinError>) -> Input + Send + 'static,
    ) -> AbortHandle {
        self.jobs
            .spawn(async move { back(tokio::task::spawn_blocking(work).await) })
    }

    /// Between waves (as many ended attempts as the run has slots), look
    /// at the repository and pack what is due, in the background: never
    /// while a start waits (it runs beside the loop), one at a time.
    fn maybe_upkeep(&mut self) {
        if self.ended_since_upkeep < self.upkeep_wave || self.upkeep_running {
            return;
        }
        self.ended_since_upkeep = 0;
        self.upkeep_running = true;
        let repo = self.fleet.config().workspace.repo.clone();
        let backends = self.backends.clone();
        self.jobs.spawn(async move {
            // Its own task, so that a panic comes back as an input too.
            let wave = tokio::spawn(super::upkeep::wave(repo, backends)).await;
            Input::UpkeepDone(wave.map_err(|e| format!("internal error, please report it: {e}")))
        });
    }

    /// With `min_free_disk_gb`: read the free space of the worktrees' and
    /// `.flocks/`'s filesystems (at most once a second: the tick brings the
    /// next look while dispatch waits), the lower as the fleet's input.
    fn read_free_disk(&mut self) -> Option<Input> {
        if self.fleet.config().min_free_disk.is_none()
            || self
                .disk_read_at
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return None;
        }
        self.disk_read_at = Some(Instant::now());
        let config = self.fleet.config();
        let dirs = [config.worktrees_dir(), config.state_dir()];
        match crate::disk::lowest_free(&dirs) {
            Ok((free, place)) => Some(Input::FreeDisk {
                free: free.free,
                place,
            }),
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
                None
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
            let judging = tokio::spawn(judge(job, env, stop_rx));
            self.jobs.spawn(async move {
                let judged = match judging.await {
                    Ok(judged) => judged,
                    Err(e) => Err(JudgeError::Join(e)),
                };
                Input::Judged {
                    task,
                    judged: judged.map(|j| j.map(Box::new)).map_err(|e| e.to_string()),
                }
            });
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
                    self.off_loop(
                        move || start_from::dependency_start(&job),
                        move |start| Input::DependencyStart {
                            task,
                            // The git work panicked (a bug): the task cannot start.
                            start: start
                                .unwrap_or_else(|e| Err(StartError::Panicked(e.to_string()))),
                        },
                    );
                }
                Effect::PlanRetry {
                    task,
                    from_attempt,
                    fresh_session,
                    ended,
                } => self.plan_retry(task, from_attempt, fresh_session, ended),
                Effect::Predict(job) => self.predict(*job),
                Effect::CheckFootprint(job) => {
                    let (task, attempt) = (job.task.clone(), job.attempt);
                    self.off_loop(
                        move || predict::outside_footprint(&job),
                        move |outside| Input::FootprintChecked {
                            task,
                            attempt,
                            outside: outside.unwrap_or_else(|e| {
                                Err(format!("internal error, please report it: {e}"))
                            }),
                        },
                    );
                }
                Effect::PrepareRedo(job) => {
                    let task = job.task.clone();
                    self.off_loop(
                        move || predict::prepare_redo(&job),
                        move |next| Input::RedoPrepared {
                            task,
                            next: next.unwrap_or_else(|e| {
                                Err(RedoError::Git(format!(
                                    "internal error, please report it: {e}"
                                )))
                            }),
                        },
                    );
                }
                Effect::StopAgents(level) => {
                    // Agents, and best-of tasks being judged (their validation too).
                    for stop in self.stops.values() {
                        // Fails only when the executor already ended: nothing to stop.
                        let _ = stop.send(level);
                    }
                }
                // Started at the next save, once the task's branch is
                // recorded as flocks' own.
                Effect::Judge(job) => self.to_judge.push(*job),
            }
        }
    }

    /// Work out how a failed attempt's retry starts (its log and branch are
    /// read off the loop).
    fn plan_retry(
        &mut self,
        task: String,
        from_attempt: u32,
        fresh_session: bool,
        ended: Option<String>,
    ) {
        let rec = self.fleet.record(&task).cloned();
        let config = self.fleet.config().clone();
        let log_root = self.log_root.clone();
        let id = task.clone();
        self.off_loop(
            move || {
                let mut next =
                    crate::retry::next_after_failure(&rec?, from_attempt, &config, &log_root);
                if fresh_session {
                    next.resume_session = None;
                }
                if ended.is_some() {
                    next.ended = ended;
                }
                Some(next)
            },
            move |planned| match planned {
                Ok(Some(next)) => Input::RetryPlanned { task: id, next },
                Ok(None) => Input::RetryPlanFailed {
                    task: id,
                    error: None,
                },
                // Reading the log or the branch panicked (a bug): the
                // retry starts without the earlier attempt's context.
                Err(e) => Input::RetryPlanFailed {
                    task: id,
                    error: Some(e.to_string()),
                },
            },
        );
    }

    /// Work out what `land` would find now, off the loop, no sooner than the
    /// last prediction's pace allows.
    fn predict(&mut self, job: PredictJob) {
        let config = self.fleet.config();
        let at = predict::Where {
            repo: config.workspace.repo.clone(),
            target: config.workspace.land_target.clone(),
            state_dir: config.state_dir(),
        };
        let slot = self.predictor.clone();
        let cancel = self.predict_cancel.clone();
        let wait = lock(&slot)
            .last
            .map(|(end, took)| (end + 2 * took).saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let handle = self.jobs.spawn(async move {
            tokio::time::sleep(wait).await;
            let started = Instant::now();
            let predictor = lock(&slot).predictor.take();
            let done =
                tokio::task::spawn_blocking(move || predict::predict(predictor, job, &at, &cancel))
                    .await;
            let mut slot = lock(&slot);
            slot.last = Some((Instant::now(), started.elapsed()));
            Input::Predicted(match done {
                Ok((predictor, result)) => {
                    slot.predictor = predictor;
                    result
                }
                // The git work panicked (a bug): say so; the next
                // success predicts again from scratch.
                Err(e) => PredictResult {
                    prediction: Err(format!("internal error, please report it: {e}")),
                },
            })
        });
        self.predicting = Some(handle);
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
            guards: self.judge_env.guards.clone(),
        };
        // Spawned at the next save, once this attempt's start is on disk.
        self.to_spawn.push((job, stop_rx));
    }

    /// Hand one input to the fleet (after the dispatcher's own bookkeeping
    /// of it) and carry out what it says.
    fn feed(&mut self, input: Input) {
        match &input {
            Input::Attempt(RunEvent::Finished { task, .. }) => {
                self.stops.remove(task);
                self.ended_since_upkeep += 1;
            }
            Input::Judged { task, .. } => {
                self.stops.remove(&crate::tasks::judge_id(task));
            }
            Input::Predicted(_) => self.predicting = None,
            Input::UpkeepDone(_) => self.upkeep_running = false,
            _ => {}
        }
        let step = self.fleet.handle(input, Now::current());
        self.carry_out(step.effects);
    }

    pub(crate) async fn run(mut self) -> RunSummary {
        self.feed(Input::RunStarted);
        let mut signals = Signals {
            sigint: signal(SignalKind::interrupt()).ok(),
            sigterm: signal(SignalKind::terminate()).ok(),
        };
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(reading) = self.read_free_disk() {
                self.feed(reading);
            }
            let now = Now::current();
            let step = self.fleet.handle(Input::Tick, now);
            self.carry_out(step.effects);
            self.save();
            self.maybe_upkeep();
            if step.done {
                break;
            }
            let wake = tokio::time::Instant::from_std(self.fleet.next_wake(now));
            let input = tokio::select! {
                Some(ev) = self.rx.recv() => Some(Input::from(self.redact(ev))),
                Some(ev) = recv_proxy(&mut self.proxy_events) => Some(Input::Proxy(ev)),
                Some(Ok(input)) = self.jobs.join_next() => Some(input),
                _ = recv_signal(&mut signals.sigint) => Some(Input::Interrupt),
                _ = recv_signal(&mut signals.sigterm) => Some(Input::StopRequested),
                _ = tokio::time::sleep_until(wake) => None,
                _ = tick.tick() => {
                    for r in &mut self.reporters { r.tick(); }
                    self.emit_notices();
                    None
                }
            };
            if let Some(input) = input {
                self.feed(input);
            }
        }
        self.end().await
    }

    /// The run's end: what prediction has not worked out is left to `land`,
    /// an upkeep under way ends, state is compacted, reporters finish.
    async fn end(mut self) -> RunSummary {
        self.predict_cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.predicting.take() {
            p.abort();
        }
        // An upkeep under way ends before the run does: `land` may follow.
        while let Some(joined) = self.jobs.join_next().await {
            if let Ok(input @ Input::UpkeepDone(_)) = joined {
                self.feed(input);
            }
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

    /// An executor's event with what the agent said redacted.
    fn redact(&self, mut ev: RunEvent) -> RunEvent {
        if let RunEvent::Activity { activity, .. } = &mut ev {
            *activity = self.redactor.redact(activity).into_owned();
        }
        ev
    }
}

struct Signals {
    sigint: Option<Signal>,
    sigterm: Option<Signal>,
}

/// The predictor's slot, even after a prediction panicked holding it.
fn lock(slot: &Mutex<PredictorSlot>) -> std::sync::MutexGuard<'_, PredictorSlot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxy's next event (never, without a proxy).
async fn recv_proxy(rx: &mut Option<mpsc::Receiver<ProxyEvent>>) -> Option<ProxyEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn recv_signal(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
