//! `flocks tasks [--status S] [--json]`: every task of the task file (and any
//! the state still knows) with its status, attempts, pool, dependencies and cost.

use crate::cli::TasksArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::{State, TaskRecord, TaskStatus};
use crate::tasks::TaskSet;
use std::path::Path;

/// Statuses `--status` accepts: a task's status label, or `new` (never run).
const STATUSES: &[&str] = &[
    "new",
    "pending",
    "running",
    "succeeded",
    "landed",
    "failed",
    "timed out",
    "stalled",
    "interrupted",
    "spawn failed",
    "rate limited",
    "overloaded",
    "credential rejected",
    "host lost",
    "blocked",
    "removed",
    "not queued",
];

/// `flocks tasks --json`.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TasksJson {
    pub tasks: Vec<Row>,
    /// What the listed tasks cost, summed.
    pub total_cost_usd: f64,
    /// Why a live run starts no new agent now (free disk below
    /// `min_free_disk_gb`); null otherwise.
    pub waiting: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Row {
    pub id: String,
    pub title: Option<String>,
    pub status: String,
    /// Why it is blocked or how its last attempt ended, when it did not succeed.
    pub detail: Option<String>,
    pub attempts: usize,
    pub pool: Option<String>,
    pub depends_on: Vec<String>,
    pub start_from: String,
    pub cost_usd: f64,
    /// The task is in the task file (false: only the state remembers it).
    pub in_task_file: bool,
    /// A best-of task's variants (as in `status --json`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<crate::view::VariantView>,
    /// How they were judged (as in state.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<crate::state::Judgement>,
}

pub(crate) fn run(project: &Project, args: &TasksArgs) -> Result<Exit> {
    project.repo()?;
    let wanted = match &args.status {
        Some(s) => Some(normalize(s)?),
        None => None,
    };
    // The state and the task file are independent: read them side by side.
    let (state, tasks) = std::thread::scope(|s| {
        let tasks = s.spawn(|| crate::service::load::load_tasks(project, &args.source));
        let state = project.store.load();
        (state, tasks.join())
    });
    let state = state?;
    let tasks = tasks.unwrap_or_else(|p| std::panic::resume_unwind(p));
    let tasks = match tasks {
        Ok(t) => Some(t),
        Err(e) if !state.tasks.is_empty() => {
            eprintln!("note: listing the tasks the state knows; the task file: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let landed = crate::land::landed_ids(project, &state);
    let live = crate::state::ProjectLock::holder(&project.state_dir()).is_some();
    let log_root = project.state_dir().join("logs");
    let rows: Vec<Row> = rows(tasks.as_ref(), &state, &log_root, live)
        .into_iter()
        .map(|mut r| {
            if landed.contains(&r.id) {
                r.status = crate::view::LANDED.into();
            } else if let Some(rec) = state.task(&r.id).filter(|t| t.removed && !r.in_task_file) {
                r.status = crate::view::REMOVED.into();
                r.detail = Some(crate::view::removed_detail(rec));
            } else if live
                && matches!(r.status.as_str(), "pending" | "interrupted")
                && state.task(&r.id).is_some_and(|t| t.not_in_run)
            {
                r.detail = Some(crate::view::not_queued_detail(&r.status));
                r.status = crate::view::NOT_QUEUED.into();
            }
            r
        })
        .filter(|r| wanted.as_deref().is_none_or(|w| r.status == w))
        .collect();
    // Why a live run starts nothing now (free disk below min_free_disk_gb).
    let waiting = state
        .run
        .as_ref()
        .and_then(|r| r.waiting.clone())
        .filter(|_| crate::state::ProjectLock::holder(&project.state_dir()).is_some());
    if args.json {
        let out = TasksJson {
            total_cost_usd: crate::output::units::sum_costs(rows.iter().map(|r| r.cost_usd)),
            tasks: rows,
            waiting,
        };
        crate::output::print_json(&out);
        crate::state::leave((state, tasks, out));
        return Ok(Exit::Ok);
    }
    if let Some(why) = waiting {
        crate::outln!("⏸ waiting: {why}; no new agent starts until space comes back");
    }
    crate::output::report(&render(&rows));
    crate::state::leave((state, tasks, rows));
    Ok(Exit::Ok)
}

fn normalize(s: &str) -> Result<String> {
    let s = s.trim().to_lowercase().replace(['-', '_'], " ");
    let s = match s.as_str() {
        "success" | "done" => "succeeded".to_string(),
        "timedout" => "timed out".to_string(),
        _ => s,
    };
    if STATUSES.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(Error::Usage(format!(
            "unknown status `{s}` for --status: use one of {}",
            STATUSES
                .iter()
                .map(|s| s.replace(' ', "-"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Task-file order, then tasks only the state knows.
pub(crate) fn rows(
    tasks: Option<&TaskSet>,
    state: &State,
    log_root: &Path,
    live: bool,
) -> Vec<Row> {
    let mut out = Vec::new();
    if let Some(set) = tasks {
        for t in &set.tasks {
            let mut row = match state.task(&t.id) {
                Some(rec) => from_record(rec, log_root, live),
                None => Row {
                    id: t.id.clone(),
                    title: None,
                    status: "new".into(),
                    detail: None,
                    attempts: 0,
                    pool: None,
                    depends_on: Vec::new(),
                    start_from: String::new(),
                    cost_usd: 0.0,
                    in_task_file: true,
                    variants: Vec::new(),
                    judgement: None,
                },
            };
            row.title = t.title.clone();
            row.depends_on = t.depends_on.clone();
            row.start_from = t.start_from.as_str().into();
            row.in_task_file = true;
            out.push(row);
        }
    }
    for rec in &state.tasks {
        if tasks.is_none_or(|set| set.get(&rec.id).is_none()) {
            let mut row = from_record(rec, log_root, live);
            row.in_task_file = false;
            out.push(row);
        }
    }
    out
}

fn from_record(rec: &TaskRecord, log_root: &Path, live: bool) -> Row {
    let (variants, running) = crate::view::variants_view(rec, log_root, live);
    let judgement = rec.best_of.as_ref().and_then(|b| b.judgement.clone());
    let detail = match &rec.status {
        TaskStatus::Blocked {
            reason: Some(why), ..
        } => Some(why.clone()),
        TaskStatus::Blocked { on, .. } => Some(format!("waits for {}", on.join(", "))),
        TaskStatus::Done { outcome } if !rec.status.is_success() => Some(match &rec.not_retried {
            Some(why) => format!("{}; not retried: {why}", outcome.describe()),
            None => outcome.describe(),
        }),
        _ => rec
            .conflict
            .as_ref()
            .map(|c| c.describe())
            .or_else(|| {
                rec.conflict_unknown
                    .then(|| "conflicts not predicted: `flocks land --dry-run`".to_string())
            })
            .or_else(|| judgement.as_ref().map(crate::view::judgement_line)),
    };
    Row {
        id: rec.id.clone(),
        title: rec.title.clone(),
        status: running.unwrap_or(rec.status.label()).into(),
        detail,
        attempts: crate::view::attempt_count(rec),
        pool: rec
            .last_attempt()
            .map(|a| a.pool.clone())
            .or_else(|| variants.iter().rev().find_map(|v| v.pool.clone())),
        depends_on: rec.depends_on.clone(),
        start_from: "base".into(),
        cost_usd: rec.cost(),
        in_task_file: false,
        variants,
        judgement,
    }
}

pub(crate) fn render(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if rows.is_empty() {
        s.push_str("no tasks\n");
        return s;
    }
    use crate::output::table::{Align, Table};
    let mut table = Table::new(
        "",
        &[
            ("task", Align::Left),
            ("status", Align::Left),
            ("attempts", Align::Right),
            ("pool", Align::Left),
            ("cost", Align::Right),
            ("after", Align::Left),
        ],
    );
    let mut details = Vec::new();
    for r in rows {
        let mut after = if r.depends_on.is_empty() {
            "-".to_string()
        } else {
            r.depends_on.join(", ")
        };
        if r.start_from == "dependencies" && !r.depends_on.is_empty() {
            after.push_str(" (starts from their work)");
        }
        if !r.in_task_file {
            after.push_str(" [not in the task file]");
        }
        table.styled_row(vec![
            (r.id.clone(), None),
            (
                r.status.clone(),
                Some(crate::output::paint::status_style(&r.status)),
            ),
            (r.attempts.to_string(), None),
            (r.pool.clone().unwrap_or_else(|| "-".into()), None),
            (crate::output::units::money(r.cost_usd), None),
            (after, None),
        ]);
        details.push(r.detail.clone());
    }
    // A failed or blocked task's reason goes on the line under it.
    let text = table.render();
    s.reserve(text.len());
    let mut lines = text.lines();
    if let Some(header) = lines.next() {
        let _ = writeln!(s, "{header}");
    }
    for (line, detail) in lines.zip(details) {
        let _ = writeln!(s, "{line}");
        if let Some(d) = detail {
            let _ = writeln!(s, "  └ {}", crate::agent::stream::one_line(&d, 100));
        }
    }
    let total = crate::output::units::sum_costs(rows.iter().map(|r| r.cost_usd));
    let _ = writeln!(
        s,
        "{}, {}",
        crate::output::units::count(rows.len(), "task"),
        crate::output::units::money(total)
    );
    s
}
