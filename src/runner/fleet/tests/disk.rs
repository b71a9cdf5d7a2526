//! The free-disk guard.

use super::*;

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
