//! What a running attempt's executor says while it runs: its worktree and
//! start, its session, its job in a scheduler's queue.

use std::path::PathBuf;

use super::{Effect, Fleet, Now};
use crate::report::Event;
use crate::state::Job;

impl Fleet {
    /// The executor prepared the attempt's worktree.
    pub(super) fn on_started(
        &mut self,
        id: &str,
        attempt: u32,
        worktree: PathBuf,
        start_commit: String,
        origin: String,
        created_branch: bool,
    ) {
        if let Some(rec) = self.record_mut(id) {
            rec.worktree = worktree;
            rec.origin = Some(origin);
            if created_branch {
                rec.branch_created = true;
            }
            if let Some(a) = rec.attempt_mut(attempt) {
                a.start_commit = Some(start_commit);
            }
            self.dirty = true;
        }
    }

    /// The attempt's job in its pool's scheduler changed (pending with a
    /// reason, running on a node): recorded, and said when it changed.
    pub(super) fn on_job(&mut self, id: &str, attempt: u32, job: Job, now: Now) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(pool) = self
            .running
            .get(id)
            .map(|s| self.pools[s.pool].name.clone())
        else {
            return out;
        };
        let Some(a) = self.record_mut(id).and_then(|r| r.attempt_mut(attempt)) else {
            return out;
        };
        let changed = a.job.as_ref().is_none_or(|old| {
            old.id != job.id || old.state != job.state || old.reason != job.reason
        });
        if !job.is_pending() && a.pending_secs.is_none() {
            let until = job.started_at.unwrap_or(now.wall);
            a.pending_secs =
                Some(((until - a.started_at).num_milliseconds().max(0)) as f64 / 1000.0);
        }
        let pending_secs = a.pending_at(now.wall);
        a.job = Some(Box::new(job.clone()));
        self.dirty = true;
        if changed {
            out.push(Effect::Emit(Event::Job {
                task: id.to_string(),
                attempt,
                pool,
                job,
                pending_secs,
            }));
        }
        out
    }

    /// The agent said which session it runs in.
    pub(super) fn on_session(&mut self, id: &str, attempt: u32, session_id: String) {
        if let Some(a) = self.record_mut(id).and_then(|r| r.attempt_mut(attempt)) {
            a.session_id = Some(session_id);
            self.dirty = true;
        }
    }
}
