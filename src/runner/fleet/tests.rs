//! The dispatch rules on the fleet alone: no process, no tokio, no git.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::Config;
use crate::runner::AttemptReport;
use crate::runner::credentials::{Credentials, DEFAULT_LOGIN};
use crate::state::{Outcome, ResultInfo, State, TaskRecord, TaskStatus};
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
        }
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
            })
            .collect();
        Fleet::new(FleetParts {
            creds: Credentials::from_env(&self.config),
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
            f.set_next(
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
    let out = f.start_ready(now);
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
    assert!(spawned(&f.start_ready(now)).is_empty());
    assert!(!f.is_done(now).0);
}

#[test]
fn a_failure_is_retried_up_to_max_retries_then_done() {
    let mut f = Setup::new(ONE).supervise(1).build();
    let now = t0();
    f.start_ready(now);
    let out = f.on_finished("a", 1, &report(failed()), later(now, 60));
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
    assert!(spawned(&f.start_ready(later(now, 61))).is_empty());
    assert!(!f.is_done(later(now, 61)).0);
    plan_retries(&mut f, &out);
    let out = f.start_ready(later(now, 61));
    assert_eq!(spawned(&out), vec![("a".to_string(), 2, 0)]);
    assert!(f.record("a").unwrap().next.is_none());
    let out = f.on_finished("a", 2, &report(failed()), later(now, 200));
    assert_eq!(status(&f, "a"), TaskStatus::Done { outcome: failed() });
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert!(f.is_done(later(now, 200)).0);
    let (summary, _) = f.finish(later(now, 200));
    assert_eq!(summary.exit, Exit::TasksFailed);
}

#[test]
fn without_supervise_a_failure_is_final() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.start_ready(now);
    let out = f.on_finished("a", 1, &report(failed()), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Done { outcome: failed() });
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
}

#[test]
fn a_rate_limit_parks_the_credential_and_requeues_up_to_the_cap() {
    let mut f = Setup::new(ONE).build();
    let mut now = t0();
    let resets = now.wall + chrono::Duration::seconds(600);
    f.start_ready(now);
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: Some(resets),
    };
    let out = f.on_finished("a", 1, &report(limited.clone()), later(now, 60));
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert!(events(&out).iter().any(|e| matches!(e, Event::CredentialParked { credential, until, .. } if credential == DEFAULT_LOGIN && *until == resets)));
    assert_eq!(
        f.state().credentials[DEFAULT_LOGIN].parked_until,
        Some(resets)
    );
    // Parked: nothing starts until the reset, and the fleet waits rather than ends.
    let out = f.start_ready(later(now, 61));
    assert!(spawned(&out).is_empty());
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::Waiting { .. }))
    );
    assert!(!f.is_done(later(now, 61)).0);
    assert!(f.next_wake(later(now, 61)) <= later(now, 601).mono);
    // Each further rate limit re-queues, until the cap.
    for n in 2..=REQUEUE_CAP + 1 {
        now = later(now, 4000);
        let out = f.start_ready(now);
        assert_eq!(spawned(&out), vec![("a".to_string(), n, 0)]);
        let limited = Outcome::RateLimited {
            credential: None,
            resets_at: None,
        };
        f.on_finished("a", n, &report(limited), later(now, 60));
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
    assert_eq!(spawned(&f.start_ready(now)).len(), 1);
    let out = f.on_finished("a", 1, &report(Outcome::Overloaded), later(now, 60));
    assert!(notices(&out).iter().any(|m| m.contains("overloaded (529)")));
    let until = f.state().backoff_until.unwrap();
    assert_eq!(until, later(now, 60).wall + chrono::Duration::seconds(60));
    assert!(spawned(&f.start_ready(later(now, 61))).is_empty());
    let out = f.start_ready(later(now, 121));
    assert_eq!(spawned(&out).len(), 1);
    assert_eq!(f.state().backoff_until, None);
    // A second overload in a row pauses twice as long.
    let (task, attempt, _) = spawned(&out)[0].clone();
    f.on_finished(
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
    f.start_ready(now);
    let rejected = Outcome::CredentialRejected {
        credential: None,
        reason: "invalid api key".into(),
    };
    let out = f.on_finished("a", 1, &report(rejected), later(now, 60));
    assert!(events(&out).iter().any(
        |e| matches!(e, Event::CredentialDisabled { credential, .. } if credential == DEFAULT_LOGIN)
    ));
    assert!(spawned(&f.start_ready(later(now, 61))).is_empty());
    let (done, out) = f.is_done(later(now, 61));
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
    assert_eq!(spawned(&f.start_ready(now)).len(), 3);
    let spawn_failed = || Outcome::SpawnFailed {
        reason: "claude: not found".into(),
    };
    let mut out = Vec::new();
    for id in ["a", "b", "c"] {
        out = f.on_finished(id, 1, &report(spawn_failed()), later(now, 1));
    }
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("dispatch stopped: 3 attempts in a row"))
    );
    assert!(spawned(&f.start_ready(later(now, 2))).is_empty());
    assert!(f.is_done(later(now, 2)).0);
    assert_eq!(f.finish(later(now, 2)).0.exit, Exit::CouldNotStart);
}

#[test]
fn slow_failures_and_results_do_not_trip_the_breaker() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\"}\n{\"id\":\"c\",\"prompt\":\"c\"}\n{\"id\":\"d\",\"prompt\":\"d\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 3).build();
    let now = t0();
    f.start_ready(now);
    f.on_finished("a", 1, &report(failed()), later(now, 1));
    f.on_finished("b", 1, &with_result(report(failed()), 0.0), later(now, 1));
    f.on_finished("c", 1, &report(failed()), later(now, 120));
    assert_eq!(spawned(&f.start_ready(later(now, 121))).len(), 1);
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
    f.start_ready(now);
    let out = f.on_finished(
        "a",
        1,
        &with_result(report(Outcome::Success), 1.5),
        later(now, 60),
    );
    assert!(notices(&out).iter().any(|m| m.contains("max_cost_usd = 1")));
    assert!(spawned(&f.start_ready(later(now, 61))).is_empty());
    assert!(f.is_done(later(now, 61)).0);
    let (summary, out) = f.finish(later(now, 61));
    assert_eq!(summary.exit, Exit::TasksFailed);
    assert!(events(&out).iter().any(|e| matches!(e, Event::RunFinished { succeeded: 1, pending: 1, cost_usd, .. } if *cost_usd == 1.5)));
}

#[test]
fn a_lost_session_starts_fresh_without_using_a_retry() {
    let mut f = Setup::new(ONE).supervise(1).build();
    let now = t0();
    f.start_ready(now);
    let mut first = report(failed());
    first.session_id = Some("s-1".into());
    let out = f.on_finished("a", 1, &first, later(now, 60));
    plan_retries(&mut f, &out);
    let out = f.start_ready(later(now, 61));
    assert_eq!(spawned(&out), vec![("a".to_string(), 2, 0)]);
    assert_eq!(
        f.record("a").unwrap().attempts[1].resumed_from.as_deref(),
        Some("s-1")
    );
    // The resumed session is gone.
    let mut lost = report(failed());
    lost.no_conversation = true;
    let out = f.on_finished("a", 2, &lost, later(now, 120));
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
    let out = f.start_ready(later(now, 121));
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
    assert_eq!(spawned(&f.start_ready(now)), vec![("a".to_string(), 1, 0)]);
    let lost = Outcome::HostLost {
        reason: "host h1 is unreachable".into(),
    };
    let out = f.on_finished("a", 1, &report(lost), later(now, 60));
    assert!(
        notices(&out)
            .iter()
            .any(|m| m.starts_with("pool a is not used again in this run"))
    );
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert_eq!(
        spawned(&f.start_ready(later(now, 61))),
        vec![("a".to_string(), 2, 1)]
    );
}

#[test]
fn dependencies_wait_and_a_failed_one_blocks() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"]}\n{\"id\":\"c\",\"prompt\":\"c\",\"depends_on\":[\"b\"]}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    assert_eq!(spawned(&f.start_ready(now)), vec![("a".to_string(), 1, 0)]);
    f.on_finished("a", 1, &report(failed()), later(now, 60));
    let out = f.start_ready(later(now, 61));
    assert!(spawned(&out).is_empty());
    assert!(
        matches!(status(&f, "b"), TaskStatus::Blocked { ref on, reason: None } if on == &["a"])
    );
    assert!(f.is_done(later(now, 61)).0);
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
    f.start_ready(now);
    f.on_finished("a", 1, &report(Outcome::Success), later(now, 60));
    assert_eq!(
        spawned(&f.start_ready(later(now, 61))),
        vec![("b".to_string(), 1, 0)]
    );
}

#[test]
fn only_tasks_in_scope_start() {
    let mut s = Setup::new(TWO);
    s.scope = Some(HashSet::from(["b".to_string()]));
    let mut f = s.build();
    let now = t0();
    let opening = f.on_run_started();
    assert!(
        events(&opening)
            .iter()
            .any(|e| matches!(e, Event::RunStarted { pending: 1, .. }))
    );
    assert_eq!(spawned(&f.start_ready(now)), vec![("b".to_string(), 1, 0)]);
    f.on_finished("b", 1, &report(Outcome::Success), later(now, 10));
    assert!(f.is_done(later(now, 10)).0);
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert_eq!(f.finish(later(now, 10)).0.exit, Exit::Ok);
}

#[test]
fn stagger_spaces_out_starts() {
    let mut f = Setup::new(TWO)
        .config(|c| c.stagger_delay = Duration::from_secs(5))
        .build();
    let now = t0();
    assert_eq!(spawned(&f.start_ready(now)).len(), 1);
    assert!(spawned(&f.start_ready(later(now, 2))).is_empty());
    assert_eq!(f.next_wake(later(now, 2)), later(now, 5).mono);
    assert_eq!(spawned(&f.start_ready(later(now, 5))).len(), 1);
}

#[test]
fn pool_slots_limit_what_runs() {
    let mut f = Setup::new(TWO)
        .config(|c| c.pools[0].max_worktrees = 1)
        .build();
    let now = t0();
    assert_eq!(spawned(&f.start_ready(now)).len(), 1);
    assert!(spawned(&f.start_ready(now)).is_empty());
    f.on_finished("a", 1, &report(Outcome::Success), later(now, 10));
    assert_eq!(
        spawned(&f.start_ready(later(now, 10))),
        vec![("b".to_string(), 1, 0)]
    );
}

#[test]
fn ctrl_c_drains_then_stops_then_kills() {
    let mut f = Setup::new(TWO).config(|c| c.max_agents = 1).build();
    let now = t0();
    f.start_ready(now);
    let out = f.on_interrupt();
    assert!(notices(&out)[0].contains("no new agents will start; 1 running"));
    assert!(!out.iter().any(|e| matches!(e, Effect::StopAgents(_))));
    let out = f.on_interrupt();
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Graceful)))
    );
    let out = f.on_interrupt();
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Kill)))
    );
    // A fourth changes nothing.
    assert!(f.on_interrupt().is_empty());
    f.on_finished("a", 1, &report(Outcome::Interrupted), later(now, 5));
    assert!(spawned(&f.start_ready(later(now, 5))).is_empty());
    assert!(f.is_done(later(now, 5)).0);
    let (summary, _) = f.finish(later(now, 5));
    assert_eq!(summary.exit, Exit::Interrupted);
}

#[test]
fn flocks_stop_stops_agents_gracefully_once() {
    let mut f = Setup::new(ONE).build();
    f.start_ready(t0());
    let out = f.on_stop_requested();
    assert!(notices(&out)[0].starts_with("stopping: asked by `flocks stop`; 1 running"));
    assert!(
        out.iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Graceful)))
    );
    // A Ctrl-C after it goes on to kill.
    assert!(
        f.on_interrupt()
            .iter()
            .any(|e| matches!(e, Effect::StopAgents(StopLevel::Kill)))
    );
}

#[test]
fn a_dependency_start_is_built_off_the_fleet_and_a_conflict_blocks() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.start_ready(now);
    f.on_finished("a", 1, &report(Outcome::Success), later(now, 10));
    let out = f.start_ready(later(now, 11));
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
    assert!(f.start_ready(later(now, 12)).is_empty());
    assert!(!f.is_done(later(now, 12)).0);
    let out = f.on_dependency_start(
        "b",
        Err("its dependencies' work conflicts".into()),
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
    assert!(f.is_done(later(now, 13)).0);
}

#[test]
fn a_built_dependency_start_becomes_the_attempts_base() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.start_ready(now);
    f.on_finished("a", 1, &report(Outcome::Success), later(now, 10));
    f.start_ready(later(now, 11));
    let out = f.on_dependency_start("b", Ok(Some("abc123".into())), later(now, 12));
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
    f.start_ready(now);
    f.on_finished("a", 1, &report(Outcome::Success), later(now, 10));
    f.start_ready(later(now, 11));
    f.on_interrupt();
    let out = f.on_dependency_start("b", Ok(None), later(now, 12));
    assert!(spawned(&out).is_empty());
    assert_eq!(status(&f, "b"), TaskStatus::Pending);
    assert!(f.is_done(later(now, 12)).0);
}

#[test]
fn an_illegal_transition_is_said_and_counted() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.start_ready(now);
    f.on_finished("a", 1, &report(Outcome::Success), later(now, 10));
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
    assert_eq!(spawned(&f.start_ready(now)), vec![("a".to_string(), 1, 0)]);
    f.on_finished("a", 1, &report(Outcome::Overloaded), later(now, 60));
    f.state.backoff_until = None;
    assert_eq!(
        spawned(&f.start_ready(later(now, 61))),
        vec![("a".to_string(), 2, 0)]
    );
    f.on_finished("a", 2, &report(Outcome::Success), later(now, 100));
    assert_eq!(
        spawned(&f.start_ready(later(now, 101))),
        vec![("b".to_string(), 1, 0)]
    );
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
    let out = f.start_ready(now);
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
    f.on_finished("a@v1", 1, &report(Outcome::Success), later(now, 60));
    f.on_finished("a@v2", 1, &report(failed()), later(now, 60));
    assert!(judge_jobs(f.start_ready(later(now, 61))).is_empty());
    assert!(!f.is_done(later(now, 61)).0);
    f.on_finished("a@v3", 1, &report(Outcome::Success), later(now, 62));
    let jobs = judge_jobs(f.start_ready(later(now, 62)));
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].task, "a");
    assert_eq!(jobs[0].variants.len(), 3);
    assert!(
        jobs[0].agent.is_none(),
        "no judge agent unless [best_of] judge = true"
    );
    assert!(
        !f.is_done(later(now, 62)).0,
        "the run waits for the judgement"
    );
    assert!(
        judge_jobs(f.start_ready(later(now, 63))).is_empty(),
        "judged once"
    );
    let out = f.on_judged("a", judgement(Some(3)), later(now, 64));
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::VariantJudged {
            winner: Some(3),
            ..
        }
    )));
    assert!(status(&f, "a").is_success());
    assert_eq!(f.record("a").unwrap().winner().unwrap().id, "a@v3");
    assert!(f.is_done(later(now, 64)).0);
    let (summary, _) = f.finish(later(now, 64));
    assert_eq!(summary.exit, crate::error::Exit::Ok);
}

#[test]
fn a_failed_variant_is_out_even_under_supervise() {
    let mut f = Setup::new(BEST3).config(slots(4)).supervise(3).build();
    let now = t0();
    f.start_ready(now);
    let out = f.on_finished("a@v1", 1, &report(failed()), later(now, 60));
    assert!(!out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })));
    assert_eq!(status(&f, "a@v1").label(), "failed");
    assert!(spawned(&f.start_ready(later(now, 61))).is_empty());
}

#[test]
fn a_rate_limited_variant_goes_back_to_the_queue() {
    let mut f = Setup::new(BEST3).config(slots(4)).build();
    let now = t0();
    f.start_ready(now);
    let limited = Outcome::RateLimited {
        credential: None,
        resets_at: Some(now.wall + chrono::Duration::seconds(30)),
    };
    let out = f.on_finished("a@v2", 1, &report(limited), later(now, 5));
    assert_eq!(status(&f, "a@v2"), TaskStatus::Pending);
    assert!(
        events(&out)
            .iter()
            .any(|e| matches!(e, Event::Requeued { task, .. } if task == "a@v2"))
    );
    f.on_finished("a@v1", 1, &report(Outcome::Success), later(now, 6));
    f.on_finished("a@v3", 1, &report(Outcome::Success), later(now, 6));
    assert!(
        judge_jobs(f.start_ready(later(now, 7))).is_empty(),
        "v2 has not ended"
    );
    let out = f.start_ready(later(now, 40));
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
        f.start_ready(now);
        for k in 1..=3 {
            f.on_finished(&format!("a@v{k}"), 1, &report(failed()), later(now, 60));
        }
        assert_eq!(judge_jobs(f.start_ready(later(now, 61))).len(), 1);
        let out = f.on_judged("a", judgement(None), later(now, 62));
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
        assert_eq!(spawned(&f.start_ready(later(now, 63))).len(), 3);
        for k in 1..=3 {
            f.on_finished(&format!("a@v{k}"), 2, &report(failed()), later(now, 90));
        }
        f.start_ready(later(now, 91));
        f.on_judged("a", judgement(None), later(now, 92));
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
    let out = f.start_ready(now);
    assert_eq!(spawned(&out).len(), 2, "{:?}", spawned(&out));
    f.on_finished("a@v1", 1, &report(Outcome::Success), later(now, 10));
    f.on_finished("a@v2", 1, &report(Outcome::Success), later(now, 10));
    let jobs = judge_jobs(f.start_ready(later(now, 11)));
    let agent = jobs[0].agent.as_ref().expect("a judge agent");
    assert_eq!(agent.id, "a@judge");
    assert_eq!(agent.prepare.branch, "flocks/a@judge");
    assert!(
        spawned(&f.start_ready(later(now, 12))).is_empty(),
        "b waits for a"
    );
    let mut j = judgement(Some(1));
    j.judge = Some(with_result(report(Outcome::Success), 0.5));
    f.on_judged("a", j, later(now, 13));
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
    let started = spawned(&f.start_ready(later(now, 14)));
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
    assert_eq!(spawned(&f.start_ready(now)).len(), 3);
    for k in 1..=3 {
        let r = with_result(report(Outcome::Success), 0.02);
        f.on_finished(&format!("a@v{k}"), 1, &r, later(now, 10));
    }
    assert!(f.stopped_because.is_some(), "the budget is spent");
    let jobs = judge_jobs(f.start_ready(later(now, 11)));
    assert_eq!(jobs.len(), 1, "judged all the same");
    assert!(jobs[0].agent.is_none());
    assert!(
        jobs[0]
            .notice
            .as_deref()
            .unwrap()
            .contains("no judge agent")
    );
    assert!(!f.is_done(later(now, 11)).0);
    f.on_judged("a", judgement(Some(1)), later(now, 12));
    assert!(f.is_done(later(now, 12)).0);
}
