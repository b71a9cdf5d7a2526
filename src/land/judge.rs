//! Judging a best-of task's variants, the git and validation half: each
//! variant whose agent succeeded has its work (`origin..tip`, from
//! [`super::range`]) applied on the current land target and `[validate]
//! commands` run on the result, as `land` would, in a scratch worktree of its
//! own (`.worktrees/.judge`, never the user's checkout); then the default
//! ranking: the smallest change (lines added + removed), then the lowest cost.

use std::path::Path;
use std::sync::Mutex;

use git2::{Oid, Repository};

use super::range::{commits, short, task_range};
use super::validate::Validation;
use super::validator::Validator;
use crate::error::{Context, Result};
use crate::git::cherry_pick::{Applied, pick};
use crate::project::Project;
use crate::state::{TaskRecord, TaskStatus, Verdict, VerdictOutcome};

/// One judging at a time uses the scratch worktree.
static SCRATCH: Mutex<()> = Mutex::new(());

/// Most bytes of one variant's diff that a judge agent is shown.
const PATCH_MAX: usize = 24 * 1024;

/// A variant as judged, before the ranking.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub verdict: Verdict,
    /// Its diff (variants that passed), for a judge agent.
    pub patch: Option<String>,
    /// Its validation was stopped (Ctrl-C): the judgement is not final.
    pub interrupted: bool,
}

/// Apply and validate every variant (in order of k), until `stop` (the
/// run's stop level) says to stop; `guards` are the run's.
pub(crate) fn evaluate(
    project: &Project,
    variants: &[TaskRecord],
    guards: &crate::guard::Guards,
    stop: tokio::sync::watch::Receiver<crate::watch::StopLevel>,
) -> Result<Vec<Candidate>> {
    let repo = project.repo()?;
    let target = &project.config.workspace.land_target;
    let onto = crate::git::branch_tip(&repo, target)?.ok_or_else(|| {
        crate::error::Error::Usage(format!(
            "land_target `{target}` is not a branch: create it, or set [workspace] land_target"
        ))
    })?;
    let _scratch = SCRATCH.lock().unwrap_or_else(|e| e.into_inner());
    let validator = Validator::new(project, &repo, guards)?
        .at(super::scratch::judge_path(&project.config.worktrees_dir()))
        .with_stop(stop);
    let mut out = Vec::with_capacity(variants.len());
    for (v, k) in variants.iter().zip(1u32..) {
        out.push(one(project, &repo, &validator, onto, target, v, k)?);
    }
    Ok(out)
}

fn one(
    project: &Project,
    repo: &Repository,
    validator: &Validator,
    onto: Oid,
    target: &str,
    v: &TaskRecord,
    k: u32,
) -> Result<Candidate> {
    let verdict = |outcome, reason: String, lines| Verdict {
        variant: k,
        outcome,
        reason,
        lines,
        cost_usd: v.cost(),
    };
    let failed = |reason: String| Candidate {
        verdict: verdict(VerdictOutcome::Failed, reason, None),
        patch: None,
        interrupted: false,
    };
    match &v.status {
        TaskStatus::Done { outcome } if !v.status.is_success() => {
            return Ok(failed(outcome.describe()));
        }
        TaskStatus::Done { .. } => {}
        other => return Ok(failed(format!("did not end ({})", other.label()))),
    }
    let range = match task_range(repo, v) {
        Ok(r) => r,
        Err(why) => return Ok(failed(format!("has no work to judge: {why}"))),
    };
    let lines = changed_lines(repo, range.origin, range.tip)?;
    let ids: Vec<Oid> = commits(repo, range.origin, range.tip)?
        .iter()
        .map(|c| c.id)
        .collect();
    let (tip, applied) = pick(repo, onto, &v.id, &ids, false)?;
    if let Applied::Conflicted { commit, files } = applied {
        let reason = format!(
            "does not apply on {target}: commit {} conflicts in {}",
            short(commit),
            files.join(", ")
        );
        return Ok(Candidate {
            verdict: verdict(VerdictOutcome::FailedValidation, reason, Some(lines)),
            patch: None,
            interrupted: false,
        });
    }
    let log = project
        .state_dir()
        .join("logs")
        .join(&v.id)
        .join(format!("validate-{}.log", range.attempt));
    let validation = if project.config.validate.commands.is_empty() {
        Validation::NotConfigured
    } else {
        validator.run(repo, tip, &log, false)?
    };
    let (outcome, reason) = match &validation {
        Validation::Failed { command, reason } => (
            VerdictOutcome::FailedValidation,
            format!(
                "failed validation: `{command}` {reason} (log: {})",
                log.display()
            ),
        ),
        Validation::Interrupted { command } => (
            VerdictOutcome::FailedValidation,
            format!("validation was interrupted while `{command}` ran"),
        ),
        Validation::NotConfigured => (
            VerdictOutcome::Passed,
            format!("applies on {target} (no [validate] commands)"),
        ),
        Validation::Passed | Validation::NotNeeded | Validation::Skipped => {
            (VerdictOutcome::Passed, "passed validation".to_string())
        }
    };
    // A variant without commits (`"expect_commits": false`) is judged by its answer.
    let answer = || {
        let text = v
            .successful_attempt()
            .and_then(|a| a.result.as_ref()?.text.clone())
            .unwrap_or_default();
        format!("(no change to the files; its answer was:)\n{text}\n")
    };
    let patch = match outcome {
        VerdictOutcome::Passed if ids.is_empty() => Some(answer()),
        VerdictOutcome::Passed => Some(super::resolve::patch_text(
            repo,
            range.origin,
            range.tip,
            PATCH_MAX,
        )?),
        _ => None,
    };
    Ok(Candidate {
        verdict: verdict(outcome, reason, Some(lines)),
        patch,
        interrupted: matches!(validation, Validation::Interrupted { .. }),
    })
}

/// Lines added + removed between two commits' trees.
fn changed_lines(repo: &Repository, from: Oid, to: Oid) -> Result<u64> {
    let tree = |o: Oid| {
        repo.find_commit(o)
            .and_then(|c| c.tree())
            .ctx(|| format!("read the tree of {o}"))
    };
    let diff = repo
        .diff_tree_to_tree(Some(&tree(from)?), Some(&tree(to)?), None)
        .ctx(|| format!("diff {}..{}", short(from), short(to)))?;
    let stats = diff.stats().ctx(|| "count the changed lines".into())?;
    Ok((stats.insertions() + stats.deletions()) as u64)
}

/// The default ranking: the variants that passed, smallest change first,
/// then the cheapest, then the lowest k; then those that failed validation,
/// then those that failed. The first is the winner when it passed. Returns
/// the verdicts in that order (the winner marked) and why it won.
pub(crate) fn rank(cands: &[Candidate]) -> (Vec<Verdict>, Option<u32>, String) {
    let mut verdicts: Vec<Verdict> = cands.iter().map(|c| c.verdict.clone()).collect();
    let class = |o: VerdictOutcome| match o {
        VerdictOutcome::Winner | VerdictOutcome::Passed => 0,
        VerdictOutcome::FailedValidation => 1,
        VerdictOutcome::Failed => 2,
    };
    verdicts.sort_by(|a, b| {
        class(a.outcome)
            .cmp(&class(b.outcome))
            .then(
                a.lines
                    .unwrap_or(u64::MAX)
                    .cmp(&b.lines.unwrap_or(u64::MAX)),
            )
            .then(a.cost_usd.total_cmp(&b.cost_usd))
            .then(a.variant.cmp(&b.variant))
    });
    let passed: Vec<&Verdict> = verdicts
        .iter()
        .filter(|v| v.outcome == VerdictOutcome::Passed)
        .collect();
    let Some(first) = passed.first() else {
        return (verdicts, None, "no variant passed".into());
    };
    let k = first.variant;
    let lines = crate::output::units::count(first.lines.unwrap_or(0), "line");
    let reason = match passed.get(1) {
        None => format!("the only variant that passed ({lines} changed)"),
        Some(next) if next.lines == first.lines && first.cost_usd < next.cost_usd => format!(
            "passed with the smallest change ({lines}, as v{}) at the lower cost ({} against {})",
            next.variant,
            crate::output::units::money(first.cost_usd),
            crate::output::units::money(next.cost_usd)
        ),
        Some(next) if next.lines == first.lines => format!(
            "passed with the smallest change ({lines}) at the same cost as v{}: the lower number wins the tie",
            next.variant
        ),
        Some(next) => format!(
            "passed with the smallest change: {lines} (next: v{} with {})",
            next.variant,
            next.lines.unwrap_or(0)
        ),
    };
    (mark_winner(verdicts, k), Some(k), reason)
}

/// The verdicts with `k` as the winner, first; the rest keep their order.
pub(crate) fn mark_winner(mut verdicts: Vec<Verdict>, k: u32) -> Vec<Verdict> {
    for v in &mut verdicts {
        if v.outcome == VerdictOutcome::Winner {
            v.outcome = VerdictOutcome::Passed;
        }
    }
    if let Some(pos) = verdicts.iter().position(|v| v.variant == k) {
        let mut w = verdicts.remove(pos);
        w.outcome = VerdictOutcome::Winner;
        verdicts.insert(0, w);
    }
    verdicts
}

/// The branch of a best-of task points at its winner's tip (created, or
/// moved when flocks made it).
pub(crate) fn point_branch(repo_dir: &Path, branch: &str, tip: &str) -> Result<()> {
    let repo = crate::git::open(repo_dir)?;
    let tip: Oid = tip
        .parse()
        .map_err(|_| crate::error::Error::Other(format!("`{tip}` is not a commit id")))?;
    repo.reference(
        &format!("refs/heads/{branch}"),
        tip,
        true,
        "flocks: the best-of winner",
    )
    .ctx(|| format!("point {branch} at the winner"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(k: u32, outcome: VerdictOutcome, lines: Option<u64>, cost: f64) -> Candidate {
        Candidate {
            verdict: Verdict {
                variant: k,
                outcome,
                reason: String::new(),
                lines,
                cost_usd: cost,
            },
            patch: None,
            interrupted: false,
        }
    }

    #[test]
    fn smallest_then_cheapest_wins() {
        let c = [
            cand(1, VerdictOutcome::FailedValidation, Some(2), 0.1),
            cand(2, VerdictOutcome::Passed, Some(40), 0.1),
            cand(3, VerdictOutcome::Passed, Some(5), 0.5),
            cand(4, VerdictOutcome::Failed, None, 0.0),
        ];
        let (v, w, why) = rank(&c);
        assert_eq!(w, Some(3));
        let order: Vec<(u32, VerdictOutcome)> = v.iter().map(|v| (v.variant, v.outcome)).collect();
        assert_eq!(
            order,
            [
                (3, VerdictOutcome::Winner),
                (2, VerdictOutcome::Passed),
                (1, VerdictOutcome::FailedValidation),
                (4, VerdictOutcome::Failed)
            ]
        );
        assert!(
            why.contains("5 lines") && why.contains("v2 with 40"),
            "{why}"
        );
        let c = [
            cand(1, VerdictOutcome::Passed, Some(5), 0.5),
            cand(2, VerdictOutcome::Passed, Some(5), 0.2),
        ];
        let (_, w, why) = rank(&c);
        assert_eq!(w, Some(2));
        assert!(why.contains("lower cost"), "{why}");
        let c = [
            cand(1, VerdictOutcome::Passed, Some(5), 0.2),
            cand(2, VerdictOutcome::Passed, Some(5), 0.2),
        ];
        let (_, w, why) = rank(&c);
        assert_eq!(w, Some(1));
        assert!(why.contains("lower number wins the tie"), "{why}");
        let (_, w, _) = rank(&[cand(1, VerdictOutcome::Failed, None, 0.0)]);
        assert_eq!(w, None);
    }
}
