//! `flocks logs <task>`: an attempt's output, rendered for people or raw,
//! optionally followed until the task ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use serde_json::json;

use crate::cli::LogsArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::{ProjectLock, TaskStatus};

pub fn run(project: &Project, args: &LogsArgs) -> Result<Exit> {
    let state = project.store.load()?;
    let Some(rec) = state.task(&args.task) else {
        let known: Vec<&str> = state.tasks.iter().map(|t| t.id.as_str()).take(10).collect();
        return Err(Error::Usage(format!(
            "no task `{}` in {} (known: {})",
            args.task,
            project.store.path().display(),
            if known.is_empty() {
                "none yet".into()
            } else {
                known.join(", ")
            }
        )));
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
    let path = project.log_path(&rec.id, attempt.number);
    if args.json {
        let value = json!({
            "task": rec.id,
            "attempt": attempt,
            "attempts": rec.attempts.len(),
            "status": rec.status.label(),
            "log": path,
            "origin": rec.origin_commit(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(Exit::Ok);
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let mut lines: Vec<String> = if args.raw {
        text.lines().map(str::to_string).collect()
    } else {
        text.lines().flat_map(crate::logview::render_line).collect()
    };
    if let Some(n) = args.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = std::io::stdout().lock();
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
    drop(out);
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
        if let Ok(mut f) = std::fs::File::open(path) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            if len > pos && f.seek(SeekFrom::Start(pos)).is_ok() {
                let mut buf = Vec::new();
                let _ = f.take(len - pos).read_to_end(&mut buf);
                pos = len;
                grew = true;
                partial.push_str(&String::from_utf8_lossy(&buf));
                let mut out = std::io::stdout().lock();
                while let Some(i) = partial.find('\n') {
                    let line: String = partial.drain(..=i).collect();
                    let line = line.trim_end_matches('\n');
                    if raw {
                        let _ = writeln!(out, "{line}");
                    } else {
                        for l in crate::logview::render_line(line) {
                            let _ = writeln!(out, "{l}");
                        }
                    }
                }
                let _ = out.flush();
            }
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
