//! The pages and the fragments of them that the event streams replace:
//! HTML built with maud (every value is escaped), charts from `svg.rs`.

use std::collections::BTreeMap;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::model::Model;
use super::svg;
use crate::agent::redact::Redactor;
use crate::output::units::{duration, money};
use crate::state::TaskRecord;
use crate::view::TaskView;

/// The stylesheet, inline in every page and in the report.
pub(crate) const CSS: &str = include_str!("style.css");

/// The few lines of JavaScript: follow the page's event stream, replace the
/// fragments it sends, append log lines.
const JS: &str = include_str!("live.js");

/// What a page may offer besides reading.
#[derive(Clone, Default)]
pub(crate) struct Chrome {
    /// `--allow-actions`: the form token of this server (none: no buttons).
    pub csrf: Option<String>,
}

/// A whole page. `events`: the URL of its event stream (none in the report).
pub(crate) fn layout(title: &str, events: Option<&str>, nav: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(CSS)) }
            }
            body data-events=[events] data-now=(chrono::Utc::now().timestamp_millis()) {
                @if nav {
                    nav {
                        a href="/" { "Dashboard" }
                        a href="/land" { "Land" }
                        a href="/report" { "Report" }
                        @if events.is_some() { span #conn.conn { "connecting…" } }
                    }
                }
                main { (body) }
                @if events.is_some() {
                    script { (PreEscaped(JS)) }
                }
            }
        }
    }
}

/// A status as a CSS class name.
fn status_class(status: &str) -> String {
    format!("badge s-{}", status.replace(' ', "-"))
}

fn badge(status: &str) -> Markup {
    html! { span class=(status_class(status)) { (status) } }
}

/// Dashboard order: running, failed, queued, blocked, done.
fn group(status: &str) -> u8 {
    match status {
        "running" => 0,
        "pending" | "interrupted" => 2,
        "blocked" => 3,
        "succeeded" | "landed" => 4,
        _ => 1,
    }
}

/// The dashboard's fragments, by element id. `filter`: show only tasks
/// with this status.
pub(crate) fn dashboard_fragments(
    m: &Model,
    filter: Option<&str>,
    chrome: &Chrome,
    redactor: &Redactor,
) -> BTreeMap<&'static str, String> {
    let mut f = BTreeMap::new();
    f.insert("run", run_line(m).into_string());
    f.insert("runactions", run_actions(m, chrome).into_string());
    f.insert("totals", totals(m).into_string());
    f.insert("filters", filters(m, filter).into_string());
    f.insert(
        "tasks",
        tasks_table(m, filter, chrome, redactor).into_string(),
    );
    f.insert("pools", pools(m).into_string());
    f.insert("creds", credentials(m).into_string());
    f.insert("timeline", svg::timeline(&m.timeline).into_string());
    f.insert("costline", svg::cost_over_time(&m.timeline).into_string());
    f.insert(
        "costbars",
        svg::cost_per_task(&m.timeline, 25).into_string(),
    );
    f.insert("feed", feed(m, redactor).into_string());
    f
}

/// The dashboard page, filled with `fragments`.
pub(crate) fn dashboard(
    project_name: &str,
    fragments: &BTreeMap<&'static str, String>,
    events_url: &str,
) -> Markup {
    let frag = |id: &str| PreEscaped(fragments.get(id).cloned().unwrap_or_default());
    let body = html! {
        header {
            h1 { "flocks · " (project_name) }
            div #run { (frag("run")) }
            div #runactions { (frag("runactions")) }
        }
        section #totals.cards { (frag("totals")) }
        section {
            h2 { "Tasks" }
            div #filters.filters { (frag("filters")) }
            div #tasks { (frag("tasks")) }
        }
        div.two {
            section { h2 { "Pools" } div #pools { (frag("pools")) } }
            section { h2 { "Credentials" } div #creds { (frag("creds")) } }
        }
        section {
            h2 { "Timeline" }
            p.muted { "One row per slot, one bar per attempt; runs are marked; hover a bar for its task." }
            div #timeline.chart { (frag("timeline")) }
        }
        section { h2 { "Money over time" } div #costline.chart { (frag("costline")) } }
        section { h2 { "Money per task" } div #costbars.chart { (frag("costbars")) } }
        section { h2 { "Recent events" } div #feed { (frag("feed")) } }
    };
    layout(
        &format!("flocks · {project_name}"),
        Some(events_url),
        true,
        body,
    )
}

/// Whether a run goes on, for the page's script (the connection label says
/// "live" only then).
pub(crate) fn run_state(live: bool) -> Markup {
    html! { span.runstate hidden data-run-live=(if live { "1" } else { "0" }) {} }
}

fn run_line(m: &Model) -> Markup {
    html! {
        (run_state(m.live()))
        @if let Some(e) = &m.error {
            p.error { "Cannot read the run state: " (e) }
        }
        p #scope.muted {
            (m.scope.describe())
            @if m.summary.landed_before > 0 {
                " · " (m.summary.landed_before) " task" @if m.summary.landed_before != 1 { "s" }
                " landed before it not listed"
            }
        }
        @match &m.status.run {
            None => p.muted { "No run yet: `flocks run` starts one." },
            Some(r) => p {
                "Run " strong { (r.id) } " · started " (r.started_at.format("%Y-%m-%d %H:%M:%S UTC"))
                @if r.live {
                    " · " span.badge.s-running { "live" } " · pid " (r.pid)
                    " · " span.since data-since=(r.started_at.timestamp_millis()) {}
                } @else if let Some(end) = r.ended_at {
                    " · ended " (end.format("%H:%M:%S UTC"))
                    " after " (duration((end - r.started_at).num_milliseconds() as f64 / 1000.0))
                } @else {
                    " · not running"
                }
                @if let Some(until) = m.waiting_until {
                    @if m.live() {
                        " · " span.badge.s-blocked { "waiting for credentials until " (until.format("%H:%M:%S UTC")) }
                    }
                }
            },
        }
    }
}

/// The Stop button, in a fragment of its own: it changes only when the run
/// starts or ends, so a click never lands on a button being replaced.
fn run_actions(m: &Model, chrome: &Chrome) -> Markup {
    html! {
        @if m.live() {
            @if let Some(csrf) = &chrome.csrf {
                form method="post" action="/actions/stop" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.action data-action="stop" { "Stop the run" }
                }
            }
        }
    }
}

/// The tasks of the piece of work, in the state's order.
fn shown(m: &Model) -> Vec<&TaskView> {
    let ids: std::collections::HashSet<&str> =
        m.summary.tasks.iter().map(|(id, _)| id.as_str()).collect();
    m.status
        .tasks
        .iter()
        .filter(|t| ids.contains(t.id.as_str()))
        .collect()
}

/// The cards: the piece of work's tasks and what they did in it (the same
/// window as the charts).
fn totals(m: &Model) -> Markup {
    let tasks = shown(m);
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &tasks {
        *counts.entry(t.status.as_str()).or_default() += 1;
    }
    let t = &m.summary.totals;
    html! {
        div.card { b data-total="tasks" { (tasks.len()) } span { "tasks" } }
        @for (status, n) in &counts {
            div.card { b data-count=(status) class=(status_class(status)) { (n) } span { (status) } }
        }
        div.card { b data-total="attempts" { (t.attempts) } span { "attempts" } }
        div.card { b data-total="turns" { (t.turns) } span { "turns" } }
        div.card { b data-total="cost" { (money(t.cost)) } span { "spent" } }
    }
}

fn filters(m: &Model, filter: Option<&str>) -> Markup {
    let tasks = shown(m);
    let mut counts: BTreeMap<(u8, &str), usize> = BTreeMap::new();
    for t in &tasks {
        *counts
            .entry((group(&t.status), t.status.as_str()))
            .or_default() += 1;
    }
    html! {
        a href="/" class=[filter.is_none().then_some("on")] { "all " (tasks.len()) }
        @for ((_, status), n) in &counts {
            a href={ "/?status=" (status) } class=[(filter == Some(*status)).then_some("on")] data-filter=(status) {
                (status) " " (n)
            }
        }
    }
}

fn tasks_table(m: &Model, filter: Option<&str>, chrome: &Chrome, redactor: &Redactor) -> Markup {
    let mut rows: Vec<&TaskView> = shown(m)
        .into_iter()
        .filter(|t| filter.is_none_or(|f| t.status == f))
        .collect();
    rows.sort_by_key(|t| group(&t.status));
    html! {
        @if rows.is_empty() {
            p.muted { @if filter.is_some() { "No task with this status." } @else { "No tasks yet." } }
        } @else {
            table.tasks {
                thead { tr {
                    th { "Task" } th { "Status" } th.c-pool { "Pool" } th.num.c-attempts { "Attempts" } th.num.c-elapsed { "Elapsed" }
                    th.c-activity { "Current tool call" } th.num.c-cost { "Cost" } th.c-detail { "Detail" }
                    @if chrome.csrf.is_some() { th {} }
                } }
                tbody {
                    @for t in rows {
                        @let sums = m.summary.get(&t.id).cloned().unwrap_or_default();
                        tr data-task=(t.id) data-status=(t.status) data-attempts=(sums.attempts) data-cost=(format!("{:.4}", sums.cost)) {
                            td data-label="Task" { a href={ "/tasks/" (t.id) } { (t.id) } }
                            td data-label="Status" { (badge(&t.status)) }
                            td.c-pool data-label="Pool" { (t.pool.as_deref().unwrap_or("")) }
                            td.num.c-attempts data-label="Attempts" {
                                (sums.attempts)
                                @if sums.earlier > 0 { " " span.detail title="attempts before this piece of work" { "+" (sums.earlier) } }
                            }
                            td.num.c-elapsed data-label="Elapsed" {
                                // A running task's time counts up in the page, so the
                                // table is not sent again every second.
                                @match m.running_since.get(&t.id).filter(|_| t.status == "running") {
                                    Some(since) => span.since data-since=(since.timestamp_millis()) {},
                                    None => (t.elapsed_secs.map(duration).unwrap_or_default()),
                                }
                            }
                            td.activity.c-activity data-label="Now" { (redactor.redact(t.activity.as_deref().unwrap_or(""))) }
                            td.num.c-cost data-label="Cost" { (money(sums.cost)) }
                            td.detail.c-detail data-label="Detail" {
                                @if !t.blocked_on.is_empty() { "on " (t.blocked_on.join(", ")) " " }
                                (redactor.redact(t.detail.as_deref().unwrap_or("")))
                                @if let Some(c) = &t.conflict { span.conflict { "⚠ " (c.describe()) } }
                                @if t.egress_denied > 0 { span.conflict { "⛔ " (t.egress_denied) " refused by [network] allow" } }
                            }
                            @if let Some(csrf) = &chrome.csrf {
                                td { @if retryable(&t.status) { (retry_button(&t.id, csrf)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// What `flocks retry <id>` takes without --force.
fn retryable(status: &str) -> bool {
    !matches!(
        status,
        "running" | "pending" | "succeeded" | "landed" | "blocked"
    )
}

fn retry_button(id: &str, csrf: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/actions/retry/" (id) } {
            input type="hidden" name="csrf" value=(csrf);
            button.action data-action="retry" { "Retry" }
        }
    }
}

fn pools(m: &Model) -> Markup {
    html! {
        @if m.status.pools.is_empty() { p.muted { "No pools." } }
        table {
            thead { tr { th { "Pool" } th { "Backend" } th { "Busy now" } th { "Busy over the piece of work" } } }
            tbody {
                @for p in m.status.pools.iter() {
                    @let now = if p.slots > 0 { p.running as f64 / p.slots as f64 } else { 0.0 };
                    tr data-pool=(p.name) {
                        td { (p.name) }
                        td { (p.backend) }
                        td { (meter(now)) " " (p.running) "/" (p.slots) }
                        td {
                            @match m.timeline.utilisation(&p.name) {
                                Some(u) => { (meter(u)) " " (format!("{:.0}%", u * 100.0)) },
                                None => span.muted { "–" },
                            }
                        }
                    }
                }
            }
        }
    }
}

fn meter(frac: f64) -> Markup {
    html! { span.meter { i style={ "width:" (format!("{:.0}", frac.clamp(0.0, 1.0) * 100.0)) "%" } {} } }
}

fn credentials(m: &Model) -> Markup {
    html! {
        @if m.status.credentials.is_empty() {
            p.muted { "No credential is parked or disabled." }
        } @else {
            table {
                thead { tr { th { "Credential" } th { "State" } } }
                tbody {
                    @for c in m.status.credentials.iter() {
                        tr data-credential=(c.name) {
                            td { (c.name) }
                            td {
                                @if let Some(why) = &c.disabled {
                                    span.badge.s-failed { "disabled" } " " (why)
                                } @else if let Some(until) = c.parked_until {
                                    span.badge.s-blocked { "parked" } " until " (until.format("%Y-%m-%d %H:%M:%S UTC"))
                                    " (in " (duration((until - m.now).num_milliseconds() as f64 / 1000.0)) ")"
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn feed(m: &Model, redactor: &Redactor) -> Markup {
    html! {
        @if m.events.is_empty() { p.muted { "No events yet." } }
        ul.feed {
            @for s in m.events.iter().rev() {
                li {
                    span.muted { (s.ts.format("%H:%M:%S")) } " "
                    (redactor.redact(&describe_event(&s.event)))
                }
            }
        }
    }
}

/// One event in words.
fn describe_event(e: &crate::report::Event) -> String {
    use crate::report::Event;
    match e {
        Event::RunStarted {
            run_id,
            pending,
            tasks,
            ..
        } => {
            format!("run {run_id} started: {pending} of {tasks} tasks to run")
        }
        Event::Notice { message } => message.clone(),
        Event::Queued { task } => format!("{task} queued"),
        Event::Started {
            task,
            attempt,
            pool,
            resumed,
            ..
        } => format!(
            "{task} attempt {attempt} started on {pool}{}",
            if *resumed { " (resumed)" } else { "" }
        ),
        Event::Stalled {
            task, quiet_secs, ..
        } => {
            format!("{task} stalled: no output for {}", duration(*quiet_secs))
        }
        Event::Activity { task, activity, .. } => format!("{task}: {activity}"),
        Event::Job {
            task,
            job,
            pending_secs,
            ..
        } => crate::report::job_words(task, job, *pending_secs),
        Event::Finished {
            task,
            attempt,
            outcome,
            duration_secs,
            cost_usd,
            ..
        } => format!(
            "{task} attempt {attempt} {} after {} ({})",
            outcome.describe(),
            duration(*duration_secs),
            money(*cost_usd)
        ),
        Event::Requeued { task, reason } => format!("{task} back in the queue: {reason}"),
        Event::Blocked { task, on, reason } => match reason {
            Some(r) => format!("{task} blocked: {r}"),
            None => format!("{task} blocked on {}", on.join(", ")),
        },
        Event::CredentialParked {
            credential,
            until,
            reason,
        } => format!(
            "credential {credential} parked until {}: {reason}",
            until.format("%H:%M:%S UTC")
        ),
        Event::CredentialDisabled {
            credential,
            reason,
            retired,
        } => {
            let what = if *retired {
                "retired for the run"
            } else {
                "disabled"
            };
            format!("credential {credential} {what}: {reason}")
        }
        Event::ConflictPredicted { task, files, .. } => {
            format!("{task} will conflict at land in {}", files.join(", "))
        }
        Event::Waiting {
            until: Some(until), ..
        } => format!(
            "every credential is parked: waiting until {}",
            until.format("%H:%M:%S UTC")
        ),
        Event::Waiting {
            until: None,
            reason,
        } => format!(
            "waiting: {}",
            reason.as_deref().unwrap_or("no new agent starts")
        ),
        Event::VariantJudged {
            task,
            winner,
            by,
            reason,
            notice,
            ..
        } => {
            let mut s = match winner {
                Some(k) => format!("{task}: variant {k} won ({}): {reason}", by.label()),
                None => format!("{task}: no variant survived: {reason}"),
            };
            if let Some(n) = notice {
                s.push_str(&format!(" (note: {n})"));
            }
            s
        }
        Event::NeedsAttention { message, .. } => format!("needs attention: {message}"),
        Event::Usage {
            task,
            attempt,
            usage,
        } => format!(
            "{task} attempt {attempt}: {} tokens in, {} out so far ({})",
            usage.input_tokens,
            usage.output_tokens,
            money(usage.cost_usd)
        ),
        Event::EgressDenied {
            task, host, port, ..
        } => format!("{task}: connection to {host}:{port} refused ([network] allow)"),
        Event::Landed {
            task,
            commits,
            target,
        } => {
            format!("{task} landed on {target} ({commits} commits)")
        }
        Event::RunFinished {
            succeeded,
            failed,
            blocked,
            pending,
            cost_usd,
            interrupted,
        } => format!(
            "run {}: {succeeded} succeeded, {failed} failed, {blocked} blocked, {pending} pending ({})",
            if *interrupted {
                "interrupted"
            } else {
                "finished"
            },
            money(*cost_usd)
        ),
    }
}

/// A rendered log line (as `flocks logs` renders it) in HTML, with a class
/// for its kind.
pub(crate) fn log_lines(lines: &[String], redactor: &Redactor) -> Markup {
    html! {
        @for l in lines {
            @let class = if l.starts_with('▶') { "l tool" }
                else if l.starts_with("  ↳ error:") || l.starts_with("⚠") { "l err" }
                else if l.starts_with("  ↳") { "l out" }
                else if l.starts_with('■') { "l result" }
                else if l.starts_with("──") { "l meta" }
                else { "l" };
            div class=(class) { (redactor.redact(l)) }
        }
    }
}

/// The task page's fragments: its heading and its attempts.
pub(crate) fn task_fragments(
    m: &Model,
    rec: Option<&TaskRecord>,
    id: &str,
    shown: Option<u32>,
    chrome: &Chrome,
    redactor: &Redactor,
) -> BTreeMap<&'static str, String> {
    let view = m.status.tasks.iter().find(|t| t.id == id);
    // A best-of task's variant: its task's line about it.
    let variant = crate::tasks::split_variant_id(id).and_then(|(parent, _)| {
        let p = m.status.tasks.iter().find(|t| t.id == parent)?;
        Some((p, p.variants.iter().find(|v| v.id == id)?))
    });
    let mut f = BTreeMap::new();
    let head = html! {
        (run_state(m.live()))
        @match (view, variant) {
            (None, Some((parent, v))) => (variant_head(parent, v, redactor)),
            (None, None) => p.error { "No task `" (id) "` in the run state." },
            (Some(t), _) => {
                p {
                    (badge(&t.status))
                    " · " (t.attempts) " attempt" @if t.attempts != 1 { "s" }
                    " · " (money(t.cost_usd)) " · " (t.turns) " turns"
                    @if let Some(p) = &t.pool { " · pool " (p) }
                    @if let Some(a) = &t.activity { " · now: " (redactor.redact(a)) }
                }
                @if let Some(d) = &t.detail { p.detail { (redactor.redact(d)) } }
                @if let Some(c) = &t.conflict { p.conflict { "⚠ " (c.describe()) } }
                @if let Some(u) = &t.usage {
                    p.muted { "Model API (through flocks' proxy): " (u.requests) " answers · "
                        (u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens) " tokens in · "
                        (u.output_tokens) " out · " (money(u.cost_usd)) }
                }
                @if t.egress_denied > 0 {
                    p.conflict { "⛔ " (t.egress_denied) " connection(s) refused by [network] allow" }
                }
                @if !t.outside_footprint.is_empty() {
                    p.detail { "Changed outside its footprint (touches): " (t.outside_footprint.join(", ")) }
                }
                @let dependents: Vec<&TaskView> = m.status.tasks.iter().filter(|o| o.depends_on.iter().any(|d| d == &t.id)).collect();
                @let status_of = |d: &str| m.status.tasks.iter().find(|o| o.id == d).map(|o| o.status.clone());
                @if !t.depends_on.is_empty() { p #depends { "Depends on: "
                    @for (i, d) in t.depends_on.iter().enumerate() {
                        @if i > 0 { ", " } a href={ "/tasks/" (d) } data-dep=(d) { (d) }
                        @if let Some(st) = status_of(d) { " " (badge(&st)) }
                    }
                } }
                @if !dependents.is_empty() { p #dependents { "Needed by: "
                    @for (i, d) in dependents.iter().enumerate() {
                        @if i > 0 { ", " } a href={ "/tasks/" (d.id) } data-dependent=(d.id) { (d.id) } " " (badge(&d.status))
                    }
                } }
                p.muted { "Branch " code { (t.branch) } " · worktree " code { (t.worktree.display()) } }
                @if !t.variants.is_empty() { (variants_table(t, redactor)) }
                @if let Some(r) = &t.result { pre.result { (redactor.redact(r)) } }
                @if let Some(csrf) = &chrome.csrf {
                    @if retryable(&t.status) { (retry_button(&t.id, csrf)) }
                }
            }
        }
    };
    f.insert("taskhead", head.into_string());
    let owner = rec.map(super::streams::log_owner);
    let attempts = html! {
        @match (rec, owner) {
            (Some(rec), Some(owner)) if !owner.attempts.is_empty() => {
            @if owner.id != rec.id {
                p.muted #attempts-of { "The attempts of " a href={ "/tasks/" (owner.id) } { (owner.id) }
                    @if rec.winner().is_some_and(|w| w.id == owner.id) { ", the winner" } @else { ", its latest variant" }
                    " (each variant's page has its own)." }
            }
            table.attempts {
                thead { tr {
                    th.num { "#" } th { "Pool" } th { "Credential" } th { "Started" } th.num { "Duration" }
                    th { "Outcome" } th.num { "Turns" } th.num { "Cost" } th { "Commits" } th {}
                } }
                tbody {
                    @for a in &owner.attempts {
                        tr data-attempt=(a.number) class=[(shown == Some(a.number)).then_some("on")] {
                            td.num { (a.number) }
                            td { (a.pool) }
                            td { (a.credential.as_deref().unwrap_or("")) }
                            td { (a.started_at.format("%H:%M:%S")) }
                            td.num {
                                @match a.ended_at {
                                    Some(end) => (duration((end - a.started_at).num_milliseconds() as f64 / 1000.0)),
                                    None => span.since data-since=(a.started_at.timestamp_millis()) {},
                                }
                            }
                            td { @match &a.outcome {
                                Some(o) => {
                                    (badge(o.label()))
                                    @if o.describe() != o.label() { " " span.detail { (redactor.redact(&o.describe())) } }
                                },
                                None => (badge("running")),
                            } }
                            td.num { (a.turns()) }
                            td.num { (money(a.cost())) }
                            td { @if let Some(end) = &a.end_tip {
                                code title={ "the branch at the attempt's start and end" } {
                                    (a.start_commit.as_deref().map(|c| &c[..c.len().min(7)]).unwrap_or("?")) ".." (&end[..end.len().min(7)])
                                }
                            } }
                            td { a href={ "/tasks/" (rec.id) "?attempt=" (a.number) } data-log=(a.number) { "log" } }
                        }
                    }
                }
            }
            },
            (Some(rec), _) if !rec.variants.is_empty() => p.muted { "A best-of task: no variant has run yet." },
            _ => p.muted { "No attempt yet." },
        }
    };
    f.insert("attempts", attempts.into_string());
    f
}

/// A best-of task's judgement and its variants, each linked to its page.
fn variants_table(t: &TaskView, redactor: &Redactor) -> Markup {
    html! {
        @if let Some(j) = &t.judgement {
            p.detail { (redactor.redact(&crate::view::judgement_line(j))) }
            @if let Some(n) = &j.notice { p.detail { "Note: " (redactor.redact(n)) } }
        }
        table.attempts {
            thead { tr {
                th.num { "k" } th { "Variant" } th { "Branch" } th { "Status" } th.num { "Attempts" }
                th.num { "Lines" } th.num { "Cost" } th { "Why" }
            } }
            tbody {
                @for v in &t.variants {
                    tr {
                        td.num { (v.variant) }
                        td { a href={ "/tasks/" (v.id) } { (v.id) } }
                        td { code { (v.branch) } }
                        td { (variant_badge(v)) }
                        td.num { (v.attempts) }
                        td.num { @if let Some(l) = v.lines { (l) } }
                        td.num { (money(v.cost_usd)) }
                        td.detail { (redactor.redact(variant_why(v))) }
                    }
                }
            }
        }
    }
}

/// A variant's page heading: where it stands, and its task.
fn variant_head(parent: &TaskView, v: &crate::view::VariantView, redactor: &Redactor) -> Markup {
    html! {
        p {
            (variant_badge(v))
            " · " (v.attempts) " attempt" @if v.attempts != 1 { "s" }
            " · " (money(v.cost_usd))
            @if let Some(l) = v.lines { " · " (l) " lines" }
            @if let Some(p) = &v.pool { " · pool " (p) }
            @if let Some(a) = &v.activity { " · now: " (redactor.redact(a)) }
        }
        @let why = variant_why(v);
        @if !why.is_empty() { p.detail { (redactor.redact(why)) } }
        p { "Variant " (v.variant) " of best-of task " a href={ "/tasks/" (parent.id) } { (parent.id) } }
        p.muted { "Branch " code { (v.branch) } }
    }
}

/// Its verdict once judged, else its status.
fn variant_badge(v: &crate::view::VariantView) -> Markup {
    use crate::state::VerdictOutcome;
    let (class, label) = match v.verdict {
        Some(o @ (VerdictOutcome::Winner | VerdictOutcome::Passed)) => ("succeeded", o.label()),
        Some(o) => ("failed", o.label()),
        None => return badge(&v.status),
    };
    html! { span class=(status_class(class)) { (label) } }
}

fn variant_why(v: &crate::view::VariantView) -> &str {
    v.verdict_reason
        .as_deref()
        .or(v.detail.as_deref())
        .unwrap_or("")
}

/// The task page. `log`: the rendered lines of the attempt shown (and
/// which); `diff`: its change.
#[expect(
    clippy::too_many_arguments,
    reason = "the page's parts, each loaded once by the handler"
)]
pub(crate) fn task_page(
    id: &str,
    title: Option<&str>,
    fragments: &BTreeMap<&'static str, String>,
    log: Option<(u32, Markup, bool)>,
    log_of: &str,
    prompt: &super::streams::Prompt,
    diff: Markup,
    events_url: &str,
) -> Markup {
    let frag = |k: &str| PreEscaped(fragments.get(k).cloned().unwrap_or_default());
    let whose = if log_of == id {
        String::new()
    } else {
        format!("{log_of}'s ")
    };
    let body = html! {
        header {
            h1 { "Task " (id) }
            @if let Some(t) = title { p.title { (t) } }
            div #taskhead { (frag("taskhead")) }
        }
        section {
            h2 { "Prompt" }
            @if let Some(n) = &prompt.note { p.muted #prompt-note { (n) } }
            @if let Some(t) = &prompt.text { pre.prompt #prompt { (t) } }
        }
        section { h2 { "Attempts" } div #attempts { (frag("attempts")) } }
        section {
            @match &log {
                Some((n, _, follow)) => h2 #loghead { "Log of " (whose) "attempt " (n) @if *follow { " " span.muted { "(follows the latest attempt)" } } },
                None => h2 #loghead { "Log" },
            }
            div #log.log {
                @match log { Some((_, lines, _)) => (lines), None => p.muted { "No attempt yet: no log." } }
            }
        }
        section { h2 { "Change" } div #diff { (diff) } }
    };
    layout(&format!("flocks · {id}"), Some(events_url), true, body)
}

/// A unified diff with a class per line kind (`+`, `-`, hunk, file).
pub(crate) fn diff(lines: &[(char, String)], truncated: bool, stat: &str, id: &str) -> Markup {
    html! {
        @if lines.is_empty() { p.muted { "The change is empty." } }
        @else {
            pre.stat { (stat) }
            pre.diff {
                @for (origin, text) in lines {
                    @let class = match origin { '+' => "add", '-' => "del", 'H' => "hunk", 'F' => "file", _ => "ctx" };
                    span class=(class) { (text) } "\n"
                }
            }
            @if truncated { p.muted { "The change is longer than shown: `flocks diff " (id) "` shows all of it." } }
        }
    }
}

/// The land page's fragment: the plan `land --dry-run` makes now, as a
/// table (task, commits, files, predicted conflict, what land does).
pub(crate) fn land_fragment(
    plan: Result<super::streams::LandView, String>,
    live: bool,
    chrome: &Chrome,
    redactor: &Redactor,
) -> Markup {
    use crate::land::PlanStatus;
    let short = |o: git2::Oid| o.to_string()[..10].to_string();
    html! {
        (run_state(live))
        @match plan {
            Err(e) => p.error { (redactor.redact(&e)) },
            Ok(view) => {
                @let plan = &view.plan;
                @let ready = plan.ready().count();
                @let commits: usize = plan.ready().map(|t| t.commits.len()).sum();
                p #landhead {
                    "Onto " strong { (plan.target) } " (at " code { (short(plan.target_tip)) } "): "
                    (ready) " task" @if ready != 1 { "s" } " to land, "
                    (commits) " commit" @if commits != 1 { "s" }
                    @if let Some(r) = &view.push { " · then pushed to " strong { (r) } " ([land] push)" }
                }
                @if let Some(wt) = &plan.checkout {
                    @if plan.dirty.is_empty() {
                        p.muted { (plan.target) " is checked out at " code { (wt.display()) } ": its files move with it." }
                    } @else {
                        p.error #dirty { (crate::land::dirty_message(&plan.target, wt, &plan.dirty)) }
                    }
                }
                @if plan.tasks.is_empty() {
                    p.muted { "No succeeded task to land." }
                } @else {
                    div.scroll {
                        table.tasks.plan {
                            thead { tr { th { "Task" } th { "Commits" } th { "Files" } th { "Predicted conflict" } th { "Action" } } }
                            tbody {
                                @for t in &plan.tasks {
                                    @let (kind, action) = match &t.status {
                                        PlanStatus::Ready if t.conflict.is_some() => ("conflict", "skipped: will conflict (`flocks land --resolve` redoes it)".to_string()),
                                        PlanStatus::Ready => ("ready", format!("cherry-pick {} commit{}", t.commits.len(), if t.commits.len() == 1 { "" } else { "s" })),
                                        PlanStatus::Empty => ("empty", "nothing to land".to_string()),
                                        PlanStatus::AlreadyLanded => ("landed", "already landed".to_string()),
                                        PlanStatus::Refused { reason } => ("refused", format!("refused: {reason}")),
                                    };
                                    tr data-task=(t.id) data-plan=(kind) {
                                        td data-label="Task" { a href={ "/tasks/" (t.id) } { (t.id) } br; code.branch { (t.branch) } }
                                        td data-label="Commits" {
                                            @if t.commits.is_empty() { span.muted { "–" } }
                                            @else {
                                                ul.commits { @for c in &t.commits {
                                                    li { code { (short(c.id)) } " " (redactor.redact(&c.summary)) }
                                                } }
                                            }
                                        }
                                        td.files data-label="Files" {
                                            @if let Some(files) = view.files.get(&t.id) {
                                                @for (i, f) in files.iter().enumerate() { @if i > 0 { br; } (f) }
                                            }
                                        }
                                        td data-label="Conflict" {
                                            @match &t.conflict {
                                                Some(c) => span.conflict { "⚠ " (c.describe()) },
                                                None => span.muted { "none" },
                                            }
                                        }
                                        td.detail data-label="Action" { (redactor.redact(&action)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if plan.has_work() {
                    @if let Some(csrf) = &chrome.csrf {
                        form method="post" action="/actions/land" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.action data-action="land" { "Land now (flocks land -y)" }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn land_page(fragment: Markup, events_url: &str) -> Markup {
    let body = html! {
        header { h1 { "Land" } p.muted { "What `flocks land --dry-run` says now, conflicts predicted." } }
        div #land { (fragment) }
    };
    layout("flocks · land", Some(events_url), true, body)
}

/// A page with a message (errors, the result of an action).
pub(crate) fn message(title: &str, body: Markup) -> Markup {
    layout(
        title,
        None,
        true,
        html! { header { h1 { (title) } } (body) },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Duration, Utc};

    use super::*;
    use crate::view::{CredentialView, StatusView, TaskView, Totals};

    fn model(tasks: Vec<TaskView>, credentials: Vec<CredentialView>) -> Model {
        let now = Utc::now();
        let summary = super::super::scope::Summary::of(
            tasks
                .iter()
                .map(|t| (t.id.clone(), Default::default()))
                .collect(),
        );
        Model {
            status: Arc::new(StatusView {
                run: None,
                tasks,
                pools: Vec::new(),
                credentials,
                vms: Vec::new(),
                waiting: None,
                disk: None,
                totals: Totals {
                    tasks: 1,
                    attempts: 1,
                    turns: 0,
                    cost_usd: 0.0,
                },
            }),
            timeline: Arc::new(super::super::timeline::Timeline {
                start: now,
                end: now,
                segments: vec![(now, now)],
                runs: Vec::new(),
                rows: Vec::new(),
                cost_series: Vec::new(),
                cost_per_task: Vec::new(),
            }),
            events: Vec::new(),
            waiting_until: None,
            now,
            version: 0,
            error: None,
            running_since: Arc::default(),
            tally: Arc::default(),
            runs: Arc::default(),
            scope: Arc::new(super::super::scope::Scope {
                kind: super::super::scope::Kind::Piece { after_land: None },
                start: None,
                end: None,
                runs: Vec::new(),
            }),
            summary: Arc::new(summary),
        }
    }

    fn task(id: &str, status: &str, detail: &str) -> TaskView {
        TaskView {
            id: id.into(),
            branch: format!("flocks/{id}"),
            status: status.into(),
            detail: Some(detail.into()),
            attempts: 1,
            pool: Some("local".into()),
            elapsed_secs: Some(3.0),
            activity: None,
            quiet_secs: None,
            pending_secs: None,
            job: None,
            turns: 0,
            cost_usd: 0.0,
            depends_on: Vec::new(),
            blocked_on: Vec::new(),
            worktree: "/w".into(),
            log: None,
            log_tail: Vec::new(),
            outcome: None,
            expect_commits: true,
            result: None,
            conflict: None,
            conflict_unknown: false,
            outside_footprint: Vec::new(),
            variants: Vec::new(),
            judgement: None,
            usage: None,
            egress_denied: 0,
        }
    }

    #[test]
    fn what_agents_wrote_is_escaped_and_secrets_are_redacted() {
        let m = model(
            vec![task(
                "a",
                "failed",
                "failed: <script>alert(1)</script> with sk-secret-value-123",
            )],
            Vec::new(),
        );
        let r = Redactor::new([("sk-secret-value-123".to_string(), "KEY".to_string())]);
        let f = dashboard_fragments(&m, None, &Chrome::default(), &r);
        let table = &f["tasks"];
        assert!(
            table.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{table}"
        );
        assert!(!table.contains("<script>"), "{table}");
        assert!(
            table.contains("[redacted:KEY]") && !table.contains("sk-secret"),
            "{table}"
        );
        // Read-only: no buttons anywhere.
        assert!(f.values().all(|html| !html.contains("<button")), "{f:?}");
        let lines = log_lines(&["▶ Bash: echo <b>sk-secret-value-123</b>".to_string()], &r);
        let lines = lines.into_string();
        assert!(lines.contains("class=\"l tool\""), "{lines}");
        assert!(
            lines.contains("&lt;b&gt;[redacted:KEY]&lt;/b&gt;"),
            "{lines}"
        );
    }

    #[test]
    fn parked_and_disabled_credentials_show_with_their_reset_times() {
        let until = Utc::now() + Duration::minutes(90);
        let m = model(
            Vec::new(),
            vec![
                CredentialView {
                    name: "sub-1".into(),
                    parked_until: Some(until),
                    disabled: None,
                },
                CredentialView {
                    name: "sub-2".into(),
                    parked_until: None,
                    disabled: Some("rejected: invalid token".into()),
                },
            ],
        );
        let f = dashboard_fragments(&m, None, &Chrome::default(), &Redactor::new([]));
        let creds = &f["creds"];
        assert!(
            creds.contains(&until.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            "{creds}"
        );
        assert!(
            creds.contains("(in 1h29m)") || creds.contains("(in 1h30m)"),
            "{creds}"
        );
        assert!(
            creds.contains("disabled") && creds.contains("rejected: invalid token"),
            "{creds}"
        );
    }

    #[test]
    fn a_best_of_task_page_shows_its_judgement_and_variants() {
        use crate::state::{JudgedBy, Judgement, VerdictOutcome};
        use crate::view::VariantView;
        let variant = |k: u32, verdict: VerdictOutcome, reason: &str, lines: u64| VariantView {
            variant: k,
            id: format!("a@v{k}"),
            branch: format!("flocks/a@v{k}"),
            status: "succeeded".into(),
            detail: None,
            attempts: 1,
            pool: Some("local".into()),
            cost_usd: 0.25,
            activity: None,
            log: None,
            verdict: Some(verdict),
            verdict_reason: Some(reason.into()),
            lines: Some(lines),
        };
        let mut t = task("a", "succeeded", "");
        t.detail = None;
        t.variants = vec![
            variant(
                1,
                VerdictOutcome::FailedValidation,
                "`cargo test` failed: <exit 1>",
                40,
            ),
            variant(2, VerdictOutcome::Winner, "the smallest change", 5),
        ];
        t.judgement = Some(Judgement {
            winner: Some(2),
            by: JudgedBy::Ranking,
            reason: "the smallest change (5 lines)".into(),
            ranking: Vec::new(),
            at: Utc::now(),
            notice: Some("the judge answered garbage".into()),
            judge_cost_usd: 0.0,
        });
        let m = model(vec![t], Vec::new());
        let r = Redactor::new([]);
        let f = task_fragments(&m, None, "a", None, &Chrome::default(), &r);
        let head = &f["taskhead"];
        assert!(
            head.contains("v2 won (ranking): the smallest change (5 lines)"),
            "{head}"
        );
        assert!(head.contains("Note: the judge answered garbage"), "{head}");
        assert!(
            head.contains("href=\"/tasks/a@v1\"") && head.contains("href=\"/tasks/a@v2\""),
            "{head}"
        );
        assert!(
            head.contains(">winner<") && head.contains(">failed validation<"),
            "{head}"
        );
        assert!(
            head.contains("`cargo test` failed: &lt;exit 1&gt;"),
            "{head}"
        );
        // A variant's own page says whose variant it is.
        let f = task_fragments(&m, None, "a@v1", None, &Chrome::default(), &r);
        let head = &f["taskhead"];
        assert!(
            head.contains("Variant 1 of best-of task") && head.contains("href=\"/tasks/a\""),
            "{head}"
        );
        assert!(
            head.contains("40 lines") && !head.contains("No task"),
            "{head}"
        );
    }

    #[test]
    fn the_filter_keeps_the_tasks_of_one_status() {
        let m = model(
            vec![
                task("a", "failed", ""),
                task("b", "succeeded", ""),
                task("c", "failed", ""),
            ],
            Vec::new(),
        );
        let f = dashboard_fragments(&m, Some("failed"), &Chrome::default(), &Redactor::new([]));
        assert!(f["tasks"].contains("data-task=\"a\"") && f["tasks"].contains("data-task=\"c\""));
        assert!(!f["tasks"].contains("data-task=\"b\""));
        assert!(
            f["filters"].contains("failed 2") && f["filters"].contains("succeeded 1"),
            "{}",
            f["filters"]
        );
        // With actions: a retry button for each failed task.
        let chrome = Chrome {
            csrf: Some("t0k".into()),
        };
        let f = dashboard_fragments(&m, None, &chrome, &Redactor::new([]));
        assert_eq!(f["tasks"].matches("data-action=\"retry\"").count(), 2);
        assert!(f["tasks"].contains("value=\"t0k\""));
    }
}
