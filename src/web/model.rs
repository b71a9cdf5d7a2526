//! What the pages show, read from the project as another process sees it:
//! state.json and its journal (through the state store's reader path), the
//! logs, and `.flocks/events.jsonl`. The watcher reads them again when the
//! events file or the state changes (and every second while a run goes on)
//! and hands each new [`Model`] to the pages' event streams.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::scope::{self, RunWindow, Scope, Summary};
use super::timeline::{self, Timeline};
use crate::project::Project;
use crate::tui::feed::{EventFeed, Stamped};
use crate::view::StatusView;

/// Events kept for the "recent events" list.
const RECENT: usize = 30;
/// How often the files are looked at.
const TICK: Duration = Duration::from_millis(400);
/// How often the model is rebuilt while a run goes on, changed or not
/// (elapsed times, current tool calls).
const LIVE_REFRESH: Duration = Duration::from_secs(1);

pub(crate) struct Model {
    pub status: Arc<StatusView>,
    pub timeline: Arc<Timeline>,
    /// Recent events, newest last.
    pub events: Vec<Stamped>,
    /// Every usable credential is parked: dispatch resumes then.
    pub waiting_until: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Counts the rebuilds (pages that show slower things, the land plan,
    /// redo them only when it moves).
    pub version: u64,
    /// The state could not be read (it is shown; the last good one stays).
    pub error: Option<String>,
    /// When each running task's attempt started (the pages count its
    /// elapsed time up themselves).
    pub running_since: Arc<std::collections::HashMap<String, DateTime<Utc>>>,
    /// What `/metrics` counts from the state.
    pub tally: Arc<super::metrics::StateTally>,
    /// Every run of the events file (and the state's), oldest first.
    pub runs: Arc<Vec<RunWindow>>,
    /// What the charts and totals cover: the piece of work.
    pub scope: Arc<Scope>,
    /// The tasks of the piece, with what each did in it.
    pub summary: Arc<Summary>,
}

impl Model {
    /// Whether a run is going on now.
    pub(crate) fn live(&self) -> bool {
        self.status.run.as_ref().is_some_and(|r| r.live)
    }
}

/// Read the project once. `runs`: the runs of the events file so far.
pub(crate) fn build(
    project: &Project,
    runs: Arc<Vec<RunWindow>>,
    events: Vec<Stamped>,
    waiting_until: Option<DateTime<Utc>>,
    version: u64,
) -> crate::error::Result<Model> {
    let state = project.store.load()?;
    let now = Utc::now();
    let status = crate::view::build(project, &state);
    let live = status.run.as_ref().is_some_and(|r| r.live);
    let all_runs = scope::with_state_run(runs.to_vec(), &state, live);
    let lands = scope::lands(project);
    let piece = scope::piece(&all_runs, &lands.marks);
    let landed: std::collections::HashSet<String> = status
        .tasks
        .iter()
        .filter(|t| t.status == crate::view::LANDED)
        .map(|t| t.id.clone())
        .collect();
    let summary = scope::summarize(&state, &piece, &landed, &lands.landed_at, None, now);
    let timeline = timeline::build(&state, &project.config, &piece, now);
    let running_since = state
        .tasks
        .iter()
        .filter_map(|t| match &t.status {
            crate::state::TaskStatus::Running { started_at, .. } => {
                Some((t.id.clone(), *started_at))
            }
            _ => None,
        })
        .collect();
    Ok(Model {
        status: Arc::new(status),
        timeline: Arc::new(timeline),
        events,
        waiting_until,
        now,
        version,
        error: None,
        running_since: Arc::new(running_since),
        tally: Arc::new(super::metrics::StateTally::of(&state)),
        runs,
        scope: Arc::new(piece),
        summary: Arc::new(summary),
    })
}

/// The files whose change means "read again": their size and mtime.
fn fingerprint(project: &Project) -> Vec<Option<(u64, SystemTime)>> {
    let dir = project.state_dir();
    ["state.json", "state.journal", "events.jsonl", "land.json"]
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        })
        .collect()
}

/// Build the first model, then keep `tx` current until every receiver is
/// gone.
pub(crate) async fn watch(project: Arc<Project>, first: Arc<Model>, tx: watch::Sender<Arc<Model>>) {
    let mut feed = EventFeed::new(project.events_path());
    let mut recent: VecDeque<Stamped> = first.events.iter().cloned().collect();
    let mut waiting = first.waiting_until;
    let mut runs: Vec<RunWindow> = first.runs.to_vec();
    let mut seen = fingerprint(&project);
    let mut last_build = std::time::Instant::now();
    let mut version = first.version;
    let mut previous = first;
    // The feed's first read is the file's recent past: it was taken by `first`.
    let _ = feed.poll();
    loop {
        tokio::time::sleep(TICK).await;
        if tx.is_closed() {
            return;
        }
        let new = feed.poll();
        let now_seen = fingerprint(&project);
        let due = previous.live() && last_build.elapsed() >= LIVE_REFRESH;
        if new.is_empty() && now_seen == seen && !due {
            continue;
        }
        seen = now_seen;
        for s in new {
            waiting = apply_waiting(waiting, &s);
            scope::apply(&mut runs, &s);
            recent.push_back(s);
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
        version += 1;
        let p = project.clone();
        let events: Vec<Stamped> = recent.iter().cloned().collect();
        let known = Arc::new(runs.clone());
        let built =
            tokio::task::spawn_blocking(move || build(&p, known, events, waiting, version)).await;
        last_build = std::time::Instant::now();
        let model = match built {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => with_error(&previous, e.to_string(), version),
            Err(e) => with_error(&previous, e.to_string(), version),
        };
        previous = Arc::new(model);
        if tx.send(previous.clone()).is_err() {
            return;
        }
    }
}

/// The last good model with an error to show.
fn with_error(previous: &Model, error: String, version: u64) -> Model {
    Model {
        status: previous.status.clone(),
        timeline: previous.timeline.clone(),
        events: previous.events.clone(),
        waiting_until: previous.waiting_until,
        now: Utc::now(),
        version,
        error: Some(error),
        running_since: previous.running_since.clone(),
        tally: previous.tally.clone(),
        runs: previous.runs.clone(),
        scope: previous.scope.clone(),
        summary: previous.summary.clone(),
    }
}

fn apply_waiting(waiting: Option<DateTime<Utc>>, s: &Stamped) -> Option<DateTime<Utc>> {
    use crate::report::Event;
    match &s.event {
        Event::Waiting {
            until: Some(until), ..
        } => Some(*until),
        Event::RunStarted { .. } | Event::Started { .. } | Event::RunFinished { .. } => None,
        _ => waiting,
    }
}

/// The first model: the state, and the events file's recent past.
pub(crate) fn first(project: &Project) -> crate::error::Result<Model> {
    let mut feed = EventFeed::new(project.events_path());
    let mut waiting = None;
    let mut recent = VecDeque::new();
    for s in feed.poll() {
        waiting = apply_waiting(waiting, &s);
        recent.push_back(s);
        if recent.len() > RECENT {
            recent.pop_front();
        }
    }
    let runs = Arc::new(scope::runs_in(&project.events_path()));
    build(project, runs, recent.into_iter().collect(), waiting, 0)
}
