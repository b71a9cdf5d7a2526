//! Plain line-by-line progress, for logs and terminals alike.

use std::io::Write;

use super::{Event, Reporter, human_duration};
use crate::output::units::count;
use crate::state::Outcome;

pub struct LineReporter<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> LineReporter<W> {
    pub fn new(out: W) -> Self {
        LineReporter { out }
    }
}

impl<W: Write + Send> Reporter for LineReporter<W> {
    fn event(&mut self, event: &Event) {
        if let Some(line) = render(event) {
            let _ = writeln!(self.out, "{}", crate::output::paint_text(&line));
            let _ = self.out.flush();
        }
    }
}

/// One line for an event, or nothing for events too frequent to print.
pub fn render(event: &Event) -> Option<String> {
    Some(match event {
        Event::RunStarted {
            run_id,
            tasks,
            pending,
            pools,
            best_of,
            variants,
        } => {
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
        Event::Notice { message } => format!("note: {message}"),
        // Usage changes with every answer: `status` shows it.
        Event::Queued { .. } | Event::Activity { .. } | Event::Usage { .. } => return None,
        Event::EgressDenied {
            task, host, port, ..
        } => format!("⛔ {task}: connection to {host}:{port} refused ([network] allow)"),
        Event::Started {
            task,
            attempt,
            pool,
            credential,
            resumed,
            ..
        } => {
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
        Event::Finished {
            task,
            attempt,
            outcome,
            duration_secs,
            cost_usd,
            turns,
            commits,
            ..
        } => {
            let mark = match outcome {
                Outcome::Success => "✔",
                Outcome::Interrupted => "■",
                _ => "✖",
            };
            let mut s = format!(
                "{mark} {task}: {} after {}",
                outcome.describe(),
                human_duration(*duration_secs)
            );
            if *commits > 0 {
                s.push_str(&format!(" · {}", count(*commits, "commit")));
            }
            if *turns > 0 {
                s.push_str(&format!(" · {}", count(*turns, "turn")));
            }
            if *cost_usd > 0.0 {
                s.push_str(&format!(" · {}", crate::output::units::money(*cost_usd)));
            }
            if !matches!(outcome, Outcome::Success) {
                s.push_str(&format!(
                    " (attempt {attempt}; `{}`)",
                    crate::suggest::command(&["flocks", "logs", task])
                ));
            }
            s
        }
        Event::Requeued { task, reason } => format!("↻ {task}: back in the queue: {reason}"),
        Event::Blocked {
            task,
            on,
            reason: None,
        } => {
            format!("⊘ {task}: blocked: {} did not succeed", on.join(", "))
        }
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
            until.with_timezone(&chrono::Local).format("%H:%M:%S")
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
        } => format!("… {}", super::job_words(task, job, *pending_secs)),
        Event::Stalled {
            task, quiet_secs, ..
        } => format!(
            "⚠ {task}: no output for {}: stalled, stopping it",
            human_duration(*quiet_secs)
        ),
        Event::ConflictPredicted {
            task,
            with,
            with_target,
            files,
            commit,
            target,
        } => {
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
        Event::VariantJudged {
            task,
            winner,
            by,
            reason,
            notice,
            ..
        } => {
            let head = match winner {
                Some(k) => format!("★ {task}: variant {k} wins ({}): {reason}", by.label()),
                None => format!("✗ {task}: no variant survived: {reason}"),
            };
            match notice {
                Some(n) => format!("{head}\nnote: {n}"),
                None => head,
            }
        }
        Event::Landed {
            task,
            commits,
            target,
        } => format!(
            "⇡ {task}: landed on {target} ({})",
            count(*commits, "commit")
        ),
        // The dispatcher also says it in a notice, with the time; the line of
        // the event a `needs_attention` sums up is already there.
        Event::Waiting { .. } | Event::RunFinished { .. } | Event::NeedsAttention { .. } => {
            return None;
        }
    })
}
