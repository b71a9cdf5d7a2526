//! The run's conflict prediction, by overlap: what `land` would find,
//! worked out at each success without building `land`'s chain.
//!
//! Each succeeded task keeps the paths its commits change (a rename is a
//! deletion and an addition: both paths) and, once worked out, its effect on
//! the result (each path it changes there, with what it leaves). A task is
//! applied against the target plus the effects of the tasks before it in
//! landing order at its own paths only: where no earlier task and no change
//! of the target touches its paths, that is a lookup; where one does, a
//! three-way merge of those paths alone (libgit2's `merge_trees` on trees
//! that hold only them, so file merges, modes, trivial resolutions and
//! binary files are decided exactly as in `land`'s cherry-pick). A new
//! success is applied, then only the later tasks whose paths meet what
//! changed (or that depend on a task whose landing changed).
//!
//! Where `land`'s cherry-pick could see a rename or a directory/file clash
//! that involves paths outside the task's own (a deletion on either side, a
//! file that becomes a directory), the task is applied the long way: onto
//! the whole result before it, built from the same effects, with `land`'s
//! own cherry-pick. So the answer is `land`'s (and `land --dry-run`'s), task
//! for task; the property test in `overlap/tests.rs` checks it on random
//! task sets.
//!
//! The landing order, the path indexes and what each task's planning read
//! of its record are kept between predictions, so a success costs a pass
//! over the records that allocates nothing for the tasks that did not
//! change, a set lookup per path for a task whose paths no one else
//! touches, and a three-way merge per shared path.
//!
//! ```text
//!  State ──> round.rs: what changed (Seen), landing order, plan ──┐
//!                                                                 v
//!  Prediction <── book.rs: entries, indexes <── apply.rs: merge per path
//! ```
//!
//! Every object (merged files, trees) goes to an in-memory object store
//! (libgit2's mempack) over the repository's: no file of the repository's
//! object store, no ref, index or checkout changes.

mod apply;
mod book;
mod index;
mod key;
mod round;
mod trees;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use git2::{Oid, Repository};

use super::plan::{PlanStatus, PlannedTask};
use super::prediction::{Prediction, in_memory};
use super::record::LandLog;
use super::trailer::Landed;
use crate::error::{Error, Result};
use crate::state::State;
use index::PathIndex;
use key::Key;
use trees::{CommitChanges, Val};

/// Objects the in-memory store may hold (merges and whole trees written)
/// before it is emptied and the prediction worked out again from scratch.
const MAX_WRITES_IN_MEMORY: usize = 50_000;

/// Keeps what it worked out between predictions (one per run).
pub struct Predictor {
    dir: PathBuf,
    target: String,
    repo: Repository,
    book: Option<Book>,
    /// Objects written to the in-memory store since it was opened (each
    /// merge counts one, each whole tree 50).
    written: usize,
}

/// What one prediction was stopped by ([`Predictor::predict_until`]).
#[derive(Debug)]
pub struct Cancelled;

/// A task of the plan and what is known of it.
struct Entry {
    /// What its planning read of its record.
    key: Key,
    /// Its origin, as its record says.
    origin: Option<Oid>,
    /// As `classify` left it (before its dependencies are looked at).
    classified: PlannedTask,
    /// Its status in the plan.
    status: PlanStatus,
    commits: Vec<CommitChanges>,
    /// Every path its commits change, sorted.
    paths: Vec<String>,
    depends_on: Vec<String>,
    pos: usize,
    eval: Option<Eval>,
}

/// A task as applied in landing order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Eval {
    /// It is in the result (landed, empty or already landed).
    lands: bool,
    /// What it changes in the result, sorted by path.
    effect: Vec<(String, Option<Val>)>,
    conflict: Option<Found>,
    /// Applied onto the whole result before it: any earlier change can
    /// change its outcome.
    global: bool,
    /// Its outcome depends on whether an earlier task deletes a file.
    sensitive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    commit: Oid,
    files: Vec<String>,
    with: Vec<String>,
    with_target: bool,
}

/// What the target changed since a task's origin.
struct Delta {
    paths: PathIndex,
    deletes: bool,
}

/// Everything worked out against one target tip and land log.
struct Book {
    target_tip: Oid,
    target_tree: Oid,
    log_key: u64,
    landed: Landed,
    /// Where the walk of the target's history that `landed` read stops.
    walk_base: Option<Oid>,
    /// Starts the walk is known to cover.
    covered: HashSet<Oid>,
    /// Landing order.
    order: Vec<String>,
    entries: HashMap<String, Entry>,
    /// The planned tasks that depend on another.
    dependents: BTreeSet<String>,
    /// Every planned task's paths.
    ranges: PathIndex,
    /// The effects of the tasks that land.
    effects: PathIndex,
    target_values: RefCell<HashMap<String, Option<Val>>>,
    deltas: RefCell<HashMap<Oid, Arc<Delta>>>,
    /// Tasks whose effect deletes a file.
    deleting: HashSet<String>,
    global: HashSet<String>,
    sensitive: HashSet<String>,
}

impl Predictor {
    /// Open the repository at `dir` with objects kept in memory.
    pub fn open(dir: &Path, target: &str) -> Result<Predictor> {
        Ok(Predictor {
            dir: dir.to_path_buf(),
            target: target.to_string(),
            repo: in_memory(dir)?,
            book: None,
            written: 0,
        })
    }

    /// What `land` (every succeeded task) would find now, from the run's
    /// state and the land log.
    pub fn predict(&mut self, state: &State, log: &LandLog) -> Result<Prediction> {
        match self.predict_until(state, log, &AtomicBool::new(false))? {
            Ok(p) => Ok(p),
            Err(Cancelled) => unreachable!("never cancelled"),
        }
    }

    /// [`Predictor::predict`], given up between two tasks once `cancel` is
    /// set (what it had worked out is then dropped).
    pub fn predict_until(
        &mut self,
        state: &State,
        log: &LandLog,
        cancel: &AtomicBool,
    ) -> Result<std::result::Result<Prediction, Cancelled>> {
        let target = self.target.clone();
        let target_tip = crate::git::branch_tip(&self.repo, &target)?.ok_or_else(|| {
            Error::Usage(format!(
                "land_target `{target}` is not a branch of {}: create it, or set [workspace] land_target",
                self.dir.display()
            ))
        })?;
        let log_key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(log).unwrap_or_default().hash(&mut h);
            h.finish()
        };
        let fresh = match &self.book {
            Some(b) => b.target_tip != target_tip || b.log_key != log_key,
            None => true,
        };
        if fresh || self.written > MAX_WRITES_IN_MEMORY {
            if self
                .book
                .as_ref()
                .is_some_and(|b| b.target_tip != target_tip)
                || self.written > MAX_WRITES_IN_MEMORY
            {
                self.repo = in_memory(&self.dir)?;
                self.written = 0;
            }
            self.book = None;
        }
        let mut book = match self.book.take() {
            Some(b) => b,
            None => Book::new(&self.repo, target_tip, log_key)?,
        };
        match self.round(&mut book, state, log, cancel) {
            Ok(Some(applied)) => {
                let prediction = book.prediction(&target, applied);
                self.book = Some(book);
                Ok(Ok(prediction))
            }
            Ok(None) => Ok(Err(Cancelled)),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
