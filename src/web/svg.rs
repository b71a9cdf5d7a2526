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
/// Above the slot rows: the runs' labels.
const RUNS: f64 = 16.0;

fn x_of(tl: &Timeline, t: DateTime<Utc>) -> f64 {
    tl.x(t, LABEL, WIDTH - LABEL - 10.0)
}

fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

/// A time label: the clock, with the date where the axis crosses days.
fn stamp(tl: &Timeline, t: DateTime<Utc>) -> String {
    if tl.start.date_naive() == tl.end.date_naive() {
        clock(t)
    } else {
        t.format("%m-%d %H:%M").to_string()
    }
}

/// Ticks along the time axis at the bottom of a chart of height `h`: five
/// over one segment; each segment's ends over several, with a break mark
/// between two.
fn axis(tl: &Timeline, h: f64) -> Markup {
    let mut ticks: Vec<DateTime<Utc>> = Vec::new();
    if tl.segments.len() <= 1 {
        let span = (tl.end - tl.start).num_milliseconds().max(0);
        ticks.extend((0..=4).map(|i| tl.start + chrono::Duration::milliseconds(span * i / 4)));
    } else {
        for (a, b) in &tl.segments {
            ticks.push(*a);
            ticks.push(*b);
        }
    }
    // Labels that would overlap the one before are left out.
    let mut last_x = f64::NEG_INFINITY;
    let mut labelled: Vec<(f64, DateTime<Utc>, bool)> = Vec::new();
    for t in ticks {
        let x = x_of(tl, t);
        let show = x - last_x >= 70.0;
        if show {
            last_x = x;
        }
        labelled.push((x, t, show));
    }
    let breaks: Vec<(f64, i64)> = tl
        .segments
        .windows(2)
        .map(|w| {
            let x = x_of(tl, w[0].1) + super::timeline::GAP / 2.0;
            (x, (w[1].0 - w[0].1).num_seconds())
        })
        .collect();
    let n = labelled.len();
    html! {
        g.axis {
            line x1=(LABEL) y1=(h - AXIS) x2=(WIDTH - 10.0) y2=(h - AXIS) {}
            @for (i, (x, t, show)) in labelled.iter().enumerate() {
                line x1=(x) y1=(h - AXIS) x2=(x) y2=(h - AXIS + 4.0) {}
                @if *show {
                    @let anchor = if i == 0 { "start" } else if i + 1 == n && *x > WIDTH - 60.0 { "end" } else { "middle" };
                    text x=(x) y=(h - 6.0) text-anchor=(anchor) { (stamp(tl, *t)) }
                }
            }
            @for (x, secs) in &breaks {
                g.break data-gap=(secs) {
                    rect x=(x - 5.0) y=(h - AXIS - 6.0) width="10" height="12" {}
                    text x=(x) y=(h - AXIS + 4.0) text-anchor="middle" { "≈" }
                    title { (duration(*secs as f64)) " without a run" }
                }
            }
        }
    }
}

/// Each run of the window: a line where it starts and its id, over a chart
/// of height `h` whose top `top` is kept for the labels.
fn run_marks(tl: &Timeline, h: f64, top: f64) -> Markup {
    if tl.runs.len() < 2 && top == 0.0 {
        return html! {};
    }
    let mut last_x = f64::NEG_INFINITY;
    let marks: Vec<(f64, &super::scope::RunWindow, bool)> = tl
        .runs
        .iter()
        .map(|r| {
            let x = x_of(tl, r.start);
            let labelled = x - last_x >= 110.0;
            if labelled {
                last_x = x;
            }
            (x, r, labelled)
        })
        .collect();
    html! {
        @for (x, r, labelled) in marks {
            g.run data-run=(r.id) {
                line x1=(x) y1="0" x2=(x) y2=(h - AXIS) {}
                @if labelled && top > 0.0 {
                    text x=(x + 3.0) y=(top - 4.0) { "run " (r.id) @if r.interrupted { " (interrupted)" } }
                }
                title {
                    "run " (r.id) ": " (clock(r.start))
                    @match r.end {
                        Some(e) => { "–" (clock(e)) " (" (duration((e - r.start).num_milliseconds() as f64 / 1000.0)) ")" },
                        None => " – now",
                    }
                    @if r.interrupted { ", interrupted" }
                }
            }
        }
    }
}

/// One row per slot, one bar per attempt, coloured by outcome.
pub(crate) fn timeline(tl: &Timeline) -> Markup {
    if tl.rows.iter().all(|r| r.bars.is_empty()) {
        return html! { p.muted { "No attempt in this window yet." } };
    }
    let top = if tl.runs.is_empty() { 0.0 } else { RUNS };
    let h = top + tl.rows.len() as f64 * ROW + AXIS + 6.0;
    html! {
        svg.timeline xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (h) }
            width=(WIDTH) height=(h) role="img" aria-label="attempts per slot over time" {
            @for (i, row) in tl.rows.iter().enumerate() {
                @let y = top + i as f64 * ROW;
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
            (run_marks(tl, h, top))
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
        return html! { p.muted { "No money spent in this window yet." } };
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
            (run_marks(tl, h, 0.0))
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
        return html! { p.muted { "No money spent in this window yet." } };
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
