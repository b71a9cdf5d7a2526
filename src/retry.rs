//! What a new attempt knows about the last one: a resumed session with a
//! follow-up prompt, or a fresh start whose prompt carries the prior attempt's
//! ending, result, log tail and the commits its branch already holds.

use std::path::Path;

use crate::config::Config;
use crate::state::{NextAttempt, TaskRecord};

const LOG_TAIL_LINES: usize = 30;

/// The plan for the attempt after `attempt` failed.
pub fn next_after_failure(
    rec: &TaskRecord,
    attempt: u32,
    config: &Config,
    log_root: &Path,
) -> NextAttempt {
    let a = rec.attempts.iter().find(|a| a.number == attempt);
    let ended = a
        .and_then(|a| a.outcome.as_ref())
        .map(|o| o.describe())
        .unwrap_or_else(|| "ended without an outcome".into());
    NextAttempt {
        fresh: false,
        resume_session: a.and_then(|a| a.session_id.clone()),
        resume_pool: a.map(|a| a.pool.clone()),
        ended: Some(format!("attempt {attempt} {ended}")),
        context: Some(context(rec, attempt, &ended, config, log_root)),
        base: None,
    }
}

fn context(
    rec: &TaskRecord,
    attempt: u32,
    ended: &str,
    config: &Config,
    log_root: &Path,
) -> String {
    let mut s = String::from("\n\n---\n## An earlier attempt at this task did not finish\n\n");
    s.push_str(&format!("Attempt {attempt} {ended}.\n"));
    if let Some(text) = rec
        .attempts
        .iter()
        .find(|a| a.number == attempt)
        .and_then(|a| a.result.as_ref())
        .and_then(|r| r.text.as_deref())
        .filter(|t| !t.trim().is_empty())
    {
        s.push_str(&format!("\nIts final message was:\n\n{}\n", text.trim()));
    }
    let log = log_root.join(&rec.id).join(format!("{attempt}.log"));
    if let Ok(text) = std::fs::read_to_string(&log) {
        let tail = crate::logview::tail_rendered(&text, LOG_TAIL_LINES);
        if !tail.is_empty() {
            s.push_str(&format!(
                "\nThe last lines of its log:\n\n```\n{}\n```\n",
                tail.join("\n")
            ));
        }
    }
    let commits = branch_commits(config, rec);
    if !commits.is_empty() {
        s.push_str(&format!(
            "\nThe branch `{}` already holds these commits from earlier attempts (newest first):\n\n{}\n\nBuild on them unless they are wrong.\n",
            rec.branch,
            commits.join("\n")
        ));
    }
    s.push_str("\nFinish the task and commit your work.\n");
    s
}

/// `- abc1234 subject` for the branch's commits beyond the task's origin.
fn branch_commits(config: &Config, rec: &TaskRecord) -> Vec<String> {
    let Ok(repo) = crate::git::open(&config.workspace.repo) else {
        return Vec::new();
    };
    let origin = rec
        .origin_commit()
        .and_then(|o| o.parse::<git2::Oid>().ok());
    let base = match origin {
        Some(o) => Ok(o),
        None => crate::git::resolve_commit(&repo, &config.workspace.base),
    };
    let (Ok(Some(tip)), Ok(base)) = (crate::git::branch_tip(&repo, &rec.branch), base) else {
        return Vec::new();
    };
    let Ok(mut walk) = repo.revwalk() else {
        return Vec::new();
    };
    if walk.push(tip).is_err() || walk.hide(base).is_err() {
        return Vec::new();
    }
    walk.flatten()
        .take(20)
        .filter_map(|oid| repo.find_commit(oid).ok())
        .map(|c| {
            format!(
                "- {} {}",
                &c.id().to_string()[..7],
                c.summary().ok().flatten().unwrap_or("").trim()
            )
        })
        .collect()
}

/// The prompt of the next attempt. `edited`: the task's prompt changed since
/// the last attempt, so a resumed session is given the new one in full.
pub fn prompt_for(base: &str, next: &NextAttempt, resuming: bool, edited: bool) -> String {
    if resuming {
        let ended = next
            .ended
            .as_deref()
            .unwrap_or("the previous attempt ended before finishing");
        if edited {
            return format!(
                "The previous run of this session stopped: {ended}. The task has been changed since: \
                 here it is in full, and it replaces what you were asked before.\n\n{base}\n\n\
                 Do the task as it reads now, building on what is already on the branch where it \
                 still fits, check that it is complete, and commit your work."
            );
        }
        return format!(
            "The previous run of this session stopped: {ended}. Continue the task from where you left off, \
             check that it is complete, and commit your work."
        );
    }
    match &next.context {
        Some(ctx) => format!("{base}{ctx}"),
        None => base.to_string(),
    }
}
