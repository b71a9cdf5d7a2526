//! `flocks land`: list what would land, ask, land, summarize. The work is in
//! [`crate::land`].

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::LandArgs;
use crate::error::{Error, Exit, Result};
use crate::land::push::{self, Pushed, Remote};
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
                };
                pushing.run(project, args, report, &lock, notify, exit)
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
            };
            pushing.run(project, args, report, &lock, notify, exit)
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

/// How many times the land is built again on a remote that moved before
/// flocks gives up.
const PUSH_ROUNDS: usize = 3;

/// After the land: the push, landing again on the remote when it moved, and
/// `[land] after_push`.
struct Pushing<'a> {
    remote: &'a Remote<'a>,
    lease: push::Lease,
    started: chrono::DateTime<chrono::Utc>,
    opts: LandOptions,
}

impl Pushing<'_> {
    fn run(
        mut self,
        project: &Project,
        args: &LandArgs,
        mut report: land::Report,
        lock: &LandLock,
        notify: &Notifiers,
        mut exit: Exit,
    ) -> Result<Exit> {
        let remote = self.remote;
        let label = remote.label();
        let repo = crate::git::open(project.repo_dir())?;
        for round in 1..=PUSH_ROUNDS {
            if report.stopped.is_some() || report.validation.failed() {
                say(&format!(
                    "Not pushed to {}: the land stopped before {} moved.",
                    remote.name, remote.branch
                ));
                return Ok(exit);
            }
            let tip = crate::git::branch_tip(&repo, remote.branch)?
                .ok_or_else(|| Error::Other(format!("{} is gone", remote.branch)))?;
            if Some(tip) == self.lease.expected {
                say(&format!(
                    "{label} is at {} already: nothing to push.",
                    short(tip)
                ));
                return Ok(exit);
            }
            match remote.push(tip, self.lease.expected)? {
                Pushed::Done => {
                    push::record_pushed(project, remote, tip, lock)?;
                    say(&format!(
                        "Pushed {} ({}) to {}.",
                        remote.branch,
                        short(tip),
                        remote.name
                    ));
                    return self.after_push(project, tip, exit);
                }
                Pushed::Moved { now } => {
                    if round == PUSH_ROUNDS {
                        return Err(Error::LandStopped(format!(
                            "{label} moved again while flocks landed on it ({PUSH_ROUNDS} times);                              {} landed here only, not pushed: run flocks land --push again",
                            remote.branch
                        )));
                    }
                    say(&format!(
                        "{label} moved while flocks landed (was {}, now {}): fetched it; planning the land again on top of it.",
                        self.lease
                            .expected
                            .map(short)
                            .unwrap_or_else(|| "absent".into()),
                        now.map(short).unwrap_or_else(|| "deleted".into())
                    ));
                    let before: Vec<String> = landed_ids(&report);
                    self.lease =
                        push::rebase_onto(project, remote, &self.lease, now, self.started, lock)?;
                    let plan = land::plan(project, &args.ids)?;
                    crate::output::report(&plan.render());
                    report = land::execute(project, &plan, &self.opts, lock)?;
                    // Each task says "landed" once, however many times it was built.
                    let mut fresh = report.clone();
                    fresh.tasks.retain(|t| !before.contains(&t.id));
                    crate::service::resolve::record_landed(project, &fresh, notify);
                    crate::service::resolve::record_attention(project, &report, notify);
                    crate::output::report(&report.render(project.repo_dir()));
                    exit = report.exit();
                }
            }
        }
        Ok(exit)
    }

    /// `[land] after_push`; its failure is exit 4, and the push stands.
    fn after_push(&self, project: &Project, tip: git2::Oid, exit: Exit) -> Result<Exit> {
        if project.config.land.after_push.is_empty() {
            return Ok(exit);
        }
        let (outcome, log) = push::after_push(project, self.remote, tip)?;
        match outcome {
            land::Validation::Passed => {
                say("after_push passed.");
                Ok(exit)
            }
            land::Validation::Failed { command, reason } => Err(Error::LandStopped(format!(
                "after_push `{command}` failed ({reason}); the push stands: {} is at {} (log: {})",
                self.remote.label(),
                short(tip),
                log.display()
            ))),
            land::Validation::Interrupted { command } => {
                eprintln!(
                    "after_push `{command}` was interrupted; the push stands: {} is at {}",
                    self.remote.label(),
                    short(tip)
                );
                Ok(Exit::Interrupted)
            }
            _ => Ok(exit),
        }
    }
}

/// The tasks a land report landed (or found landed).
fn landed_ids(report: &land::Report) -> Vec<String> {
    report
        .tasks
        .iter()
        .filter(|t| {
            matches!(
                t.outcome,
                land::TaskOutcome::Landed { .. } | land::TaskOutcome::Resolved { .. }
            )
        })
        .map(|t| t.id.clone())
        .collect()
}

fn short(o: git2::Oid) -> String {
    o.to_string()[..10].to_string()
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
