//! What a new attempt knows about the last one: a resumed session with a
//! follow-up prompt, or a fresh start whose prompt carries the prior attempt's
//! ending, result, log tail and the commits its branch already holds.

use std::path::Path;

use crate::config::Config;
use crate::state::{NextAttempt, Outcome, TaskRecord};

const LOG_TAIL_LINES: usize = 30;

/// The plan for the attempt after `attempt` failed.
pub(crate) fn next_after_failure(
    rec: &TaskRecord,
    attempt: u32,
    config: &Config,
    log_root: &Path,
) -> NextAttempt {
    // An attempt whose worktree setup failed never ran its agent: the next
    // one builds on the last attempt that did, or is a first start.
    let ran = rec
        .attempts
        .iter()
        .rev()
        .filter(|a| a.number <= attempt)
        .find(|a| !matches!(a.outcome, Some(Outcome::SetupFailed { .. })));
    let Some(attempt) = ran.map(|a| a.number) else {
        return NextAttempt {
            fresh: false,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: None,
            base: None,
        };
    };
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
    if let Ok(text) = crate::fsat::read_to_string(&log) {
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
pub(crate) fn prompt_for(base: &str, next: &NextAttempt, resuming: bool, edited: bool) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(outcomes: &[serde_json::Value]) -> TaskRecord {
        let attempts: Vec<serde_json::Value> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| {
                serde_json::json!({
                    "number": i + 1, "pool": "local", "started_at": "2026-01-01T00:00:00Z",
                    "tag": "k:a:1", "outcome": o, "session_id": format!("s-{}", i + 1),
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "id": "a", "branch": "flocks/a", "worktree": "/p/.worktrees/a",
            "prompt_hash": "h", "status": {"state": "pending"}, "attempts": attempts,
        }))
        .unwrap()
    }

    #[test]
    fn a_failed_setup_is_no_attempt_to_build_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flocks.toml");
        std::fs::write(&path, "").unwrap();
        let config = Config::load(&path).unwrap();
        let setup = serde_json::json!({"kind": "setup_failed", "command": "npm ci", "reason": "exit status 1"});
        let failed = serde_json::json!({"kind": "failed", "reason": "tests fail"});
        // Only a failed setup: the next attempt starts as a first one would.
        let next = next_after_failure(
            &record(std::slice::from_ref(&setup)),
            1,
            &config,
            dir.path(),
        );
        assert_eq!(next.context, None);
        assert_eq!(next.resume_session, None);
        assert_eq!(prompt_for("do a", &next, false, false), "do a");
        // An agent ran before: the next attempt builds on that one.
        let next = next_after_failure(&record(&[failed, setup]), 2, &config, dir.path());
        assert_eq!(next.resume_session.as_deref(), Some("s-1"));
        assert!(
            next.ended
                .as_deref()
                .unwrap()
                .starts_with("attempt 1 failed"),
            "{next:?}"
        );
    }
}
