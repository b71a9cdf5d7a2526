//! Conflicts during the run. Each success asks for a prediction of what
//! `land` will find ([`Effect::Predict`], one at a time: successes that come
//! in meanwhile are folded into the next one); a task predicted to conflict
//! is recorded and announced (`conflict_predicted`), and with `--supervise`
//! and `[land] redo_conflicts = "early"` redone at once ([`Effect::PrepareRedo`]).
//!
//! Declared footprints (`"touches"`): a task never runs while an earlier task
//! (in dependency order) whose footprint overlaps its own is pending or
//! running; it then starts from that task's work when it succeeded. Each
//! success of such a task is checked against its footprint
//! ([`Effect::CheckFootprint`], a tree diff of its own: the run's end waits
//! for it, where it waits for a prediction only [`END_WAIT`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Effect, Fleet, FootprintJob, PredictJob, PredictResult, RedoError, RedoJob};
use crate::config::RedoConflicts;
use crate::report::Event;
use crate::runner::StopLevel;
use crate::state::{NextAttempt, Outcome, PredictedConflict, TaskStatus};

/// Early redos of one task in one run, at most.
pub(super) const EARLY_REDO_CAP: u32 = 2;

/// How long the run's end waits for a prediction still being worked out.
/// What it has not worked out is left to `land` (which plans anyway): those
/// tasks are marked `conflict_unknown` and said in a notice, never shown as
/// free of conflicts.
pub(super) const END_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// What conflict prediction keeps during the run.
pub(super) struct Predictions {
    /// Per task with a declared footprint: the tasks before it in the order
    /// whose footprints overlap its own (it never runs at the same time as
    /// them, and starts from their work).
    pub(super) footprint_before: HashMap<String, Vec<String>>,
    /// A prediction is being worked out; `predict_again`: a success came in
    /// meanwhile.
    pub(super) predicting: bool,
    pub(super) predict_again: bool,
    /// Footprint checks being worked out (the run's end waits for them).
    pub(super) footprint_checks: usize,
    /// Early redos per task in this run (capped).
    pub(super) early_redos: HashMap<String, u32>,
    /// Tasks that succeeded in this run.
    pub(super) succeeded_here: HashSet<String>,
    /// Why the last prediction failed (said once).
    pub(super) predict_error: Option<String>,
    /// Successes no prediction was asked for yet, and those the one being
    /// worked out covers: what the run's end leaves unpredicted.
    pub(super) unpredicted: BTreeSet<String>,
    pub(super) in_prediction: BTreeSet<String>,
    /// When the run's end began to wait for the prediction.
    pub(super) end_wait_from: Option<std::time::Instant>,
    /// The state's change clock when the last prediction was asked for: the
    /// predictor's copy has every change before it. None: it has nothing
    /// (the run's first prediction, or the last one failed and its
    /// predictor starts over).
    pub(super) copied_at: Option<u64>,
    /// The positions of the records the predictor's copy has.
    pub(super) copied: HashSet<usize>,
}

impl Predictions {
    pub(super) fn new(footprint_before: HashMap<String, Vec<String>>) -> Predictions {
        Predictions {
            footprint_before,
            predicting: false,
            predict_again: false,
            footprint_checks: 0,
            early_redos: HashMap::new(),
            succeeded_here: HashSet::new(),
            predict_error: None,
            unpredicted: BTreeSet::new(),
            in_prediction: BTreeSet::new(),
            end_wait_from: None,
            copied_at: None,
            copied: HashSet::new(),
        }
    }
}

impl Fleet {
    /// Task `id` succeeded: have what `land` would find worked out.
    pub(super) fn request_prediction(&mut self, id: &str, out: &mut Vec<Effect>) {
        self.check_footprint(id, out);
        self.predictions.unpredicted.insert(id.to_string());
        if self.predictions.predicting {
            self.predictions.predict_again = true;
        } else {
            out.push(self.predict_effect());
        }
    }

    fn predict_effect(&mut self) -> Effect {
        self.predictions.predicting = true;
        self.predictions.predict_again = false;
        let asked = std::mem::take(&mut self.predictions.unpredicted);
        self.predictions.in_prediction.extend(asked);
        let start_over = self.predictions.copied_at.is_none();
        let records = self.records_to_copy();
        self.predictions.copied_at = Some(self.state.changed.clock());
        Effect::Predict(Box::new(PredictJob {
            start_over,
            records,
        }))
    }

    /// The records the predictor's copy lacks or has an older version of:
    /// those changed since the last prediction that are succeeded, or that
    /// it has; and the tasks a succeeded one depends on that it does not
    /// have yet. Everything the copy needs, at its first prediction.
    fn records_to_copy(&mut self) -> Vec<(usize, crate::state::TaskRecord)> {
        let copied = &mut self.predictions.copied;
        let changed: Vec<usize> = match self.predictions.copied_at {
            Some(clock) => self.state.changed.since(clock).collect(),
            None => {
                copied.clear();
                (0..self.state.tasks.len()).collect()
            }
        };
        let mut take: BTreeSet<usize> = BTreeSet::new();
        for i in changed {
            let t = &self.state.tasks[i];
            let succeeded = t.successful_attempt().is_some();
            if !succeeded && !copied.contains(&i) {
                continue;
            }
            take.insert(i);
            if succeeded {
                let deps = t.depends_on.iter().filter_map(|d| self.state.position(d));
                take.extend(deps.filter(|d| !copied.contains(d)));
            }
        }
        copied.extend(take.iter().copied());
        take.into_iter()
            .map(|i| (i, self.state.tasks[i].clone()))
            .collect()
    }

    /// Task `id` succeeded: with a declared footprint, have its work checked
    /// against it.
    fn check_footprint(&mut self, id: &str, out: &mut Vec<Effect>) {
        let Some(footprint) = self.task(id).and_then(|t| t.touches.clone()) else {
            return;
        };
        let Some(record) = self.record(id).cloned() else {
            return;
        };
        let Some(attempt) = record.successful_attempt().map(|a| a.number) else {
            return;
        };
        self.predictions.footprint_checks += 1;
        out.push(Effect::CheckFootprint(Box::new(FootprintJob {
            task: id.to_string(),
            attempt,
            footprint,
            record,
            repo: self.config.workspace.repo.clone(),
        })));
    }

    /// A success was checked against its footprint: say the paths it
    /// changed outside it, and record them.
    pub(super) fn on_footprint_checked(
        &mut self,
        id: &str,
        attempt: u32,
        outside: Result<Vec<String>, String>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.predictions.footprint_checks = self.predictions.footprint_checks.saturating_sub(1);
        // Checked for an attempt that is no longer the task's success (it
        // was redone since): that success has a check of its own.
        let current = self
            .record(id)
            .and_then(|r| r.successful_attempt())
            .map(|a| a.number);
        if current != Some(attempt) {
            return out;
        }
        let paths = match outside {
            Ok(paths) => paths,
            Err(why) => {
                out.push(Effect::Emit(Event::Notice {
                    message: format!(
                        "task {id}: its work could not be checked against its footprint \
                         (\"touches\"): {why}"
                    ),
                }));
                return out;
            }
        };
        if !paths.is_empty() {
            let message = format!(
                "task {id} changed paths outside its footprint (\"touches\"): {}",
                paths.join(", ")
            );
            out.push(Effect::Emit(Event::Notice { message }));
        }
        if self
            .record(id)
            .is_some_and(|r| r.outside_footprint != paths)
            && let Some(rec) = self.record_mut(id)
        {
            rec.outside_footprint = paths;
            self.dirty = true;
        }
        out
    }

    /// Does the run's end wait for footprint checks? Always, until they
    /// come back: each is one tree diff.
    pub(super) fn footprints_hold_end(&self) -> bool {
        self.predictions.footprint_checks > 0
    }

    /// A prediction came back: record each task's conflict, say the new
    /// ones, start early redos.
    pub(super) fn on_prediction(&mut self, result: PredictResult) -> Vec<Effect> {
        let mut out = Vec::new();
        self.predictions.predicting = false;
        self.predictions.end_wait_from = None;
        let answered = std::mem::take(&mut self.predictions.in_prediction);
        match result.prediction {
            // Said once (it would be said again at every success).
            Err(why) => {
                // Asked again with the next prediction, by a predictor that
                // starts over (from a copy of every record it needs).
                self.predictions.unpredicted.extend(answered);
                self.predictions.copied_at = None;
                if self.predictions.predict_error.as_ref() != Some(&why) {
                    out.push(Effect::Emit(Event::Notice {
                        message: format!("could not predict land conflicts: {why}"),
                    }));
                    self.predictions.predict_error = Some(why);
                }
            }
            Ok(p) => {
                self.predictions.predict_error = None;
                drop(answered);
                for (id, conflict) in p.tasks {
                    self.set_conflict(&id, conflict, &mut out);
                }
            }
        }
        if self.predictions.predict_again {
            out.push(self.predict_effect());
        }
        out
    }

    /// Does the run's end wait for the prediction being worked out? Only
    /// [`END_WAIT`] from when nothing else holds it.
    pub(super) fn prediction_holds_end(&mut self, now: super::Now) -> bool {
        if !self.predictions.predicting {
            return false;
        }
        let since = *self.predictions.end_wait_from.get_or_insert(now.mono);
        now.mono < since + END_WAIT
    }

    /// When the run's end stops waiting for the prediction (None once
    /// past, or when it does not wait).
    pub(super) fn end_wait_until(&self, now: super::Now) -> Option<std::time::Instant> {
        self.predictions
            .end_wait_from
            .map(|s| s + END_WAIT)
            .filter(|&d| d > now.mono)
    }

    /// The run ends with successes not predicted: their conflicts are
    /// unknown (not "none"), left to `land`; said once.
    pub(super) fn leave_unpredicted(&mut self, out: &mut Vec<Effect>) {
        let mut left: Vec<String> = std::mem::take(&mut self.predictions.unpredicted)
            .into_iter()
            .chain(std::mem::take(&mut self.predictions.in_prediction))
            .filter(|id| self.record(id).is_some_and(|r| r.status.is_success()))
            .collect();
        left.sort();
        left.dedup();
        if left.is_empty() {
            return;
        }
        for id in &left {
            if let Some(rec) = self.record_mut(id) {
                rec.conflict = None;
                rec.conflict_unknown = true;
            }
        }
        self.dirty = true;
        let shown = 5;
        let mut names = left
            .iter()
            .take(shown)
            .map(|id| format!("`{id}`"))
            .collect::<Vec<_>>()
            .join(", ");
        if left.len() > shown {
            names.push_str(&format!(" and {} more", left.len() - shown));
        }
        out.push(Effect::Emit(Event::Notice {
            message: format!(
                "conflict prediction was still working when the run ended: the conflicts of {} \
                 ({names}) are not predicted; `flocks land --dry-run` says what land will find",
                crate::output::units::count(left.len(), "task"),
            ),
        }));
    }

    fn set_conflict(
        &mut self,
        id: &str,
        conflict: Option<PredictedConflict>,
        out: &mut Vec<Effect>,
    ) {
        let Some(rec) = self.record(id) else {
            return;
        };
        if !rec.status.is_success() {
            return;
        }
        let said = |c: &PredictedConflict| {
            (
                c.commit.clone(),
                c.files.clone(),
                c.with.clone(),
                c.with_target,
            )
        };
        let news = match (&rec.conflict, &conflict) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => said(old) != said(new),
        };
        if (rec.conflict.as_deref() != conflict.as_ref() || rec.conflict_unknown)
            && let Some(rec) = self.record_mut(id)
        {
            rec.conflict = conflict.clone().map(Box::new);
            rec.conflict_unknown = false;
            self.dirty = true;
        }
        let Some(c) = conflict else {
            return;
        };
        if news {
            out.push(Effect::Emit(Event::ConflictPredicted {
                task: id.to_string(),
                with: c.with.clone(),
                with_target: c.with_target,
                files: c.files.clone(),
                commit: c.commit.clone(),
                target: c.target.clone(),
            }));
        }
        self.redo_early(id, c, out);
    }

    /// An earlier task (dependency order) is being redone early: redoing
    /// this one now would build on what is about to change, so it waits for
    /// the prediction after that redo succeeds.
    fn earlier_redo_pending(&self, id: &str) -> bool {
        let Some(pos) = self.index.get(id).and_then(|e| e.order_pos) else {
            return false;
        };
        self.queue.order[..pos].iter().any(|&i| {
            let other = &self.tasks.tasks[i].id;
            self.predictions.early_redos.contains_key(other)
                && self.record(other).is_some_and(|r| {
                    matches!(r.status, TaskStatus::Pending | TaskStatus::Running { .. })
                })
        })
    }

    /// With `--supervise` and `redo_conflicts = "early"`: redo the task now,
    /// from the target plus the tasks it clashed with. It is pending (its
    /// dependents wait) while its start is prepared.
    fn redo_early(&mut self, id: &str, conflict: PredictedConflict, out: &mut Vec<Effect>) {
        if !self.opts.supervise
            || self.config.land.redo_conflicts != RedoConflicts::Early
            || !self.in_scope(id)
            || self.stopping.draining
            || self.stopping.stop_level != StopLevel::Run
            || self.stopping.stopped_because.is_some()
        {
            return;
        }
        if self.has_variants(id) {
            // Redoing a best-of task would mean every variant and a new
            // judgement: its conflict is left for `land --resolve` (said once).
            if !self.predictions.early_redos.contains_key(id) {
                self.predictions
                    .early_redos
                    .insert(id.to_string(), EARLY_REDO_CAP + 1);
                out.push(Effect::Emit(Event::Notice {
                    message: format!(
                        "task {id} is a best-of task: it is not redone early; its conflict \
                         is left for `flocks land --resolve`"
                    ),
                }));
            }
            return;
        }
        if self.earlier_redo_pending(id) {
            return;
        }
        let done = self.predictions.early_redos.get(id).copied().unwrap_or(0);
        if done >= EARLY_REDO_CAP {
            // Said once.
            if done > EARLY_REDO_CAP {
                return;
            }
            self.predictions
                .early_redos
                .insert(id.to_string(), done + 1);
            out.push(Effect::Emit(Event::Notice {
                message: format!(
                    "task {id} was redone early {} in this run and still conflicts: \
                     it is left for `flocks land --resolve`",
                    crate::output::units::count(done, "time")
                ),
            }));
            return;
        }
        let Some(rec) = self.record(id).cloned() else {
            return;
        };
        let with = conflict
            .with
            .iter()
            .filter_map(|w| self.record(w).cloned())
            .collect();
        let before = rec.last_attempt().map(|a| a.number).unwrap_or(0);
        self.predictions
            .early_redos
            .insert(id.to_string(), done + 1);
        self.transition(id, TaskStatus::Pending, out);
        self.planning.insert(id.to_string());
        self.queue.blocked_stale = true;
        let onto = match conflict.with.as_slice() {
            [] => format!("`{}`", conflict.target),
            w => format!(
                "`{}` with {}",
                conflict.target,
                w.iter()
                    .map(|x| format!("`{x}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push(Effect::Emit(Event::Requeued {
            task: id.to_string(),
            reason: format!(
                "it {}: redoing it now on {onto} (redo_conflicts = \"early\")",
                conflict.describe()
            ),
        }));
        out.push(Effect::PrepareRedo(Box::new(RedoJob {
            task: id.to_string(),
            branch: rec.branch.clone(),
            repo: self.config.workspace.repo.clone(),
            before,
            conflict,
            record: rec,
            with,
        })));
    }

    /// The early redo's start is ready (or could not be made: the task stays
    /// as it succeeded, its conflict left for `land --resolve`).
    pub(super) fn on_redo_prepared(
        &mut self,
        id: &str,
        next: Result<NextAttempt, RedoError>,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        self.planning.remove(id);
        match next {
            Ok(next) => {
                if let Some(rec) = self.record_mut(id) {
                    rec.next = Some(Box::new(next));
                    rec.requeues = 0;
                    self.dirty = true;
                }
            }
            Err(why) => {
                out.push(Effect::Emit(Event::Notice {
                    message: format!(
                        "task {id}: its early redo could not be prepared ({why}); \
                         it stays as it succeeded: `flocks land --resolve` can redo it"
                    ),
                }));
                self.transition(
                    id,
                    TaskStatus::Done {
                        outcome: Outcome::Success,
                    },
                    &mut out,
                );
                self.queue.blocked_stale = true;
            }
        }
        out
    }

    /// An earlier task whose footprint overlaps `id`'s has not settled (it is
    /// pending or running in this run): `id` waits.
    pub(super) fn waits_for_footprint(&self, id: &str) -> bool {
        let Some(before) = self.predictions.footprint_before.get(id) else {
            return false;
        };
        before.iter().any(|b| {
            self.running.contains_key(b)
                || self.planning.contains(b)
                || (self.in_scope(b)
                    && self.record(b).is_some_and(|r| {
                        matches!(r.status, TaskStatus::Pending | TaskStatus::Running { .. })
                    }))
        })
    }

    /// The tasks whose work `id`'s start holds: with `start_from =
    /// "dependencies"` its dependencies (transitively), and the earlier tasks
    /// whose footprints overlap its own that succeeded in this run (with what
    /// their starts held); dependency order.
    pub(super) fn start_work(&self, id: &str) -> Vec<String> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut stack = vec![id.to_string()];
        while let Some(x) = stack.pop() {
            let Some(task) = self.task(&x) else { continue };
            let mut next: Vec<String> = Vec::new();
            if task.start_from == crate::tasks::StartFrom::Dependencies {
                next.extend(self.dependency_closure(&x));
            }
            if let Some(before) = self.predictions.footprint_before.get(&x) {
                // Those that succeeded in this run: one that succeeded
                // earlier may have landed and had its branch cleaned.
                next.extend(
                    before
                        .iter()
                        .filter(|b| {
                            self.predictions.succeeded_here.contains(*b)
                                && self.record(b).is_some_and(|r| r.status.is_success())
                        })
                        .cloned(),
                );
            }
            for n in next {
                if n != id && seen.insert(n.clone()) {
                    stack.push(n);
                }
            }
        }
        if seen.is_empty() {
            return Vec::new();
        }
        self.queue
            .order
            .iter()
            .map(|&i| self.tasks.tasks[i].id.as_str())
            .filter(|t| seen.contains(*t))
            .map(str::to_string)
            .collect()
    }
}
