//! `flocks logs <task>`: an attempt's output, rendered for people or raw,
//! optionally followed until the task ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use crate::cli::LogsArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::{ProjectLock, TaskStatus};

/// `flocks logs <task> --json`: the attempt's record instead of its output.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct LogsJson<'a> {
    pub task: &'a str,
    /// As in `status --json` (the state's own label).
    pub status: &'a str,
    /// How many attempts the task has had.
    pub attempts: usize,
    /// The attempt's log file.
    pub log: &'a std::path::Path,
    /// The commit the task's branch started from: its work is `origin..`
    /// its branch.
    pub origin: Option<String>,
    /// The attempt, as state.json keeps it (the last one, or `--attempt N`).
    pub attempt: &'a crate::state::Attempt,
}

pub(crate) fn run(project: &Project, args: &LogsArgs) -> Result<Exit> {
    let state = project.store.load()?;
    if args.judge {
        return judge_log(project, &state, args);
    }
    let Some(rec) = state.task(&args.task) else {
        let known: Vec<&str> = state.tasks.iter().map(|t| t.id.as_str()).take(10).collect();
        if known.is_empty() {
            return Err(Error::Usage(format!(
                "no task `{}` has run in this project yet, so there is no log: `flocks run` runs the tasks",
                args.task
            )));
        }
        return Err(Error::Usage(format!(
            "no task `{}` in {} (known: {}): `flocks status` lists the tasks",
            args.task,
            project.store.path().display(),
            known.join(", ")
        )));
    };
    let rec = match (args.variant, rec.variants.is_empty()) {
        (Some(_), true) => {
            return Err(Error::Usage(format!(
                "task `{}` has no variants (it is not a best-of task): drop --variant",
                rec.id
            )));
        }
        (Some(k), false) => rec.variant(k).ok_or_else(|| {
            Error::Usage(format!(
                "task `{}` has variants 1 to {}, not {k}",
                rec.id,
                rec.variants.len()
            ))
        })?,
        (None, false) => rec.winner().ok_or_else(|| {
            Error::Usage(format!(
                "task `{}` is a best-of task with no winner (yet): `flocks logs {} --variant K` shows variant K (1 to {})",
                rec.id,
                rec.id,
                rec.variants.len()
            ))
        })?,
        (None, true) => rec,
    };
    let attempt = match args.attempt {
        Some(n) => rec.attempts.iter().find(|a| a.number == n).ok_or_else(|| {
            Error::Usage(format!(
                "task `{}` has no attempt {n} (it has {})",
                rec.id,
                rec.attempts.len()
            ))
        })?,
        None => rec.attempts.last().ok_or_else(|| {
            Error::Usage(format!("task `{}` has not started yet: no log", rec.id))
        })?,
    };
    let path = project.log_path(&rec.id, attempt.number)?;
    if args.json {
        let value = LogsJson {
            task: &rec.id,
            status: rec.status.label(),
            attempts: rec.attempts.len(),
            log: &path,
            origin: rec.origin_commit(),
            attempt,
        };
        crate::outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(Exit::Ok);
    }
    let text = crate::fsat::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = if args.raw {
        text.lines().map(str::to_string).collect()
    } else {
        text.lines().flat_map(crate::logview::render_line).collect()
    };
    if let Some(n) = args.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = crate::output::stdout();
    for l in &lines {
        let _ = writeln!(out, "{}", paint(args.raw, l));
    }
    let _ = out.flush();
    if args.follow {
        follow(
            project,
            &rec.id,
            attempt.number,
            &path,
            text.len() as u64,
            args.raw,
        )?;
    }
    Ok(Exit::Ok)
}

/// Print what is appended to the log until the attempt is over.
fn follow(
    project: &Project,
    task: &str,
    attempt: u32,
    path: &std::path::Path,
    mut pos: u64,
    raw: bool,
) -> Result<()> {
    let mut partial = String::new();
    let mut idle_rounds = 0;
    loop {
        let mut grew = false;
        if let Ok(mut f) = crate::fsat::read(path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > pos && f.seek(SeekFrom::Start(pos)).is_ok() {
                let mut buf = Vec::new();
                let _ = f.take(len - pos).read_to_end(&mut buf);
                pos = len;
                grew = true;
                partial.push_str(&String::from_utf8_lossy(&buf));
                let mut out = crate::output::stdout();
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    let line = line.trim_end_matches('\n');
                    if raw {
                        let _ = writeln!(out, "{line}");
                    } else {
                        for l in crate::logview::render_line(line) {
                            let _ = writeln!(out, "{}", paint(false, &l));
                        }
                    }
                }
                let _ = out.flush();
            }
        }
        // Nobody reads any more (`flocks logs -f x | head`).
        if crate::output::closed() {
            return Ok(());
        }
        if !grew {
            let state = project.store.load()?;
            let running = state.task(task).is_some_and(
                |t| matches!(t.status, TaskStatus::Running { attempt: a, .. } if a == attempt),
            );
            let live = ProjectLock::holder(&project.state_dir()).is_some();
            if !running || !live {
                idle_rounds += 1;
                // A little grace for the last lines after the state changed.
                if idle_rounds > 2 {
                    return Ok(());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A rendered log line in colour; raw stream-json stays as it is.
fn paint(raw: bool, line: &str) -> String {
    if raw {
        line.to_string()
    } else {
        crate::output::paint_text(line).into_owned()
    }
}

/// `--judge`: the log of a best-of task's latest judge agent.
fn judge_log(project: &Project, state: &crate::state::State, args: &LogsArgs) -> Result<Exit> {
    let Some(rec) = state.task(&args.task).filter(|r| !r.variants.is_empty()) else {
        return Err(Error::Usage(format!(
            "no best-of task `{}` in the run state: `flocks status` lists the tasks",
            args.task
        )));
    };
    let judge = crate::tasks::judge_id(&rec.id);
    let dir = project.state_dir().join("logs").join(&judge);
    let latest = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log")?.parse::<u32>().ok()
        })
        .max()
        .ok_or_else(|| {
            Error::Usage(format!(
                "task `{}` has no judge log: a judge agent runs with `[best_of] judge = true` when two or more variants pass",
                rec.id
            ))
        })?;
    let path = project.log_path(&judge, args.attempt.unwrap_or(latest))?;
    let text = crate::fsat::read_to_string(&path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    let mut out = crate::output::stdout();
    for l in text.lines() {
        if args.raw {
            let _ = writeln!(out, "{}", paint(true, l));
        } else {
            for r in crate::logview::render_line(l) {
                let _ = writeln!(out, "{}", paint(false, &r));
            }
        }
    }
    let _ = out.flush();
    Ok(Exit::Ok)
}
