//! Ctrl-C and `flocks stop`.

use super::*;

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
