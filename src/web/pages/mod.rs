//! The pages and the fragments of them that the event streams replace:
//! HTML built with maud (every value is escaped), charts from `svg.rs`.
//! One module per page (`dashboard`, `task`, `land`); here the layout and
//! what they share.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::model::Model;
use super::svg;
use crate::agent::redact::Redactor;
use crate::output::units::{duration, money};
use crate::report::describe::{Clock, describe};
use crate::state::TaskRecord;
use crate::view::TaskView;

mod dashboard;
mod land;
mod task;
#[cfg(test)]
mod tests;

use dashboard::*;
pub(crate) use dashboard::{dashboard, dashboard_fragments, run_state};
pub(crate) use land::{land_fragment, land_page};
#[expect(unused_imports, reason = "the pages' private parts, for the tests")]
use task::*;
pub(crate) use task::{diff, log_lines, task_fragments, task_page};

/// The stylesheet, inline in every page and in the report.
pub(crate) const CSS: &str = include_str!("../style.css");

/// The few lines of JavaScript: follow the page's event stream, replace the
/// fragments it sends, append log lines.
const JS: &str = include_str!("../live.js");

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

/// A page with a message (errors, the result of an action).
pub(crate) fn message(title: &str, body: Markup) -> Markup {
    layout(
        title,
        None,
        true,
        html! { header { h1 { (title) } } (body) },
    )
}
