//! `flocks land --resolve` (called by `commands::land`): after a land, each task whose cherry-pick
//! conflicted gets a new attempt through the normal scheduler (any pool,
//! `--supervise` retries up to `max_retries`) that starts from the target as
//! it is now, with its prompt, its earlier diff and the conflicting files;
//! what it redoes is then landed the same way (validated, bisected if asked).
//!
//! ```text
//!  land ──> conflicted ──mark (project lock): backup ref, NextAttempt{fresh, base: target}──>
//!  service::run::execute (dispatcher) ──> succeeded ──> land those (and their dependents) ──> one report
//! ```

use std::collections::{HashMap, HashSet};

use super::load;
use super::run::{Redo as RedoMark, Requeue, RunRequest, execute};
use crate::cli::TaskSource;
use crate::error::{Error, Exit, Result};
use crate::land::{self, LandLock, LandOptions, Report, TaskOutcome};
use crate::notify::Notifiers;
use crate::project::Project;
use crate::prompt::Template;
use crate::report::{AttentionCause, Event};
use crate::runner::RunOptions;
use crate::tasks::TaskSet;

/// Ready to redo conflicted tasks: the task list and template are loaded and
/// the project lock was free.
pub(crate) struct Resolver {
    tasks: TaskSet,
    template: Option<Template>,
}

/// One task to redo.
struct Redo {
    id: String,
    /// Its last attempt before the redo.
    before: u32,
    context: String,
    backup: String,
}

impl Resolver {
    /// Load the tasks and check the project lock (exit 5 when a run holds it).
    pub(crate) fn new(project: &Project, source: &TaskSource) -> Result<Resolver> {
        let (tasks, template) = load::load(project, source)?;
        drop(project.lock("land --resolve").map_err(lock_error)?);
        Ok(Resolver { tasks, template })
    }

    /// Redo what conflicted in `report` and land it; returns the report of
    /// both lands, and an exit code when the dispatch decides it.
    pub(crate) fn resolve(
        self,
        project: &Project,
        mut report: Report,
        opts: &LandOptions,
        lock: &LandLock,
        notify: &Notifiers,
    ) -> Result<(Report, Option<Exit>)> {
        let conflicted: Vec<usize> = (0..report.tasks.len())
            .filter(|&i| matches!(report.tasks[i].outcome, TaskOutcome::Conflicted { .. }))
            .collect();
        if conflicted.is_empty() {
            return Ok((report, None));
        }
        if report.stopped.is_some() || report.validation.failed() {
            for &i in &conflicted {
                report.tasks[i].note =
                    Some("not redone: the land stopped first (see below)".into());
            }
            return Ok((report, None));
        }
        let (redos, onto) = self.redos(project, &mut report, &conflicted)?;
        if redos.is_empty() {
            return Ok((report, None));
        }
        let ids: Vec<&str> = redos.iter().map(|r| r.id.as_str()).collect();
        say(&format!(
            "resolve: redoing {} from {} at {}: {}",
            crate::output::units::count(redos.len(), "conflicted task"),
            report.target,
            &onto.to_string()[..10],
            ids.join(", ")
        ));
        let dispatched = self.dispatch(project, &redos, onto);
        if dispatched.is_ok() {
            mark_redo_run(project, &report, lock);
        }
        let interrupted = match dispatched {
            Ok(interrupted) => interrupted,
            Err(e) => {
                let e = lock_error(e);
                for r in &redos {
                    note(&mut report, &r.id, format!("not redone: {e}"));
                }
                return Ok((report, Some(e.exit())));
            }
        };

        // Which redos succeeded.
        let state = project.store.load()?;
        let redone = redone(&state, &redos, &mut report);
        if interrupted {
            for id in redone.keys() {
                note(
                    &mut report,
                    id,
                    "redone, but not landed: interrupted (run flocks land)".into(),
                );
            }
            return Ok((report, Some(Exit::Interrupted)));
        }
        if redone.is_empty() {
            return Ok((report, None));
        }

        // Land the redone tasks, and those of the first land that waited for them.
        let ids = to_land(&report, &state, &redone);
        say(&format!("resolve: landing {}", ids.join(", ")));
        let plan = land::plan(project, &ids)?;
        let second = land::execute(project, &plan, opts, lock)?;
        record_landed(project, &second, notify);
        merge(&mut report, second, &redone);
        Ok((report, None))
    }

    /// A redo for each conflicted task still in the task list, from the
    /// target's tip (returned with them); the others get a note.
    fn redos(
        &self,
        project: &Project,
        report: &mut Report,
        conflicted: &[usize],
    ) -> Result<(Vec<Redo>, git2::Oid)> {
        let repo = crate::git::open(project.repo_dir())?;
        let target = report.target.clone();
        let onto = crate::git::branch_tip(&repo, &target)?
            .ok_or_else(|| Error::BranchGone(target.clone()))?;
        let state = project.store.load()?;
        let mut redos = Vec::new();
        for &i in conflicted {
            let t = &report.tasks[i];
            if self.tasks.get(&t.id).is_none() {
                report.tasks[i].note = Some(format!(
                    "not redone: it is not in {} any more",
                    self.tasks.source.display()
                ));
                continue;
            }
            let before = state
                .task(&t.id)
                .and_then(|r| r.last_attempt())
                .map(|a| a.number)
                .unwrap_or(0);
            let backup = land::resolve::backup_ref(&t.id, before);
            let context = land::resolve::context(&repo, t, &target, onto, Some(&backup))?;
            redos.push(Redo {
                id: t.id.clone(),
                before,
                context,
                backup,
            });
        }
        Ok((redos, onto))
    }

    /// Dispatch the redos, with retries as --supervise does them; whether
    /// the run was interrupted.
    fn dispatch(self, project: &Project, redos: &[Redo], onto: git2::Oid) -> Result<bool> {
        let scope: HashSet<String> = redos.iter().map(|r| r.id.clone()).collect();
        let run_opts = RunOptions {
            supervise: true,
            max_retries: project.config.max_retries,
            no_wait: false,
            // Bars on a terminal, plain lines otherwise, as `run` does.
            progress: true,
        };
        let requeue = Requeue::Redo {
            onto,
            tasks: redos
                .iter()
                .map(|r| RedoMark {
                    id: r.id.clone(),
                    before: r.before,
                    context: r.context.clone(),
                })
                .collect(),
        };
        execute(
            Project::from_config(project.config.clone()),
            RunRequest {
                tasks: self.tasks,
                template: self.template,
                scope: Some(scope),
                opts: run_opts,
                command: "land --resolve",
                requeue,
            },
        )
        .map(|finished| {
            finished.print();
            finished.interrupted
        })
    }
}

/// The redos that succeeded (their attempt numbers); the others get a note
/// saying what to do.
fn redone(
    state: &crate::state::State,
    redos: &[Redo],
    report: &mut Report,
) -> HashMap<String, u32> {
    let mut redone: HashMap<String, u32> = HashMap::new();
    for r in redos {
        let rec = state.task(&r.id);
        match rec.and_then(|rec| rec.successful_attempt()) {
            Some(a) if a.number > r.before => {
                redone.insert(r.id.clone(), a.number);
            }
            _ => {
                let last = rec.and_then(|rec| rec.last_attempt());
                let how = match last.filter(|a| a.number > r.before) {
                    Some(a) => format!(
                        "attempt {} {}",
                        a.number,
                        a.outcome
                            .as_ref()
                            .map(|o| o.describe())
                            .unwrap_or_else(|| "did not end".into())
                    ),
                    None => "no new attempt ran".into(),
                };
                note(
                    report,
                    &r.id,
                    format!(
                        "the redo did not succeed ({how}): see `{}`; try again with \
                         `{}`, then `{}`; its earlier work is kept as {}",
                        crate::suggest::command(&["flocks", "logs", &r.id]),
                        crate::suggest::command(&["flocks", "retry", &r.id]),
                        crate::suggest::command(&["flocks", "land", &r.id]),
                        r.backup
                    ),
                );
            }
        }
    }
    redone
}

/// The redone tasks, and those of the first land refused while they waited
/// for them.
fn to_land(
    report: &Report,
    state: &crate::state::State,
    redone: &HashMap<String, u32>,
) -> Vec<String> {
    let mut ids: Vec<String> = redone.keys().cloned().collect();
    loop {
        let before = ids.len();
        for t in &report.tasks {
            let waits = matches!(t.outcome, TaskOutcome::Refused { .. })
                && state
                    .task(&t.id)
                    .is_some_and(|r| r.depends_on.iter().any(|d| ids.contains(d)));
            if waits && !ids.contains(&t.id) {
                ids.push(t.id.clone());
            }
        }
        if ids.len() == before {
            break;
        }
    }
    ids
}

/// Record in land.json that the run just dispatched redid the conflicts
/// of the land in `report` (when that land moved the target): reports
/// count that run with the work the land concluded. Best effort: a failure
/// only makes reports start a new piece of work at it.
fn mark_redo_run(project: &Project, report: &Report, lock: &LandLock) {
    if !report.moved {
        return;
    }
    let Some(run) = project.store.load().ok().and_then(|s| s.run).map(|r| r.id) else {
        return;
    };
    let Ok(mut log) = land::LandLog::load(&project.state_dir()) else {
        return;
    };
    let tip = report.new_tip.to_string();
    if let Some(r) = log
        .lands
        .iter_mut()
        .rev()
        .find(|r| r.target == report.target && r.new_tip == tip)
    {
        r.redo_run = Some(run);
        let _ = log.save(&project.state_dir(), lock);
    }
}

/// A `landed` line in events.jsonl (and to the notifiers) for each task
/// whose work reached the target.
pub(crate) fn record_landed(project: &Project, report: &land::Report, notify: &Notifiers) {
    if !report.moved {
        return;
    }
    for t in &report.tasks {
        if let land::TaskOutcome::Landed { commits, .. } = t.outcome {
            record(
                project,
                notify,
                Event::Landed {
                    task: t.id.clone(),
                    commits,
                    target: report.target.clone(),
                },
            );
        }
    }
}

/// A `needs_attention` line in events.jsonl (and to the notifiers) for each
/// task the land left out because it conflicts or breaks validation, or for
/// a validation that failed without a culprit: the final report, after
/// `--resolve`.
pub(crate) fn record_attention(project: &Project, report: &land::Report, notify: &Notifiers) {
    let target = &report.target;
    let mut culprits = 0;
    for t in &report.tasks {
        let (cause, message) = match &t.outcome {
            TaskOutcome::Conflicted { files, .. } => (
                AttentionCause::LandConflict,
                format!(
                    "land: task {} conflicts with {target} ({}) and was not landed: `{}` has an agent redo it on {target}",
                    t.id,
                    files.join(", "),
                    crate::suggest::command(&["flocks", "land", "--resolve", &t.id]),
                ),
            ),
            TaskOutcome::Culprit { failure, log, .. } => {
                culprits += 1;
                let why = match failure {
                    land::Validation::Failed { command, reason } => {
                        format!("`{command}` {reason}")
                    }
                    other => format!("{other:?}"),
                };
                (
                    AttentionCause::LandCulprit,
                    format!(
                        "land: task {} breaks validation on {target} ({why}) and was left out: see {}",
                        t.id,
                        log.display()
                    ),
                )
            }
            _ => continue,
        };
        record(
            project,
            notify,
            Event::NeedsAttention {
                cause,
                message,
                task: Some(t.id.clone()),
                credential: None,
            },
        );
    }
    if culprits == 0
        && let land::Validation::Failed { command, reason } = &report.validation
    {
        let mut message =
            format!("land onto {target} stopped: validation `{command}` {reason}; nothing landed");
        if let Some(log) = &report.log {
            message.push_str(&format!(": see {}", log.display()));
        }
        message.push_str(" (`flocks land --bisect` finds the task that breaks it)");
        record(
            project,
            notify,
            Event::NeedsAttention {
                cause: AttentionCause::LandValidationFailed,
                message,
                task: None,
                credential: None,
            },
        );
    }
}

/// One event of `flocks land`: to events.jsonl, then to the notifiers.
fn record(project: &Project, notify: &Notifiers, event: Event) {
    if let Err(e) = crate::report::jsonl::append_event(&project.events_path(), &event) {
        eprintln!(
            "note: could not write {}: {e}",
            project.events_path().display()
        );
    }
    notify.send(&event);
}

/// Fold the land of the redone tasks into the first land's report.
fn merge(report: &mut Report, second: Report, redone: &HashMap<String, u32>) {
    for t in second.tasks {
        let Some(into) = report.tasks.iter_mut().find(|r| r.id == t.id) else {
            report.tasks.push(t);
            continue;
        };
        let attempt = redone.get(&t.id).copied();
        into.start = t.start;
        into.tip = t.tip;
        into.outcome = match (t.outcome, attempt) {
            (TaskOutcome::Landed { commits, .. }, Some(attempt)) if second.moved => {
                TaskOutcome::Resolved { attempt, commits }
            }
            (outcome, Some(attempt)) => {
                into.note = Some(format!(
                    "redone in attempt {attempt}, which did not land either"
                ));
                outcome
            }
            (outcome, None) => outcome,
        };
    }
    report.rounds.extend(second.rounds);
    if second.moved {
        if !report.moved {
            report.old_tip = second.old_tip;
        }
        report.moved = true;
        report.lands += 1;
        report.new_tip = second.new_tip;
        report.checkout = second.checkout;
    }
    if second.validation != land::Validation::NotNeeded {
        report.validation = second.validation;
        report.log = second.log;
    }
    if second.stopped.is_some() {
        report.stopped = second.stopped;
    }
}

fn note(report: &mut Report, id: &str, text: String) {
    if let Some(t) = report.tasks.iter_mut().find(|t| t.id == id) {
        t.note = Some(text);
    }
}

/// Say why the project lock matters here.
fn lock_error(e: Error) -> Error {
    match e {
        Error::CannotStart(m) => Error::CannotStart(format!(
            "{m}; land --resolve dispatches agents, so it needs that lock (or land without --resolve)"
        )),
        e => e,
    }
}

fn say(line: &str) {
    crate::output::report(&format!("{line}\n"));
}
