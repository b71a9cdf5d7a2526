//! The end-of-run summary and the grouped task view that `status` shares.

use std::collections::HashSet;
use std::fmt::Write;
use std::path::Path;

use crate::output::units::duration as human_duration;
use crate::state::{Outcome, State, TaskRecord, TaskStatus};

/// Tasks by how they stand, in task order.
#[derive(Default)]
pub(crate) struct Groups<'a> {
    pub running: Vec<&'a TaskRecord>,
    pub done: Vec<&'a TaskRecord>,
    pub failed: Vec<&'a TaskRecord>,
    pub blocked: Vec<&'a TaskRecord>,
    pub pending: Vec<&'a TaskRecord>,
}

pub(crate) fn group<'a>(state: &'a State, only: Option<&[String]>) -> Groups<'a> {
    let mut g = Groups::default();
    for t in &state.tasks {
        if only.is_some_and(|ids| !ids.contains(&t.id)) {
            continue;
        }
        match &t.status {
            TaskStatus::Running { .. } => g.running.push(t),
            TaskStatus::Done {
                outcome: Outcome::Success,
            } => g.done.push(t),
            TaskStatus::Done {
                outcome: Outcome::Interrupted,
            }
            | TaskStatus::Pending => g.pending.push(t),
            TaskStatus::Done { .. } => g.failed.push(t),
            TaskStatus::Blocked { .. } => g.blocked.push(t),
        }
    }
    g
}

/// What a task's attempts (its variants' and judge's too) that started at
/// or after `since` cost.
fn cost_since(t: &TaskRecord, since: chrono::DateTime<chrono::Utc>) -> f64 {
    let judge = t
        .best_of
        .as_ref()
        .and_then(|b| b.judgement.as_ref())
        .filter(|j| j.at >= since)
        .map_or(0.0, |j| j.judge_cost_usd);
    crate::output::units::sum_costs(
        t.attempts
            .iter()
            .filter(|a| a.started_at >= since)
            .map(crate::state::Attempt::cost)
            .chain(t.variants.iter().map(|v| cost_since(v, since)))
            .chain([judge]),
    )
}

fn attempt_duration(t: &TaskRecord) -> Option<f64> {
    let a = t.successful_attempt().or(t.last_attempt())?;
    let end = a.ended_at?;
    Some((end - a.started_at).num_milliseconds() as f64 / 1000.0)
}

/// The summary printed when a run ends. `landed`: the succeeded tasks whose
/// work is on the land target already (not suggested for `flocks land`).
pub(crate) fn render(
    state: &State,
    only: &[String],
    log_root: &Path,
    landed: &HashSet<String>,
) -> String {
    let g = group(state, Some(only));
    let mut s = String::new();
    let _ = writeln!(s);
    headline(&mut s, state, only, &g);
    succeeded(&mut s, &g, landed);
    failed(&mut s, &g, log_root);
    blocked(&mut s, &g);
    refused(&mut s, state, only);
    if !g.pending.is_empty() {
        let _ = writeln!(s, "\nnot run:");
        for t in &g.pending {
            let _ = writeln!(s, "  · {:<24} {}", t.id, t.status.label());
        }
    }
    next_steps(&mut s, &g, landed);
    s
}

/// The counts, the turns and the cost: what this run spent, and what the
/// tasks cost in all (earlier runs' attempts included) when those differ (a
/// retry, a resumed run).
fn headline(s: &mut String, state: &State, only: &[String], g: &Groups) {
    let tasks = || only.iter().filter_map(|id| state.task(id));
    let total = only.len();
    let cost = crate::output::units::sum_costs(tasks().map(TaskRecord::cost));
    let turns: u64 = tasks().map(TaskRecord::turns).sum();
    let money = crate::output::units::money;
    let spent = match &state.run {
        Some(run) => {
            crate::output::units::sum_costs(tasks().map(|t| cost_since(t, run.started_at)))
        }
        None => cost,
    };
    let cost_text = if spent == cost {
        money(cost)
    } else {
        format!(
            "{} this run · {} in all for {}",
            money(spent),
            money(cost),
            crate::output::units::noun_for(total, "this task", "these tasks")
        )
    };
    let _ = writeln!(
        s,
        "{} of {} succeeded · {} failed · {} blocked · {} not run · {} · {cost_text}",
        g.done.len(),
        crate::output::units::count(total, "task"),
        g.failed.len(),
        g.blocked.len(),
        g.pending.len(),
        crate::output::units::count(turns, "turn"),
    );
}

fn succeeded(s: &mut String, g: &Groups, landed: &HashSet<String>) {
    if g.done.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nsucceeded:");
    for t in &g.done {
        let _ = writeln!(
            s,
            "  ✔ {:<24} {}  {}{}{}",
            t.id,
            t.branch,
            crate::output::units::count(crate::view::attempt_count(t), "attempt"),
            attempt_duration(t)
                .map(|d| format!(", {}", human_duration(d)))
                .unwrap_or_default(),
            if landed.contains(&t.id) {
                ", landed"
            } else {
                ""
            }
        );
        if let Some(c) = t.conflict.as_ref().filter(|_| !landed.contains(&t.id)) {
            let _ = writeln!(s, "      ⚠ {}", c.describe());
        }
    }
}

/// Each failed task's outcome, and the last lines of its log.
fn failed(s: &mut String, g: &Groups, log_root: &Path) {
    if g.failed.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nfailed:");
    for t in &g.failed {
        let mut outcome = match &t.status {
            TaskStatus::Done { outcome } => outcome.describe(),
            other => other.label().to_string(),
        };
        if let Some(why) = &t.not_retried {
            outcome.push_str(&format!("; not retried: {why}"));
        }
        let _ = writeln!(s, "  ✖ {:<24} {outcome}", t.id);
        // A best-of task's reason names each variant's (their logs: `--variant k`).
        if let Some(a) = t.last_attempt().filter(|_| t.variants.is_empty()) {
            let log = crate::view::log_path(log_root, &t.id, a.number);
            if let Ok(text) = crate::fsat::read_to_string(&log) {
                for l in crate::logview::tail_rendered(&text, 3) {
                    let _ = writeln!(s, "      │ {}", crate::agent::stream::one_line(&l, 110));
                }
            }
        }
    }
}

fn blocked(s: &mut String, g: &Groups) {
    if g.blocked.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nblocked:");
    for t in &g.blocked {
        match &t.status {
            TaskStatus::Blocked {
                reason: Some(why), ..
            } => {
                let _ = writeln!(s, "  ⊘ {:<24} {why}", t.id);
            }
            TaskStatus::Blocked { on, .. } => {
                let _ = writeln!(s, "  ⊘ {:<24} waits for {}", t.id, on.join(", "));
            }
            _ => {}
        }
    }
}

/// The tasks whose connections `[network] allow` refused, with how many.
fn refused(s: &mut String, state: &State, only: &[String]) {
    let refused: Vec<(&str, u64)> = only
        .iter()
        .filter_map(|id| state.task(id))
        .map(|t| (t.id.as_str(), t.egress_denied()))
        .filter(|(_, n)| *n > 0)
        .collect();
    if refused.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nconnections refused by [network] allow (egress_denied in .flocks/events.jsonl names each host):"
    );
    for (id, n) in refused {
        let _ = writeln!(s, "  ⛔ {id:<24} {n}");
    }
}

/// What to do next, from how the tasks stand.
fn next_steps(s: &mut String, g: &Groups, landed: &HashSet<String>) {
    let mut next = Vec::new();
    if !g.failed.is_empty() {
        next.push("`flocks logs <id>` to see why, `flocks retry --all-failed` to try again");
    }
    if g.done.iter().any(|t| !landed.contains(&t.id)) {
        next.push("`flocks land` to cherry-pick the finished work onto the target branch");
    }
    if g.done
        .iter()
        .any(|t| t.conflict.is_some() && !landed.contains(&t.id))
    {
        next.push("`flocks land --resolve` to land and redo the tasks that will conflict");
    }
    if !g.pending.is_empty() {
        next.push("`flocks run` again to continue");
    }
    if !next.is_empty() {
        let _ = writeln!(s, "\nnext: {}", next.join("; "));
    }
}
