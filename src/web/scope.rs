//! What the dashboard and the report cover: by default a **piece of work**,
//! everything since the last `land` (or since the first run), every run and
//! every attempt of it; or one run (`--run ID`); or everything since a time
//! (`--since`).
//!
//! Runs come from `.flocks/events.jsonl` (`run_started` .. `run_finished`,
//! or the next run's start for one that was killed), lands from
//! `.flocks/land.json`. A piece starts after the last land (not undone) that
//! came before the last run a person started: the run that `land --resolve`
//! starts to redo conflicts (`redo_run` in land.json) belongs to the piece
//! its land concluded.
//!
//! A task belongs to a window when one of its attempts started in it; while
//! the window reaches now, every task of the state does too, except those
//! that landed before the window began and did nothing in it (they are
//! counted, not listed). A past run's tasks are those it ran or named in its
//! events (`queued`, `blocked`...).

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::report::Event;
use crate::state::{Attempt, State, TaskRecord};
use crate::tui::feed::Stamped;

/// One run as the events file saw it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunWindow {
    pub id: String,
    pub start: DateTime<Utc>,
    /// None: still going, or killed without a word and nothing came after.
    pub end: Option<DateTime<Utc>>,
    pub interrupted: bool,
}

/// Every run in the events file at `path`, oldest first.
pub(crate) fn runs_in(path: &Path) -> Vec<RunWindow> {
    let Ok(f) = crate::fsat::read(path) else {
        return Vec::new();
    };
    let mut out: Vec<RunWindow> = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        // Only the lines that open and close runs matter: skip the rest cheaply.
        if !line.contains("\"run_") {
            continue;
        }
        if let Ok(s) = serde_json::from_str::<Stamped>(&line) {
            apply(&mut out, &s);
        }
    }
    out
}

/// Follow the runs with one more event.
pub(crate) fn apply(runs: &mut Vec<RunWindow>, s: &Stamped) {
    match &s.event {
        Event::RunStarted { run_id, .. } => {
            if let Some(prev) = runs.last_mut()
                && prev.end.is_none()
            {
                // It ended without a word (killed): the next one starts.
                prev.end = Some(s.ts);
                prev.interrupted = true;
            }
            runs.push(RunWindow {
                id: run_id.clone(),
                start: s.ts,
                end: None,
                interrupted: false,
            });
        }
        Event::RunFinished { interrupted, .. } => {
            if let Some(prev) = runs.last_mut()
                && prev.end.is_none()
            {
                prev.end = Some(s.ts);
                prev.interrupted = *interrupted;
            }
        }
        _ => {}
    }
}

/// The runs of the events file, with the state's last run added when the
/// file lost it (its times are the state's; `live`: it still runs).
pub(crate) fn with_state_run(
    mut runs: Vec<RunWindow>,
    state: &State,
    live: bool,
) -> Vec<RunWindow> {
    if let Some(r) = &state.run {
        match runs.iter_mut().find(|w| w.id == r.id) {
            Some(w) => {
                if w.end.is_none() && !live {
                    // Killed: it ended with its last recorded moment.
                    w.end = r.ended_at.or(Some(last_moment(state, r.started_at)));
                    w.interrupted = w.interrupted || r.ended_at.is_none();
                }
            }
            None => {
                runs.push(RunWindow {
                    id: r.id.clone(),
                    start: r.started_at,
                    end: if live {
                        None
                    } else {
                        r.ended_at.or(Some(last_moment(state, r.started_at)))
                    },
                    interrupted: !live && r.ended_at.is_none(),
                });
                runs.sort_by_key(|w| w.start);
            }
        }
    }
    runs
}

/// The last time the state records after `from` (a killed run's end).
fn last_moment(state: &State, from: DateTime<Utc>) -> DateTime<Utc> {
    state
        .tasks
        .iter()
        .flat_map(|t| std::iter::once(t).chain(&t.variants))
        .flat_map(|t| &t.attempts)
        .flat_map(|a| [Some(a.started_at), a.ended_at])
        .flatten()
        .filter(|t| *t >= from)
        .max()
        .unwrap_or(from)
}

/// A land that moved the target (and was not undone).
#[derive(Debug, Clone)]
pub(crate) struct LandMark {
    pub at: DateTime<Utc>,
    /// The run `land --resolve` started after it.
    pub redo_run: Option<String>,
}

/// What land.json says: the lands of the project's target that moved it,
/// oldest first, and when each task last landed there.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lands {
    pub marks: Vec<LandMark>,
    pub landed_at: HashMap<String, DateTime<Utc>>,
    /// The commits each task's last landing made on the target, in order.
    pub commits: HashMap<String, Vec<String>>,
}

pub(crate) fn lands(project: &crate::project::Project) -> Lands {
    let target = &project.config.workspace.land_target;
    let mut out = Lands::default();
    let Ok(log) = crate::land::LandLog::load(&project.state_dir()) else {
        return out;
    };
    for r in log
        .lands
        .iter()
        .filter(|r| &r.target == target && r.state == crate::land::LandState::Done)
    {
        for t in &r.tasks {
            out.landed_at.insert(t.id.clone(), r.at);
            out.commits.insert(
                t.id.clone(),
                t.commits.iter().map(|c| c.to.clone()).collect(),
            );
        }
        if r.old_tip != r.new_tip {
            out.marks.push(LandMark {
                at: r.at,
                redo_run: r.redo_run.clone(),
            });
        }
    }
    out.marks.sort_by_key(|l| l.at);
    out
}

/// Which window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    /// Since the land at this time (None: since the first run).
    Piece {
        after_land: Option<DateTime<Utc>>,
    },
    Run(String),
    Since(DateTime<Utc>),
}

#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub kind: Kind,
    /// None: from the beginning.
    pub start: Option<DateTime<Utc>>,
    /// None: until now.
    pub end: Option<DateTime<Utc>>,
    /// The runs that started in the window, oldest first.
    pub runs: Vec<RunWindow>,
}

impl Scope {
    pub(crate) fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| t >= s) && self.end.is_none_or(|e| t <= e)
    }

    /// The window reaches now (the state's present applies to it).
    pub(crate) fn current(&self) -> bool {
        self.end.is_none()
    }

    /// A heading for people: "Since the land at …", "Run …", "Since …".
    pub(crate) fn describe(&self) -> String {
        let runs = match self.runs.len() {
            0 => "no run".to_string(),
            1 => "1 run".to_string(),
            n => format!("{n} runs"),
        };
        match &self.kind {
            Kind::Piece { after_land: None } => {
                format!("This piece of work: since the first run ({runs})")
            }
            Kind::Piece {
                after_land: Some(t),
            } => format!(
                "This piece of work: since the land at {} ({runs})",
                t.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Kind::Run(id) => format!("Run {id}"),
            Kind::Since(t) => format!("Since {} ({runs})", t.format("%Y-%m-%d %H:%M:%S UTC")),
        }
    }
}

/// The runs that start in `[start, end]`.
fn runs_within(
    runs: &[RunWindow],
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
) -> Vec<RunWindow> {
    runs.iter()
        .filter(|r| start.is_none_or(|s| r.start >= s) && end.is_none_or(|e| r.start <= e))
        .cloned()
        .collect()
}

/// The piece of work: since the last land before the last run a person
/// started (not a `land --resolve` redo).
pub(crate) fn piece(runs: &[RunWindow], lands: &[LandMark]) -> Scope {
    let redo: HashSet<&str> = lands.iter().filter_map(|l| l.redo_run.as_deref()).collect();
    let last = runs.iter().rev().find(|r| !redo.contains(r.id.as_str()));
    let after_land = last.and_then(|r| lands.iter().rev().find(|l| l.at < r.start).map(|l| l.at));
    Scope {
        kind: Kind::Piece { after_land },
        start: after_land,
        end: None,
        runs: runs_within(runs, after_land, None),
    }
}

/// One run (None: no such run).
pub(crate) fn run(runs: &[RunWindow], id: &str) -> Option<Scope> {
    let r = runs.iter().find(|r| r.id == id)?;
    Some(Scope {
        kind: Kind::Run(id.to_string()),
        start: Some(r.start),
        end: r.end,
        runs: vec![r.clone()],
    })
}

/// Everything since `t`.
pub(crate) fn since(runs: &[RunWindow], t: DateTime<Utc>) -> Scope {
    Scope {
        kind: Kind::Since(t),
        start: Some(t),
        end: None,
        runs: runs_within(runs, Some(t), None),
    }
}

/// `--since`: a date (`2026-01-31`), a date and time (`2026-01-31 14:00`,
/// `2026-01-31T14:00:00Z`, UTC unless it says), or an age (`2d`, `12h`).
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(d.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    if let Ok(age) = crate::output::units::parse_age(t) {
        return Ok(now - chrono::Duration::from_std(age).unwrap_or_default());
    }
    Err(format!(
        "`{text}` is not a date: write 2026-01-31, \"2026-01-31 14:00\" (UTC), an RFC 3339 time, or an age such as 2d or 12h"
    ))
}

/// A task's attempts, its variants' included.
pub(crate) fn attempts(t: &TaskRecord) -> impl Iterator<Item = &Attempt> {
    t.attempts
        .iter()
        .chain(t.variants.iter().flat_map(|v| &v.attempts))
}

/// What a task did in a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sums {
    pub attempts: usize,
    /// Attempts before the window.
    pub earlier: usize,
    pub secs: f64,
    pub turns: u64,
    pub cost: f64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.attempts += o.attempts;
        self.earlier += o.earlier;
        self.secs += o.secs;
        self.turns += o.turns;
        self.cost = crate::output::units::sum_costs([self.cost, o.cost]);
    }
}

/// A task's sums in `scope` (attempts that started in it; a best-of task's
/// judge when it judged in it). Running attempts count up to `now`.
pub(crate) fn sums(t: &TaskRecord, scope: &Scope, now: DateTime<Utc>) -> Sums {
    let mut s = Sums::default();
    let mut costs = Vec::new();
    for a in attempts(t) {
        if !scope.contains(a.started_at) {
            if scope.start.is_some_and(|st| a.started_at < st) {
                s.earlier += 1;
            }
            continue;
        }
        s.attempts += 1;
        let end = a
            .ended_at
            .unwrap_or_else(|| scope.end.unwrap_or(now))
            .max(a.started_at);
        s.secs += (end - a.started_at).num_milliseconds() as f64 / 1000.0;
        s.turns += a.turns();
        costs.push(a.cost());
    }
    if let Some(j) = t.best_of.as_ref().and_then(|b| b.judgement.as_ref())
        && scope.contains(j.at)
    {
        costs.push(j.judge_cost_usd);
    }
    s.cost = crate::output::units::sum_costs(costs);
    s
}

/// The tasks a window shows, in the state's order, with their sums.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub tasks: Vec<(String, Sums)>,
    /// Where each id is in `tasks`.
    index: HashMap<String, usize>,
    /// Tasks left out: landed before the window, nothing in it.
    pub landed_before: usize,
    pub totals: Sums,
}

impl Summary {
    /// A summary of these tasks (no totals).
    #[cfg(test)]
    pub(crate) fn of(tasks: Vec<(String, Sums)>) -> Summary {
        let index = tasks
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect();
        Summary {
            tasks,
            index,
            ..Summary::default()
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Sums> {
        self.index
            .get(id)
            .and_then(|i| self.tasks.get(*i))
            .map(|(_, s)| s)
    }
}

/// Which tasks `scope` shows and what each did in it. `landed`: the ids
/// whose work is on the target, `landed_at`: when each last landed;
/// `named`: for a window that does not reach now, the tasks its events name.
pub(crate) fn summarize(
    state: &State,
    scope: &Scope,
    landed: &HashSet<String>,
    landed_at: &HashMap<String, DateTime<Utc>>,
    named: Option<&HashMap<String, &'static str>>,
    now: DateTime<Utc>,
) -> Summary {
    let mut out = Summary::default();
    for t in &state.tasks {
        let s = sums(t, scope, now);
        let shown = if s.attempts > 0 {
            true
        } else if scope.current() {
            let landed_earlier = landed.contains(&t.id)
                && scope
                    .start
                    .is_some_and(|start| landed_at.get(&t.id).is_none_or(|at| *at <= start));
            if landed_earlier {
                out.landed_before += 1;
            }
            !landed_earlier
        } else {
            named.is_some_and(|n| n.contains_key(&t.id))
        };
        if shown {
            out.totals.add(&s);
            out.index.insert(t.id.clone(), out.tasks.len());
            out.tasks.push((t.id.clone(), s));
        }
    }
    out
}

/// The tasks named by the events of a past window, and how each stood at
/// its end when no attempt says (`blocked` or `pending`).
pub(crate) fn named_in(path: &Path, scope: &Scope) -> HashMap<String, &'static str> {
    let mut out = HashMap::new();
    let Ok(f) = crate::fsat::read(path) else {
        return out;
    };
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        if !line.contains("\"task\"") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let Some(ts) = v
            .get("ts")
            .and_then(|t| t.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        if !scope.contains(ts.with_timezone(&Utc)) {
            continue;
        }
        let Some(task) = v.get("task").and_then(|t| t.as_str()) else {
            continue;
        };
        // A variant's events are its task's.
        let task = crate::tasks::split_variant_id(task).map_or(task, |(t, _)| t);
        let how = match v.get("event").and_then(|e| e.as_str()) {
            Some("blocked") => "blocked",
            Some("queued" | "requeued") => "pending",
            _ => "pending",
        };
        let e = out.entry(task.to_string()).or_insert(how);
        if how == "blocked" || *e != "blocked" {
            *e = how;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn run(id: &str, start: i64, end: i64) -> RunWindow {
        RunWindow {
            id: id.into(),
            start: at(start),
            end: Some(at(end)),
            interrupted: false,
        }
    }

    fn land(at_: i64, redo: Option<&str>) -> LandMark {
        LandMark {
            at: at(at_),
            redo_run: redo.map(str::to_string),
        }
    }

    #[test]
    fn a_piece_runs_from_the_land_before_the_last_run_a_person_started() {
        let runs = [
            run("r1", 0, 10),
            run("r2", 20, 30),
            run("r3", 40, 50),
            run("redo", 61, 70),
        ];
        // No land: everything.
        let p = piece(&runs, &[]);
        assert_eq!(p.start, None);
        assert_eq!(p.runs.len(), 4);
        // `land --resolve` at 60 redid its conflicts in `redo`, landed at
        // 71: the piece still holds r1..redo.
        let lands = [land(60, Some("redo")), land(71, None)];
        let p = piece(&runs, &lands);
        assert_eq!(p.kind, Kind::Piece { after_land: None });
        assert_eq!(p.runs.len(), 4);
        // A land at 35, then r3: the piece is r3 and after.
        let lands = [land(35, None), land(60, Some("redo")), land(71, None)];
        let p = piece(&runs, &lands);
        assert_eq!(p.start, Some(at(35)));
        let ids: Vec<&str> = p.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["r3", "redo"]);
        // After the last land, a new run opens a new piece.
        let mut more = runs.to_vec();
        more.push(run("r5", 80, 90));
        let p = piece(&more, &lands);
        assert_eq!(p.start, Some(at(71)));
        assert_eq!(p.runs.len(), 1);
        assert!(
            p.describe()
                .starts_with("This piece of work: since the land at")
        );
    }

    #[test]
    fn since_takes_dates_times_and_ages() {
        let now = at(100_000);
        assert_eq!(
            parse_since("2026-01-31", now).unwrap().to_rfc3339(),
            "2026-01-31T00:00:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-31 14:05", now).unwrap().to_rfc3339(),
            "2026-01-31T14:05:00+00:00"
        );
        assert_eq!(
            parse_since("2026-01-31T14:05:00+02:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-31T12:05:00+00:00"
        );
        assert_eq!(parse_since("2h", now).unwrap(), at(100_000 - 7200));
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("2026-01-31")
        );
    }
}
