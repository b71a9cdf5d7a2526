//! A task's page: its heading, attempts, variants, log lines and change.

use std::collections::BTreeMap;

use maud::{Markup, PreEscaped, html};

use super::*;

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
                    p.conflict { "⛔ " (crate::output::units::count(t.egress_denied, "connection")) " refused by [network] allow" }
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
    let owner = rec.map(crate::web::sources::log_owner);
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
pub(super) fn variants_table(t: &TaskView, redactor: &Redactor) -> Markup {
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
pub(super) fn variant_head(
    parent: &TaskView,
    v: &crate::view::VariantView,
    redactor: &Redactor,
) -> Markup {
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
pub(super) fn variant_badge(v: &crate::view::VariantView) -> Markup {
    use crate::state::VerdictOutcome;
    let (class, label) = match v.verdict {
        Some(o @ (VerdictOutcome::Winner | VerdictOutcome::Passed)) => ("succeeded", o.label()),
        Some(o) => ("failed", o.label()),
        None => return badge(&v.status),
    };
    html! { span class=(status_class(class)) { (label) } }
}

pub(super) fn variant_why(v: &crate::view::VariantView) -> &str {
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
    prompt: &crate::web::sources::Prompt,
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
