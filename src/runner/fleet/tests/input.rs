//! The one handler: executor events map to inputs, and the turn says when
//! the run is over.

use super::*;
use crate::runner::RunEvent;

#[test]
fn executor_events_become_inputs_and_the_fleet_says_them() {
    let mut f = Setup::new(ONE).build();
    let now = t0();
    f.tick(now);
    let stalled = RunEvent::Stalled {
        task: "a".into(),
        attempt: 1,
        quiet_secs: 90.0,
    };
    let out = f.feed(Input::from(stalled), now).effects;
    assert!(matches!(
        events(&out)[..],
        [Event::Stalled { attempt: 1, quiet_secs, .. }] if *quiet_secs == 90.0
    ));
    let session = RunEvent::Session {
        task: "a".into(),
        attempt: 1,
        session_id: "s1".into(),
    };
    assert!(f.feed(Input::from(session), now).effects.is_empty());
    assert_eq!(
        f.record("a").unwrap().attempts[0].session_id.as_deref(),
        Some("s1")
    );
    let finished = RunEvent::Finished {
        task: "a".into(),
        attempt: 1,
        report: Box::new(report(Outcome::Success)),
    };
    let step = f.feed(Input::from(finished), later(now, 5));
    assert!(!step.done, "only the turn says the run is over");
    assert_eq!(
        status(&f, "a"),
        TaskStatus::Done {
            outcome: Outcome::Success
        }
    );
    answer(&mut f, &step.effects, &[("a", None)]);
    assert!(f.feed(Input::Tick, later(now, 6)).done);
}

#[test]
fn a_failed_retry_plan_is_said_and_the_task_starts_without_it() {
    let mut f = Setup::new(ONE).supervise(1).build();
    let now = t0();
    f.tick(now);
    f.finished("a", 1, &report(failed()), later(now, 60));
    assert!(
        spawned(&f.tick(later(now, 61))).is_empty(),
        "its plan is awaited"
    );
    let input = Input::RetryPlanFailed {
        task: "a".into(),
        error: Some("boom".into()),
    };
    let out = f.feed(input, later(now, 61)).effects;
    assert!(notices(&out)[0].contains("planning the retry of a failed: boom"));
    assert_eq!(
        spawned(&f.tick(later(now, 62))),
        vec![("a".to_string(), 2, 0)]
    );
}
