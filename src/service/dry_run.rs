//! `run --dry-run`: the checks a real run makes, with the same errors and
//! exit codes, then which pool each task would go to, in dependency order,
//! and the worst-case spend the cost limits allow.

use std::collections::HashMap;
use std::path::PathBuf;

use super::preflight::{
    SchedulerCheck, check_agents, check_branches, check_repo, check_schedulers,
};
use crate::config::{Config, CredentialChoice};
use crate::error::Result;
use crate::project::Project;
use crate::runner::fleet::history::StartOrder;
use crate::state::State;
use crate::tasks::{TaskSet, dependency_order};

/// One task of the dry-run plan (a row of `run --dry-run --json`'s `tasks`).
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct PlannedRun {
    /// 1-based position in dependency order.
    pub order: usize,
    pub id: String,
    pub branch: String,
    pub worktree: PathBuf,
    /// The pool it would go to; `None`: it succeeded already and is skipped.
    pub pool: Option<String>,
    pub depends_on: Vec<String>,
    /// `new`, `landed`, or its status label.
    pub status: &'static str,
    /// Its footprint lane (1-based): tasks whose declared footprints overlap,
    /// directly or through each other, run one after the other. None: no
    /// declared footprint overlaps its own.
    pub lane: Option<usize>,
    /// The earlier tasks of its lane whose footprints overlap its own: it
    /// waits for them and starts from their work.
    pub waits_for: Vec<String>,
    /// Its variants (`best_of`; 1: a plain task).
    pub variants: u32,
    /// The agent runs it implies at least: one per variant, and a judge
    /// agent for a best-of task with `[best_of] judge = true` (0: skipped).
    pub agent_runs: u32,
    /// 1-based place in the start order among the tasks to run (None:
    /// skipped): which of the ready tasks starts first.
    pub start: Option<usize>,
    /// Its expected duration from history, in seconds.
    pub expected_secs: Option<f64>,
}

/// `flocks run --dry-run --json`: the plan, the pools, the spend and the
/// start order.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct DryRunJson<'a> {
    /// Every task of the task file, in dependency order.
    pub tasks: &'a [PlannedRun],
    pub pools: Vec<PoolPlan>,
    pub max_agents: usize,
    /// Agent runs the plan implies at least (retries add more).
    pub agent_runs: u32,
    pub spend: Spend,
    pub start_order: StartOrderJson,
}

/// A pool of the plan.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct PoolPlan {
    pub name: String,
    /// `local`, `docker`, `ssh`, `exedev` or `slurm`.
    pub backend: &'static str,
    pub slots: usize,
    /// A Slurm pool: the most jobs it submits at once (one per attempt).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jobs_at_once: Option<usize>,
    /// A Slurm pool: what its scheduler said of its jobs (`sbatch --test-only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<SchedulerSaid>,
}

/// What a pool's scheduler said.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct SchedulerSaid {
    /// true: it accepts the jobs; null: it could not be asked (a run leaves
    /// the pool out).
    pub accepts: Option<bool>,
    /// Its answer, or why it could not be asked.
    pub said: String,
}

/// Which of the ready tasks a run starts first.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct StartOrderJson {
    /// `task_order` (no history) or `longest_expected_first`.
    pub kind: &'static str,
    /// For people.
    pub why: String,
    /// Tasks with a duration from history.
    pub history_tasks: usize,
}

impl<'a> DryRunJson<'a> {
    /// The plan `plan` made, with its pools, spend and start order.
    pub(crate) fn new(
        config: &Config,
        planned: &'a [PlannedRun],
        schedulers: &[SchedulerCheck],
        start_order: &StartOrder,
        spend: Spend,
    ) -> Self {
        let pools = config
            .pools
            .iter()
            .map(|p| {
                let said = schedulers.iter().find(|c| c.pool == p.name);
                PoolPlan {
                    name: p.name.clone(),
                    backend: p.backend.kind(),
                    slots: p.max_worktrees,
                    // A Slurm pool submits one job per attempt: at most this many at once.
                    jobs_at_once: said.map(|_| p.max_worktrees.min(config.max_agents)),
                    scheduler: said.map(|c| match &c.said {
                        Ok(s) => SchedulerSaid {
                            accepts: Some(true),
                            said: s.clone(),
                        },
                        Err(e) => SchedulerSaid {
                            accepts: None,
                            said: e.clone(),
                        },
                    }),
                }
            })
            .collect();
        DryRunJson {
            tasks: planned,
            pools,
            max_agents: config.max_agents,
            agent_runs: planned.iter().map(|r| r.agent_runs).sum(),
            spend,
            start_order: StartOrderJson {
                kind: start_order.kind(),
                why: start_order.describe(),
                history_tasks: start_order.history_tasks(),
            },
        }
    }
}

/// Check as a run would, then plan the pools without running anything.
/// `state` is the saved state as read (read alongside the task file; its
/// error counts after the repository's and the agent's, as in a run).
/// Also returns the state, and what Slurm pools' schedulers said.
pub(crate) fn plan(
    project: &Project,
    tasks: &TaskSet,
    state: Result<State>,
) -> Result<(Vec<PlannedRun>, State, Vec<SchedulerCheck>, StartOrder)> {
    let config = &project.config;
    let repo = check_repo(config)?;
    check_agents(config)?;
    let schedulers = check_schedulers(config)?;
    let state = state?;
    // Which tasks are landed is independent of the branch checks.
    let landed = std::thread::scope(|s| {
        let landed = s.spawn(|| crate::land::landed_ids(project, &state));
        check_branches(&repo, &state, tasks)?;
        Ok::<_, crate::error::Error>(
            landed
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p)),
        )
    })?;
    drop(repo);
    let order = dependency_order(&tasks.tasks).unwrap_or_else(|_| (0..tasks.tasks.len()).collect());
    let before = crate::tasks::footprint_before(tasks, &order);
    let lanes = lanes(tasks, &order, &before);
    let expected = crate::runner::fleet::history::expected_secs(tasks, &state);
    let start_order = crate::runner::fleet::history::start_order_by(tasks, &expected, &order);
    let mut start_pos: HashMap<usize, usize> = HashMap::new();
    for &i in &start_order.order {
        if state
            .task(&tasks.tasks[i].id)
            .is_none_or(|r| !r.status.is_success())
        {
            let next = start_pos.len() + 1;
            start_pos.insert(i, next);
        }
    }
    let mut assigned = vec![0usize; config.pools.len()];
    let mut rows = Vec::new();
    let worktrees = config.worktrees_dir();
    for (step, &i) in order.iter().enumerate() {
        let t = &tasks.tasks[i];
        let status = match state.task(&t.id) {
            Some(_) if landed.contains(&t.id) => crate::view::LANDED,
            Some(r) => r.status.label(),
            None => "new",
        };
        let skip = state.task(&t.id).is_some_and(|r| r.status.is_success());
        let pool = if skip {
            None
        } else {
            let p = (0..config.pools.len())
                .min_by(|&a, &b| {
                    let la = assigned[a] as f64 / config.pools[a].max_worktrees as f64;
                    let lb = assigned[b] as f64 / config.pools[b].max_worktrees as f64;
                    la.partial_cmp(&lb).unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0);
            assigned[p] += 1;
            Some(config.pools[p].name.clone())
        };
        let variants = t.best_of.unwrap_or(config.best_of.n);
        let judge = u32::from(variants > 1 && config.best_of.judge);
        let agent_runs = if skip { 0 } else { variants + judge };
        rows.push(PlannedRun {
            order: step + 1,
            id: t.id.clone(),
            branch: t.branch.clone(),
            worktree: worktrees.join(&t.id),
            pool,
            depends_on: t.depends_on.clone(),
            status,
            lane: lanes.get(&t.id).copied(),
            waits_for: before.get(&t.id).cloned().unwrap_or_default(),
            variants,
            agent_runs,
            start: start_pos.get(&i).copied(),
            expected_secs: expected.get(&t.id).copied(),
        });
    }
    Ok((rows, state, schedulers, start_order))
}

/// The most a run of these tasks can spend before no new agent starts, as
/// the cost limits allow. Each limit is checked as attempts end, so the
/// attempts running when one is reached (up to `max_agents`) finish and
/// add their cost on top.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Spend {
    /// The lowest of the limits below; None: nothing limits the spend.
    pub worst_case_usd: Option<f64>,
    /// `max_cost_usd` of the run.
    pub run_max_cost_usd: Option<f64>,
    /// What the tasks' own `max_cost_usd` leave, summed; None when a task
    /// that would run has none.
    pub tasks_max_cost_usd: Option<f64>,
    /// Tasks that would run without a `max_cost_usd` of their own.
    pub tasks_without_cap: usize,
    /// The `max_cost_usd` of the credentials the pools use, summed; None
    /// when a pool can run on a credential without one (or its own login).
    pub credentials_max_cost_usd: Option<f64>,
    /// Agents that may be running when a limit is reached.
    pub max_agents: usize,
}

/// The worst-case spend of running `to_run` (task ids) with `config`.
pub(crate) fn spend(config: &Config, state: &State, tasks: &TaskSet, to_run: &[&str]) -> Spend {
    let mut tasks_total = 0.0;
    let mut without = 0;
    for id in to_run {
        match tasks.get(id).and_then(|t| t.max_cost_usd) {
            Some(cap) => {
                // What its earlier attempts spent counts against its cap.
                let spent = state.task(id).map_or(0.0, |r| r.cost());
                tasks_total += (cap - spent).max(0.0);
            }
            None => without += 1,
        }
    }
    let cap_of = |name: &str| {
        config
            .credentials
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.max_cost_usd)
    };
    let mut used: Vec<&str> = Vec::new();
    let mut creds_bounded = true;
    for p in &config.pools {
        match &p.credential {
            CredentialChoice::Default => creds_bounded = false,
            CredentialChoice::Named(n) => used.push(n),
            CredentialChoice::Rotate => {
                used.extend(config.credentials.iter().map(|c| c.name.as_str()))
            }
        }
    }
    used.sort_unstable();
    used.dedup();
    let mut creds_total = 0.0;
    for name in used {
        match cap_of(name) {
            Some(c) => creds_total += c,
            None => creds_bounded = false,
        }
    }
    let tasks_max_cost_usd = (without == 0).then(|| crate::output::units::round_cost(tasks_total));
    let credentials_max_cost_usd =
        creds_bounded.then(|| crate::output::units::round_cost(creds_total));
    let worst_case_usd = [
        config.max_cost_usd,
        tasks_max_cost_usd,
        credentials_max_cost_usd,
    ]
    .into_iter()
    .flatten()
    .min_by(f64::total_cmp);
    Spend {
        worst_case_usd,
        run_max_cost_usd: config.max_cost_usd,
        tasks_max_cost_usd,
        tasks_without_cap: without,
        credentials_max_cost_usd,
        max_agents: config.max_agents,
    }
}

impl Spend {
    /// For people: the bound and where it comes from, or that there is none.
    pub(crate) fn render(&self) -> String {
        use crate::output::units::money;
        let Some(worst) = self.worst_case_usd else {
            let mut s = "spend: no limit: set max_cost_usd for the run, on task lines, or on [[credentials]]".to_string();
            if self.tasks_without_cap > 0 && self.run_max_cost_usd.is_none() {
                s.push_str(&format!(
                    " ({} without one)",
                    crate::output::units::count(self.tasks_without_cap, "task")
                ));
            }
            return s;
        };
        let mut parts = Vec::new();
        if let Some(c) = self.run_max_cost_usd {
            parts.push(format!("the run's max_cost_usd {}", money(c)));
        }
        if let Some(c) = self.tasks_max_cost_usd {
            parts.push(format!("the tasks' max_cost_usd {}", money(c)));
        }
        if let Some(c) = self.credentials_max_cost_usd {
            parts.push(format!("the credentials' max_cost_usd {}", money(c)));
        }
        format!(
            "spend: at most {} before no new agent starts ({}); limits are checked as attempts end, so the attempts running then (up to {}) finish and add their cost",
            money(worst),
            parts.join(", "),
            self.max_agents
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredentialConfig;

    fn setup(lines: &str, toml: &str) -> (Config, TaskSet) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flocks.toml");
        std::fs::write(&path, toml).unwrap();
        let config = Config::load(&path).unwrap();
        let rules = crate::tasks::BranchRules {
            prefix: "flocks/",
            base: "main",
            land_target: "main",
            template_fields: &[],
        };
        let tasks = crate::tasks::parse_jsonl(Path::new("t.jsonl"), lines, &rules).unwrap();
        (config, tasks)
    }

    use std::path::Path;

    #[test]
    fn the_lowest_limit_bounds_the_spend() {
        let lines = "{\"id\":\"a\",\"prompt\":\"x\",\"max_cost_usd\":2}\n{\"id\":\"b\",\"prompt\":\"y\",\"max_cost_usd\":3}\n";
        // Only the tasks' caps: $5.
        let (config, tasks) = setup(lines, "");
        let s = spend(&config, &State::default(), &tasks, &["a", "b"]);
        assert_eq!(s.worst_case_usd, Some(5.0));
        assert_eq!(
            s.credentials_max_cost_usd, None,
            "the default login has no cap"
        );
        assert!(
            s.render().starts_with(
                "spend: at most $5.00 before no new agent starts (the tasks' max_cost_usd $5.00)"
            ),
            "{}",
            s.render()
        );
        // The run's cap is lower.
        let (config, tasks) = setup(lines, "max_cost_usd = 4\n");
        assert_eq!(
            spend(&config, &State::default(), &tasks, &["a", "b"]).worst_case_usd,
            Some(4.0)
        );
        // A task without a cap, no run cap, capped credentials on a rotating pool.
        let (mut config, tasks) = setup("{\"id\":\"a\",\"prompt\":\"x\"}\n", "");
        for (n, c) in [("x", 1.5), ("y", 2.0)] {
            config.credentials.push(CredentialConfig {
                name: n.into(),
                env: "X".into(),
                kind: crate::config::CredentialKind::Oauth,
                max_concurrent: None,
                max_cost_usd: Some(c),
            });
        }
        config.pools[0].credential = CredentialChoice::Rotate;
        let s = spend(&config, &State::default(), &tasks, &["a"]);
        assert_eq!(s.tasks_max_cost_usd, None);
        assert_eq!(s.worst_case_usd, Some(3.5));
        // Nothing capped: said so.
        let (config, tasks) = setup("{\"id\":\"a\",\"prompt\":\"x\"}\n", "");
        let s = spend(&config, &State::default(), &tasks, &["a"]);
        assert_eq!(s.worst_case_usd, None);
        assert!(s.render().starts_with("spend: no limit"), "{}", s.render());
    }
}

/// Number the groups of tasks whose footprints overlap (through each other),
/// in the order of their first task.
fn lanes(
    tasks: &TaskSet,
    order: &[usize],
    before: &HashMap<String, Vec<String>>,
) -> HashMap<String, usize> {
    let mut lane: HashMap<String, usize> = HashMap::new();
    let mut next = 0;
    for &i in order {
        let id = &tasks.tasks[i].id;
        let Some(earlier) = before.get(id) else {
            continue;
        };
        // Joins the lane of its first overlapping task; lanes it bridges merge.
        let mut found: Vec<usize> = earlier
            .iter()
            .filter_map(|e| lane.get(e).copied())
            .collect();
        found.sort_unstable();
        found.dedup();
        let l = match found.first() {
            Some(&l) => l,
            None => {
                next += 1;
                next
            }
        };
        for e in earlier {
            lane.insert(e.clone(), l);
        }
        for other in found.iter().skip(1) {
            for v in lane.values_mut() {
                if v == other {
                    *v = l;
                }
            }
        }
        lane.insert(id.clone(), l);
    }
    // Renumber 1, 2, ... in order of each lane's first task.
    let mut renumber: HashMap<usize, usize> = HashMap::new();
    for &i in order {
        if let Some(l) = lane.get(&tasks.tasks[i].id) {
            let n = renumber.len() + 1;
            renumber.entry(*l).or_insert(n);
        }
    }
    lane.into_iter().map(|(id, l)| (id, renumber[&l])).collect()
}

#[cfg(test)]
mod lane_tests {
    use std::path::Path;

    use super::*;
    use crate::tasks::{BranchRules, parse_jsonl};

    #[test]
    fn lanes_join_through_a_task_that_bridges_them() {
        let rules = BranchRules {
            prefix: "flocks/",
            base: "main",
            land_target: "main",
            template_fields: &[],
        };
        let lines = [
            r#"{"id":"a","prompt":"p","touches":["a/**"]}"#,
            r#"{"id":"b","prompt":"p","touches":["b/**"]}"#,
            r#"{"id":"free","prompt":"p"}"#,
            r#"{"id":"c","prompt":"p","touches":["c/**"]}"#,
            r#"{"id":"ab","prompt":"p","touches":["a/x.rs","b/y.rs"]}"#,
            r#"{"id":"c2","prompt":"p","touches":["c/z.rs"]}"#,
        ]
        .join("\n");
        let set = parse_jsonl(Path::new("/p/t.jsonl"), &lines, &rules).unwrap();
        let order = dependency_order(&set.tasks).unwrap();
        let before = crate::tasks::footprint_before(&set, &order);
        assert_eq!(before["ab"], ["a", "b"]);
        let lanes = lanes(&set, &order, &before);
        assert_eq!(lanes["a"], 1);
        assert_eq!(lanes["b"], 1, "bridged by ab");
        assert_eq!(lanes["ab"], 1);
        assert_eq!(lanes["c"], 2);
        assert_eq!(lanes["c2"], 2);
        assert!(!lanes.contains_key("free"));
    }
}
