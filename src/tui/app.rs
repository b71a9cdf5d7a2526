//! The dashboard's state: the last [`StatusView`] read from state.json, what
//! the events feed said since, the selection and the log pane. It only reads;
//! it never writes state.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::feed::{EventFeed, Stamped};
use super::input::Action;
use crate::project::Project;
use crate::report::Event;
use crate::state::StateReader;
use crate::view::{StatusView, TaskView};

/// Events kept for the "recent events" pane.
const RECENT: usize = 50;
/// Log lines kept for the log pane.
const LOG_LINES: usize = 2000;

/// How a task row is grouped and ordered on the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Group {
    Running,
    Failed,
    Queued,
    Blocked,
    Done,
    /// Not for the live run: removed from its task file, or not queued by a
    /// retry of other tasks.
    Idle,
}

pub(super) fn group_of(status: &str) -> Group {
    match status {
        "running" => Group::Running,
        "pending" | "interrupted" => Group::Queued,
        "blocked" => Group::Blocked,
        "succeeded" | "landed" => Group::Done,
        "removed" | "not queued" => Group::Idle,
        _ => Group::Failed,
    }
}

pub(super) struct LogPane {
    pub task: String,
    pub path: Option<PathBuf>,
    pub follow: bool,
    pub lines: Vec<String>,
    /// Lines scrolled up from the bottom.
    pub scroll: usize,
}

pub(super) enum Mode {
    Tasks,
    Log(LogPane),
}

pub(super) struct App {
    pub status: StatusView,
    /// When `status` was read: elapsed times grow from there.
    pub loaded_at: DateTime<Utc>,
    pub stall_secs: Option<f64>,
    pub recent: VecDeque<Stamped>,
    /// Tasks the executor reported stalled and is stopping.
    pub stalled: HashSet<String>,
    /// Every credential is parked: dispatch resumes then.
    pub waiting_until: Option<DateTime<Utc>>,
    /// The selected task, by id (stable across refreshes).
    pub selected: Option<String>,
    pub mode: Mode,
    pub quit: bool,
    /// Show clock times in local time (tests use UTC).
    pub local_times: bool,
}

impl App {
    pub(super) fn new(status: StatusView, stall_secs: Option<f64>, now: DateTime<Utc>) -> App {
        let mut app = App {
            status,
            loaded_at: now,
            stall_secs,
            recent: VecDeque::new(),
            stalled: HashSet::new(),
            waiting_until: None,
            selected: None,
            mode: Mode::Tasks,
            quit: false,
            local_times: true,
        };
        app.fix_selection();
        app
    }

    /// Task rows in display order: running, failed, queued, blocked, done.
    pub(super) fn rows(&self) -> Vec<&TaskView> {
        let mut rows: Vec<&TaskView> = self.status.tasks.iter().collect();
        rows.sort_by_key(|t| group_of(&t.status));
        rows
    }

    fn selected_index(&self) -> Option<usize> {
        let id = self.selected.as_deref()?;
        self.rows().iter().position(|t| t.id == id)
    }

    fn fix_selection(&mut self) {
        if self.selected_index().is_none() {
            self.selected = self.rows().first().map(|t| t.id.clone());
        }
    }

    pub(super) fn selected_task(&self) -> Option<&TaskView> {
        let id = self.selected.as_deref()?;
        self.status.tasks.iter().find(|t| t.id == id)
    }

    /// A new reading of state.json.
    pub(super) fn set_status(&mut self, status: StatusView, now: DateTime<Utc>) {
        self.status = status;
        self.loaded_at = now;
        self.stalled.retain(|id| {
            self.status
                .tasks
                .iter()
                .any(|t| t.id == *id && t.status == "running")
        });
        self.fix_selection();
    }

    /// Events read from events.jsonl, oldest first.
    pub(super) fn add_events(&mut self, events: Vec<Stamped>) {
        for s in events {
            match &s.event {
                Event::RunStarted { .. } => {
                    self.stalled.clear();
                    self.waiting_until = None;
                }
                Event::Stalled { task, .. } => {
                    self.stalled.insert(task.clone());
                }
                Event::Started { task, .. } => {
                    self.stalled.remove(task);
                    self.waiting_until = None;
                }
                Event::Finished { task, .. } => {
                    self.stalled.remove(task);
                }
                Event::Waiting { until, .. } => self.waiting_until = *until,
                Event::RunFinished { .. } => self.waiting_until = None,
                _ => {}
            }
            self.recent.push_back(s);
            if self.recent.len() > RECENT {
                self.recent.pop_front();
            }
        }
    }

    pub(super) fn handle(&mut self, action: Action) {
        match action {
            Action::Quit => self.quit = true,
            Action::Up | Action::Down | Action::PageUp | Action::PageDown => {
                let step: isize = match action {
                    Action::Up => -1,
                    Action::Down => 1,
                    Action::PageUp => -10,
                    _ => 10,
                };
                match &mut self.mode {
                    Mode::Tasks => self.move_selection(step),
                    Mode::Log(pane) => {
                        let max = pane.lines.len();
                        pane.scroll = (pane.scroll as isize - step).clamp(0, max as isize) as usize;
                        pane.follow = pane.follow && pane.scroll == 0;
                    }
                }
            }
            Action::Open => match self.mode {
                Mode::Tasks => self.open_log(false),
                Mode::Log(_) => self.mode = Mode::Tasks,
            },
            Action::Follow => match &mut self.mode {
                Mode::Tasks => self.open_log(true),
                Mode::Log(pane) => {
                    pane.follow = !pane.follow;
                    if pane.follow {
                        pane.scroll = 0;
                    }
                }
            },
            Action::Back => self.mode = Mode::Tasks,
            Action::None => {}
        }
    }

    fn move_selection(&mut self, step: isize) {
        let rows = self.rows();
        if rows.is_empty() {
            return;
        }
        let i = self.selected_index().unwrap_or(0) as isize;
        let j = (i + step).clamp(0, rows.len() as isize - 1) as usize;
        self.selected = Some(rows[j].id.clone());
    }

    fn open_log(&mut self, follow: bool) {
        let Some(t) = self.selected_task() else {
            return;
        };
        let mut pane = LogPane {
            task: t.id.clone(),
            path: t.log.clone(),
            follow,
            lines: Vec::new(),
            scroll: 0,
        };
        reload_log(&mut pane);
        self.mode = Mode::Log(pane);
    }

    /// Once a second: the log pane, when it follows, reads its file again
    /// (the log of the task's latest attempt).
    pub(super) fn refresh_log(&mut self) {
        let latest = match &self.mode {
            Mode::Log(pane) if pane.follow => self
                .status
                .tasks
                .iter()
                .find(|t| t.id == pane.task)
                .and_then(|t| t.log.clone()),
            _ => return,
        };
        if let Mode::Log(pane) = &mut self.mode {
            if latest.is_some() {
                pane.path = latest;
            }
            reload_log(pane);
        }
    }
}

fn reload_log(pane: &mut LogPane) {
    let Some(path) = &pane.path else {
        pane.lines = vec!["(no attempt yet: no log)".into()];
        return;
    };
    let text = crate::logview::read_tail(path, 512 * 1024);
    let mut lines: Vec<String> = text.lines().flat_map(crate::logview::render_line).collect();
    let skip = lines.len().saturating_sub(LOG_LINES);
    lines.drain(..skip);
    pane.lines = lines;
}

/// Reads the project for the dashboard: the state through `view::build`,
/// and the events feed. The state is followed, not reloaded: each refresh
/// reads only the journal lines appended since the last one, and state.json
/// again only after a compaction replaced it.
pub(super) struct Source<'a> {
    pub project: &'a Project,
    pub feed: EventFeed,
    /// None until the state was read, and again after a read failed (the
    /// next refresh reads it whole).
    reader: Option<StateReader>,
}

impl<'a> Source<'a> {
    pub(super) fn new(project: &'a Project) -> Source<'a> {
        Source {
            project,
            feed: EventFeed::new(project.events_path()),
            reader: None,
        }
    }

    /// The state brought up to date, as a view; None when it cannot be read
    /// now (the dashboard keeps showing the last one).
    pub(super) fn status(&mut self) -> Option<StatusView> {
        let fresh = match self.reader.as_mut() {
            Some(r) => r.refresh().map(|_| ()),
            None => StateReader::open(&self.project.store).map(|r| {
                self.reader = Some(r);
            }),
        };
        if fresh.is_err() {
            self.reader = None;
            return None;
        }
        let state = self.reader.as_ref()?.state();
        Some(crate::view::build(self.project, state))
    }

    /// Read everything new into the app.
    pub(super) fn refresh(&mut self, app: &mut App, now: DateTime<Utc>) {
        app.add_events(self.feed.poll());
        if let Some(s) = self.status() {
            app.set_status(s, now);
        }
        app.refresh_log();
    }
}
