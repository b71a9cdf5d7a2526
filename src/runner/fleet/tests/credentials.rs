//! Credentials: parking, rejection, concurrency, cost caps, the ramp.

use super::*;

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
