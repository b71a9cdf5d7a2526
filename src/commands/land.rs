//! `flocks land`: list what would land, ask, land, summarize. The work is in
//! [`crate::land`].

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::LandArgs;
use crate::error::{Error, Exit, Result};
use crate::land::{self, LandLock, LandOptions};
use crate::notify::Notifiers;
use crate::project::Project;

pub fn run(project: &Project, args: &LandArgs) -> Result<Exit> {
    if args.source.tasks.is_some() && !args.resolve {
        return Err(crate::error::Error::Usage(
            "--tasks only matters with --resolve (it names the task file of the tasks to redo)"
                .into(),
        ));
    }
    // Outside a repository, say so before a lock creates `.flocks/`.
    project.repo()?;
    if args.undo {
        return undo(project, args);
    }
    if args.dry_run {
        let mut plan = land::plan(project, &args.ids)?;
        // What the cherry-picks will meet, in memory (nothing is written).
        land::predict_conflicts(project.repo_dir(), &mut plan)?;
        if args.json {
            let text = serde_json::to_string_pretty(&plan.to_json())
                .map_err(|e| Error::Other(e.to_string()))?;
            crate::outln!("{text}");
        } else {
            crate::output::report(&plan.render());
        }
        return Ok(Exit::Ok);
    }

    // Notifiers start before anything lands (a header variable that is not
    // set is a config error).
    let mut notify = crate::notify::Notifiers::start(&project.config)?;
    let result = land(project, args, &notify);
    notify.finish();
    for message in notify.take_notices() {
        eprintln!("note: {message}");
        let event = crate::report::Event::Notice { message };
        // Said on stderr already; the events file is a copy.
        let _ = crate::report::jsonl::append_event(&project.events_path(), &event);
    }
    result
}

/// Land (after `--dry-run` and `--undo` are out of the way).
fn land(project: &Project, args: &LandArgs, notify: &Notifiers) -> Result<Exit> {
    // --resolve dispatches agents: check that it can, before landing anything.
    let resolver = if args.resolve {
        Some(crate::service::resolve::Resolver::new(
            project,
            &args.source,
        )?)
    } else {
        None
    };
    let lock = LandLock::acquire(&project.state_dir())?;
    let plan = land::plan(project, &args.ids)?;
    // A dirty checkout of the target is refused once, before the task list.
    if plan.has_work()
        && let Some(wt) = &plan.checkout
        && !plan.dirty.is_empty()
    {
        return Err(Error::LandStopped(land::dirty_message(
            &plan.target,
            wt,
            &plan.dirty,
        )));
    }
    crate::output::report(&plan.render());
    if !plan.has_work() {
        // Nothing to cherry-pick: no question to ask.
        let report = land::execute(project, &plan, &LandOptions::default(), &lock)?;
        crate::service::resolve::record_landed(project, &report, notify);
        crate::output::report(&report.render(project.repo_dir()));
        return Ok(report.exit());
    }
    let question = if args.resolve {
        format!(
            "Land onto {} (and redo conflicting tasks with agents)?",
            plan.target
        )
    } else {
        format!("Land onto {}?", plan.target)
    };
    if !args.yes && !confirm(&question, "pass -y to land without asking")? {
        crate::outln!("Nothing was changed.");
        return Ok(Exit::Ok);
    }
    let opts = LandOptions {
        no_validate: args.no_validate,
        // A bisection validates many times: its output goes to its logs.
        echo: !args.bisect,
        bisect: args.bisect,
        progress: Some(say),
    };
    let report = land::execute(project, &plan, &opts, &lock)?;
    crate::service::resolve::record_landed(project, &report, notify);
    let (report, exit) = match resolver {
        Some(r) => r.resolve(project, report, &opts, &lock, notify)?,
        None => (report, None),
    };
    crate::service::resolve::record_attention(project, &report, notify);
    crate::output::report(&report.render(project.repo_dir()));
    Ok(exit.unwrap_or_else(|| report.exit()))
}

/// Progress, one line at a time.
fn say(line: &str) {
    crate::output::report(&format!("{line}\n"));
}

fn undo(project: &Project, args: &LandArgs) -> Result<Exit> {
    let plan = land::plan_undo(project)?;
    if !args.dry_run
        && let Some(wt) = &plan.checkout
        && !plan.dirty.is_empty()
    {
        return Err(Error::LandStopped(land::dirty_message(
            &plan.target,
            wt,
            &plan.dirty,
        )));
    }
    crate::output::report(&plan.render());
    if args.dry_run {
        return Ok(Exit::Ok);
    }
    let lock = LandLock::acquire(&project.state_dir())?;
    if !args.yes && !confirm("Undo it?", "pass -y to undo the last land without asking")? {
        crate::outln!("Nothing was changed.");
        return Ok(Exit::Ok);
    }
    match land::undo(project, &plan, &lock)? {
        Ok(()) => {
            crate::outln!("{} is back at {}.", plan.target, plan.to);
            Ok(Exit::Ok)
        }
        Err(stop) => {
            eprintln!("Undo stopped: {stop}");
            Ok(Exit::LandStopped)
        }
    }
}

/// Ask on the terminal; without one, refuse and say what to pass (`hint`).
fn confirm(question: &str, hint: &str) -> Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "stdin is not a terminal, so flocks cannot ask \"{question}\": {hint}"
        )));
    }
    crate::out!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::Io {
            context: "read the answer".into(),
            source: e,
        })?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
