//! Best of N: a best-of task's variants are tasks of their own in the run
//! (ids `<id>@v<k>`, records nested in the task's); the task itself never
//! runs. Once every variant has ended the task is judged off the loop
//! ([`Effect::Judge`]: validation, ranking, the judge agent), and the
//! judgement ([`super::Input::Judged`]) makes it succeed with the winner's work,
//! fail with each variant's reason, or, under `--supervise`, run every
//! variant again.

use std::collections::HashSet;

use super::{Effect, Fleet, JudgeAgent, JudgeJob, Now};
use crate::agent::AgentSpec;
use crate::agent::spec::{self, SpecInput};
use crate::backend::PrepareJob;
use crate::report::{AttentionCause, Event};
use crate::runner::AttemptReport;
use crate::runner::credentials::DEFAULT_LOGIN;
use crate::state::{Judgement, Outcome, State, TaskStatus, VerdictOutcome};
use crate::tasks::{Task, TaskSet, VariantOf, split_variant_id};

/// What judging found, for [`super::Input::Judged`].
pub(crate) struct Judged {
    pub judgement: Judgement,
    /// The judge agent's attempt, when one ran.
    pub judge: Option<AttemptReport>,
}

/// Add a task line for each variant of each best-of task (the records say
/// which: merging the task list made them). Returns the best-of tasks' ids.
pub(super) fn add_variant_tasks(tasks: &mut TaskSet, state: &State) -> Vec<String> {
    let mut parents = Vec::new();
    let mut extra = Vec::new();
    for t in &tasks.tasks {
        let Some(rec) = state.task(&t.id) else {
            continue;
        };
        if rec.variants.is_empty() {
            continue;
        }
        parents.push(t.id.clone());
        for v in &rec.variants {
            let Some((_, k)) = split_variant_id(&v.id) else {
                continue;
            };
            extra.push(Task {
                id: v.id.clone(),
                branch: v.branch.clone(),
                best_of: None,
                variant: Some(VariantOf {
                    task: t.id.clone(),
                    k,
                }),
                ..t.clone()
            });
        }
    }
    if !extra.is_empty() {
        let mut all = std::mem::take(&mut tasks.tasks);
        all.extend(extra);
        *tasks = TaskSet::new(tasks.source.clone(), all);
    }
    parents
}

/// The best-of tasks and where their judging stands.
pub(super) struct Judging {
    /// Best-of tasks (ids), in dependency order.
    pub(super) best_of: Vec<String>,
    /// Best-of tasks being judged ([`Effect::Judge`]).
    pub(super) judging: HashSet<String>,
    /// Best-of tasks whose judging failed in this run (they stay pending).
    pub(super) unjudged: HashSet<String>,
}

impl Judging {
    pub(super) fn new(best_of: Vec<String>) -> Judging {
        Judging {
            best_of,
            judging: HashSet::new(),
            unjudged: HashSet::new(),
        }
    }
}

/// Whether a variant's end is final for this round.
fn ended(status: &TaskStatus) -> bool {
    matches!(status, TaskStatus::Done { .. })
}

impl Fleet {
    /// A best-of task whose variants have all ended waits for its judgement
    /// (a judge agent waits for a slot).
    pub(super) fn awaits_judge(&self) -> bool {
        self.judge.best_of.iter().any(|id| {
            !self.judge.judging.contains(id)
                && !self.judge.unjudged.contains(id)
                && self.in_scope(id)
                && self.record(id).is_some_and(|r| {
                    r.status == TaskStatus::Pending && r.variants.iter().all(|v| ended(&v.status))
                })
        })
    }

    /// Judge every best-of task whose variants have all ended; block one
    /// whose variants cannot start.
    pub(super) fn judge_ready(&mut self, now: Now, out: &mut Vec<Effect>) {
        for id in self.judge.best_of.clone() {
            if self.judge.judging.contains(&id)
                || self.judge.unjudged.contains(&id)
                || !self.in_scope(&id)
            {
                continue;
            }
            let Some(rec) = self.record(&id) else {
                continue;
            };
            if rec.status != TaskStatus::Pending
                || rec
                    .variants
                    .iter()
                    .any(|v| self.running.contains_key(&v.id) || self.planning.contains(&v.id))
            {
                continue;
            }
            let settled = rec
                .variants
                .iter()
                .all(|v| !matches!(v.status, TaskStatus::Pending | TaskStatus::Running { .. }));
            let blocked = rec.variants.iter().find_map(|v| match &v.status {
                TaskStatus::Blocked {
                    reason: Some(r), ..
                } => Some(r.clone()),
                _ => None,
            });
            if let Some(reason) = blocked {
                if settled {
                    self.block_with_reason(&id, reason, out);
                }
                continue;
            }
            if !rec.variants.iter().all(|v| ended(&v.status)) {
                continue;
            }
            let successes = rec
                .variants
                .iter()
                .filter(|v| v.status.is_success())
                .count();
            let variants = rec.variants.clone();
            let round = rec.best_of.as_ref().map_or(0, |b| b.failed_rounds) + 1;
            let mut notice = None;
            let agent = if self.config.best_of.judge && successes >= 2 {
                if let Some((why, _)) = &self.stopping.stopped_because {
                    notice = Some(format!(
                        "task {id}: no judge agent ({why}); the default ranking picks"
                    ));
                    None
                } else {
                    // An agent like any other: it waits for a slot, and
                    // for free disk space (`min_free_disk_gb`).
                    if self.running.len() >= self.config.max_agents || self.disk_low.is_some() {
                        continue;
                    }
                    let Some((pool, injected)) = self.choose_pool(None, now, out) else {
                        continue;
                    };
                    let agent = self.judge_agent(&id, round, pool, injected.as_ref());
                    self.take_slot(&id, pool, injected, Some(0), now);
                    agent
                }
            } else {
                None
            };
            let prompt = self
                .task(&id)
                .map(|t| {
                    crate::prompt::render(self.template.as_ref(), t, &self.tasks.source)
                        .unwrap_or_else(|_| t.prompt.clone())
                })
                .unwrap_or_default();
            let branch = self.task(&id).map(|t| t.branch.clone()).unwrap_or_default();
            // Saved before the judging points the task's branch at its
            // winner: a rerun after a kill knows the branch is this task's.
            if let Some(rec) = self.record_mut(&id) {
                rec.branch_created = true;
                self.dirty = true;
            }
            self.judge.judging.insert(id.clone());
            out.push(Effect::Judge(Box::new(JudgeJob {
                task: id,
                branch,
                prompt,
                variants,
                agent,
                notice,
            })));
        }
    }

    /// The judge agent's start: its own worktree and branch (`<id>@judge`,
    /// at the land target), log and tag; its prompt comes with the diffs.
    fn judge_agent(
        &self,
        id: &str,
        round: u32,
        pool: usize,
        injected: Option<&spec::Injected>,
    ) -> Option<Box<JudgeAgent>> {
        let task = self.task(id)?;
        let judge = crate::tasks::judge_id(id);
        let spec: AgentSpec = spec::build(SpecInput {
            config: &self.config,
            pool: &self.config.pools[pool],
            credential: injected,
            task_id: &judge,
            prompt: String::new(),
            tag: format!("{}:{}:{}", self.project_key, judge, round),
            resume: None,
        });
        Some(Box::new(JudgeAgent {
            prepare: PrepareJob {
                task: judge.clone(),
                branch: format!("{}@judge", task.branch),
                base: self.config.workspace.land_target.clone(),
                fresh: true,
                origin: None,
            },
            id: judge,
            attempt: round,
            pool,
            credential: injected.map(|c| c.name.clone()),
            spec,
        }))
    }

    /// Judging stopped before its end (Ctrl-C), or failed (`error`, said as a
    /// notice): the task stays pending, and a later run judges it.
    pub(super) fn on_judge_abandoned(&mut self, id: &str, error: Option<String>) -> Vec<Effect> {
        self.judge.judging.remove(id);
        self.release(id);
        let mut out = Vec::new();
        if let Some(message) = error {
            self.judge.unjudged.insert(id.to_string());
            out.push(Effect::Emit(Event::Notice {
                message: format!("task {id} was not judged: {message}; the next run judges it"),
            }));
        }
        out
    }

    /// A best-of task was judged: it succeeds with the winner's work, or
    /// fails with each variant's reason, or (under `--supervise`, retries
    /// left) every variant runs again.
    pub(super) fn on_judged(&mut self, id: &str, judged: Judged, now: Now) -> Vec<Effect> {
        let mut out = Vec::new();
        self.judge.judging.remove(id);
        let credential = self
            .running
            .get(id)
            .and_then(|s| s.credential.as_ref().map(|c| c.name.clone()));
        self.release(id);
        let Judged {
            mut judgement,
            judge,
        } = judged;
        if let Some(report) = &judge {
            judgement.judge_cost_usd = self.charge_judge(report, credential, now, &mut out);
        }
        let Some((rounds, capped)) = self.record_judgement(id, &judgement) else {
            return out;
        };
        out.push(Effect::Emit(Event::VariantJudged {
            task: id.to_string(),
            winner: judgement.winner,
            by: judgement.by,
            reason: judgement.reason.clone(),
            ranking: judgement.ranking.clone(),
            notice: judgement.notice.clone(),
        }));
        let retries_left = self.opts.supervise && rounds < 1 + self.opts.max_retries;
        if judgement.winner.is_some() {
            self.judged_winner(id, &mut out);
        } else if retries_left && capped.is_none() {
            self.run_variants_again(id, &judgement, rounds, &mut out);
        } else {
            if retries_left && let Some(why) = capped {
                if let Some(rec) = self.record_mut(id) {
                    rec.not_retried = Some(why.clone());
                }
                out.push(Effect::Emit(Event::Notice {
                    message: format!("task {id}: not retried: {why}"),
                }));
            }
            self.no_survivor(id, &judgement, &mut out);
        }
        self.check_budget(&mut out);
        out
    }

    /// What the judge agent cost: the run's cost, and its credential's (at
    /// its max_cost_usd it is retired as an attempt's would be); a rate
    /// limit parks the credential. Returns the cost.
    fn charge_judge(
        &mut self,
        report: &AttemptReport,
        credential: Option<String>,
        now: Now,
        out: &mut Vec<Effect>,
    ) -> f64 {
        let cost = report
            .result
            .as_ref()
            .and_then(|r| r.total_cost_usd)
            .unwrap_or(0.0);
        self.breaker.run_cost = crate::output::units::sum_costs([self.breaker.run_cost, cost]);
        if let Some(name) = &credential
            && let Some(reason) = self.creds.add_cost(name, cost)
        {
            self.retire(name, reason, now.wall, out);
        }
        if let Outcome::RateLimited { resets_at, .. } = &report.outcome {
            let name = credential.unwrap_or_else(|| DEFAULT_LOGIN.into());
            self.park(&name, *resets_at, "rate limited", now.wall, out);
        }
        cost
    }

    /// Keep the judgement in the task's record, counting a round without a
    /// winner: the failed rounds, and why the task's own spending cap (its
    /// variants and its judge together) allows no further round, if so.
    fn record_judgement(
        &mut self,
        id: &str,
        judgement: &Judgement,
    ) -> Option<(u32, Option<String>)> {
        let cap = self.task(id).and_then(|t| t.max_cost_usd);
        let rec = self.record_mut(id)?;
        let best = rec.best_of.get_or_insert_with(Box::default);
        if judgement.winner.is_none() {
            best.failed_rounds += 1;
        }
        let rounds = best.failed_rounds;
        best.judgement = Some(judgement.clone());
        let cost = rec.cost();
        let capped = cap.filter(|c| cost >= *c).map(|c| {
            format!(
                "its variants have cost {}, reaching its max_cost_usd = {c}",
                crate::output::units::money(cost)
            )
        });
        self.dirty = true;
        Some((rounds, capped))
    }

    /// The winner's work is the task's: it succeeds, and is what later tasks
    /// in its footprint lane start from and what land conflicts are
    /// predicted for.
    fn judged_winner(&mut self, id: &str, out: &mut Vec<Effect>) {
        self.transition(
            id,
            TaskStatus::Done {
                outcome: Outcome::Success,
            },
            out,
        );
        if self.record(id).is_some_and(|r| r.status.is_success()) {
            self.predictions.succeeded_here.insert(id.to_string());
            self.request_prediction(id, out);
        }
    }

    /// Retried as one task: every variant runs again, each with what its
    /// last attempt learned and why it was judged out.
    fn run_variants_again(
        &mut self,
        id: &str,
        judgement: &Judgement,
        rounds: u32,
        out: &mut Vec<Effect>,
    ) {
        let variants: Vec<(String, u32, String)> = self
            .record(id)
            .map(|r| {
                r.variants
                    .iter()
                    .zip(1u32..)
                    .map(|(v, k)| {
                        let why = judgement
                            .ranking
                            .iter()
                            .find(|x| x.variant == k)
                            .map(|x| x.reason.clone())
                            .unwrap_or_default();
                        (v.id.clone(), v.last_attempt().map_or(0, |a| a.number), why)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (vid, last, why) in variants {
            self.transition(&vid, TaskStatus::Pending, out);
            if let Some(v) = self.record_mut(&vid) {
                v.requeues = 0;
            }
            if last > 0 {
                self.planning.insert(vid.clone());
                out.push(Effect::PlanRetry {
                    task: vid,
                    from_attempt: last,
                    fresh_session: false,
                    ended: Some(format!("attempt {last} was judged: {why}")),
                });
            }
        }
        if let Some(b) = self.record_mut(id).and_then(|r| r.best_of.as_mut()) {
            b.judgement = None;
        }
        let max_retries = self.opts.max_retries;
        out.push(Effect::Emit(Event::Requeued {
            task: id.to_string(),
            reason: format!(
                "no variant survived; every variant runs again (retry {rounds} of {max_retries})"
            ),
        }));
    }

    /// No variant survived and none runs again: the task fails with each
    /// variant's reason, and a person has to look.
    fn no_survivor(&mut self, id: &str, judgement: &Judgement, out: &mut Vec<Effect>) {
        let reason = no_survivor_reason(judgement);
        self.transition(
            id,
            TaskStatus::Done {
                outcome: Outcome::Failed {
                    reason: reason.clone(),
                },
            },
            out,
        );
        out.push(Effect::Emit(Event::NeedsAttention {
            cause: AttentionCause::TaskFailed,
            message: format!(
                "task {id} is not tried again: {reason}; see `{}`, then `{}`",
                crate::suggest::command(&["flocks", "status"]),
                crate::suggest::command(&["flocks", "retry", id]),
            ),
            task: Some(id.to_string()),
            credential: None,
        }));
    }
}

/// "no variant survived: v1 failed: ...; v2 failed validation: ...".
fn no_survivor_reason(j: &Judgement) -> String {
    let each: Vec<String> = j
        .ranking
        .iter()
        .map(|v| match v.outcome {
            VerdictOutcome::Failed | VerdictOutcome::FailedValidation => {
                format!("v{}: {}", v.variant, v.reason)
            }
            VerdictOutcome::Winner | VerdictOutcome::Passed => {
                format!("v{}: {}", v.variant, v.outcome.label())
            }
        })
        .collect();
    format!("no variant survived ({})", each.join("; "))
}
