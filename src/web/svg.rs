//! The charts, drawn on the server as inline SVG: the slot timeline, money
//! over time and money per task. Hovering a bar shows its `<title>`.

use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::timeline::Timeline;
use crate::output::units::{duration, money};

const WIDTH: f64 = 960.0;
const LABEL: f64 = 130.0;
const ROW: f64 = 24.0;
const AXIS: f64 = 22.0;

fn x_of(tl: &Timeline, t: DateTime<Utc>) -> f64 {
    let span = (tl.end - tl.start).num_milliseconds().max(1) as f64;
    let at = (t - tl.start).num_milliseconds() as f64;
    LABEL + (at / span).clamp(0.0, 1.0) * (WIDTH - LABEL - 10.0)
}

fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// Five ticks along the time axis, at the bottom of a chart of height `h`.
fn axis(tl: &Timeline, h: f64) -> Markup {
    let span = (tl.end - tl.start).num_milliseconds().max(0);
    html! {
        g.axis {
            line x1=(LABEL) y1=(h - AXIS) x2=(WIDTH - 10.0) y2=(h - AXIS) {}
            @for i in 0..=4 {
                @let t = tl.start + chrono::Duration::milliseconds(span * i / 4);
                @let x = x_of(tl, t);
                line x1=(x) y1=(h - AXIS) x2=(x) y2=(h - AXIS + 4.0) {}
                @let anchor = match i { 0 => "start", 4 => "end", _ => "middle" };
                text x=(x) y=(h - 6.0) text-anchor=(anchor) { (clock(t)) }
            }
        }
    }
}

/// One row per slot, one bar per attempt, coloured by outcome.
pub(crate) fn timeline(tl: &Timeline) -> Markup {
    if tl.rows.iter().all(|r| r.bars.is_empty()) {
        return html! { p.muted { "No attempt in this run yet." } };
    }
    let h = tl.rows.len() as f64 * ROW + AXIS + 6.0;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (h) }
            width=(WIDTH) height=(h) role="img" aria-label="attempts per slot over time" {
            @for (i, row) in tl.rows.iter().enumerate() {
                @let y = i as f64 * ROW;
                g.slot data-pool=(row.pool) data-slot=(row.slot) {
                    rect.lane x=(LABEL) y=(y + 2.0) width=(WIDTH - LABEL - 10.0) height=(ROW - 4.0) {}
                    text.rowlabel x="4" y=(y + ROW / 2.0 + 4.0) { (row.pool) " #" (row.slot) }
                    @for b in &row.bars {
                        @let x0 = x_of(tl, b.start);
                        @let w = (x_of(tl, b.end) - x0).max(2.0);
                        rect class={ "bar o-" (b.kind) } x=(x0) y=(y + 3.0) width=(w) height=(ROW - 6.0)
                            data-task=(b.task) data-attempt=(b.attempt) {
                            title {
                                (b.task)
                                @if let Some(t) = &b.title { " — " (t) }
                                "\nattempt " (b.attempt) ": " (b.label)
                                "\n" (clock(b.start)) "–" (clock(b.end))
                                " (" (duration((b.end - b.start).num_milliseconds() as f64 / 1000.0)) ")"
                                @if b.kind != "running" { " · " (money(b.cost)) }
                            }
                        }
                    }
                }
            }
            (axis(tl, h))
        }
        (legend())
    }
}

fn legend() -> Markup {
    const ITEMS: &[(&str, &str)] = &[
        ("running", "running"),
        ("success", "succeeded"),
        ("failed", "failed"),
        ("timed_out", "timed out / stalled"),
        ("rate_limited", "rate limited / overloaded"),
        ("interrupted", "interrupted / other"),
    ];
    html! {
        div.legend {
            @for (kind, label) in ITEMS {
                span { i class={ "sw o-" (kind) } {} (label) }
            }
        }
    }
}

/// Money spent over time: a step line of the running total at each
/// attempt's end.
pub(crate) fn cost_over_time(tl: &Timeline) -> Markup {
    let Some(&(_, max)) = tl.cost_series.last() else {
        return html! { p.muted { "No money spent in this run yet." } };
    };
    let h = 160.0;
    let top = 12.0;
    let y_of = |c: f64| {
        let frac = if max > 0.0 { c / max } else { 0.0 };
        (h - AXIS) - frac * (h - AXIS - top)
    };
    let mut d = format!("M{:.1},{:.1}", LABEL, y_of(0.0));
    for &(t, c) in &tl.cost_series {
        let x = x_of(tl, t);
        d.push_str(&format!(" H{x:.1} V{:.1}", y_of(c)));
    }
    d.push_str(&format!(" H{:.1}", WIDTH - 10.0));
    html! {
        svg.costline xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (h) }
            width=(WIDTH) height=(h) role="img" aria-label="money spent over time" {
            text x="4" y=(top + 4.0) { (money(max)) }
            text x="4" y=(h - AXIS) { "$0" }
            path d=(d) {}
            @for &(t, c) in &tl.cost_series {
                circle cx=(x_of(tl, t)) cy=(y_of(c)) r="2.5" { title { (clock(t)) ": " (money(c)) " spent" } }
            }
            (axis(tl, h))
        }
    }
}

/// Money per task, most first (the first `limit`, then the rest summed).
pub(crate) fn cost_per_task(tl: &Timeline, limit: usize) -> Markup {
    let list = &tl.cost_per_task;
    if list.iter().all(|(_, c)| *c <= 0.0) {
        return html! { p.muted { "No money spent in this run yet." } };
    }
    let shown = &list[..list.len().min(limit)];
    let rest: Vec<f64> = list[shown.len()..].iter().map(|(_, c)| *c).collect();
    let max = shown.first().map(|(_, c)| *c).unwrap_or(0.0).max(1e-9);
    let rows = shown.len() + usize::from(!rest.is_empty());
    let h = rows as f64 * 20.0 + 4.0;
    let bar_w = |c: f64| (c / max * (WIDTH - LABEL - 100.0)).max(1.0);
    html! {
        svg.costbars xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (h) }
            width=(WIDTH) height=(h) role="img" aria-label="money per task" {
            @for (i, (task, c)) in shown.iter().enumerate() {
                @let y = i as f64 * 20.0;
                g data-task=(task) {
                    text.rowlabel x="4" y=(y + 14.0) { (task) }
                    rect.costbar x=(LABEL) y=(y + 3.0) width=(bar_w(*c)) height="14" {
                        title { (task) ": " (money(*c)) }
                    }
                    text x=(LABEL + bar_w(*c) + 6.0) y=(y + 14.0) { (money(*c)) }
                }
            }
            @if !rest.is_empty() {
                @let y = shown.len() as f64 * 20.0;
                @let c = crate::output::units::sum_costs(rest.iter().copied());
                text.rowlabel x="4" y=(y + 14.0) { (rest.len()) " more" }
                text x=(LABEL) y=(y + 14.0) { (money(c)) }
            }
        }
    }
}
