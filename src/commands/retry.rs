//! `flocks retry`: run failed, timed-out, stalled or interrupted tasks again,
//! with what the last attempt learned.

use std::collections::HashSet;

use crate::cli::RetryArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::runner::RunOptions;
use crate::state::{Outcome, State, TaskStatus};
use crate::tasks::TaskSet;

pub fn run(project: Project, args: &RetryArgs) -> Result<Exit> {
    project.repo()?;
    if args.ids.is_empty() && !args.all_failed {
        return Err(Error::Usage(
            "name the tasks to retry (`flocks retry <id>...`) or pass --all-failed".into(),
        ));
    }
    let tasks = super::run::load_tasks(&project, &args.source)?;
    let template = super::run::load_template(&project.config, &tasks)?;
    let state = project.store.load()?;
    let chosen = choose(&project, &state, &tasks, args)?;
    if chosen.is_empty() {
        crate::outln!("nothing to retry: no task failed, timed out, stalled or was interrupted");
        return Ok(Exit::Ok);
    }
    // The retried tasks and everything that depends on them.
    let mut scope: HashSet<String> = chosen.iter().cloned().collect();
    loop {
        let before = scope.len();
        for t in &tasks.tasks {
            if t.depends_on.iter().any(|d| scope.contains(d)) {
                scope.insert(t.id.clone());
            }
        }
        if scope.len() == before {
            break;
        }
    }
    let opts = RunOptions {
        supervise: args.supervise,
        max_retries: project.config.max_retries,
        no_wait: args.no_wait,
        progress: !args.no_progress,
    };
    let config = project.config.clone();
    let fresh = args.fresh;
    execute_retry(project, tasks, template, scope, opts, chosen, fresh, config)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one retry, passed once"
)]
fn execute_retry(
    project: Project,
    tasks: TaskSet,
    template: Option<crate::prompt::Template>,
    scope: HashSet<String>,
    opts: RunOptions,
    chosen: Vec<String>,
    fresh: bool,
    config: crate::config::Config,
) -> Result<Exit> {
    let log_root = project.state_dir().join("logs");
    super::run::execute(
        project,
        tasks,
        template,
        Some(scope),
        opts,
        "retry",
        move |state, _| {
            for id in &chosen {
                let Some(rec) = state.task_mut(id) else {
                    continue;
                };
                let last = rec.last_attempt().map(|a| a.number).unwrap_or(0);
                let mut next = crate::retry::next_after_failure(rec, last, &config, &log_root);
                if fresh {
                    backup_and_reset(&config, &rec.branch, id, last)?;
                    next.fresh = true;
                    next.resume_session = None;
                    next.context = None;
                }
                rec.next = Some(next);
                rec.requeues = 0;
                if rec.status != TaskStatus::Pending {
                    rec.transition(TaskStatus::Pending)
                        .map_err(|e| crate::error::Error::Other(e.to_string()))?;
                }
            }
            Ok(())
        },
    )
}

/// Which tasks a retry runs; an error names a task that cannot be retried.
fn choose(
    project: &Project,
    state: &State,
    tasks: &TaskSet,
    args: &RetryArgs,
) -> Result<Vec<String>> {
    let repo = crate::git::open(project.repo_dir())?;
    // A succeeded task whose branch was rewritten under its origin cannot
    // land: `land` tells the user to redo it with `--fresh`, which needs no
    // `--force` then.
    let rewritten = |rec: &crate::state::TaskRecord| {
        matches!(
            crate::land::task_range(&repo, rec),
            Err(crate::land::NoRange::Rewritten { .. })
        )
    };
    let retryable = |rec: &crate::state::TaskRecord| match &rec.status {
        TaskStatus::Done {
            outcome: Outcome::Success,
        } => args.force || (args.fresh && rewritten(rec)),
        TaskStatus::Done { .. } => true,
        TaskStatus::Pending | TaskStatus::Blocked { .. } | TaskStatus::Running { .. } => false,
    };
    if args.all_failed {
        return Ok(state
            .tasks
            .iter()
            .filter(|t| tasks.get(&t.id).is_some())
            .filter(|t| matches!(&t.status, TaskStatus::Done { outcome } if *outcome != Outcome::Success))
            .map(|t| t.id.clone())
            .collect());
    }
    let mut out = Vec::new();
    for id in &args.ids {
        if tasks.get(id).is_none() {
            return Err(Error::Usage(format!(
                "no task `{id}` in {}: `flocks tasks` lists the tasks",
                tasks.source.display()
            )));
        }
        let Some(rec) = state.task(id) else {
            return Err(Error::Usage(format!(
                "task `{id}` has not run yet: `flocks run` runs it"
            )));
        };
        if !retryable(rec) {
            let hint = match rec.status {
                TaskStatus::Done {
                    outcome: Outcome::Success,
                } => " (pass --force to run a succeeded task again)",
                TaskStatus::Running { .. } => " (it is running)",
                _ => "",
            };
            return Err(Error::Usage(format!(
                "task `{id}` is {}{hint}",
                rec.status.label()
            )));
        }
        out.push(id.clone());
    }
    Ok(out)
}

/// `--fresh`: keep the old tip under refs/flocks/backup/<id>/<attempt>, then the
/// branch starts over from the base when the next attempt prepares it.
fn backup_and_reset(
    config: &crate::config::Config,
    branch: &str,
    id: &str,
    attempt: u32,
) -> Result<()> {
    let repo = crate::git::open(&config.workspace.repo)?;
    if let Some(tip) = crate::git::branch_tip(&repo, branch)? {
        let name = format!("refs/flocks/backup/{id}/{attempt}");
        repo.reference(&name, tip, true, "flocks: backup before retry --fresh")
            .map_err(|e| Error::Other(format!("cannot back up {branch}: {}", e.message())))?;
        crate::outln!(
            "{branch} was at {} (kept as {name}); the retry starts it over from its start \
             ({} or, for start_from = \"dependencies\", its dependencies' work)",
            &tip.to_string()[..10],
            config.workspace.base
        );
    }
    Ok(())
}
