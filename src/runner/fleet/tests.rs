//! The dispatch rules on the fleet alone: no process, no tokio, no git.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::land::predict::Prediction;
use crate::report::AttentionCause;
use crate::runner::AttemptReport;
use crate::runner::credentials::{Credentials, DEFAULT_LOGIN};
use crate::state::NextAttempt;
use crate::state::{Outcome, PredictedConflict, ResultInfo, State, TaskRecord, TaskStatus};
use crate::tasks::{BranchRules, TaskSet, parse_jsonl};

fn config(edit: impl FnOnce(&mut Config)) -> Arc<Config> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flocks.toml");
    std::fs::write(&path, "max_agents = 8\n").unwrap();
    let mut c = Config::load(&path).unwrap();
    edit(&mut c);
    Arc::new(c)
}

fn tasks(lines: &str) -> TaskSet {
    let rules = BranchRules {
        prefix: "flocks/",
        base: "main",
        land_target: "main",
        template_fields: &[],
    };
    parse_jsonl(Path::new("/p/tasks.jsonl"), lines, &rules).unwrap()
}

fn state_for(set: &TaskSet) -> State {
    let mut state = State::default();
    for t in &set.tasks {
        let rec: TaskRecord = serde_json::from_value(serde_json::json!({
            "id": t.id,
            "branch": t.branch,
            "worktree": format!("/p/.worktrees/{}", t.id),
            "prompt_hash": t.prompt_hash(),
            "depends_on": t.depends_on,
            "status": {"state": "pending"},
        }))
        .unwrap();
        state.tasks.push(rec);
    }
    state
}

struct Setup {
    config: Arc<Config>,
    lines: &'static str,
    opts: RunOptions,
    scope: Option<HashSet<String>>,
    /// Credential values by variable (none: from the environment).
    values: Vec<(&'static str, &'static str)>,
}

impl Setup {
    fn new(lines: &'static str) -> Setup {
        Setup {
            config: config(|_| {}),
            lines,
            opts: RunOptions {
                supervise: false,
                max_retries: 2,
                no_wait: false,
                progress: false,
            },
            scope: None,
            values: Vec::new(),
        }
    }

    /// Credentials `names`, each in `$<NAME>_TOKEN` (set), edited by `edit`,
    /// that the only pool rotates through.
    fn credentials(
        mut self,
        names: &[&'static str],
        edit: impl Fn(&mut crate::config::CredentialConfig),
    ) -> Setup {
        let mut c = (*self.config).clone();
        for n in names {
            let mut cred = crate::config::CredentialConfig {
                name: n.to_string(),
                env: format!("{}_TOKEN", n.to_uppercase()),
                kind: crate::config::CredentialKind::Oauth,
                max_concurrent: None,
                max_cost_usd: None,
            };
            edit(&mut cred);
            c.credentials.push(cred);
            self.values.push((n, "secret"));
        }
        c.pools[0].credential = crate::config::CredentialChoice::Rotate;
        self.config = Arc::new(c);
        self
    }

    fn supervise(mut self, max_retries: u32) -> Setup {
        self.opts.supervise = true;
        self.opts.max_retries = max_retries;
        self
    }

    fn config(mut self, edit: impl FnOnce(&mut Config)) -> Setup {
        self.config = config(edit);
        self
    }

    fn build(self) -> Fleet {
        let set = tasks(self.lines);
        let mut state = state_for(&set);
        // Best-of tasks get their variants, as merging the task list does.
        for (t, rec) in set.tasks.iter().zip(state.tasks.iter_mut()) {
            let n = t.best_of.unwrap_or(1);
            let base = rec.clone();
            for k in (1..=n).filter(|_| n > 1) {
                let id = crate::tasks::variant_id(&t.id, k);
                let mut v = base.clone();
                v.branch = crate::tasks::variant_branch(&t.branch, k);
                v.worktree = format!("/p/.worktrees/{id}").into();
                v.id = id;
                rec.variants.push(v);
            }
        }
        state.reindex();
        let pools = self
            .config
            .pools
            .iter()
            .map(|p| PoolSlots {
                name: p.name.clone(),
                slots: p.max_worktrees,
                running: 0,
                down: None,
                host_loss_takes_pool_down: true,
            })
            .collect();
        let values = self.values;
        let creds = if values.is_empty() {
            Credentials::from_env(&self.config)
        } else {
            Credentials::with_values(&self.config, |var| {
                values
                    .iter()
                    .find(|(n, _)| format!("{}_TOKEN", n.to_uppercase()) == var)
                    .map(|(_, v)| v.to_string())
            })
        };
        Fleet::new(FleetParts {
            creds,
            config: self.config,
            state,
            tasks: set,
            scope: self.scope,
            template: None,
            pools,
            opts: self.opts,
            project_key: "test".into(),
        })
    }
}

/// The fleet fed as the dispatcher feeds it: each call is one input
/// through [`Fleet::handle`].
trait Feed {
    fn feed(&mut self, input: Input, now: Now) -> input::Step;
    /// The loop's turn: what it started and said.
    fn tick(&mut self, now: Now) -> Vec<Effect> {
        self.feed(Input::Tick, now).effects
    }
    /// The loop's turn: whether the run is over, and what it said.
    fn done(&mut self, now: Now) -> (bool, Vec<Effect>) {
        let step = self.feed(Input::Tick, now);
        (step.done, step.effects)
    }
    fn run_started(&mut self) -> Vec<Effect> {
        self.feed(Input::RunStarted, Now::current()).effects
    }
    fn finished(
        &mut self,
        id: &str,
        attempt: u32,
        report: &AttemptReport,
        now: Now,
    ) -> Vec<Effect> {
        let input = Input::Finished {
            task: id.into(),
            attempt,
            report: Box::new(report.clone()),
        };
        self.feed(input, now).effects
    }
    fn job(&mut self, id: &str, attempt: u32, job: crate::state::Job, now: Now) -> Vec<Effect> {
        let input = Input::Job {
            task: id.into(),
            attempt,
            job,
        };
        self.feed(input, now).effects
    }
    fn dependency_start(
        &mut self,
        id: &str,
        start: Result<Option<String>, StartError>,
        now: Now,
    ) -> Vec<Effect> {
        let input = Input::DependencyStart {
            task: id.into(),
            start,
        };
        self.feed(input, now).effects
    }
    fn retry_planned(&mut self, id: &str, next: NextAttempt) {
        let input = Input::RetryPlanned {
            task: id.into(),
            next,
        };
        self.feed(input, Now::current());
    }
    fn free_disk(&mut self, free: u64, place: &Path) -> Vec<Effect> {
        let input = Input::FreeDisk {
            free,
            place: place.into(),
        };
        self.feed(input, Now::current()).effects
    }
    fn predicted(&mut self, result: PredictResult) -> Vec<Effect> {
        self.feed(Input::Predicted(result), Now::current()).effects
    }
    fn redo_prepared(&mut self, id: &str, next: Result<NextAttempt, RedoError>) -> Vec<Effect> {
        let input = Input::RedoPrepared {
            task: id.into(),
            next,
        };
        self.feed(input, Now::current()).effects
    }
    fn judged(&mut self, id: &str, judged: Judged, now: Now) -> Vec<Effect> {
        let input = Input::Judged {
            task: id.into(),
            judged: Ok(Some(Box::new(judged))),
        };
        self.feed(input, now).effects
    }
    fn proxy(&mut self, ev: crate::proxy::ProxyEvent, now: Now) -> Vec<Effect> {
        self.feed(Input::Proxy(ev), now).effects
    }
    fn interrupt(&mut self) -> Vec<Effect> {
        self.feed(Input::Interrupt, Now::current()).effects
    }
    fn stop_requested(&mut self) -> Vec<Effect> {
        self.feed(Input::StopRequested, Now::current()).effects
    }
}

impl Feed for Fleet {
    fn feed(&mut self, input: Input, now: Now) -> input::Step {
        self.handle(input, now)
    }
}

const TWO: &str = "{\"id\":\"a\",\"prompt\":\"do a\"}\n{\"id\":\"b\",\"prompt\":\"do b\"}\n";
const ONE: &str = "{\"id\":\"a\",\"prompt\":\"do a\"}\n";

fn t0() -> Now {
    Now::current()
}

fn later(now: Now, secs: u64) -> Now {
    Now {
        wall: now.wall + chrono::Duration::seconds(secs as i64),
        mono: now.mono + Duration::from_secs(secs),
    }
}

/// The starts among `effects`: (task, attempt, pool).
fn spawned(effects: &[Effect]) -> Vec<(String, u32, usize)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(s) => Some((s.task.clone(), s.attempt, s.pool)),
            _ => None,
        })
        .collect()
}

fn events(effects: &[Effect]) -> Vec<&Event> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(ev) => Some(ev),
            _ => None,
        })
        .collect()
}

fn notices(effects: &[Effect]) -> Vec<String> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::Notice { message } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn report(outcome: Outcome) -> AttemptReport {
    AttemptReport {
        outcome,
        exit_code: Some(1),
        result: None,
        session_id: None,
        start_commit: None,
        end_tip: None,
        leftovers_committed: false,
        new_commits: 0,
        no_conversation: false,
        duration_secs: 1.0,
        pending_secs: None,
        job: None,
        phases: None,
    }
}

fn with_result(mut r: AttemptReport, cost: f64) -> AttemptReport {
    r.result = Some(ResultInfo {
        total_cost_usd: Some(cost),
        num_turns: Some(3),
        ..ResultInfo::default()
    });
    r
}

fn failed() -> Outcome {
    Outcome::Failed {
        reason: "tests fail".into(),
    }
}

fn status(f: &Fleet, id: &str) -> TaskStatus {
    f.record(id).unwrap().status.clone()
}

/// Answer the predictions among `effects` as the dispatcher would: `found`
/// are the tasks (landing order) and their conflicts.
fn answer(
    f: &mut Fleet,
    effects: &[Effect],
    found: &[(&str, Option<PredictedConflict>)],
) -> Vec<Effect> {
    let mut out = Vec::new();
    for e in effects {
        if let Effect::Predict(_) = e {
            out.extend(
                f.predicted(PredictResult {
                    prediction: Ok(Prediction {
                        target_tip: git2::Oid::ZERO_SHA1,
                        tasks: found
                            .iter()
                            .map(|(id, c)| (id.to_string(), c.clone()))
                            .collect(),
                        applied: found.len(),
                    }),
                    outside: Vec::new(),
                }),
            );
        }
    }
    out
}

fn conflict(with: &[&str], file: &str) -> PredictedConflict {
    PredictedConflict {
        commit: "c0ffee".into(),
        files: vec![file.into()],
        with: with.iter().map(|w| w.to_string()).collect(),
        with_target: false,
        target: "main".into(),
        target_tip: "abc".into(),
    }
}

fn predicts(effects: &[Effect]) -> usize {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Predict(_)))
        .count()
}

/// Carry out the plan-retry effects the way the dispatcher does, without the log.
fn plan_retries(f: &mut Fleet, effects: &[Effect]) {
    for e in effects {
        if let Effect::PlanRetry {
            task,
            from_attempt,
            fresh_session,
            ..
        } = e
        {
            let a = f
                .record(task)
                .unwrap()
                .attempts
                .iter()
                .find(|a| a.number == *from_attempt)
                .cloned()
                .unwrap();
            f.retry_planned(
                task,
                NextAttempt {
                    fresh: false,
                    resume_session: if *fresh_session { None } else { a.session_id },
                    resume_pool: Some(a.pool),
                    ended: Some("failed".into()),
                    context: None,
                    base: None,
                },
            );
        }
    }
}

#[test]
fn starts_every_ready_task_and_records_the_attempt() {
    let mut f = Setup::new(TWO).build();
    let now = t0();
    let out = f.tick(now);
    assert_eq!(
        spawned(&out),
        vec![("a".to_string(), 1, 0), ("b".to_string(), 1, 0)]
    );
    assert!(matches!(
        status(&f, "a"),
        TaskStatus::Running { attempt: 1, .. }
    ));
    assert_eq!(f.record("a").unwrap().attempts.len(), 1);
    assert!(f.take_dirty());
    // Nothing more to start while they run, and the run is not over.
    assert!(spawned(&f.tick(now)).is_empty());
    assert!(!f.done(now).0);
}

#[test]
fn a_failure_is_retried_up_to_max_retries_then_done() {
    let mut f = Setup::new(ONE).supervise(1).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(failed()), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::PlanRetry {
            from_attempt: 1,
            fresh_session: false,
            ..
        }
    )));
    assert!(
        events(&out).iter().any(
            |e| matches!(e, Event::Requeued { reason, .. } if reason.contains("retry 1 of 1"))
        )
    );
    // Until its retry is planned, the task waits, and so does the end of the run.
    assert!(spawned(&f.tick(later(now, 61))).is_empty());
    assert!(!f.done(later(now, 61)).0);
    plan_retries(&mut f, &out);
    let out = f.tick(later(now, 61));
    assert_eq!(spawned(&out), vec![("a".to_string(), 2, 0)]);
    assert!(f.record("a").unwrap().next.is_none());
    let out = f.finished("a", 2, &report(failed()), later(now, 200));
    assert_eq!(status(&f, "a"), TaskStatus::Done { outcome: failed() });
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert!(f.done(later(now, 200)).0);
    let (summary, _) = f.finish(later(now, 200));
    assert_eq!(summary.exit, Exit::TasksFailed);
}

#[test]
fn without_supervise_a_failure_is_final() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(failed()), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Done { outcome: failed() });
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
}

#[test]
fn a_rate_limit_parks_the_credential_and_requeues_up_to_the_cap() {
    let mut f = Setup::new(ONE).build();
    let mut now = t0();
    let resets = now.wall + chrono::Duration::seconds(600);
    f.tick(now);
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: Some(resets),
    };
    let out = f.finished("a", 1, &report(limited.clone()), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert!(events(&out).iter().any(|e| matches!(e, Event::CredentialParked { credential, until, .. } if credential == DEFAULT_LOGIN && *until == resets)));
    assert_eq!(
        f.state().credentials[DEFAULT_LOGIN].parked_until,
        Some(resets)
    );
    // Parked: nothing starts until the reset, and the fleet waits rather than ends.
    let out = f.tick(later(now, 61));
    assert!(spawned(&out).is_empty());
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::Waiting { .. }))
    );
    assert!(!f.done(later(now, 61)).0);
    assert!(f.next_wake(later(now, 61)) <= later(now, 601).mono);
    // Each further rate limit re-queues, until the cap.
    for n in 2..=REQUEUE_CAP + 1 {
        now = later(now, 4000);
        let out = f.tick(now);
        assert_eq!(spawned(&out), vec![("a".to_string(), n, 0)]);
        let limited = Outcome::RateLimited {
            credential: None,
            resets_at: None,
        };
        f.finished("a", n, &report(limited), later(now, 60));
    }
    assert!(matches!(
        status(&f, "a"),
        TaskStatus::Done {
            outcome: Outcome::RateLimited { .. }
        }
    ));
    assert_eq!(f.record("a").unwrap().requeues, REQUEUE_CAP + 1);
}

#[test]
fn an_overload_pauses_new_agents_with_a_growing_backoff() {
    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 1);
    let out = f.finished("a", 1, &report(Outcome::Overloaded), later(now, 60));
    assert!(notices(&out).iter().any(|m| m.contains("overloaded (529)")));
    let until = f.state().backoff_until.unwrap();
    assert_eq!(until, later(now, 60).wall + chrono::Duration::seconds(60));
    assert!(spawned(&f.tick(later(now, 61))).is_empty());
    let out = f.tick(later(now, 121));
    assert_eq!(spawned(&out).len(), 1);
    assert_eq!(f.state().backoff_until, None);
    // A second overload in a row pauses twice as long.
    let (task, attempt, _) = spawned(&out)[0].clone();
    f.finished(
        &task,
        attempt,
        &report(Outcome::Overloaded),
        later(now, 200),
    );
    assert_eq!(
        f.state().backoff_until,
        Some(later(now, 200).wall + chrono::Duration::seconds(120))
    );
}

#[test]
fn a_rejected_credential_is_disabled_and_the_run_ends_saying_why() {
    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    let now = t0();
    f.tick(now);
    let rejected = Outcome::CredentialRejected {
        credential: None,
        reason: "invalid api key".into(),
    };
    let out = f.finished("a", 1, &report(rejected), later(now, 60));
    assert!(events(&out).iter().any(
        |e| matches!(e, Event::CredentialDisabled { credential, .. } if credential == DEFAULT_LOGIN)
    ));
    // The turn starts nothing, and ends the run saying why.
    let (done, out) = f.done(later(now, 61));
    assert!(spawned(&out).is_empty());
    assert!(done);
    assert!(notices(&out)[0].contains("no pool can run agents"));
    let (summary, _) = f.finish(later(now, 61));
    assert_eq!(summary.exit, Exit::CouldNotStart);
}

#[test]
fn quick_failures_in_a_row_trip_the_breaker() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n{\"id\":\"c\",\"prompt\":\"c\"}\n{\"id\":\"d\",\"prompt\":\"d\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 3).build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 3);
    let spawn_failed = || Outcome::SpawnFailed {
        reason: "claude: not found".into(),
    };
    let mut out = Vec::new();
    for id in ["a", "b", "c"] {
        out = f.finished(id, 1, &report(spawn_failed()), later(now, 1));
    }
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("dispatch stopped: 3 attempts in a row"))
    );
    assert!(spawned(&f.tick(later(now, 2))).is_empty());
    assert!(f.done(later(now, 2)).0);
    assert_eq!(f.finish(later(now, 2)).0.exit, Exit::CouldNotStart);
}

#[test]
fn slow_failures_and_results_do_not_trip_the_breaker() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n{\"id\":\"c\",\"prompt\":\"c\"}\n{\"id\":\"d\",\"prompt\":\"d\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 3).build();
    let now = t0();
    f.tick(now);
    f.finished("a", 1, &report(failed()), later(now, 1));
    f.finished("b", 1, &with_result(report(failed()), 0.0), later(now, 1));
    f.finished("c", 1, &report(failed()), later(now, 120));
    assert_eq!(spawned(&f.tick(later(now, 121))).len(), 1);
}

#[test]
fn the_cost_cap_stops_new_starts_and_lets_running_ones_finish() {
    let mut f = Setup::new(TWO)
        .config(|c| {
            c.max_agents = 1;
            c.max_cost_usd = Some(1.0);
        })
        .build();
    let now = t0();
    f.tick(now);
    let out = f.finished(
        "a",
        1,
        &with_result(report(Outcome::Success), 1.5),
        later(now, 60),
    );
    assert!(notices(&out).iter().any(|m| m.contains("max_cost_usd = 1")));
    answer(&mut f, &out, &[]);
    assert!(spawned(&f.tick(later(now, 61))).is_empty());
    assert!(f.done(later(now, 61)).0);
    let (summary, out) = f.finish(later(now, 61));
    assert_eq!(summary.exit, Exit::TasksFailed);
    assert!(events(&out).iter().any(|e| matches!(e, Event::RunFinished { succeeded: 1, pending: 1, cost_usd, .. } if *cost_usd == 1.5)));
}

#[test]
fn a_lost_session_starts_fresh_without_using_a_retry() {
    let mut f = Setup::new(ONE).supervise(1).build();
    let now = t0();
    f.tick(now);
    let mut first = report(failed());
    first.session_id = Some("s-1".into());
    let out = f.finished("a", 1, &first, later(now, 60));
    plan_retries(&mut f, &out);
    let out = f.tick(later(now, 61));
    assert_eq!(spawned(&out), vec![("a".to_string(), 2, 0)]);
    assert_eq!(
        f.record("a").unwrap().attempts[1].resumed_from.as_deref(),
        Some("s-1")
    );
    // The resumed session is gone.
    let mut lost = report(failed());
    lost.no_conversation = true;
    let out = f.finished("a", 2, &lost, later(now, 120));
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::PlanRetry {
            from_attempt: 1,
            fresh_session: true,
            ..
        }
    )));
    let rec = f.record("a").unwrap();
    assert!(matches!(
        rec.attempts[1].outcome,
        Some(Outcome::SpawnFailed { .. })
    ));
    // Only the first failure counts against max_retries = 1.
    assert_eq!(rec.counted_failures(), 1);
    plan_retries(&mut f, &out);
    let out = f.tick(later(now, 121));
    assert_eq!(spawned(&out), vec![("a".to_string(), 3, 0)]);
    assert_eq!(f.record("a").unwrap().attempts[2].resumed_from, None);
}

#[test]
fn a_lost_host_takes_its_pool_out_and_the_task_moves() {
    let mut f = Setup::new(ONE)
        .supervise(1)
        .config(|c| {
            let mut b = c.pools[0].clone();
            b.name = "b".into();
            c.pools[0].name = "a".into();
            c.pools.push(b);
        })
        .build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)), vec![("a".to_string(), 1, 0)]);
    let lost = Outcome::HostLost {
        reason: "host h1 is unreachable".into(),
    };
    let out = f.finished("a", 1, &report(lost), later(now, 60));
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("pool a is not used again in this run"))
    );
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert_eq!(
        spawned(&f.tick(later(now, 61))),
        vec![("a".to_string(), 2, 1)]
    );
}

#[test]
fn a_scheduler_pool_keeps_its_slot_through_the_queue_and_a_lost_node() {
    let mut f = Setup::new(ONE).supervise(0).build();
    // A Slurm pool: the scheduler places the next job elsewhere.
    f.pools[0].host_loss_takes_pool_down = false;
    let now = t0();
    assert_eq!(spawned(&f.tick(now)), vec![("a".to_string(), 1, 0)]);
    let job = |state: &str, reason: Option<&str>| crate::state::Job {
        id: "7".into(),
        state: state.into(),
        reason: reason.map(str::to_string),
        ..Default::default()
    };
    let out = f.job("a", 1, job("PENDING", None), later(now, 1));
    assert_eq!(events(&out).len(), 1);
    // Nothing new: nothing said; a reason: said.
    assert!(
        f.job("a", 1, job("PENDING", None), later(now, 2))
            .is_empty()
    );
    let out = f.job("a", 1, job("PENDING", Some("Priority")), later(now, 3));
    assert!(
        matches!(events(&out)[..], [Event::Job { job, .. }] if job.reason.as_deref() == Some("Priority"))
    );
    assert_eq!(f.pools[0].running, 1, "a pending job holds its slot");
    // It runs after 30 s: that wait is counted apart from its run time.
    let mut running = job("RUNNING", None);
    running.started_at = Some(later(now, 30).wall);
    let out = f.job("a", 1, running, later(now, 30));
    assert!(matches!(
        events(&out)[..],
        [Event::Job { pending_secs: Some(p), .. }] if (*p - 30.0).abs() < 0.01
    ));
    let a = &f.record("a").unwrap().attempts[0];
    assert!((a.pending_secs.unwrap() - 30.0).abs() < 0.01);
    // Its node is lost: the pool stays in the run, and the task goes again
    // without using a retry (max_retries = 0).
    let lost = Outcome::HostLost {
        reason: "node vm of Slurm job 7 is drained".into(),
    };
    let out = f.finished("a", 1, &report(lost), later(now, 60));
    assert!(
        notices(&out)
            .iter()
            .all(|m| !m.contains("is not used again")),
        "{:?}",
        notices(&out)
    );
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert_eq!(
        spawned(&f.tick(later(now, 61))),
        vec![("a".to_string(), 2, 0)]
    );
}

#[test]
fn dependencies_wait_and_a_failed_one_blocks() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"]}\n{\"id\":\"c\",\"prompt\":\"c\",\"depends_on\":[\"b\"]}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)), vec![("a".to_string(), 1, 0)]);
    f.finished("a", 1, &report(failed()), later(now, 60));
    let out = f.tick(later(now, 61));
    assert!(spawned(&out).is_empty());
    assert!(
        matches!(status(&f, "b"), TaskStatus::Blocked { ref on, reason: None } if on == &["a"])
    );
    assert!(f.done(later(now, 61)).0);
    // Blocking spreads one level per pass; the end of the run finishes it.
    let (summary, _) = f.finish(later(now, 61));
    assert!(matches!(status(&f, "c"), TaskStatus::Blocked { ref on, .. } if on == &["b"]));
    assert_eq!(summary.exit, Exit::TasksFailed);
}

#[test]
fn a_dependency_that_succeeds_releases_its_dependent() {
    let lines =
        "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"]}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.tick(now);
    f.finished("a", 1, &report(Outcome::Success), later(now, 60));
    assert_eq!(
        spawned(&f.tick(later(now, 61))),
        vec![("b".to_string(), 1, 0)]
    );
}

#[test]
fn only_tasks_in_scope_start() {
    let mut s = Setup::new(TWO);
    s.scope = Some(HashSet::from(["b".to_string()]));
    let mut f = s.build();
    let now = t0();
    let opening = f.run_started();
    assert!(
        events(&opening)
            .iter()
            .any(|e| matches!(e, Event::RunStarted { pending: 1, .. }))
    );
    assert_eq!(spawned(&f.tick(now)), vec![("b".to_string(), 1, 0)]);
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 10));
    assert!(!f.done(later(now, 10)).0, "its prediction is out");
    answer(&mut f, &out, &[]);
    assert!(f.done(later(now, 10)).0);
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert_eq!(f.finish(later(now, 10)).0.exit, Exit::Ok);
}

#[test]
fn stagger_spaces_out_starts() {
    let mut f = Setup::new(TWO)
        .config(|c| c.stagger_delay = Duration::from_secs(5))
        .build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 1);
    assert!(spawned(&f.tick(later(now, 2))).is_empty());
    assert_eq!(f.next_wake(later(now, 2)), later(now, 5).mono);
    assert_eq!(spawned(&f.tick(later(now, 5))).len(), 1);
}

#[test]
fn pool_slots_limit_what_runs() {
    let mut f = Setup::new(TWO)
        .config(|c| c.pools[0].max_worktrees = 1)
        .build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 1);
    assert!(spawned(&f.tick(now)).is_empty());
    f.finished("a", 1, &report(Outcome::Success), later(now, 10));
    assert_eq!(
        spawned(&f.tick(later(now, 10))),
        vec![("b".to_string(), 1, 0)]
    );
}

#[test]
fn ctrl_c_drains_then_stops_then_kills() {
    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    let now = t0();
    f.tick(now);
    let out = f.interrupt();
    assert!(notices(&out)[0].contains("no new agents will start; 1 running"));
    assert!(!out.iter().any(|e| matches!(e, Effect::StopAgents(_))));
    let out = f.interrupt();
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Graceful)))
    );
    let out = f.interrupt();
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Kill)))
    );
    // A fourth changes nothing.
    assert!(f.interrupt().is_empty());
    f.finished("a", 1, &report(Outcome::Interrupted), later(now, 5));
    assert!(spawned(&f.tick(later(now, 5))).is_empty());
    assert!(f.done(later(now, 5)).0);
    let (summary, _) = f.finish(later(now, 5));
    assert_eq!(summary.exit, Exit::Interrupted);
}

#[test]
fn flocks_stop_stops_agents_gracefully_once() {
    let mut f = Setup::new(ONE).build();
    f.tick(t0());
    let out = f.stop_requested();
    assert!(notices(&out)[0].starts_with("stopping: asked by `flocks stop`; 1 running"));
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Graceful)))
    );
    // A Ctrl-C after it goes on to kill.
    assert!(
        f.interrupt()
            .iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Kill)))
    );
}

#[test]
fn a_run_flocks_stop_ended_exits_0_unless_a_task_failed() {
    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    let now = t0();
    f.tick(now);
    f.stop_requested();
    f.finished("a", 1, &report(Outcome::Interrupted), later(now, 5));
    assert!(f.done(later(now, 5)).0);
    let (summary, _) = f.finish(later(now, 5));
    assert_eq!(summary.exit, Exit::Ok, "what did not run is no failure");
    assert!(summary.interrupted);

    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    f.tick(now);
    f.finished(
        "a",
        1,
        &report(Outcome::Failed { reason: "x".into() }),
        later(now, 2),
    );
    f.stop_requested();
    let (summary, _) = f.finish(later(now, 5));
    assert_eq!(summary.exit, Exit::TasksFailed);
}

#[test]
fn a_dependency_start_is_built_off_the_fleet_and_a_conflict_blocks() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 10));
    answer(&mut f, &out, &[]);
    let out = f.tick(later(now, 11));
    assert!(spawned(&out).is_empty());
    let job = out
        .iter()
        .find_map(|e| match e {
            Effect::ResolveStart(j) => Some(j),
            _ => None,
        })
        .expect("a dependency start to build");
    assert_eq!(job.task, "b");
    assert_eq!(
        job.deps.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    // While it is built the task holds its slot: it does not start twice.
    assert!(f.tick(later(now, 12)).is_empty());
    assert!(!f.done(later(now, 12)).0);
    let out = f.dependency_start(
        "b",
        Err(StartError::Conflict {
            id: "a".into(),
            commit: git2::Oid::ZERO_SHA1,
            onto: "the base".into(),
            files: vec!["f".into()],
        }),
        later(now, 13),
    );
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::Blocked {
            reason: Some(_),
            ..
        }
    )));
    assert!(matches!(
        status(&f, "b"),
        TaskStatus::Blocked {
            reason: Some(_),
            ..
        }
    ));
    assert!(f.record("b").unwrap().attempts.is_empty());
    assert!(f.done(later(now, 13)).0);
}

#[test]
fn a_built_dependency_start_becomes_the_attempts_base() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.tick(now);
    f.finished("a", 1, &report(Outcome::Success), later(now, 10));
    f.tick(later(now, 11));
    let out = f.dependency_start("b", Ok(Some("abc123".into())), later(now, 12));
    let base = out.iter().find_map(|e| match e {
        Effect::Spawn(s) => Some(s.prepare.base.clone()),
        _ => None,
    });
    assert_eq!(base.as_deref(), Some("abc123"));
}

#[test]
fn an_interrupt_while_a_start_is_built_leaves_the_task_pending() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 10));
    answer(&mut f, &out, &[]);
    f.tick(later(now, 11));
    f.interrupt();
    let out = f.dependency_start("b", Ok(None), later(now, 12));
    assert!(spawned(&out).is_empty());
    assert_eq!(status(&f, "b"), TaskStatus::Pending);
    assert!(f.done(later(now, 12)).0);
}

#[test]
fn an_illegal_transition_is_said_and_counted() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    f.finished("a", 1, &report(Outcome::Success), later(now, 10));
    let mut out = Vec::new();
    f.transition(
        "a",
        TaskStatus::Blocked {
            on: vec![],
            reason: None,
        },
        &mut out,
    );
    assert_eq!(f.invalid_transitions(), 1);
    assert!(notices(&out)[0].contains("cannot go from"));
    assert!(status(&f, "a").is_success());
}

#[test]
fn a_requeued_task_goes_first_again_in_dependency_order() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n{\"id\":\"c\",\"prompt\":\"c\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 1).build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)), vec![("a".to_string(), 1, 0)]);
    f.finished("a", 1, &report(Outcome::Overloaded), later(now, 60));
    f.state.backoff_until = None;
    assert_eq!(
        spawned(&f.tick(later(now, 61))),
        vec![("a".to_string(), 2, 0)]
    );
    f.finished("a", 2, &report(Outcome::Success), later(now, 100));
    assert_eq!(
        spawned(&f.tick(later(now, 101))),
        vec![("b".to_string(), 1, 0)]
    );
}

/// The `needs_attention` events among `effects`: (cause, task, credential).
fn attention(effects: &[Effect]) -> Vec<(AttentionCause, Option<String>, Option<String>)> {
    events(effects)
        .into_iter()
        .filter_map(|e| match e {
            Event::NeedsAttention {
                cause,
                task,
                credential,
                ..
            } => Some((*cause, task.clone(), credential.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn only_a_failure_after_the_last_retry_needs_attention() {
    let mut f = Setup::new(TWO).supervise(1).build();
    let now = t0();
    f.tick(now);
    // Retried: nothing for people yet; a success needs nobody.
    let first = f.finished("a", 1, &report(failed()), later(now, 60));
    assert!(attention(&first).is_empty());
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 60));
    assert!(attention(&out).is_empty());
    plan_retries(&mut f, &first);
    assert_eq!(
        spawned(&f.tick(later(now, 61))),
        vec![("a".to_string(), 2, 0)]
    );
    let out = f.finished("a", 2, &report(failed()), later(now, 200));
    assert_eq!(
        attention(&out),
        vec![(AttentionCause::TaskFailed, Some("a".to_string()), None)]
    );
    // It follows the `finished` it sums up, and says what to do.
    let kinds: Vec<&str> = events(&out).iter().map(|e| e.kind()).collect();
    let at = kinds.iter().position(|k| *k == "needs_attention").unwrap();
    assert!(kinds[..at].contains(&"finished"), "{kinds:?}");
    let message = events(&out)
        .into_iter()
        .find_map(|e| match e {
            Event::NeedsAttention { message, .. } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        message.contains("failed: tests fail") && message.contains("flocks retry a"),
        "{message}"
    );
}

#[test]
fn an_interrupted_task_needs_nobody() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Interrupted), later(now, 5));
    assert!(attention(&out).is_empty());
}

#[test]
fn a_disabled_credential_and_every_credential_parked_need_attention() {
    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    let now = t0();
    f.tick(now);
    let rejected = Outcome::CredentialRejected {
        credential: None,
        reason: "invalid api key".into(),
    };
    let out = f.finished("a", 1, &report(rejected), later(now, 60));
    assert_eq!(
        attention(&out),
        vec![(
            AttentionCause::CredentialDisabled,
            None,
            Some(DEFAULT_LOGIN.to_string())
        )]
    );

    let mut f = Setup::new(ONE).build();
    f.tick(now);
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: Some(now.wall + chrono::Duration::seconds(600)),
    };
    let out = f.finished("a", 1, &report(limited), later(now, 60));
    assert!(attention(&out).is_empty(), "parked, not yet waiting");
    let out = f.tick(later(now, 61));
    assert_eq!(
        attention(&out),
        vec![(AttentionCause::CredentialsParked, None, None)]
    );
    // Said once per wait, not at every wake-up.
    assert!(attention(&f.tick(later(now, 62))).is_empty());
}

#[test]
fn a_failed_setup_is_final_unless_supervised_and_counts_as_a_quick_failure() {
    let setup_failed = || Outcome::SetupFailed {
        command: "npm ci".into(),
        reason: "exit status 1".into(),
        output: vec!["npm ERR! 404".into()],
    };
    // Without --supervise: done, as a failure is.
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(setup_failed()), later(now, 60));
    assert_eq!(
        status(&f, "a"),
        TaskStatus::Done {
            outcome: setup_failed()
        }
    );
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert!(
        setup_failed()
            .describe()
            .contains("setup failed: `npm ci`: exit status 1 (last output: npm ERR! 404)")
    );

    // With it: retried, using one of max_retries.
    let mut f = Setup::new(ONE).supervise(1).build();
    f.tick(now);
    let out = f.finished("a", 1, &report(setup_failed()), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert!(out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert_eq!(f.record("a").unwrap().counted_failures(), 1);

    // A setup that fails at once everywhere (a broken environment) stops
    // dispatching like any quick failure.
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n{\"id\":\"c\",\"prompt\":\"c\"}\n{\"id\":\"d\",\"prompt\":\"d\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 3).build();
    f.tick(now);
    let mut out = Vec::new();
    for id in ["a", "b", "c"] {
        out = f.finished(id, 1, &report(setup_failed()), later(now, 1));
    }
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("dispatch stopped: 3 attempts in a row"))
    );
}

/// `n` tasks `t0`, `t1`, ... with `extra` fields on each line.
fn many(n: usize, extra: &str) -> &'static str {
    let lines: String = (0..n)
        .map(|i| format!("{{\"id\":\"t{i}\",\"prompt\":\"do {i}\"{extra}}}\n"))
        .collect();
    Box::leak(lines.into_boxed_str())
}

/// The starts among `effects`: (task, credential).
fn started_on(effects: &[Effect]) -> Vec<(String, Option<String>)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(s) => Some((s.task.clone(), s.credential.clone())),
            _ => None,
        })
        .collect()
}

fn with_run(f: &mut Fleet) {
    f.state_mut().run = Some(crate::state::RunInfo {
        id: "r".into(),
        pid: 1,
        started_at: Utc::now(),
        ended_at: None,
        supervise: false,
        pid_start: None,
        waiting: None,
    });
}

#[test]
fn low_disk_stops_new_starts_and_space_coming_back_resumes() {
    let gib = crate::config::GIB;
    let mut f = Setup::new(TWO)
        .config(|c| {
            c.max_agents = 1;
            c.min_free_disk = Some(5 * gib);
        })
        .build();
    with_run(&mut f);
    let now = t0();
    // Enough space: nothing said, the first task starts.
    assert!(f.free_disk(6 * gib, Path::new("/p/.worktrees")).is_empty());
    assert_eq!(spawned(&f.tick(now)).len(), 1);
    // Below the minimum: said once, the run waits with the reason.
    let out = f.free_disk(gib, Path::new("/p/.worktrees"));
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.contains("below min_free_disk_gb = 5.00 GB")
                && m.contains("no new agent starts")),
        "{:?}",
        notices(&out)
    );
    assert!(events(&out).iter().any(
        |e| matches!(e, Event::Waiting { until: None, reason: Some(r) } if r.contains("free disk space is 1.00 GB"))
    ));
    assert!(f.state().run.as_ref().unwrap().waiting.is_some());
    assert!(
        f.free_disk(gib / 2, Path::new("/p/.worktrees")).is_empty(),
        "said once only"
    );
    // The running task ends; the next does not start, and the run waits.
    f.finished("a", 1, &report(Outcome::Success), later(now, 60));
    assert!(spawned(&f.tick(later(now, 61))).is_empty());
    assert!(!f.done(later(now, 61)).0);
    // Space comes back: said, cleared, the next task starts.
    let out = f.free_disk(5 * gib, Path::new("/p/.worktrees"));
    assert!(notices(&out).iter().any(|m| m.contains("dispatch resumes")));
    assert!(f.state().run.as_ref().unwrap().waiting.is_none());
    assert_eq!(
        spawned(&f.tick(later(now, 62))),
        vec![("b".to_string(), 1, 0)]
    );
}

#[test]
fn with_no_wait_low_disk_ends_the_run_instead() {
    let gib = crate::config::GIB;
    let mut f = Setup::new(TWO)
        .config(|c| c.min_free_disk = Some(5 * gib))
        .build();
    f.opts.no_wait = true;
    let out = f.free_disk(gib, Path::new("/p/.worktrees"));
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.contains("below min_free_disk_gb") && m.contains("--no-wait was given")),
        "{:?}",
        notices(&out)
    );
    assert!(spawned(&f.tick(t0())).is_empty());
    assert!(f.done(t0()).0);
    let (summary, _) = f.finish(t0());
    assert_eq!(summary.exit, Exit::CouldNotStart);
}

#[test]
fn without_min_free_disk_the_reading_is_ignored() {
    let mut f = Setup::new(ONE).build();
    assert!(f.free_disk(0, Path::new("/p/.worktrees")).is_empty());
    assert_eq!(spawned(&f.tick(t0())).len(), 1);
}

#[test]
fn a_task_is_not_retried_once_its_attempts_reach_its_cost_cap() {
    let lines = "{\"id\":\"a\",\"prompt\":\"do a\",\"max_cost_usd\":0.5}\n{\"id\":\"b\",\"prompt\":\"do b\"}\n";
    let mut f = Setup::new(lines).supervise(5).build();
    let now = t0();
    f.tick(now);
    // $0.30 of $0.50: retried.
    let out = f.finished("a", 1, &with_result(report(failed()), 0.3), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    plan_retries(&mut f, &out);
    assert_eq!(
        spawned(&f.tick(later(now, 61))),
        vec![("a".to_string(), 2, 0)]
    );
    // $0.60: not retried, though retries are left, and it says why.
    let out = f.finished("a", 2, &with_result(report(failed()), 0.3), later(now, 120));
    assert_eq!(status(&f, "a"), TaskStatus::Done { outcome: failed() });
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::Requeued { .. }))
    );
    let why = f.record("a").unwrap().not_retried.clone().unwrap();
    assert!(
        why.contains("$0.60") && why.contains("max_cost_usd = 0.5"),
        "{why}"
    );
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("task a: not retried:"))
    );
    // A task without a cap retries as before.
    let out = f.finished("b", 1, &with_result(report(failed()), 9.0), later(now, 130));
    assert_eq!(status(&f, "b"), TaskStatus::Pending);
    assert!(out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    // A rate limit is not a retry, but the cap still stops the next attempt.
    let lines = "{\"id\":\"a\",\"prompt\":\"do a\",\"max_cost_usd\":0.5}\n";
    let mut f = Setup::new(lines).build();
    f.tick(now);
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: None,
    };
    f.finished("a", 1, &with_result(report(limited), 0.7), later(now, 60));
    assert!(matches!(status(&f, "a"), TaskStatus::Done { .. }));
    assert!(f.record("a").unwrap().not_retried.is_some());
}

#[test]
fn a_credential_runs_at_most_max_concurrent_agents() {
    let mut f = Setup::new(many(5, ""))
        .credentials(&["a", "b"], |c| {
            c.max_concurrent = Some(if c.name == "a" { 1 } else { 2 })
        })
        .build();
    let now = t0();
    let out = f.tick(now);
    let on = started_on(&out);
    assert_eq!(on.len(), 3, "{on:?}");
    let on_a = on.iter().filter(|(_, c)| c.as_deref() == Some("a")).count();
    assert_eq!(on_a, 1, "{on:?}");
    // Full: nothing more starts, and the run waits for an agent to end.
    assert!(spawned(&f.tick(later(now, 1))).is_empty());
    assert!(!f.done(later(now, 1)).0);
    let (first_a, _) = on.iter().find(|(_, c)| c.as_deref() == Some("a")).unwrap();
    f.finished(first_a, 1, &report(Outcome::Success), later(now, 60));
    assert_eq!(
        started_on(&f.tick(later(now, 61))),
        vec![("t3".to_string(), Some("a".to_string()))]
    );
}

#[test]
fn a_credential_at_its_cost_cap_is_retired_for_the_run() {
    let mut f = Setup::new(many(6, ""))
        .config(|c| c.max_agents = 2)
        .credentials(&["a", "b"], |c| {
            if c.name == "a" {
                c.max_cost_usd = Some(1.0)
            }
        })
        .build();
    let now = t0();
    let on = started_on(&f.tick(now));
    let (on_a, _) = on
        .iter()
        .find(|(_, c)| c.as_deref() == Some("a"))
        .unwrap()
        .clone();
    let out = f.finished(
        &on_a,
        1,
        &with_result(report(Outcome::Success), 0.6),
        later(now, 60),
    );
    assert!(
        !events(&out)
            .iter()
            .any(|e| matches!(e, Event::CredentialDisabled { .. }))
    );
    let (next_a, _) = started_on(&f.tick(later(now, 61)))
        .into_iter()
        .find(|(_, c)| c.as_deref() == Some("a"))
        .unwrap();
    let out = f.finished(
        &next_a,
        1,
        &with_result(report(Outcome::Success), 0.6),
        later(now, 120),
    );
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::CredentialDisabled { credential, reason, retired: true }
            if credential == "a" && reason.contains("$1.20") && reason.contains("max_cost_usd = 1")
    )));
    assert!(f.state().credentials["a"].disabled.is_some());
    // Only b takes work now; the run does not end while b can run it.
    let later_starts = started_on(&f.tick(later(now, 200)));
    assert!(
        later_starts.iter().all(|(_, c)| c.as_deref() == Some("b")),
        "{later_starts:?}"
    );
}

#[test]
fn when_every_credential_is_spent_the_budget_ends_the_run() {
    let mut f = Setup::new(many(3, ""))
        .config(|c| c.max_agents = 1)
        .credentials(&["a"], |c| c.max_cost_usd = Some(0.5))
        .build();
    let now = t0();
    f.tick(now);
    let out = f.finished(
        "t0",
        1,
        &with_result(report(Outcome::Success), 0.7),
        later(now, 10),
    );
    answer(&mut f, &out, &[("t0", None)]);
    // The turn starts nothing, and ends the run saying why.
    let (done, out) = f.done(later(now, 11));
    assert!(spawned(&out).is_empty());
    assert!(done);
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.contains("every credential the pools can use reached its max_cost_usd")),
        "{:?}",
        notices(&out)
    );
    let (summary, _) = f.finish(later(now, 11));
    assert_eq!(summary.exit, Exit::TasksFailed);
}

#[test]
fn a_parked_credentials_work_moves_to_the_others_on_a_ramp() {
    let mut f = Setup::new(many(12, ""))
        .config(|c| {
            c.max_agents = 8;
            c.credential_ramp = Duration::from_secs(10);
        })
        .credentials(&["a", "b"], |_| {})
        .build();
    let now = t0();
    // Before any park, every slot fills at once, shared by a and b.
    let on = started_on(&f.tick(now));
    assert_eq!(on.len(), 8);
    let on_a: Vec<String> = on
        .iter()
        .filter(|(_, c)| c.as_deref() == Some("a"))
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(on_a.len(), 4);
    // a is rate limited: its four agents come back, a is parked for an hour.
    let resets = now.wall + chrono::Duration::seconds(3600);
    for t in &on_a {
        let limited = Outcome::RateLimited {
            credential: Some("a".into()),
            resets_at: Some(resets),
        };
        f.finished(t, 1, &report(limited), later(now, 1));
    }
    // b takes the work gradually: on top of the 4 it runs, 1 more agent in
    // the first step, 2 in the next, then 4 (slots allowing).
    let at = |s: u64| later(now, s);
    assert_eq!(started_on(&f.tick(at(1))).len(), 1);
    assert!(started_on(&f.tick(at(5))).is_empty());
    assert!(f.next_wake(at(5)) <= at(11).mono + Duration::from_millis(100));
    let step1 = started_on(&f.tick(at(11)));
    assert_eq!(step1.len(), 1);
    assert!(step1.iter().all(|(_, c)| c.as_deref() == Some("b")));
    // b's own agents go on unslowed: one ends, another takes its place at once.
    let (b_task, _) = on.iter().find(|(_, c)| c.as_deref() == Some("b")).unwrap();
    f.finished(b_task, 1, &report(Outcome::Success), at(12));
    assert_eq!(started_on(&f.tick(at(12))).len(), 1);
    // Step 2 allows 4 more than at the park: the last two free slots fill.
    assert_eq!(started_on(&f.tick(at(21))).len(), 2);
    assert!(started_on(&f.tick(at(22))).is_empty());
}

#[test]
fn the_ramp_never_holds_back_a_fleet_of_one_slot() {
    let mut f = Setup::new(many(3, ""))
        .config(|c| {
            c.max_agents = 2;
            c.pools[0].max_worktrees = 1;
        })
        .credentials(&["a", "b"], |_| {})
        .build();
    let now = t0();
    let on = started_on(&f.tick(now));
    assert_eq!(on, vec![("t0".to_string(), Some("a".to_string()))]);
    let limited = Outcome::RateLimited {
        credential: Some("a".into()),
        resets_at: Some(now.wall + chrono::Duration::seconds(3600)),
    };
    f.finished("t0", 1, &report(limited), later(now, 1));
    // b ran nothing: it may run 1 at once, which is all the slot allows.
    let next = started_on(&f.tick(later(now, 1)));
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].1.as_deref(), Some("b"));
    f.finished(&next[0].0, 1, &report(Outcome::Success), later(now, 2));
    assert_eq!(started_on(&f.tick(later(now, 2))).len(), 1);
}

// --- conflicts during the run (issue 17) -----------------------------------

const PAIRS: &str = "{\"id\":\"a1\",\"prompt\":\"a\",\"touches\":[\"a/**\"]}\n\
{\"id\":\"b1\",\"prompt\":\"b\",\"touches\":[\"b/**\"]}\n\
{\"id\":\"a2\",\"prompt\":\"a\",\"touches\":[\"a/x.rs\"]}\n\
{\"id\":\"c\",\"prompt\":\"c\"}\n";

#[test]
fn overlapping_footprints_never_run_at_once_and_the_later_starts_from_the_earlier() {
    let mut f = Setup::new(PAIRS).build();
    let now = t0();
    let out = f.tick(now);
    let started: Vec<String> = spawned(&out).into_iter().map(|s| s.0).collect();
    // a2 overlaps a1 (a/x.rs is under a/**); c declares nothing and runs.
    assert_eq!(started, ["a1", "b1", "c"]);
    assert!(!f.done(now).0);
    // b1 finishing does not release a2.
    let out = f.finished("b1", 1, &report(Outcome::Success), later(now, 5));
    answer(&mut f, &out, &[]);
    assert!(f.tick(later(now, 6)).is_empty());
    // a1 does: a2 starts from its work (as start_from = "dependencies").
    let out = f.finished("a1", 1, &report(Outcome::Success), later(now, 10));
    answer(&mut f, &out, &[]);
    let out = f.tick(later(now, 11));
    assert!(spawned(&out).is_empty());
    let job = out
        .iter()
        .find_map(|e| match e {
            Effect::ResolveStart(j) => Some(j),
            _ => None,
        })
        .expect("a2's start is built from a1's work");
    assert_eq!(job.task, "a2");
    assert_eq!(
        job.deps.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a1"]
    );
}

#[test]
fn a_failed_footprint_neighbour_releases_the_later_task_from_the_base() {
    let mut f = Setup::new(PAIRS).build();
    let now = t0();
    f.tick(now);
    f.finished("a1", 1, &report(failed()), later(now, 10));
    let out = f.tick(later(now, 11));
    let started: Vec<String> = spawned(&out).into_iter().map(|s| s.0).collect();
    assert_eq!(started, ["a2"], "no start to build: a1 has no work");
    // With --supervise, a1's retry comes first and a2 keeps waiting.
    let mut f = Setup::new(PAIRS).supervise(1).build();
    f.tick(now);
    let out = f.finished("a1", 1, &report(failed()), later(now, 10));
    plan_retries(&mut f, &out);
    let out = f.tick(later(now, 11));
    let started: Vec<String> = spawned(&out).into_iter().map(|s| s.0).collect();
    assert_eq!(started, ["a1"]);
}

#[test]
fn each_success_is_predicted_one_at_a_time() {
    let mut f = Setup::new(TWO).build();
    let now = t0();
    f.tick(now);
    let first = f.finished("a", 1, &report(Outcome::Success), later(now, 1));
    assert_eq!(predicts(&first), 1);
    // b succeeds while a's prediction is out: folded into the next one.
    let second = f.finished("b", 1, &report(Outcome::Success), later(now, 2));
    assert_eq!(predicts(&second), 0);
    assert!(!f.done(later(now, 2)).0, "the run waits for the prediction");
    let again = answer(&mut f, &first, &[("a", None)]);
    assert_eq!(predicts(&again), 1);
    let Some(Effect::Predict(job)) = again.iter().find(|e| matches!(e, Effect::Predict(_))) else {
        unreachable!()
    };
    assert!(job.state.task("b").unwrap().status.is_success());
    let last = answer(&mut f, &again, &[("a", None), ("b", None)]);
    assert_eq!(predicts(&last), 0);
    assert!(f.done(later(now, 3)).0);
}

#[test]
fn a_predicted_conflict_is_recorded_and_said_once() {
    let mut f = Setup::new(TWO).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 1));
    answer(&mut f, &out, &[("a", None)]);
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 2));
    let said = answer(
        &mut f,
        &out,
        &[("a", None), ("b", Some(conflict(&["a"], "x.rs")))],
    );
    let ev: Vec<&Event> = events(&said)
        .into_iter()
        .filter(|e| matches!(e, Event::ConflictPredicted { .. }))
        .collect();
    assert_eq!(
        ev,
        [&Event::ConflictPredicted {
            task: "b".into(),
            with: vec!["a".into()],
            with_target: false,
            files: vec!["x.rs".into()],
            commit: "c0ffee".into(),
            target: "main".into(),
        }]
    );
    assert_eq!(
        f.record("b").unwrap().conflict,
        Some(conflict(&["a"], "x.rs"))
    );
    assert!(f.take_dirty());
    // Without --supervise and "early", it stays as it succeeded.
    assert!(status(&f, "b").is_success());
    // The same again: nothing new to say; then it applies: cleared.
    f.request_prediction("a", &mut Vec::new());
    let fake = [Effect::Predict(Box::new(PredictJob {
        state: State::default(),
        footprints: Vec::new(),
    }))];
    let again = answer(
        &mut f,
        &fake,
        &[("a", None), ("b", Some(conflict(&["a"], "x.rs")))],
    );
    assert!(events(&again).is_empty());
    answer(&mut f, &fake, &[("a", None), ("b", None)]);
    assert_eq!(f.record("b").unwrap().conflict, None);
}

#[test]
fn early_redo_requeues_the_task_from_the_target_and_the_tasks_it_clashed_with() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n\
{\"id\":\"d\",\"prompt\":\"d\",\"depends_on\":[\"b\"]}\n";
    let mut f = Setup::new(lines)
        .supervise(1)
        .config(|c| c.land.redo_conflicts = crate::config::RedoConflicts::Early)
        .build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 1));
    answer(&mut f, &out, &[("a", None)]);
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 2));
    let out = answer(
        &mut f,
        &out,
        &[("a", None), ("b", Some(conflict(&["a"], "x.rs")))],
    );
    let job = out
        .iter()
        .find_map(|e| match e {
            Effect::PrepareRedo(j) => Some(j),
            _ => None,
        })
        .expect("an early redo");
    assert_eq!(job.task, "b");
    assert_eq!(job.before, 1);
    assert_eq!(
        job.with.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::Requeued { task, reason } if task == "b" && reason.contains("redoing it now on `main` with `a`")
    )));
    // b is pending again: its dependent waits, and b waits for its start.
    assert_eq!(status(&f, "b"), TaskStatus::Pending);
    assert!(spawned(&f.tick(later(now, 3))).is_empty());
    assert!(!f.done(later(now, 3)).0);
    f.redo_prepared(
        "b",
        Ok(NextAttempt {
            fresh: true,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: Some("redo".into()),
            base: Some("base-with-a".into()),
        }),
    );
    let out = f.tick(later(now, 4));
    let starts: Vec<(String, String, bool)> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(s) => Some((s.task.clone(), s.prepare.base.clone(), s.prepare.fresh)),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [("b".to_string(), "base-with-a".to_string(), true)]);
    assert_eq!(f.record("b").unwrap().conflict, None);
}

#[test]
fn an_early_redo_that_cannot_be_prepared_leaves_the_task_as_it_succeeded() {
    let mut f = Setup::new(TWO)
        .supervise(1)
        .config(|c| c.land.redo_conflicts = crate::config::RedoConflicts::Early)
        .build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 1));
    answer(&mut f, &out, &[("a", None)]);
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 2));
    answer(
        &mut f,
        &out,
        &[("a", None), ("b", Some(conflict(&["a"], "x.rs")))],
    );
    let out = f.redo_prepared("b", Err(RedoError::TargetGone("main".into())));
    assert!(
        notices(&out)[0].contains("land --resolve"),
        "{:?}",
        notices(&out)
    );
    assert!(status(&f, "b").is_success());
    assert_eq!(f.invalid_transitions(), 0);
    assert!(f.done(later(now, 3)).0);
}

#[test]
fn a_later_conflict_waits_for_an_earlier_early_redo_and_caps() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n{\"id\":\"c\",\"prompt\":\"c\"}\n";
    let mut f = Setup::new(lines)
        .supervise(1)
        .config(|c| c.land.redo_conflicts = crate::config::RedoConflicts::Early)
        .build();
    let now = t0();
    f.tick(now);
    for (i, id) in ["a", "b"].iter().enumerate() {
        let out = f.finished(id, 1, &report(Outcome::Success), later(now, i as u64));
        answer(&mut f, &out, &[]);
    }
    let out = f.finished("c", 1, &report(Outcome::Success), later(now, 3));
    let out = answer(
        &mut f,
        &out,
        &[
            ("a", None),
            ("b", Some(conflict(&["a"], "x.rs"))),
            ("c", Some(conflict(&["a"], "x.rs"))),
        ],
    );
    let redone = |out: &[Effect]| -> Vec<String> {
        out.iter()
            .filter_map(|e| match e {
                Effect::PrepareRedo(j) => Some(j.task.clone()),
                _ => None,
            })
            .collect()
    };
    // b first; c waits for b's redo (it would build on what is changing).
    assert_eq!(redone(&out), ["b"]);
    assert!(status(&f, "c").is_success());
    f.redo_prepared(
        "b",
        Ok(NextAttempt {
            fresh: true,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: None,
            base: Some("x".into()),
        }),
    );
    f.tick(later(now, 4));
    let out = f.finished("b", 2, &report(Outcome::Success), later(now, 5));
    let out = answer(
        &mut f,
        &out,
        &[
            ("a", None),
            ("b", None),
            ("c", Some(conflict(&["a", "b"], "x.rs"))),
        ],
    );
    assert_eq!(redone(&out), ["c"]);
    // A task still conflicting after EARLY_REDO_CAP redos is left for
    // `land --resolve`: said once.
    let mut f = Setup::new(TWO)
        .supervise(1)
        .config(|c| c.land.redo_conflicts = crate::config::RedoConflicts::Early)
        .build();
    f.tick(now);
    for id in ["a", "b"] {
        let out = f.finished(id, 1, &report(Outcome::Success), later(now, 1));
        answer(&mut f, &out, &[]);
    }
    let (mut redos, mut notes) = (0, Vec::new());
    for _ in 0..super::conflicts::EARLY_REDO_CAP + 3 {
        let mut ask = Vec::new();
        f.request_prediction("a", &mut ask);
        let out = answer(
            &mut f,
            &ask,
            &[("a", None), ("b", Some(conflict(&["a"], "x.rs")))],
        );
        notes.extend(notices(&out));
        if !redone(&out).is_empty() {
            redos += 1;
            // Its start cannot be made: it stays as it succeeded.
            f.redo_prepared("b", Err(RedoError::Git("no".into())));
        }
    }
    assert_eq!(redos, super::conflicts::EARLY_REDO_CAP);
    let capped: Vec<&String> = notes
        .iter()
        .filter(|n| n.contains("redone early"))
        .collect();
    assert_eq!(capped.len(), 1, "{notes:?}");
}

#[test]
fn a_failing_prediction_is_said_once() {
    let mut f = Setup::new(TWO).build();
    let now = t0();
    f.tick(now);
    let mut said = Vec::new();
    for id in ["a", "b"] {
        let out = f.finished(id, 1, &report(Outcome::Success), later(now, 1));
        assert_eq!(predicts(&out), 1);
        said.extend(notices(&f.predicted(PredictResult {
            prediction: Err("land_target `main` is not a branch".into()),
            outside: Vec::new(),
        })));
    }
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("could not predict land conflicts"));
    assert!(f.done(later(now, 2)).0);
}

#[test]
fn predictions_never_stop_however_many_tasks_land_would_pick() {
    let mut f = Setup::new(many(3, "")).config(|c| c.max_agents = 3).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("t0", 1, &report(Outcome::Success), later(now, 5));
    // Land would pick 10,001 tasks: the next success is predicted all the same.
    let ids: Vec<String> = (0..=10_000).map(|i| format!("x{i}")).collect();
    let found: Vec<(&str, Option<PredictedConflict>)> =
        ids.iter().map(|id| (id.as_str(), None)).collect();
    answer(&mut f, &out, &found);
    let out = f.finished("t1", 1, &report(Outcome::Success), later(now, 6));
    assert_eq!(predicts(&out), 1);
    assert!(notices(&out).is_empty(), "{:?}", notices(&out));
}

#[test]
fn the_end_waits_for_a_prediction_100_ms_at_most_and_says_what_it_left() {
    let mut f = Setup::new(many(2, "")).config(|c| c.max_agents = 2).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("t0", 1, &report(Outcome::Success), later(now, 5));
    answer(&mut f, &out, &[("t0", None)]);
    // t1's prediction is being worked out when nothing else is left.
    let out = f.finished("t1", 1, &report(Outcome::Success), later(now, 6));
    assert_eq!(predicts(&out), 1);
    let end = later(now, 6);
    assert!(!f.done(end).0, "the end waits a moment");
    let until = f.end_wait_until(end).expect("a deadline");
    assert_eq!(until, end.mono + super::conflicts::END_WAIT);
    let almost = Now {
        wall: end.wall,
        mono: end.mono + Duration::from_millis(99),
    };
    assert!(!f.done(almost).0);
    let past = Now {
        wall: end.wall,
        mono: end.mono + Duration::from_millis(100),
    };
    assert!(f.done(past).0, "no more than 100 ms");
    let (_, effects) = f.finish(past);
    let said: Vec<String> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(Event::Notice { message }) => Some(message.clone()),
            _ => None,
        })
        .collect();
    assert!(
        said.iter().any(
            |m| m.contains("the conflicts of 1 task (`t1`) are not predicted")
                && m.contains("flocks land --dry-run")
        ),
        "{said:?}"
    );
    // Unknown, not "no conflict": t1 is marked, t0 (predicted) is not.
    assert!(f.record("t1").unwrap().conflict_unknown);
    assert!(!f.record("t0").unwrap().conflict_unknown);
}

#[test]
fn a_prediction_copies_only_what_land_reads() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"]}\n{\"id\":\"c\",\"prompt\":\"c\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 3).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 5));
    let Some(Effect::Predict(job)) = out.iter().find(|e| matches!(e, Effect::Predict(_))) else {
        panic!("no prediction");
    };
    let ids: Vec<&str> = job.state.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["a"]);
    assert!(job.state.task("a").is_some());
}

// ---- best of N ----

const BEST3: &str = "{\"id\":\"a\",\"prompt\":\"do a\",\"best_of\":3}\n";

fn judge_jobs(effects: Vec<Effect>) -> Vec<JudgeJob> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Judge(j) => Some(*j),
            _ => None,
        })
        .collect()
}

fn judgement(winner: Option<u32>) -> best_of::Judged {
    use crate::state::{JudgedBy, Judgement, Verdict, VerdictOutcome};
    let ranking = (1..=3)
        .map(|k| Verdict {
            variant: k,
            outcome: if Some(k) == winner {
                VerdictOutcome::Winner
            } else {
                VerdictOutcome::Failed
            },
            reason: format!("reason {k}"),
            lines: None,
            cost_usd: 0.0,
        })
        .collect();
    best_of::Judged {
        judgement: Judgement {
            winner,
            by: JudgedBy::Ranking,
            reason: "why".into(),
            ranking,
            at: chrono::Utc::now(),
            notice: None,
            judge_cost_usd: 0.0,
        },
        judge: None,
    }
}

fn slots(n: usize) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.max_agents = n;
        c.pools[0].max_worktrees = n;
    }
}

#[test]
fn best_of_runs_every_variant_and_the_task_waits_for_all_of_them() {
    let mut f = Setup::new(BEST3).config(slots(4)).build();
    let now = t0();
    let out = f.tick(now);
    let mut started: Vec<String> = spawned(&out).into_iter().map(|s| s.0).collect();
    started.sort();
    assert_eq!(
        started,
        ["a@v1", "a@v2", "a@v3"],
        "the task itself never runs"
    );
    let branches: Vec<String> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Spawn(s) => Some(s.prepare.branch.clone()),
            _ => None,
        })
        .collect();
    assert!(
        branches.contains(&"flocks/a@v2".to_string()),
        "{branches:?}"
    );
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    f.finished("a@v1", 1, &report(Outcome::Success), later(now, 60));
    f.finished("a@v2", 1, &report(failed()), later(now, 60));
    assert!(judge_jobs(f.tick(later(now, 61))).is_empty());
    assert!(!f.done(later(now, 61)).0);
    f.finished("a@v3", 1, &report(Outcome::Success), later(now, 62));
    let jobs = judge_jobs(f.tick(later(now, 62)));
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].task, "a");
    assert_eq!(jobs[0].variants.len(), 3);
    assert!(
        jobs[0].agent.is_none(),
        "no judge agent unless [best_of] judge = true"
    );
    assert!(!f.done(later(now, 62)).0, "the run waits for the judgement");
    assert!(judge_jobs(f.tick(later(now, 63))).is_empty(), "judged once");
    let out = f.judged("a", judgement(Some(3)), later(now, 64));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::VariantJudged {
            winner: Some(3),
            ..
        }
    )));
    assert!(status(&f, "a").is_success());
    assert_eq!(f.record("a").unwrap().winner().unwrap().id, "a@v3");
    assert!(
        !f.done(later(now, 64)).0,
        "the run waits for the judged task's conflict prediction"
    );
    answer(&mut f, &out, &[("a", None)]);
    assert!(f.done(later(now, 64)).0);
    let (summary, _) = f.finish(later(now, 64));
    assert_eq!(summary.exit, crate::error::Exit::Ok);
}

#[test]
fn a_failed_variant_is_out_even_under_supervise() {
    let mut f = Setup::new(BEST3).config(slots(4)).supervise(3).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a@v1", 1, &report(failed()), later(now, 60));
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert_eq!(status(&f, "a@v1").label(), "failed");
    assert!(spawned(&f.tick(later(now, 61))).is_empty());
}

#[test]
fn a_rate_limited_variant_goes_back_to_the_queue() {
    let mut f = Setup::new(BEST3).config(slots(4)).build();
    let now = t0();
    f.tick(now);
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: Some(now.wall + chrono::Duration::seconds(30)),
    };
    let out = f.finished("a@v2", 1, &report(limited), later(now, 5));
    assert_eq!(status(&f, "a@v2"), TaskStatus::Pending);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::Requeued { task, .. } if task == "a@v2"))
    );
    f.finished("a@v1", 1, &report(Outcome::Success), later(now, 6));
    f.finished("a@v3", 1, &report(Outcome::Success), later(now, 6));
    assert!(
        judge_jobs(f.tick(later(now, 7))).is_empty(),
        "v2 has not ended"
    );
    let out = f.tick(later(now, 40));
    let again = spawned(&out);
    assert_eq!(again, [("a@v2".to_string(), 2, 0)], "{:?}", notices(&out));
}

#[test]
fn no_survivor_fails_the_task_or_under_supervise_runs_every_variant_again() {
    for supervise in [false, true] {
        let mut setup = Setup::new(BEST3).config(slots(4));
        if supervise {
            setup = setup.supervise(1);
        }
        let mut f = setup.build();
        let now = t0();
        f.tick(now);
        for k in 1..=3 {
            f.finished(&format!("a@v{k}"), 1, &report(failed()), later(now, 60));
        }
        assert_eq!(judge_jobs(f.tick(later(now, 61))).len(), 1);
        let out = f.judged("a", judgement(None), later(now, 62));
        let rec = f.record("a").unwrap();
        assert_eq!(rec.best_of.as_ref().unwrap().failed_rounds, 1);
        if !supervise {
            let TaskStatus::Done {
                outcome: Outcome::Failed { reason },
            } = &rec.status
            else {
                panic!("{:?}", rec.status);
            };
            assert!(
                reason.contains("v1: reason 1") && reason.contains("v3: reason 3"),
                "{reason}"
            );
            continue;
        }
        assert_eq!(rec.status, TaskStatus::Pending);
        let retries: Vec<(&String, &Option<String>)> = out
            .iter()
            .filter_map(|e| match e {
                Effect::PlanRetry { task, ended, .. } => Some((task, ended)),
                _ => None,
            })
            .collect();
        assert_eq!(retries.len(), 3, "every variant again");
        assert!(retries[1].1.as_deref().unwrap().contains("reason 2"));
        let requeued: Vec<&Event> = events(&out)
            .into_iter()
            .filter(|e| matches!(e, Event::Requeued { .. }))
            .collect();
        assert!(matches!(requeued[..], [Event::Requeued { task, .. }] if task == "a"));
        plan_retries(&mut f, &out);
        assert_eq!(spawned(&f.tick(later(now, 63))).len(), 3);
        for k in 1..=3 {
            f.finished(&format!("a@v{k}"), 2, &report(failed()), later(now, 90));
        }
        f.tick(later(now, 91));
        f.judged("a", judgement(None), later(now, 92));
        assert_eq!(
            status(&f, "a").label(),
            "failed",
            "max_retries 1: no third round"
        );
    }
}

#[test]
fn a_judge_agent_holds_a_slot_and_dependents_wait_for_the_judgement() {
    let lines = "{\"id\":\"a\",\"prompt\":\"do a\",\"best_of\":2}\n{\"id\":\"b\",\"prompt\":\"do b\",\"depends_on\":[\"a\"]}\n";
    let mut f = Setup::new(lines)
        .config(|c| {
            slots(2)(c);
            c.best_of.judge = true;
        })
        .build();
    let now = t0();
    let out = f.tick(now);
    assert_eq!(spawned(&out).len(), 2, "{:?}", spawned(&out));
    f.finished("a@v1", 1, &report(Outcome::Success), later(now, 10));
    f.finished("a@v2", 1, &report(Outcome::Success), later(now, 10));
    let jobs = judge_jobs(f.tick(later(now, 11)));
    let agent = jobs[0].agent.as_ref().expect("a judge agent");
    assert_eq!(agent.id, "a@judge");
    assert_eq!(agent.prepare.branch, "flocks/a@judge");
    assert!(spawned(&f.tick(later(now, 12))).is_empty(), "b waits for a");
    let mut j = judgement(Some(1));
    j.judge = Some(with_result(report(Outcome::Success), 0.5));
    f.judged("a", j, later(now, 13));
    assert_eq!(
        f.record("a")
            .unwrap()
            .best_of
            .as_ref()
            .unwrap()
            .judgement
            .as_ref()
            .unwrap()
            .judge_cost_usd,
        0.5
    );
    let started = spawned(&f.tick(later(now, 14)));
    assert_eq!(started, [("b".to_string(), 1, 0)], "the slot is free again");
}

#[test]
fn variants_are_judged_after_the_budget_stops_dispatch_without_a_judge_agent() {
    let mut f = Setup::new(BEST3)
        .config(|c| {
            slots(4)(c);
            c.best_of.judge = true;
            c.max_cost_usd = Some(0.05);
        })
        .build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 3);
    for k in 1..=3 {
        let r = with_result(report(Outcome::Success), 0.02);
        f.finished(&format!("a@v{k}"), 1, &r, later(now, 10));
    }
    assert!(f.stopping.stopped_because.is_some(), "the budget is spent");
    let jobs = judge_jobs(f.tick(later(now, 11)));
    assert_eq!(jobs.len(), 1, "judged all the same");
    assert!(jobs[0].agent.is_none());
    assert!(
        jobs[0]
            .notice
            .as_deref()
            .unwrap()
            .contains("no judge agent")
    );
    assert!(!f.done(later(now, 11)).0);
    let out = f.judged("a", judgement(Some(1)), later(now, 12));
    answer(&mut f, &out, &[("a", None)]);
    assert!(f.done(later(now, 12)).0);
}

#[test]
fn a_variant_failing_needs_nobody_but_a_task_with_no_survivor_does() {
    let mut f = Setup::new(BEST3).config(slots(4)).build();
    let now = t0();
    f.tick(now);
    for k in 1..=3 {
        let out = f.finished(&format!("a@v{k}"), 1, &report(failed()), later(now, 60));
        assert!(attention(&out).is_empty(), "v{k}: its task is judged first");
    }
    assert_eq!(judge_jobs(f.tick(later(now, 61))).len(), 1);
    let out = f.judged("a", judgement(None), later(now, 62));
    assert_eq!(
        attention(&out),
        vec![(AttentionCause::TaskFailed, Some("a".to_string()), None)]
    );
    let kinds: Vec<&str> = events(&out).iter().map(|e| e.kind()).collect();
    let at = kinds.iter().position(|k| *k == "needs_attention").unwrap();
    assert!(kinds[..at].contains(&"variant_judged"), "{kinds:?}");
    // A winner needs nobody.
    let mut f = Setup::new(BEST3).config(slots(4)).build();
    f.tick(now);
    for k in 1..=3 {
        f.finished(
            &format!("a@v{k}"),
            1,
            &report(Outcome::Success),
            later(now, 60),
        );
    }
    f.tick(later(now, 61));
    assert!(attention(&f.judged("a", judgement(Some(2)), later(now, 62))).is_empty());
}

#[test]
fn a_best_of_tasks_cost_cap_covers_all_its_variants() {
    let lines = "{\"id\":\"a\",\"prompt\":\"do a\",\"best_of\":3,\"max_cost_usd\":0.5}\n";
    let mut f = Setup::new(lines).config(slots(4)).supervise(3).build();
    let now = t0();
    f.tick(now);
    // $0.20 each: $0.60 together, over the task's $0.50 (no variant alone is).
    for k in 1..=3 {
        let r = with_result(report(failed()), 0.2);
        f.finished(&format!("a@v{k}"), 1, &r, later(now, 60));
    }
    assert_eq!(judge_jobs(f.tick(later(now, 61))).len(), 1);
    let out = f.judged("a", judgement(None), later(now, 62));
    assert_eq!(
        status(&f, "a").label(),
        "failed",
        "retries were left, money was not"
    );
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    let why = f.record("a").unwrap().not_retried.clone().unwrap();
    assert!(
        why.contains("$0.60") && why.contains("max_cost_usd = 0.5"),
        "{why}"
    );
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("task a: not retried:"))
    );
    // A rate-limited variant is not re-queued once its task's cap is spent.
    let mut f = Setup::new(lines).config(slots(4)).build();
    f.tick(now);
    f.finished(
        "a@v1",
        1,
        &with_result(report(failed()), 0.4),
        later(now, 10),
    );
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: None,
    };
    f.finished(
        "a@v2",
        1,
        &with_result(report(limited), 0.2),
        later(now, 11),
    );
    assert!(matches!(status(&f, "a@v2"), TaskStatus::Done { .. }));
    assert!(f.record("a@v2").unwrap().not_retried.is_some());
}

#[test]
fn a_judge_agent_waits_for_free_disk_like_any_agent() {
    let gib = crate::config::GIB;
    let mut f = Setup::new(BEST3)
        .config(|c| {
            slots(4)(c);
            c.best_of.judge = true;
            c.min_free_disk = Some(5 * gib);
        })
        .build();
    with_run(&mut f);
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 3);
    f.free_disk(gib, Path::new("/p/.worktrees"));
    for k in 1..=3 {
        f.finished(
            &format!("a@v{k}"),
            1,
            &report(Outcome::Success),
            later(now, 10),
        );
    }
    assert!(judge_jobs(f.tick(later(now, 11))).is_empty());
    assert!(!f.done(later(now, 11)).0, "the run waits");
    f.free_disk(6 * gib, Path::new("/p/.worktrees"));
    let jobs = judge_jobs(f.tick(later(now, 12)));
    assert_eq!(jobs.len(), 1);
    assert!(jobs[0].agent.is_some());
}

// ---- best of N with footprints and conflict prediction ----

#[test]
fn a_best_of_tasks_variants_share_a_footprint_without_waiting_for_each_other() {
    let lines = "{\"id\":\"a\",\"prompt\":\"do a\",\"best_of\":3,\"touches\":[\"a/**\"]}\n\
{\"id\":\"b\",\"prompt\":\"do b\",\"touches\":[\"a/b.rs\"]}\n";
    let mut f = Setup::new(lines).config(slots(4)).build();
    let now = t0();
    let mut started: Vec<String> = spawned(&f.tick(now)).into_iter().map(|s| s.0).collect();
    started.sort();
    // The variants are alternatives: all run at once; b overlaps a's
    // footprint and waits for a's judgement.
    assert_eq!(started, ["a@v1", "a@v2", "a@v3"]);
    for k in 1..=3 {
        let out = f.finished(
            &format!("a@v{k}"),
            1,
            &report(Outcome::Success),
            later(now, 10),
        );
        assert_eq!(predicts(&out), 0, "a variant's work is not predicted");
    }
    let out = f.tick(later(now, 11));
    assert!(spawned(&out).is_empty(), "b waits for the judgement");
    assert_eq!(judge_jobs(out).len(), 1);
    let out = f.judged("a", judgement(Some(2)), later(now, 12));
    assert_eq!(predicts(&out), 1, "the judged task is predicted");
    answer(&mut f, &out, &[("a", None)]);
    // b starts from a's work, the winner's.
    let out = f.tick(later(now, 13));
    let job = out
        .iter()
        .find_map(|e| match e {
            Effect::ResolveStart(j) => Some(j),
            _ => None,
        })
        .expect("b's start is built from a's work");
    assert_eq!(job.task, "b");
    assert_eq!(
        job.deps.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

#[test]
fn a_best_of_task_predicted_to_conflict_is_not_redone_early() {
    let lines =
        "{\"id\":\"b\",\"prompt\":\"do b\"}\n{\"id\":\"a\",\"prompt\":\"do a\",\"best_of\":2}\n";
    let mut f = Setup::new(lines)
        .config(|c| {
            slots(4)(c);
            c.land.redo_conflicts = crate::config::RedoConflicts::Early;
        })
        .supervise(1)
        .build();
    let now = t0();
    assert_eq!(spawned(&f.tick(now)).len(), 3);
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 1));
    answer(&mut f, &out, &[("b", None)]);
    for k in 1..=2 {
        f.finished(
            &format!("a@v{k}"),
            1,
            &report(Outcome::Success),
            later(now, 2),
        );
    }
    f.tick(later(now, 3));
    let out = f.judged("a", judgement(Some(1)), later(now, 4));
    let out = answer(
        &mut f,
        &out,
        &[("b", None), ("a", Some(conflict(&["b"], "x.rs")))],
    );
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::ConflictPredicted { task, .. } if task == "a"))
    );
    assert!(!out.iter().any(|e| matches!(e, Effect::PrepareRedo(_))));
    assert!(
        notices(&out).iter().any(|n| n.contains("not redone early")),
        "{:?}",
        notices(&out)
    );
    assert!(status(&f, "a").is_success());
    assert!(f.done(later(now, 5)).0);
}

/// What flocks' proxy reads reaches the fleet as input: a 429's exact reset
/// parks the credential (and the agent's own rate limit without a time,
/// right after, keeps it); usage adds up on the attempt and is said live;
/// refused connections are counted and said once per host and port.
#[test]
fn the_proxy_parks_counts_and_reports() {
    use crate::proxy::{ProxyEvent, UsageDelta};
    let mut f = Setup::new(ONE)
        .config(|c| {
            c.network = Some(crate::config::NetworkConfig {
                allow: Vec::new(),
                notify_denied: true,
            });
        })
        .credentials(&["a"], |_| {})
        .build();
    let now = t0();
    let started = f.tick(now);
    assert_eq!(spawned(&started).len(), 1);
    let reset = now.wall + chrono::Duration::hours(2);

    // Usage: the totals so far, as an event and on the attempt.
    let delta = |i: u64, o: u64, cost: f64| UsageDelta {
        requests: 1,
        input_tokens: i,
        output_tokens: o,
        cost_usd: cost,
        model: Some("claude-sonnet-4-5".into()),
        ..UsageDelta::default()
    };
    f.proxy(
        ProxyEvent::Usage {
            task: "a".into(),
            attempt: 1,
            usage: delta(100, 10, 0.25),
        },
        now,
    );
    let out = f.proxy(
        ProxyEvent::Usage {
            task: "a".into(),
            attempt: 1,
            usage: delta(50, 5, 0.5),
        },
        now,
    );
    match events(&out)[..] {
        [
            Event::Usage {
                task,
                attempt: 1,
                usage,
            },
        ] => {
            assert_eq!(task, "a");
            assert_eq!(
                (usage.requests, usage.input_tokens, usage.output_tokens),
                (2, 150, 15)
            );
            assert_eq!(usage.cost_usd, 0.75);
        }
        ref other => panic!("{other:?}"),
    }
    let a = &f.record("a").unwrap().attempts[0];
    assert_eq!(a.cost(), 0.75, "live, before any result");

    // A 429 read by the proxy parks the credential until its reset, once.
    let out = f.proxy(
        ProxyEvent::RateLimited {
            task: "a".into(),
            attempt: 1,
            credential: "a".into(),
            until: Some(reset),
        },
        now,
    );
    assert!(matches!(events(&out)[..], [Event::CredentialParked { until, .. }] if *until == reset));
    let again = f.proxy(
        ProxyEvent::RateLimited {
            task: "a".into(),
            attempt: 1,
            credential: "a".into(),
            until: Some(reset),
        },
        now,
    );
    assert!(events(&again).is_empty(), "parked that long already");
    // The agent then ends rate limited with no time of its own: the reset stands.
    let limited = Outcome::RateLimited {
        credential: Some("a".into()),
        resets_at: None,
    };
    f.finished("a", 1, &report(limited), later(now, 1));
    assert_eq!(f.state().credentials["a"].parked_until, Some(reset));

    // Refusals: each counted and said; needs_attention once per host and port.
    let denied = |host: &str, port: u16| ProxyEvent::EgressDenied {
        task: "a".into(),
        attempt: 1,
        host: host.into(),
        port,
    };
    let first = f.proxy(denied("evil.example", 443), now);
    let second = f.proxy(denied("evil.example", 443), now);
    let third = f.proxy(denied("other.example", 80), now);
    let attention = |out: &[Effect]| {
        events(out)
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Event::NeedsAttention {
                        cause: AttentionCause::EgressDenied,
                        ..
                    }
                )
            })
            .count()
    };
    assert_eq!(
        (attention(&first), attention(&second), attention(&third)),
        (1, 0, 1)
    );
    assert!(matches!(
        events(&second)[..],
        [Event::EgressDenied { port: 443, .. }]
    ));
    assert_eq!(f.record("a").unwrap().attempts[0].egress_denied, 3);
    assert_eq!(f.record("a").unwrap().egress_denied(), 3);
}
