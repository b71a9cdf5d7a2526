//! Each page's server-sent event stream: on every new model (and, on a task
//! page, every few hundred milliseconds for its log) it renders the page's
//! fragments again and sends those that changed (`update`: {id: html}), and
//! the log lines appended since (`log`: {html, reset, head}).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::stream::{self, StreamExt};
use maud::html;
use serde::Deserialize;

use super::sources::{land_plan, log_owner, prompt_of};
use super::{App, Filter, pages};
use crate::project::Project;
use crate::state::TaskRecord;

/// How often a followed log is read.
const LOG_TICK: Duration = Duration::from_millis(300);
/// A page shows at most this much of a log (its end).
const LOG_WINDOW: u64 = 1024 * 1024;
/// The land page's plan is made again at most this often.
const LAND_EVERY: Duration = Duration::from_secs(3);
/// Diff lines shown at most.
const DIFF_LINES: usize = 5000;

type Events = axum::response::Response;

/// `s` for a URL query value.
pub(crate) fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The fragments that differ from what was sent, as one `update` event.
fn changed(
    sent: &mut BTreeMap<&'static str, String>,
    now: BTreeMap<&'static str, String>,
) -> Option<Event> {
    let mut out = serde_json::Map::new();
    for (k, v) in now {
        if sent.get(k) != Some(&v) {
            out.insert(k.to_string(), v.clone().into());
            sent.insert(k, v);
        }
    }
    (!out.is_empty()).then(|| {
        Event::default()
            .event("update")
            .data(serde_json::Value::Object(out).to_string())
    })
}

fn sse(s: impl Stream<Item = Vec<Event>> + Send + 'static) -> Events {
    let flat = s.flat_map(|v| stream::iter(v.into_iter().map(Ok::<Event, Infallible>)));
    Sse::new(flat)
        .keep_alive(KeepAlive::default())
        .into_response()
}

pub(crate) async fn dashboard(State(app): State<App>, Query(q): Query<Filter>) -> Events {
    let filter = q.status.filter(|s| !s.is_empty());
    let rx = app.models.clone();
    let sent: BTreeMap<&'static str, String> = BTreeMap::new();
    sse(stream::unfold(
        (app, rx, sent, filter, true),
        |(app, mut rx, mut sent, filter, first)| async move {
            loop {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                let model = rx.borrow_and_update().clone();
                let frags = pages::dashboard_fragments(
                    &model,
                    filter.as_deref(),
                    &app.chrome,
                    &app.redactor,
                );
                if let Some(e) = changed(&mut sent, frags) {
                    return Some((vec![e], (app, rx, sent, filter, false)));
                }
                if first {
                    return Some((Vec::new(), (app, rx, sent, filter, false)));
                }
            }
        },
    ))
}

/// A task as its page shows it at first.
pub(crate) struct LoadedTask {
    pub record: TaskRecord,
    /// Whose attempts and logs the page shows: the task's own, or, for a
    /// best-of task, its winner's (else its latest variant's).
    pub log_id: String,
    /// The attempt whose log is shown.
    pub shown: Option<u32>,
    pub lines: Vec<String>,
    /// Where in the log file the page's lines end.
    pub pos: u64,
    pub diff: maud::Markup,
    /// The task's prompt as its task file has it now, and what to know
    /// about it.
    pub prompt: super::sources::Prompt,
}

pub(crate) fn load_task(
    app: &App,
    id: &str,
    attempt: Option<u32>,
) -> crate::error::Result<LoadedTask> {
    let state = app.project.store.load()?;
    let Some(record) = state.task(id).cloned() else {
        return Err(crate::error::Error::Usage(format!(
            "no task `{id}` in the run state: the dashboard lists the tasks"
        )));
    };
    let owner = log_owner(&record);
    let log_id = owner.id.clone();
    let shown = match attempt {
        Some(n) if owner.attempts.iter().any(|a| a.number == n) => Some(n),
        Some(n) => {
            return Err(crate::error::Error::Usage(format!(
                "task `{log_id}` has no attempt {n} (it has {})",
                owner.attempts.len()
            )));
        }
        None => owner.attempts.last().map(|a| a.number),
    };
    let (lines, pos) = match shown {
        Some(n) => read_log(&app.project.log_path(&log_id, n)?),
        None => (Vec::new(), 0),
    };
    let diff = diff_of(app, id);
    let prompt = prompt_of(&app.project, &record);
    Ok(LoadedTask {
        record,
        log_id,
        shown,
        lines,
        pos,
        diff,
        prompt,
    })
}

/// The rendered lines of a log's last megabyte, and where they end (after
/// its last complete line).
fn read_log(path: &std::path::Path) -> (Vec<String>, u64) {
    let Ok(mut f) = crate::fsat::read(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(LOG_WINDOW);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.take(len - start).read_to_end(&mut buf).is_err()
    {
        return (Vec::new(), 0);
    }
    let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&buf[..complete]);
    let mut raw: Vec<&str> = text.lines().collect();
    if start > 0 && !raw.is_empty() {
        raw.remove(0); // started mid-line
    }
    let mut lines: Vec<String> = Vec::new();
    if start > 0 {
        lines.push(format!(
            "… the first {} of this log are not shown (`flocks logs` shows them)",
            human_bytes(start)
        ));
    }
    lines.extend(raw.into_iter().flat_map(crate::logview::render_line));
    (lines, start + complete as u64)
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / (1 << 20) as f64)
    } else {
        format!("{} KB", n.div_ceil(1024))
    }
}

/// The task's change, the range `land` would apply, as a coloured diff.
fn diff_of(app: &App, id: &str) -> maud::Markup {
    let project = &app.project;
    // A best-of task's variant: its own work, judged winner or not.
    let change = match crate::tasks::split_variant_id(id) {
        Some((task, k)) => crate::land::variant_change(project, task, k),
        None => crate::land::change(project, id),
    };
    let change = match change {
        Ok(c) => c,
        Err(e) => return html! { p.muted { (e.to_string()) } },
    };
    let range = range_line(project, id, change.start, change.tip);
    match render_diff(project, change.start, change.tip) {
        Ok((lines, truncated, stat)) => {
            // Agents write the files: a secret in them is not shown either.
            let r = &app.redactor;
            let lines: Vec<(char, String)> = lines
                .into_iter()
                .map(|(o, l)| (o, r.redact(&l).into_owned()))
                .collect();
            html! {
                (range)
                (pages::diff(&lines, truncated, &r.redact(&stat), id))
            }
        }
        Err(e) => html! { (range) p.error { "Cannot show the change: " (e.message()) } },
    }
}

/// Which commits are the task's work, and where they landed (land.json).
fn range_line(project: &Project, id: &str, start: git2::Oid, tip: git2::Oid) -> maud::Markup {
    let short = |o: &str| o[..o.len().min(10)].to_string();
    let count = project
        .repo()
        .ok()
        .and_then(|r| crate::land::commits(&r, start, tip).ok())
        .map(|c| c.len());
    let lands = super::scope::lands(project);
    let target = &project.config.workspace.land_target;
    let landed = lands
        .landed_at
        .get(id)
        .map(|at| (at, lands.commits.get(id)));
    html! {
        dl.facts #range {
            dt { "Its work" }
            dd {
                code { (short(&start.to_string())) ".." (short(&tip.to_string())) }
                @if let Some(n) = count { " (" (n) " commit" @if n != 1 { "s" } ")" }
                @if crate::tasks::split_variant_id(id).is_none() && landed.is_none() { " · what `flocks land` applies" }
            }
            @if let Some((at, commits)) = landed {
                dt { "Landed" }
                dd data-landed {
                    "on " (target) " at " (at.format("%Y-%m-%d %H:%M:%S UTC"))
                    @match commits.map(|c| c.as_slice()) {
                        Some([]) | None => { " (its change was on " (target) " already)" },
                        Some([one]) => { " as " code { (short(one)) } },
                        Some([first, .., last]) => { " as " code { (short(first)) } ".." code { (short(last)) } },
                    }
                }
            }
        }
    }
}

type DiffLines = (Vec<(char, String)>, bool, String);

fn render_diff(
    project: &Project,
    start: git2::Oid,
    tip: git2::Oid,
) -> Result<DiffLines, git2::Error> {
    let repo = git2::Repository::open(project.repo_dir())?;
    let a = repo.find_commit(start)?.tree()?;
    let b = repo.find_commit(tip)?.tree()?;
    let diff = repo.diff_tree_to_tree(Some(&a), Some(&b), None)?;
    let stat = diff
        .stats()?
        .to_buf(git2::DiffStatsFormat::FULL, 80)?
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut lines = Vec::new();
    let mut truncated = false;
    diff.print(git2::DiffFormat::Patch, |_, _, line| {
        if lines.len() >= DIFF_LINES {
            truncated = true;
            return false;
        }
        let text = String::from_utf8_lossy(line.content());
        let text = text.trim_matches('\n');
        let origin = line.origin();
        let entry = match origin {
            '+' | '-' | ' ' => (origin, format!("{origin}{text}")),
            'F' => ('F', text.to_string()),
            'H' => ('H', text.to_string()),
            _ => (' ', text.to_string()),
        };
        // A file header holds several lines.
        if entry.0 == 'F' {
            lines.extend(entry.1.lines().map(|l| ('F', l.to_string())));
        } else {
            lines.push(entry);
        }
        true
    })
    .or_else(|e| if truncated { Ok(()) } else { Err(e) })?;
    Ok((lines, truncated, stat))
}

#[derive(Deserialize)]
pub(crate) struct TaskStreamQuery {
    attempt: Option<u32>,
    /// Whose log it follows, when not the task's own (a best-of task's variant).
    log: Option<String>,
    from: Option<u64>,
    follow: Option<u8>,
}

/// A followed log: the attempt shown, and where its file was read to.
struct Follow {
    /// Whose log (the task, or a best-of task's winner or latest variant).
    id: String,
    attempt: Option<u32>,
    /// Switch to a newer attempt when one starts.
    latest: bool,
    path: Option<PathBuf>,
    pos: u64,
    partial: Vec<u8>,
}

impl Follow {
    /// Nothing followed (a placeholder while the real one is read).
    fn none() -> Follow {
        Follow {
            id: String::new(),
            attempt: None,
            latest: false,
            path: None,
            pos: 0,
            partial: Vec::new(),
        }
    }
}

struct TaskStream {
    /// The task of the page.
    id: String,
    app: App,
    rx: tokio::sync::watch::Receiver<std::sync::Arc<super::model::Model>>,
    sent: BTreeMap<&'static str, String>,
    follow: Follow,
    /// The task's status when the diff was last made.
    diff_for: Option<String>,
    /// The task's record, as of model `seen`.
    rec: Option<TaskRecord>,
    seen: Option<u64>,
    first: bool,
}

pub(crate) async fn task(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<TaskStreamQuery>,
) -> Events {
    match TaskStream::open(app, id, q).await {
        Ok(st) => sse(stream::unfold(st, |mut st| async move {
            let out = st.next().await?;
            Some((out, st))
        })),
        Err(refused) => refused,
    }
}

impl TaskStream {
    /// The stream of task `id`'s page, or a 404 when the URL names no task
    /// (or log) of the state.
    async fn open(app: App, id: String, q: TaskStreamQuery) -> Result<TaskStream, Events> {
        let log_id = q.log.clone().unwrap_or_else(|| id.clone());
        if !known_log(&app, &id, &log_id).await {
            return Err((
                axum::http::StatusCode::NOT_FOUND,
                format!("no task `{id}` in the run state"),
            )
                .into_response());
        }
        let path = match q
            .attempt
            .map(|n| app.project.log_path(&log_id, n))
            .transpose()
        {
            Ok(p) => p,
            Err(e) => {
                return Err((axum::http::StatusCode::NOT_FOUND, e.to_string()).into_response());
            }
        };
        let rx = app.models.clone();
        Ok(TaskStream {
            id,
            follow: Follow {
                id: log_id,
                attempt: q.attempt,
                latest: q.follow == Some(1),
                path,
                pos: q.from.unwrap_or(0),
                partial: Vec::new(),
            },
            app,
            rx,
            sent: BTreeMap::new(),
            diff_for: None,
            rec: None,
            seen: None,
            first: true,
        })
    }

    /// The next events to send: at once the first time, then when the
    /// model moves or the log grows. None: the server is going away.
    async fn next(&mut self) -> Option<Vec<Event>> {
        loop {
            if !self.first {
                tokio::select! {
                    r = self.rx.changed() => if r.is_err() { return None },
                    _ = tokio::time::sleep(LOG_TICK) => {}
                }
            }
            let first = std::mem::take(&mut self.first);
            let out = self.look().await?;
            if !out.is_empty() || first {
                return Some(out);
            }
        }
    }

    /// Look once: the fragments that changed (the record is read again
    /// only when the model moved), the diff when the task's status
    /// changed, and what was appended to the log.
    async fn look(&mut self) -> Option<Vec<Event>> {
        let model = self.rx.borrow_and_update().clone();
        let app = self.app.clone();
        let id = self.id.clone();
        let status = model
            .status
            .tasks
            .iter()
            .find(|t| t.id == id)
            .map(|t| t.status.clone());
        let redo_diff = self.diff_for.is_some() && self.diff_for != status;
        if self.diff_for.is_none() {
            self.diff_for = status.clone();
        }
        let mut follow = std::mem::replace(&mut self.follow, Follow::none());
        let reload = self.seen != Some(model.version);
        self.seen = Some(model.version);
        let cached = self.rec.take();
        let work = tokio::task::spawn_blocking(move || {
            let rec = if reload {
                app.project
                    .store
                    .load()
                    .ok()
                    .and_then(|s| s.task(&id).cloned())
            } else {
                cached
            };
            let log = follow_log(&app, &mut follow, rec.as_ref());
            let diff = redo_diff.then(|| diff_of(&app, &id).into_string());
            let frags = reload.then(|| {
                pages::task_fragments(
                    &model,
                    rec.as_ref(),
                    &id,
                    follow.attempt,
                    &app.chrome,
                    &app.redactor,
                )
            });
            (follow, rec, log, diff, frags)
        })
        .await;
        let (follow, rec, log, diff, frags) = work.ok()?;
        self.follow = follow;
        self.rec = rec;
        let mut frags = frags.unwrap_or_default();
        if let Some(d) = diff {
            self.diff_for = status;
            frags.insert("diff", d);
        }
        let mut out = Vec::new();
        out.extend(changed(&mut self.sent, frags));
        out.extend(log);
        Some(out)
    }
}

/// Whether the ids from the URL name a log: only a task (or variant) of the
/// state, by an id that is one, does; a `log` is the task's own or one of
/// its variants' (`<id>@v<k>`, `<id>@judge`).
async fn known_log(app: &App, id: &str, log_id: &str) -> bool {
    let (a, id, log_id) = (app.clone(), id.to_string(), log_id.to_string());
    tokio::task::spawn_blocking(move || {
        crate::tasks::valid_path_id(&id).is_ok()
            && crate::tasks::valid_path_id(&log_id).is_ok()
            && (log_id == id || log_id.starts_with(&format!("{id}@")))
            && a.project
                .store
                .load()
                .is_ok_and(|s| s.task(id.strip_suffix("@judge").unwrap_or(&id)).is_some())
    })
    .await
    .unwrap_or(false)
}

/// What was appended to the followed log since the last look (switching to
/// the task's newest attempt when the page follows the latest).
fn follow_log(app: &App, f: &mut Follow, rec: Option<&TaskRecord>) -> Option<Event> {
    let mut reset = false;
    let owner = rec.map(log_owner);
    if f.latest
        && let Some(owner) = owner
        && let Some(newest) = owner.attempts.last().map(|a| a.number)
        && (f.attempt != Some(newest) || f.id != owner.id)
    {
        f.id = owner.id.clone();
        f.attempt = Some(newest);
        f.path = app.project.log_path(&f.id, newest).ok();
        f.pos = 0;
        f.partial.clear();
        reset = true;
    }
    let path = f.path.as_ref()?;
    let mut lines: Vec<String> = Vec::new();
    if let Ok(mut file) = crate::fsat::read(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > f.pos && file.seek(SeekFrom::Start(f.pos)).is_ok() {
            let mut buf = Vec::new();
            if file.take(len - f.pos).read_to_end(&mut buf).is_ok() {
                f.pos += buf.len() as u64;
                f.partial.extend_from_slice(&buf);
                if let Some(i) = f.partial.iter().rposition(|b| *b == b'\n') {
                    let done: Vec<u8> = f.partial.drain(..=i).collect();
                    lines.extend(
                        String::from_utf8_lossy(&done)
                            .lines()
                            .flat_map(crate::logview::render_line),
                    );
                }
            }
        }
    }
    if lines.is_empty() && !reset {
        return None;
    }
    let whose = match rec {
        Some(r) if r.id != f.id => format!("{}'s ", f.id),
        _ => String::new(),
    };
    let head = reset.then(|| {
        html! { "Log of " (whose) "attempt " (f.attempt.unwrap_or(0)) " " span.muted { "(follows the latest attempt)" } }.into_string()
    });
    let data = serde_json::json!({
        "reset": reset,
        "head": head,
        "html": pages::log_lines(&lines, &app.redactor).into_string(),
    });
    Some(Event::default().event("log").data(data.to_string()))
}

pub(crate) async fn land(State(app): State<App>) -> Events {
    let rx = app.models.clone();
    sse(stream::unfold(
        (app, rx, BTreeMap::new(), true, None),
        |(app, mut rx, mut sent, first, mut last)| async move {
            loop {
                if !first && rx.changed().await.is_err() {
                    return None;
                }
                // The plan (with its conflict prediction) is made again at
                // most every few seconds, whatever a live run changes.
                if let Some(at) = last {
                    tokio::time::sleep_until(at + LAND_EVERY).await;
                }
                last = Some(tokio::time::Instant::now());
                rx.borrow_and_update();
                let a = app.clone();
                let live = rx.borrow().live();
                let plan = tokio::task::spawn_blocking(move || land_plan(&a.project))
                    .await
                    .unwrap_or_else(|e| Err(e.to_string()));
                let mut frags = BTreeMap::new();
                frags.insert(
                    "land",
                    pages::land_fragment(plan, live, &app.chrome, &app.redactor).into_string(),
                );
                if let Some(e) = changed(&mut sent, frags) {
                    return Some((vec![e], (app, rx, sent, false, last)));
                }
                if first {
                    return Some((Vec::new(), (app, rx, sent, false, last)));
                }
            }
        },
    ))
}
