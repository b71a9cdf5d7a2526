//! Every event in words: the one wording that the line reporter, the web
//! view, notifications and the dashboard share. What differs between them is
//! a parameter (how a time reads), never a copy; which events an output
//! leaves out is its own choice (`line::render`).

use chrono::{DateTime, Utc};

use super::Event;
use crate::output::units::{count, duration, money};
use crate::state::Outcome;

/// How a moment reads in a description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    /// `14:03:07` in this machine's time zone (the terminal).
    Local,
    /// `14:03:07` in UTC (the dashboard with `local_times` off).
    Utc,
    /// `14:03:07 UTC` (the web view: its reader may be elsewhere).
    UtcNamed,
    /// `2026-12-07 14:03:07 UTC` (a notification, read later).
    UtcDated,
}

impl Clock {
    pub(crate) fn show(self, t: DateTime<Utc>) -> String {
        match self {
            Clock::Local => t
                .with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string(),
            Clock::Utc => t.format("%H:%M:%S").to_string(),
            Clock::UtcNamed => t.format("%H:%M:%S UTC").to_string(),
            Clock::UtcDated => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }
}

/// One event for people: a mark, the task and what happened.
pub(crate) fn describe(event: &Event, clock: Clock) -> String {
    match event {
        Event::RunStarted { .. } => run_started(event),
        Event::Notice { message } => format!("note: {message}"),
        Event::Queued { task } => format!("· {task}: queued"),
        Event::Activity { task, activity, .. } => format!("{task}: {activity}"),
        Event::Usage {
            task,
            attempt,
            usage,
        } => format!(
            "· {task}: {} tokens in, {} out so far (attempt {attempt}, {})",
            usage.input_tokens,
            usage.output_tokens,
            money(usage.cost_usd)
        ),
        Event::EgressDenied {
            task, host, port, ..
        } => format!("⛔ {task}: connection to {host}:{port} refused ([network] allow)"),
        Event::Upkeep {
            secs,
            pool: Some(pool),
            host: Some(host),
            ..
        } => format!("note: pool {pool}'s mirror on {host} packed in the background ({secs:.1} s)"),
        Event::Upkeep { secs, .. } => {
            format!("note: repository packed in the background ({secs:.1} s)")
        }
        Event::Started { .. } => started(event),
        Event::Finished { .. } => finished(event),
        Event::Requeued { task, reason } => format!("↻ {task}: back in the queue: {reason}"),
        Event::Blocked {
            task,
            on,
            reason: None,
        } => format!("⊘ {task}: blocked: {} did not succeed", on.join(", ")),
        Event::Blocked {
            task,
            reason: Some(reason),
            ..
        } => format!("⊘ {task}: blocked: {reason}"),
        Event::CredentialParked {
            credential,
            until,
            reason,
        } => format!(
            "⏸ credential {credential} parked until {} ({reason})",
            clock.show(*until)
        ),
        Event::CredentialDisabled {
            credential,
            reason,
            retired: false,
        } => {
            format!("⛔ credential {credential} disabled: {reason}; fix it, then run flocks again")
        }
        Event::CredentialDisabled {
            credential,
            reason,
            retired: true,
        } => format!("⛔ credential {credential} retired until the next run: {reason}"),
        Event::Job {
            task,
            job,
            pending_secs,
            ..
        } => format!("… {}", job_words(task, job, *pending_secs)),
        Event::Stalled {
            task, quiet_secs, ..
        } => format!(
            "⚠ {task}: no output for {}: stalled, stopping it",
            duration(*quiet_secs)
        ),
        Event::ConflictPredicted { .. } => conflict_predicted(event),
        Event::VariantJudged { .. } => variant_judged(event),
        Event::Landed {
            task,
            commits,
            target,
        } => format!(
            "⇡ {task}: landed on {target} ({})",
            count(*commits, "commit")
        ),
        Event::Waiting {
            until: Some(until), ..
        } => format!(
            "⏸ every usable credential is parked: waiting until {}",
            clock.show(*until)
        ),
        Event::Waiting {
            until: None,
            reason,
        } => format!(
            "⏸ waiting: {}",
            reason.as_deref().unwrap_or("no new agent starts")
        ),
        Event::NeedsAttention { message, .. } => format!("⚑ needs attention: {message}"),
        Event::RunFinished {
            succeeded,
            failed,
            blocked,
            pending,
            cost_usd,
            interrupted,
        } => format!(
            "■ run {}: {succeeded} succeeded · {failed} failed · {blocked} blocked · {pending} not run · {}",
            if *interrupted {
                "interrupted"
            } else {
                "finished"
            },
            money(*cost_usd)
        ),
    }
}

fn run_started(event: &Event) -> String {
    let Event::RunStarted {
        run_id,
        tasks,
        pending,
        pools,
        best_of,
        variants,
    } = event
    else {
        unreachable!("called for run_started")
    };
    let pools: Vec<String> = pools
        .iter()
        .map(|p| {
            if p.isolation.is_empty() {
                format!("{} ({}, {})", p.name, p.backend, count(p.slots, "slot"))
            } else {
                format!(
                    "{} ({}, isolation {}, {})",
                    p.name,
                    p.backend,
                    p.isolation,
                    count(p.slots, "slot")
                )
            }
        })
        .collect();
    let variants = if *best_of > 0 {
        format!(
            " ({} of {})",
            count(*variants, "variant"),
            count(*best_of, "task")
        )
    } else {
        String::new()
    };
    format!(
        "flocks run {run_id}: {pending} of {} to run{variants} on {}",
        count(*tasks, "task"),
        pools.join(", ")
    )
}

fn finished(event: &Event) -> String {
    let Event::Finished {
        task,
        attempt,
        outcome,
        duration_secs,
        cost_usd,
        turns,
        commits,
        ..
    } = event
    else {
        unreachable!("called for finished")
    };
    let mark = match outcome {
        Outcome::Success => "✔",
        Outcome::Interrupted => "■",
        _ => "✖",
    };
    let mut s = format!(
        "{mark} {task}: {} after {}",
        outcome.describe(),
        duration(*duration_secs)
    );
    if *commits > 0 {
        s.push_str(&format!(" · {}", count(*commits, "commit")));
    }
    if *turns > 0 {
        s.push_str(&format!(" · {}", count(*turns, "turn")));
    }
    if *cost_usd > 0.0 {
        s.push_str(&format!(" · {}", money(*cost_usd)));
    }
    if !matches!(outcome, Outcome::Success) {
        s.push_str(&format!(
            " (attempt {attempt}; `{}`)",
            crate::suggest::command(&["flocks", "logs", task])
        ));
    }
    s
}

fn started(event: &Event) -> String {
    let Event::Started {
        task,
        attempt,
        pool,
        credential,
        resumed,
        ..
    } = event
    else {
        unreachable!("called for started")
    };
    let mut s = format!("▶ {task}: started on {pool} (attempt {attempt}");
    if let Some(c) = credential {
        s.push_str(&format!(", credential {c}"));
    }
    if *resumed {
        s.push_str(", resuming its session");
    }
    s.push(')');
    s
}

fn conflict_predicted(event: &Event) -> String {
    let Event::ConflictPredicted {
        task,
        with,
        with_target,
        files,
        commit,
        target,
    } = event
    else {
        unreachable!("called for conflict_predicted")
    };
    let c = crate::state::PredictedConflict {
        commit: commit.clone(),
        files: files.clone(),
        with: with.clone(),
        with_target: *with_target,
        target: target.clone(),
        target_tip: String::new(),
    };
    format!("⚠ {task}: {}", c.describe())
}

fn variant_judged(event: &Event) -> String {
    let Event::VariantJudged {
        task,
        winner,
        by,
        reason,
        notice,
        ..
    } = event
    else {
        unreachable!("called for variant_judged")
    };
    let head = match winner {
        Some(k) => format!("★ {task}: variant {k} wins ({}): {reason}", by.label()),
        None => format!("✗ {task}: no variant survived: {reason}"),
    };
    match notice {
        Some(n) => format!("{head}\nnote: {n}"),
        None => head,
    }
}

/// A `job` event in words: "t1: pending in Slurm: Priority (job 12)",
/// "t1: Slurm job 12 runs on node7 (waited 3m07s)", "t1: Slurm job 12
/// ended COMPLETED after 45s".
pub(crate) fn job_words(task: &str, job: &crate::state::Job, pending_secs: Option<f64>) -> String {
    match job.state.as_str() {
        "PENDING" => format!("{task}: {}", job.describe()),
        "RUNNING" => {
            let mut s = format!("{task}: Slurm job {} runs", job.id);
            if let Some(n) = &job.node {
                s.push_str(&format!(" on {n}"));
            }
            if let Some(p) = pending_secs.filter(|p| *p >= 1.0) {
                s.push_str(&format!(" (waited {})", duration(p)));
            }
            s
        }
        state => {
            let mut s = format!("{task}: Slurm job {} ended {state}", job.id);
            if let Some(e) = job.elapsed_secs {
                s.push_str(&format!(" after {}", duration(e)));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::report::AttentionCause;

    fn t() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 14, 3, 7).unwrap()
    }

    /// Every output's words come from here: one sample per kind of line,
    /// and how each clock reads.
    #[test]
    fn each_event_reads_one_way_and_only_its_times_differ() {
        let said = |e: &Event| describe(e, Clock::Utc);
        assert_eq!(said(&Event::Queued { task: "a".into() }), "· a: queued");
        assert_eq!(
            said(&Event::Requeued {
                task: "a".into(),
                reason: "rate limited".into()
            }),
            "↻ a: back in the queue: rate limited"
        );
        assert_eq!(
            said(&Event::Finished {
                task: "a".into(),
                attempt: 2,
                outcome: Outcome::Success,
                duration_secs: 65.0,
                cost_usd: 0.5,
                turns: 3,
                commits: 1,
                phases: None,
            }),
            "✔ a: succeeded after 1m05s · 1 commit · 3 turns · $0.50"
        );
        assert_eq!(
            said(&Event::NeedsAttention {
                cause: AttentionCause::TaskFailed,
                message: "task a failed".into(),
                task: Some("a".into()),
                credential: None,
            }),
            "⚑ needs attention: task a failed"
        );
        assert_eq!(
            said(&Event::RunFinished {
                succeeded: 1,
                failed: 2,
                blocked: 0,
                pending: 3,
                cost_usd: 1.25,
                interrupted: true,
            }),
            "■ run interrupted: 1 succeeded · 2 failed · 0 blocked · 3 not run · $1.25"
        );
        let parked = Event::CredentialParked {
            credential: "sub".into(),
            until: t(),
            reason: "rate limited".into(),
        };
        assert_eq!(
            said(&parked),
            "⏸ credential sub parked until 14:03:07 (rate limited)"
        );
        let waiting = Event::Waiting {
            until: Some(t()),
            reason: None,
        };
        assert_eq!(
            describe(&waiting, Clock::UtcNamed),
            "⏸ every usable credential is parked: waiting until 14:03:07 UTC"
        );
        assert_eq!(
            describe(&waiting, Clock::UtcDated),
            "⏸ every usable credential is parked: waiting until 2026-12-07 14:03:07 UTC"
        );
        assert_eq!(
            Clock::Local.show(t()),
            t().with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        );
    }

    /// The line reporter prints what is not said otherwise, in the same words.
    #[test]
    fn the_line_reporter_leaves_out_what_is_said_elsewhere() {
        let queued = Event::Queued { task: "a".into() };
        assert_eq!(crate::report::line::render(&queued), None);
        let requeued = Event::Requeued {
            task: "a".into(),
            reason: "r".into(),
        };
        assert_eq!(
            crate::report::line::render(&requeued),
            Some(describe(&requeued, Clock::Local))
        );
    }
}
