//! What the timeline and the cost charts show: one row per slot of each
//! pool, one bar per attempt, and the money spent over time, for the
//! attempts of one run (a time window).
//!
//! Attempts do not record the slot they ran in: each pool's attempts are
//! laid out on its slots in order of start, each on the lowest slot free at
//! that moment. A pool never runs more attempts at once than it has slots,
//! so this puts every attempt on a slot row without overlaps, as the
//! dispatcher filled them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::state::{Outcome, State, TaskStatus};

/// One attempt on the timeline.
#[derive(Debug, Clone)]
pub(crate) struct Bar {
    pub task: String,
    pub title: Option<String>,
    pub attempt: u32,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `running`, or the outcome kind (`success`, `failed`, `rate_limited`...).
    pub kind: String,
    /// For people: "succeeded", "rate limited", "running"...
    pub label: String,
    pub cost: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct SlotRow {
    pub pool: String,
    /// 1-based.
    pub slot: usize,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub rows: Vec<SlotRow>,
    /// (time, money spent so far) at each attempt's end, in order.
    pub cost_series: Vec<(DateTime<Utc>, f64)>,
    /// Money per task in the window, most first.
    pub cost_per_task: Vec<(String, f64)>,
}

impl Timeline {
    /// Busy time over the window's slot time, per pool (0..=1).
    pub fn utilisation(&self, pool: &str) -> Option<f64> {
        let span = (self.end - self.start).num_milliseconds() as f64;
        let rows: Vec<&SlotRow> = self.rows.iter().filter(|r| r.pool == pool).collect();
        if span <= 0.0 || rows.is_empty() {
            return None;
        }
        let busy: f64 = rows
            .iter()
            .flat_map(|r| &r.bars)
            .map(|b| (b.end - b.start).num_milliseconds().max(0) as f64)
            .sum();
        Some((busy / (span * rows.len() as f64)).clamp(0.0, 1.0))
    }
}

/// The machine name of an outcome (`kind` in state.json).
pub(crate) fn outcome_kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Failed { .. } => "failed",
        Outcome::TimedOut => "timed_out",
        Outcome::Stalled => "stalled",
        Outcome::Interrupted => "interrupted",
        Outcome::SpawnFailed { .. } => "spawn_failed",
        Outcome::RateLimited { .. } => "rate_limited",
        Outcome::Overloaded => "overloaded",
        Outcome::CredentialRejected { .. } => "credential_rejected",
        Outcome::HostLost { .. } => "host_lost",
    }
}

/// The attempts that started in `[from, to]` (`to`: none for "until now"),
/// laid out on the pools' slots. `now` ends the bars of running attempts.
pub(crate) fn build(
    state: &State,
    config: &Config,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Timeline {
    let in_window = |t: DateTime<Utc>| from.is_none_or(|f| t >= f) && to.is_none_or(|e| t <= e);
    let mut bars: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    for task in &state.tasks {
        for a in task.attempts.iter().filter(|a| in_window(a.started_at)) {
            let running = matches!(&task.status,
                TaskStatus::Running { attempt, .. } if *attempt == a.number)
                && a.ended_at.is_none();
            let (kind, label) = match (&a.outcome, running) {
                (_, true) => ("running", "running".to_string()),
                (Some(o), false) => (outcome_kind(o), o.label().to_string()),
                (None, false) => ("interrupted", "ended without an outcome".to_string()),
            };
            // An attempt that never recorded its end (the run was killed)
            // ends with the window.
            let end = a
                .ended_at
                .unwrap_or(if running { now } else { to.unwrap_or(now) })
                .max(a.started_at);
            bars.entry(a.pool.clone()).or_default().push(Bar {
                task: task.id.clone(),
                title: task.title.clone(),
                attempt: a.number,
                start: a.started_at,
                end,
                kind: kind.to_string(),
                label,
                cost: a.cost(),
            });
        }
    }
    let mut rows = Vec::new();
    let mut pools: Vec<(String, usize)> = config
        .pools
        .iter()
        .map(|p| (p.name.clone(), p.max_worktrees))
        .collect();
    // Attempts on a pool that is no longer configured keep their rows.
    for name in bars.keys() {
        if !pools.iter().any(|(p, _)| p == name) {
            pools.push((name.clone(), 1));
        }
    }
    for (pool, slots) in pools {
        let mut list = bars.remove(&pool).unwrap_or_default();
        list.sort_by(|a, b| (a.start, &a.task, a.attempt).cmp(&(b.start, &b.task, b.attempt)));
        let mut lanes: Vec<Vec<Bar>> = (0..slots.max(1)).map(|_| Vec::new()).collect();
        for bar in list {
            let free = lanes
                .iter()
                .position(|l| l.last().is_none_or(|last| last.end <= bar.start));
            match free {
                Some(i) => lanes[i].push(bar),
                // More at once than slots (the pool shrank since): a new row.
                None => lanes.push(vec![bar]),
            }
        }
        rows.extend(lanes.into_iter().enumerate().map(|(i, bars)| SlotRow {
            pool: pool.clone(),
            slot: i + 1,
            bars,
        }));
    }
    let all: Vec<&Bar> = rows.iter().flat_map(|r| &r.bars).collect();
    let start = from
        .or_else(|| all.iter().map(|b| b.start).min())
        .unwrap_or(now);
    let end = to
        .or_else(|| all.iter().map(|b| b.end).max().map(|e| e.max(now)))
        .unwrap_or(now)
        .max(start);
    let mut ends: Vec<(DateTime<Utc>, f64)> = all
        .iter()
        .filter(|b| b.kind != "running")
        .map(|b| (b.end, b.cost))
        .collect();
    ends.sort_by_key(|e| e.0);
    let mut spent = 0.0;
    let mut cost_series = Vec::new();
    for (t, c) in ends {
        spent += c;
        cost_series.push((t, crate::output::units::round_cost(spent)));
    }
    let mut per_task: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for b in &all {
        per_task.entry(&b.task).or_default().push(b.cost);
    }
    let mut cost_per_task: Vec<(String, f64)> = per_task
        .into_iter()
        .map(|(t, c)| (t.to_string(), crate::output::units::sum_costs(c)))
        .collect();
    cost_per_task.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Timeline {
        start,
        end,
        rows,
        cost_series,
        cost_per_task,
    }
}
