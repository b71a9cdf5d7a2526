//! An attempt's end: the retry policy, the breaker, the caps, each step of `on_finished`.

use super::super::finished::{BREAKER_LIMIT, Ended};
use super::*;

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

// ---- the steps of `on_finished`, each on its own ----

/// An end as `read_end` would read it: quick, on pool 0, free.
fn ended(outcome: Outcome) -> Ended {
    Ended {
        outcome,
        lost_session: false,
        quick: true,
        credential: None,
        pool: Some(0),
        cost: 0.0,
        turns: 0,
    }
}

#[test]
fn settle_slot_frees_the_pools_slot_once() {
    let mut f = Setup::new(ONE).build();
    f.tick(t0());
    assert_eq!(f.pools[0].running, 1);
    let slot = f.settle_slot("a").expect("a holds a slot");
    assert_eq!(slot.pool, 0);
    assert_eq!(f.pools[0].running, 0);
    assert!(f.running.is_empty());
    assert!(f.settle_slot("a").is_none());
    assert_eq!(f.pools[0].running, 0);
}

#[test]
fn read_end_turns_a_lost_session_into_a_fresh_start_and_says_if_it_was_quick() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    f.record_mut("a")
        .unwrap()
        .attempt_mut(1)
        .unwrap()
        .resumed_from = Some("s1".into());
    let mut r = with_result(report(failed()), 0.25);
    r.no_conversation = true;
    let slot = f.settle_slot("a");
    let e = f.read_end("a", 1, &r, slot.as_ref(), later(now, 10));
    assert!(e.lost_session);
    assert!(matches!(e.outcome, Outcome::SpawnFailed { .. }));
    assert!(e.quick);
    assert_eq!((e.pool, e.cost, e.turns), (Some(0), 0.25, 3));
    let e = f.read_end("a", 1, &report(failed()), slot.as_ref(), later(now, 60));
    assert!(!e.lost_session && !e.quick);
    assert_eq!(e.outcome, failed());
}

#[test]
fn record_end_writes_the_attempt_or_says_there_is_no_record() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    f.take_dirty();
    let mut r = report(failed());
    r.end_tip = Some("abc".into());
    let mut out = Vec::new();
    assert!(f.record_end("a", 1, &ended(failed()), &r, later(now, 5), &mut out));
    let a = f.record("a").unwrap().attempts[0].clone();
    assert_eq!(a.outcome, Some(failed()));
    assert_eq!(a.ended_at, Some(later(now, 5).wall));
    assert_eq!((a.exit_code, a.end_tip.as_deref()), (Some(1), Some("abc")));
    assert!(f.take_dirty());
    // No job, no job event; the status is the retry's to decide.
    assert!(out.is_empty());
    assert!(matches!(status(&f, "a"), TaskStatus::Running { .. }));
    assert!(!f.record_end("nope", 1, &ended(failed()), &r, now, &mut out));
}

#[test]
fn note_breaker_counts_quick_failures_without_a_result_and_a_result_resets_it() {
    let mut f = Setup::new(ONE).build();
    f.note_breaker(&ended(failed()), &report(failed()));
    f.note_breaker(&ended(failed()), &report(failed()));
    assert_eq!(f.breaker.quick_failures, 2);
    // Slow, or a lost session: not counted, not reset.
    let slow = Ended {
        quick: false,
        ..ended(failed())
    };
    f.note_breaker(&slow, &report(failed()));
    let lost = Ended {
        lost_session: true,
        ..ended(failed())
    };
    f.note_breaker(&lost, &report(failed()));
    assert_eq!(f.breaker.quick_failures, 2);
    // A result (the agent ran) resets the count.
    f.note_breaker(&slow, &with_result(report(failed()), 0.1));
    assert_eq!(f.breaker.quick_failures, 0);
}

#[test]
fn decide_retry_requeues_under_supervise_and_gives_up_after() {
    let mut f = Setup::new(ONE).supervise(1).build();
    let now = t0();
    f.tick(now);
    let mut out = Vec::new();
    let gives_up = f.decide_retry("a", 1, &ended(failed()), &report(failed()), &mut out);
    assert!(!gives_up);
    assert_eq!(status(&f, "a"), TaskStatus::Pending);
    assert!(f.planning.contains("a"));
    assert!(matches!(
        out[0],
        Effect::PlanRetry {
            from_attempt: 1,
            ..
        }
    ));
    assert!(matches!(
        events(&out)[..],
        [Event::Finished { .. }, Event::Requeued { .. }]
    ));

    let mut f = Setup::new(ONE).build();
    f.tick(now);
    let mut out = Vec::new();
    assert!(f.decide_retry("a", 1, &ended(failed()), &report(failed()), &mut out));
    assert_eq!(status(&f, "a"), TaskStatus::Done { outcome: failed() });
    assert!(f.planning.is_empty());
}

#[test]
fn charge_credential_retires_one_at_its_cost_cap() {
    let mut f = Setup::new(ONE)
        .credentials(&["a"], |c| c.max_cost_usd = Some(0.5))
        .build();
    let now = t0();
    let cheap = Ended {
        credential: Some("a".into()),
        cost: 0.2,
        ..ended(Outcome::Success)
    };
    let mut out = Vec::new();
    f.charge_credential(&cheap, now, &mut out);
    assert!(out.is_empty());
    f.charge_credential(&cheap, now, &mut out);
    f.charge_credential(&cheap, now, &mut out);
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::CredentialDisabled { credential, retired: true, .. } if credential == "a"
    )));
}

#[test]
fn outcome_effects_back_off_take_a_pool_down_and_predict_a_success() {
    let mut f = Setup::new(TWO).build();
    let now = t0();
    f.tick(now);
    let mut out = Vec::new();
    f.outcome_effects("a", &ended(Outcome::Overloaded), now, &mut out);
    assert_eq!(f.breaker.overloads, 1);
    assert!(f.state().backoff_until.is_some_and(|t| t > now.wall));
    let lost = Outcome::HostLost {
        reason: "gone".into(),
    };
    f.outcome_effects("a", &ended(lost), now, &mut out);
    assert_eq!(f.pools[0].down.as_deref(), Some("gone"));
    assert_eq!(predicts(&out), 0);
    // A success resets the back-off's growth, and asks for a prediction
    // once the task's status says it succeeded.
    f.transition(
        "b",
        TaskStatus::Done {
            outcome: Outcome::Success,
        },
        &mut out,
    );
    f.outcome_effects("b", &ended(Outcome::Success), now, &mut out);
    assert_eq!(f.breaker.overloads, 0);
    assert_eq!(predicts(&out), 1);
    assert!(f.predictions.succeeded_here.contains("b"));
}

#[test]
fn trip_breaker_stops_dispatch_once_at_the_limit() {
    let mut f = Setup::new(ONE).build();
    let mut out = Vec::new();
    f.breaker.quick_failures = BREAKER_LIMIT - 1;
    f.trip_breaker(&failed(), &mut out);
    assert!(out.is_empty() && f.stopping.stopped_because.is_none());
    f.breaker.quick_failures = BREAKER_LIMIT;
    f.trip_breaker(&failed(), &mut out);
    assert_eq!(notices(&out).len(), 1);
    assert!(notices(&out)[0].starts_with("dispatch stopped: 3 attempts in a row"));
    assert_eq!(
        f.stopping.stopped_because.as_ref().map(|(_, e)| *e),
        Some(Exit::CouldNotStart)
    );
    f.breaker.quick_failures += 1;
    f.trip_breaker(&failed(), &mut out);
    assert_eq!(notices(&out).len(), 1, "said once");
}
