//! Bringing a task list into state: what the command asks to run again is
//! queued first ([`Requeue`]), then new tasks are queued, interrupted ones
//! re-queued and changed prompts reported.

use std::collections::HashSet;

use crate::config::Config;
use crate::error::{Context, Result};
use crate::runner::RunOptions;
use crate::state::{NextAttempt, Outcome, State, TaskRecord, TaskStatus};
use crate::tasks::TaskSet;

/// What a command runs again before the task list is merged.
#[derive(Debug, Clone, Default)]
pub(crate) enum Requeue {
    /// `run`, `sail`: only what merging the task list queues.
    #[default]
    Nothing,
    /// `retry`: these tasks with what their last attempt learned; `fresh`
    /// keeps the old tip under `refs/flocks/backup/` and starts over.
    Retry { ids: Vec<String>, fresh: bool },
    /// `land --resolve`: these tasks start over from the target at `onto`.
    Redo { onto: git2::Oid, tasks: Vec<Redo> },
}

/// One conflicted task that `land --resolve` redoes.
#[derive(Debug, Clone)]
pub(crate) struct Redo {
    pub id: String,
    /// Its last attempt before the redo.
    pub before: u32,
    /// What its prompt gets: its earlier diff and the conflicting files.
    pub context: String,
}

/// Queue what `requeue` names (in state, under the project lock).
pub(crate) fn requeue(state: &mut State, config: &Config, requeue: Requeue) -> Result<()> {
    match requeue {
        Requeue::Nothing => Ok(()),
        Requeue::Retry { ids, fresh } => retry(state, config, &ids, fresh),
        Requeue::Redo { onto, tasks } => redo(state, config, onto, tasks),
    }
}

fn retry(state: &mut State, config: &Config, ids: &[String], fresh: bool) -> Result<()> {
    let log_root = config.state_dir().join("logs");
    for id in ids {
        let Some(rec) = state.task_mut(id) else {
            continue;
        };
        if !rec.variants.is_empty() {
            // A best-of task is retried as one: every variant runs again.
            if fresh {
                for v in &rec.variants {
                    let last = v.last_attempt().map(|a| a.number).unwrap_or(0);
                    backup_and_reset(config, &v.branch, &v.id, last)?;
                }
            }
            requeue_round(rec, config, &log_root, fresh)
                .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
            continue;
        }
        let last = rec.last_attempt().map(|a| a.number).unwrap_or(0);
        let mut next = crate::retry::next_after_failure(rec, last, config, &log_root);
        if fresh {
            backup_and_reset(config, &rec.branch, id, last)?;
            next.fresh = true;
            next.resume_session = None;
            next.context = None;
        }
        rec.next = Some(Box::new(next));
        rec.requeues = 0;
        if rec.status != TaskStatus::Pending {
            rec.transition(TaskStatus::Pending)
                .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        }
    }
    Ok(())
}

/// Every variant of a best-of task goes back to the queue, each with what
/// its last attempt learned (or, `fresh`, from scratch); the judgement is
/// cleared and the task is pending.
pub(crate) fn requeue_round(
    rec: &mut TaskRecord,
    config: &Config,
    log_root: &std::path::Path,
    fresh: bool,
) -> std::result::Result<(), crate::state::InvalidTransition> {
    let verdicts: Vec<(u32, String)> = rec
        .best_of
        .as_ref()
        .and_then(|b| b.judgement.as_ref())
        .map(|j| {
            j.ranking
                .iter()
                .map(|v| (v.variant, v.reason.clone()))
                .collect()
        })
        .unwrap_or_default();
    for (i, v) in rec.variants.iter_mut().enumerate() {
        let k = i as u32 + 1;
        let last = v.last_attempt().map(|a| a.number).unwrap_or(0);
        let mut next = if last == 0 {
            NextAttempt::default()
        } else {
            crate::retry::next_after_failure(v, last, config, log_root)
        };
        if let Some((_, why)) = verdicts.iter().find(|(n, _)| *n == k) {
            next.ended = Some(format!("attempt {last} was judged: {why}"));
        }
        if fresh {
            next.fresh = true;
            next.resume_session = None;
            next.context = None;
        }
        v.next = Some(Box::new(next));
        v.requeues = 0;
        if v.status != TaskStatus::Pending {
            v.transition(TaskStatus::Pending)?;
        }
    }
    if let Some(b) = rec.best_of.as_mut() {
        b.judgement = None;
    }
    rec.requeues = 0;
    if rec.status != TaskStatus::Pending {
        rec.transition(TaskStatus::Pending)?;
    }
    Ok(())
}

/// A new record for variant `k` of `t`.
fn variant_record(t: &crate::tasks::Task, k: u32, worktrees: &std::path::Path) -> TaskRecord {
    let id = crate::tasks::variant_id(&t.id, k);
    TaskRecord {
        worktree: worktrees.join(&id),
        branch: crate::tasks::variant_branch(&t.branch, k),
        id,
        prompt_hash: t.prompt_hash(),
        title: t.title.clone(),
        depends_on: t.depends_on.clone(),
        status: TaskStatus::Pending,
        attempts: Vec::new(),
        branch_created: false,
        requeues: 0,
        next: None,
        origin: None,
        expect_commits: t.expect_commits,
        not_retried: None,
        conflict: None,
        conflict_unknown: false,
        outside_footprint: Vec::new(),
        variants: Vec::new(),
        best_of: None,
        source: None,
        removed: false,
        not_in_run: false,
    }
}

/// Give a best-of task the variants its line asks for (a variant that has
/// run is kept even when the count shrinks); a task no longer best-of whose
/// variants never ran becomes a plain task again.
fn sync_variants(
    rec: &mut TaskRecord,
    t: &crate::tasks::Task,
    n: u32,
    worktrees: &std::path::Path,
) {
    if n <= 1 {
        if rec.variants.iter().all(|v| v.attempts.is_empty()) {
            rec.variants.clear();
            rec.best_of = None;
        }
        return;
    }
    rec.variants.retain(|v| {
        v.variants.is_empty()
            && (!v.attempts.is_empty()
                || crate::tasks::split_variant_id(&v.id).is_some_and(|(_, k)| k <= n))
    });
    for k in 1..=n {
        let id = crate::tasks::variant_id(&t.id, k);
        if !rec.variants.iter().any(|v| v.id == id) {
            rec.variants.push(variant_record(t, k, worktrees));
        }
    }
    rec.variants
        .sort_by_key(|v| crate::tasks::split_variant_id(&v.id).map_or(0, |(_, k)| k));
    rec.best_of.get_or_insert_with(Default::default);
    for v in &mut rec.variants {
        v.title = t.title.clone();
        v.expect_commits = t.expect_commits;
        v.depends_on = t.depends_on.clone();
    }
}

/// A variant at the start of a run: settled ones (succeeded, or failed in a
/// way that counts) stay for the judgement; the others run (again).
fn normalize_variant(v: &mut TaskRecord, hash: &str, notes: &mut Vec<String>) {
    let settled = match &v.status {
        TaskStatus::Done { outcome } => {
            *outcome == Outcome::Success || outcome.counts_against_retries()
        }
        _ => false,
    };
    if !settled
        && v.status != TaskStatus::Pending
        && let Err(e) = v.transition(TaskStatus::Pending)
    {
        notes.push(format!("internal error, please report it: {e}"));
    }
    v.requeues = 0;
    v.prompt_hash = hash.to_string();
}

/// `--fresh`: keep the old tip under refs/flocks/backup/<id>/<attempt>, then the
/// branch starts over from the base when the next attempt prepares it.
fn backup_and_reset(config: &Config, branch: &str, id: &str, attempt: u32) -> Result<()> {
    let repo = crate::git::open(&config.workspace.repo)?;
    if let Some(tip) = crate::git::branch_tip(&repo, branch)? {
        let name = format!("refs/flocks/backup/{id}/{attempt}");
        repo.reference(&name, tip, true, "flocks: backup before retry --fresh")
            .ctx(|| format!("back up {branch} as {name}"))?;
        crate::outln!(
            "{branch} was at {} (kept as {name}); the retry starts it over from its start \
             ({} or, for start_from = \"dependencies\", its dependencies' work)",
            &tip.to_string()[..10],
            config.workspace.base
        );
    }
    Ok(())
}

fn redo(state: &mut State, config: &Config, onto: git2::Oid, tasks: Vec<Redo>) -> Result<()> {
    let repo = crate::git::open(&config.workspace.repo)?;
    let onto = onto.to_string();
    for Redo {
        id,
        before,
        context,
    } in tasks
    {
        let Some(rec) = state.task_mut(&id) else {
            continue;
        };
        if !rec.variants.is_empty() {
            // A best-of task is redone as one: every variant, on the target.
            for v in &mut rec.variants {
                let last = v.last_attempt().map_or(0, |a| a.number);
                if let Some((name, tip)) =
                    crate::land::resolve::backup(&repo, &v.branch, &v.id, last)?
                {
                    crate::output::report(&format!(
                        "resolve: {id}: {} was at {} (kept as {name}); it starts over from {}\n",
                        v.branch,
                        &tip.to_string()[..10],
                        &onto[..10]
                    ));
                }
                v.next = Some(Box::new(NextAttempt {
                    fresh: true,
                    resume_session: None,
                    resume_pool: None,
                    ended: None,
                    context: Some(context.clone()),
                    base: Some(onto.clone()),
                }));
                v.requeues = 0;
                if v.status != TaskStatus::Pending {
                    v.transition(TaskStatus::Pending)
                        .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
                }
            }
            if let Some(b) = rec.best_of.as_mut() {
                b.judgement = None;
            }
            rec.requeues = 0;
            if rec.status != TaskStatus::Pending {
                rec.transition(TaskStatus::Pending)
                    .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
            }
            continue;
        }
        if let Some((name, tip)) = crate::land::resolve::backup(&repo, &rec.branch, &id, before)? {
            crate::output::report(&format!(
                "resolve: {id}: {} was at {} (kept as {name}); it starts over from {}\n",
                rec.branch,
                &tip.to_string()[..10],
                &onto[..10]
            ));
        }
        rec.next = Some(Box::new(NextAttempt {
            fresh: true,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: Some(context),
            base: Some(onto.clone()),
        }));
        rec.requeues = 0;
        if rec.status != TaskStatus::Pending {
            rec.transition(TaskStatus::Pending)
                .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
        }
    }
    Ok(())
}

/// Bring the task list into state: new tasks are queued, interrupted ones
/// re-queued, changed prompts reported; failed tasks outside `scope` (when
/// there is one) are left as they are. Returns notices for the user.
pub(crate) fn merge_tasks(
    state: &mut State,
    tasks: &TaskSet,
    config: &Config,
    opts: &RunOptions,
    scope: Option<&HashSet<String>>,
) -> Vec<String> {
    let mut notes = Vec::new();
    let worktrees = config.worktrees_dir();
    let mut failed_before = Vec::new();
    let source = source_key(&tasks.source);
    mark_removed(state, tasks, &source, config, &mut notes);
    // The project's default list is not written into every record.
    let recorded = (source != default_source(config)).then_some(source);
    for t in &tasks.tasks {
        let hash = t.prompt_hash();
        let n = t.best_of.unwrap_or(config.best_of.n);
        if state.task(&t.id).is_none() {
            let mut rec = TaskRecord {
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
                not_retried: None,
                conflict: None,
                conflict_unknown: false,
                outside_footprint: Vec::new(),
                variants: Vec::new(),
                best_of: None,
                source: recorded.clone(),
                removed: false,
                not_in_run: scope.is_some_and(|s| !s.contains(&t.id)),
            };
            sync_variants(&mut rec, t, n, &worktrees);
            state.push_task(rec);
            continue;
        }
        let Some(rec) = state.task_mut(&t.id) else {
            continue;
        };
        rec.source.clone_from(&recorded);
        rec.removed = false;
        // Outside the scope of this run (a `retry` of other tasks): what it
        // is stays as it is; this run does not start it.
        let outside = scope.is_some_and(|s| !s.contains(&t.id));
        rec.not_in_run = outside;
        sync_variants(rec, t, n, &worktrees);
        merge_existing(
            rec,
            t,
            hash,
            config,
            opts,
            outside,
            &mut notes,
            &mut failed_before,
        );
    }
    if !failed_before.is_empty() {
        failed_before.sort();
        failed_before.dedup();
        notes.push(format!(
            "{} failed in an earlier run and {} not run again: {} (`flocks retry --all-failed`, or `flocks run --supervise`)",
            crate::output::units::count(failed_before.len(), "task"),
            crate::output::units::noun_for(failed_before.len(), "is", "are"),
            failed_before.join(", ")
        ));
    }
    notes
}

/// How a task list is named in state (`TaskRecord::source`): a file by its
/// absolute path, a `[source]` script by its description.
pub(crate) fn source_key(source: &std::path::Path) -> String {
    if source.to_string_lossy().starts_with('[') {
        return source.display().to_string();
    }
    std::path::absolute(source)
        .map(|p| crate::paths::normalize(&p))
        .unwrap_or_else(|_| source.to_path_buf())
        .display()
        .to_string()
}

/// The task list of a project that names none (`[source]`, or tasks.jsonl).
pub(crate) fn default_source(config: &Config) -> String {
    match &config.source {
        Some(crate::config::SourceConfig::Jsonl { path }) => source_key(path),
        Some(crate::config::SourceConfig::Script { command }) => {
            format!("[source] script `{command}`")
        }
        None => source_key(&config.dir.join("tasks.jsonl")),
    }
}

/// The tasks of `source` that it no longer has are `removed` (a task of
/// another task list is left as it is; one from a state that did not record
/// its list counts as the project's default list's). Says so once per
/// newly removed batch.
fn mark_removed(
    state: &mut State,
    tasks: &TaskSet,
    source: &str,
    config: &Config,
    notes: &mut Vec<String>,
) {
    let default = default_source(config);
    let gone: Vec<String> = state
        .tasks
        .iter()
        .filter(|r| !r.removed && tasks.get(&r.id).is_none())
        .filter(|r| r.source.as_deref().unwrap_or(&default) == source)
        .map(|r| r.id.clone())
        .collect();
    for id in &gone {
        if let Some(r) = state.task_mut(id) {
            r.removed = true;
        }
    }
    if !gone.is_empty() {
        notes.push(format!(
            "{} no longer in {}: {} {}, and `flocks land` leaves {} out unless named; `{}` drops {} from the state",
            crate::output::units::count(gone.len(), "task"),
            tasks.source.display(),
            gone.join(", "),
            crate::output::units::noun_for(gone.len(), "is marked removed", "are marked removed"),
            crate::output::units::noun_for(gone.len(), "it", "them"),
            crate::suggest::command(
                &["flocks", "forget"]
                    .into_iter()
                    .chain(gone.iter().map(String::as_str))
                    .collect::<Vec<_>>()
            ),
            crate::output::units::noun_for(gone.len(), "it", "them"),
        ));
    }
}

/// [`merge_tasks`] for a best-of task: it is retried as one task (every
/// variant again) when none of its variants survived and `--supervise`
/// allows; its settled variants wait for the judgement; the others run.
/// A task already in state brought in line with its task line: its fields,
/// its prompt, and whether it runs again. A best-of task is retried by
/// rounds of its variants, any other by its own attempts.
#[expect(
    clippy::too_many_arguments,
    reason = "merge_tasks' loop state, passed through"
)]
fn merge_existing(
    rec: &mut TaskRecord,
    t: &crate::tasks::Task,
    hash: String,
    config: &Config,
    opts: &RunOptions,
    outside: bool,
    notes: &mut Vec<String>,
    failed_before: &mut Vec<String>,
) {
    let best_of = !rec.variants.is_empty();
    rec.title = t.title.clone();
    rec.expect_commits = t.expect_commits;
    rec.depends_on = t.depends_on.clone();
    if !best_of && rec.branch != t.branch && rec.attempts.is_empty() {
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
            return;
        }
        TaskStatus::Done { outcome } if outcome.counts_against_retries() => {
            if outside {
                return;
            }
            if !retry_again(rec, config, opts, best_of, notes) {
                failed_before.push(t.id.clone());
                return;
            }
        }
        TaskStatus::Done { .. } | TaskStatus::Blocked { .. } if outside => return,
        TaskStatus::Done { .. } | TaskStatus::Blocked { .. } | TaskStatus::Running { .. } => {
            if let Err(e) = rec.transition(TaskStatus::Pending) {
                notes.push(format!("internal error, please report it: {e}"));
            }
        }
        TaskStatus::Pending => {}
    }
    if best_of {
        for v in &mut rec.variants {
            normalize_variant(v, &hash, notes);
        }
    }
    rec.requeues = 0;
    // It runs in this run: the attempt gets the new prompt, and the
    // dispatcher says how when it starts (fresh session or follow-up).
    if changed {
        rec.prompt_hash = hash;
    }
}

/// A failed task back in the queue when `--supervise` has retries left for
/// it (false when not): a best-of task's next round, or another attempt.
fn retry_again(
    rec: &mut TaskRecord,
    config: &Config,
    opts: &RunOptions,
    best_of: bool,
    notes: &mut Vec<String>,
) -> bool {
    let logs = config.state_dir().join("logs");
    if best_of {
        let rounds = rec.best_of.as_ref().map_or(0, |b| b.failed_rounds);
        if !(opts.supervise && rounds < 1 + opts.max_retries) {
            return false;
        }
        if let Err(e) = requeue_round(rec, config, &logs, false) {
            notes.push(format!("internal error, please report it: {e}"));
        }
        return true;
    }
    if !(opts.supervise && rec.counted_failures() < 1 + opts.max_retries) {
        return false;
    }
    let last = rec.last_attempt().map(|a| a.number).unwrap_or(0);
    rec.next = Some(Box::new(crate::retry::next_after_failure(
        rec, last, config, &logs,
    )));
    if let Err(e) = rec.transition(TaskStatus::Pending) {
        notes.push(format!("internal error, please report it: {e}"));
    }
    true
}
