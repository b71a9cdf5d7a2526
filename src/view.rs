//! What `status`, `status --json`, `tasks` and the dashboard show of a
//! project: views built from state.json and the logs (never from a live run).

use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;

use crate::output::units::duration;
use crate::project::Project;
use crate::state::{Judgement, ProjectLock, State, TaskRecord, TaskStatus};

/// `flocks status --json`: stable shape (fields are only ever added).
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct StatusView {
    pub run: Option<RunView>,
    pub tasks: Vec<TaskView>,
    pub pools: Vec<PoolView>,
    pub credentials: Vec<CredentialView>,
    /// exe.dev VMs that `flocks up` created and `flocks down` removes.
    pub vms: Vec<VmView>,
    pub totals: Totals,
    /// Why the live run starts no new agent now although tasks are ready
    /// (free disk below `min_free_disk_gb`).
    pub waiting: Option<String>,
    /// Disk use and free space (`flocks status` counts it; the dashboard does not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskView>,
}

/// What flocks' files take on disk, and what is left on their filesystem.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct DiskView {
    /// Task worktrees (and the land worktree) under `.worktrees/`.
    pub worktrees_bytes: u64,
    /// The spare worktrees kept for reuse.
    pub spare_worktrees_bytes: u64,
    pub spare_worktrees: usize,
    /// Attempt logs, `.flocks/logs/`.
    pub logs_bytes: u64,
    /// Validation logs of `flocks land`, `.flocks/land-logs/`.
    pub land_logs_bytes: u64,
    /// Every file was counted; false: the count ran out of time, no earlier
    /// full count was kept, and the sizes are lower bounds (`flocks status
    /// --disk` counts them all).
    pub complete: bool,
    /// When the sizes were counted, if not just now: plain `status` ran out
    /// of time and shows the last full count (kept in `.flocks/disk.json`).
    pub counted_at: Option<chrono::DateTime<Utc>>,
    /// Where free space is read: the worktrees' directory.
    pub filesystem: PathBuf,
    pub free_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    /// `min_free_disk_gb`, in bytes.
    pub min_free_bytes: Option<u64>,
    /// `.flocks/`'s filesystem, when it is another than the worktrees'.
    pub logs_filesystem: Option<FilesystemView>,
}

/// A filesystem's free space, read at a path on it.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct FilesystemView {
    pub path: PathBuf,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// How long plain `flocks status` spends counting disk use: it stays fast
/// on a big project, and says when its sizes are lower bounds.
pub(crate) const DISK_BUDGET: std::time::Duration = std::time::Duration::from_millis(10);

/// The sizes of the last full count, kept in `.flocks/disk.json` for when
/// plain `status` runs out of time (a big project).
#[derive(Serialize, serde::Deserialize)]
struct DiskCount {
    at: chrono::DateTime<Utc>,
    worktrees_bytes: u64,
    spare_worktrees_bytes: u64,
    logs_bytes: u64,
    land_logs_bytes: u64,
}

/// Disk use under the worktrees and `.flocks/`, counted within `budget`
/// (None: all of it), and the free space of the worktrees' filesystem. A
/// full count is kept; a count that runs out of time shows the last full
/// one instead, with its time.
pub(crate) fn disk(project: &Project, budget: Option<std::time::Duration>) -> DiskView {
    use crate::disk::usage;
    let deadline = budget.map(|b| std::time::Instant::now() + b);
    let wts = project.config.worktrees_dir();
    let state_dir = project.state_dir();
    // Smallest first, so that a budget that runs out leaves the big ones.
    let land_logs = usage(&state_dir.join("land-logs"), &[], deadline);
    let logs = usage(&state_dir.join("logs"), &[], deadline);
    let spare_dir = wts.join(crate::git::SPARE_DIR);
    let spare = usage(&spare_dir, &[], deadline);
    let worktrees = usage(&wts, &[crate::git::SPARE_DIR], deadline);
    let free = crate::disk::free_space(&wts).ok();
    let complete = [land_logs, logs, spare, worktrees]
        .iter()
        .all(|u| u.complete);
    let mut view = DiskView {
        worktrees_bytes: worktrees.bytes,
        spare_worktrees_bytes: spare.bytes,
        spare_worktrees: std::fs::read_dir(&spare_dir)
            .map(|d| d.flatten().count())
            .unwrap_or(0),
        logs_bytes: logs.bytes,
        land_logs_bytes: land_logs.bytes,
        complete,
        counted_at: None,
        filesystem: wts,
        free_bytes: free.map(|f| f.free),
        total_bytes: free.map(|f| f.total),
        min_free_bytes: project.config.min_free_disk,
        logs_filesystem: None,
    };
    if crate::disk::device_of(&state_dir) != crate::disk::device_of(&view.filesystem)
        && let Ok(f) = crate::disk::free_space(&state_dir)
    {
        view.logs_filesystem = Some(FilesystemView {
            path: state_dir.clone(),
            free_bytes: f.free,
            total_bytes: f.total,
        });
    }
    let kept = state_dir.join("disk.json");
    if complete {
        // Kept only where `.flocks/` already is; a failure to keep it only
        // means the next slow count shows lower bounds.
        if state_dir.is_dir() {
            let count = DiskCount {
                at: Utc::now(),
                worktrees_bytes: view.worktrees_bytes,
                spare_worktrees_bytes: view.spare_worktrees_bytes,
                logs_bytes: view.logs_bytes,
                land_logs_bytes: view.land_logs_bytes,
            };
            if let Ok(text) = serde_json::to_vec(&count) {
                let _ = crate::fsat::write_atomic(&kept, |f| std::io::Write::write_all(f, &text));
            }
        }
    } else if let Some(c) = crate::fsat::read(&kept)
        .ok()
        .and_then(|mut f| {
            let mut t = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut t).ok().map(|_| t)
        })
        .and_then(|t| serde_json::from_slice::<DiskCount>(&t).ok())
    {
        view.worktrees_bytes = c.worktrees_bytes;
        view.spare_worktrees_bytes = c.spare_worktrees_bytes;
        view.logs_bytes = c.logs_bytes;
        view.land_logs_bytes = c.land_logs_bytes;
        view.complete = true;
        view.counted_at = Some(c.at);
    }
    view
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct VmView {
    pub pool: String,
    pub name: String,
    pub ssh_dest: String,
    pub ssh_port: u16,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct RunView {
    pub id: String,
    pub live: bool,
    pub pid: u32,
    pub started_at: chrono::DateTime<Utc>,
    pub ended_at: Option<chrono::DateTime<Utc>>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct TaskView {
    pub id: String,
    pub branch: String,
    /// pending | running | succeeded | landed | failed | timed out | stalled | interrupted | blocked | removed | ...
    pub status: String,
    pub detail: Option<String>,
    pub attempts: usize,
    pub pool: Option<String>,
    pub elapsed_secs: Option<f64>,
    pub activity: Option<String>,
    /// Seconds since the agent last wrote output (running tasks).
    pub quiet_secs: Option<f64>,
    /// How long its last attempt waited (or has waited so far) in its
    /// pool's scheduler (Slurm pools); `elapsed_secs` counts apart from it.
    pub pending_secs: Option<f64>,
    /// Its last attempt's scheduler job (Slurm pools): `id`, `state`
    /// (`PENDING` with its `reason`, `RUNNING`, how it ended), `node`,
    /// `started_at`, `elapsed_secs`.
    pub job: Option<Box<crate::state::Job>>,
    pub turns: u64,
    pub cost_usd: f64,
    pub depends_on: Vec<String>,
    pub blocked_on: Vec<String>,
    pub worktree: PathBuf,
    pub log: Option<PathBuf>,
    pub log_tail: Vec<String>,
    /// How the last finished attempt ended (`{"kind": ...}` as in state.json).
    pub outcome: Option<crate::state::Outcome>,
    /// The task line's `expect_commits`.
    pub expect_commits: bool,
    /// A succeeded task with `"expect_commits": false`: its result text (its
    /// work is the answer, not commits).
    pub result: Option<String>,
    /// A succeeded task whose work will conflict when it lands (predicted
    /// during the run): `commit`, `files`, `with` (earlier tasks),
    /// `with_target`, `target`, `target_tip`. Null once it landed.
    pub conflict: Option<Box<crate::state::PredictedConflict>>,
    /// A succeeded task whose conflicts were not predicted (the run ended
    /// first): unknown, not absent; `land --dry-run` works them out.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub conflict_unknown: bool,
    /// Paths its work changed outside its declared footprint (`"touches"`).
    pub outside_footprint: Vec<String>,
    /// A best-of task's variants, in order of k (empty for other tasks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantView>,
    /// How a best-of task's variants were judged (as in state.json).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub judgement: Option<Judgement>,
    /// Its last attempt's tokens and cost as flocks' proxy read them (live
    /// while it runs; as in state.json's attempt `usage`).
    pub usage: Option<Box<crate::state::Usage>>,
    /// Connections `[network] allow` refused, over its attempts.
    pub egress_denied: u64,
}

/// One variant of a best-of task.
#[derive(Debug, Serialize, Clone)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct VariantView {
    /// k, 1-based.
    pub variant: u32,
    pub id: String,
    pub branch: String,
    /// pending | running | succeeded | failed | ...
    pub status: String,
    /// How its last attempt ended, when it did not succeed.
    pub detail: Option<String>,
    pub attempts: usize,
    pub pool: Option<String>,
    pub cost_usd: f64,
    pub activity: Option<String>,
    pub log: Option<PathBuf>,
    /// Its verdict in the judgement: winner | passed | failed_validation | failed.
    pub verdict: Option<crate::state::VerdictOutcome>,
    /// Why it got that verdict.
    pub verdict_reason: Option<String>,
    /// Lines added + removed by its work, when judged.
    pub lines: Option<u64>,
}

/// A best-of task's variants for people and scripts; its status while they
/// run (`running`: some variant runs, or every one has ended and the run
/// judges them).
pub(crate) fn variants_view(
    t: &TaskRecord,
    log_root: &Path,
    live: bool,
) -> (Vec<VariantView>, Option<&'static str>) {
    let judgement = t.best_of.as_ref().and_then(|b| b.judgement.as_ref());
    let views: Vec<VariantView> = t
        .variants
        .iter()
        .zip(1u32..)
        .map(|(v, k)| {
            let last = v.last_attempt();
            let log = last.map(|a| log_path(log_root, &v.id, a.number));
            let verdict = judgement.and_then(|j| j.ranking.iter().find(|x| x.variant == k));
            VariantView {
                variant: k,
                id: v.id.clone(),
                branch: v.branch.clone(),
                status: v.status.label().to_string(),
                detail: match &v.status {
                    TaskStatus::Done { outcome } if !v.status.is_success() => {
                        Some(outcome.describe())
                    }
                    _ => None,
                },
                attempts: v.attempts.len(),
                pool: last.map(|a| a.pool.clone()),
                cost_usd: v.cost(),
                activity: match (&v.status, &log) {
                    (TaskStatus::Running { .. }, Some(p)) => last_activity(p),
                    _ => None,
                },
                log,
                verdict: verdict.map(|x| x.outcome),
                verdict_reason: verdict.map(|x| x.reason.clone()),
                lines: verdict.and_then(|x| x.lines),
            }
        })
        .collect();
    let status = (t.status == TaskStatus::Pending && !views.is_empty())
        .then(|| {
            let any_running = t
                .variants
                .iter()
                .any(|v| matches!(v.status, TaskStatus::Running { .. }));
            let all_ended = t
                .variants
                .iter()
                .all(|v| matches!(v.status, TaskStatus::Done { .. }));
            (any_running || (live && all_ended)).then_some("running")
        })
        .flatten();
    (views, status)
}

/// One line on a best-of task's judgement: who won, how and why.
pub(crate) fn judgement_line(j: &Judgement) -> String {
    match j.winner {
        Some(k) => format!("v{k} won ({}): {}", j.by.label(), j.reason),
        None => format!("no variant survived: {}", j.reason),
    }
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct PoolView {
    pub name: String,
    pub backend: String,
    /// How its agents are kept from the host repository (`backend::isolation`).
    pub isolation: String,
    pub slots: usize,
    pub running: usize,
    /// `default` (the agents' own login: flocks holds nothing to inject), a
    /// credential's name, or `rotate`; a flocks credential reaches its
    /// agents only as a token for flocks' proxy.
    pub credential: String,
    /// `open` (no `[network]`), `advisory` (its agents get the proxy
    /// variables and may ignore them) or `enforced` (the proxy is their
    /// only way out).
    pub egress: String,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct CredentialView {
    pub name: String,
    pub parked_until: Option<chrono::DateTime<Utc>>,
    pub disabled: Option<String>,
}

#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct Totals {
    pub tasks: usize,
    pub attempts: usize,
    pub turns: u64,
    pub cost_usd: f64,
}

/// Lines of a no-commit task's result that `status` shows.
pub(crate) const RESULT_LINES: usize = 12;

/// The status of a succeeded task whose work is on the land target.
pub(crate) const LANDED: &str = "landed";

/// The status of a task its task list no longer has (unless it landed).
pub(crate) const REMOVED: &str = "removed";

/// The status of a pending task the live run will not start (a `retry` of
/// other tasks runs).
pub(crate) const NOT_QUEUED: &str = "not queued";

/// Why a task is `not queued` (it was `was`: pending or interrupted), for people.
pub(crate) fn not_queued_detail(was: &str) -> String {
    format!("{was}; the live run (a retry of other tasks) does not start it; `flocks run` does")
}

pub(crate) fn build(project: &Project, state: &State) -> StatusView {
    let live = ProjectLock::holder(&project.state_dir()).is_some();
    let log_root = project.state_dir().join("logs");
    let now = Utc::now();
    let landed = crate::land::landed_ids(project, state);
    // Side by side on the machine's cores: at 10,000 tasks this is a good
    // part of `status`.
    let tasks: Vec<TaskView> = crate::par::map(&state.tasks, 1000, |t| {
        let mut view = task_view(t, &log_root, now, &project.config, live);
        if landed.contains(&t.id) {
            view.status = LANDED.to_string();
            view.conflict = None;
            view.conflict_unknown = false;
        } else if t.removed {
            view.status = REMOVED.to_string();
            view.detail = Some(removed_detail(t));
            view.activity = None;
        } else if live && t.not_in_run && matches!(view.status.as_str(), "pending" | "interrupted")
        {
            view.detail = Some(not_queued_detail(&view.status));
            view.status = NOT_QUEUED.to_string();
        }
        view
    });
    let pools = project
        .config
        .pools
        .iter()
        .map(|p| PoolView {
            name: p.name.clone(),
            backend: p.backend.kind().to_string(),
            isolation: crate::backend::isolation(p).to_string(),
            slots: p.max_worktrees,
            running: state
                .tasks
                .iter()
                .flat_map(|t| std::iter::once(t).chain(&t.variants))
                .filter(
                    |t| matches!(&t.status, TaskStatus::Running { pool, .. } if *pool == p.name),
                )
                .count(),
            credential: match &p.credential {
                crate::config::CredentialChoice::Default => "default".into(),
                crate::config::CredentialChoice::Named(n) => n.clone(),
                crate::config::CredentialChoice::Rotate => "rotate".into(),
            },
            egress: match (
                &project.config.network,
                p.egress_enforced(project.config.sandbox.network),
            ) {
                (None, _) => "open",
                (Some(_), false) => "advisory",
                (Some(_), true) => "enforced",
            }
            .into(),
        })
        .collect();
    let credentials = state
        .credentials
        .iter()
        .filter(|(_, c)| c.disabled.is_some() || c.parked_until.is_some_and(|t| t > now))
        .map(|(name, c)| CredentialView {
            name: name.clone(),
            parked_until: c.parked_until.filter(|t| *t > now),
            disabled: c.disabled.clone(),
        })
        .collect();
    StatusView {
        run: state.run.as_ref().map(|r| RunView {
            id: r.id.clone(),
            live,
            pid: r.pid,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }),
        totals: Totals {
            tasks: state.tasks.len(),
            attempts: state.tasks.iter().map(attempt_count).sum(),
            turns: state.tasks.iter().map(TaskRecord::turns).sum(),
            cost_usd: state.total_cost(),
        },
        tasks,
        pools,
        credentials,
        waiting: state
            .run
            .as_ref()
            .filter(|_| live)
            .and_then(|r| r.waiting.clone()),
        disk: None,
        vms: state
            .managed
            .iter()
            .filter_map(|m| match m {
                crate::state::Managed::Vm {
                    pool,
                    name,
                    ssh_dest,
                    ssh_port,
                } => Some(VmView {
                    pool: pool.clone(),
                    name: name.clone(),
                    ssh_dest: ssh_dest.clone(),
                    ssh_port: *ssh_port,
                }),
                _ => None,
            })
            .collect(),
    }
}

/// An attempt's log, `<logs>/<task>/<n>.log`: one allocation (`status`
/// makes one per task), where joining makes three.
pub(crate) fn log_path(log_root: &Path, id: &str, number: u32) -> PathBuf {
    use std::fmt::Write;
    match log_root.to_str() {
        Some(root) => {
            let sep = if root.ends_with('/') { "" } else { "/" };
            let mut path = String::with_capacity(root.len() + id.len() + 16);
            let _ = write!(path, "{root}{sep}{id}/{number}.log");
            PathBuf::from(path)
        }
        None => log_root.join(id).join(format!("{number}.log")),
    }
}

/// Why a task is `removed`, for people.
pub(crate) fn removed_detail(t: &TaskRecord) -> String {
    match &t.source {
        Some(src) => format!("no longer in {src}"),
        None => "no longer in the task file".to_string(),
    }
}

/// A task's attempts, its variants' included.
pub(crate) fn attempt_count(t: &TaskRecord) -> usize {
    t.attempts.len() + t.variants.iter().map(|v| v.attempts.len()).sum::<usize>()
}

fn task_view(
    t: &TaskRecord,
    log_root: &Path,
    now: chrono::DateTime<Utc>,
    config: &crate::config::Config,
    live: bool,
) -> TaskView {
    if !t.variants.is_empty() {
        return best_of_view(t, log_root, now, config, live);
    }
    let last = t.last_attempt();
    let log = last.map(|a| log_path(log_root, &t.id, a.number));
    let (mut elapsed, mut activity, mut quiet, mut tail, mut detail, mut blocked_on) =
        (None, None, None, Vec::new(), None, Vec::new());
    let job = last.and_then(|a| a.job.clone());
    let pending_secs = last.and_then(|a| a.pending_at(now));
    match &t.status {
        // Its job waits in the scheduler's queue: that, not an agent.
        TaskStatus::Running { .. } if job.as_ref().is_some_and(|j| j.is_pending()) => {
            activity = job.as_ref().map(|j| j.describe());
        }
        TaskStatus::Running { started_at, .. } => {
            // Run time: from when its job ran, when it waited for one.
            let since = job
                .as_ref()
                .and_then(|j| j.started_at)
                .unwrap_or(*started_at);
            elapsed = Some((now - since).num_milliseconds() as f64 / 1000.0);
            if let Some(p) = &log {
                activity = last_activity(p);
                quiet = std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .map(|d| d.as_secs_f64());
            }
        }
        TaskStatus::Done { outcome } if *outcome != crate::state::Outcome::Success => {
            let mut d = describe(outcome, config);
            if let Some(why) = &t.not_retried {
                d.push_str(&format!("; not retried: {why}"));
            }
            detail = Some(d);
            if let Some(p) = &log {
                let text = crate::logview::read_tail(p, 64 * 1024);
                tail = crate::logview::tail_rendered(&text, 5);
            }
        }
        TaskStatus::Blocked { on, reason } => {
            blocked_on = on.clone();
            detail = reason.clone();
        }
        TaskStatus::Done { .. } | TaskStatus::Pending => {}
    }
    let result = t
        .successful_attempt()
        .filter(|_| !t.expect_commits)
        .and_then(|a| a.result.as_ref()?.text.clone());
    if let Some(a) = last
        && elapsed.is_none()
        && let Some(end) = a.ended_at
    {
        let total = (end - a.started_at).num_milliseconds() as f64 / 1000.0;
        elapsed = Some((total - a.pending_secs.unwrap_or(0.0)).max(0.0));
    }
    TaskView {
        id: t.id.clone(),
        branch: t.branch.clone(),
        status: t.status.label().to_string(),
        detail: detail.take(),
        attempts: t.attempts.len(),
        pool: last.map(|a| a.pool.clone()),
        elapsed_secs: elapsed,
        activity,
        quiet_secs: quiet,
        pending_secs,
        job,
        turns: t.turns(),
        cost_usd: t.cost(),
        depends_on: t.depends_on.clone(),
        blocked_on: std::mem::take(&mut blocked_on),
        worktree: t.worktree.clone(),
        log,
        log_tail: std::mem::take(&mut tail),
        outcome: t.attempts.iter().rev().find_map(|a| a.outcome.clone()),
        expect_commits: t.expect_commits,
        result,
        conflict: t.conflict.clone().filter(|_| t.status.is_success()),
        conflict_unknown: t.conflict_unknown && t.status.is_success(),
        outside_footprint: t.outside_footprint.clone(),
        variants: Vec::new(),
        judgement: None,
        usage: last.and_then(|a| a.usage.clone()),
        egress_denied: t.egress_denied(),
    }
}

/// A best-of task: its variants, its judgement, and (while its variants
/// run) the running ones' activity.
fn best_of_view(
    t: &TaskRecord,
    log_root: &Path,
    now: chrono::DateTime<Utc>,
    config: &crate::config::Config,
    live: bool,
) -> TaskView {
    let (variants, running) = variants_view(t, log_root, live);
    let judgement = t.best_of.as_ref().and_then(|b| b.judgement.clone());
    let started = t
        .variants
        .iter()
        .filter_map(|v| match &v.status {
            TaskStatus::Running { started_at, .. } => Some(*started_at),
            _ => None,
        })
        .min();
    let first_start = t
        .variants
        .iter()
        .flat_map(|v| v.attempts.iter().map(|a| a.started_at))
        .min();
    let last_end = t
        .variants
        .iter()
        .flat_map(|v| v.attempts.iter().filter_map(|a| a.ended_at))
        .max();
    let elapsed = match (started, first_start, last_end) {
        (Some(s), _, _) => Some(now - s),
        (None, Some(s), Some(e)) => Some(e - s),
        _ => None,
    }
    .map(|d| d.num_milliseconds() as f64 / 1000.0);
    let activity = running.map(|_| {
        let each: Vec<String> = variants
            .iter()
            .map(|v| format!("v{} {}", v.variant, v.status))
            .collect();
        if variants.iter().all(|v| v.status != "running") {
            format!("judging its variants ({})", each.join(", "))
        } else {
            each.join(" · ")
        }
    });
    let (detail, blocked_on) = match &t.status {
        TaskStatus::Done { outcome } if !t.status.is_success() => {
            (Some(describe(outcome, config)), Vec::new())
        }
        TaskStatus::Blocked { on, reason } => (reason.clone(), on.clone()),
        _ => (None, Vec::new()),
    };
    let winner = t.winner();
    TaskView {
        id: t.id.clone(),
        branch: t.branch.clone(),
        status: running.unwrap_or(t.status.label()).to_string(),
        detail,
        attempts: attempt_count(t),
        pool: variants.iter().rev().find_map(|v| v.pool.clone()),
        elapsed_secs: elapsed,
        activity,
        quiet_secs: None,
        pending_secs: None,
        job: None,
        turns: t.turns(),
        cost_usd: t.cost(),
        depends_on: t.depends_on.clone(),
        blocked_on,
        worktree: winner.map_or_else(|| t.worktree.clone(), |w| w.worktree.clone()),
        log: winner
            .and_then(|w| variants.iter().find(|v| v.id == w.id))
            .and_then(|v| v.log.clone()),
        log_tail: Vec::new(),
        outcome: match &t.status {
            TaskStatus::Done { outcome } => Some(outcome.clone()),
            _ => None,
        },
        expect_commits: t.expect_commits,
        result: t
            .successful_attempt()
            .filter(|_| !t.expect_commits)
            .and_then(|a| a.result.as_ref()?.text.clone()),
        conflict: t.conflict.clone().filter(|_| t.status.is_success()),
        conflict_unknown: t.conflict_unknown && t.status.is_success(),
        outside_footprint: t.outside_footprint.clone(),
        variants,
        judgement,
        usage: None,
        egress_denied: t.egress_denied(),
    }
}

/// An outcome for people, with the limits that applied.
fn describe(outcome: &crate::state::Outcome, config: &crate::config::Config) -> String {
    use crate::state::Outcome;
    match (outcome, config.stall_timeout, config.agent_timeout) {
        (Outcome::Stalled, Some(d), _) => format!(
            "stalled: no output for {} (stall_timeout_secs)",
            duration(d.as_secs_f64())
        ),
        (Outcome::TimedOut, _, Some(d)) => format!(
            "timed out after {} (agent_timeout_secs)",
            duration(d.as_secs_f64())
        ),
        _ => outcome.describe(),
    }
}

/// What the agent of a running attempt is doing now, from its log (see
/// [`crate::logview::activity`]: the same everywhere).
pub(crate) fn last_activity(log: &Path) -> Option<String> {
    crate::logview::last_activity(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_out_of_time_shows_the_last_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flocks.toml");
        std::fs::write(&path, "").unwrap();
        let project = Project::from_config(crate::config::Config::load(&path).unwrap());
        let logs = project.state_dir().join("logs/t");
        std::fs::create_dir_all(&logs).unwrap();
        for i in 0..600 {
            std::fs::write(logs.join(format!("{i}.log")), "x").unwrap();
        }
        // Out of time, nothing kept: lower bounds, said as such.
        let cut = disk(&project, Some(std::time::Duration::ZERO));
        assert!(!cut.complete && cut.counted_at.is_none());
        // A full count is kept...
        let full = disk(&project, None);
        assert!(full.complete && full.counted_at.is_none());
        assert!(full.logs_bytes >= 600 * 512, "{}", full.logs_bytes);
        assert!(full.free_bytes.is_some());
        // ... and shown, with its time, when the next count runs out of time.
        let again = disk(&project, Some(std::time::Duration::ZERO));
        assert!(again.complete);
        assert!(again.counted_at.is_some());
        assert_eq!(again.logs_bytes, full.logs_bytes);
    }
}
