//! Scheduling: which task starts next, on which pool, with which credential,
//! and when the dispatcher should wake up to look again.

use super::*;

impl Dispatcher {
    /// The earliest time something may become startable.
    pub(super) fn next_wake(&self) -> tokio::time::Instant {
        let now = tokio::time::Instant::now();
        let mut wake = now + Duration::from_secs(3600);
        if self.next_start > now {
            wake = wake.min(self.next_start);
        }
        let to_instant = |t: DateTime<Utc>| {
            let d = (t - Utc::now()).to_std().unwrap_or_default();
            now + d + Duration::from_millis(50)
        };
        if let Some(b) = self.state.backoff_until {
            wake = wake.min(to_instant(b));
        }
        for c in self.state.credentials.values() {
            if let Some(t) = c.parked_until {
                wake = wake.min(to_instant(t));
            }
        }
        wake
    }

    /// Pending tasks whose dependencies failed for good become blocked.
    pub(super) fn update_blocked(&mut self) {
        let mut changes = Vec::new();
        for &i in &self.order {
            let task = &self.tasks.tasks[i];
            if !self.in_scope(&task.id) {
                continue;
            }
            let Some(rec) = self.state.task(&task.id) else {
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
                .filter(|d| {
                    self.state.task(d).is_some_and(|r| {
                        matches!(&r.status, TaskStatus::Done { outcome } if *outcome != Outcome::Success)
                            || matches!(r.status, TaskStatus::Blocked { .. })
                    })
                })
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
        for (id, status) in changes {
            if let TaskStatus::Blocked { on, .. } = &status {
                let on = on.clone();
                self.emit(Event::Blocked {
                    task: id.clone(),
                    on,
                    reason: None,
                });
            }
            if let Some(rec) = self.state.task_mut(&id) {
                let _ = rec.transition(status);
                self.dirty = true;
            }
        }
    }

    pub(super) fn ready(&self, id: &str) -> bool {
        let Some(task) = self.tasks.get(id) else {
            return false;
        };
        self.in_scope(id)
            && self
                .state
                .task(id)
                .is_some_and(|r| r.status == TaskStatus::Pending)
            && task
                .depends_on
                .iter()
                .all(|d| self.state.task(d).is_some_and(|r| r.status.is_success()))
    }

    pub(super) fn dispatch_ready(&mut self) {
        if self.draining || self.stop_level != StopLevel::Run || self.stopped_because.is_some() {
            return;
        }
        if let Some(b) = self.state.backoff_until {
            if b > Utc::now() {
                return;
            }
            self.state.backoff_until = None;
            self.dirty = true;
        }
        loop {
            if self.running.len() >= self.config.max_agents
                || tokio::time::Instant::now() < self.next_start
            {
                return;
            }
            let Some(id) = self
                .order
                .iter()
                .map(|&i| self.tasks.tasks[i].id.clone())
                .find(|id| self.ready(id))
            else {
                return;
            };
            let preferred = self
                .state
                .task(&id)
                .and_then(|r| r.next.as_ref())
                .and_then(|n| n.resume_pool.clone());
            let Some((pool, injected)) = self.choose_pool(preferred.as_deref()) else {
                return;
            };
            self.start(&id, pool, injected);
            if !self.config.stagger_delay.is_zero() {
                self.next_start = tokio::time::Instant::now() + self.config.stagger_delay;
            }
        }
    }

    /// The least-loaded pool with a free slot and a usable credential.
    pub(super) fn choose_pool(
        &mut self,
        preferred: Option<&str>,
    ) -> Option<(usize, Option<spec::Injected>)> {
        let now = Utc::now();
        let mut candidates: Vec<(usize, Option<spec::Injected>)> = Vec::new();
        let mut parked_until: Option<DateTime<Utc>> = None;
        let mut unusable: Vec<String> = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            if p.down.is_some() || p.running >= p.slots {
                continue;
            }
            match self
                .creds
                .available(&self.config.pools[i].credential, &self.state, now)
            {
                Availability::Ready(c) => candidates.push((i, c)),
                Availability::ParkedUntil(t) => {
                    parked_until = Some(parked_until.map_or(t, |x| x.min(t)))
                }
                Availability::Unusable(why) => unusable.push(format!("pool {}: {why}", p.name)),
            }
        }
        if candidates.is_empty() {
            if let Some(t) = parked_until
                && self.running.is_empty()
                && self.waiting_note != Some(t)
            {
                self.waiting_note = Some(t);
                if self.opts.no_wait {
                    self.stopped_because = Some((
                        format!(
                            "every usable credential is parked until {} and --no-wait was given",
                            t.with_timezone(&chrono::Local).format("%H:%M:%S")
                        ),
                        Exit::CouldNotStart,
                    ));
                } else {
                    let secs = (t - now).num_seconds().max(0);
                    let message = format!(
                        "every usable credential is parked: waiting until {} ({}); Ctrl-C to stop",
                        t.with_timezone(&chrono::Local).format("%H:%M:%S"),
                        crate::report::human_duration(secs as f64)
                    );
                    self.emit(Event::Notice { message });
                    self.emit(Event::Waiting { until: t });
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

    pub(super) fn start(&mut self, id: &str, pool: usize, injected: Option<spec::Injected>) {
        let Some(task) = self.tasks.get(id).cloned() else {
            return;
        };
        let Some(rec) = self.state.task(id) else {
            return;
        };
        let number = rec.attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
        let next = rec.next.clone().unwrap_or(NextAttempt {
            fresh: false,
            resume_session: None,
            resume_pool: None,
            ended: None,
            context: None,
            base: None,
        });
        let mut base = self.config.workspace.base.clone();
        if let Some(given) = &next.base {
            // `land --resolve`: redo from the target as it is now.
            base = given.clone();
        } else if task.start_from == StartFrom::Dependencies && !task.depends_on.is_empty() {
            match self.dependency_start(&task, next.fresh) {
                Ok(Some(start)) => base = start.to_string(),
                Ok(None) => {}
                Err(reason) => {
                    self.block_with_reason(id, reason);
                    return;
                }
            }
        }
        let pool_name = self.pools[pool].name.clone();
        let base_prompt =
            match crate::prompt::render(self.template.as_ref(), &task, &self.tasks.source) {
                Ok(p) => p,
                Err(e) => {
                    self.finish_without_running(
                        id,
                        pool,
                        Outcome::Failed {
                            reason: e.to_string(),
                        },
                    );
                    return;
                }
            };
        let resume = next
            .resume_session
            .clone()
            .filter(|_| next.resume_pool.as_deref() == Some(pool_name.as_str()) && !next.fresh);
        // A prompt edited since the last attempt reaches the agent in full:
        // as the whole prompt of a fresh session, or inside the follow-up of
        // a resumed one.
        let hash = task.prompt_hash();
        let edited_since = self
            .state
            .task(id)
            .and_then(|r| r.attempts.iter().rev().find(|a| a.prompt_hash.is_some()))
            .filter(|a| a.prompt_hash.as_deref() != Some(hash.as_str()))
            .map(|a| a.number);
        let prompt = crate::retry::prompt_for(
            &base_prompt,
            &next,
            resume.is_some(),
            edited_since.is_some(),
        );
        if let Some(n) = edited_since {
            let how = if resume.is_some() {
                "it resumes its session, and the follow-up carries the new prompt in full"
            } else {
                "it starts a fresh session with the new prompt"
            };
            self.emit(Event::Notice {
                message: format!("task {id}: its prompt changed since attempt {n}: {how}"),
            });
        }
        let tag = format!("{}:{}:{}", self.project_key, id, number);
        let spec = spec::build(SpecInput {
            config: &self.config,
            pool: &self.config.pools[pool],
            credential: injected.as_ref(),
            task_id: id,
            prompt,
            tag: tag.clone(),
            resume: resume.as_deref(),
        });
        let now = Utc::now();
        let credential = injected.as_ref().map(|c| c.name.clone());
        let rec = self.state.task_mut(id).expect("checked above");
        // Saved before the attempt creates the branch: a rerun after a kill
        // knows the branch is this task's.
        rec.branch_created = true;
        rec.attempts.push(Attempt {
            number,
            pool: pool_name.clone(),
            credential: credential.clone(),
            started_at: now,
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
            prompt_hash: Some(hash),
        });
        let _ = rec.transition(TaskStatus::Running {
            attempt: number,
            pool: pool_name.clone(),
            started_at: now,
        });
        let fresh = next.fresh;
        rec.next = None;
        let origin = if fresh { None } else { rec.origin_commit() };
        let expect_commits = task.expect_commits;
        rec.expect_commits = expect_commits;
        let worktree = rec.worktree.display().to_string();
        self.dirty = true;

        let (stop_tx, stop_rx) = watch::channel(self.stop_level);
        self.pools[pool].running += 1;
        if let Some(c) = &credential {
            self.creds.acquire(c);
        }
        self.running.insert(
            id.to_string(),
            Slot {
                pool,
                credential: credential.clone(),
                stop: stop_tx,
                started: tokio::time::Instant::now(),
            },
        );
        let job = AttemptJob {
            task: id.to_string(),
            attempt: number,
            prepare: PrepareJob {
                task: id.to_string(),
                branch: task.branch.clone(),
                base,
                fresh,
            },
            backend: self.pools[pool].backend.clone(),
            spec,
            credential: credential.clone(),
            log_path: self.log_root.join(id).join(format!("{number}.log")),
            redactor: self.redactor.clone(),
            timeout: self.config.agent_timeout,
            stall: self.config.stall_timeout,
            grace: self.config.kill_grace,
            origin,
            expect_commits,
            repo_dir: self.config.workspace.repo.clone(),
        };
        // Spawned after this wake-up's state is saved: an attempt never acts
        // (creates its branch, runs the agent) before its record is on disk.
        self.to_spawn.push((job, stop_rx));
        self.emit(Event::Started {
            task: id.to_string(),
            attempt: number,
            pool: pool_name,
            worktree,
            credential,
            resumed: resume.is_some(),
        });
    }

    /// The start of a task that starts from its dependencies: None when its
    /// branch exists and is kept (a retry builds on it; `--fresh` rebuilds the
    /// start), or why the dependencies' work cannot be combined.
    pub(super) fn dependency_start(
        &self,
        task: &Task,
        fresh: bool,
    ) -> Result<Option<git2::Oid>, String> {
        let repo = crate::git::open(&self.config.workspace.repo).map_err(|e| e.to_string())?;
        let exists = crate::git::branch_tip(&repo, &task.branch)
            .map_err(|e| e.to_string())?
            .is_some();
        if exists && !fresh {
            return Ok(None);
        }
        let base = crate::git::resolve_commit(&repo, &self.config.workspace.base)
            .map_err(|e| e.to_string())?;
        let deps = start_from::closure(&self.tasks, &self.order, &task.id);
        let ranges = start_from::ranges(&repo, &self.state, &deps)?;
        // A few in-memory cherry-picks: short enough to do in the loop.
        start_from::build(&repo, base, &ranges).map(Some)
    }

    /// The task cannot start, for a reason that retrying in this run would not change.
    pub(super) fn block_with_reason(&mut self, id: &str, reason: String) {
        let on = self
            .tasks
            .get(id)
            .map(|t| t.depends_on.clone())
            .unwrap_or_default();
        if let Some(rec) = self.state.task_mut(id) {
            let _ = rec.transition(TaskStatus::Blocked {
                on: on.clone(),
                reason: Some(reason.clone()),
            });
            self.dirty = true;
        }
        self.emit(Event::Blocked {
            task: id.to_string(),
            on,
            reason: Some(reason),
        });
    }

    /// An attempt that ends before anything ran (e.g. its prompt cannot render).
    pub(super) fn finish_without_running(&mut self, id: &str, _pool: usize, outcome: Outcome) {
        if let Some(rec) = self.state.task_mut(id) {
            let _ = rec.transition(TaskStatus::Done {
                outcome: outcome.clone(),
            });
            self.dirty = true;
        }
        self.emit(Event::Finished {
            task: id.to_string(),
            attempt: 0,
            outcome,
            duration_secs: 0.0,
            cost_usd: 0.0,
            turns: 0,
            commits: 0,
        });
    }
}
