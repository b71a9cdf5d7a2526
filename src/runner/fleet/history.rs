//! The order in which ready tasks start. Without history, task order
//! (dependencies first). With the durations of earlier attempts, the
//! longest expected first (LPT), which approaches Σ/P where task order
//! cannot: a long task started last ends the run late.
//!
//! A task's expected duration is the mean of its own earlier attempts that
//! ran to an end (succeeded, failed or timed out; the agent's own
//! `duration_ms` when its result has one, else the attempt's time less a
//! scheduler's queue wait), else that of the attempts of any task with the same prompt
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
pub(crate) struct StartOrder {
    /// Indices of the task set's tasks, in the order they start when ready.
    pub order: Vec<usize>,
    pub why: OrderWhy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderWhy {
    /// No task has history: the task file's order (dependencies first).
    TaskOrder,
    /// Longest expected first, from the history of this many tasks (those
    /// of the task list whose duration is known rather than taken for the
    /// median).
    LongestFirst { from: usize },
}

impl StartOrder {
    /// For people: `run --dry-run` and the run's opening notice.
    pub(crate) fn describe(&self) -> String {
        match self.why {
            OrderWhy::TaskOrder => "task order: no history".into(),
            OrderWhy::LongestFirst { from } => format!(
                "longest expected first, from the history of {}",
                crate::output::units::count(from, "task")
            ),
        }
    }

    /// For `--json`: `task_order` or `longest_expected_first`.
    pub(crate) fn kind(&self) -> &'static str {
        match self.why {
            OrderWhy::TaskOrder => "task_order",
            OrderWhy::LongestFirst { .. } => "longest_expected_first",
        }
    }

    pub(crate) fn history_tasks(&self) -> usize {
        match self.why {
            OrderWhy::TaskOrder => 0,
            OrderWhy::LongestFirst { from } => from,
        }
    }
}

/// How long an attempt's agent ran, when it ran to an end that says how
/// long the task takes: the agent's own `duration_ms` when its result says
/// it (claude's does), else the attempt's time less a scheduler's queue
/// wait (it then holds flocks' per-attempt work too, such as a first
/// checkout).
fn attempt_secs(a: &Attempt) -> Option<f64> {
    match a.outcome.as_ref()? {
        Outcome::Success | Outcome::Failed { .. } | Outcome::TimedOut => {}
        _ => return None,
    }
    if let Some(ms) = a.result.as_ref().and_then(|r| r.duration_ms) {
        return Some(ms as f64 / 1000.0);
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
pub(crate) fn expected_secs(tasks: &TaskSet, state: &State) -> HashMap<String, f64> {
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
pub(crate) fn start_order(tasks: &TaskSet, state: &State, order: &[usize]) -> StartOrder {
    start_order_by(tasks, &expected_secs(tasks, state), order)
}

/// [`start_order`] from the tasks' expected durations (`known`, by
/// [`expected_secs`]).
pub(crate) fn start_order_by(
    tasks: &TaskSet,
    known: &HashMap<String, f64>,
    order: &[usize],
) -> StartOrder {
    let task_order = StartOrder {
        order: order.to_vec(),
        why: OrderWhy::TaskOrder,
    };
    let from = known.len();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::fleet::tests::{state_for, tasks};

    /// `lines` as records; `took` gives some of them (or another id with
    /// their prompt) an earlier attempt of that many seconds.
    fn state(set: &TaskSet, took: &[(&str, &str, f64)]) -> State {
        let mut state = state_for(set);
        for (id, prompt_of, secs) in took {
            let hash = set.get(prompt_of).unwrap().prompt_hash();
            let at = chrono::Utc::now() - chrono::Duration::hours(1);
            let attempt = serde_json::from_value(serde_json::json!({
                "number": 1,
                "pool": "local",
                "started_at": at,
                "ended_at": at + chrono::Duration::milliseconds((secs * 1000.0) as i64),
                "outcome": {"kind": "success"},
                "tag": "t",
                "prompt_hash": hash,
            }))
            .unwrap();
            match state.tasks.iter_mut().find(|r| r.id == *id) {
                Some(r) => r.attempts.push(attempt),
                None => {
                    let mut rec = state.tasks[0].clone();
                    rec.id = id.to_string();
                    rec.status = crate::state::TaskStatus::Done {
                        outcome: Outcome::Success,
                    };
                    rec.attempts = vec![attempt];
                    state.tasks.push(rec);
                }
            }
        }
        state.reindex();
        state
    }

    fn ids(set: &TaskSet, o: &StartOrder) -> Vec<String> {
        o.order.iter().map(|&i| set.tasks[i].id.clone()).collect()
    }

    fn plain(ids: &[&str]) -> String {
        ids.iter()
            .map(|id| format!("{{\"id\":\"{id}\",\"prompt\":\"do {id}\"}}\n"))
            .collect()
    }

    #[test]
    fn without_history_task_order() {
        let set = tasks(&plain(&["a", "b", "c"]));
        let o = start_order(&set, &state(&set, &[]), &[0, 1, 2]);
        assert_eq!(ids(&set, &o), ["a", "b", "c"]);
        assert_eq!(o.describe(), "task order: no history");
        assert_eq!(o.kind(), "task_order");
    }

    #[test]
    fn with_history_the_longest_expected_first_and_unknown_ones_as_the_median() {
        let set = tasks(&plain(&["a", "b", "c", "d", "e"]));
        // e has none: it counts as the median (3 s), after c's 5 s and
        // before b's 1 s; equal ones keep task order.
        let took = [
            ("a", "a", 3.0),
            ("b", "b", 1.0),
            ("c", "c", 5.0),
            ("d", "d", 3.0),
        ];
        let o = start_order(&set, &state(&set, &took), &[0, 1, 2, 3, 4]);
        assert_eq!(ids(&set, &o), ["c", "a", "d", "e", "b"]);
        assert_eq!(
            o.describe(),
            "longest expected first, from the history of 4 tasks"
        );
        assert_eq!(o.kind(), "longest_expected_first");
    }

    #[test]
    fn the_same_prompt_under_another_id_is_history() {
        let set = tasks(&plain(&["a", "b"]));
        // `old` (gone from the task list) had b's prompt and took 9 s.
        let took = [("a", "a", 2.0), ("old", "b", 9.0)];
        let o = start_order(&set, &state(&set, &took), &[0, 1]);
        assert_eq!(ids(&set, &o), ["b", "a"]);
        assert_eq!(o.history_tasks(), 2);
    }

    #[test]
    fn a_dependency_comes_first_and_a_long_chain_starts_early() {
        // a (1 s) -> b (1 s) -> c (6 s): the chain is 8 s of work; d alone
        // is 5 s. a starts before d, and every dependency before its
        // dependents.
        let lines = "{\"id\":\"d\",\"prompt\":\"do d\"}\n\
            {\"id\":\"a\",\"prompt\":\"do a\"}\n\
            {\"id\":\"b\",\"prompt\":\"do b\",\"depends_on\":[\"a\"]}\n\
            {\"id\":\"c\",\"prompt\":\"do c\",\"depends_on\":[\"b\"]}\n";
        let set = tasks(lines);
        let took = [
            ("a", "a", 1.0),
            ("b", "b", 1.0),
            ("c", "c", 6.0),
            ("d", "d", 5.0),
        ];
        let order = crate::tasks::dependency_order(&set.tasks).unwrap();
        let o = start_order(&set, &state(&set, &took), &order);
        assert_eq!(ids(&set, &o), ["a", "b", "c", "d"]);
    }

    #[test]
    fn queue_waits_and_interrupted_attempts_are_not_history() {
        let set = tasks(&plain(&["a", "b"]));
        let mut s = state(&set, &[("a", "a", 10.0), ("b", "b", 4.0)]);
        // a's 10 s were 8 s in a scheduler's queue.
        s.tasks[0].attempts[0].pending_secs = Some(8.0);
        let o = start_order(&set, &s, &[0, 1]);
        assert_eq!(ids(&set, &o), ["b", "a"]);
        // The agent's own duration, when its result says it, wins.
        s.tasks[0].attempts[0].result = Some(crate::state::ResultInfo {
            duration_ms: Some(9000),
            ..Default::default()
        });
        let o = start_order(&set, &s, &[0, 1]);
        assert_eq!(ids(&set, &o), ["a", "b"]);
        s.tasks[1].attempts[0].outcome = Some(Outcome::Interrupted);
        let o = start_order(&set, &s, &[0, 1]);
        assert_eq!(o.history_tasks(), 1);
    }
}
