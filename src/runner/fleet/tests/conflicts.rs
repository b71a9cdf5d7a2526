//! Conflicts during the run (issue 17): footprints, predictions, early redos.

use super::*;

/// From the first tick: `a` succeeds, then `b`, whose work is predicted to
/// conflict with `a`'s in x.rs. What the fleet did with that prediction.
fn b_conflicts_with_a(f: &mut Fleet, now: Now) -> Vec<Effect> {
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 1));
    answer(f, &out, &[("a", None)]);
    let out = f.finished("b", 1, &report(Outcome::Success), later(now, 2));
    answer(
        f,
        &out,
        &[("a", None), ("b", Some(conflict(&["a"], "x.rs")))],
    )
}

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
    let (task, deps) = dependency_start(&out).expect("a2's start is built from a1's work");
    assert_eq!(task, "a2");
    assert_eq!(deps, ["a1"]);
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
    let b = job.records.iter().find(|(_, t)| t.id == "b").unwrap();
    assert!(b.1.status.is_success());
    assert!(!job.start_over);
    let last = answer(&mut f, &again, &[("a", None), ("b", None)]);
    assert_eq!(predicts(&last), 0);
    assert!(f.done(later(now, 3)).0);
}

#[test]
fn a_predicted_conflict_is_recorded_and_said_once() {
    let mut f = Setup::new(TWO).build();
    let now = t0();
    let said = b_conflicts_with_a(&mut f, now);
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
        f.record("b").unwrap().conflict.as_deref(),
        Some(&conflict(&["a"], "x.rs"))
    );
    assert!(f.take_dirty());
    // Without --supervise and "early", it stays as it succeeded.
    assert!(status(&f, "b").is_success());
    // The same again: nothing new to say; then it applies: cleared.
    f.request_prediction("a", &mut Vec::new());
    let fake = [Effect::Predict(Box::new(PredictJob {
        start_over: false,
        records: Vec::new(),
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
    let out = b_conflicts_with_a(&mut f, now);
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
    b_conflicts_with_a(&mut f, now);
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
    for _ in 0..super::super::conflicts::EARLY_REDO_CAP + 3 {
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
    assert_eq!(redos, super::super::conflicts::EARLY_REDO_CAP);
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
    assert_eq!(until, end.mono + super::super::conflicts::END_WAIT);
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
fn a_prediction_copies_only_what_land_reads_and_what_changed_since() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"]}\n{\"id\":\"c\",\"prompt\":\"c\"}\n";
    let mut f = Setup::new(lines).config(|c| c.max_agents = 3).build();
    let now = t0();
    f.tick(now);
    let job = |out: &[Effect]| -> (bool, Vec<(usize, String)>) {
        let Some(Effect::Predict(job)) = out.iter().find(|e| matches!(e, Effect::Predict(_)))
        else {
            panic!("no prediction among {} effects", out.len());
        };
        let copied = job
            .records
            .iter()
            .map(|(i, t)| (*i, t.id.clone()))
            .collect();
        (job.start_over, copied)
    };
    // The first: every succeeded record (c runs: not copied).
    let first = f.finished("a", 1, &report(Outcome::Success), later(now, 5));
    assert_eq!(job(&first), (true, vec![(0, "a".to_string())]));
    answer(&mut f, &first, &[("a", None)]);
    f.tick(later(now, 6));
    // The next: what changed since (b), not a again.
    let second = f.finished("b", 1, &report(Outcome::Success), later(now, 7));
    assert_eq!(job(&second), (false, vec![(1, "b".to_string())]));
    // A prediction that failed: the next starts over, with all of them.
    let failed = f.predicted(PredictResult {
        prediction: Err("boom".into()),
    });
    assert_eq!(predicts(&failed), 0);
    let third = f.finished("c", 1, &report(Outcome::Success), later(now, 9));
    assert_eq!(
        job(&third),
        (
            true,
            vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
        )
    );
}

/// The footprint check of each effect among `effects`, answered with
/// `outside` for each.
fn check_footprints(f: &mut Fleet, effects: &[Effect], outside: &[&str]) -> Vec<Effect> {
    let mut out = Vec::new();
    for e in effects {
        if let Effect::CheckFootprint(job) = e {
            out.extend(
                f.feed(
                    Input::FootprintChecked {
                        task: job.task.clone(),
                        attempt: job.attempt,
                        outside: Ok(outside.iter().map(|p| p.to_string()).collect()),
                    },
                    Now::current(),
                )
                .effects,
            );
        }
    }
    out
}

fn footprint_jobs(effects: &[Effect]) -> Vec<(String, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::CheckFootprint(job) => Some((job.task.clone(), job.attempt)),
            _ => None,
        })
        .collect()
}

#[test]
fn the_end_waits_for_a_footprint_check_however_long_a_prediction_takes() {
    const APART: &str = "{\"id\":\"a\",\"prompt\":\"a\",\"touches\":[\"a/**\"]}\n\
{\"id\":\"b\",\"prompt\":\"b\",\"touches\":[\"b/**\"]}\n\
{\"id\":\"c\",\"prompt\":\"c\"}\n";
    let mut f = Setup::new(APART).build();
    let now = t0();
    f.tick(now);
    // c declares no footprint: nothing to check; a does.
    let out = f.finished("c", 1, &report(Outcome::Success), later(now, 1));
    assert!(footprint_jobs(&out).is_empty());
    answer(&mut f, &out, &[("c", None)]);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 2));
    answer(&mut f, &out, &[("c", None), ("a", None)]);
    assert_eq!(footprint_jobs(&out), [("a".to_string(), 1)]);
    check_footprints(&mut f, &out, &[]);
    let b = f.finished("b", 1, &report(Outcome::Success), later(now, 5));
    assert_eq!(predicts(&b), 1);
    assert_eq!(footprint_jobs(&b), [("b".to_string(), 1)]);
    // The prediction is past its 100 ms; the footprint check still holds
    // the end, however long it takes.
    assert!(!f.done(later(now, 5)).0);
    assert!(
        !f.done(later(now, 60)).0,
        "the end waits for b's footprint check"
    );
    let said = check_footprints(&mut f, &b, &["c/y.rs", "z.rs"]);
    assert_eq!(
        notices(&said),
        ["task b changed paths outside its footprint (\"touches\"): c/y.rs, z.rs"]
    );
    assert_eq!(f.record("b").unwrap().outside_footprint, ["c/y.rs", "z.rs"]);
    assert!(f.take_dirty());
    // Then b's prediction holds it its 100 ms, as ever.
    assert!(!f.done(later(now, 61)).0);
    assert!(f.done(later(now, 62)).0);
}

#[test]
fn a_footprint_check_of_an_attempt_since_redone_is_not_recorded() {
    let mut f = Setup::new(PAIRS).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("b1", 1, &report(Outcome::Success), later(now, 1));
    let [(task, attempt)] = &footprint_jobs(&out)[..] else {
        panic!("one check")
    };
    // Answered for an attempt that is not b1's success.
    let said = f
        .feed(
            Input::FootprintChecked {
                task: task.clone(),
                attempt: attempt + 1,
                outside: Ok(vec!["z.rs".into()]),
            },
            Now::current(),
        )
        .effects;
    assert!(notices(&said).is_empty(), "{:?}", notices(&said));
    assert!(f.record("b1").unwrap().outside_footprint.is_empty());
    // A check that could not read the work says so, and records nothing.
    let out = f.finished("a1", 1, &report(Outcome::Success), later(now, 2));
    let said = f
        .feed(
            Input::FootprintChecked {
                task: "a1".into(),
                attempt: footprint_jobs(&out)[0].1,
                outside: Err("cannot read the tree of 0000".into()),
            },
            Now::current(),
        )
        .effects;
    assert_eq!(
        notices(&said),
        [
            "task a1: its work could not be checked against its footprint (\"touches\"): cannot read the tree of 0000"
        ]
    );
    assert!(f.record("a1").unwrap().outside_footprint.is_empty());
}
