//! The result being built: the plan's tasks applied one after the other onto
//! the target, with each task's outcome and the tip after it. Every prefix of
//! the chain is a commit, so "the first j tasks" needs no new cherry-pick; a
//! task taken out (a bisect culprit) leaves the chain before it as it was and
//! the tasks after it are applied again.

use git2::{Oid, Repository};

use super::apply;
use super::plan::{Plan, PlanStatus};
use super::record::{CommitMap, LandedTask};
use super::{TaskOutcome, TaskReport};
use crate::error::Result;
use crate::git::cherry_pick::Applied;

/// One task of the plan, as applied.
#[derive(Debug, Clone)]
pub(crate) struct Step {
    pub outcome: TaskOutcome,
    /// What land.json records when it lands.
    pub landed: Option<LandedTask>,
    /// The chain's tip after this task (== the one before when it added
    /// nothing).
    pub tip: Oid,
}

/// The plan's tasks applied onto `base`; `steps` follows `plan.tasks`.
#[derive(Debug, Clone)]
pub(crate) struct Chain {
    pub base: Oid,
    pub steps: Vec<Step>,
}

impl Chain {
    /// Apply every task of `plan` onto its target tip.
    pub(super) fn build(repo: &Repository, plan: &Plan) -> Result<Chain> {
        let mut chain = Chain {
            base: plan.target_tip,
            steps: Vec::with_capacity(plan.tasks.len()),
        };
        chain.extend(repo, plan)?;
        Ok(chain)
    }

    /// The tip of the whole chain.
    pub(super) fn tip(&self) -> Oid {
        self.tip_before(self.steps.len())
    }

    /// The tip after the first `i` steps.
    pub(super) fn tip_before(&self, i: usize) -> Oid {
        match i {
            0 => self.base,
            _ => self.steps[i - 1].tip,
        }
    }

    /// The steps whose commits changed the result, in landing order: the
    /// tasks a bisection can blame.
    pub(super) fn changing(&self) -> Vec<usize> {
        (0..self.steps.len())
            .filter(|&i| self.steps[i].tip != self.tip_before(i))
            .collect()
    }

    /// Take step `i` out with `outcome` (it will not land) and apply the
    /// tasks after it again, onto the tip before it.
    pub(super) fn remove(
        &mut self,
        repo: &Repository,
        plan: &Plan,
        i: usize,
        outcome: TaskOutcome,
    ) -> Result<()> {
        self.steps.truncate(i);
        let tip = self.tip();
        self.steps.push(Step {
            outcome,
            landed: None,
            tip,
        });
        self.extend(repo, plan)
    }

    /// The report of each task, in landing order.
    pub(super) fn reports(&self, plan: &Plan) -> Vec<TaskReport> {
        plan.tasks
            .iter()
            .zip(&self.steps)
            .map(|(t, s)| TaskReport {
                id: t.id.clone(),
                branch: t.branch.clone(),
                start: t.start,
                tip: t.tip,
                outcome: s.outcome.clone(),
                note: None,
            })
            .collect()
    }

    /// What land.json records for the tasks that land.
    pub(super) fn landed(&self) -> Vec<LandedTask> {
        self.steps.iter().filter_map(|s| s.landed.clone()).collect()
    }

    /// Apply the plan's tasks from the first one without a step.
    fn extend(&mut self, repo: &Repository, plan: &Plan) -> Result<()> {
        let mut not_landing: Vec<String> = plan
            .tasks
            .iter()
            .zip(&self.steps)
            .filter(|(_, s)| !s.outcome.lands())
            .map(|(t, _)| t.id.clone())
            .collect();
        let mut tip = self.tip();
        for t in &plan.tasks[self.steps.len()..] {
            let mut landed = None;
            let outcome = match &t.status {
                PlanStatus::Empty => TaskOutcome::Empty,
                PlanStatus::AlreadyLanded => TaskOutcome::AlreadyLanded,
                PlanStatus::Refused { reason } => TaskOutcome::Refused {
                    reason: reason.clone(),
                },
                PlanStatus::Ready => match t.depends_on.iter().find(|d| not_landing.contains(d)) {
                    Some(d) => TaskOutcome::Refused {
                        reason: format!("it depends on `{d}`, which does not land this time"),
                    },
                    None => {
                        let (next, applied) = apply::apply_task(repo, tip, t)?;
                        tip = next;
                        match applied {
                            Applied::Picked { commits, dropped } => {
                                landed = Some(LandedTask {
                                    id: t.id.clone(),
                                    branch: t.branch.clone(),
                                    start: t.start.map(|o| o.to_string()).unwrap_or_default(),
                                    tip: t.tip.map(|o| o.to_string()).unwrap_or_default(),
                                    commits: commits
                                        .iter()
                                        .map(|(from, to)| CommitMap {
                                            from: from.to_string(),
                                            to: to.to_string(),
                                        })
                                        .collect(),
                                    dropped,
                                });
                                TaskOutcome::Landed {
                                    commits: commits.len(),
                                    dropped,
                                }
                            }
                            Applied::Conflicted { commit, files } => {
                                TaskOutcome::Conflicted { commit, files }
                            }
                        }
                    }
                },
            };
            if !outcome.lands() {
                not_landing.push(t.id.clone());
            }
            self.steps.push(Step {
                outcome,
                landed,
                tip,
            });
        }
        Ok(())
    }
}
