//! What an attempt's end means: the slot it frees, its cost, the attempt
//! record, the task's next status (retry policy, re-queue cap, a lost
//! session), and what the outcome says about credentials, pools, the API and
//! the run (circuit breaker, cost cap).

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Effect, Fleet, Now, Slot, chrono_secs};
use crate::error::Exit;
use crate::report::{AttentionCause, Event};
use crate::runner::AttemptReport;
use crate::runner::credentials::DEFAULT_LOGIN;
use crate::state::{NextAttempt, Outcome, TaskStatus};

/// Quick failures in a row that stop dispatching.
pub(super) const BREAKER_LIMIT: u32 = 3;
/// An attempt that fails this fast, without a result, is a "quick failure".
pub(super) const QUICK_FAILURE: Duration = Duration::from_secs(30);
/// Times a task may go back to the queue for reasons not its own.
pub(super) const REQUEUE_CAP: u32 = 8;

/// The circuit breaker's count and what the run has spent: quick failures
/// in a row stop dispatching, overloads back off for longer each time, the
/// run's cost meets `max_cost_usd`.
#[derive(Default)]
pub(super) struct Breaker {
    pub(super) quick_failures: u32,
    pub(super) overloads: u32,
    pub(super) run_cost: f64,
}

/// An attempt's end, as [`Fleet::read_end`] reads it.
pub(super) struct Ended {
    pub(super) outcome: Outcome,
    /// It meant to resume a session the agent could not find.
    pub(super) lost_session: bool,
    /// It ended within [`QUICK_FAILURE`] of its start.
    pub(super) quick: bool,
    pub(super) credential: Option<String>,
    pub(super) pool: Option<usize>,
    pub(super) cost: f64,
    pub(super) turns: u64,
}

/// What follows an attempt's `finished` event.
enum After {
    /// Back in the queue, why.
    Requeued(String),
    /// Its retries allowed another attempt, its `max_cost_usd` did not: why.
    NotRetried(String),
    Nothing,
}

/// What the retry policy goes by for one task.
#[derive(Clone, Copy)]
struct Policy {
    /// Failures are retried (`--supervise`, and not a best-of variant).
    supervise: bool,
    /// The run was started with `--supervise`.
    supervise_run: bool,
    max_retries: u32,
}

impl Fleet {
    /// An attempt ended: settle its slot, record the end, note the
    /// breaker, decide the retry, then what the outcome says.
    pub(super) fn on_finished(
        &mut self,
        id: &str,
        attempt: u32,
        report: &AttemptReport,
        now: Now,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let slot = self.settle_slot(id);
        let ended = self.read_end(id, attempt, report, slot.as_ref(), now);
        self.breaker.run_cost =
            crate::output::units::sum_costs([self.breaker.run_cost, ended.cost]);
        if !self.record_end(id, attempt, &ended, report, now, &mut out) {
            return out;
        }
        self.note_breaker(&ended, report);
        let gives_up = self.decide_retry(id, attempt, &ended, report, &mut out);
        self.charge_credential(&ended, now, &mut out);
        if gives_up {
            out.push(gives_up_attention(id, attempt, &ended.outcome));
        }
        self.outcome_effects(id, &ended, now, &mut out);
        self.trip_breaker(&ended.outcome, &mut out);
        self.check_budget(&mut out);
        out
    }

    /// Free the slot an attempt held (its pool's count, its credential):
    /// the slot, when it held one.
    pub(super) fn settle_slot(&mut self, id: &str) -> Option<Slot> {
        let s = self.running.remove(id)?;
        self.pools[s.pool].running = self.pools[s.pool].running.saturating_sub(1);
        if let Some(c) = &s.credential {
            self.creds.release(&c.name);
        }
        Some(s)
    }

    /// What the end says, read once: its outcome (a resume the agent could
    /// not find starts fresh, without counting), whether it came quickly,
    /// its credential, pool and cost.
    pub(super) fn read_end(
        &self,
        id: &str,
        attempt: u32,
        report: &AttemptReport,
        slot: Option<&Slot>,
        now: Now,
    ) -> Ended {
        let result = report.result.as_ref();
        let resumed = self
            .record(id)
            .and_then(|r| r.attempts.iter().find(|a| a.number == attempt))
            .is_some_and(|a| a.resumed_from.is_some());
        let lost_session =
            resumed && report.no_conversation && !matches!(report.outcome, Outcome::Success);
        let outcome = if lost_session {
            Outcome::SpawnFailed {
                reason: "the session to resume no longer exists; starting fresh".into(),
            }
        } else {
            report.outcome.clone()
        };
        Ended {
            outcome,
            lost_session,
            quick: slot
                .is_some_and(|s| now.mono.saturating_duration_since(s.started) < QUICK_FAILURE),
            credential: slot.and_then(|s| s.credential.as_ref().map(|c| c.name.clone())),
            pool: slot.map(|s| s.pool),
            cost: result.and_then(|r| r.total_cost_usd).unwrap_or(0.0),
            turns: result.and_then(|r| r.num_turns).unwrap_or(0),
        }
    }

    /// Write the end into the attempt's record, and say its job's end (its
    /// state, run time) first. False: the task has no record.
    pub(super) fn record_end(
        &mut self,
        id: &str,
        attempt: u32,
        ended: &Ended,
        report: &AttemptReport,
        now: Now,
        out: &mut Vec<Effect>,
    ) -> bool {
        let Some(rec) = self.record_mut(id) else {
            return false;
        };
        if let Some(a) = rec.attempt_mut(attempt) {
            a.ended_at = Some(now.wall);
            a.outcome = Some(ended.outcome.clone());
            a.exit_code = report.exit_code;
            a.result = report.result.clone();
            if report.session_id.is_some() {
                a.session_id = report.session_id.clone();
            }
            if a.start_commit.is_none() {
                a.start_commit = report.start_commit.clone();
            }
            a.end_tip = report.end_tip.clone();
            a.leftovers_committed = report.leftovers_committed;
            if report.pending_secs.is_some() {
                a.pending_secs = report.pending_secs;
            }
            if let Some(job) = &report.job {
                a.job = Some(Box::new(job.clone()));
            } else if let Some(j) = a.job.as_mut().filter(|j| j.is_pending()) {
                // Its job never ran: the attempt ended while it waited
                // (a stop, a refusal); the backend cancelled it.
                j.state = "CANCELLED".into();
                j.reason = None;
            }
        }
        self.dirty = true;
        if let (Some(job), Some(pool)) = (&report.job, ended.pool) {
            out.push(Effect::Emit(Event::Job {
                task: id.to_string(),
                attempt,
                pool: self.pools[pool].name.clone(),
                job: job.clone(),
                pending_secs: report.pending_secs,
            }));
        }
        true
    }

    /// The breaker's count: quick failures without a result in a row (a
    /// rejected credential, quick, counts too); a result or a success
    /// resets it.
    pub(super) fn note_breaker(&mut self, ended: &Ended, report: &AttemptReport) {
        let outcome = &ended.outcome;
        let quick_failure = ended.quick
            && report.result.is_none()
            && matches!(
                outcome,
                Outcome::SpawnFailed { .. } | Outcome::Failed { .. } | Outcome::SetupFailed { .. }
            )
            && !ended.lost_session;
        let quick_failure =
            quick_failure || matches!(outcome, Outcome::CredentialRejected { .. }) && ended.quick;
        if quick_failure {
            self.breaker.quick_failures += 1;
        } else if report.result.is_some() || matches!(outcome, Outcome::Success) {
            self.breaker.quick_failures = 0;
        }
    }

    /// The task's next status (the retry policy), its `finished` event and
    /// what follows it. True: it failed and is not tried again in this run,
    /// so a person has to look (a best-of variant's end is its task's
    /// judgement's to say).
    pub(super) fn decide_retry(
        &mut self,
        id: &str,
        attempt: u32,
        ended: &Ended,
        report: &AttemptReport,
        out: &mut Vec<Effect>,
    ) -> bool {
        let outcome = &ended.outcome;
        let (status, after) = self.next_status(id, attempt, outcome, ended.lost_session, out);
        if out.iter().any(|e| matches!(e, Effect::PlanRetry { .. })) {
            self.planning.insert(id.to_string());
        }
        let gives_up = matches!(status, TaskStatus::Done { .. })
            && !matches!(outcome, Outcome::Success | Outcome::Interrupted)
            && self.task(id).is_none_or(|t| t.variant.is_none());
        self.transition(id, status, out);
        out.push(Effect::Emit(Event::Finished {
            task: id.to_string(),
            attempt,
            outcome: outcome.clone(),
            duration_secs: report.duration_secs,
            cost_usd: ended.cost,
            turns: ended.turns,
            commits: report.new_commits,
            phases: report.phases,
        }));
        match after {
            After::Requeued(reason) => out.push(Effect::Emit(Event::Requeued {
                task: id.to_string(),
                reason,
            })),
            After::NotRetried(why) => out.push(Effect::Emit(Event::Notice {
                message: format!("task {id}: not retried: {why}"),
            })),
            After::Nothing => {}
        }
        gives_up
    }

    /// What the attempt cost its credential: at its max_cost_usd, it is
    /// retired for the run and its work moves to the others.
    pub(super) fn charge_credential(&mut self, ended: &Ended, now: Now, out: &mut Vec<Effect>) {
        if let Some(name) = &ended.credential
            && let Some(reason) = self.creds.add_cost(name, ended.cost)
        {
            self.retire(name, reason, now.wall, out);
        }
    }

    /// What the outcome says about credentials, pools, the API, and the
    /// conflicts a success may bring.
    pub(super) fn outcome_effects(
        &mut self,
        id: &str,
        ended: &Ended,
        now: Now,
        out: &mut Vec<Effect>,
    ) {
        let login = || {
            ended
                .credential
                .clone()
                .unwrap_or_else(|| DEFAULT_LOGIN.into())
        };
        match &ended.outcome {
            Outcome::RateLimited { resets_at, .. } => {
                self.park(&login(), *resets_at, "rate limited", now.wall, out);
            }
            Outcome::CredentialRejected { reason, .. } => {
                self.disable(&login(), reason, now, out);
            }
            Outcome::Overloaded => {
                self.breaker.overloads += 1;
                let secs = (30u64 << self.breaker.overloads.min(5)).min(600);
                self.state.backoff_until = Some(now.wall + chrono_secs(secs));
                out.push(Effect::Emit(Event::Notice {
                    message: format!(
                        "the API is overloaded (529): pausing new agents for {}",
                        crate::output::units::duration(secs as f64)
                    ),
                }));
            }
            // A pool whose hosts are the pool (ssh, exe.dev, a container) is
            // done; a scheduler (Slurm) places the next attempt elsewhere.
            Outcome::HostLost { reason } => {
                if let Some(p) = ended.pool
                    && self.pools[p].host_loss_takes_pool_down
                {
                    let pool = &mut self.pools[p];
                    pool.down = Some(reason.clone());
                    let message =
                        format!("pool {} is not used again in this run: {reason}", pool.name);
                    out.push(Effect::Emit(Event::Notice { message }));
                }
            }
            Outcome::Success => {
                self.breaker.overloads = 0;
                if self.record(id).is_some_and(|r| r.status.is_success()) {
                    self.predictions.succeeded_here.insert(id.to_string());
                    // A variant is one of a best-of task's alternatives, not
                    // work that lands: its task is predicted once judged.
                    if self.task(id).is_none_or(|t| t.variant.is_none()) {
                        self.request_prediction(id, out);
                    }
                }
            }
            _ => {}
        }
    }

    /// A credential the API rejected: disabled, no agent uses it again in
    /// this run.
    fn disable(&mut self, name: &str, reason: &str, now: Now, out: &mut Vec<Effect>) {
        let entry = self.state.credentials.entry(name.to_string()).or_default();
        entry.disabled = Some(reason.to_string());
        self.creds.reject(name);
        self.creds.start_ramp(name, now.wall);
        out.push(Effect::Emit(Event::CredentialDisabled {
            credential: name.to_string(),
            reason: reason.to_string(),
            retired: false,
        }));
        out.push(Effect::Emit(Event::NeedsAttention {
            cause: AttentionCause::CredentialDisabled,
            message: format!(
                "credential {name} is disabled ({reason}): no agent uses it again in this run; fix it, then run flocks again"
            ),
            task: None,
            credential: Some(name.to_string()),
        }));
    }

    /// [`BREAKER_LIMIT`] quick failures in a row: dispatch stops (said once).
    pub(super) fn trip_breaker(&mut self, last: &Outcome, out: &mut Vec<Effect>) {
        if self.breaker.quick_failures < BREAKER_LIMIT || self.stopping.stopped_because.is_some() {
            return;
        }
        let reason = format!(
            "dispatch stopped: {} in a row failed within {} of starting; the last one {}",
            crate::output::units::count(self.breaker.quick_failures, "attempt"),
            crate::output::units::duration(QUICK_FAILURE.as_secs_f64()),
            last.describe()
        );
        out.push(Effect::Emit(Event::Notice {
            message: reason.clone(),
        }));
        self.stopping.stopped_because = Some((reason, Exit::CouldNotStart));
    }

    /// How a retry starts, worked out by the dispatcher for [`Effect::PlanRetry`].
    pub(super) fn set_next(&mut self, id: &str, next: NextAttempt) {
        self.planning.remove(id);
        if let Some(rec) = self.record_mut(id) {
            rec.next = Some(Box::new(next));
            self.dirty = true;
        }
    }

    /// Planning a retry failed: it starts without the earlier attempt's context.
    pub(super) fn plan_failed(&mut self, id: &str) {
        self.planning.remove(id);
    }

    /// `max_cost_usd` reached: no new agent starts.
    pub(super) fn check_budget(&mut self, out: &mut Vec<Effect>) {
        if let Some(limit) = self.config.max_cost_usd
            && self.breaker.run_cost >= limit
            && self.stopping.stopped_because.is_none()
        {
            let reason = format!(
                "the run has cost {}, reaching max_cost_usd = {limit}: no new agents start; running ones finish",
                crate::output::units::money(self.breaker.run_cost)
            );
            out.push(Effect::Emit(Event::Notice {
                message: reason.clone(),
            }));
            self.stopping.stopped_because = Some((reason, Exit::TasksFailed));
        }
    }

    /// The retry policy: the task's status after `outcome`, and what to say
    /// after its `finished` event.
    fn next_status(
        &mut self,
        id: &str,
        attempt: u32,
        outcome: &Outcome,
        lost_session: bool,
        out: &mut Vec<Effect>,
    ) -> (TaskStatus, After) {
        let done = || TaskStatus::Done {
            outcome: outcome.clone(),
        };
        // A best-of variant that fails is out; its task is retried as one
        // when none of its variants survives (see `best_of.rs`).
        let variant_of = self
            .task(id)
            .and_then(|t| t.variant.as_ref())
            .map(|v| v.task.clone());
        let policy = Policy {
            supervise: self.opts.supervise && variant_of.is_none(),
            supervise_run: self.opts.supervise,
            max_retries: self.opts.max_retries,
        };
        let cap = self.task(id).and_then(|t| t.max_cost_usd);
        // A variant spends its task's money: the cap is on them all together.
        let parent_cost = variant_of
            .as_deref()
            .and_then(|p| self.record(p))
            .map(|r| r.cost());
        let Some(rec) = self.record_mut(id) else {
            return (done(), After::Nothing);
        };
        // The task's own spending cap: reached, it gets no further attempt.
        let cost = parent_cost.unwrap_or_else(|| rec.cost());
        let capped = cap.filter(|c| cost >= *c).map(|c| {
            format!(
                "its attempts have cost {}, reaching its max_cost_usd = {c}",
                crate::output::units::money(cost)
            )
        });
        let (status, reason) =
            Self::retry_policy(rec, id, attempt, outcome, lost_session, policy, out);
        match (capped, status) {
            (Some(why), TaskStatus::Pending) => {
                rec.not_retried = Some(why.clone());
                out.retain(|e| !matches!(e, Effect::PlanRetry { task, .. } if task == id));
                (done(), After::NotRetried(why))
            }
            (_, status) => (status, reason.map_or(After::Nothing, After::Requeued)),
        }
    }

    /// The retry policy without the task's cost cap.
    fn retry_policy(
        rec: &mut crate::state::TaskRecord,
        id: &str,
        attempt: u32,
        outcome: &Outcome,
        lost_session: bool,
        policy: Policy,
        out: &mut Vec<Effect>,
    ) -> (TaskStatus, Option<String>) {
        let Policy {
            supervise,
            supervise_run,
            max_retries,
        } = policy;
        let done = || TaskStatus::Done {
            outcome: outcome.clone(),
        };
        match outcome {
            Outcome::Success | Outcome::Interrupted => (done(), None),
            // A failed setup is the worktree's, not the agent's: retried
            // like a failure (only under --supervise), with no model call spent.
            Outcome::Failed { .. }
            | Outcome::TimedOut
            | Outcome::Stalled
            | Outcome::SetupFailed { .. } => {
                let used = rec.counted_failures();
                if supervise && used < 1 + max_retries {
                    out.push(Effect::PlanRetry {
                        task: id.to_string(),
                        from_attempt: attempt,
                        fresh_session: false,
                        ended: None,
                    });
                    let reason = format!("{}; retry {used} of {max_retries}", outcome.describe());
                    (TaskStatus::Pending, Some(reason))
                } else {
                    (done(), None)
                }
            }
            Outcome::HostLost { .. } if !supervise_run => (done(), None),
            Outcome::SpawnFailed { .. }
            | Outcome::RateLimited { .. }
            | Outcome::Overloaded
            | Outcome::CredentialRejected { .. }
            | Outcome::HostLost { .. } => {
                rec.requeues += 1;
                if lost_session {
                    // Start fresh, carrying the context of the attempt it meant to resume.
                    let from_attempt = rec
                        .attempts
                        .iter()
                        .rev()
                        .find(|a| a.number < attempt && a.session_id.is_some())
                        .map(|a| a.number)
                        .unwrap_or(attempt);
                    out.push(Effect::PlanRetry {
                        task: id.to_string(),
                        from_attempt,
                        fresh_session: true,
                        ended: None,
                    });
                }
                if rec.requeues > REQUEUE_CAP {
                    (done(), None)
                } else {
                    (TaskStatus::Pending, Some(outcome.describe()))
                }
            }
        }
    }

    /// Park a credential until its limit resets (or, without a reset time,
    /// for an exponential back-off).
    pub(super) fn park(
        &mut self,
        name: &str,
        resets_at: Option<DateTime<Utc>>,
        why: &str,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let entry = self.state.credentials.entry(name.to_string()).or_default();
        let until = match resets_at {
            Some(t) if t > now => {
                entry.backoff_level = 0;
                t
            }
            // No time given, and it is parked already (flocks' proxy read
            // the exact reset from the API's 429): that time stands.
            _ if entry.parked_until.is_some_and(|p| p > now) => return,
            _ => {
                let secs = (60u64 << entry.backoff_level.min(6)).min(3600);
                entry.backoff_level += 1;
                now + chrono_secs(secs)
            }
        };
        entry.parked_until = Some(until);
        self.dirty = true;
        self.creds.start_ramp(name, now);
        out.push(Effect::Emit(Event::CredentialParked {
            credential: name.to_string(),
            until,
            reason: why.to_string(),
        }));
    }

    /// A credential reached its `max_cost_usd`: disabled for the rest of the
    /// run (a new run tries it again), its work moves to the others.
    pub(super) fn retire(
        &mut self,
        name: &str,
        reason: String,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let entry = self.state.credentials.entry(name.to_string()).or_default();
        entry.disabled = Some(reason.clone());
        self.dirty = true;
        self.creds.start_ramp(name, now);
        out.push(Effect::Emit(Event::CredentialDisabled {
            credential: name.to_string(),
            reason,
            retired: true,
        }));
    }
}

/// A failed task that is not tried again: a person has to look.
fn gives_up_attention(id: &str, attempt: u32, outcome: &Outcome) -> Effect {
    Effect::Emit(Event::NeedsAttention {
        cause: AttentionCause::TaskFailed,
        message: format!(
            "task {id} is not tried again: attempt {attempt} {}; see `{}`, then `{}`",
            outcome.describe(),
            crate::suggest::command(&["flocks", "logs", id]),
            crate::suggest::command(&["flocks", "retry", id]),
        ),
        task: Some(id.to_string()),
        credential: None,
    })
}
