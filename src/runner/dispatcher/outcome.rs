//! What an attempt's end means: the task's next status, and what the outcome
//! says about credentials, pools and the API.

use super::*;

impl Dispatcher {
    pub(super) fn finished(&mut self, id: &str, attempt: u32, report: AttemptReport) {
        let slot = self.running.remove(id);
        if let Some(s) = &slot {
            self.pools[s.pool].running = self.pools[s.pool].running.saturating_sub(1);
            if let Some(c) = &s.credential {
                self.creds.release(c);
            }
        }
        let quick = slot
            .as_ref()
            .is_some_and(|s| s.started.elapsed() < QUICK_FAILURE);
        let credential = slot.as_ref().and_then(|s| s.credential.clone());
        let now = Utc::now();
        let mut outcome = report.outcome.clone();
        let cost = report
            .result
            .as_ref()
            .and_then(|r| r.total_cost_usd)
            .unwrap_or(0.0);
        let turns = report
            .result
            .as_ref()
            .and_then(|r| r.num_turns)
            .unwrap_or(0);
        self.run_cost = crate::output::units::sum_costs([self.run_cost, cost]);

        // A resume the agent could not find: start fresh, without counting it.
        let resumed = self
            .state
            .task(id)
            .and_then(|r| r.attempts.iter().find(|a| a.number == attempt))
            .is_some_and(|a| a.resumed_from.is_some());
        let lost_session =
            resumed && report.no_conversation && !matches!(outcome, Outcome::Success);
        if lost_session {
            outcome = Outcome::SpawnFailed {
                reason: "the session to resume no longer exists; starting fresh".into(),
            };
        }

        let Some(rec) = self.state.task_mut(id) else {
            return;
        };
        if let Some(a) = rec.attempt_mut(attempt) {
            a.ended_at = Some(now);
            a.outcome = Some(outcome.clone());
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
        }
        self.dirty = true;

        // Breaker: quick failures without a result in a row stop dispatching.
        let quick_failure = quick
            && report.result.is_none()
            && matches!(
                outcome,
                Outcome::SpawnFailed { .. } | Outcome::Failed { .. }
            )
            && !lost_session;
        let quick_failure =
            quick_failure || matches!(outcome, Outcome::CredentialRejected { .. }) && quick;
        if quick_failure {
            self.quick_failures += 1;
        } else if report.result.is_some() || matches!(outcome, Outcome::Success) {
            self.quick_failures = 0;
        }

        let max_attempts = 1 + self.opts.max_retries;
        let requeue_reason: Option<String>;
        let rec = self.state.task_mut(id).expect("present");
        let status = match &outcome {
            Outcome::Success => {
                requeue_reason = None;
                TaskStatus::Done {
                    outcome: outcome.clone(),
                }
            }
            Outcome::Failed { .. } | Outcome::TimedOut | Outcome::Stalled => {
                let used = rec.counted_failures();
                if self.opts.supervise && used < max_attempts {
                    rec.next = Some(crate::retry::next_after_failure(
                        rec,
                        attempt,
                        &self.config,
                        &self.log_root,
                    ));
                    requeue_reason = Some(format!(
                        "{}; retry {used} of {}",
                        outcome.describe(),
                        self.opts.max_retries
                    ));
                    TaskStatus::Pending
                } else {
                    requeue_reason = None;
                    TaskStatus::Done {
                        outcome: outcome.clone(),
                    }
                }
            }
            Outcome::Interrupted => {
                requeue_reason = None;
                TaskStatus::Done {
                    outcome: outcome.clone(),
                }
            }
            Outcome::HostLost { .. } if !self.opts.supervise => {
                requeue_reason = None;
                TaskStatus::Done {
                    outcome: outcome.clone(),
                }
            }
            Outcome::SpawnFailed { .. }
            | Outcome::RateLimited { .. }
            | Outcome::Overloaded
            | Outcome::CredentialRejected { .. }
            | Outcome::HostLost { .. } => {
                rec.requeues += 1;
                if lost_session {
                    // Start fresh, carrying the context of the attempt it meant to resume.
                    let resumed_from = rec
                        .attempts
                        .iter()
                        .rev()
                        .find(|a| a.number < attempt && a.session_id.is_some())
                        .map(|a| a.number)
                        .unwrap_or(attempt);
                    let mut next = crate::retry::next_after_failure(
                        rec,
                        resumed_from,
                        &self.config,
                        &self.log_root,
                    );
                    next.resume_session = None;
                    rec.next = Some(next);
                }
                if rec.requeues > REQUEUE_CAP {
                    requeue_reason = None;
                    TaskStatus::Done {
                        outcome: outcome.clone(),
                    }
                } else {
                    requeue_reason = Some(outcome.describe());
                    TaskStatus::Pending
                }
            }
        };
        let _ = rec.transition(status.clone());
        let commits = report.new_commits;
        self.emit(Event::Finished {
            task: id.to_string(),
            attempt,
            outcome: outcome.clone(),
            duration_secs: report.duration_secs,
            cost_usd: cost,
            turns,
            commits,
        });
        if let Some(reason) = requeue_reason {
            self.emit(Event::Requeued {
                task: id.to_string(),
                reason,
            });
        }

        // What the outcome says about credentials, pools and the API.
        match &outcome {
            Outcome::RateLimited { resets_at, .. } => {
                let name = credential.clone().unwrap_or_else(|| DEFAULT_LOGIN.into());
                self.park(&name, *resets_at, "rate limited");
            }
            Outcome::CredentialRejected { reason, .. } => {
                let name = credential.clone().unwrap_or_else(|| DEFAULT_LOGIN.into());
                let entry = self.state.credentials.entry(name.clone()).or_default();
                entry.disabled = Some(reason.clone());
                self.emit(Event::CredentialDisabled {
                    credential: name,
                    reason: reason.clone(),
                });
            }
            Outcome::Overloaded => {
                self.overloads += 1;
                let secs = (30u64 << self.overloads.min(5)).min(600);
                let until = now + chrono::Duration::seconds(secs as i64);
                self.state.backoff_until = Some(until);
                self.emit(Event::Notice {
                    message: format!(
                        "the API is overloaded (529): pausing new agents for {}",
                        crate::report::human_duration(secs as f64)
                    ),
                });
            }
            Outcome::HostLost { reason } => {
                if let Some(s) = &slot
                    && self.pools[s.pool].backend.host_loss_takes_pool_down()
                {
                    self.pools[s.pool].down = Some(reason.clone());
                    let message = format!(
                        "pool {} is not used again in this run: {reason}",
                        self.pools[s.pool].name
                    );
                    self.emit(Event::Notice { message });
                }
            }
            Outcome::Success => {
                self.overloads = 0;
            }
            _ => {}
        }

        if self.quick_failures >= BREAKER_LIMIT && self.stopped_because.is_none() {
            let reason = format!(
                "dispatch stopped: {} attempts in a row failed within {} of starting; the last one {}",
                self.quick_failures,
                crate::report::human_duration(QUICK_FAILURE.as_secs_f64()),
                outcome.describe()
            );
            self.emit(Event::Notice {
                message: reason.clone(),
            });
            self.stopped_because = Some((reason, Exit::CouldNotStart));
        }
        if let Some(limit) = self.config.max_cost_usd
            && self.run_cost >= limit
            && self.stopped_because.is_none()
        {
            let reason = format!(
                "the run has cost {}, reaching max_cost_usd = {limit}: no new agents start; running ones finish",
                crate::output::units::money(self.run_cost)
            );
            self.emit(Event::Notice {
                message: reason.clone(),
            });
            self.stopped_because = Some((reason, Exit::TasksFailed));
        }
    }

    pub(super) fn park(&mut self, name: &str, resets_at: Option<DateTime<Utc>>, why: &str) {
        let now = Utc::now();
        let entry = self.state.credentials.entry(name.to_string()).or_default();
        let until = match resets_at {
            Some(t) if t > now => {
                entry.backoff_level = 0;
                t
            }
            _ => {
                let secs = (60u64 << entry.backoff_level.min(6)).min(3600);
                entry.backoff_level += 1;
                now + chrono::Duration::seconds(secs as i64)
            }
        };
        entry.parked_until = Some(until);
        self.dirty = true;
        self.emit(Event::CredentialParked {
            credential: name.to_string(),
            until,
            reason: why.to_string(),
        });
    }
}
