//! Drawing the dashboard: header and counts, pool utilisation, the task
//! table (or a task's log), parked credentials, recent events, key help.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};

use super::app::{App, Group, LogPane, Mode, group_of};
use crate::output::units::duration;
use crate::report::describe::{Clock, describe};
use crate::view::TaskView;

/// Recent events shown under the tasks.
const EVENT_ROWS: usize = 5;

pub(super) fn draw(f: &mut Frame, app: &App, now: DateTime<Utc>) {
    let creds = app.status.credentials.len();
    let events = if matches!(app.mode, Mode::Tasks) {
        app.recent.len().min(EVENT_ROWS)
    } else {
        0
    };
    let banner = app.waiting_until.is_some_and(|t| t > now);
    let areas = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(banner as u16),
        Constraint::Length(app.status.pools.len() as u16 + 2),
        Constraint::Min(4),
        Constraint::Length(if creds > 0 { creds as u16 + 2 } else { 0 }),
        Constraint::Length(if events > 0 { events as u16 + 2 } else { 0 }),
        Constraint::Length(1),
    ])
    .split(f.area());
    f.render_widget(Paragraph::new(header(app)), areas[0]);
    f.render_widget(Paragraph::new(counts(app)), areas[1]);
    if let Some(until) = app.waiting_until.filter(|_| banner) {
        let text = format!(
            "⏸ every usable credential is parked: dispatch resumes at {} (in {})",
            clock(app, until),
            duration(secs_between(now, until))
        );
        f.render_widget(
            Paragraph::new(text).style(Style::new().fg(Color::Yellow)),
            areas[2],
        );
    }
    draw_pools(f, app, areas[3]);
    match &app.mode {
        Mode::Tasks => draw_tasks(f, app, now, areas[4]),
        Mode::Log(pane) => draw_log(f, pane, areas[4]),
    }
    if creds > 0 {
        draw_credentials(f, app, now, areas[5]);
    }
    if events > 0 {
        draw_events(f, app, areas[6]);
    }
    let help = match app.mode {
        Mode::Tasks => "q quit · ↑↓ select · Enter log tail · l follow log",
        Mode::Log(_) => "q quit · ↑↓ PgUp PgDn scroll · l follow on/off · Esc/Enter back",
    };
    f.render_widget(
        Paragraph::new(help).style(Style::new().add_modifier(Modifier::DIM)),
        areas[7],
    );
}

fn secs_between(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}

fn clock(app: &App, t: DateTime<Utc>) -> String {
    app_clock(app).show(t)
}

fn app_clock(app: &App) -> Clock {
    if app.local_times {
        Clock::Local
    } else {
        Clock::Utc
    }
}

fn header(app: &App) -> Line<'static> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let text = match &app.status.run {
        Some(r) if r.live => format!(
            "flocks · run {} · live (pid {}) · started {}",
            r.id,
            r.pid,
            clock(app, r.started_at)
        ),
        Some(r) => match r.ended_at {
            Some(e) => format!("flocks · last run {} · ended {}", r.id, clock(app, e)),
            None => format!(
                "flocks · last run {} · did not end cleanly; `flocks run` resumes it",
                r.id
            ),
        },
        None => "flocks · no run yet: `flocks run` starts one".to_string(),
    };
    Line::from(Span::styled(text, bold))
}

fn counts(app: &App) -> Line<'static> {
    let tasks = &app.status.tasks;
    let n = |f: &dyn Fn(&TaskView) -> bool| tasks.iter().filter(|t| f(t)).count();
    let running = n(&|t| t.status == "running");
    let queued = n(&|t| group_of(&t.status) == Group::Queued);
    let done = n(&|t| group_of(&t.status) == Group::Done);
    let timed_out = n(&|t| t.status == "timed out");
    let stalled = n(&|t| t.status == "stalled");
    let failed = n(&|t| group_of(&t.status) == Group::Failed) - timed_out - stalled;
    let blocked = n(&|t| t.status == "blocked");
    let tot = &app.status.totals;
    let mut spans = vec![
        Span::styled(
            format!("▶ {running} running"),
            Style::new().fg(Color::Green),
        ),
        Span::raw(format!(" · {queued} queued · ")),
        Span::styled(format!("✔ {done} done"), Style::new().fg(Color::Cyan)),
        Span::raw(" · "),
        Span::styled(
            format!("✖ {failed} failed · {timed_out} timed out · {stalled} stalled"),
            if failed + timed_out + stalled > 0 {
                Style::new().fg(Color::Red)
            } else {
                Style::new()
            },
        ),
    ];
    if blocked > 0 {
        spans.push(Span::styled(
            format!(" · ⊘ {blocked} blocked"),
            Style::new().fg(Color::Yellow),
        ));
    }
    spans.push(Span::raw(format!(
        " · {} · {}",
        crate::output::units::count(tot.turns, "turn"),
        crate::output::units::money(tot.cost_usd)
    )));
    Line::from(spans)
}

fn draw_pools(f: &mut Frame, app: &App, area: Rect) {
    const WIDTH: usize = 20;
    let lines: Vec<Line> = app
        .status
        .pools
        .iter()
        .map(|p| {
            let filled = if p.slots == 0 {
                0
            } else {
                (p.running * WIDTH).div_ceil(p.slots).min(WIDTH)
            };
            let pct = (p.running * 100).checked_div(p.slots).unwrap_or(0);
            Line::from(vec![
                Span::raw(format!("{:<12} {:<7} ", p.name, p.backend)),
                Span::styled("█".repeat(filled), Style::new().fg(Color::Green)),
                Span::styled(
                    "░".repeat(WIDTH - filled),
                    Style::new().add_modifier(Modifier::DIM),
                ),
                Span::raw(format!(" {}/{} slots · {pct}%", p.running, p.slots)),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" pools ")),
        area,
    );
}

/// What a row says after its columns: activity, stall warning, failure...
/// `age`: seconds since the status was read.
fn what(app: &App, t: &TaskView, age: f64) -> (String, Style) {
    let warn = Style::new().fg(Color::Yellow);
    match group_of(&t.status) {
        Group::Running => {
            if app.stalled.contains(&t.id) {
                return ("⚠ stalled: no output; stopping it".into(), warn);
            }
            let quiet = t.quiet_secs.map(|q| q + age);
            let limit = app.stall_secs.map(|s| s / 2.0).unwrap_or(600.0);
            if let Some(q) = quiet
                && q > limit
            {
                return (format!("⚠ no output for {}", duration(q)), warn);
            }
            (
                t.activity.clone().unwrap_or_else(|| "starting".into()),
                Style::new(),
            )
        }
        Group::Failed => (
            t.detail.clone().unwrap_or_else(|| t.status.clone()),
            Style::new().fg(Color::Red),
        ),
        Group::Blocked => (
            format!("waits for {}", t.blocked_on.join(", ")),
            Style::new(),
        ),
        Group::Queued if t.attempts > 0 => (
            format!(
                "{} so far",
                crate::output::units::count(t.attempts, "attempt")
            ),
            Style::new(),
        ),
        Group::Queued => (String::new(), Style::new()),
        Group::Idle => (
            t.detail.clone().unwrap_or_default(),
            Style::new().add_modifier(Modifier::DIM),
        ),
        Group::Done => match &t.conflict {
            Some(c) => (
                format!("⚠ {}", c.describe()),
                Style::new().fg(Color::Yellow),
            ),
            None => (
                format!(
                    "{} · {}",
                    crate::output::units::count(t.attempts, "attempt"),
                    crate::output::units::money(t.cost_usd)
                ),
                Style::new().add_modifier(Modifier::DIM),
            ),
        },
    }
}

fn draw_tasks(f: &mut Frame, app: &App, now: DateTime<Utc>, area: Rect) {
    let rows_data = app.rows();
    let age = secs_between(app.loaded_at, now).max(0.0);
    let id_width = rows_data
        .iter()
        .map(|t| t.id.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 28) as u16;
    let mut selected = None;
    let rows: Vec<Row> = rows_data
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if app.selected.as_deref() == Some(t.id.as_str()) {
                selected = Some(i);
            }
            let (mark, color) = match group_of(&t.status) {
                Group::Running => ("▶", Color::Green),
                Group::Failed => ("✖", Color::Red),
                Group::Queued => ("·", Color::Reset),
                Group::Blocked => ("⊘", Color::Yellow),
                Group::Done => ("✔", Color::Cyan),
                Group::Idle => ("−", Color::Reset),
            };
            let elapsed = t
                .elapsed_secs
                .map(|e| if t.status == "running" { e + age } else { e })
                .map(duration)
                .unwrap_or_default();
            let (text, style) = what(app, t, age);
            Row::new(vec![
                Span::styled(mark, Style::new().fg(color)).into(),
                Line::from(t.id.clone()),
                Line::from(t.status.clone()),
                Line::from(t.pool.clone().unwrap_or_default()),
                Line::from(elapsed),
                Line::from(Span::styled(text, style)),
            ])
        })
        .collect();
    let title = format!(" tasks ({}) ", rows_data.len());
    let table = Table::new(
        rows,
        [
            Constraint::Length(1),
            Constraint::Length(id_width),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec!["", "task", "status", "pool", "elapsed", "doing / why"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::new().borders(Borders::ALL).title(title))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(selected);
    f.render_stateful_widget(table, area, &mut state);
}

fn draw_log(f: &mut Frame, pane: &LogPane, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let end = pane.lines.len().saturating_sub(pane.scroll);
    let start = end.saturating_sub(height);
    let lines: Vec<Line> = pane.lines[start..end]
        .iter()
        .map(|l| Line::from(l.clone()))
        .collect();
    let log = pane
        .path
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let title = format!(
        " log · {} · {log} · {} ",
        pane.task,
        if pane.follow {
            "following".to_string()
        } else if pane.scroll > 0 {
            format!("{} up", crate::output::units::count(pane.scroll, "line"))
        } else {
            "tail".to_string()
        }
    );
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(title)),
        area,
    );
}

fn draw_credentials(f: &mut Frame, app: &App, now: DateTime<Utc>, area: Rect) {
    let lines: Vec<Line> = app
        .status
        .credentials
        .iter()
        .map(|c| match (&c.disabled, c.parked_until) {
            (Some(why), _) => Line::styled(
                format!("⛔ {:<12} disabled: {why}", c.name),
                Style::new().fg(Color::Red),
            ),
            (None, Some(t)) => Line::styled(
                format!(
                    "⏸ {:<12} parked until {} (in {})",
                    c.name,
                    clock(app, t),
                    duration(secs_between(now, t))
                ),
                Style::new().fg(Color::Yellow),
            ),
            (None, None) => Line::from(c.name.clone()),
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" credentials ")),
        area,
    );
}

fn draw_events(f: &mut Frame, app: &App, area: Rect) {
    let lines: Vec<Line> = app
        .recent
        .iter()
        .rev()
        .take(EVENT_ROWS)
        .rev()
        .map(|s| {
            let text = describe(&s.event, app_clock(app));
            Line::from(format!("{} {text}", clock(app, s.ts)))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::new().borders(Borders::ALL).title(" events ")),
        area,
    );
}
