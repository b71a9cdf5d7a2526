//! One attempt outside a run (`flocks plan`'s planning agent): the first
//! usable pool, its credential, the same executor, log, timeouts and tree
//! kill as every task, and Ctrl-C as the dispatcher handles it (first:
//! graceful stop, second: kill). Nothing of it goes into state.json.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use crate::agent::Redactor;
use crate::agent::spec::{self, SpecInput};
use crate::backend::PrepareJob;
use crate::error::{Error, Result};
use crate::project::Project;
use crate::runner::credentials::{Availability, Credentials};
use crate::runner::executor::{AttemptJob, run_attempt};
use crate::runner::{AttemptReport, RunEvent, StopLevel};
use crate::state::Outcome;

/// What to run, on which branch, and where.
pub(crate) struct SingleAttempt<'a> {
    /// The attempt's id (its worktree, log and tag).
    pub id: &'a str,
    pub branch: &'a str,
    pub prompt: String,
    /// Only this pool; `None`: the first whose credential is ready.
    pub pool: Option<&'a str>,
    /// What the agent's activity lines are prefixed with (`plan`).
    pub label: &'a str,
    /// The agent in error messages (`the planning agent`).
    pub purpose: &'a str,
}

/// A pool is chosen and the attempt is ready to start.
pub(crate) struct Prepared {
    /// The chosen pool's name.
    pub pool: String,
    pub log_path: PathBuf,
    job: AttemptJob,
    redactor: Arc<Redactor>,
    label: String,
    purpose: String,
    /// The config, when the attempt needs flocks' proxy (a flocks
    /// credential, `[network]`): it is started with the attempt.
    proxy_config: Option<crate::config::Config>,
}

/// Choose the pool and build the attempt; an error says why no pool can run it.
pub(crate) fn prepare(project: &Project, req: SingleAttempt<'_>) -> Result<Prepared> {
    let config = &project.config;
    let state = project.store.load()?;
    let creds = Credentials::from_env(config);
    let now = Utc::now();
    let mut unusable = Vec::new();
    let mut chosen = None;
    for (i, p) in config.pools.iter().enumerate() {
        if req.pool.is_some_and(|want| want != p.name) {
            continue;
        }
        match creds.available(&p.credential, &state, now) {
            Availability::Ready(injected) => {
                chosen = Some((i, injected));
                break;
            }
            Availability::ParkedUntil(t) => unusable.push(format!(
                "pool {}: its credentials are parked until {}",
                p.name,
                t.with_timezone(&chrono::Local).format("%H:%M:%S")
            )),
            Availability::Unusable(why) => unusable.push(format!("pool {}: {why}", p.name)),
            // Nothing runs outside a run: no credential is full or ramping.
            Availability::Busy => unusable.push(format!(
                "pool {}: its credentials run as many agents as they may",
                p.name
            )),
        }
    }
    let Some((pool_index, injected)) = chosen else {
        if let Some(want) = req.pool
            && config.pool(want).is_none()
        {
            return Err(Error::Usage(format!(
                "no pool named `{want}` in {}",
                config.path.display()
            )));
        }
        return Err(Error::CannotStart(format!(
            "no pool can run {}: {}",
            req.purpose,
            unusable.join("; ")
        )));
    };
    let pool_cfg = &config.pools[pool_index];
    let worktrees = Arc::new(
        crate::git::Worktrees::new(&config.workspace.repo, &config.worktrees_dir())?
            .with_max_spares(config.workspace.max_spare_worktrees),
    );
    let guards = crate::guard::Guards::new();
    let backend = crate::backend::for_pool(config, pool_cfg, worktrees, &guards)?;
    let redactor = Arc::new(Redactor::new(creds.secrets()));
    let spec = spec::build(SpecInput {
        config,
        pool: pool_cfg,
        credential: injected.as_ref(),
        task_id: req.id,
        prompt: req.prompt,
        tag: format!("{}:{}:1", project.key(), req.id),
        resume: None,
    });
    let log_path = project.log_path(req.id, 1)?;
    let job = AttemptJob {
        task: req.id.to_string(),
        attempt: 1,
        prepare: PrepareJob {
            task: req.id.to_string(),
            branch: req.branch.to_string(),
            base: config.workspace.base.clone(),
            fresh: false,
            origin: None,
        },
        backend,
        spec,
        credential: injected.map(|c| c.name),
        log_path: log_path.clone(),
        redactor: redactor.clone(),
        timeout: config.agent_timeout,
        stall: config.stall_timeout,
        grace: config.kill_grace,
        expect_commits: true,
        repo_dir: config.workspace.repo.clone(),
        setup: crate::runner::setup::SetupPlan::from_config(config),
        proxy: None,
        guards,
    };
    let proxy_config =
        (job.spec.credential.is_some() || config.network.is_some()).then(|| config.clone());
    Ok(Prepared {
        pool: pool_cfg.name.clone(),
        log_path,
        job,
        redactor,
        label: req.label.to_string(),
        purpose: req.purpose.to_string(),
        proxy_config,
    })
}

impl Prepared {
    /// Run the attempt to its end, printing its activity; after Ctrl-C an
    /// attempt that did not succeed is reported as interrupted.
    pub(crate) fn run(self) -> Result<AttemptReport> {
        let Prepared {
            mut job,
            redactor,
            label,
            purpose,
            proxy_config,
            ..
        } = self;
        super::runtime()?.block_on(async move {
            // Its proxy lives as long as the attempt; nothing reads its
            // events outside a run (nothing of it goes into state.json).
            if let Some(config) = &proxy_config {
                let proxy = crate::proxy::Proxy::start(config, None).map_err(|e| match e {
                        crate::proxy::StartError::Upstream(why) => Error::Usage(why),
                        e => Error::CannotStart(e.to_string()),
                    })?;
                job.proxy = Some(Arc::new(proxy));
            }
            let (tx, mut rx) = mpsc::channel(256);
            let (stop_tx, stop_rx) = watch::channel(StopLevel::Run);
            tokio::spawn(run_attempt(job, tx, stop_rx));
            let mut interrupts = 0;
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Some(RunEvent::Activity { activity, .. }) => {
                            crate::outln!("  {label}: {}", redactor.redact(&activity));
                        }
                        Some(RunEvent::Finished { mut report, .. }) => {
                            if interrupts > 0 && !matches!(report.outcome, Outcome::Success) {
                                report.outcome = Outcome::Interrupted;
                            }
                            return Ok(*report);
                        }
                        Some(_) => {}
                        None => return Err(Error::Internal(format!("{purpose} ended without a report"))),
                    },
                    _ = tokio::signal::ctrl_c() => {
                        interrupts += 1;
                        let level = if interrupts == 1 { StopLevel::Graceful } else { StopLevel::Kill };
                        let _ = stop_tx.send(level);
                    }
                }
            }
        })
    }
}
