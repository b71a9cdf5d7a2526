//! Scheduling: which task starts next, on which pool, with which credential,
//! when the dispatcher should look again, and which tasks are blocked.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::{
    DependencyJob, Effect, Fleet, Now, Slot, Start, StartError, fails_dependents, history, mono_at,
};
use crate::agent::AgentSpec;
use crate::agent::spec::{self, Injected, SpecInput};
use crate::backend::PrepareJob;
use crate::error::Exit;
use crate::report::{AttentionCause, Event};
use crate::runner::StopLevel;
use crate::runner::credentials::Availability;
use crate::state::{Attempt, NextAttempt, Outcome, TaskStatus};
use crate::tasks::{StartFrom, Task};

/// The queue: the order tasks land and start in, where the search for the
/// next start begins, and when the next may start.
pub(super) struct Queue {
    /// Indices of `tasks`, dependencies first (landing order).
    pub(super) order: Vec<usize>,
    /// Indices of `tasks` in the order they start when ready: `order`, or
    /// the longest expected first when there is history
    /// (`history::start_order`).
    pub(super) start: Vec<usize>,
    /// Why `start` is what it is (task order, or longest expected first).
    pub(super) why: history::OrderWhy,
    /// No task before this place in `start` is pending: where the search for
    /// the next start begins. Moved back when a task becomes pending again.
    pub(super) cursor: usize,
    /// A status changed in a way that may block or unblock a dependent.
    pub(super) blocked_stale: bool,
    /// No start before this (`stagger_delay`).
    pub(super) next_start: Option<Instant>,
    /// Until when "every usable credential is parked" was last said.
    pub(super) waiting_note: Option<DateTime<Utc>>,
}

impl Queue {
    pub(super) fn new(order: Vec<usize>, start: history::StartOrder) -> Queue {
        Queue {
            order,
            start: start.order,
            why: start.why,
            cursor: 0,
            blocked_stale: true,
            next_start: None,
            waiting_note: None,
        }
    }
}

impl Fleet {
    /// The earliest time something may become startable, or the run's end
    /// stops waiting for a prediction: the dispatcher's next turn, at the
    /// latest.
    pub(crate) fn next_wake(&self, now: Now) -> Instant {
        let mut wake = now.mono + Duration::from_secs(3600);
        if let Some(s) = self.queue.next_start
            && s > now.mono
        {
            wake = wake.min(s);
        }
        let at = |t: DateTime<Utc>| mono_at(now, t) + Duration::from_millis(50);
        if let Some(b) = self.state.backoff_until {
            wake = wake.min(at(b));
        }
        for c in self.state.credentials.values() {
            if let Some(t) = c.parked_until {
                wake = wake.min(at(t));
            }
        }
        if let Some(t) = self.creds.next_ramp_step(now.wall) {
            wake = wake.min(at(t));
        }
        if let Some(t) = self.end_wait_until(now) {
            wake = wake.min(t);
        }
        wake
    }

    /// Pending tasks whose dependencies failed for good become blocked; blocked
    /// ones whose dependencies were retried become pending again.
    pub(super) fn update_blocked(&mut self) -> Vec<Effect> {
        if !std::mem::take(&mut self.queue.blocked_stale) {
            return Vec::new();
        }
        let mut changes = Vec::new();
        for &i in &self.queue.order {
            let task = &self.tasks.tasks[i];
            if !self.in_scope(&task.id) {
                continue;
            }
            let Some(rec) = self.record(&task.id) else {
                continue;
            };
            if rec.status != TaskStatus::Pending
                && !matches!(rec.status, TaskStatus::Blocked { .. })
            {
                continue;
            }
            let failed: Vec<String> = task
                .depends_on
                .iter()
                .filter(|d| self.record(d).is_some_and(|r| fails_dependents(&r.status)))
                .cloned()
                .collect();
            match (&rec.status, failed.is_empty()) {
                (TaskStatus::Pending, false) => changes.push((
                    task.id.clone(),
                    TaskStatus::Blocked {
                        on: failed,
                        reason: None,
                    },
                )),
                // Blocked with a reason (its dependencies' work conflicts)
                // stays blocked for this run: trying again would conflict again.
                (TaskStatus::Blocked { reason: None, .. }, true) => {
                    changes.push((task.id.clone(), TaskStatus::Pending))
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for (id, status) in changes {
            if let TaskStatus::Blocked { on, .. } = &status {
                out.push(Effect::Emit(Event::Blocked {
                    task: id.clone(),
                    on: on.clone(),
                    reason: None,
                }));
            }
            self.transition(&id, status, &mut out);
        }
        out
    }

    /// In scope, pending, and every dependency succeeded.
    fn ready(&self, id: &str) -> bool {
        let Some(task) = self.task(id) else {
            return false;
        };
        self.in_scope(id)
            && self
                .record(id)
                .is_some_and(|r| r.status == TaskStatus::Pending)
            && !self.running.contains_key(id)
            && !self.planning.contains(id)
            && !self.waits_for_footprint(id)
            && !self.has_variants(id)
            && task
                .depends_on
                .iter()
                .all(|d| self.record(d).is_some_and(|r| r.status.is_success()))
    }

    /// Start every task that can start now: slots, pools, credentials,
    /// stagger, dependencies, scope, back-off, the drain and stop state.
    pub(super) fn start_ready(&mut self, now: Now) -> Vec<Effect> {
        let mut out = self.update_blocked();
        // Variants that ended are judged even when dispatch stopped (budget,
        // breaker): only a judge agent needs dispatch.
        if !self.stopping.draining && self.stopping.stop_level == StopLevel::Run {
            self.judge_ready(now, &mut out);
        }
        if self.stopping.draining
            || self.stopping.stop_level != StopLevel::Run
            || self.stopping.stopped_because.is_some()
            || self.disk_low.is_some()
        {
            return out;
        }
        if let Some(b) = self.state.backoff_until {
            if b > now.wall {
                return out;
            }
            self.state.backoff_until = None;
            self.dirty = true;
        }
        loop {
            if self.running.len() >= self.config.max_agents
                || self.queue.next_start.is_some_and(|s| now.mono < s)
            {
                return out;
            }
            let Some(id) = self.next_ready() else {
                return out;
            };
            let preferred = self
                .record(&id)
                .and_then(|r| r.next.as_ref())
                .and_then(|n| n.resume_pool.clone());
            let Some((pool, injected)) = self.choose_pool(preferred.as_deref(), now, &mut out)
            else {
                return out;
            };
            self.reserve(&id, pool, injected, now, &mut out);
            if !self.config.stagger_delay.is_zero() {
                self.queue.next_start = Some(now.mono + self.config.stagger_delay);
            }
        }
    }

    /// The first ready task in start order. Moves the cursor past the
    /// tasks at the front that are not pending (they cannot start until a
    /// transition makes them pending again, which moves it back).
    fn next_ready(&mut self) -> Option<String> {
        while let Some(&i) = self.queue.start.get(self.queue.cursor) {
            let id = &self.tasks.tasks[i].id;
            if self.in_scope(id)
                && self
                    .record(id)
                    .is_some_and(|r| r.status == TaskStatus::Pending)
            {
                break;
            }
            self.queue.cursor += 1;
        }
        self.queue.start[self.queue.cursor.min(self.queue.start.len())..]
            .iter()
            .map(|&i| self.tasks.tasks[i].id.as_str())
            .find(|id| self.ready(id))
            .map(str::to_string)
    }

    /// The least-loaded pool with a free slot and a usable credential.
    pub(super) fn choose_pool(
        &mut self,
        preferred: Option<&str>,
        now: Now,
        out: &mut Vec<Effect>,
    ) -> Option<(usize, Option<Injected>)> {
        let mut candidates: Vec<(usize, Option<Injected>)> = Vec::new();
        let mut parked_until: Option<DateTime<Utc>> = None;
        for (i, p) in self.pools.iter().enumerate() {
            if p.down.is_some() || p.running >= p.slots {
                continue;
            }
            match self
                .creds
                .available(&self.config.pools[i].credential, &self.state, now.wall)
            {
                Availability::Ready(c) => candidates.push((i, c)),
                Availability::ParkedUntil(t) => {
                    parked_until = Some(parked_until.map_or(t, |x| x.min(t)))
                }
                // At its max_concurrent or ramping: an agent's end or the
                // next ramp step (`next_wake`) brings the next look.
                Availability::Busy | Availability::Unusable(_) => {}
            }
        }
        if candidates.is_empty() {
            if let Some(t) = parked_until
                && self.running.is_empty()
                && self.queue.waiting_note != Some(t)
            {
                self.queue.waiting_note = Some(t);
                let at = t.with_timezone(&chrono::Local).format("%H:%M:%S");
                let message = if self.opts.no_wait {
                    format!(
                        "every usable credential is parked until {at}: the run stops (--no-wait)"
                    )
                } else {
                    format!("every usable credential is parked: nothing runs until {at}")
                };
                let attention = Event::NeedsAttention {
                    cause: AttentionCause::CredentialsParked,
                    message,
                    task: None,
                    credential: None,
                };
                if self.opts.no_wait {
                    self.stopping.stopped_because = Some((
                        format!(
                            "every usable credential is parked until {at} and --no-wait was given"
                        ),
                        Exit::CouldNotStart,
                    ));
                    out.push(Effect::Emit(attention));
                } else {
                    let secs = (t - now.wall).num_seconds().max(0);
                    let message = format!(
                        "every usable credential is parked: waiting until {at} ({}); Ctrl-C to stop",
                        crate::output::units::duration(secs as f64)
                    );
                    out.push(Effect::Emit(Event::Notice { message }));
                    out.push(Effect::Emit(Event::Waiting {
                        until: Some(t),
                        reason: Some("every usable credential is parked".into()),
                    }));
                    out.push(Effect::Emit(attention));
                }
            }
            return None;
        }
        if let Some(name) = preferred
            && let Some(pos) = candidates
                .iter()
                .position(|(i, _)| self.pools[*i].name == name)
        {
            return Some(candidates.swap_remove(pos));
        }
        candidates.sort_by(|(a, _), (b, _)| {
            let la = self.pools[*a].running as f64 / self.pools[*a].slots as f64;
            let lb = self.pools[*b].running as f64 / self.pools[*b].slots as f64;
            la.partial_cmp(&lb)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(b))
        });
        Some(candidates.swap_remove(0))
    }

    /// Take a slot on `pool` for task `id`: start it, or first have its start
    /// built from its dependencies' work.
    fn reserve(
        &mut self,
        id: &str,
        pool: usize,
        injected: Option<Injected>,
        now: Now,
        out: &mut Vec<Effect>,
    ) {
        self.take_slot(id, pool, injected, None, now);
        let Some(task) = self.task(id) else {
            self.release(id);
            return;
        };
        let next = self.record(id).and_then(|r| r.next.as_ref());
        let fresh = next.is_some_and(|n| n.fresh);
        let from_dependencies =
            task.start_from == StartFrom::Dependencies && !task.depends_on.is_empty();
        // Its start holds its dependencies' work (`start_from`) and that of
        // the earlier tasks whose footprints overlap its own.
        let redo_base = next.and_then(|n| n.base.as_ref()).is_some();
        let work = if redo_base {
            Vec::new()
        } else {
            self.start_work(id)
        };
        if !redo_base && (from_dependencies || !work.is_empty()) {
            let deps = work
                .iter()
                .filter_map(|d| self.record(d).cloned())
                .collect();
            out.push(Effect::ResolveStart(Box::new(DependencyJob {
                task: id.to_string(),
                branch: task.branch.clone(),
                repo: self.config.workspace.repo.clone(),
                base: self.config.workspace.base.clone(),
                fresh,
                deps,
            })));
            return;
        }
        self.start(id, None, now, out);
    }

    /// Hold a slot of `pool` (and its credential) for `id`.
    pub(super) fn take_slot(
        &mut self,
        id: &str,
        pool: usize,
        injected: Option<Injected>,
        attempt: Option<u32>,
        now: Now,
    ) {
        self.pools[pool].running += 1;
        if let Some(c) = &injected {
            self.creds.acquire(&c.name, now.wall);
        }
        self.running.insert(
            id.to_string(),
            Slot {
                pool,
                credential: injected,
                started: now.mono,
                attempt,
            },
        );
    }

    /// Every task `id` depends on, directly or not, each once, dependencies first.
    pub(super) fn dependency_closure(&self, id: &str) -> Vec<String> {
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut stack: Vec<&str> = self
            .task(id)
            .map(|t| t.depends_on.iter().map(String::as_str).collect())
            .unwrap_or_default();
        while let Some(d) = stack.pop() {
            if seen.insert(d)
                && let Some(t) = self.task(d)
            {
                stack.extend(t.depends_on.iter().map(String::as_str));
            }
        }
        self.queue
            .order
            .iter()
            .map(|&i| self.tasks.tasks[i].id.as_str())
            .filter(|t| seen.contains(t))
            .map(str::to_string)
            .collect()
    }

    /// The start commit of a `start_from = "dependencies"` task was built
    /// (`Ok(None)`: its branch exists and is kept), or cannot be.
    pub(super) fn on_dependency_start(
        &mut self,
        id: &str,
        start: Result<Option<String>, StartError>,
        now: Now,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        if self.running.get(id).is_none_or(|s| s.attempt.is_some()) {
            return out;
        }
        if self.stopping.draining
            || self.stopping.stop_level != StopLevel::Run
            || self.stopping.stopped_because.is_some()
        {
            // Stopping before the agent started: the task stays pending.
            self.release(id);
            return out;
        }
        match start {
            Ok(base) => self.start(id, base, now, &mut out),
            Err(reason) => {
                self.release(id);
                self.block_with_reason(id, reason.to_string(), &mut out);
            }
        }
        out
    }

    /// Give back a slot taken by [`Fleet::reserve`].
    pub(super) fn release(&mut self, id: &str) {
        self.settle_slot(id);
    }

    /// Record the attempt and hand the dispatcher its start. `base`: the start
    /// built from the dependencies, when there is one.
    fn start(&mut self, id: &str, dep_base: Option<String>, now: Now, out: &mut Vec<Effect>) {
        let (Some(task), Some(rec)) = (self.task(id).cloned(), self.record(id)) else {
            self.release(id);
            return;
        };
        let Some((pool, injected)) = self.running.get(id).map(|s| (s.pool, s.credential.clone()))
        else {
            return;
        };
        let number = rec.attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
        let next = rec.next.as_deref().cloned().unwrap_or(NextAttempt {
            fresh: false,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: None,
            base: None,
        });
        let base = next
            .base
            .clone()
            .or(dep_base)
            .unwrap_or_else(|| self.config.workspace.base.clone());
        let pool_name = self.pools[pool].name.clone();
        let resume = next
            .resume_session
            .clone()
            .filter(|_| next.resume_pool.as_deref() == Some(pool_name.as_str()) && !next.fresh);
        let Some(prompt) = self.attempt_prompt(id, &task, &next, resume.is_some(), out) else {
            return;
        };
        let tag = format!("{}:{}:{}", self.project_key, id, number);
        let spec = self.attempt_spec(&task, pool, injected.as_ref(), prompt, &tag, &resume);
        let credential = injected.as_ref().map(|c| c.name.clone());
        let attempt = Attempt {
            number,
            pool: pool_name.clone(),
            credential: credential.clone(),
            started_at: now.wall,
            ended_at: None,
            start_commit: None,
            end_tip: None,
            session_id: None,
            resumed_from: resume.clone(),
            outcome: None,
            exit_code: None,
            result: None,
            leftovers_committed: false,
            tag,
            prompt_hash: Some(task.prompt_hash()),
            usage: None,
            egress_denied: 0,
            pending_secs: None,
            job: None,
        };
        let Some((origin, worktree)) = self.record_start(id, &task, attempt) else {
            return;
        };
        self.transition(
            id,
            TaskStatus::Running {
                attempt: number,
                pool: pool_name.clone(),
                started_at: now.wall,
            },
            out,
        );
        self.dirty = true;
        if let Some(s) = self.running.get_mut(id) {
            s.attempt = Some(number);
            s.started = now.mono;
        }
        out.push(Effect::Spawn(Box::new(Start {
            task: id.to_string(),
            attempt: number,
            pool,
            credential: credential.clone(),
            prepare: PrepareJob {
                task: id.to_string(),
                branch: task.branch.clone(),
                base,
                fresh: next.fresh,
                origin,
            },
            spec,
            expect_commits: task.expect_commits,
        })));
        out.push(Effect::Emit(Event::Started {
            task: id.to_string(),
            attempt: number,
            pool: pool_name,
            worktree,
            credential,
            resumed: resume.is_some(),
        }));
    }

    /// The prompt of the task's next attempt. A prompt edited since the
    /// last attempt reaches the agent in full: as the whole prompt of a
    /// fresh session, or inside the follow-up of a resumed one (said). None:
    /// it cannot render, and the task ended.
    fn attempt_prompt(
        &mut self,
        id: &str,
        task: &Task,
        next: &NextAttempt,
        resumed: bool,
        out: &mut Vec<Effect>,
    ) -> Option<String> {
        let suffix = task
            .variant
            .as_ref()
            .and_then(|v| self.config.variant(v.k))
            .and_then(|v| v.prompt_suffix.as_deref());
        let base_prompt =
            match crate::prompt::render(self.template.as_ref(), task, &self.tasks.source) {
                Ok(p) => match suffix {
                    Some(suffix) => format!("{p}\n\n{suffix}"),
                    None => p,
                },
                Err(e) => {
                    self.release(id);
                    let reason = e.to_string();
                    self.finish_without_running(id, Outcome::Failed { reason }, out);
                    return None;
                }
            };
        let hash = task.prompt_hash();
        let edited_since = self
            .record(id)?
            .attempts
            .iter()
            .rev()
            .find(|a| a.prompt_hash.is_some())
            .filter(|a| a.prompt_hash.as_deref() != Some(hash.as_str()))
            .map(|a| a.number);
        if let Some(n) = edited_since {
            let how = if resumed {
                "it resumes its session, and the follow-up carries the new prompt in full"
            } else {
                "it starts a fresh session with the new prompt"
            };
            out.push(Effect::Emit(Event::Notice {
                message: format!("task {id}: its prompt changed since attempt {n}: {how}"),
            }));
        }
        Some(crate::retry::prompt_for(
            &base_prompt,
            next,
            resumed,
            edited_since.is_some(),
        ))
    }

    /// The agent's command line and environment for an attempt; a
    /// `[[variants]]` table's model instead, its args after.
    fn attempt_spec(
        &self,
        task: &Task,
        pool: usize,
        injected: Option<&Injected>,
        prompt: String,
        tag: &str,
        resume: &Option<String>,
    ) -> AgentSpec {
        let mut spec = spec::build(SpecInput {
            config: &self.config,
            pool: &self.config.pools[pool],
            credential: injected,
            task_id: &task.id,
            prompt,
            tag: tag.to_string(),
            resume: resume.as_deref(),
        });
        let variant = task.variant.as_ref().and_then(|v| self.config.variant(v.k));
        if let Some(v) = variant {
            let mut agent = self.config.agent.clone();
            if v.model.is_some() {
                agent.model = v.model.clone();
            }
            agent.args.extend(v.args.iter().cloned());
            spec.args = spec::agent_args(&agent, self.config.max_turns, resume.as_deref());
        }
        spec
    }

    /// Add the attempt to the task's record, saved before the attempt
    /// creates the branch (a rerun after a kill knows the branch is this
    /// task's); what was planned or predicted of the last one no longer
    /// holds. The attempt's origin and the task's worktree.
    fn record_start(
        &mut self,
        id: &str,
        task: &Task,
        attempt: Attempt,
    ) -> Option<(Option<String>, String)> {
        let rec = self.record_mut(id)?;
        rec.branch_created = true;
        rec.attempts.reserve_exact(1);
        rec.attempts.push(attempt);
        let fresh = rec.next.as_ref().is_some_and(|n| n.fresh);
        rec.next = None;
        rec.not_retried = None;
        rec.conflict = None;
        rec.outside_footprint.clear();
        let origin = if fresh { None } else { rec.origin_commit() };
        rec.expect_commits = task.expect_commits;
        Some((origin, rec.worktree.display().to_string()))
    }

    /// The task cannot start, for a reason that retrying in this run would not change.
    pub(super) fn block_with_reason(&mut self, id: &str, reason: String, out: &mut Vec<Effect>) {
        let on = self
            .task(id)
            .map(|t| t.depends_on.clone())
            .unwrap_or_default();
        self.transition(
            id,
            TaskStatus::Blocked {
                on: on.clone(),
                reason: Some(reason.clone()),
            },
            out,
        );
        out.push(Effect::Emit(Event::Blocked {
            task: id.to_string(),
            on,
            reason: Some(reason),
        }));
    }

    /// An attempt that ends before anything ran (e.g. its prompt cannot render).
    fn finish_without_running(&mut self, id: &str, outcome: Outcome, out: &mut Vec<Effect>) {
        self.transition(
            id,
            TaskStatus::Done {
                outcome: outcome.clone(),
            },
            out,
        );
        out.push(Effect::Emit(Event::Finished {
            task: id.to_string(),
            attempt: 0,
            outcome,
            duration_secs: 0.0,
            cost_usd: 0.0,
            turns: 0,
            commits: 0,
            phases: None,
        }));
    }
}

/// Nothing runs and nothing more will start: the run is over. Says why
/// when no pool can ever run the ready tasks.
pub(super) fn is_done(fleet: &mut Fleet, now: Now) -> (bool, Vec<Effect>) {
    if !fleet.running.is_empty() || !fleet.planning.is_empty() || !fleet.judge.judging.is_empty() {
        return (false, Vec::new());
    }
    // A footprint check holds the end until it is back; a prediction being
    // worked out, a moment at most.
    if fleet.footprints_hold_end() || fleet.prediction_holds_end(now) {
        return (false, Vec::new());
    }
    if fleet.stopping.draining || fleet.stopping.stopped_because.is_some() {
        return (true, Vec::new());
    }
    if !fleet.tasks.tasks.iter().any(|t| fleet.ready(&t.id)) && !fleet.awaits_judge() {
        return (true, Vec::new());
    }
    // Something is ready but nothing runs: is any pool ever usable?
    let mut reasons = Vec::new();
    let mut any_waitable = false;
    for (i, p) in fleet.pools.iter().enumerate() {
        if let Some(d) = &p.down {
            reasons.push(format!("pool {}: {d}", p.name));
            continue;
        }
        match fleet
            .creds
            .available(&fleet.config.pools[i].credential, &fleet.state, now.wall)
        {
            Availability::Ready(_) | Availability::Busy | Availability::ParkedUntil(_) => {
                any_waitable = true
            }
            Availability::Unusable(why) => reasons.push(format!("pool {}: {why}", p.name)),
        }
    }
    if !any_waitable {
        // Every usable pool's credentials spent what they may in this run:
        // the budget stopped it (exit 3), not a failure to start (exit 5).
        let spent = fleet.pools.iter().enumerate().any(|(i, p)| {
            p.down.is_none() && fleet.creds.spent_out(&fleet.config.pools[i].credential)
        });
        let all_spent = fleet.pools.iter().enumerate().all(|(i, p)| {
            p.down.is_some() || fleet.creds.spent_out(&fleet.config.pools[i].credential)
        });
        let (reason, exit) = if spent && all_spent {
            (
                "every credential the pools can use reached its max_cost_usd for this run: no new agents start".to_string(),
                Exit::TasksFailed,
            )
        } else {
            (
                format!("no pool can run agents: {}", reasons.join("; ")),
                Exit::CouldNotStart,
            )
        };
        fleet.stopping.stopped_because = Some((reason.clone(), exit));
        return (true, vec![Effect::Emit(Event::Notice { message: reason })]);
    }
    (false, Vec::new())
}
