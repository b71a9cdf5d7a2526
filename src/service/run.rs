//! The run service: lock, state, reconcile, requeue, merge, dispatch to the
//! end. `run`, `retry`, `sail` and `land --resolve` call [`execute`] with a
//! [`RunRequest`] and print the [`Finished`] it returns.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::Utc;

use super::merge::{merge_tasks, requeue};
use super::preflight::{
    check_agents, check_branches, check_no_live_run, check_repo, check_schedulers,
};
use crate::agent::Redactor;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::prompt::Template;
use crate::report::Reporter;
use crate::runner::credentials::Credentials;
use crate::runner::dispatcher::DispatcherParts;
use crate::runner::{Dispatcher, RunOptions};
use crate::state::RunInfo;
use crate::tasks::TaskSet;

pub(crate) use super::merge::{Redo, Requeue};

/// One run of a task list, as a command asks for it.
pub(crate) struct RunRequest {
    pub tasks: TaskSet,
    pub template: Option<Template>,
    /// Only these tasks (and what merging re-queues of them) run; `None`: all.
    pub scope: Option<HashSet<String>>,
    pub opts: RunOptions,
    /// The command, as the project lock names its holder.
    pub command: &'static str,
    /// What the command runs again, queued before the list is merged.
    pub requeue: Requeue,
}

/// How a run ended, for the command to print.
pub(crate) struct Finished {
    pub exit: Exit,
    /// The summary table of the tasks in scope.
    pub summary: String,
    pub stopped_because: Option<String>,
    /// Ctrl-C stopped it (its exit is then [`Exit::Interrupted`]).
    pub interrupted: bool,
}

impl Finished {
    /// The summary, then why the run stopped early (if it did).
    pub(crate) fn print(&self) {
        crate::output::report(&self.summary);
        if let Some(why) = &self.stopped_because {
            crate::outln!("stopped: {why}");
        }
    }
}

/// Everything after loading: checks, lock, state, reconcile, requeue, merge,
/// backends, reporters, dispatch to the end.
pub(crate) fn execute(project: Project, req: RunRequest) -> Result<Finished> {
    // Before the run's threads start: a run holds its memory for hours.
    crate::malloc::limit_arenas();
    let RunRequest {
        tasks,
        template,
        scope,
        opts,
        command,
        requeue: marks,
    } = req;
    let config = project.config.clone();
    let Checked {
        _lock,
        mut state,
        scheduler_notes,
        notify,
    } = check(&project, &tasks, command)?;
    let key = project.key();
    let mut notices = begin(
        &project,
        &mut state,
        Begin {
            tasks: &tasks,
            opts: &opts,
            scope: scope.as_ref(),
            marks,
            scheduler_notes,
        },
    )?;
    let worktrees = worktrees(&project)?;
    let creds = Credentials::from_env(&config);
    for (name, var) in creds.missing() {
        notices.push(format!(
            "credential {name}: ${var} is not set; pools that need it cannot run"
        ));
    }
    // One host `.git` guard per repository for the whole run: every docker
    // pool and the judges' validation share it.
    let guards = crate::guard::Guards::new();
    let backends = config
        .pools
        .iter()
        .map(|p| crate::backend::for_pool(&config, p, worktrees.clone(), &guards))
        .collect::<Result<Vec<_>>>()?;
    // Remote pools connect now (helper, mirror, setup): a host that is down
    // takes its pool out of this run, with a notice naming it.
    let runtime = super::runtime()?;
    for (p, b) in config.pools.iter().zip(&backends) {
        if let Some(why) = runtime.block_on(b.connect(&mut notices)) {
            notices.push(format!("pool {} is not used in this run: {why}", p.name));
        }
    }
    let (proxy, proxy_events) = start_proxy(&config, &runtime, &mut notices)?;
    let redactor = Arc::new(Redactor::new(creds.secrets()));
    let mut reporters = reporters(&project, opts.progress, notify);
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
        proxy,
        proxy_events,
        guards,
    });
    let summary = runtime.block_on(dispatcher.run());
    let state = store.load()?;
    let landed = crate::land::landed_ids(&Project::from_config(config), &state);
    Ok(Finished {
        exit: summary.exit,
        summary: crate::report::summary::render(&state, &ids, &log_root, &landed),
        stopped_because: summary.stopped_because,
        interrupted: summary.interrupted,
    })
}

/// What the checks before a run leave: the project's lock, its state, what
/// the schedulers said, the notifiers.
struct Checked {
    _lock: crate::state::ProjectLock,
    state: crate::state::State,
    scheduler_notes: Vec<String>,
    notify: crate::notify::Notifiers,
}

/// The checks before anything is created (repo, agents, schedulers,
/// notifiers), then the lock, the state and the checks that need them.
fn check(project: &Project, tasks: &TaskSet, command: &str) -> Result<Checked> {
    let config = &project.config;
    let repo = check_repo(config)?;
    // A local pool that cannot find the agent stops the run before anything
    // (lock, state, worktrees) is created.
    check_agents(config)?;
    // A Slurm pool whose jobs its scheduler refuses (a bad partition) is a
    // config error before anything is submitted.
    let scheduler_notes: Vec<String> = check_schedulers(config)?
        .into_iter()
        .filter_map(|c| c.said.err().map(|e| format!("pool {}: {e}", c.pool)))
        .collect();
    // A header variable of [[notify]] that is not set is a config error.
    let notify = crate::notify::Notifiers::start(config)?;
    let lock = project.lock(command)?;
    let state = project.store.load()?;
    check_no_live_run(project, &state)?;
    check_branches(&repo, &state, tasks)?;
    Ok(Checked {
        _lock: lock,
        state,
        scheduler_notes,
        notify,
    })
}

/// What a run begins with, besides the project and its state.
struct Begin<'a> {
    tasks: &'a TaskSet,
    opts: &'a RunOptions,
    scope: Option<&'a HashSet<String>>,
    /// What the command runs again.
    marks: Requeue,
    /// What the schedulers said (shown after what reconciling found).
    scheduler_notes: Vec<String>,
}

/// The run begins in the state: what a dead run left is reconciled, what
/// the command runs again is queued, the task list merged, disabled
/// credentials given another chance, the run recorded and saved. Returns
/// the notes to show.
fn begin(project: &Project, state: &mut crate::state::State, b: Begin) -> Result<Vec<String>> {
    let config = &project.config;
    let mut notices = crate::runner::reconcile::reconcile(state, config, &project.key());
    notices.extend(b.scheduler_notes);
    if let Some(note) = dirty_checkout_note(config) {
        notices.push(note);
    }
    // What the command runs again (`retry`, `land --resolve`) is queued
    // first, so that the notes below never call it "not run again".
    requeue(state, config, b.marks)?;
    notices.extend(merge_tasks(state, b.tasks, config, b.opts, b.scope));
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
        supervise: b.opts.supervise,
        pid_start: crate::state::process_start(std::process::id()),
        waiting: None,
    });
    project.store.save(state)?;
    // Saved whole: the dispatcher's journal starts from here.
    state.changed.clear();
    Ok(notices)
}

/// The run's worktrees (the repo's excludes made sure of first).
fn worktrees(project: &Project) -> Result<Arc<crate::git::Worktrees>> {
    let config = &project.config;
    let repo = crate::git::open(&config.workspace.repo)?;
    let excludes = crate::git::exclude_patterns(
        &config.workspace.repo,
        &[project.state_dir(), config.worktrees_dir()],
    );
    crate::git::ensure_excluded(&repo, &excludes)?;
    drop(repo);
    Ok(Arc::new(
        crate::git::Worktrees::new(&config.workspace.repo, &config.worktrees_dir())?
            .with_max_spares(config.workspace.max_spare_worktrees),
    ))
}

/// The receiving end of the proxy's events.
type ProxyEvents = tokio::sync::mpsc::Receiver<crate::proxy::ProxyEvent>;

/// The model proxy and egress gate, when a pool injects a flocks credential
/// or `[network]` is set; whether the model API answers is checked without
/// holding the run up.
fn start_proxy(
    config: &crate::config::Config,
    runtime: &tokio::runtime::Runtime,
    notices: &mut Vec<String>,
) -> Result<(Option<Arc<crate::proxy::Proxy>>, Option<ProxyEvents>)> {
    if !crate::proxy::needed(config) {
        return Ok((None, None));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let proxy = crate::proxy::Proxy::start(config, Some(tx.clone())).map_err(|e| match e {
        crate::proxy::StartError::Upstream(why) => Error::Usage(why),
        e => Error::CannotStart(e.to_string()),
    })?;
    notices.extend(proxy_notices(config));
    let proxy = Arc::new(proxy);
    if config
        .pools
        .iter()
        .any(|p| p.credential != crate::config::CredentialChoice::Default)
    {
        let p = proxy.clone();
        runtime.spawn(async move {
            if let Err(why) = p.check_upstream().await {
                let message =
                    format!("{why}: an attempt whose agent cannot reach it ends as spawn_failed");
                let _ = tx.send(crate::proxy::ProxyEvent::Notice(message)).await;
            }
        });
    }
    Ok((Some(proxy), Some(rx)))
}

/// What a run with `[network]` says at its start: the pools for which its
/// allowlist is advisory.
fn proxy_notices(config: &crate::config::Config) -> Vec<String> {
    let mut notes = Vec::new();
    if config.network.is_some() {
        let advisory: Vec<&str> = config
            .pools
            .iter()
            .filter(|p| !p.egress_enforced(config.sandbox.network))
            .map(|p| p.name.as_str())
            .collect();
        if !advisory.is_empty() {
            notes.push(format!(
                "[network] allow is advisory for pool{} {}: their agents get flocks' proxy in HTTP_PROXY/HTTPS_PROXY but can ignore it (their network is not closed)",
                if advisory.len() == 1 { "" } else { "s" },
                advisory.join(", ")
            ));
        }
    }
    notes
}

/// Said once as a run starts: the checkout has uncommitted changes to
/// tracked files, which no agent sees (each works from the base as
/// committed).
fn dirty_checkout_note(config: &crate::config::Config) -> Option<String> {
    let dirty = crate::land::dirty_files(&config.workspace.repo).ok()?;
    if dirty.is_empty() {
        return None;
    }
    const SHOWN: usize = 3;
    let mut files = dirty
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if dirty.len() > SHOWN {
        files.push_str(&format!(" and {} more", dirty.len() - SHOWN));
    }
    Some(format!(
        "the checkout has uncommitted changes ({}: {files}): agents start from {} as committed; uncommitted changes are not in their worktrees (commit them first if the agents need them)",
        crate::output::units::count(dirty.len(), "file"),
        config.workspace.base
    ))
}

/// events.jsonl, progress bars on a terminal or plain lines otherwise, and
/// the notifiers.
fn reporters(
    project: &Project,
    progress: bool,
    notify: crate::notify::Notifiers,
) -> Vec<Box<dyn Reporter>> {
    let terminal: Box<dyn Reporter> =
        if progress && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            Box::new(crate::report::progress::ProgressReporter::stdout(
                project.state_dir().join("logs"),
            ))
        } else {
            Box::new(crate::report::line::LineReporter::new(
                crate::output::stdout(),
            ))
        };
    vec![
        Box::new(crate::report::jsonl::EventsFile::open(
            &project.events_path(),
        )),
        terminal,
        Box::new(crate::notify::NotifyReporter(notify)),
    ]
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
