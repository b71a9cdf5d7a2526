//! `flocks run`: load the tasks, take the lock, reconcile what a dead run left,
//! dispatch, and report. `retry` shares everything after loading.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use crate::agent::Redactor;
use crate::backend::Backend;
use crate::cli::{RunArgs, TaskSource};
use crate::config::{BackendConfig, Config, SourceConfig};
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::prompt::Template;
use crate::report::Reporter;
use crate::runner::credentials::Credentials;
use crate::runner::dispatcher::DispatcherParts;
use crate::runner::{Dispatcher, RunOptions};
use crate::state::{Outcome, RunInfo, State, TaskRecord, TaskStatus};
use crate::tasks::{BranchRules, TaskSet, dependency_order, load_jsonl, load_script};

pub fn run(project: Project, args: &RunArgs) -> Result<Exit> {
    let tasks = load_tasks(&project, &args.source)?;
    let template = load_template(&project.config, &tasks)?;
    if args.dry_run {
        return dry_run(&project, &tasks, args.json);
    }
    let opts = RunOptions {
        supervise: args.supervise,
        max_retries: args.max_retries.unwrap_or(project.config.max_retries),
        no_wait: args.no_wait,
        progress: !args.no_progress,
    };
    execute(project, tasks, template, None, opts, "run", |_, _| Ok(()))
}

/// The environment for commands flocks runs that are not agents: no credential.
pub fn safe_env(config: &Config) -> Vec<(String, String)> {
    let drop: HashSet<&str> = crate::agent::SCRUBBED_VARS
        .iter()
        .copied()
        .chain(config.credentials.iter().map(|c| c.env.as_str()))
        .collect();
    std::env::vars()
        .filter(|(k, _)| !drop.contains(k.as_str()))
        .collect()
}

pub fn load_tasks(project: &Project, source: &TaskSource) -> Result<TaskSet> {
    let c = &project.config;
    let rules = BranchRules {
        prefix: &c.workspace.branch_prefix,
        base: &c.workspace.base,
        land_target: &c.workspace.land_target,
    };
    match (&source.tasks, &c.source) {
        (Some(p), _) => load_jsonl(p, &rules),
        (None, Some(SourceConfig::Jsonl { path })) => load_jsonl(path, &rules),
        (None, Some(SourceConfig::Script { command })) => {
            load_script(command, &c.dir, &safe_env(c), &rules)
        }
        (None, None) => load_jsonl(&c.dir.join("tasks.jsonl"), &rules),
    }
}

/// Load `[prompt] template` and check that it renders for every task.
pub fn load_template(config: &Config, tasks: &TaskSet) -> Result<Option<Template>> {
    let Some(path) = &config.prompt_template else {
        return Ok(None);
    };
    let t = Template::load(path)?;
    for task in &tasks.tasks {
        t.render(task, &tasks.source)?;
    }
    Ok(Some(t))
}

/// A short key for this project, part of every attempt tag.
pub fn project_key(project: &Project) -> String {
    project.key()
}

/// Everything after loading: lock, state, reconcile, merge, dispatch, report.
pub fn execute(
    project: Project,
    tasks: TaskSet,
    template: Option<Template>,
    scope: Option<HashSet<String>>,
    opts: RunOptions,
    command: &str,
    mark: impl FnOnce(&mut State, &TaskSet) -> Result<()>,
) -> Result<Exit> {
    let config = project.config.clone();
    let repo = check_repo(&config)?;
    // A local pool that cannot find the agent stops the run before anything
    // (lock, state, worktrees) is created.
    preflight(&config)?;
    let _lock = project.lock(command)?;
    let mut state = project.store.load()?;
    // The lock was free, yet the last run may still be alive (its lock taken
    // away by hand): never reconcile, kill or rerun the tasks of a live run.
    if let Some(run) = &state.run
        && run.ended_at.is_none()
        && run.pid != std::process::id()
        && crate::state::process_alive(run.pid, run.pid_start)
    {
        return Err(Error::CannotStart(format!(
            "flocks run {} (pid {}) is still running, although {} is not held: \
             wait for it to end, or stop it (flocks stop, or kill {})",
            run.id,
            run.pid,
            project.state_dir().join("lock").display(),
            run.pid
        )));
    }
    check_branches(&repo, &state, &tasks)?;
    drop(repo);

    let key = project_key(&project);
    let mut notices = crate::runner::reconcile::reconcile(&mut state, &config, &key);
    // What the command runs again (`retry`, `land --resolve`) is queued
    // first, so that the notes below never call it "not run again".
    mark(&mut state, &tasks)?;
    notices.extend(merge_tasks(
        &mut state,
        &tasks,
        &config,
        &opts,
        scope.as_ref(),
    ));
    // A new run: disabled credentials get another chance, since the user acted.
    for (name, c) in state.credentials.iter_mut() {
        if let Some(why) = c.disabled.take() {
            notices.push(format!(
                "credential {name} was disabled ({why}); trying it again"
            ));
        }
    }
    let now = Utc::now();
    state.run = Some(RunInfo {
        id: next_run_id(state.run.as_ref().map(|r| r.id.as_str()), now),
        pid: std::process::id(),
        started_at: now,
        ended_at: None,
        supervise: opts.supervise,
        pid_start: crate::state::process_start(std::process::id()),
    });
    project.store.save(&state)?;
    // Saved whole: the dispatcher's journal starts from here.
    state.changed.clear();

    // Worktrees, excludes, backends.
    let repo = crate::git::open(&config.workspace.repo)?;
    let excludes = crate::git::exclude_patterns(
        &config.workspace.repo,
        &[project.state_dir(), config.worktrees_dir()],
    );
    crate::git::ensure_excluded(&repo, &excludes)?;
    drop(repo);
    let worktrees = Arc::new(crate::git::Worktrees::new(
        &config.workspace.repo,
        &config.worktrees_dir(),
    )?);
    let creds = Credentials::from_env(&config);
    for (name, var) in creds.missing() {
        notices.push(format!(
            "credential {name}: ${var} is not set; pools that need it cannot run"
        ));
    }
    let backends = config
        .pools
        .iter()
        .map(|p| Backend::new(&config, p, worktrees.clone()).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    // Remote pools connect now (helper, mirror, setup): a host that is down
    // takes its pool out of this run, with a notice naming it.
    let runtime = super::runtime()?;
    for (p, b) in config.pools.iter().zip(&backends) {
        if let Some(why) = runtime.block_on(b.connect(&mut notices)) {
            notices.push(format!("pool {} is not used in this run: {why}", p.name));
        }
    }
    let redactor = Arc::new(Redactor::new(creds.secrets()));

    let terminal: Box<dyn Reporter> =
        if opts.progress && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            Box::new(crate::report::progress::ProgressReporter::stdout(
                project.state_dir().join("logs"),
            ))
        } else {
            Box::new(crate::report::line::LineReporter::new(
                crate::output::stdout(),
            ))
        };
    let mut reporters: Vec<Box<dyn Reporter>> = vec![
        Box::new(crate::report::jsonl::EventsFile::open(
            &project.events_path(),
        )),
        terminal,
    ];
    for message in notices {
        let message = redactor.redact(&message).into_owned();
        for r in &mut reporters {
            r.event(&crate::report::Event::Notice {
                message: message.clone(),
            });
        }
    }
    let ids: Vec<String> = tasks
        .tasks
        .iter()
        .map(|t| t.id.clone())
        .filter(|id| scope.as_ref().is_none_or(|s| s.contains(id)))
        .collect();
    let log_root = project.state_dir().join("logs");
    let store = project.store.clone();
    let dispatcher = Dispatcher::new(DispatcherParts {
        project,
        state,
        tasks,
        scope,
        template,
        backends,
        creds,
        redactor,
        reporters,
        opts,
        project_key: key,
    });
    let summary = runtime.block_on(dispatcher.run());
    let state = store.load()?;
    let landed = crate::land::landed_ids(&Project::from_config(config), &state);
    crate::output::report(&crate::report::summary::render(
        &state, &ids, &log_root, &landed,
    ));
    if let Some(why) = &summary.stopped_because {
        crate::outln!("stopped: {why}");
    }
    Ok(summary.exit)
}

/// `20261130-021500`, the start time to the second; a run that starts in
/// the same second as the previous one (runs of a project never overlap:
/// the lock) gets `-2`, `-3`, ... so that ids stay unique.
fn next_run_id(previous: Option<&str>, now: chrono::DateTime<Utc>) -> String {
    let base = now.format("%Y%m%d-%H%M%S").to_string();
    let Some(rest) = previous.and_then(|p| p.strip_prefix(base.as_str())) else {
        return base;
    };
    let n = match rest.strip_prefix('-') {
        Some(k) => k.parse::<u32>().unwrap_or(1),
        None => 1,
    };
    format!("{base}-{}", n + 1)
}

/// The repository and its base, as every run (and dry run) needs them.
fn check_repo(config: &Config) -> Result<git2::Repository> {
    let repo = crate::git::open(&config.workspace.repo)?;
    crate::git::resolve_commit(&repo, &config.workspace.base)?;
    Ok(repo)
}

/// A task's branch must not exist unless flocks created it for that task.
fn check_branches(repo: &git2::Repository, state: &State, tasks: &TaskSet) -> Result<()> {
    for t in &tasks.tasks {
        let ours = state
            .task(&t.id)
            .is_some_and(|r| r.branch_created && r.branch == t.branch);
        if ours {
            continue;
        }
        if crate::git::branch_tip(repo, &t.branch)?.is_some() {
            return Err(Error::input(
                &tasks.source,
                Some(t.line),
                Some("branch"),
                format!(
                    "branch `{}` already exists and flocks did not create it for task `{}`: choose another branch, or delete it if it holds nothing you need",
                    t.branch, t.id
                ),
            ));
        }
    }
    Ok(())
}

/// Bring the task list into state: new tasks are queued, interrupted ones
/// re-queued, changed prompts reported; failed tasks outside `scope` (when
/// there is one) are left as they are. Returns notices for the user.
fn merge_tasks(
    state: &mut State,
    tasks: &TaskSet,
    config: &Config,
    opts: &RunOptions,
    scope: Option<&HashSet<String>>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let worktrees = config.worktrees_dir();
    let mut failed_before = Vec::new();
    for t in &tasks.tasks {
        let hash = t.prompt_hash();
        let Some(rec) = state.task_mut(&t.id) else {
            state.push_task(TaskRecord {
                id: t.id.clone(),
                branch: t.branch.clone(),
                worktree: worktrees.join(&t.id),
                prompt_hash: hash,
                title: t.title.clone(),
                depends_on: t.depends_on.clone(),
                status: TaskStatus::Pending,
                attempts: Vec::new(),
                branch_created: false,
                requeues: 0,
                next: None,
                origin: None,
                expect_commits: t.expect_commits,
            });
            continue;
        };
        rec.title = t.title.clone();
        rec.expect_commits = t.expect_commits;
        rec.depends_on = t.depends_on.clone();
        if rec.branch != t.branch && rec.attempts.is_empty() {
            rec.branch = t.branch.clone();
            rec.branch_created = false;
        }
        let changed = rec.prompt_hash != hash;
        match rec.status.clone() {
            TaskStatus::Done {
                outcome: Outcome::Success,
            } => {
                if changed {
                    notes.push(format!(
                        "task {} succeeded with an earlier prompt, and its prompt has changed since: it is not run again; `{}` runs it with the new one",
                        t.id,
                        crate::suggest::command(&["flocks", "retry", "--force", &t.id])
                    ));
                }
                continue;
            }
            TaskStatus::Done { outcome } if outcome.counts_against_retries() => {
                if scope.is_some_and(|s| !s.contains(&t.id)) {
                    continue;
                }
                if opts.supervise && rec.counted_failures() < 1 + opts.max_retries {
                    let last = rec.last_attempt().map(|a| a.number).unwrap_or(0);
                    rec.next = Some(crate::retry::next_after_failure(
                        rec,
                        last,
                        config,
                        &config.state_dir().join("logs"),
                    ));
                    if let Err(e) = rec.transition(TaskStatus::Pending) {
                        notes.push(format!("internal error, please report it: {e}"));
                    }
                } else {
                    failed_before.push(t.id.clone());
                    continue;
                }
            }
            TaskStatus::Done { .. } | TaskStatus::Blocked { .. } | TaskStatus::Running { .. } => {
                if let Err(e) = rec.transition(TaskStatus::Pending) {
                    notes.push(format!("internal error, please report it: {e}"));
                }
            }
            TaskStatus::Pending => {}
        }
        rec.requeues = 0;
        // It runs in this run: the attempt gets the new prompt, and the
        // dispatcher says how when it starts (fresh session or follow-up).
        if changed {
            rec.prompt_hash = hash;
        }
    }
    if !failed_before.is_empty() {
        notes.push(format!(
            "{} task(s) failed in an earlier run and are not run again: {} (`flocks retry --all-failed`, or `flocks run --supervise`)",
            failed_before.len(),
            failed_before.join(", ")
        ));
    }
    notes
}

/// Fail early, before any worktree, when a local pool cannot find the agent.
fn preflight(config: &Config) -> Result<()> {
    for p in &config.pools {
        if let BackendConfig::Local = p.backend {
            let env: Vec<(String, String)> = config
                .agent
                .env
                .iter()
                .chain(p.env.iter())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            crate::backend::local::resolve_program(&config.agent.command, &config.dir, &env)
                .map_err(|e| Error::CannotStart(format!("pool {}: {e}", p.name)))?;
        }
    }
    Ok(())
}

fn dry_run(project: &Project, tasks: &TaskSet, as_json: bool) -> Result<Exit> {
    let config = &project.config;
    // What a real run checks before it starts, with the same errors and exit
    // codes: the repository, the base, the agent, the task branches.
    let repo = check_repo(config)?;
    preflight(config)?;
    let state = project.store.load()?;
    check_branches(&repo, &state, tasks)?;
    drop(repo);
    let landed = crate::land::landed_ids(project, &state);
    let order = dependency_order(&tasks.tasks).unwrap_or_else(|_| (0..tasks.tasks.len()).collect());
    let mut assigned = vec![0usize; config.pools.len()];
    let mut rows = Vec::new();
    for (step, &i) in order.iter().enumerate() {
        let t = &tasks.tasks[i];
        let status = match state.task(&t.id) {
            Some(_) if landed.contains(&t.id) => crate::commands::status::LANDED,
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
        rows.push(json!({
            "order": step + 1,
            "id": t.id,
            "branch": t.branch,
            "worktree": config.worktrees_dir().join(&t.id),
            "pool": pool,
            "depends_on": t.depends_on,
            "status": status,
        }));
    }
    if as_json {
        let pools: Vec<_> = config
            .pools
            .iter()
            .map(|p| json!({"name": p.name, "backend": p.backend.kind(), "slots": p.max_worktrees}))
            .collect();
        let out = json!({"tasks": rows, "pools": pools, "max_agents": config.max_agents});
        crate::outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    crate::outln!(
        "plan for {} task(s) from {} (nothing is run):",
        tasks.tasks.len(),
        tasks.source.display()
    );
    use crate::output::table::{Align, Table};
    let mut table = Table::new(
        "  ",
        &[
            ("#", Align::Right),
            ("task", Align::Left),
            ("pool", Align::Left),
            ("branch", Align::Left),
            ("status", Align::Left),
            ("after", Align::Left),
        ],
    );
    for r in &rows {
        let deps: Vec<&str> = r["depends_on"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str())
            .collect();
        let status = r["status"].as_str().unwrap_or("");
        table.styled_row(vec![
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
        ]);
    }
    crate::out!("{}", table.render());
    crate::outln!("worktrees: {}/<task>", config.worktrees_dir().display());
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
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_stay_unique_within_a_second() {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-30T02:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let first = next_run_id(None, t);
        assert_eq!(first, "20261130-021500");
        let second = next_run_id(Some(&first), t);
        assert_eq!(second, "20261130-021500-2");
        assert_eq!(next_run_id(Some(&second), t), "20261130-021500-3");
        let later = t + chrono::Duration::seconds(1);
        assert_eq!(next_run_id(Some(&second), later), "20261130-021501");
    }
}
