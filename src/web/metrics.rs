//! `GET /metrics`: the project in Prometheus' text format (0.0.4).
//!
//! Two sources: the state (tasks by status, attempts by outcome, running
//! agents per pool, cost and tokens per credential), tallied by the model
//! each time it is rebuilt, and `.flocks/events.jsonl` (queue wait,
//! egress denials), read from its start once and then from where it
//! stopped at each scrape. No label carries a task id or anything else
//! without bounds: statuses and outcomes are fixed lists, pools and
//! credentials come from flocks.toml and the state.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::state::{State, TaskStatus};
use crate::view::StatusView;

/// Task statuses always exported (0 when none), so that series do not come
/// and go; others seen in the state are added.
const STATUSES: &[&str] = &[
    "pending",
    "running",
    "succeeded",
    "landed",
    "failed",
    "timed_out",
    "stalled",
    "interrupted",
    "blocked",
    "removed",
];

/// Attempt outcomes always exported.
const OUTCOMES: &[&str] = &[
    "success",
    "failed",
    "timed_out",
    "stalled",
    "interrupted",
    "spawn_failed",
    "rate_limited",
    "overloaded",
    "credential_rejected",
    "host_lost",
    "setup_failed",
    "running",
];

/// Upper bounds of the queue-wait histogram's buckets, in seconds.
const WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0,
];

/// What the state says, counted when the model is built.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct StateTally {
    /// By outcome kind (`running` while an attempt runs; `unfinished` for
    /// one a killed run left without an outcome).
    pub attempts: BTreeMap<String, u64>,
    /// Money per credential name (`default`: the pool injected none).
    pub cost: BTreeMap<String, f64>,
    /// Tokens per credential and kind (`input`, `output`, `cache_read`,
    /// `cache_creation`).
    pub tokens: BTreeMap<(String, &'static str), u64>,
}

impl StateTally {
    pub(crate) fn of(state: &State) -> StateTally {
        let mut t = StateTally::default();
        let records = state
            .tasks
            .iter()
            .flat_map(|r| std::iter::once(r).chain(&r.variants));
        for r in records {
            for a in &r.attempts {
                let running = matches!(&r.status,
                    TaskStatus::Running { attempt, .. } if *attempt == a.number)
                    && a.ended_at.is_none();
                let kind = match (&a.outcome, running) {
                    (_, true) => "running",
                    (Some(o), false) => super::timeline::outcome_kind(o),
                    (None, false) => "unfinished",
                };
                *t.attempts.entry(kind.to_string()).or_default() += 1;
                let cred = a.credential.clone().unwrap_or_else(|| "default".into());
                *t.cost.entry(cred.clone()).or_default() += a.cost();
                if let Some(u) = a.result.as_ref().and_then(|r| r.usage.as_ref()) {
                    for (kind, n) in [
                        ("input", u.input_tokens),
                        ("output", u.output_tokens),
                        ("cache_read", u.cache_read_input_tokens),
                        ("cache_creation", u.cache_creation_input_tokens),
                    ] {
                        *t.tokens.entry((cred.clone(), kind)).or_default() += n;
                    }
                }
            }
        }
        t
    }
}

/// What events.jsonl says, read on as it grows.
#[derive(Debug, Default)]
pub(crate) struct EventTally {
    pos: u64,
    partial: Vec<u8>,
    /// Since when each task waits for a slot.
    waiting: HashMap<String, DateTime<Utc>>,
    /// Per bucket of [`WAIT_BUCKETS`] (not cumulative), then the rest.
    wait_buckets: Vec<u64>,
    wait_sum: f64,
    wait_count: u64,
    egress_denied: u64,
}

impl EventTally {
    /// Read what was appended to `path` since the last call (the whole
    /// file at the first; from the start again if it was truncated).
    pub(crate) fn poll(&mut self, path: &Path) {
        let Ok(mut f) = crate::fsat::read(path) else {
            return;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.pos {
            *self = EventTally::default();
        }
        if len == self.pos || f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.take(len - self.pos).read_to_end(&mut buf).is_err() {
            return;
        }
        self.pos += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return;
        };
        let done: Vec<u8> = self.partial.drain(..=end).collect();
        for line in done.split(|b| *b == b'\n') {
            self.line(line);
        }
    }

    fn line(&mut self, line: &[u8]) {
        // Only the kinds counted here are parsed whole.
        const KINDS: &[&[u8]] = &[
            b"\"queued\"",
            b"\"requeued\"",
            b"\"started\"",
            b"\"run_started\"",
            b"\"run_finished\"",
            b"\"egress_denied\"",
        ];
        if !KINDS.iter().any(|k| line.windows(k.len()).any(|w| w == *k)) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        let ts = v
            .get("ts")
            .and_then(|t| t.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let task = v.get("task").and_then(|t| t.as_str());
        match v.get("event").and_then(|e| e.as_str()) {
            Some("queued" | "requeued") => {
                if let (Some(task), Some(ts)) = (task, ts) {
                    self.waiting.insert(task.to_string(), ts);
                }
            }
            Some("started") => {
                if let (Some(task), Some(ts)) = (task, ts)
                    && let Some(since) = self.waiting.remove(task)
                {
                    self.observe(((ts - since).num_milliseconds().max(0)) as f64 / 1000.0);
                }
            }
            // What a run left queued is queued again by the next.
            Some("run_started" | "run_finished") => self.waiting.clear(),
            Some("egress_denied") => self.egress_denied += 1,
            _ => {}
        }
    }

    fn observe(&mut self, secs: f64) {
        if self.wait_buckets.is_empty() {
            self.wait_buckets = vec![0; WAIT_BUCKETS.len() + 1];
        }
        let i = WAIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_buckets[i] += 1;
        self.wait_sum += secs;
        self.wait_count += 1;
    }
}

/// A label value in the text format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A status or outcome as a label value: `timed out` -> `timed_out`.
fn snake(s: &str) -> String {
    s.replace([' ', '-'], "_")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn num(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// The whole page.
pub(crate) fn render(
    status: &StatusView,
    tally: &StateTally,
    events: &EventTally,
    live: bool,
) -> String {
    let mut out = String::new();
    tasks_and_attempts(&mut out, status, tally);
    pools_and_run(&mut out, status, live);
    spending(&mut out, tally);
    from_events(&mut out, events);
    out
}

/// `flocks_tasks` by status, `flocks_attempts` by outcome.
fn tasks_and_attempts(out: &mut String, status: &StatusView, tally: &StateTally) {
    head(
        out,
        "flocks_tasks",
        "gauge",
        "Tasks in the project's state, by status (a best-of task counts once; its variants are not tasks).",
    );
    let mut by_status: BTreeMap<String, u64> =
        STATUSES.iter().map(|s| (s.to_string(), 0)).collect();
    for t in &status.tasks {
        *by_status.entry(snake(&t.status)).or_default() += 1;
    }
    for (s, n) in &by_status {
        let _ = writeln!(out, "flocks_tasks{{status=\"{}\"}} {n}", label(s));
    }

    head(
        out,
        "flocks_attempts",
        "gauge",
        "Agent attempts recorded in the state (best-of variants' included), by outcome: running, or how it ended.",
    );
    let mut by_outcome: BTreeMap<String, u64> =
        OUTCOMES.iter().map(|s| (s.to_string(), 0)).collect();
    for (k, n) in &tally.attempts {
        *by_outcome.entry(k.clone()).or_default() += n;
    }
    for (o, n) in &by_outcome {
        let _ = writeln!(out, "flocks_attempts{{outcome=\"{}\"}} {n}", label(o));
    }
}

/// `flocks_running_agents` and `flocks_pool_slots` per pool, `flocks_run_live`.
fn pools_and_run(out: &mut String, status: &StatusView, live: bool) {
    head(
        out,
        "flocks_running_agents",
        "gauge",
        "Agents running now, per pool of flocks.toml.",
    );
    for p in &status.pools {
        let _ = writeln!(
            out,
            "flocks_running_agents{{pool=\"{}\"}} {}",
            label(&p.name),
            p.running
        );
    }
    head(
        out,
        "flocks_pool_slots",
        "gauge",
        "Agent slots per pool of flocks.toml (its max_worktrees).",
    );
    for p in &status.pools {
        let _ = writeln!(
            out,
            "flocks_pool_slots{{pool=\"{}\"}} {}",
            label(&p.name),
            p.slots
        );
    }

    head(
        out,
        "flocks_run_live",
        "gauge",
        "1 while a flocks run (or retry, sail, land --resolve) holds the project, else 0.",
    );
    let _ = writeln!(out, "flocks_run_live {}", u8::from(live));
}

/// `flocks_cost_usd` per credential, `flocks_tokens` per credential and kind.
fn spending(out: &mut String, tally: &StateTally) {
    head(
        out,
        "flocks_cost_usd",
        "gauge",
        "Money the attempts in the state cost, in US dollars as the agents reported it, per credential (default: the pool injected none).",
    );
    for (c, usd) in &tally.cost {
        let _ = writeln!(
            out,
            "flocks_cost_usd{{credential=\"{}\"}} {}",
            label(c),
            num(crate::output::units::round_cost(*usd))
        );
    }
    head(
        out,
        "flocks_tokens",
        "gauge",
        "Tokens the attempts in the state used, as their results' usage counts them, per credential and kind (input, output, cache_read, cache_creation).",
    );
    for ((c, kind), n) in &tally.tokens {
        let _ = writeln!(
            out,
            "flocks_tokens{{credential=\"{}\",kind=\"{kind}\"}} {n}",
            label(c)
        );
    }
}

/// From events.jsonl: `flocks_queue_wait_seconds`, `flocks_egress_denied_total`.
fn from_events(out: &mut String, events: &EventTally) {
    head(
        out,
        "flocks_queue_wait_seconds",
        "histogram",
        "Seconds from a task being queued (or queued again) to its attempt starting, from .flocks/events.jsonl (waiting for dependencies, slots and credentials included).",
    );
    let mut cumulative = 0;
    for (i, b) in WAIT_BUCKETS.iter().enumerate() {
        cumulative += events.wait_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "flocks_queue_wait_seconds_bucket{{le=\"{}\"}} {cumulative}",
            num(*b)
        );
    }
    let _ = writeln!(
        out,
        "flocks_queue_wait_seconds_bucket{{le=\"+Inf\"}} {}",
        events.wait_count
    );
    let _ = writeln!(
        out,
        "flocks_queue_wait_seconds_sum {}",
        num((events.wait_sum * 1000.0).round() / 1000.0)
    );
    let _ = writeln!(out, "flocks_queue_wait_seconds_count {}", events.wait_count);

    head(
        out,
        "flocks_egress_denied_total",
        "counter",
        "Connections the egress proxy refused (egress_denied events in .flocks/events.jsonl).",
    );
    let _ = writeln!(out, "flocks_egress_denied_total {}", events.egress_denied);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_waits_and_denials_are_read_on_as_the_file_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let line = |kind: &str, task: &str, ts: &str| {
            format!("{{\"event\":\"{kind}\",\"task\":\"{task}\",\"ts\":\"{ts}\"}}\n")
        };
        let mut text = String::new();
        text.push_str("{\"event\":\"run_started\",\"run_id\":\"r\",\"tasks\":2,\"pending\":2,\"pools\":[],\"ts\":\"2026-01-01T00:00:00Z\"}\n");
        text.push_str(&line("queued", "a", "2026-01-01T00:00:00Z"));
        text.push_str(&line("queued", "b", "2026-01-01T00:00:00Z"));
        text.push_str(&line("started", "a", "2026-01-01T00:00:02Z"));
        std::fs::write(&path, &text).unwrap();
        let mut t = EventTally::default();
        t.poll(&path);
        assert_eq!((t.wait_count, t.wait_sum), (1, 2.0));
        // Half a line: waits for the rest.
        let more = line("started", "b", "2026-01-01T00:01:40Z");
        let (first, rest) = more.split_at(10);
        std::fs::write(&path, format!("{text}{first}")).unwrap();
        t.poll(&path);
        assert_eq!(t.wait_count, 1);
        let denied = "{\"event\":\"egress_denied\",\"task\":\"a\",\"attempt\":1,\"host\":\"evil.example\",\"port\":443,\"ts\":\"2026-01-01T00:02:00Z\"}\n";
        std::fs::write(&path, format!("{text}{first}{rest}{denied}")).unwrap();
        t.poll(&path);
        assert_eq!((t.wait_count, t.wait_sum), (2, 102.0));
        assert_eq!(t.egress_denied, 1);
        let status = StatusView {
            run: None,
            tasks: Vec::new(),
            pools: Vec::new(),
            credentials: Vec::new(),
            vms: Vec::new(),
            totals: crate::view::Totals {
                tasks: 0,
                attempts: 0,
                turns: 0,
                cost_usd: 0.0,
            },
            waiting: None,
            disk: None,
        };
        let page = render(&status, &StateTally::default(), &t, false);
        assert!(
            page.contains("flocks_queue_wait_seconds_bucket{le=\"5\"} 1\n"),
            "{page}"
        );
        assert!(
            page.contains("flocks_queue_wait_seconds_bucket{le=\"120\"} 2\n"),
            "{page}"
        );
        assert!(
            page.contains("flocks_queue_wait_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{page}"
        );
        assert!(
            page.contains("flocks_queue_wait_seconds_sum 102\n"),
            "{page}"
        );
        assert!(page.contains("flocks_egress_denied_total 1\n"), "{page}");
        assert!(
            page.contains("flocks_tasks{status=\"blocked\"} 0\n"),
            "{page}"
        );
        // Truncated: counted again from the start.
        std::fs::write(&path, &text).unwrap();
        t.poll(&path);
        assert_eq!((t.wait_count, t.egress_denied), (1, 0));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(snake("timed out"), "timed_out");
        assert_eq!(num(3.0), "3");
        assert_eq!(num(0.25), "0.25");
    }
}
