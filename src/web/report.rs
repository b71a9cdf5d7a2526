//! `flocks report`: a piece of work (by default: since the last land, every
//! run and every attempt; see [`super::scope`]), one run (`--run ID`) or
//! everything since a time (`--since`), as a single self-contained HTML file
//! (inline CSS and SVG, no script, nothing fetched): its runs, the timeline
//! with the runs marked, money, and per task its branch, status, totals
//! across the runs, change, best-of winner, conflict warning and failure
//! tail.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::pages::layout;
use super::scope::{self, Scope, Summary};
use super::svg;
use super::timeline;
use crate::agent::redact::Redactor;
use crate::error::{Error, Result};
use crate::output::units::{duration, money, sum_costs};
use crate::project::Project;
use crate::state::{Outcome, TaskRecord, TaskStatus};

/// Which window the report covers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pick<'a> {
    /// The piece of work (the default).
    Piece,
    Run(&'a str),
    Since(DateTime<Utc>),
}

/// What was written, for the command's last line.
pub(crate) struct Written {
    /// For the file name: the window's last run (or "none").
    pub id: String,
    /// "this piece of work: since the first run (3 runs)".
    pub what: String,
    pub html: String,
}

/// One task's row.
struct Row<'a> {
    rec: &'a TaskRecord,
    status: String,
    detail: Option<String>,
    sums: scope::Sums,
    branch: String,
    /// "3 files, +10 −2".
    change: Option<String>,
    /// The commits its last landing made on the target.
    landed: Vec<String>,
    winner: Option<String>,
    conflict: Option<String>,
    tail: Vec<String>,
    /// Its attempts' scheduler jobs (Slurm pools): id, node, state, times.
    jobs: Vec<String>,
}

/// The report of `pick` as a whole HTML page.
pub(crate) fn render(project: &Project, pick: Pick, redactor: &Redactor) -> Result<Written> {
    let state = project.store.load()?;
    let status = crate::view::build(project, &state);
    let live = status.run.as_ref().is_some_and(|r| r.live);
    let now = Utc::now();
    let runs = scope::with_state_run(scope::runs_in(&project.events_path()), &state, live);
    if runs.is_empty() {
        return Err(Error::Usage(format!(
            "no run yet in {}: `flocks run` starts one",
            project.config.dir.display()
        )));
    }
    let lands = scope::lands(project);
    let window = match pick {
        Pick::Piece => scope::piece(&runs, &lands.marks),
        Pick::Since(t) => scope::since(&runs, t),
        Pick::Run(id) => scope::run(&runs, id).ok_or_else(|| {
            let known: Vec<&str> = runs.iter().rev().take(10).map(|r| r.id.as_str()).collect();
            Error::Usage(format!(
                "no run `{id}` in {} (recent runs: {}): `flocks report` without --run reports this piece of work",
                project.events_path().display(),
                known.join(", ")
            ))
        })?,
    };
    let is_state_run =
        matches!(pick, Pick::Run(id) if state.run.as_ref().is_some_and(|r| r.id == id));
    // The state's present applies to a window that reaches now (and to the
    // state's own last run); an earlier run is read from its events.
    let current = window.current() || is_state_run;
    let landed: HashSet<String> = status
        .tasks
        .iter()
        .filter(|t| t.status == crate::view::LANDED)
        .map(|t| t.id.clone())
        .collect();
    let named = (!current).then(|| scope::named_in(&project.events_path(), &window));
    let summary = if is_state_run {
        // Its own run: every task of the state, as `status` lists them.
        let open = Scope {
            end: None,
            ..window.clone()
        };
        let mut s = scope::summarize(&state, &open, &landed, &lands.landed_at, None, now);
        for (id, sums) in &mut s.tasks {
            if let Some(t) = state.task(id) {
                *sums = scope::sums(t, &window, now);
            }
        }
        s.totals = total(&s);
        s
    } else {
        scope::summarize(
            &state,
            &window,
            &landed,
            &lands.landed_at,
            named.as_ref(),
            now,
        )
    };
    let views: HashMap<&str, &crate::view::TaskView> =
        status.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let repo = project.repo().ok();
    let rows: Vec<Row> = summary
        .tasks
        .iter()
        .filter_map(|(id, sums)| {
            let rec = state.task(id)?;
            let view = views.get(id.as_str()).copied();
            Some(row(
                project,
                repo.as_ref(),
                rec,
                view,
                sums.clone(),
                &window,
                current,
                named.as_ref(),
                &lands,
                now,
            ))
        })
        .collect();
    let tl = timeline::build(&state, &project.config, &window, now);
    let body = page(
        project,
        &window,
        &summary,
        &rows,
        &tl,
        live && current,
        redactor,
        now,
    );
    let title = format!("flocks report · {}", window.describe());
    let id = window
        .runs
        .last()
        .map(|r| r.id.clone())
        .unwrap_or_else(|| "none".into());
    let what = window.describe();
    let what = match what.strip_prefix("This") {
        Some(rest) => format!("this{rest}"),
        None => what,
    };
    Ok(Written {
        id,
        what,
        html: layout(&title, None, false, body).into_string(),
    })
}

fn total(s: &Summary) -> scope::Sums {
    let mut t = scope::Sums::default();
    let mut costs = Vec::new();
    for (_, x) in &s.tasks {
        t.attempts += x.attempts;
        t.earlier += x.earlier;
        t.secs += x.secs;
        t.turns += x.turns;
        costs.push(x.cost);
    }
    t.cost = sum_costs(costs);
    t
}

#[expect(
    clippy::too_many_arguments,
    reason = "one row gathers what the state, the view, git and land.json say of a task"
)]
fn row<'a>(
    project: &Project,
    repo: Option<&git2::Repository>,
    rec: &'a TaskRecord,
    view: Option<&crate::view::TaskView>,
    sums: scope::Sums,
    window: &Scope,
    current: bool,
    named: Option<&HashMap<String, &'static str>>,
    lands: &scope::Lands,
    now: DateTime<Utc>,
) -> Row<'a> {
    let in_window: Vec<&crate::state::Attempt> = scope::attempts(rec)
        .filter(|a| window.contains(a.started_at))
        .collect();
    let (status, detail) = if current {
        (
            view.map(|v| v.status.clone()).unwrap_or_default(),
            view.and_then(|v| v.detail.clone()),
        )
    } else {
        past_status(rec, &in_window, window, named)
    };
    // Connections `[network] allow` refused in the window.
    let denied: u64 = in_window.iter().map(|a| a.denied()).sum();
    let detail = match detail {
        _ if denied == 0 => detail,
        Some(d) => Some(format!("{d}; {}", refused_line(denied))),
        None => Some(refused_line(denied)),
    };
    let winner = rec
        .best_of
        .as_ref()
        .and_then(|b| b.judgement.as_ref())
        .map(crate::view::judgement_line);
    let branch = rec
        .winner()
        .map_or_else(|| rec.branch.clone(), |w| w.branch.clone());
    let change = repo.and_then(|r| diff_stat(r, rec));
    let conflict = if current {
        view.and_then(|v| v.conflict.as_ref()).map(|c| c.describe())
    } else {
        None
    };
    // The end of the log of its last attempt in the window that did not succeed.
    let failed = in_window
        .iter()
        .rev()
        .find(|a| a.outcome.as_ref().is_some_and(|o| *o != Outcome::Success));
    let tail = match failed {
        Some(a) if !status_ok(&status) => {
            let owner = scope_owner(rec, a);
            match project.log_path(owner, a.number) {
                Ok(path) => {
                    let text = crate::logview::read_tail(&path, 64 * 1024);
                    crate::logview::tail_rendered(&text, 6)
                }
                Err(_) => Vec::new(),
            }
        }
        _ => Vec::new(),
    };
    Row {
        rec,
        status,
        detail,
        sums,
        branch,
        change,
        landed: if current {
            lands.commits.get(&rec.id).cloned().unwrap_or_default()
        } else {
            Vec::new()
        },
        winner,
        conflict,
        tail,
        jobs: in_window.iter().filter_map(|a| job_line(a, now)).collect(),
    }
}

/// "Slurm job 123 on node7: COMPLETED, ran 2m10s, waited 4s".
fn job_line(a: &crate::state::Attempt, now: DateTime<Utc>) -> Option<String> {
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
}

fn status_ok(status: &str) -> bool {
    matches!(status, "succeeded" | "landed" | "running" | "pending")
}

/// The id of the record (the task or one of its variants) an attempt is of.
fn scope_owner<'a>(rec: &'a TaskRecord, a: &crate::state::Attempt) -> &'a str {
    if rec.attempts.iter().any(|x| std::ptr::eq(x, a)) {
        return &rec.id;
    }
    rec.variants
        .iter()
        .find(|v| v.attempts.iter().any(|x| std::ptr::eq(x, a)))
        .map_or(&rec.id, |v| &v.id)
}

/// How a task stood at the end of a past window.
fn past_status(
    rec: &TaskRecord,
    in_window: &[&crate::state::Attempt],
    window: &Scope,
    named: Option<&HashMap<String, &'static str>>,
) -> (String, Option<String>) {
    if !rec.variants.is_empty() {
        // A best-of task ends with its judgement, not an attempt.
        let judged = rec
            .best_of
            .as_ref()
            .and_then(|b| b.judgement.as_ref())
            .filter(|j| window.contains(j.at));
        return match judged {
            Some(j) if j.winner.is_some() => (Outcome::Success.label().into(), None),
            Some(j) => ("failed".into(), Some(j.reason.clone())),
            None if in_window.is_empty() => (named_status(rec, named), None),
            None => ("interrupted".into(), None),
        };
    }
    match in_window.last() {
        Some(a) => match &a.outcome {
            Some(o) => (
                o.label().to_string(),
                (*o != Outcome::Success).then(|| o.describe()),
            ),
            None => (
                "interrupted".into(),
                Some("ended with the run, no outcome".into()),
            ),
        },
        None => {
            let s = named_status(rec, named);
            let detail = match (&rec.status, s.as_str()) {
                (TaskStatus::Blocked { on, .. }, "blocked") if !on.is_empty() => {
                    Some(format!("on {}", on.join(", ")))
                }
                _ => None,
            };
            (s, detail)
        }
    }
}

fn named_status(rec: &TaskRecord, named: Option<&HashMap<String, &'static str>>) -> String {
    named
        .and_then(|n| n.get(&rec.id))
        .copied()
        .unwrap_or("pending")
        .to_string()
}

/// "3 files, +10 −2" for a task whose work is recorded.
fn diff_stat(repo: &git2::Repository, rec: &TaskRecord) -> Option<String> {
    let range = crate::land::task_range(repo, rec).ok()?;
    let a = repo.find_commit(range.origin).ok()?.tree().ok()?;
    let b = repo.find_commit(range.tip).ok()?.tree().ok()?;
    let stats = repo
        .diff_tree_to_tree(Some(&a), Some(&b), None)
        .ok()?
        .stats()
        .ok()?;
    Some(format!(
        "{} file{}, +{} −{}",
        stats.files_changed(),
        if stats.files_changed() == 1 { "" } else { "s" },
        stats.insertions(),
        stats.deletions()
    ))
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(10)]
}

#[expect(
    clippy::too_many_arguments,
    reason = "the page's parts, each built once"
)]
fn page(
    project: &Project,
    window: &Scope,
    summary: &Summary,
    rows: &[Row],
    tl: &timeline::Timeline,
    live: bool,
    redactor: &Redactor,
    now: DateTime<Utc>,
) -> Markup {
    let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in rows {
        *counts.entry(r.status.as_str()).or_default() += 1;
    }
    let t = &summary.totals;
    let name = project_name(project);
    let (from, to) = (tl.start, tl.end);
    html! {
        header {
            h1 { "flocks report · " (name) }
            p #scope {
                strong { (window.describe()) } " · " (from.format("%Y-%m-%d %H:%M:%S UTC"))
                " – " (to.format("%Y-%m-%d %H:%M:%S UTC"))
                @if live { " · " span.badge.s-running { "still running: as of " (now.format("%H:%M:%S UTC")) } }
                @else if window.runs.len() == 1 && window.runs[0].interrupted { " · " span.badge.s-interrupted { "interrupted" } }
            }
            p.muted { (project.config.dir.display()) " · written " (now.format("%Y-%m-%d %H:%M:%S UTC")) }
        }
        section.cards {
            div.card { b data-total="tasks" { (rows.len()) } span { "tasks" } }
            @for (s, n) in &counts {
                div.card { b data-count=(s) class={ "badge s-" (s.replace(' ', "-")) } { (n) } span { (s) } }
            }
            div.card { b data-total="attempts" { (t.attempts) } span { "attempts" } }
            div.card { b data-total="turns" { (t.turns) } span { "turns" } }
            div.card { b data-total="cost" { (money(t.cost)) } span { "spent" } }
        }
        @if summary.landed_before > 0 {
            p.muted #landed-before {
                (summary.landed_before) " task" @if summary.landed_before != 1 { "s" }
                " that landed before this window and did nothing in it "
                @if summary.landed_before == 1 { "is" } @else { "are" } " not listed (`flocks report --since DATE` widens it)."
            }
        }
        (runs_table(window, rows))
        section {
            h2 { "Timeline" }
            p.muted { "One row per slot, one bar per attempt; runs are marked; hover a bar for its task." }
            div.chart { (svg::timeline(tl)) }
        }
        section { h2 { "Money over time" } div.chart { (svg::cost_over_time(tl)) } }
        section { h2 { "Money per task" } div.chart { (svg::cost_per_task(tl, 25)) } }
        section {
            h2 { "Tasks" }
            div.scroll {
                table.tasks.report {
                    thead { tr {
                        th { "Task" } th { "Status" } th.num { "Attempts" } th.num { "Time" }
                        th.num { "Turns" } th.num { "Cost" } th { "Change" } th { "Detail" }
                    } }
                    tbody {
                        @for r in rows {
                            tr data-task=(r.rec.id) data-status=(r.status)
                                data-attempts=(r.sums.attempts) data-cost=(format!("{:.4}", r.sums.cost)) {
                                td data-label="Task" {
                                    (r.rec.id)
                                    @if let Some(t) = &r.rec.title { br; span.detail { (t) } }
                                    br; code.branch { (r.branch) }
                                }
                                td data-label="Status" { span class={ "badge s-" (r.status.replace(' ', "-")) } { (r.status) } }
                                td.num data-label="Attempts" {
                                    (r.sums.attempts)
                                    @if r.sums.earlier > 0 { br; span.detail { "+" (r.sums.earlier) " earlier" } }
                                }
                                td.num data-label="Time" { (duration(r.sums.secs)) }
                                td.num data-label="Turns" { (r.sums.turns) }
                                td.num data-label="Cost" { (money(r.sums.cost)) }
                                td.change data-label="Change" {
                                    @if let Some(c) = &r.change { span.stat { (c) } }
                                    @if !r.landed.is_empty() {
                                        br; span.detail { "landed as " code { (short(&r.landed[0])) }
                                            @if r.landed.len() > 1 { ".." code { (short(&r.landed[r.landed.len() - 1])) } } }
                                    }
                                }
                                td.detail data-label="Detail" {
                                    @if let Some(d) = &r.detail { (redactor.redact(d)) }
                                    @for j in &r.jobs { br; span.job { (j) } }
                                    @if let Some(w) = &r.winner { span.winner { "best of " (r.rec.variants.len()) ": " (redactor.redact(w)) } }
                                    @if let Some(c) = &r.conflict { span.conflict { "⚠ " (c) } }
                                    @if !r.tail.is_empty() {
                                        details.tail {
                                            summary { "last lines of its log" }
                                            pre { @for l in &r.tail { (redactor.redact(l)) "\n" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The runs of the window: when, how long, how they ended, and what they
/// started and spent.
fn runs_table(window: &Scope, rows: &[Row]) -> Markup {
    let of_run = |r: &scope::RunWindow| {
        let one = Scope {
            kind: scope::Kind::Run(r.id.clone()),
            start: Some(r.start),
            end: r.end,
            runs: vec![r.clone()],
        };
        let mut n = 0;
        let mut costs = Vec::new();
        for row in rows {
            for a in scope::attempts(row.rec).filter(|a| one.contains(a.started_at)) {
                n += 1;
                costs.push(a.cost());
            }
        }
        (n, sum_costs(costs))
    };
    html! {
        section {
            h2 { "Runs" }
            @if window.runs.is_empty() { p.muted { "No run in this window." } }
            @else {
                div.scroll {
                    table.runs {
                        thead { tr { th { "Run" } th { "Started" } th.num { "Lasted" } th { "Ended" } th.num { "Attempts" } th.num { "Cost" } } }
                        tbody {
                            @for r in &window.runs {
                                @let (n, cost) = of_run(r);
                                tr data-run=(r.id) {
                                    td { (r.id) }
                                    td { (r.start.format("%Y-%m-%d %H:%M:%S UTC")) }
                                    td.num { @match r.end { Some(e) => (duration((e - r.start).num_milliseconds() as f64 / 1000.0)), None => "–" } }
                                    td { @match (r.end, r.interrupted) {
                                        (None, _) => span.badge.s-running { "running" },
                                        (Some(_), true) => span.badge.s-interrupted { "interrupted" },
                                        (Some(_), false) => "finished",
                                    } }
                                    td.num { (n) }
                                    td.num { (money(cost)) }
                                }
                            }
                        }
                    }
                }
            }
        }
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

/// "⛔ 2 connections refused by [network] allow".
fn refused_line(denied: u64) -> String {
    format!(
        "⛔ {} refused by [network] allow",
        crate::output::units::count(denied, "connection")
    )
}
