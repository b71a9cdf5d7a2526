//! Judging a best-of task off the dispatch loop: applying and validating
//! its variants (`land::judge`, on a blocking thread), then, with
//! `[best_of] judge = true` and two or more variants that passed, the judge
//! agent, through the same executor as every attempt. Its answer is checked;
//! one that cannot be used falls back to the default ranking with a notice.
//!
//! The judge agent answers, as the last line of its result, one JSON object:
//! `{"winner": <k>, "reason": "<why>"}`, where k is a variant that passed.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio::sync::{mpsc, watch};

use super::executor::{AttemptJob, run_attempt};
use super::fleet::{JudgeAgent, JudgeJob, Judged};
use super::{RunEvent, StopLevel};
use crate::agent::Redactor;
use crate::backend::Backend;
use crate::land::judge::{Candidate, evaluate, mark_winner, point_branch, rank};
use crate::project::Project;
use crate::state::{JudgedBy, Judgement, Outcome, VerdictOutcome};

/// Why a best-of task could not be judged: it stays pending, and the next
/// run judges it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JudgeError {
    /// The judging thread panicked or was cancelled.
    #[error("internal error, please report it: judging failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// Its variants could not be applied or validated.
    #[error("judging {task}: {source}")]
    Evaluate {
        task: String,
        source: crate::error::Error,
    },
}

/// Why the judge agent's answer cannot be used (the default ranking picks).
#[derive(Debug, PartialEq, thiserror::Error)]
pub(crate) enum BadAnswer {
    /// The agent did not succeed (its outcome, described).
    #[error("the judge agent {0}")]
    Failed(String),
    #[error("it gave no answer")]
    Empty,
    #[error("no line of it is a JSON object")]
    NoJson,
    #[error("its `winner` is not a variant number")]
    NotANumber,
    #[error("its `winner` is out of range")]
    OutOfRange,
    #[error("its winner {k} is not one of the variants that passed ({passed})")]
    NotPassed { k: u32, passed: String },
    #[error("its `reason` is missing or empty")]
    NoReason,
}

/// What every judging needs from the run.
pub(crate) struct JudgeEnv {
    pub project: Project,
    pub log_root: PathBuf,
    pub backends: Vec<Arc<dyn Backend>>,
    pub redactor: Arc<Redactor>,
    /// The run's proxy (the judge agent's credential goes through it).
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
    /// The run's host `.git` guards: the validation shares them with the
    /// docker pools, and the winner's branch is exempt while it moves.
    pub guards: Arc<crate::guard::Guards>,
}

/// Judge `job`'s variants. None: stopped (Ctrl-C) before the judgement was
/// final; the task stays pending and the next run judges it.
pub(crate) async fn judge(
    job: JudgeJob,
    env: Arc<JudgeEnv>,
    stop: watch::Receiver<StopLevel>,
) -> Result<Option<Judged>, JudgeError> {
    let JudgeJob {
        task,
        branch,
        prompt,
        variants,
        agent,
        notice,
    } = job;
    let project = env.project.clone();
    let records = variants.clone();
    let (halt, guards) = (stop.clone(), env.guards.clone());
    let cands = tokio::task::spawn_blocking(move || evaluate(&project, &records, &guards, halt))
        .await?
        .map_err(|source| JudgeError::Evaluate {
            task: task.clone(),
            source,
        })?;
    if cands.iter().any(|c| c.interrupted) || *stop.borrow() != StopLevel::Run {
        return Ok(None);
    }
    let (ranking, winner, reason) = rank(&cands);
    let mut judgement = Judgement {
        winner,
        by: JudgedBy::Ranking,
        reason,
        ranking,
        at: Utc::now(),
        notice,
        judge_cost_usd: 0.0,
    };
    let passed: Vec<&Candidate> = cands
        .iter()
        .filter(|c| c.verdict.outcome == VerdictOutcome::Passed)
        .collect();
    let mut report = None;
    if let Some(agent) = agent
        && passed.len() >= 2
    {
        let r = run_judge(&env, *agent, &prompt, &passed, stop.clone()).await;
        if *stop.borrow() != StopLevel::Run {
            return Ok(None);
        }
        let ks: Vec<u32> = passed.iter().map(|c| c.verdict.variant).collect();
        let answer = match r.outcome {
            Outcome::Success => r
                .result
                .as_ref()
                .and_then(|res| res.text.as_deref())
                .ok_or(BadAnswer::Empty)
                .and_then(|text| parse_answer(text, &ks)),
            ref other => Err(BadAnswer::Failed(other.describe())),
        };
        match answer {
            Ok((k, why)) => {
                judgement.ranking = mark_winner(judgement.ranking, k);
                judgement.winner = Some(k);
                judgement.by = JudgedBy::Judge;
                judgement.reason = env.redactor.redact(&why).into_owned();
            }
            Err(why) => {
                judgement.notice = Some(format!(
                    "task {task}: the judge's answer could not be used ({why}); the default ranking picked v{}",
                    winner.unwrap_or(0)
                ));
            }
        }
        report = Some(r);
    }
    if let Some(k) = judgement.winner
        && let Some(tip) = variants
            .get(k as usize - 1)
            .and_then(|v| v.successful_attempt())
            .and_then(|a| a.end_tip.clone())
    {
        let repo_dir = env.project.config.workspace.repo.clone();
        // flocks moves the task's branch while docker attempts may run: the
        // host `.git` guard leaves it be, then guards it where it now points.
        let guards = env.guards.clone();
        let moved = tokio::task::spawn_blocking(move || {
            guards.exempt_branch(&branch);
            let moved = point_branch(&repo_dir, &branch, &tip);
            guards.settle_branch(&branch);
            moved
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = moved {
            let note = format!("task {task}: could not point its branch at the winner: {e}");
            judgement.notice = Some(match judgement.notice.take() {
                Some(n) => format!("{n}; {note}"),
                None => note,
            });
        }
    }
    Ok(Some(Judged {
        judgement,
        judge: report,
    }))
}

/// Run the judge agent to its end.
async fn run_judge(
    env: &JudgeEnv,
    agent: JudgeAgent,
    prompt: &str,
    passed: &[&Candidate],
    stop: watch::Receiver<StopLevel>,
) -> crate::runner::AttemptReport {
    let JudgeAgent {
        id,
        attempt,
        pool,
        credential,
        prepare,
        mut spec,
    } = agent;
    spec.prompt = judge_prompt(prompt, passed);
    let config = &env.project.config;
    let job = AttemptJob {
        log_path: env.log_root.join(&id).join(format!("{attempt}.log")),
        task: id,
        attempt,
        prepare,
        backend: env.backends[pool].clone(),
        spec,
        credential,
        redactor: env.redactor.clone(),
        timeout: config.agent_timeout,
        stall: config.stall_timeout,
        grace: config.kill_grace,
        expect_commits: false,
        repo_dir: config.workspace.repo.clone(),
        // Its worktree is set up as any agent's (`.worktreeinclude`,
        // `[workspace] setup`).
        setup: super::setup::SetupPlan::from_config(config),
        proxy: env.proxy.clone(),
        guards: env.guards.clone(),
    };
    let (tx, mut rx) = mpsc::channel(64);
    tokio::spawn(run_attempt(job, tx, stop));
    while let Some(ev) = rx.recv().await {
        if let RunEvent::Finished { report, .. } = ev {
            return *report;
        }
    }
    crate::runner::AttemptReport::new(
        Outcome::Failed {
            reason: "the judge agent ended without a report".into(),
        },
        0.0,
        None,
    )
}

/// What the judge agent is asked.
fn judge_prompt(task_prompt: &str, passed: &[&Candidate]) -> String {
    let ks: Vec<String> = passed
        .iter()
        .map(|c| c.verdict.variant.to_string())
        .collect();
    let mut s = format!(
        "You are judging {} independent attempts (\"variants\") at the same task. Each one \
         passed the project's validation. Pick the one that does the task best: correct, \
         complete, and no larger than it needs to be. Read the diffs below; do not change, \
         create or commit any file.\n\n## The task\n\n{}\n",
        passed.len(),
        task_prompt.trim()
    );
    for c in passed {
        s.push_str(&format!(
            "\n## Variant {} ({} changed)\n\n```diff\n{}```\n",
            c.verdict.variant,
            crate::output::units::count(c.verdict.lines.unwrap_or(0), "line"),
            c.patch.as_deref().unwrap_or_default()
        ));
    }
    s.push_str(&format!(
        "\n## Your answer\n\nEnd your answer with one JSON object on a line of its own, and \
         nothing after it:\n\n{{\"winner\": <one of {}>, \"reason\": \"<one or two sentences: \
         why this variant>\"}}\n",
        ks.join(", ")
    ));
    s
}

/// The judge's pick from its result text: the last line that is a JSON
/// object `{"winner": k, "reason": "..."}` with k one of `passed` and a
/// reason that says something.
pub(crate) fn parse_answer(text: &str, passed: &[u32]) -> Result<(u32, String), BadAnswer> {
    let Some(obj) = text
        .lines()
        .rev()
        .map(|l| l.trim().trim_matches('`').trim())
        .filter(|l| l.starts_with('{'))
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    else {
        return Err(BadAnswer::NoJson);
    };
    let k = obj
        .get("winner")
        .and_then(serde_json::Value::as_u64)
        .ok_or(BadAnswer::NotANumber)?;
    let k = u32::try_from(k).map_err(|_| BadAnswer::OutOfRange)?;
    if !passed.contains(&k) {
        return Err(BadAnswer::NotPassed {
            k,
            passed: passed
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let reason = obj
        .get("reason")
        .and_then(serde_json::Value::as_str)
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .ok_or(BadAnswer::NoReason)?;
    // It reaches terminals and reports: no control characters, one line.
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1000)
        .collect();
    Ok((k, reason))
}

#[cfg(test)]
mod tests {
    use super::parse_answer;

    #[test]
    fn answers_are_checked() {
        let ok = "I read them.\n{\"winner\": 2, \"reason\": \"clearer\"}\n";
        assert_eq!(parse_answer(ok, &[2, 3]), Ok((2, "clearer".into())));
        let fenced = "```json\n{\"winner\": 3, \"reason\": \"r\"}\n```";
        assert_eq!(parse_answer(fenced, &[2, 3]), Ok((3, "r".into())));
        let escapes = "{\"winner\": 3, \"reason\": \"a\\u001b[2Jb\\nc\"}";
        assert_eq!(parse_answer(escapes, &[3]), Ok((3, "a [2Jb c".into())));
        for bad in [
            "the second one",
            "{\"winner\": 1, \"reason\": \"x\"}",
            "{\"winner\": \"2\", \"reason\": \"x\"}",
            "{\"winner\": 2, \"reason\": \"  \"}",
            "{\"winner\": 2}",
        ] {
            assert!(parse_answer(bad, &[2, 3]).is_err(), "{bad}");
        }
    }
}
