//! Deciding how an attempt ended, from structured facts only. Limits and bad
//! credentials are recognised from the result's `api_error_status` (or its text
//! when `is_error`), a rejected `rate_limit_event`, or an assistant `error`;
//! never from tool output.

use chrono::{DateTime, TimeZone, Utc};

use crate::state::{Outcome, ResultInfo};

/// Why the process ended, as far as flocks is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndedBy {
    /// It exited on its own.
    Exited,
    TimedOut,
    Stalled,
    /// flocks stopped it (Ctrl-C, `flocks stop`).
    Cancelled,
}

/// Everything known when an attempt ends.
#[derive(Debug, Clone)]
pub(crate) struct AttemptFacts {
    pub ended_by: EndedBy,
    pub exit_code: Option<i32>,
    pub result: Option<ResultInfo>,
    /// A rejected rate_limit_event, with its reset time.
    pub rate_limit: Option<Option<DateTime<Utc>>>,
    pub assistant_error: Option<String>,
    /// Commits the task's branch holds beyond the task's origin, whichever
    /// attempt made them (after leftovers).
    pub task_commits: usize,
    /// The task line's `expect_commits`: false lets a clean success result
    /// succeed without any commit.
    pub expect_commits: bool,
    pub credential: Option<String>,
    /// Last stderr lines, for messages.
    pub stderr_tail: Vec<String>,
    /// Any stdout at all.
    pub saw_output: bool,
}

/// Exit code of the supervisor when the agent program could not be started.
pub(crate) const EXIT_CANNOT_EXEC: i32 = 127;

pub(crate) fn classify(f: &AttemptFacts) -> Outcome {
    match f.ended_by {
        EndedBy::TimedOut => return Outcome::TimedOut,
        EndedBy::Stalled => return Outcome::Stalled,
        EndedBy::Cancelled => return Outcome::Interrupted,
        EndedBy::Exited => {}
    }
    let clean_success = f.exit_code == Some(0)
        && f.result
            .as_ref()
            .is_some_and(|r| r.subtype.as_deref() == Some("success") && !r.is_error);
    if !clean_success && let Some(limit) = limit_signal(f) {
        return limit;
    }
    if clean_success {
        return if f.task_commits > 0 || !f.expect_commits {
            Outcome::Success
        } else {
            Outcome::Failed {
                reason: "the agent finished without committing anything: the task's branch \
                         holds no commit beyond the one it started from, from any attempt; if the \
                         task is not meant to commit, add \"expect_commits\": false to its line"
                    .into(),
            }
        };
    }
    if let Some(r) = &f.result {
        if r.subtype.as_deref() == Some("error_max_turns") {
            return Outcome::Failed {
                reason: "reached max_turns before finishing".into(),
            };
        }
        if r.is_error || r.subtype.as_deref() != Some("success") {
            let what = r
                .text
                .as_deref()
                .map(|t| crate::agent::stream::one_line(t, 200))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| r.subtype.clone().unwrap_or_else(|| "error".into()));
            return Outcome::Failed {
                reason: format!("the agent reported an error: {what}"),
            };
        }
        return Outcome::Failed {
            reason: format!(
                "the agent exited with {} after a success result",
                code_text(f.exit_code)
            ),
        };
    }
    if f.exit_code == Some(EXIT_CANNOT_EXEC) && !f.saw_output {
        return Outcome::SpawnFailed {
            reason: f
                .stderr_tail
                .last()
                .cloned()
                .unwrap_or_else(|| "the agent program could not be run".into()),
        };
    }
    let mut reason = format!(
        "the agent exited with {} and no result",
        code_text(f.exit_code)
    );
    if let Some(last) = f.stderr_tail.iter().rev().find(|l| !l.trim().is_empty()) {
        reason.push_str(&format!(
            " (stderr: {})",
            crate::agent::stream::one_line(last, 200)
        ));
    }
    Outcome::Failed { reason }
}

fn code_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("code {c}"),
        None => "a signal".into(),
    }
}

fn limit_signal(f: &AttemptFacts) -> Option<Outcome> {
    let rate_limited = |resets_at| Outcome::RateLimited {
        credential: f.credential.clone(),
        resets_at,
    };
    let rejected = |reason: &str| Outcome::CredentialRejected {
        credential: f.credential.clone(),
        reason: reason.to_string(),
    };
    if let Some(resets_at) = f.rate_limit {
        return Some(rate_limited(resets_at));
    }
    if let Some(kind) = &f.assistant_error {
        match kind.as_str() {
            "rate_limit" => return Some(rate_limited(None)),
            "authentication_failed" => return Some(rejected("authentication failed")),
            "billing_error" => return Some(rejected("billing error")),
            "overloaded" | "overloaded_error" => return Some(Outcome::Overloaded),
            _ => {}
        }
    }
    let r = f.result.as_ref()?;
    if let Some(status) = r.api_error_status.as_ref().and_then(status_code) {
        match status {
            429 => return Some(rate_limited(r.text.as_deref().and_then(reset_from_text))),
            529 => return Some(Outcome::Overloaded),
            401 => return Some(rejected("authentication failed (401)")),
            402 => return Some(rejected("billing error (402)")),
            403 => return Some(rejected("permission denied (403)")),
            _ => {}
        }
    }
    if !r.is_error {
        return None;
    }
    let text = r.text.as_deref()?;
    let lower = text.to_lowercase();
    if lower.contains("usage limit reached")
        || lower.contains("hit your limit")
        || lower.contains("rate limit")
    {
        return Some(rate_limited(reset_from_text(text)));
    }
    if lower.contains("overloaded") {
        return Some(Outcome::Overloaded);
    }
    if lower.contains("credit balance is too low") || lower.contains("billing") {
        return Some(rejected("billing error"));
    }
    if lower.contains("invalid api key")
        || lower.contains("authentication_error")
        || lower.contains("oauth token has expired")
        || lower.contains("please run /login")
    {
        return Some(rejected("authentication failed"));
    }
    None
}

fn status_code(v: &serde_json::Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
}

/// `Claude AI usage limit reached|1700000000` carries the reset time.
fn reset_from_text(text: &str) -> Option<DateTime<Utc>> {
    let (_, rest) = text.split_once('|')?;
    let digits: String = rest
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let secs: i64 = digits.parse().ok()?;
    Utc.timestamp_opt(secs, 0).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> AttemptFacts {
        AttemptFacts {
            ended_by: EndedBy::Exited,
            exit_code: Some(0),
            result: Some(ResultInfo {
                subtype: Some("success".into()),
                ..Default::default()
            }),
            rate_limit: None,
            assistant_error: None,
            task_commits: 1,
            expect_commits: true,
            credential: Some("sub-1".into()),
            stderr_tail: vec![],
            saw_output: true,
        }
    }

    #[test]
    fn success_needs_commits() {
        assert_eq!(classify(&facts()), Outcome::Success);
        let f = AttemptFacts {
            task_commits: 0,
            ..facts()
        };
        assert!(matches!(classify(&f), Outcome::Failed { .. }));
        let f = AttemptFacts {
            expect_commits: false,
            ..f
        };
        assert_eq!(classify(&f), Outcome::Success);
    }

    #[test]
    fn usage_limit_text() {
        let mut f = facts();
        f.exit_code = Some(1);
        f.result = Some(ResultInfo {
            subtype: Some("success".into()),
            is_error: true,
            text: Some("Claude AI usage limit reached|1700000000".into()),
            ..Default::default()
        });
        match classify(&f) {
            Outcome::RateLimited {
                credential,
                resets_at,
            } => {
                assert_eq!(credential.as_deref(), Some("sub-1"));
                assert_eq!(resets_at.unwrap().timestamp(), 1700000000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn status_codes() {
        let mut f = facts();
        f.exit_code = Some(1);
        f.result.as_mut().unwrap().is_error = true;
        f.result.as_mut().unwrap().api_error_status = Some(529.into());
        assert_eq!(classify(&f), Outcome::Overloaded);
        f.result.as_mut().unwrap().api_error_status = None;
        f.assistant_error = Some("authentication_failed".into());
        assert!(matches!(classify(&f), Outcome::CredentialRejected { .. }));
    }

    #[test]
    fn a_plain_failure_is_not_a_limit() {
        let mut f = facts();
        f.exit_code = Some(1);
        f.result = Some(ResultInfo {
            subtype: Some("error_during_execution".into()),
            is_error: true,
            text: Some("tests failed".into()),
            ..Default::default()
        });
        assert!(matches!(classify(&f), Outcome::Failed { .. }));
        f.result = None;
        f.exit_code = Some(127);
        f.saw_output = false;
        assert!(matches!(classify(&f), Outcome::SpawnFailed { .. }));
    }
}
