//! `flocks retry`: run failed, timed-out, stalled or interrupted tasks again,
//! with what the last attempt learned (the run service queues them).

use std::collections::HashSet;

use crate::cli::RetryArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::runner::RunOptions;
use crate::service::load;
use crate::service::run::{Requeue, RunRequest, execute};
use crate::state::{Outcome, State, TaskStatus};
use crate::tasks::TaskSet;

pub(super) fn run(project: Project, args: &RetryArgs) -> Result<Exit> {
    project.repo()?;
    if args.ids.is_empty() && !args.all_failed {
        return Err(Error::Usage(
            "name the tasks to retry (`flocks retry <id>...`) or pass --all-failed".into(),
        ));
    }
    let (tasks, template) = load::load(&project, &args.source)?;
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
    let finished = execute(
        project,
        RunRequest {
            tasks,
            template,
            scope: Some(scope),
            opts,
            command: "retry",
            requeue: Requeue::Retry {
                ids: chosen,
                fresh: args.fresh,
            },
        },
    )?;
    finished.print();
    Ok(finished.exit)
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
    let landed = crate::land::landed_ids(project, state);
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
            if landed.contains(id) {
                return Err(Error::Usage(format!(
                    "task `{id}` has landed on {}: its work is there already (pass --force to run it again; `land` then brings only what the new attempts add)",
                    project.config.workspace.land_target
                )));
            }
            if rec.status.is_success() {
                return Err(Error::Usage(format!(
                    "task `{id}` succeeded (pass --force to run a succeeded task again)"
                )));
            }
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
