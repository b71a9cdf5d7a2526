//! `flocks run`: load the tasks, then the run service does the rest (lock,
//! reconcile, dispatch); `--dry-run` prints its plan instead.

use crate::cli::RunArgs;
use crate::error::{Exit, Result};
use crate::project::Project;
use crate::runner::RunOptions;
use crate::service::dry_run::{DryRunJson, PlannedRun};
use crate::service::run::{Requeue, RunRequest, execute};
use crate::service::{dry_run, load};
use crate::tasks::TaskSet;

pub(super) fn run(project: Project, args: &RunArgs) -> Result<Exit> {
    if args.dry_run {
        // The task file and the state are independent: read them side by side.
        let (loaded, state) = std::thread::scope(|s| {
            let state = s.spawn(|| project.store.load());
            let loaded = load::load(&project, &args.source);
            let state = state
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            (loaded, state)
        });
        let (tasks, _) = loaded?;
        let exit = dry_run(&project, &tasks, state, args.json);
        crate::state::leave(tasks);
        return exit;
    }
    let (tasks, template) = load::load(&project, &args.source)?;
    let opts = RunOptions {
        supervise: args.supervise,
        max_retries: args.max_retries.unwrap_or(project.config.max_retries),
        no_wait: args.no_wait,
        progress: !args.no_progress,
    };
    let finished = execute(
        project,
        RunRequest {
            tasks,
            template,
            scope: None,
            opts,
            command: "run",
            requeue: Requeue::Nothing,
        },
    )?;
    finished.print();
    Ok(finished.exit)
}

fn dry_run(
    project: &Project,
    tasks: &TaskSet,
    state: Result<crate::state::State>,
    as_json: bool,
) -> Result<Exit> {
    let config = &project.config;
    // What a real run checks before it starts, with the same errors and exit
    // codes: the repository, the base, the agent, the task branches, the
    // variables [[notify]] reads.
    crate::notify::Notifiers::check(config)?;
    let (planned, state, schedulers, start_order) = dry_run::plan(project, tasks, state)?;
    let to_run: Vec<&str> = planned
        .iter()
        .filter(|r| r.pool.is_some())
        .map(|r| r.id.as_str())
        .collect();
    let spend = dry_run::spend(config, &state, tasks, &to_run);
    let plan = DryRunJson::new(config, &planned, &schedulers, &start_order, spend);
    if as_json {
        crate::output::print_json(&plan);
        crate::state::leave(plan);
        crate::state::leave((state, planned));
        return Ok(Exit::Ok);
    }
    crate::outln!(
        "plan for {} from {} (nothing is run):",
        crate::output::units::count(tasks.tasks.len(), "task"),
        tasks.source.display()
    );
    crate::out!("{}", plan_table(&planned, start_order.history_tasks() > 0));
    crate::outln!("start order: {}", plan.start_order.why);
    crate::outln!("worktrees: {}/<task>", config.worktrees_dir().display());
    crate::outln!("{}", agent_runs_line(config, &plan));
    let slots: Vec<String> = plan
        .pools
        .iter()
        .map(|p| format!("{} {}", p.name, p.slots))
        .collect();
    crate::outln!(
        "slots: {} (max_agents {})",
        slots.join(", "),
        config.max_agents
    );
    for line in slurm_lines(config, &plan) {
        crate::outln!("{line}");
    }
    crate::outln!("{}", plan.spend.render());
    crate::state::leave(plan);
    crate::state::leave((state, planned));
    Ok(Exit::Ok)
}

/// The plan's table; with history, when each task starts (among the
/// ready) and what it is expected to take.
fn plan_table(planned: &[PlannedRun], longest_first: bool) -> String {
    use crate::output::table::{Align, Table};
    let mut columns = vec![
        ("#", Align::Right),
        ("task", Align::Left),
        ("pool", Align::Left),
        ("branch", Align::Left),
        ("status", Align::Left),
        ("after", Align::Left),
        ("lane", Align::Left),
    ];
    if longest_first {
        columns.extend([("start", Align::Right), ("expected", Align::Right)]);
    }
    let mut table = Table::new("  ", &columns);
    for r in planned {
        let mut cells = vec![
            (r.order.to_string(), None),
            (r.id.clone(), None),
            (r.pool.clone().unwrap_or_else(|| "(done)".into()), None),
            (r.branch.clone(), None),
            (
                r.status.to_string(),
                Some(crate::output::paint::status_style(r.status)),
            ),
            (
                if r.depends_on.is_empty() {
                    "-".into()
                } else {
                    r.depends_on.join(", ")
                },
                None,
            ),
            (lane(r), None),
        ];
        if longest_first {
            cells.push((r.start.map_or_else(|| "-".into(), |n| n.to_string()), None));
            cells.push((
                r.expected_secs
                    .map_or_else(|| "median".into(), crate::output::units::duration),
                None,
            ));
        }
        table.styled_row(cells);
    }
    table.render()
}

/// "agent runs: N (at least; ...)", with the best-of tasks' variants.
fn agent_runs_line(config: &crate::config::Config, plan: &DryRunJson) -> String {
    let agent_runs = plan.agent_runs;
    let best_of: Vec<String> = plan
        .tasks
        .iter()
        .filter(|r| r.variants > 1 && r.agent_runs > 0)
        .map(|r| format!("{} ×{}", r.id, r.variants))
        .collect();
    if best_of.is_empty() {
        return format!("agent runs: {agent_runs} (at least; retries add more)");
    }
    format!(
        "agent runs: {agent_runs} (at least; retries add more), with variants for {}{}; variant k runs on <branch>@v<k>",
        best_of.join(", "),
        if config.best_of.judge {
            " and a judge agent each"
        } else {
            ""
        }
    )
}

/// What each Slurm pool's scheduler said of its jobs.
fn slurm_lines(config: &crate::config::Config, plan: &DryRunJson) -> Vec<String> {
    let mut lines = Vec::new();
    for (p, pool) in config.pools.iter().zip(&plan.pools) {
        let (crate::config::BackendConfig::Slurm(s), Some(said), Some(n)) =
            (&p.backend, &pool.scheduler, pool.jobs_at_once)
        else {
            continue;
        };
        let jobs = crate::output::units::count(n, "job");
        let partition = s
            .partition
            .as_deref()
            .map(|x| format!(" in partition {x}"))
            .unwrap_or_default();
        lines.push(match said.accepts {
            Some(_) => format!(
                "slurm: pool {} submits at most {jobs} at once{partition} (one per attempt); the scheduler accepts them: {}",
                p.name, said.said
            ),
            None => format!(
                "slurm: pool {} would submit at most {jobs} at once{partition}, but its scheduler could not be asked ({}): a run leaves the pool out",
                p.name, said.said
            ),
        });
    }
    lines
}

/// The lane column: its footprint lane and the tasks it waits for there.
fn lane(r: &PlannedRun) -> String {
    let Some(n) = r.lane else {
        return "-".into();
    };
    if r.waits_for.is_empty() {
        format!("{n}")
    } else {
        format!("{n}, after {} (touches)", r.waits_for.join(", "))
    }
}
