//! Best of N: variants, judging, and their footprints and conflicts.

use super::*;

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
    let (task, deps) = dependency_start(&out).expect("b's start is built from a's work");
    assert_eq!(task, "b");
    assert_eq!(deps, ["a"]);
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
