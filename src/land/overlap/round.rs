//! One round of prediction: what changed in the run's state since the last
//! round, planned and put in landing order, then the tasks that change can
//! affect applied again, in landing order.
//!
//! A round looks at every record once, and for a task planned before whose
//! record says the same that costs a lookup and a comparison: no allocation,
//! no git. The landing order is kept: positions before the first change
//! stand.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use git2::Oid;

use super::key::Key;
use super::trees::commit_changes;
use super::{Book, Entry, Eval, Predictor};
use crate::error::Result;
use crate::land::plan::{PlanStatus, classify, dependencies_first, unmet_dependency};
use crate::land::record::LandLog;
use crate::state::{State, TaskRecord};

/// What a round read of the run's state.
struct Seen<'s> {
    /// The succeeded tasks, in landing order.
    ordered: Vec<&'s TaskRecord>,
    /// Those not planned yet, or whose record says something new.
    changed: Vec<&'s TaskRecord>,
    /// How many of `ordered` are planned (changed or not).
    known: usize,
    /// One of them depends on another task.
    deps: bool,
    /// Their origins and their dependencies': where the walk of the
    /// target's history behind "already landed" must reach.
    starts: HashSet<Oid>,
}

impl<'s> Seen<'s> {
    fn read(book: &Book, state: &'s State) -> Seen<'s> {
        let selected: Vec<&TaskRecord> = state
            .tasks
            .iter()
            .filter(|t| t.successful_attempt().is_some() && !t.removed)
            .collect();
        let deps = selected.iter().any(|t| !t.depends_on.is_empty());
        // Without dependencies, the landing order is the state's.
        let ordered = if deps {
            dependencies_first(&selected)
        } else {
            selected
        };
        let mut seen = Seen {
            changed: Vec::new(),
            known: 0,
            deps,
            starts: HashSet::new(),
            ordered: Vec::new(),
        };
        let mut last: Option<Oid> = None;
        let mut start = |o: Option<Oid>, starts: &mut HashSet<Oid>| {
            if let Some(o) = o
                && last != Some(o)
            {
                last = Some(o);
                starts.insert(o);
            }
        };
        for t in &ordered {
            match book.entries.get(&t.id) {
                Some(e) if e.key.matches(t) => {
                    seen.known += 1;
                    start(e.origin, &mut seen.starts);
                }
                e => {
                    seen.known += usize::from(e.is_some());
                    seen.changed.push(*t);
                    start(origin(t), &mut seen.starts);
                }
            }
            for d in t.depends_on.iter().filter_map(|d| state.task(d)) {
                start(origin(d), &mut seen.starts);
            }
        }
        seen.ordered = ordered;
        seen
    }
}

/// A task's origin, as its record says.
fn origin(t: &TaskRecord) -> Option<Oid> {
    t.origin_commit()?.parse().ok()
}

impl Predictor {
    /// Plan what changed since last time and apply what it affects. None:
    /// cancelled.
    pub(super) fn round(
        &mut self,
        book: &mut Book,
        state: &State,
        log: &LandLog,
        cancel: &AtomicBool,
    ) -> Result<Option<usize>> {
        let mut seen = Seen::read(book, state);
        if self.rescan(book, &seen)? {
            seen.changed = seen.ordered.clone();
            seen.known = 0;
        }
        let (mut dirty, gone) = self.plan(book, &seen, log)?;
        let reorder = reorder(book, &seen.ordered, &dirty, &gone);
        if seen.deps {
            self.follow_dependencies(book, state, &seen.ordered, &mut dirty);
        }
        let work = first_work(book, reorder, &dirty, &gone);
        self.apply_work(book, work, cancel)
    }

    /// Walk the target's history again (and plan everything anew) when the
    /// walk behind "already landed" may miss a start. True when it did.
    fn rescan(&self, book: &mut Book, seen: &Seen<'_>) -> Result<bool> {
        let repo = &self.repo;
        let unchecked: Vec<Oid> = seen
            .starts
            .iter()
            .copied()
            .filter(|o| !book.covered.contains(o))
            .collect();
        if !book.rescan_needed(repo, &unchecked) {
            let present = unchecked
                .into_iter()
                .filter(|o| repo.find_commit(*o).is_ok());
            book.covered.extend(present);
            return Ok(false);
        }
        let starts: Vec<Oid> = seen.starts.iter().copied().collect();
        *book = Book::new(repo, book.target_tip, book.log_key)?;
        book.scan(repo, &starts)?;
        Ok(true)
    }

    /// Plan the new and changed tasks, and drop those no longer succeeded.
    /// Returns the tasks planned anew and the entries dropped or replaced.
    fn plan(
        &self,
        book: &mut Book,
        seen: &Seen<'_>,
        log: &LandLog,
    ) -> Result<(BTreeSet<String>, Vec<Entry>)> {
        let repo = &self.repo;
        let mut gone: Vec<Entry> = Vec::new();
        if seen.known < book.entries.len() {
            let now: HashSet<&str> = seen.ordered.iter().map(|t| t.id.as_str()).collect();
            let left: Vec<String> = book
                .entries
                .keys()
                .filter(|id| !now.contains(id.as_str()))
                .cloned()
                .collect();
            gone.extend(left.iter().filter_map(|id| book.remove(id)));
        }
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        for t in &seen.changed {
            let classified = classify(repo, t, &self.target, book.target_tip, &book.landed, log)?;
            let commits = commit_changes(repo, &classified)?;
            #[cfg(test)]
            if std::env::var_os("FLOCKS_PREDICT_DEBUG").is_some() {
                eprintln!("plan {}: {:?} {commits:?}", t.id, classified.status);
            }
            let mut paths: Vec<String> = commits
                .iter()
                .flat_map(|c| c.changes.iter().map(|x| x.path.clone()))
                .collect();
            paths.sort();
            paths.dedup();
            let entry = Entry {
                key: Key::of(t),
                origin: origin(t),
                status: classified.status.clone(),
                classified,
                commits,
                paths,
                depends_on: t.depends_on.clone(),
                pos: 0,
                eval: None,
            };
            gone.extend(book.insert(&t.id, entry));
            dirty.insert(t.id.clone());
        }
        Ok((dirty, gone))
    }

    /// A task's plan status follows its dependencies': those whose status
    /// changed are dirty.
    fn follow_dependencies(
        &self,
        book: &mut Book,
        state: &State,
        ordered: &[&TaskRecord],
        dirty: &mut BTreeSet<String>,
    ) {
        let repo = &self.repo;
        for t in ordered {
            if t.depends_on.is_empty() {
                continue;
            }
            let e = &book.entries[&t.id];
            let mut status = e.classified.status.clone();
            if matches!(status, PlanStatus::Ready | PlanStatus::Empty) {
                let pos = e.pos;
                let entries = &book.entries;
                let earlier = |d: &str| entries.get(d).filter(|x| x.pos < pos).map(|x| &x.status);
                if let Some(reason) =
                    unmet_dependency(repo, state, t, &earlier, book.target_tip, &book.landed)
                {
                    status = PlanStatus::Refused { reason };
                }
            }
            let e = book.entries.get_mut(&t.id).expect("planned");
            if e.status != status {
                e.status = status;
                dirty.insert(t.id.clone());
            }
        }
    }

    /// Apply `work` (positions in landing order) in order, with what each
    /// change of a task's eval affects after it. None: cancelled.
    fn apply_work(
        &mut self,
        book: &mut Book,
        mut work: BTreeSet<usize>,
        cancel: &AtomicBool,
    ) -> Result<Option<usize>> {
        let mut applied = 0;
        while let Some(pos) = work.pop_first() {
            if cancel.load(Ordering::Relaxed) {
                return Ok(None);
            }
            let id = book.order[pos].clone();
            let eval = self.apply(book, &id)?;
            #[cfg(test)]
            if std::env::var_os("FLOCKS_PREDICT_DEBUG").is_some() {
                eprintln!("apply {id} at {pos}: {eval:?}");
            }
            applied += 1;
            let old = book
                .entries
                .get_mut(&id)
                .expect("planned")
                .eval
                .replace(eval.clone());
            book.index_eval(&id, old.as_ref(), &eval);
            let lands_changed = old.as_ref().map(|o| o.lands) != Some(eval.lands);
            let effect_changed = old.as_ref().map(|o| &o.effect) != Some(&eval.effect);
            if lands_changed || effect_changed {
                let none = Eval::none();
                let before = old.as_ref().unwrap_or(&none);
                book.touched_by(before, &eval, Some(pos), &mut work);
                if lands_changed {
                    work.extend(book.dependents_of(&id).map(|x| x.pos).filter(|&p| p > pos));
                }
            }
        }
        Ok(Some(applied))
    }
}

/// Put the planned tasks in landing order (positions before the first
/// change stand). True when the tasks planned before changed their order:
/// everything is applied again then.
fn reorder(
    book: &mut Book,
    ordered: &[&TaskRecord],
    dirty: &BTreeSet<String>,
    gone: &[Entry],
) -> bool {
    let gone: HashSet<&str> = gone.iter().map(|e| e.classified.id.as_str()).collect();
    let kept = |id: &str| !dirty.contains(id) && !gone.contains(id);
    let old = std::mem::take(&mut book.order);
    let kept_before = old.iter().filter(|id| kept(id.as_str()));
    let kept_now = ordered.iter().map(|t| &t.id).filter(|id| kept(id.as_str()));
    let reorder = !kept_before.eq(kept_now);
    let first = old
        .iter()
        .zip(ordered)
        .position(|(o, t)| *o != t.id)
        .unwrap_or(old.len().min(ordered.len()));
    let mut old = old.into_iter().filter(|id| kept(id.as_str())).peekable();
    let mut order = Vec::with_capacity(ordered.len());
    for (i, t) in ordered.iter().enumerate() {
        if i >= first || dirty.contains(&t.id) {
            book.entries.get_mut(&t.id).expect("planned").pos = i;
        }
        order.push(old.next_if(|o| *o == t.id).unwrap_or_else(|| t.id.clone()));
    }
    book.order = order;
    reorder
}

/// The positions to apply first: every task after a reorder; else the
/// tasks planned anew, and what the dropped ones' effects touched.
fn first_work(
    book: &mut Book,
    reorder: bool,
    dirty: &BTreeSet<String>,
    gone: &[Entry],
) -> BTreeSet<usize> {
    let mut work: BTreeSet<usize> = BTreeSet::new();
    if reorder {
        book.clear_evals();
        work.extend(0..book.order.len());
        return work;
    }
    for id in dirty {
        work.insert(book.entries[id].pos);
    }
    for e in gone {
        if let Some(ev) = &e.eval {
            book.touched_by(ev, &Eval::none(), None, &mut work);
        }
        // Its dependents, wherever they are.
        work.extend(book.dependents_of(&e.classified.id).map(|x| x.pos));
    }
    work
}
