//! `flocks run`: load the tasks, then the run service does the rest (lock,
//! reconcile, dispatch); `--dry-run` prints its plan instead.

use serde_json::json;

use crate::cli::RunArgs;
use crate::error::{Exit, Result};
use crate::project::Project;
use crate::runner::RunOptions;
use crate::service::run::{Requeue, RunRequest, execute};
use crate::service::{dry_run, load};
use crate::tasks::TaskSet;

pub fn run(project: Project, args: &RunArgs) -> Result<Exit> {
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
        return dry_run(&project, &tasks, state, args.json);
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
    let longest_first = start_order.history_tasks() > 0;
    let agent_runs: u32 = planned.iter().map(|r| r.agent_runs).sum();
    let best_of: Vec<String> = planned
        .iter()
        .filter(|r| r.variants > 1 && r.agent_runs > 0)
        .map(|r| format!("{} ×{}", r.id, r.variants))
        .collect();
    let rows: Vec<_> = planned
        .into_iter()
        .map(|r| {
            json!({
                "order": r.order,
                "id": r.id,
                "branch": r.branch,
                "worktree": r.worktree,
                "pool": r.pool,
                "depends_on": r.depends_on,
                "status": r.status,
                "lane": r.lane,
                "waits_for": r.waits_for,
                "variants": r.variants,
                "agent_runs": r.agent_runs,
                "start": r.start,
                "expected_secs": r.expected_secs,
            })
        })
        .collect();
    let to_run: Vec<&str> = rows
        .iter()
        .filter(|r| !r["pool"].is_null())
        .filter_map(|r| r["id"].as_str())
        .collect();
    let spend = dry_run::spend(config, &state, tasks, &to_run);
    // A Slurm pool submits one job per attempt: at most this many at once.
    let jobs_at_once = |p: &crate::config::PoolConfig| p.max_worktrees.min(config.max_agents);
    let said = |name: &str| schedulers.iter().find(|c| c.pool == name).map(|c| &c.said);
    if as_json {
        let pools: Vec<_> = config
            .pools
            .iter()
            .map(|p| {
                let mut v =
                    json!({"name": p.name, "backend": p.backend.kind(), "slots": p.max_worktrees});
                if let Some(said) = said(&p.name) {
                    v["jobs_at_once"] = json!(jobs_at_once(p));
                    v["scheduler"] = match said {
                        Ok(s) => json!({"accepts": true, "said": s}),
                        Err(e) => json!({"accepts": null, "said": e}),
                    };
                }
                v
            })
            .collect();
        let out = json!({
            "tasks": rows,
            "pools": pools,
            "max_agents": config.max_agents,
            "agent_runs": agent_runs,
            "spend": spend,
            "start_order": {
                "kind": start_order.kind(),
                "why": start_order.describe(),
                "history_tasks": start_order.history_tasks(),
            },
        });
        crate::output::print_json(&out);
        return Ok(Exit::Ok);
    }
    crate::outln!(
        "plan for {} from {} (nothing is run):",
        crate::output::units::count(tasks.tasks.len(), "task"),
        tasks.source.display()
    );
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
    // With history, when each starts (among the ready) and why.
    if longest_first {
        columns.extend([("start", Align::Right), ("expected", Align::Right)]);
    }
    let mut table = Table::new("  ", &columns);
    for r in &rows {
        let deps: Vec<&str> = r["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let status = r["status"].as_str().unwrap_or("");
        let mut cells = vec![
            (r["order"].to_string(), None),
            (r["id"].as_str().unwrap_or("").to_string(), None),
            (r["pool"].as_str().unwrap_or("(done)").to_string(), None),
            (r["branch"].as_str().unwrap_or("").to_string(), None),
            (
                status.to_string(),
                Some(crate::output::paint::status_style(status)),
            ),
            (
                if deps.is_empty() {
                    "-".into()
                } else {
                    deps.join(", ")
                },
                None,
            ),
            (lane(r), None),
        ];
        if longest_first {
            cells.push((
                r["start"]
                    .as_u64()
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                None,
            ));
            cells.push((
                r["expected_secs"]
                    .as_f64()
                    .map_or_else(|| "median".into(), crate::output::units::duration),
                None,
            ));
        }
        table.styled_row(cells);
    }
    crate::out!("{}", table.render());
    crate::outln!("start order: {}", start_order.describe());
    crate::outln!("worktrees: {}/<task>", config.worktrees_dir().display());
    if best_of.is_empty() {
        crate::outln!("agent runs: {agent_runs} (at least; retries add more)");
    } else {
        crate::outln!(
            "agent runs: {agent_runs} (at least; retries add more), with variants for {}{}; variant k runs on <branch>@v<k>",
            best_of.join(", "),
            if config.best_of.judge {
                " and a judge agent each"
            } else {
                ""
            }
        );
    }
    let slots: Vec<String> = config
        .pools
        .iter()
        .map(|p| format!("{} {}", p.name, p.max_worktrees))
        .collect();
    crate::outln!(
        "slots: {} (max_agents {})",
        slots.join(", "),
        config.max_agents
    );
    for p in &config.pools {
        let (crate::config::BackendConfig::Slurm(s), Some(said)) = (&p.backend, said(&p.name))
        else {
            continue;
        };
        let n = jobs_at_once(p);
        let partition = s
            .partition
            .as_deref()
            .map(|x| format!(" in partition {x}"))
            .unwrap_or_default();
        match said {
            Ok(words) => crate::outln!(
                "slurm: pool {} submits at most {} at once{partition} (one per attempt); the scheduler accepts them: {words}",
                p.name,
                crate::output::units::count(n, "job")
            ),
            Err(e) => crate::outln!(
                "slurm: pool {} would submit at most {} at once{partition}, but its scheduler could not be asked ({e}): a run leaves the pool out",
                p.name,
                crate::output::units::count(n, "job")
            ),
        }
    }
    crate::outln!("{}", spend.render());
    Ok(Exit::Ok)
}

/// The lane column: its footprint lane and the tasks it waits for there.
fn lane(r: &serde_json::Value) -> String {
    let Some(n) = r["lane"].as_u64() else {
        return "-".into();
    };
    let waits: Vec<&str> = r["waits_for"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    if waits.is_empty() {
        format!("{n}")
    } else {
        format!("{n}, after {} (touches)", waits.join(", "))
    }
}
