//! The order in which ready tasks start. Without history, task order
//! (dependencies first). With the durations of earlier attempts, the
//! longest expected first (LPT), which approaches Σ/P where task order
//! cannot: a long task started last ends the run late.
//!
//! A task's expected duration is the mean of its own earlier attempts that
//! ran to an end (succeeded, failed or timed out; a scheduler's queue wait
//! left out), else that of the attempts of any task with the same prompt
//! (a task added again under another id, a best-of task's variants), else
//! the median of the tasks that have one: under the project's one prompt
//! template, an unknown task is taken for a typical one. With
//! dependencies, a task's weight is the longest chain of expected work it
//! starts (its own and that of its dependents after it), so a dependency
//! still comes before what depends on it, and a long chain starts early.

use std::collections::HashMap;

use crate::state::{Attempt, Outcome, State};
use crate::tasks::TaskSet;

/// The start order and why.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOrder {
    /// Indices of the task set's tasks, in the order they start when ready.
    pub order: Vec<usize>,
    pub why: OrderWhy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderWhy {
    /// No task has history: the task file's order (dependencies first).
    TaskOrder,
    /// Longest expected first, from the history of this many tasks (those
    /// of the ordered ones whose duration is known rather than taken for
    /// the median).
    LongestFirst { from: usize },
}

impl StartOrder {
    /// For people: `run --dry-run` and the run's opening notice.
    pub fn describe(&self) -> String {
        match self.why {
            OrderWhy::TaskOrder => "task order: no history".into(),
            OrderWhy::LongestFirst { from } => format!(
                "longest expected first, from the history of {}",
                crate::output::units::count(from, "task")
            ),
        }
    }

    /// For `--json`: `task_order` or `longest_expected_first`.
    pub fn kind(&self) -> &'static str {
        match self.why {
            OrderWhy::TaskOrder => "task_order",
            OrderWhy::LongestFirst { .. } => "longest_expected_first",
        }
    }

    pub fn history_tasks(&self) -> usize {
        match self.why {
            OrderWhy::TaskOrder => 0,
            OrderWhy::LongestFirst { from } => from,
        }
    }
}

/// How long an attempt's agent ran, when it ran to an end that says how
/// long the task takes.
fn attempt_secs(a: &Attempt) -> Option<f64> {
    match a.outcome.as_ref()? {
        Outcome::Success | Outcome::Failed { .. } | Outcome::TimedOut => {}
        _ => return None,
    }
    let ended = a.ended_at?;
    let secs =
        (ended - a.started_at).num_milliseconds() as f64 / 1000.0 - a.pending_secs.unwrap_or(0.0);
    (secs.is_finite() && secs >= 0.0).then_some(secs)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Each task's expected duration in seconds, where history says it.
pub fn expected_secs(tasks: &TaskSet, state: &State) -> HashMap<String, f64> {
    let mut by_id: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut by_prompt: HashMap<&str, Vec<f64>> = HashMap::new();
    let records = state
        .tasks
        .iter()
        .flat_map(|r| std::iter::once(r).chain(r.variants.iter()));
    for r in records {
        for a in &r.attempts {
            let Some(secs) = attempt_secs(a) else {
                continue;
            };
            by_id.entry(r.id.as_str()).or_default().push(secs);
            if let Some(h) = &a.prompt_hash {
                by_prompt.entry(h.as_str()).or_default().push(secs);
            }
        }
    }
    let mut out = HashMap::new();
    for t in &tasks.tasks {
        let own = by_id.get(t.id.as_str()).and_then(|v| mean(v));
        let known = own.or_else(|| {
            by_prompt
                .get(t.prompt_hash().as_str())
                .and_then(|v| mean(v))
        });
        if let Some(secs) = known {
            out.insert(t.id.clone(), secs);
        }
    }
    out
}

/// The start order of `tasks`, given their dependency order `order` and the
/// history in `state`.
pub fn start_order(tasks: &TaskSet, state: &State, order: &[usize]) -> StartOrder {
    let known = expected_secs(tasks, state);
    let task_order = StartOrder {
        order: order.to_vec(),
        why: OrderWhy::TaskOrder,
    };
    // Only what can still start counts: tasks that succeeded are skipped.
    let to_run = |i: &usize| {
        state
            .task(&tasks.tasks[*i].id)
            .is_none_or(|r| !r.status.is_success())
    };
    let from = order
        .iter()
        .filter(|i| to_run(i) && known.contains_key(&tasks.tasks[**i].id))
        .count();
    if from == 0 {
        return task_order;
    }
    let mut values: Vec<f64> = known.values().copied().collect();
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    // A floor, so that a dependency always outweighs what depends on it.
    let own = |i: usize| {
        known
            .get(&tasks.tasks[i].id)
            .copied()
            .unwrap_or(median)
            .max(1e-3)
    };
    let index: HashMap<&str, usize> = tasks
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    // The longest chain of expected work from each task on: dependents
    // come after their dependencies in `order`, so walk it backwards.
    let mut weight = vec![0.0f64; tasks.tasks.len()];
    let mut after = vec![0.0f64; tasks.tasks.len()];
    for &i in order.iter().rev() {
        weight[i] = own(i) + after[i];
        for d in &tasks.tasks[i].depends_on {
            if let Some(&j) = index.get(d.as_str()) {
                after[j] = after[j].max(weight[i]);
            }
        }
    }
    let mut sorted: Vec<(usize, usize)> = order.iter().copied().enumerate().collect();
    sorted.sort_by(|&(pa, a), &(pb, b)| weight[b].total_cmp(&weight[a]).then(pa.cmp(&pb)));
    StartOrder {
        order: sorted.into_iter().map(|(_, i)| i).collect(),
        why: OrderWhy::LongestFirst { from },
    }
}
