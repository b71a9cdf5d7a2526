//! Finding a task by id without a scan, and remembering which tasks changed
//! since state was last written.

use std::collections::{BTreeSet, HashMap};

use super::TaskRecord;

/// Task id to position in `State::tasks`, by the id's hash (no copy of
/// 10,000 ids for a reader). A hit is checked against the task it points
/// at, so a stale index, or two ids of one hash, never return the wrong
/// task; a miss is trusted only while the index covers every task (two ids
/// of one hash leave it short of that, and a scan answers).
#[derive(Debug, Clone, Default)]
pub struct TaskIndex {
    by_id: HashMap<u64, usize>,
}

impl TaskIndex {
    pub fn rebuild(&mut self, tasks: &[TaskRecord]) {
        self.by_id.clear();
        self.by_id.reserve(tasks.len());
        for (i, t) in tasks.iter().enumerate() {
            // The first record of an id wins, as a scan would find it.
            self.by_id.entry(crate::hash::of(&t.id)).or_insert(i);
        }
    }

    pub fn insert(&mut self, id: &str, position: usize) {
        self.by_id.insert(crate::hash::of(id), position);
    }

    /// Does the index know every task (`tasks` grew only through it)?
    pub fn covers(&self, tasks: &[TaskRecord]) -> bool {
        self.by_id.len() == tasks.len()
    }

    /// The position of `id`, by the index when it can answer, else by a scan.
    pub fn find(&self, tasks: &[TaskRecord], id: &str) -> Option<usize> {
        if let Some(&i) = self.by_id.get(&crate::hash::of(id))
            && tasks.get(i).is_some_and(|t| t.id == id)
        {
            return Some(i);
        }
        if self.covers(tasks) && !self.by_id.is_empty() {
            return None;
        }
        tasks.iter().position(|t| t.id == id)
    }
}

/// Positions of the tasks changed since the last write; and, for whoever
/// keeps a copy of some records (the run's conflict prediction), when each
/// position last changed: a clock that only goes up while this state lives
/// (a write does not reset it).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    tasks: BTreeSet<usize>,
    clock: u64,
    /// Per position, the clock when it last changed (0: not since load).
    stamps: Vec<u64>,
}

impl Changes {
    pub fn mark(&mut self, position: usize) {
        self.tasks.insert(position);
        self.clock += 1;
        if self.stamps.len() <= position {
            self.stamps.resize(position + 1, 0);
        }
        self.stamps[position] = self.clock;
    }

    /// The changed positions, in order; the set is empty afterwards.
    pub fn take(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.tasks).into_iter().collect()
    }

    pub fn clear(&mut self) {
        self.tasks.clear();
    }

    /// The clock now: [`Changes::since`] it names what changes after.
    pub fn clock(&self) -> u64 {
        self.clock
    }

    /// The positions changed after `clock`, in order (a scan of one number
    /// per task).
    pub fn since(&self, clock: u64) -> impl Iterator<Item = usize> + '_ {
        self.stamps
            .iter()
            .enumerate()
            .filter(move |(_, s)| **s > clock)
            .map(|(i, _)| i)
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::State;

    fn state(ids: &[&str]) -> State {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let one: State = serde_json::from_str(text).unwrap();
        let mut s = State::default();
        for id in ids {
            s.push_task(super::TaskRecord {
                id: id.to_string(),
                ..one.tasks[0].clone()
            });
        }
        s
    }

    #[test]
    fn finds_by_id_and_keeps_order() {
        let mut s = state(&["b", "a", "c"]);
        assert_eq!(s.task("a").unwrap().id, "a");
        assert!(s.task("zz").is_none());
        let ids: Vec<&str> = s.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
        // Replacing a task keeps its place.
        let mut a = s.task("a").unwrap().clone();
        a.requeues = 4;
        s.push_task(a);
        assert_eq!(s.tasks[1].requeues, 4);
        assert_eq!(s.tasks.len(), 3);
    }

    #[test]
    fn an_index_that_does_not_cover_the_tasks_still_answers() {
        let mut s = state(&["a", "b"]);
        // Pushed around the index (a test, or code that forgot push_task).
        let mut c = s.tasks[0].clone();
        c.id = "c".into();
        s.tasks.push(c);
        assert_eq!(s.task("c").unwrap().id, "c");
        assert_eq!(s.task_mut("c").unwrap().id, "c");
        // Read from JSON: no index at all until reindex.
        let read: State = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(read.task("b").unwrap().id, "b");
        assert!(read.task("zz").is_none());
    }

    #[test]
    fn changes_since_a_clock_survive_a_write() {
        let mut s = state(&["a", "b", "c"]);
        s.changed.take();
        let before = s.changed.clock();
        s.task_mut("c").unwrap().requeues = 1;
        s.task_mut("a").unwrap().requeues = 1;
        // Written (the journal took them): still changed since `before`.
        assert_eq!(s.changed.take(), [0, 2]);
        assert_eq!(s.changed.since(before).collect::<Vec<_>>(), [0, 2]);
        let mid = s.changed.clock();
        assert_eq!(s.changed.since(mid).count(), 0);
        let mut d = s.tasks[0].clone();
        d.id = "d".into();
        s.push_task(d);
        assert_eq!(s.changed.since(mid).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn two_ids_of_one_hash_are_found_by_a_scan() {
        let s = state(&["a", "b"]);
        // What a collision leaves: one entry for two tasks, each way round.
        for kept in [0, 1] {
            let mut index = super::TaskIndex::default();
            index.by_id.insert(crate::hash::of("a"), kept);
            assert!(!index.covers(&s.tasks));
            assert_eq!(index.find(&s.tasks, "a"), Some(0));
            assert_eq!(index.find(&s.tasks, "b"), Some(1));
            assert_eq!(index.find(&s.tasks, "zz"), None);
        }
    }
}
