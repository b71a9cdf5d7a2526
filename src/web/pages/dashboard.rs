//! The dashboard: the run, totals, tasks, pools, credentials and the
//! events feed.

use std::collections::BTreeMap;

use maud::{Markup, PreEscaped, html};

use super::*;

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

pub(super) fn run_line(m: &Model) -> Markup {
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
pub(super) fn run_actions(m: &Model, chrome: &Chrome) -> Markup {
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
pub(super) fn shown(m: &Model) -> Vec<&TaskView> {
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
pub(super) fn totals(m: &Model) -> Markup {
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

pub(super) fn filters(m: &Model, filter: Option<&str>) -> Markup {
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

pub(super) fn tasks_table(
    m: &Model,
    filter: Option<&str>,
    chrome: &Chrome,
    redactor: &Redactor,
) -> Markup {
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
pub(super) fn retryable(status: &str) -> bool {
    !matches!(
        status,
        "running" | "pending" | "succeeded" | "landed" | "blocked"
    )
}

pub(super) fn retry_button(id: &str, csrf: &str) -> Markup {
    html! {
        form.inline method="post" action={ "/actions/retry/" (id) } {
            input type="hidden" name="csrf" value=(csrf);
            button.action data-action="retry" { "Retry" }
        }
    }
}

pub(super) fn pools(m: &Model) -> Markup {
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

pub(super) fn meter(frac: f64) -> Markup {
    html! { span.meter { i style={ "width:" (format!("{:.0}", frac.clamp(0.0, 1.0) * 100.0)) "%" } {} } }
}

pub(super) fn credentials(m: &Model) -> Markup {
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

pub(super) fn feed(m: &Model, redactor: &Redactor) -> Markup {
    html! {
        @if m.events.is_empty() { p.muted { "No events yet." } }
        ul.feed {
            @for s in m.events.iter().rev() {
                li {
                    span.muted { (s.ts.format("%H:%M:%S")) } " "
                    (redactor.redact(&describe(&s.event, Clock::UtcNamed)))
                }
            }
        }
    }
}
