//! The Slurm backend: each attempt is one job of the cluster's scheduler,
//! and flocks, on the login node, never touches `remote_dir` itself.
//!
//! ```text
//!  admit:   salloc -J flocks-<project>-<task>-<n> --comment "flocks project=K run=R"
//!           [--partition --account --qos --time sbatch_args] -- holder   (alloc.rs)
//!           pending: squeue's reason, polled for the pool's pending jobs at once
//!  prepare: srun --jobid=N --overlap helper init (once a run), setup (once per
//!           remote_dir), salvage, have/receive (a bundle of the start commit in),
//!           prepare (worktrees/<task> on the branch)                   (step.rs)
//!  spawn:   srun --jobid=N --overlap helper run: the agent; stdout/stderr stream
//!           back; stdin is the control channel (closed: the agent ends)
//!  stop:    scancel --signal=TERM N; after kill_grace_secs scancel --signal=KILL N.<step>
//!  finish:  srun ... helper finish: the branch back as a bundle → the intake
//!  end:     the holder's stdin closed → salloc relinquishes N (a stopped
//!           attempt's job: scancel N); accounting from sacct, or squeue
//!  upkeep:  between waves, srun --jobid=<a running job> --overlap helper pack
//!           (none runs: the next job granted does it)          (upkeep.rs)
//! ```
//!
//! The helper's root is `<remote_dir>/<project key>` on the cluster's shared
//! filesystem: its mirror, the tasks' worktrees (kept across attempts, which
//! may run on other nodes) and the setup marker. Everything there is the
//! agents' to write, so it is read only through the helper, on the compute
//! node, and what comes back is checked (`helper::read_reply`, the intake).
//! So is the mirror's upkeep between waves: the helper's `pack`, in a step
//! of a job of the pool (upkeep.rs).

pub(crate) mod alloc;
pub(crate) mod check;
mod naming;
pub(crate) mod sched;
mod shell;
pub(crate) mod step;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;

pub(crate) use naming::{
    comment, expand_remote_dir, job_options, project_name, stale_jobs, time_limit_min,
};
use naming::{names, scrub_list};
pub(crate) use step::SlurmControl;

use self::alloc::{Alloc, Progress, Request};
use self::step::Step;
use super::helper::Header;
use super::helper::session::{self, CallError, Known, Session};
use super::{
    Backend, BoxFuture, FinishError, Finished, JobReports, MarkError, PrepareError, PrepareJob,
    Running, SpawnError, Ticket, Workspace,
};
use crate::agent::AgentSpec;
use crate::config::{Config, PoolConfig, SlurmConfig};
use crate::git::Worktrees;
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::git::intake;
use crate::state::Job;

/// The run id in the comment of jobs outside a run (`flocks plan`'s
/// agent) and of `hosts check`'s job: the sweep leaves them to their own
/// process, which ends them (they are not a run's).
pub(crate) const OUTSIDE_A_RUN: &str = "none";
pub(crate) const CHECK_RUN: &str = "check";

/// How often the reasons of the pool's pending jobs are asked for.
const POLL_EVERY: Duration = Duration::from_secs(2);
/// Added to a job's time limit for the helper's ops (bundles both ways,
/// checkouts) and the pool's setup.
const OPS_MARGIN_SECS: u64 = 300;
/// How long a setup command may take.
const SETUP_LIMIT: Duration = Duration::from_secs(3600);

/// A Slurm pool of one run.
pub(crate) struct SlurmBackend {
    pool: String,
    cfg: SlurmConfig,
    /// For job names: `flocks-<project>-<task>-<attempt>`.
    project: String,
    key: String,
    run_id: String,
    /// `<remote_dir>/<key>`, expanded here; or why it cannot be.
    root: Result<String, String>,
    max_worktrees: usize,
    time_limit_min: Option<u64>,
    grace: Duration,
    repo_dir: PathBuf,
    worktrees: Arc<Worktrees>,
    identity: Vec<(String, String)>,
    /// Variables kept out of every Slurm command flocks runs.
    scrub: Vec<String>,
    allocs: Mutex<HashMap<String, Arc<Alloc>>>,
    /// The helper's root is made (and the setup ran) in this run.
    ready: tokio::sync::Mutex<bool>,
    known: Known,
    /// Serializes git ref and worktree changes in the shared mirror.
    admin: tokio::sync::Mutex<()>,
    down: Mutex<Option<String>>,
    /// The pool's pending jobs, and what squeue said of them last.
    pending: Mutex<HashSet<String>>,
    polled: tokio::sync::Mutex<(Option<Instant>, HashMap<String, sched::Row>)>,
    /// The mirror's upkeep (`pack` in a step of one of the pool's jobs).
    upkeep: Arc<upkeep::Upkeep>,
}

impl SlurmBackend {
    pub(crate) fn new(
        config: &Config,
        pool: &PoolConfig,
        cfg: &SlurmConfig,
        worktrees: Arc<Worktrees>,
    ) -> SlurmBackend {
        let key = crate::paths::key_of(&config.state_dir());
        // This process's run (saved before the backends are made); `none`
        // for an attempt outside a run (`flocks plan`).
        let run_id = crate::state::StateStore::new(&config.state_dir())
            .load()
            .ok()
            .and_then(|s| s.run)
            .filter(|r| r.pid == std::process::id() && r.ended_at.is_none())
            .map(|r| r.id)
            .unwrap_or_else(|| OUTSIDE_A_RUN.into());
        let root = expand_remote_dir(&cfg.remote_dir).map(|d| format!("{d}/{key}"));
        SlurmBackend {
            pool: pool.name.clone(),
            cfg: cfg.clone(),
            project: project_name(config),
            key,
            run_id,
            root,
            max_worktrees: pool.max_worktrees,
            time_limit_min: time_limit_min(config),
            grace: config.kill_grace,
            repo_dir: config.workspace.repo.clone(),
            worktrees,
            identity: crate::backend::ssh::git_identity(&config.workspace.repo),
            scrub: scrub_list(config, pool),
            allocs: Mutex::new(HashMap::new()),
            ready: tokio::sync::Mutex::new(false),
            known: Known::default(),
            admin: tokio::sync::Mutex::new(()),
            down: Mutex::new(None),
            pending: Mutex::new(HashSet::new()),
            polled: tokio::sync::Mutex::new((None, HashMap::new())),
            upkeep: Arc::default(),
        }
    }

    /// The job name of one attempt.
    pub(crate) fn job_name(&self, task: &str, attempt: u32) -> String {
        format!("flocks-{}-{task}-{attempt}", self.project)
    }

    /// The comment every job of this run carries.
    pub(crate) fn comment(&self) -> String {
        comment(&self.key, &self.run_id)
    }

    fn set_down(&self, why: &str) -> Option<String> {
        let why = why.to_string();
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
        Some(why)
    }

    /// Before the run: the scheduler answers, the partition exists,
    /// `remote_dir` is a path; jobs an earlier run of this project left
    /// (flocks was killed) are cancelled.
    pub(crate) async fn connect_pool(&self, notes: &mut Vec<String>) -> Option<String> {
        if let Err(e) = &self.root {
            return self.set_down(e);
        }
        let parts = match sched::partitions().await {
            Ok(p) => p,
            Err(e) => return self.set_down(&e.to_string()),
        };
        if let Some(p) = &self.cfg.partition
            && !parts.iter().any(|(n, ..)| n == p)
        {
            return self.set_down(&format!(
                "partition `{p}` does not exist on this cluster (sinfo lists {})",
                names(&parts)
            ));
        }
        match self.sweep().await {
            Ok(ids) if !ids.is_empty() => notes.push(format!(
                "pool {}: cancelled {} left by an earlier flocks run of this project: {}",
                self.pool,
                crate::output::units::count(ids.len(), "Slurm job"),
                ids.join(", ")
            )),
            Ok(_) => {}
            Err(e) => notes.push(format!(
                "pool {}: could not look for Slurm jobs an earlier run left: {e}",
                self.pool
            )),
        }
        None
    }

    /// Cancel the jobs of this project whose run has ended: every job
    /// named for the project with a comment of this project's key and
    /// another run's id (runs of a project never overlap: the lock).
    async fn sweep(&self) -> Result<Vec<String>, sched::SchedError> {
        let args = ["-h", "--me", "-o", "%i|%j|%k"].map(String::from);
        let text = sched::output("squeue", &args, sched::QUERY_LIMIT).await?;
        let ids = stale_jobs(&text, &self.project, &self.key, &self.run_id);
        if !ids.is_empty() {
            sched::cancel(&ids, None).await?;
        }
        Ok(ids)
    }

    /// The scheduler's reason for a pending job of this pool; one squeue
    /// for all of them at most every `POLL_EVERY`. None: not known.
    async fn reason_of(&self, id: &str) -> Option<Option<String>> {
        let mut polled = self.polled.lock().await;
        // Stale, or too old to know a job that just joined the queue.
        let stale = polled.0.is_none_or(|at| {
            at.elapsed() >= POLL_EVERY
                || (!polled.1.contains_key(id) && at.elapsed() >= POLL_EVERY / 4)
        });
        if stale {
            let ids: Vec<String> = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned()
                .collect();
            if let Ok(rows) = sched::jobs(&ids).await {
                *polled = (Some(Instant::now()), rows);
            }
        }
        let row = polled.1.get(id)?;
        (row.state == "PENDING").then(|| row.reason.clone())
    }

    fn alloc_of(&self, task: &str) -> Option<Arc<Alloc>> {
        self.allocs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(task)
            .cloned()
    }

    fn root(&self) -> Result<&str, String> {
        self.root.as_deref().map_err(|e| e.clone())
    }

    fn step<'a>(&'a self, alloc: &'a Arc<Alloc>, root: &'a str) -> Step<'a> {
        Step {
            alloc,
            root,
            scrub: &self.scrub,
        }
    }

    fn session<'a>(&'a self, step: &'a Step<'a>, env: &'a [(String, String)]) -> Session<'a> {
        Session {
            transport: step,
            repo_dir: &self.repo_dir,
            env,
            max_bytes: intake::DEFAULT_MAX_FETCH_MB << 20,
            known: &self.known,
        }
    }

    fn identity_for(&self, root: &str, task: &str) -> Vec<(String, String)> {
        crate::backend::ssh::identity_for(&self.identity, root, task)
    }

    fn lost(&self, e: CallError) -> PrepareError {
        match e {
            CallError::Lost(m) => PrepareError::HostLost(format!("pool {}: {m}", self.pool)),
            e => PrepareError::Failed(format!("{e} (pool {})", self.pool)),
        }
    }

    /// Wait until the attempt's job runs.
    pub(crate) async fn admit(
        &self,
        ticket: &Ticket,
        jobs: JobReports,
    ) -> Result<(), PrepareError> {
        if let Some(why) = self.down_reason() {
            return Err(PrepareError::HostLost(format!("pool {}: {why}", self.pool)));
        }
        let name = self.job_name(&ticket.task, ticket.attempt);
        let req = Request {
            name: name.clone(),
            comment: self.comment(),
            options: job_options(&self.cfg, self.time_limit_min),
            scrub: self.scrub.clone(),
        };
        // A job cancelled before it ran (a stop while it waits) says so.
        let cancelled = jobs.clone();
        let asked = alloc::ask(&req)
            .map_err(|e| {
                PrepareError::Failed(format!(
                    "pool {}: cannot ask Slurm for a job: {e}",
                    self.pool
                ))
            })?
            .on_cancel(move |id| {
                let _ = cancelled.send(Job {
                    id,
                    state: "CANCELLED".into(),
                    ..Job::default()
                });
            });
        let mut seen: Option<String> = None;
        let waited = asked
            .wait(
                POLL_EVERY,
                |p| {
                    let Progress::Pending { id, reason } = p;
                    self.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id.clone());
                    seen = Some(id.clone());
                    let _ = jobs.send(Job {
                        id,
                        state: "PENDING".into(),
                        reason,
                        ..Job::default()
                    });
                },
                |id: String| async move { self.reason_of(&id).await },
            )
            .await;
        if let Some(id) = &seen {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
        }
        let alloc = waited.map_err(|why| {
            PrepareError::Failed(format!(
                "pool {}: Slurm did not run job {name}: {why}",
                self.pool
            ))
        })?;
        let _ = jobs.send(Job {
            id: alloc.id.clone(),
            state: "RUNNING".into(),
            node: Some(alloc.node.clone()),
            started_at: Some(alloc.started_at),
            ..Job::default()
        });
        let alloc = Arc::new(alloc);
        let claim = {
            let mut allocs = self.allocs.lock().unwrap_or_else(|e| e.into_inner());
            allocs.insert(ticket.task.clone(), alloc.clone());
            self.upkeep.claim_owed(&alloc.id)
        };
        // The mirror's upkeep a wave owed it (no job of the pool ran then):
        // beside the attempt, which does not wait for it.
        if let Some(claim) = claim {
            match self.pack_place() {
                Some(place) => {
                    let upkeep = self.upkeep.clone();
                    tokio::spawn(async move {
                        upkeep.say_later(place.pack(&alloc).await);
                        upkeep.ended(claim);
                    });
                }
                None => self.upkeep.ended(claim),
            }
        }
        Ok(())
    }

    /// The helper's root, made in this run (and the pool's setup run there
    /// once per `remote_dir`), through a step of `alloc`.
    async fn ready(&self, alloc: &Arc<Alloc>) -> Result<String, PrepareError> {
        let root = self
            .root()
            .map_err(|e| PrepareError::Failed(format!("pool {}: {e}", self.pool)))?
            .to_string();
        let mut ready = self.ready.lock().await;
        if *ready {
            return Ok(root);
        }
        let step = self.step(alloc, &root);
        let hash = crate::backend::ssh::setup_hash(&self.cfg.setup);
        let made = session::init(&step, &hash)
            .await
            .map_err(|e| self.lost(e))?;
        if !self.cfg.setup.is_empty() && !made.setup_done {
            self.run_setup(&step, &root, &hash).await?;
        }
        *ready = true;
        Ok(root)
    }

    /// The pool's `setup` commands (the user's own config) in the helper's
    /// root, as steps of the job; then the marker that they ran.
    async fn run_setup(&self, step: &Step<'_>, root: &str, hash: &str) -> Result<(), PrepareError> {
        for c in &self.cfg.setup {
            let argv = c.argv();
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut cmd = step.command(&argv, root);
            cmd.stdin(std::process::Stdio::null());
            let out = tokio::time::timeout(SETUP_LIMIT, cmd.output())
                .await
                .map_err(|_| {
                    PrepareError::Failed(format!(
                        "pool {}: setup command `{c}` did not end within {}s",
                        self.pool,
                        SETUP_LIMIT.as_secs()
                    ))
                })?
                .map_err(|e| {
                    PrepareError::Failed(format!("pool {}: cannot run srun: {e}", self.pool))
                })?;
            if !out.status.success() {
                return Err(PrepareError::Failed(format!(
                    "pool {}: setup command `{c}` failed on {}: {}",
                    self.pool,
                    step.alloc.node,
                    sched::last_words(&String::from_utf8_lossy(&out.stderr))
                )));
            }
        }
        let mut cmd = step.command(
            &[
                "/bin/sh",
                "-c",
                "printf '%s\\n' \"$1\" >\"$FLOCKS_HELPER_ROOT/setup.done\"",
                "flocks-setup",
                hash,
            ],
            "/",
        );
        cmd.stdin(std::process::Stdio::null());
        match cmd.output().await {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(PrepareError::Failed(format!(
                "pool {}: cannot record that the setup ran: {}",
                self.pool,
                sched::last_words(&String::from_utf8_lossy(&o.stderr))
            ))),
            Err(e) => Err(PrepareError::Failed(format!(
                "pool {}: cannot run srun: {e}",
                self.pool
            ))),
        }
    }

    pub(crate) async fn prepare(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        let alloc = self.alloc_of(&job.task).ok_or_else(|| {
            PrepareError::Failed(format!(
                "pool {}: no Slurm job runs {}",
                self.pool, job.task
            ))
        })?;
        let root = self.ready(&alloc).await?;
        let step = self.step(&alloc, &root);
        let env = self.identity_for(&root, &job.task);
        let session = self.session(&step, &env);
        // Work an interrupted attempt (flocks was killed) left in the task's
        // worktree on the shared filesystem comes back first.
        let place = format!("Slurm pool {}", self.pool);
        let note = if job.fresh {
            None
        } else {
            session
                .salvage(job, Some(self.worktrees.path_for(&job.task)), &place)
                .await
                .map_err(|e| self.lost(e))?
        };
        let (repo_dir, j) = (self.repo_dir.clone(), job.clone());
        let (start, created) = tokio::task::spawn_blocking(move || {
            crate::backend::ssh::local_start(&repo_dir, &j.branch, &j.base, j.fresh)
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))?;
        let oid = git2::Oid::from_str(&start).map_err(|e| PrepareError::Failed(e.to_string()))?;
        let p = {
            let _guard = self.admin.lock().await;
            session
                .send_start(&job.task, oid)
                .await
                .map_err(|e| self.lost(e))?;
            session
                .prepare(&job.task, &job.branch, oid)
                .await
                .map_err(|e| self.lost(e))?
        };
        Ok(Workspace {
            host_path: PathBuf::from(format!("{}:{}", self.pool, p.worktree)),
            agent_cwd: p.worktree,
            origin: job.origin_for(&start, created),
            start_commit: start,
            created_branch: created,
            note,
            setup_mark: p.setup_mark,
        })
    }

    /// The agent's environment for a Slurm attempt, on top of what its step
    /// inherits: the helper's git identity, then the spec's (credential,
    /// tag, `[agent] env`, the pool's `env`). This is where the model
    /// proxy's address and per-attempt token join it: they must name an
    /// address the compute nodes reach (the login node's), never loopback.
    fn agent_env(&self, root: &str, task: &str, spec: &AgentSpec) -> Vec<(String, String)> {
        let mut env = self.identity_for(root, task);
        env.retain(|(k, _)| !spec.env.iter().any(|(s, _)| s == k));
        env.extend(spec.env.iter().cloned());
        crate::agent::spec::add_agent_git_config(&mut env, 0);
        env
    }

    pub(crate) async fn spawn(
        &self,
        _ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        let task = spec
            .env
            .iter()
            .find(|(k, _)| k == "FLOCKS_TASK")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let alloc = self.alloc_of(&task).ok_or_else(|| {
            SpawnError::Start(format!("pool {}: no Slurm job runs {task}", self.pool))
        })?;
        let root = self.root().map_err(SpawnError::Start)?;
        let grace_ds = (self.grace.as_millis() / 100).max(1);
        let env = self.agent_env(root, &task, &spec);
        let header = Header::new("run")
            .line("task", &task)
            .and_then(|x| x.line("tag", &spec.tag))
            .and_then(|x| x.line("grace_ds", grace_ds))
            .and_then(|x| x.line("heartbeat", step::HEARTBEAT_SECS))
            .and_then(|x| x.lines("unset", &spec.remove_env))
            .and_then(|x| x.lines("env", env.iter().map(|(k, v)| format!("{k}={v}"))))
            .and_then(|x| x.line("argv", &spec.program))
            .and_then(|x| x.lines("argv", &spec.args))
            .map_err(|_| SpawnError::Unsendable)?;
        let mut input = header.prompt(spec.prompt.len());
        input.extend_from_slice(spec.prompt.as_bytes());
        self.step(&alloc, root).run(input).await
    }

    /// A setup command runs as the agent does, in the job; a script of
    /// several lines goes on its stdin ([`super::script_on_stdin`]).
    pub(crate) async fn start_setup(
        &self,
        ws: &Workspace,
        spec: AgentSpec,
    ) -> Result<Running, SpawnError> {
        self.spawn(ws, super::script_on_stdin(spec)).await
    }

    pub(crate) async fn finish(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        let alloc = self.alloc_of(task).ok_or_else(|| FinishError::NoHost {
            pool: self.pool.clone(),
            task: task.to_string(),
        })?;
        let root = self.root().map_err(FinishError::Measure)?;
        let step = self.step(&alloc, root);
        let env = self.identity_for(root, task);
        Ok(self
            .session(&step, &env)
            .finish(
                task,
                branch,
                attempt,
                &ws.start_commit,
                &ws.origin,
                Some(self.worktrees.path_for(task)),
                "flocks: the attempt's work from its Slurm job",
            )
            .await?)
    }

    pub(crate) async fn release(&self, task: &str) {
        let (Some(alloc), Ok(root)) = (self.alloc_of(task), self.root()) else {
            return;
        };
        let step = self.step(&alloc, root);
        let _guard = self.admin.lock().await;
        let _ = self.session(&step, &[]).release(task).await;
    }

    async fn copy_in(&self, task: &str, files: Arc<IncludeSet>) -> Result<Copied, IncludeError> {
        let transfer = |why: String| IncludeError::Transfer {
            host: format!("Slurm pool {}", self.pool),
            why,
        };
        let alloc = self
            .alloc_of(task)
            .ok_or_else(|| transfer(format!("no Slurm job runs {task}")))?;
        let root = self.root().map_err(transfer)?;
        let step = self.step(&alloc, root);
        self.session(&step, &[])
            .include(task, files)
            .await
            .map_err(|e| transfer(e.to_string()))
    }

    async fn mark_setup(&self, task: &str, hash: &str) -> Result<(), MarkError> {
        let alloc = self.alloc_of(task).ok_or_else(|| {
            MarkError::Helper(CallError::Failed(format!(
                "pool {}: no Slurm job runs {task}",
                self.pool
            )))
        })?;
        let root = self
            .root()
            .map_err(|e| MarkError::Helper(CallError::Failed(e)))?;
        let step = self.step(&alloc, root);
        Ok(self.session(&step, &[]).mark(task, hash).await?)
    }

    /// Let go of the attempt's job; its accounting.
    async fn end_job(&self, task: &str) -> Option<Job> {
        let (alloc, packing) = {
            let mut allocs = self.allocs.lock().unwrap_or_else(|e| e.into_inner());
            let alloc = allocs.remove(task)?;
            let packing = self.upkeep.packs_in(&alloc.id);
            (alloc, packing)
        };
        // The mirror's pack runs in a step of this job: the job goes after it.
        if packing {
            self.upkeep.wait().await;
        }
        // The job ended before flocks let go of it: the scheduler (or
        // someone) ended it.
        let ended_first = alloc.gone().is_some();
        alloc.release().await;
        let elapsed = (Utc::now() - alloc.started_at).num_milliseconds().max(0) as f64 / 1000.0;
        let mut job = Job {
            id: alloc.id.clone(),
            state: "RUNNING".into(),
            reason: None,
            node: Some(alloc.node.clone()),
            started_at: Some(alloc.started_at),
            elapsed_secs: Some(elapsed),
        };
        // sacct where accounting runs; else what squeue still shows of it.
        if let Some((state, nodes, secs)) = sched::accounting(&alloc.id).await
            && sched::ended_state(&state)
        {
            job.state = state;
            job.node = nodes.or(job.node);
            job.elapsed_secs = Some(secs);
            return Some(job);
        }
        // squeue, once: a job still completing ended the way flocks ended
        // it (relinquished: COMPLETED; cancelled: CANCELLED).
        let seen = sched::jobs(std::slice::from_ref(&alloc.id))
            .await
            .ok()
            .and_then(|mut rows| rows.remove(&alloc.id))
            .map(|r| r.state)
            .filter(|s| sched::ended_state(s));
        let stopped = alloc.stopped.load(std::sync::atomic::Ordering::SeqCst);
        job.state = match seen {
            Some(s) => s,
            None if stopped || ended_first => "CANCELLED".into(),
            None => "COMPLETED".into(),
        };
        Some(job)
    }
}

impl Backend for SlurmBackend {
    fn slots(&self, _pool: &PoolConfig) -> usize {
        self.max_worktrees
    }

    fn connect<'a>(&'a self, notes: &'a mut Vec<String>) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.connect_pool(notes))
    }

    fn down_reason(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn host_loss_takes_pool_down(&self) -> bool {
        false
    }

    fn upkeep(&self) -> BoxFuture<'_, Vec<crate::git::upkeep::Remote>> {
        Box::pin(SlurmBackend::upkeep(self))
    }

    fn admit<'a>(
        &'a self,
        ticket: &'a Ticket,
        jobs: JobReports,
    ) -> BoxFuture<'a, Result<(), PrepareError>> {
        Box::pin(SlurmBackend::admit(self, ticket, jobs))
    }

    fn end<'a>(&'a self, task: &'a str) -> BoxFuture<'a, Option<Job>> {
        Box::pin(self.end_job(task))
    }

    super::attempt_methods!(SlurmBackend);

    super::setup_methods!(SlurmBackend, start = start_setup, mark = mark_setup);

    fn abandon<'a>(&'a self, _task: &'a str) -> BoxFuture<'a, ()> {
        // `end` lets go of the job.
        Box::pin(async {})
    }

    fn proxy_address<'a>(
        &'a self,
        _ws: &'a Workspace,
        _task: &'a str,
        proxy: &'a crate::proxy::Endpoint,
    ) -> BoxFuture<'a, Result<String, SpawnError>> {
        Box::pin(async move { node_proxy_address(&self.pool, proxy.tcp, login_hostname()) })
    }

    fn check<'a>(
        &'a self,
        at: &'a super::house::At<'a>,
        includes: bool,
    ) -> super::house::LocalFuture<'a, Option<Vec<super::house::Checked>>> {
        Box::pin(async move {
            let (ok, lines) = check::check(at.config, at.pool, &self.cfg, includes).await;
            Some(vec![super::house::Checked {
                heading: format!("pool {} (slurm)", at.pool.name),
                lines,
                ok,
            }])
        })
    }

    /// A shell in a Slurm task's worktree is a job of its own: `srun
    /// --pty` in the pool's partition, in the worktree on the shared
    /// filesystem.
    fn shell<'a>(
        &'a self,
        _at: &'a super::house::At<'a>,
        task: &'a super::house::ShellTask<'a>,
    ) -> super::house::LocalFuture<'a, crate::error::Result<super::house::Shell>> {
        Box::pin(async move { self.shell_argv(&task.worktree, task.asked) })
    }
}

/// Where a compute node reaches flocks' proxy: `[proxy] listen`'s own IP, or
/// for an unspecified one (`0.0.0.0`, `::`) this login node's `hostname`;
/// the proxy's tokens are the key. A loopback listen cannot serve the nodes
/// (the config refuses it for pools that need the proxy).
fn node_proxy_address(
    pool: &str,
    listen: std::net::SocketAddr,
    hostname: Option<String>,
) -> Result<String, SpawnError> {
    let ip = listen.ip();
    if ip.is_loopback() {
        return Err(SpawnError::Start(format!(
            "pool {pool}: flocks' proxy listens on {listen}, which Slurm compute nodes cannot reach: set [proxy] listen to an address they reach (e.g. \"0.0.0.0:7878\")"
        )));
    }
    if !ip.is_unspecified() {
        return Ok(listen.to_string());
    }
    let host = hostname.filter(|h| !h.is_empty()).ok_or_else(|| {
        SpawnError::Start(format!(
            "pool {pool}: this machine has no hostname to give compute nodes for flocks' proxy: set [proxy] listen to its IP"
        ))
    })?;
    Ok(format!("{host}:{}", listen.port()))
}

/// This machine's hostname (gethostname(2)).
fn login_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer and its length describe writable memory.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests;
