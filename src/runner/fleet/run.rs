//! The run's opening (its pools and queued tasks), what repository upkeep
//! did, and the run's end (the last blocked tasks, the end time, the
//! totals, the exit).

use super::{Effect, Fleet, Now, RunSummary, history};
use crate::error::Exit;
use crate::report::{Event, PoolInfo};
use crate::state::{Outcome, TaskStatus};

impl Fleet {
    /// The events that open a run: its pools and the queued tasks.
    pub(super) fn on_run_started(&mut self) -> Vec<Effect> {
        // What runs: tasks, and for a best-of task its variants (counted
        // apart: counts count tasks).
        let (mut pending, mut best_of, mut variants) = (0, 0, 0);
        for t in &self.state.tasks {
            if t.variants.is_empty() {
                if self.in_scope(&t.id) && t.status == TaskStatus::Pending {
                    pending += 1;
                }
                continue;
            }
            let n = t
                .variants
                .iter()
                .filter(|v| self.in_scope(&v.id) && v.status == TaskStatus::Pending)
                .count();
            if n > 0 {
                pending += 1;
                best_of += 1;
                variants += n;
            }
        }
        let run_id = self
            .state
            .run
            .as_ref()
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let pools = self
            .config
            .pools
            .iter()
            .map(|p| PoolInfo {
                name: p.name.clone(),
                backend: p.backend.kind().into(),
                slots: p.max_worktrees,
                isolation: crate::backend::isolation(p).into(),
            })
            .collect();
        let mut out = vec![Effect::Emit(Event::RunStarted {
            run_id,
            tasks: self
                .tasks
                .tasks
                .iter()
                .filter(|t| t.variant.is_none())
                .count(),
            pending,
            pools,
            best_of,
            variants,
        })];
        if let history::OrderWhy::LongestFirst { .. } = self.queue.why {
            let order = history::StartOrder {
                order: Vec::new(),
                why: self.queue.why,
            };
            out.push(Effect::Emit(Event::Notice {
                message: format!("start order: {}", order.describe()),
            }));
        }
        for &i in &self.queue.order {
            let id = &self.tasks.tasks[i].id;
            if self.in_scope(id)
                && !self.has_variants(id)
                && self
                    .record(id)
                    .is_some_and(|r| r.status == TaskStatus::Pending)
            {
                out.push(Effect::Emit(Event::Queued { task: id.clone() }));
            }
        }
        out
    }
    /// The end of the run: the last blocked tasks, the end time, the totals.
    pub(crate) fn finish(&mut self, now: Now) -> (RunSummary, Vec<Effect>) {
        let mut out = self.update_blocked();
        self.leave_unpredicted(&mut out);
        if let Some(run) = self.state.run.as_mut() {
            run.ended_at = Some(now.wall);
            // An ended run waits for nothing.
            run.waiting = None;
        }
        self.dirty = true;
        let (mut succeeded, mut failed, mut blocked, mut pending) = (0, 0, 0, 0);
        for t in self
            .tasks
            .tasks
            .iter()
            .filter(|t| t.variant.is_none() && self.in_scope(&t.id))
        {
            match self.record(&t.id).map(|r| &r.status) {
                Some(s) if s.is_success() => succeeded += 1,
                Some(TaskStatus::Blocked { .. }) => blocked += 1,
                Some(TaskStatus::Pending)
                | Some(TaskStatus::Done {
                    outcome: Outcome::Interrupted,
                }) => pending += 1,
                _ => failed += 1,
            }
        }
        let interrupted = self.stopping.interrupts > 0;
        out.push(Effect::Emit(Event::RunFinished {
            succeeded,
            failed,
            blocked,
            pending,
            cost_usd: self.breaker.run_cost,
            interrupted,
        }));
        let exit = if self.stopping.ctrl_c {
            Exit::Interrupted
        } else if let Some((_, exit)) = &self.stopping.stopped_because {
            *exit
        } else if interrupted {
            // `flocks stop`: what did not run is no failure.
            if failed + blocked == 0 {
                Exit::Ok
            } else {
                Exit::TasksFailed
            }
        } else if failed + blocked + pending == 0 {
            Exit::Ok
        } else {
            Exit::TasksFailed
        };
        let summary = RunSummary {
            exit,
            stopped_because: self
                .stopping
                .stopped_because
                .as_ref()
                .map(|(r, _)| r.clone()),
            interrupted,
        };
        (summary, out)
    }
}

/// What repository upkeep did, here and on the pools' hosts, said (a
/// failure does not stop the run).
pub(super) fn on_upkeep(done: Result<crate::runner::upkeep::Wave, String>) -> Vec<Effect> {
    match done {
        Ok(wave) => wave.events().into_iter().map(Effect::Emit).collect(),
        Err(e) => vec![Effect::Emit(Event::Notice {
            message: format!("repository upkeep failed (the run goes on): {e}"),
        })],
    }
}
