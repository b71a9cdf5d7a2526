//! What the timeline and the cost charts show: one row per slot of each
//! pool, one bar per attempt, and the money spent over time, for the
//! attempts of a window (a piece of work, a run, or since a time), with its
//! runs marked.
//!
//! Attempts do not record the slot they ran in: each pool's attempts are
//! laid out on its slots in order of start, each on the lowest slot free at
//! that moment. A pool never runs more attempts at once than it has slots,
//! so this puts every attempt on a slot row without overlaps, as the
//! dispatcher filled them.
//!
//! A piece of work can span days with hours between its runs: the time axis
//! is cut into segments (the runs, and attempts outside them), and a long
//! idle gap between two is drawn as a narrow break instead of to scale.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::scope::{RunWindow, Scope};
use crate::config::Config;
use crate::state::{Outcome, State, TaskStatus};

/// The width of a break between two segments, in chart units.
pub(crate) const GAP: f64 = 18.0;

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
    /// The stretches of time drawn to scale, in order; what lies between two
    /// is drawn as a break of width [`GAP`].
    pub segments: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// The runs of the window, marked on the charts.
    pub runs: Vec<RunWindow>,
    pub rows: Vec<SlotRow>,
    /// (time, money spent so far) at each attempt's end, in order.
    pub cost_series: Vec<(DateTime<Utc>, f64)>,
    /// Money per task in the window, most first.
    pub cost_per_task: Vec<(String, f64)>,
}

impl Timeline {
    /// The time drawn to scale, in milliseconds.
    fn active_ms(&self) -> i64 {
        self.segments
            .iter()
            .map(|(a, b)| (*b - *a).num_milliseconds().max(0))
            .sum()
    }

    /// Busy time over the window's slot time, per pool (0..=1); breaks
    /// between segments do not count.
    pub(crate) fn utilisation(&self, pool: &str) -> Option<f64> {
        let span = self.active_ms() as f64;
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

    /// Where `t` is drawn on an axis from `left`, `width` wide.
    pub(crate) fn x(&self, t: DateTime<Utc>, left: f64, width: f64) -> f64 {
        let n = self.segments.len();
        if n == 0 {
            return left;
        }
        let gaps = GAP * (n - 1) as f64;
        let avail = (width - gaps).max(1.0);
        let total = self.active_ms().max(1) as f64;
        let mut x = left;
        for (i, (a, b)) in self.segments.iter().enumerate() {
            let w = avail * (*b - *a).num_milliseconds().max(0) as f64 / total;
            if t < *a {
                // Before the first segment, or in the break before this one.
                return if i == 0 { left } else { x - GAP / 2.0 };
            }
            if t <= *b {
                let ms = (*b - *a).num_milliseconds().max(1) as f64;
                return x + w * ((t - *a).num_milliseconds() as f64 / ms).clamp(0.0, 1.0);
            }
            x += w + if i + 1 < n { GAP } else { 0.0 };
        }
        left + width
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
        Outcome::SetupFailed { .. } => "setup_failed",
    }
}

/// The stretches drawn to scale: the runs (clipped to the window) and the
/// attempts outside them, merged where they touch or where the break
/// between them is short (under a minute, or under a tenth of the time
/// drawn). Without runs: the whole window.
fn segments(
    runs: &[RunWindow],
    bars: &[(DateTime<Utc>, DateTime<Utc>)],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    if runs.is_empty() {
        return vec![(start, end)];
    }
    let mut spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs
        .iter()
        .map(|r| (r.start.max(start), r.end.unwrap_or(end).min(end)))
        .chain(bars.iter().copied())
        .filter(|(a, b)| a <= b)
        .collect();
    spans.sort();
    let active: i64 = spans
        .iter()
        .map(|(a, b)| (*b - *a).num_milliseconds())
        .sum();
    let short = chrono::Duration::milliseconds((active / 10).max(60_000));
    let mut out: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 + short => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    if out.is_empty() {
        out.push((start, end));
    }
    out
}

/// The attempts that started in `scope`, laid out on the pools' slots, its
/// runs marked. `now` ends the bars of running attempts.
pub(crate) fn build(state: &State, config: &Config, scope: &Scope, now: DateTime<Utc>) -> Timeline {
    let rows = slot_rows(config, bars_by_pool(state, scope, now));
    let all: Vec<&Bar> = rows.iter().flat_map(|r| &r.bars).collect();
    let (start, end) = span(scope, &all, now);
    let spans: Vec<(DateTime<Utc>, DateTime<Utc>)> = all
        .iter()
        .filter(|b| {
            !scope
                .runs
                .iter()
                .any(|r| r.start <= b.start && r.end.is_none_or(|e| b.end <= e))
        })
        .map(|b| (b.start, b.end))
        .collect();
    let segments = segments(&scope.runs, &spans, start, end);
    let (cost_series, cost_per_task) = costs(&all);
    Timeline {
        start,
        end,
        segments,
        runs: scope.runs.clone(),
        rows,
        cost_series,
        cost_per_task,
    }
}

/// A bar for every attempt that started in `scope`, by pool. A best-of
/// task's attempts are its variants' (each bar names its variant).
fn bars_by_pool(state: &State, scope: &Scope, now: DateTime<Utc>) -> BTreeMap<String, Vec<Bar>> {
    let mut bars: BTreeMap<String, Vec<Bar>> = BTreeMap::new();
    let runs = state
        .tasks
        .iter()
        .flat_map(|t| std::iter::once(t).chain(&t.variants));
    for task in runs {
        for a in task
            .attempts
            .iter()
            .filter(|a| scope.contains(a.started_at))
        {
            let running = matches!(&task.status,
                TaskStatus::Running { attempt, .. } if *attempt == a.number)
                && a.ended_at.is_none();
            let (kind, label) = match (&a.outcome, running) {
                (_, true) => ("running", "running".to_string()),
                (Some(o), false) => (outcome_kind(o), o.label().to_string()),
                (None, false) => ("interrupted", "ended without an outcome".to_string()),
            };
            // An attempt that never recorded its end (the run was killed)
            // ends with its run, or the window.
            let run_end = scope
                .runs
                .iter()
                .rfind(|r| r.start <= a.started_at)
                .and_then(|r| r.end);
            let end = a
                .ended_at
                .unwrap_or(if running {
                    now
                } else {
                    run_end.or(scope.end).unwrap_or(now)
                })
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
    bars
}

/// Each pool's bars on its slots, in order of start: a bar takes the first
/// free slot; more at once than slots (the pool shrank since) opens a new
/// row. Attempts on a pool that is no longer configured keep their rows.
fn slot_rows(config: &Config, mut bars: BTreeMap<String, Vec<Bar>>) -> Vec<SlotRow> {
    let mut rows = Vec::new();
    let mut pools: Vec<(String, usize)> = config
        .pools
        .iter()
        .map(|p| (p.name.clone(), p.max_worktrees))
        .collect();
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
                None => lanes.push(vec![bar]),
            }
        }
        rows.extend(lanes.into_iter().enumerate().map(|(i, bars)| SlotRow {
            pool: pool.clone(),
            slot: i + 1,
            bars,
        }));
    }
    rows
}

/// Where the timeline starts and ends: the window, narrowed to its runs
/// and bars; until now while work goes on.
fn span(scope: &Scope, all: &[&Bar], now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let (from, to) = (scope.start, scope.end);
    let first = [
        all.iter().map(|b| b.start).min(),
        scope.runs.first().map(|r| r.start),
    ]
    .into_iter()
    .flatten()
    .min();
    let start = if scope.runs.is_empty() {
        from.or(first).unwrap_or(now)
    } else {
        first.unwrap_or(now)
    };
    let last = [
        all.iter().map(|b| b.end).max(),
        scope.runs.iter().map(|r| r.end.unwrap_or(now)).max(),
    ]
    .into_iter()
    .flatten()
    .max();
    let going =
        scope.runs.iter().any(|r| r.end.is_none()) || all.iter().any(|b| b.kind == "running");
    let end = match (to, scope.runs.is_empty(), last) {
        (Some(e), true, _) => e,
        (Some(e), false, l) => l.unwrap_or(e).min(e),
        // Without runs to say when work happened: until now.
        (None, true, l) => l.map_or(now, |l| l.max(now)),
        (None, false, Some(l)) if !going => l,
        (None, false, l) => l.map_or(now, |l| l.max(now)),
    }
    .max(start);
    (start, end)
}

/// The money spent over time (as attempts ended) and per task, most first.
type Costs = (Vec<(DateTime<Utc>, f64)>, Vec<(String, f64)>);

fn costs(all: &[&Bar]) -> Costs {
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
    for b in all {
        per_task.entry(&b.task).or_default().push(b.cost);
    }
    let mut cost_per_task: Vec<(String, f64)> = per_task
        .into_iter()
        .map(|(t, c)| (t.to_string(), crate::output::units::sum_costs(c)))
        .collect();
    cost_per_task.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (cost_series, cost_per_task)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(slots: usize) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flocks.toml");
        std::fs::write(
            &path,
            format!(
                "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = {slots}\n"
            ),
        )
        .unwrap();
        Config::load(&path).unwrap()
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    /// A window without runs.
    fn window(start: Option<DateTime<Utc>>, end: Option<DateTime<Utc>>) -> Scope {
        Scope {
            kind: super::super::scope::Kind::Since(start.unwrap_or(at(0))),
            start,
            end,
            runs: Vec::new(),
        }
    }

    /// An attempt: number, start, end (`None`: running), cost.
    type Try = (u32, i64, Option<i64>, f64);

    fn state(tasks: &[(&str, &[Try])]) -> State {
        let tasks: Vec<serde_json::Value> = tasks
            .iter()
            .map(|(id, attempts)| {
                let running = attempts.iter().find(|a| a.2.is_none());
                let status = match running {
                    Some(a) => serde_json::json!({"state": "running", "attempt": a.0, "pool": "local", "started_at": at(a.1)}),
                    None => serde_json::json!({"state": "done", "outcome": {"kind": "success"}}),
                };
                let attempts: Vec<serde_json::Value> = attempts
                    .iter()
                    .map(|(n, s, e, c)| {
                        serde_json::json!({
                            "number": n, "pool": "local", "started_at": at(*s), "tag": "t",
                            "ended_at": e.map(at),
                            "outcome": e.map(|_| serde_json::json!({"kind": if *n == 1 && attempts.len() > 1 { "failed" } else { "success" }, "reason": "x"})),
                            "result": {"total_cost_usd": c},
                        })
                    })
                    .collect();
                serde_json::json!({"id": id, "branch": format!("flocks/{id}"), "worktree": "/w", "prompt_hash": "h",
                    "status": status, "attempts": attempts})
            })
            .collect();
        let mut s: State =
            serde_json::from_value(serde_json::json!({"format_version": 2, "tasks": tasks}))
                .unwrap();
        s.reindex();
        s
    }

    #[test]
    fn attempts_take_the_lowest_free_slot_and_never_overlap() {
        let s = state(&[
            ("a", &[(1, 0, Some(10), 0.1)]),
            ("b", &[(1, 1, Some(4), 0.2), (2, 10, Some(14), 0.3)]),
            ("c", &[(1, 4, Some(12), 0.0)]),
            ("d", &[(1, 12, None, 0.0)]),
        ]);
        let tl = build(&s, &config(2), &window(Some(at(0)), None), at(20));
        let row = |i: usize| -> Vec<(&str, u32)> {
            tl.rows[i]
                .bars
                .iter()
                .map(|b| (b.task.as_str(), b.attempt))
                .collect()
        };
        assert_eq!(tl.rows.len(), 2);
        assert_eq!((tl.rows[1].pool.as_str(), tl.rows[1].slot), ("local", 2));
        assert_eq!(row(0), [("a", 1), ("b", 2)]);
        assert_eq!(row(1), [("b", 1), ("c", 1), ("d", 1)]);
        let kinds: Vec<&str> = tl
            .rows
            .iter()
            .flat_map(|r| &r.bars)
            .map(|b| b.kind.as_str())
            .collect();
        assert_eq!(
            kinds,
            ["success", "success", "failed", "success", "running"]
        );
        let d = &tl.rows[1].bars[2];
        assert_eq!(d.end, at(20), "a running bar ends now");
        // Money: the running total at each end; per task, most first.
        assert_eq!(tl.cost_series.last().map(|c| c.1), Some(0.6));
        assert_eq!(tl.cost_per_task[0], ("b".to_string(), 0.5));
        // Busy 10 + 3 + 8 + 4 + 8 seconds of 2 slots x 20.
        assert_eq!(tl.utilisation("local"), Some(33.0 / 40.0));
    }

    #[test]
    fn more_attempts_at_once_than_slots_get_a_row_of_their_own() {
        let s = state(&[
            ("a", &[(1, 0, Some(10), 0.0)]),
            ("b", &[(1, 2, Some(5), 0.0)]),
        ]);
        let tl = build(&s, &config(1), &window(None, None), at(20));
        assert_eq!(tl.rows.len(), 2);
        assert_eq!(tl.rows[1].bars[0].task, "b");
        assert_eq!(tl.start, at(0), "without a window: from the first attempt");
    }

    #[test]
    fn a_best_of_tasks_variants_have_their_bars() {
        let mut s = state(&[
            ("t", &[]),
            ("t@v1", &[(1, 0, Some(10), 0.1)]),
            ("t@v2", &[(1, 0, Some(5), 0.2)]),
        ]);
        let variants: Vec<_> = s.tasks.drain(1..).collect();
        s.tasks[0].variants = variants;
        s.reindex();
        let tl = build(&s, &config(2), &window(None, None), at(20));
        let mut bars: Vec<&str> = tl
            .rows
            .iter()
            .flat_map(|r| &r.bars)
            .map(|b| b.task.as_str())
            .collect();
        bars.sort();
        assert_eq!(bars, ["t@v1", "t@v2"]);
        assert_eq!(tl.cost_series.last().map(|c| c.1), Some(0.3));
    }

    #[test]
    fn a_long_break_between_runs_is_drawn_narrow() {
        let s = state(&[
            ("a", &[(1, 0, Some(100), 0.1)]),
            ("b", &[(1, 86_400, Some(86_500), 0.2)]),
        ]);
        let run = |id: &str, start: i64, end: i64| RunWindow {
            id: id.into(),
            start: at(start),
            end: Some(at(end)),
            interrupted: id == "r1",
        };
        let scope = Scope {
            kind: super::super::scope::Kind::Piece { after_land: None },
            start: None,
            end: None,
            runs: vec![run("r1", 0, 100), run("r2", 86_400, 86_500)],
        };
        let tl = build(&s, &config(1), &scope, at(90_000));
        assert_eq!(tl.segments, [(at(0), at(100)), (at(86_400), at(86_500))]);
        assert_eq!(
            (tl.start, tl.end),
            (at(0), at(86_500)),
            "ends with the last run"
        );
        // Both runs get half the width (less the break), in order.
        let x = |t: i64| tl.x(at(t), 0.0, 218.0);
        assert_eq!(x(0), 0.0);
        assert_eq!(x(100), 100.0);
        assert_eq!(x(50_000), 109.0, "the break");
        assert_eq!(x(86_400), 118.0);
        assert_eq!(x(86_500), 218.0);
        // Utilisation counts the runs' time, not the day between them.
        assert_eq!(tl.utilisation("local"), Some(1.0));
        assert_eq!(tl.runs.len(), 2);
    }

    #[test]
    fn attempts_outside_the_window_are_left_out() {
        let s = state(&[("a", &[(1, 0, Some(10), 0.1), (2, 100, Some(110), 0.2)])]);
        let tl = build(
            &s,
            &config(1),
            &window(Some(at(50)), Some(at(200))),
            at(300),
        );
        let bars: Vec<u32> = tl
            .rows
            .iter()
            .flat_map(|r| &r.bars)
            .map(|b| b.attempt)
            .collect();
        assert_eq!(bars, [2]);
        assert_eq!(tl.cost_per_task, [("a".to_string(), 0.2)]);
        assert_eq!((tl.start, tl.end), (at(50), at(200)));
    }
}
