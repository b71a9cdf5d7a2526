//! The land page: what `land --dry-run` says now.

use maud::{Markup, html};

use super::*;

/// The land page's fragment: the plan `land --dry-run` makes now, as a
/// table (task, commits, files, predicted conflict, what land does).
pub(crate) fn land_fragment(
    plan: Result<crate::web::sources::LandView, String>,
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
