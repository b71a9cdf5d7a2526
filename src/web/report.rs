//! `flocks report`: one run's timeline, costs and outcomes as a single
//! self-contained HTML file (inline CSS and SVG, no script, nothing fetched).
//!
//! A run is a time window: from its `run_started` event in
//! `.flocks/events.jsonl` to its `run_finished` (or the next run's start);
//! the state's last run uses the times state.json recorded. Its attempts are
//! those of state.json that started in the window.

use std::collections::BTreeMap;
use std::io::BufRead;

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::pages::layout;
use super::svg;
use super::timeline;
use crate::agent::redact::Redactor;
use crate::error::{Error, Result};
use crate::output::units::{duration, money, sum_costs};
use crate::project::Project;
use crate::report::Event;
use crate::state::Outcome;
use crate::tui::feed::Stamped;

/// One run as the events file saw it.
#[derive(Debug, Clone)]
pub(crate) struct RunWindow {
    pub id: String,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub interrupted: bool,
}

/// Every run in `.flocks/events.jsonl`, oldest first.
pub(crate) fn runs(project: &Project) -> Vec<RunWindow> {
    let Ok(f) = std::fs::File::open(project.events_path()) else {
        return Vec::new();
    };
    let mut out: Vec<RunWindow> = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        // Only the lines that open and close runs matter: skip the rest cheaply.
        if !line.contains("\"run_") {
            continue;
        }
        let Ok(s) = serde_json::from_str::<Stamped>(&line) else {
            continue;
        };
        match s.event {
            Event::RunStarted { run_id, .. } => {
                if let Some(prev) = out.last_mut()
                    && prev.end.is_none()
                {
                    // It ended without a word (killed): the next one starts.
                    prev.end = Some(s.ts);
                    prev.interrupted = true;
                }
                out.push(RunWindow {
                    id: run_id,
                    start: s.ts,
                    end: None,
                    interrupted: false,
                });
            }
            Event::RunFinished { interrupted, .. } => {
                if let Some(prev) = out.last_mut()
                    && prev.end.is_none()
                {
                    prev.end = Some(s.ts);
                    prev.interrupted = interrupted;
                }
            }
            _ => {}
        }
    }
    out
}

/// The report of run `id` (default: the last one) as a whole HTML page.
pub(crate) fn render(
    project: &Project,
    id: Option<&str>,
    redactor: &Redactor,
) -> Result<(String, String)> {
    let state = project.store.load()?;
    let status = crate::view::build(project, &state);
    let last = state.run.as_ref();
    let (window, current) = match (id, last) {
        (None, Some(r)) => (run_of_state(r), true),
        (Some(id), Some(r)) if r.id == id => (run_of_state(r), true),
        (None, None) => {
            return Err(Error::Usage(format!(
                "no run yet in {}: `flocks run` starts one",
                project.config.dir.display()
            )));
        }
        (Some(id), _) => {
            let all = runs(project);
            match all.iter().find(|r| r.id == id) {
                Some(r) => (r.clone(), false),
                None => {
                    let known: Vec<&str> =
                        all.iter().rev().take(10).map(|r| r.id.as_str()).collect();
                    return Err(Error::Usage(format!(
                        "no run `{id}` in {} (recent runs: {}): `flocks report` without --run reports the last one",
                        project.events_path().display(),
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
        }
    };
    let live = current && status.run.as_ref().is_some_and(|r| r.live);
    let now = Utc::now();
    let tl = timeline::build(&state, &project.config, Some(window.start), window.end, now);

    // Per task: its attempts in the window.
    struct Row<'a> {
        id: &'a str,
        title: Option<&'a str>,
        status: String,
        detail: Option<String>,
        attempts: usize,
        secs: f64,
        turns: u64,
        cost: f64,
        /// Its attempts' scheduler jobs (Slurm pools): id, node, state, times.
        jobs: Vec<String>,
    }
    let views: BTreeMap<&str, &crate::view::TaskView> =
        status.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut rows = Vec::new();
    for t in &state.tasks {
        // A best-of task's attempts are its variants'.
        let attempts: Vec<&crate::state::Attempt> = t
            .attempts
            .iter()
            .chain(t.variants.iter().flat_map(|v| &v.attempts))
            .filter(|a| {
                a.started_at >= window.start && window.end.is_none_or(|e| a.started_at <= e)
            })
            .collect();
        // The state's last run lists every task (pending and blocked ones
        // too); an earlier run, the tasks that ran in it.
        if attempts.is_empty() && !current {
            continue;
        }
        let view = views.get(t.id.as_str());
        rows.push(Row {
            id: &t.id,
            title: t.title.as_deref(),
            status: if current {
                view.map(|v| v.status.clone()).unwrap_or_default()
            } else if !t.variants.is_empty() {
                // A best-of task ends with its judgement, not an attempt.
                let judged = t
                    .best_of
                    .as_ref()
                    .and_then(|b| b.judgement.as_ref())
                    .filter(|j| j.at >= window.start && window.end.is_none_or(|e| j.at <= e));
                match judged {
                    Some(j) if j.winner.is_some() => Outcome::Success.label().to_string(),
                    Some(_) => Outcome::Failed {
                        reason: String::new(),
                    }
                    .label()
                    .to_string(),
                    None => "interrupted".into(),
                }
            } else {
                attempts
                    .last()
                    .and_then(|a| a.outcome.as_ref())
                    .map(|o| o.label().to_string())
                    .unwrap_or_else(|| "interrupted".into())
            },
            detail: if current {
                view.and_then(|v| v.detail.clone())
            } else {
                None
            },
            attempts: attempts.len(),
            secs: attempts
                .iter()
                .map(|a| {
                    (a.ended_at.unwrap_or(now) - a.started_at).num_milliseconds() as f64 / 1000.0
                })
                .sum(),
            turns: attempts.iter().map(|a| a.turns()).sum(),
            cost: sum_costs(attempts.iter().map(|a| a.cost())),
            jobs: attempts
                .iter()
                .filter_map(|a| {
                    let j = a.job.as_ref()?;
                    let mut s = format!("Slurm job {}", j.id);
                    if let Some(n) = &j.node {
                        s.push_str(&format!(" on {n}"));
                    }
                    s.push_str(&format!(": {}", j.state));
                    if let Some(e) = j.elapsed_secs {
                        s.push_str(&format!(", ran {}", duration(e)));
                    }
                    if let Some(p) = a.pending_at(now) {
                        s.push_str(&format!(", waited {}", duration(p)));
                    }
                    Some(s)
                })
                .collect(),
        });
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rows {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    let total_cost = sum_costs(rows.iter().map(|r| r.cost));
    let total_attempts: usize = rows.iter().map(|r| r.attempts).sum();
    let total_turns: u64 = rows.iter().map(|r| r.turns).sum();
    let end = window.end.unwrap_or(now);
    let name = project_name(project);
    let body = html! {
        header {
            h1 { "flocks report · " (name) }
            p {
                "Run " strong { (window.id) } " · " (window.start.format("%Y-%m-%d %H:%M:%S UTC"))
                " – " (end.format("%H:%M:%S UTC"))
                " (" (duration((end - window.start).num_milliseconds() as f64 / 1000.0)) ")"
                @if live { " · " span.badge.s-running { "still running: as of " (now.format("%H:%M:%S UTC")) } }
                @else if window.interrupted { " · " span.badge.s-interrupted { "interrupted" } }
            }
            p.muted { (project.config.dir.display()) " · written " (now.format("%Y-%m-%d %H:%M:%S UTC")) }
        }
        section.cards {
            div.card { b data-total="tasks" { (rows.len()) } span { "tasks" } }
            @for (s, n) in &counts {
                div.card { b data-count=(s) class={ "badge s-" (s.replace(' ', "-")) } { (n) } span { (s) } }
            }
            div.card { b data-total="attempts" { (total_attempts) } span { "attempts" } }
            div.card { b data-total="turns" { (total_turns) } span { "turns" } }
            div.card { b data-total="cost" { (money(total_cost)) } span { "spent" } }
        }
        section {
            h2 { "Timeline" }
            p.muted { "One row per slot, one bar per attempt; hover a bar for its task." }
            div.chart { (svg::timeline(&tl)) }
        }
        section { h2 { "Money over time" } div.chart { (svg::cost_over_time(&tl)) } }
        section { h2 { "Money per task" } div.chart { (svg::cost_per_task(&tl, 25)) } }
        section {
            h2 { "Outcomes" }
            table.tasks {
                thead { tr {
                    th { "Task" } th { "Status" } th.num { "Attempts" } th.num { "Time" }
                    th.num { "Turns" } th.num { "Cost" } th { "Detail" }
                } }
                tbody {
                    @for r in &rows {
                        tr data-task=(r.id) data-status=(r.status) data-cost=(format!("{:.4}", r.cost)) {
                            td { (r.id) @if let Some(t) = r.title { br; span.detail { (t) } } }
                            td { span class={ "badge s-" (r.status.replace(' ', "-")) } { (r.status) } }
                            td.num { (r.attempts) }
                            td.num { (duration(r.secs)) }
                            td.num { (r.turns) }
                            td.num { (money(r.cost)) }
                            td.detail {
                                (redactor.redact(r.detail.as_deref().unwrap_or("")))
                                @for j in &r.jobs { br; span.job { (j) } }
                            }
                        }
                    }
                }
            }
        }
    };
    let page: Markup = layout(&format!("flocks report · {}", window.id), None, false, body);
    Ok((window.id, page.into_string()))
}

fn run_of_state(r: &crate::state::RunInfo) -> RunWindow {
    RunWindow {
        id: r.id.clone(),
        start: r.started_at,
        end: r.ended_at,
        interrupted: false,
    }
}

/// The project's directory name, for titles.
pub(crate) fn project_name(project: &Project) -> String {
    project
        .config
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| project.config.dir.display().to_string())
}
