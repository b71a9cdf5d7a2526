//! What `flocks hosts check` and `run --dry-run` (and a run, before any job)
//! ask a Slurm pool's scheduler: does it answer, does the partition exist,
//! would it take the pool's jobs as they are asked for (`sbatch
//! --test-only`: partition, account, qos, time, `sbatch_args`), and is
//! `remote_dir` writable from a compute node (a short job that runs the
//! helper's `init` and `check` there).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::alloc::{self, Progress, Request};
use super::sched::{self, SchedError};
use super::step::Step;
use crate::backend::check::Place;
use crate::backend::helper::{self, Header};
use crate::config::{Config, PoolConfig, SlurmConfig};

/// How long `hosts check` waits for its short job to run.
const CHECK_WAIT: Duration = Duration::from_secs(60);

/// Would the scheduler take this pool's jobs? `sbatch --test-only` with
/// exactly the options of its jobs submits nothing. Ok: what it said
/// (when the job would start); Err(Refused): the scheduler's reason.
pub(crate) async fn test_only(
    config: &Config,
    pool: &PoolConfig,
    cfg: &SlurmConfig,
) -> Result<String, SchedError> {
    let mut args = vec![
        "--test-only".to_string(),
        format!("--job-name=flocks-{}-check", super::project_name(config)),
    ];
    args.extend(super::job_options(cfg, super::time_limit_min(config)));
    args.push("--wrap=true".into());
    let mut c = sched::command("sbatch", &[]);
    c.args(&args);
    let out = tokio::time::timeout(sched::QUERY_LIMIT, c.output())
        .await
        .map_err(|_| SchedError::NoAnswer("sbatch did not answer".into()))?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SchedError::Missing("sbatch"),
            _ => SchedError::NoAnswer(format!("cannot run sbatch: {e}")),
        })?;
    let words = sched::last_words(&String::from_utf8_lossy(&out.stderr));
    if out.status.success() {
        return Ok(words.trim_start_matches("sbatch: ").to_string());
    }
    let _ = pool;
    Err(if sched::no_answer(&words) {
        SchedError::NoAnswer(words)
    } else {
        SchedError::Refused(words)
    })
}

use crate::backend::check::Line;

/// `flocks hosts check` for one Slurm pool: its lines, and whether all is well.
pub(crate) async fn check(
    config: &Config,
    pool: &PoolConfig,
    cfg: &SlurmConfig,
    includes: bool,
) -> (bool, Vec<Line>) {
    let mut lines: Vec<Line> = Vec::new();
    let parts = match sched::partitions().await {
        Ok(p) => p,
        Err(e) => {
            lines.push(("scheduler", format!("no: {e}")));
            return (false, lines);
        }
    };
    lines.push(("scheduler", "answers (sinfo)".into()));
    let wanted = cfg
        .partition
        .clone()
        .or_else(|| parts.iter().find(|(_, d, _)| *d).map(|(n, ..)| n.clone()));
    match parts.iter().find(|(n, ..)| Some(n) == wanted.as_ref()) {
        Some((n, default, avail)) => {
            let d = if *default { ", the default" } else { "" };
            lines.push(("partition", format!("{n} ({avail}{d})")));
        }
        None => {
            let all = super::names(&parts);
            let msg = match &cfg.partition {
                Some(p) => format!("`{p}` does not exist (sinfo lists {all})"),
                None => format!("no default partition: set `partition` (sinfo lists {all})"),
            };
            lines.push(("partition", msg));
            return (false, lines);
        }
    }
    match test_only(config, pool, cfg).await {
        Ok(said) => lines.push(("jobs", format!("accepted ({said})"))),
        Err(e) => {
            lines.push(("jobs", format!("refused: {e}")));
            return (false, lines);
        }
    }
    let root = match super::expand_remote_dir(&cfg.remote_dir) {
        Ok(d) => format!("{d}/{}", crate::paths::key_of(&config.state_dir())),
        Err(e) => {
            lines.push(("remote_dir", e));
            return (false, lines);
        }
    };
    let (ok, more) = on_a_node(config, pool, cfg, &root, includes).await;
    lines.extend(more);
    (ok, lines)
}

/// A short job: the helper's `init` (the root is writable) and `check`
/// (git, the agent, free space, tar, setup) on a compute node.
async fn on_a_node(
    config: &Config,
    pool: &PoolConfig,
    cfg: &SlurmConfig,
    root: &str,
    includes: bool,
) -> (bool, Vec<Line>) {
    let mut lines: Vec<Line> = Vec::new();
    let started = Instant::now();
    let alloc = match check_job(config, pool, cfg).await {
        Ok(a) => a,
        Err(why) => {
            lines.push(("remote_dir", why));
            return (false, lines);
        }
    };
    let result = helper_check(config, pool, cfg, &alloc, root).await;
    alloc.release().await;
    let (made, reply) = match result {
        Ok(r) => r,
        Err(e) => {
            lines.push(("remote_dir", e));
            return (false, lines);
        }
    };
    lines.push((
        "remote_dir",
        format!(
            "writable from node {} ({}, a job of {:.1}s)",
            alloc.node,
            made.root,
            started.elapsed().as_secs_f64()
        ),
    ));
    let ok = crate::backend::check::reply_lines(
        &reply,
        Place::ComputeNode,
        &config.agent.command,
        !cfg.setup.is_empty(),
        root,
        includes,
        &mut lines,
    );
    (ok, lines)
}

/// Ask for the check's short job and wait (up to [`CHECK_WAIT`]) until it
/// runs; why not, in the words of the `remote_dir` line.
async fn check_job(
    config: &Config,
    pool: &PoolConfig,
    cfg: &SlurmConfig,
) -> Result<Arc<alloc::Alloc>, String> {
    let mut options = super::job_options(cfg, None);
    options.insert(0, "--time=2".into());
    let req = Request {
        name: format!("flocks-{}-check", super::project_name(config)),
        comment: super::comment(&crate::paths::key_of(&config.state_dir()), super::CHECK_RUN),
        options,
        scrub: super::scrub_list(config, pool),
    };
    let asked = alloc::ask(&req).map_err(|e| format!("cannot ask for a job: {e}"))?;
    let mut reason: Option<String> = None;
    let waited = tokio::time::timeout(
        CHECK_WAIT,
        asked.wait(
            Duration::from_secs(2),
            |Progress::Pending { reason: r, .. }| {
                if r.is_some() {
                    reason = r;
                }
            },
            |id: String| async move {
                sched::jobs(std::slice::from_ref(&id))
                    .await
                    .ok()
                    .and_then(|mut r| r.remove(&id))
                    .map(|r| r.reason)
            },
        ),
    )
    .await;
    match waited {
        Ok(Ok(a)) => Ok(Arc::new(a)),
        Ok(Err(why)) => Err(format!("the check job did not run: {why}")),
        Err(_) => {
            let why = reason.unwrap_or_else(|| "queued".into());
            Err(format!(
                "the check job was still pending after {}s ({why}); it was cancelled",
                CHECK_WAIT.as_secs()
            ))
        }
    }
}

/// The helper's `init` and `check` as steps of the check's job.
async fn helper_check(
    config: &Config,
    pool: &PoolConfig,
    cfg: &SlurmConfig,
    alloc: &Arc<alloc::Alloc>,
    root: &str,
) -> Result<(helper::session::Root, helper::Reply), String> {
    let scrub = super::scrub_list(config, pool);
    let step = Step {
        alloc,
        root,
        scrub: &scrub,
    };
    let hash = crate::backend::ssh::setup_hash(&cfg.setup);
    let made = helper::session::init(&step, &hash)
        .await
        .map_err(|e| format!("not writable from {}: {e}", alloc.node))?;
    let header = Header::new("check")
        .line("agent", &config.agent.command)
        .and_then(|h| h.line("setup_hash", &hash))
        .map_err(|e| e.to_string())?
        .end();
    let reply = helper::session::Transport::call(&step, header.into(), &helper::reply::CHECK, None)
        .await
        .map_err(|e| format!("the helper's check on {} failed: {e}", alloc.node))?;
    Ok((made, reply))
}
