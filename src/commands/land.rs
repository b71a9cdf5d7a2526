//! `flocks land`: list what would land, ask, land, summarize. The work is in
//! [`crate::land`].

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::LandArgs;
use crate::error::{Error, Exit, Result};
use crate::land::push::{self, Remote};
use crate::land::{self, LandLock, LandOptions};
use crate::notify::Notifiers;
use crate::project::Project;
use crate::service::push::Pushing;

pub(super) fn run(project: &Project, args: &LandArgs) -> Result<Exit> {
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
            if let Some(remote) = push_remote(project, args) {
                crate::outln!(
                    "Then {} is pushed to {remote} (under a lease: only while {remote}'s {} is where the land started).",
                    plan.target,
                    plan.target
                );
            }
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
    let started = chrono::Utc::now();
    let remote_name = push_remote(project, args);
    let target = project.config.workspace.land_target.clone();
    let remote = match &remote_name {
        Some(name) => Some(Remote::new(project.repo_dir(), name, &target)?),
        None => None,
    };
    let lease = match &remote {
        Some(r) => Some(push::prepare(project, r, &lock, say)?),
        None => None,
    };
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
        let exit = report.exit();
        return match (&remote, lease) {
            (Some(r), Some(lease)) => {
                let pushing = Pushing {
                    remote: r,
                    lease,
                    started,
                    opts: land_options(args),
                    ids: &args.ids,
                };
                pushing.run(project, report, &lock, notify, exit)
            }
            _ => Ok(exit),
        };
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
    let opts = land_options(args);
    let report = land::execute(project, &plan, &opts, &lock)?;
    crate::service::resolve::record_landed(project, &report, notify);
    let (report, exit) = match resolver {
        Some(r) => r.resolve(project, report, &opts, &lock, notify)?,
        None => (report, None),
    };
    crate::service::resolve::record_attention(project, &report, notify);
    crate::output::report(&report.render(project.repo_dir()));
    let exit = exit.unwrap_or_else(|| report.exit());
    match (&remote, lease) {
        (Some(r), Some(lease)) => {
            let pushing = Pushing {
                remote: r,
                lease,
                started,
                opts,
                ids: &args.ids,
            };
            pushing.run(project, report, &lock, notify, exit)
        }
        _ => Ok(exit),
    }
}

/// The remote to push to: `--push[=REMOTE]`, else `[land] push`; none with
/// `--no-push`.
fn push_remote(project: &Project, args: &LandArgs) -> Option<String> {
    if args.no_push {
        return None;
    }
    match args.push.as_deref() {
        Some("") => Some(
            project
                .config
                .land
                .push
                .clone()
                .unwrap_or_else(|| "origin".into()),
        ),
        Some(name) => Some(name.to_string()),
        None => project.config.land.push.clone(),
    }
}

fn land_options(args: &LandArgs) -> LandOptions {
    LandOptions {
        no_validate: args.no_validate,
        // A bisection validates many times: its output goes to its logs.
        echo: !args.bisect,
        bisect: args.bisect,
        progress: Some(say),
    }
}

/// Progress, one line at a time.
fn say(line: &str) {
    crate::output::report(&format!("{line}\n"));
}

fn undo(project: &Project, args: &LandArgs) -> Result<Exit> {
    let plan = land::plan_undo(project)?;
    if let Some(p) = &plan.pushed {
        if !args.force {
            return Err(Error::Usage(format!(
                "the last land of {} was pushed to {} ({}): undoing it here leaves {}/{} ahead of {}; \
                 pass --force to undo it here anyway ({} keeps it)",
                plan.target,
                p.remote,
                p.at.format("%Y-%m-%d %H:%M UTC"),
                p.remote,
                plan.target,
                plan.target,
                p.remote
            )));
        }
        crate::outln!(
            "That land was pushed to {}: {} keeps it; only {} here moves back.",
            p.remote,
            p.remote,
            plan.target
        );
    }
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
            for r in &plan.restore {
                crate::outln!(
                    "restored branch {} at {} (task {}): `flocks land` brings its work back",
                    r.branch,
                    &r.tip.to_string()[..10],
                    r.task
                );
            }
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
