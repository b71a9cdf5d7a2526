//! Scheduling: what starts, where, in which order, and what waits.

use super::*;

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
fn a_dependency_start_is_built_off_the_fleet_and_a_conflict_blocks() {
    let lines = "{\"id\":\"a\",\"prompt\":\"a\"}\n{\"id\":\"b\",\"prompt\":\"b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n";
    let mut f = Setup::new(lines).build();
    let now = t0();
    f.tick(now);
    let out = f.finished("a", 1, &report(Outcome::Success), later(now, 10));
    answer(&mut f, &out, &[]);
    let out = f.tick(later(now, 11));
    assert!(spawned(&out).is_empty());
    let (task, deps) = dependency_start(&out).expect("a dependency start to build");
    assert_eq!(task, "b");
    assert_eq!(deps, ["a"]);
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
