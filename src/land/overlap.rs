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
//! for task; the property test in `predict::tests` checks it on random task
//! sets.
//!
//! Every object (merged files, trees) goes to an in-memory object store
//! (libgit2's mempack) over the repository's: no file of the repository's
//! object store, no ref, index or checkout changes.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use git2::build::TreeUpdateBuilder;
use git2::{Oid, Repository};

use super::plan::{PlanStatus, PlannedTask, classify, dependencies_first, unmet_dependency};
use super::predict::Prediction;
use super::record::LandLog;
use super::trailer::Landed;
use crate::error::{Context, Error, Result};
use crate::git::cherry_pick::{Applied, pick};
use crate::state::{PredictedConflict, State, TaskRecord};

/// Objects the in-memory store may hold (merges and whole trees written)
/// before it is emptied and the prediction worked out again from scratch.
const MAX_WRITES_IN_MEMORY: usize = 50_000;

/// A blob or tree entry: its id and file mode.
type Val = (Oid, u32);

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

/// One path a commit changes.
#[derive(Debug, Clone)]
struct Change {
    path: String,
    old: Option<Val>,
    new: Option<Val>,
}

#[derive(Debug, Clone)]
struct CommitChanges {
    id: Oid,
    changes: Vec<Change>,
}

/// A task of the plan and what is known of it.
struct Entry {
    /// What its planning read of its record.
    key: String,
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

/// Paths to tasks, with their directories: which tasks touch a path, a
/// directory above it or a path below it.
#[derive(Default)]
struct PathIndex {
    files: HashMap<String, Vec<String>>,
    dirs: HashMap<String, Vec<String>>,
}

impl PathIndex {
    fn add(&mut self, id: &str, paths: impl IntoIterator<Item = impl AsRef<str>>) {
        for p in paths {
            let p = p.as_ref();
            self.files
                .entry(p.to_string())
                .or_default()
                .push(id.to_string());
            for d in ancestors(p) {
                self.dirs
                    .entry(d.to_string())
                    .or_default()
                    .push(id.to_string());
            }
        }
    }

    fn remove(&mut self, id: &str, paths: impl IntoIterator<Item = impl AsRef<str>>) {
        let drop = |m: &mut HashMap<String, Vec<String>>, k: &str| {
            if let Some(v) = m.get_mut(k) {
                if let Some(i) = v.iter().position(|x| x == id) {
                    v.swap_remove(i);
                }
                if v.is_empty() {
                    m.remove(k);
                }
            }
        };
        for p in paths {
            let p = p.as_ref();
            drop(&mut self.files, p);
            for d in ancestors(p) {
                drop(&mut self.dirs, d);
            }
        }
    }

    /// Tasks at `p` exactly.
    fn at(&self, p: &str) -> &[String] {
        self.files.get(p).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Tasks at `p`, at a directory above it (as a file) or below it.
    fn related<'a>(&'a self, p: &str, out: &mut Vec<&'a str>) {
        out.extend(self.at(p).iter().map(String::as_str));
        self.prefix_related(p, out);
    }

    /// Tasks with a file at a directory above `p`, or with files below `p`.
    fn prefix_related<'a>(&'a self, p: &str, out: &mut Vec<&'a str>) {
        for d in ancestors(p) {
            out.extend(self.at(d).iter().map(String::as_str));
        }
        if let Some(v) = self.dirs.get(p) {
            out.extend(v.iter().map(String::as_str));
        }
    }
}

/// The directories above a path: "a/b/c" gives "a/b", "a".
fn ancestors(p: &str) -> impl Iterator<Item = &str> {
    let mut rest = p;
    std::iter::from_fn(move || {
        let i = rest.rfind('/')?;
        rest = &rest[..i];
        Some(rest)
    })
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
    order: Vec<String>,
    entries: HashMap<String, Entry>,
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

    /// Plan what changed since last time and apply what it affects. None:
    /// cancelled.
    fn round(
        &mut self,
        book: &mut Book,
        state: &State,
        log: &LandLog,
        cancel: &AtomicBool,
    ) -> Result<Option<usize>> {
        let repo = &self.repo;
        let selected: Vec<&TaskRecord> = state
            .tasks
            .iter()
            .filter(|t| t.successful_attempt().is_some() && !t.removed)
            .collect();
        let ordered = dependencies_first(&selected);

        // The history walk behind "already landed" covers every start?
        let starts: Vec<Oid> = ordered
            .iter()
            .copied()
            .chain(
                ordered
                    .iter()
                    .flat_map(|t| t.depends_on.iter().filter_map(|d| state.task(d))),
            )
            .filter_map(|t| t.origin_commit()?.parse().ok())
            .collect::<HashSet<Oid>>()
            .into_iter()
            .collect();
        if book.rescan_needed(repo, &starts) {
            *book = Book::new(repo, book.target_tip, book.log_key)?;
            book.scan(repo, &starts)?;
        }

        // Plan: classify the new and changed tasks.
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        let mut gone: Vec<Entry> = Vec::new();
        let new_ids: HashSet<&str> = ordered.iter().map(|t| t.id.as_str()).collect();
        let old_ids: Vec<String> = book.entries.keys().cloned().collect();
        for id in old_ids {
            if !new_ids.contains(id.as_str()) {
                let e = book.entries.remove(&id).expect("listed");
                book.forget(&id, &e);
                gone.push(e);
            }
        }
        for t in &ordered {
            let key = record_key(t);
            if book.entries.get(&t.id).is_some_and(|e| e.key == key) {
                continue;
            }
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
            if let Some(old) = book.entries.remove(&t.id) {
                book.forget(&t.id, &old);
                gone.push(old);
            }
            book.ranges.add(&t.id, &paths);
            book.entries.insert(
                t.id.clone(),
                Entry {
                    key,
                    status: classified.status.clone(),
                    classified,
                    commits,
                    paths,
                    depends_on: t.depends_on.clone(),
                    pos: 0,
                    eval: None,
                },
            );
            dirty.insert(t.id.clone());
        }

        // Landing order: a change in the order of the tasks planned before
        // means applying everything again.
        let order: Vec<String> = ordered.iter().map(|t| t.id.clone()).collect();
        let kept_before = book
            .order
            .iter()
            .filter(|id| book.entries.contains_key(*id) && !dirty.contains(*id));
        let kept_now = order
            .iter()
            .filter(|id| book.entries.contains_key(*id) && !dirty.contains(*id));
        let reorder = !kept_before.eq(kept_now);
        for (i, id) in order.iter().enumerate() {
            if let Some(e) = book.entries.get_mut(id) {
                e.pos = i;
            }
        }
        book.order = order;

        // Dependencies: a task's plan status follows its dependencies'.
        for t in &ordered {
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

        // What to apply, in landing order.
        let mut work: BTreeSet<usize> = BTreeSet::new();
        if reorder {
            book.clear_evals();
            work.extend(0..book.order.len());
        } else {
            for id in &dirty {
                work.insert(book.entries[id].pos);
            }
            for e in &gone {
                if let Some(ev) = &e.eval {
                    book.touched_by(ev, &Eval::none(), None, &mut work);
                }
                // Its dependents, wherever they are.
                let gone_id = &e.classified.id;
                for x in book.entries.values() {
                    if x.depends_on.iter().any(|d| d == gone_id) {
                        work.insert(x.pos);
                    }
                }
            }
        }
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
                    for (x, e) in &book.entries {
                        if e.pos > pos && e.depends_on.iter().any(|d| d == &id) {
                            work.insert(book.entries[x].pos);
                        }
                    }
                }
            }
        }
        Ok(Some(applied))
    }

    /// Apply the task `id` where it is in landing order.
    fn apply(&mut self, book: &mut Book, id: &str) -> Result<Eval> {
        let e = &book.entries[id];
        let pos = e.pos;
        match &e.status {
            PlanStatus::Empty | PlanStatus::AlreadyLanded => return Ok(Eval::landing_nothing()),
            PlanStatus::Refused { .. } => return Ok(Eval::none()),
            PlanStatus::Ready => {}
        }
        let refused = e.depends_on.iter().any(|d| {
            book.entries
                .get(d)
                .is_some_and(|x| x.pos < pos && x.eval.as_ref().is_some_and(|v| !v.lands))
        });
        if refused {
            return Ok(Eval::none());
        }
        let (mut eval, commit_files) = self.merge(book, id, false)?;
        if let Some((commit, files)) = commit_files {
            let with = book.with(pos, &files);
            let with_target = pos == 0 || self.merge(book, id, true)?.1.is_some();
            eval.conflict = Some(Found {
                commit,
                files,
                with,
                with_target,
            });
        }
        Ok(eval)
    }

    /// Apply task `id`'s commits onto the result before it (`alone`: onto
    /// the target alone). Returns its eval and, when it conflicts, the
    /// commit and files.
    #[expect(clippy::type_complexity, reason = "private, read right here")]
    fn merge(
        &mut self,
        book: &Book,
        id: &str,
        alone: bool,
    ) -> Result<(Eval, Option<(Oid, Vec<String>)>)> {
        let repo = &self.repo;
        let e = &book.entries[id];
        let pos = e.pos;
        let origin = e.classified.start.unwrap_or(book.target_tip);
        let delta = book.delta(repo, origin)?;
        let deleting_before = !alone
            && book
                .deleting
                .iter()
                .any(|d| book.entries.get(d).is_some_and(|x| x.pos < pos));
        // The result before the task, at a path.
        let before = |p: &str| -> Result<Option<Val>> {
            if !alone && let Some(v) = book.effect_before(p, pos) {
                return Ok(v);
            }
            book.target_value(repo, p)
        };
        let mut cur: HashMap<String, Option<Val>> = HashMap::new();
        let mut sensitive = false;
        let mut risky = false;
        'commits: for c in &e.commits {
            let deletes = c.changes.iter().any(|x| x.new.is_none());
            let adds = c.changes.iter().any(|x| x.old.is_none());
            if deletes && adds {
                risky = true;
                break;
            }
            let mut merge: Vec<(&Change, Option<Val>)> = Vec::new();
            for x in &c.changes {
                // A file becoming a directory, or one above or below a
                // path someone else changes: the long way.
                let mut near = Vec::new();
                delta.paths.prefix_related(&x.path, &mut near);
                if !alone {
                    book.effects.prefix_related(&x.path, &mut near);
                }
                if !near.is_empty()
                    || cur
                        .keys()
                        .any(|k| k != &x.path && is_prefix_related(k, &x.path))
                {
                    risky = true;
                    break 'commits;
                }
                let ours = match cur.get(&x.path) {
                    Some(v) => *v,
                    None => before(&x.path)?,
                };
                if ours == x.old {
                    continue;
                }
                if x.old.is_some() && ours.is_none() {
                    // Deleted on our side (even if the task deletes it
                    // too): our side may have renamed it.
                    risky = true;
                    break 'commits;
                }
                if x.old.is_none() && ours.is_some() {
                    // Added on our side: a deletion anywhere on our side
                    // could make it a rename.
                    sensitive = true;
                    if delta.deletes || deleting_before {
                        risky = true;
                        break 'commits;
                    }
                }
                if ours == x.new {
                    continue;
                }
                merge.push((x, ours));
            }
            if !merge.is_empty() {
                self.written += 1;
                match merge_paths(repo, &merge)? {
                    Ok(merged) => {
                        for (x, _) in &merge {
                            cur.insert(x.path.clone(), merged.get(&x.path).copied().flatten());
                        }
                        let merged_paths: HashSet<&str> =
                            merge.iter().map(|(x, _)| x.path.as_str()).collect();
                        for x in &c.changes {
                            if !merged_paths.contains(x.path.as_str()) {
                                cur.insert(x.path.clone(), x.new);
                            }
                        }
                    }
                    Err(files) => {
                        return Ok((
                            Eval {
                                sensitive,
                                ..Eval::none()
                            },
                            Some((c.id, files)),
                        ));
                    }
                }
            } else {
                for x in &c.changes {
                    cur.insert(x.path.clone(), x.new);
                }
            }
        }
        if risky {
            return self.merge_whole(book, id, alone);
        }
        let mut effect = Vec::new();
        for (p, v) in cur {
            if before(&p)? != v {
                effect.push((p, v));
            }
        }
        effect.sort();
        Ok((
            Eval {
                lands: true,
                effect,
                conflict: None,
                global: false,
                sensitive,
            },
            None,
        ))
    }

    /// The long way: `land`'s own cherry-pick of the task onto the whole
    /// result before it (built from the target and the earlier effects).
    #[expect(clippy::type_complexity, reason = "private, read right here")]
    fn merge_whole(
        &mut self,
        book: &Book,
        id: &str,
        alone: bool,
    ) -> Result<(Eval, Option<(Oid, Vec<String>)>)> {
        self.written += 50;
        let repo = &self.repo;
        let e = &book.entries[id];
        let onto = if alone {
            book.target_tip
        } else {
            book.result_before(repo, e.pos)?
        };
        let commits: Vec<Oid> = e.commits.iter().map(|c| c.id).collect();
        let (tip, applied) = pick(repo, onto, id, &commits, true)?;
        let mut eval = Eval {
            global: true,
            ..Eval::none()
        };
        match applied {
            Applied::Conflicted { commit, files } => Ok((eval, Some((commit, files)))),
            Applied::Picked { .. } => {
                eval.lands = true;
                let tree = |o: Oid| {
                    repo.find_commit(o)
                        .and_then(|c| c.tree())
                        .ctx(|| format!("read the tree of {o}"))
                };
                let diff = repo
                    .diff_tree_to_tree(Some(&tree(onto)?), Some(&tree(tip)?), None)
                    .ctx(|| "diff the applied task".into())?;
                for d in diff.deltas() {
                    let f = d.new_file();
                    let Some(p) = f.path().and_then(|p| p.to_str()) else {
                        continue;
                    };
                    let v = f.exists().then(|| (f.id(), u32::from(f.mode())));
                    eval.effect.push((p.to_string(), v));
                }
                eval.effect.sort();
                Ok((eval, None))
            }
        }
    }
}

/// A three-way merge of these paths alone: (change, ours). Ok: what each
/// path holds after it; Err: the conflicting files.
#[expect(clippy::type_complexity, reason = "private, read right here")]
fn merge_paths(
    repo: &Repository,
    merge: &[(&Change, Option<Val>)],
) -> Result<std::result::Result<HashMap<String, Option<Val>>, Vec<String>>> {
    let tree = |pick: &dyn Fn(&(&Change, Option<Val>)) -> Option<Val>| -> Result<git2::Tree<'_>> {
        let empty = empty_tree(repo)?;
        let mut b = TreeUpdateBuilder::new();
        for m in merge {
            if let Some((oid, mode)) = pick(m) {
                b.upsert(m.0.path.as_str(), oid, file_mode(mode));
            }
        }
        let id = b
            .create_updated(repo, &empty)
            .ctx(|| "write a tree of the paths to merge".into())?;
        repo.find_tree(id)
            .ctx(|| "read a tree of the paths to merge".into())
    };
    let ancestor = tree(&|m| m.0.old)?;
    let ours = tree(&|m| m.1)?;
    let theirs = tree(&|m| m.0.new)?;
    let index = repo
        .merge_trees(&ancestor, &ours, &theirs, None)
        .ctx(|| "merge the shared paths".into())?;
    if index.has_conflicts() {
        let mut files = Vec::new();
        for c in index.conflicts().ctx(|| "read conflicts".into())? {
            let c = c.ctx(|| "read conflicts".into())?;
            if let Some(e) = c.our.or(c.their).or(c.ancestor) {
                let p = String::from_utf8_lossy(&e.path).into_owned();
                if !files.contains(&p) {
                    files.push(p);
                }
            }
        }
        files.sort();
        return Ok(Err(files));
    }
    let mut out = HashMap::new();
    for entry in index.iter() {
        let p = String::from_utf8_lossy(&entry.path).into_owned();
        out.insert(p, Some((entry.id, entry.mode)));
    }
    Ok(Ok(out))
}

impl Eval {
    /// It does not land.
    fn none() -> Eval {
        Eval {
            lands: false,
            effect: Vec::new(),
            conflict: None,
            global: false,
            sensitive: false,
        }
    }

    /// It lands with nothing to apply (empty, or landed already).
    fn landing_nothing() -> Eval {
        Eval {
            lands: true,
            ..Eval::none()
        }
    }

    fn deletes(&self) -> bool {
        self.effect.iter().any(|(_, v)| v.is_none())
    }
}

impl Book {
    fn new(repo: &Repository, target_tip: Oid, log_key: u64) -> Result<Book> {
        let target_tree = repo
            .find_commit(target_tip)
            .map(|c| c.tree_id())
            .ctx(|| format!("read the target's tip {target_tip}"))?;
        Ok(Book {
            target_tip,
            target_tree,
            log_key,
            landed: Landed::default(),
            walk_base: None,
            order: Vec::new(),
            entries: HashMap::new(),
            ranges: PathIndex::default(),
            effects: PathIndex::default(),
            target_values: RefCell::new(HashMap::new()),
            deltas: RefCell::new(HashMap::new()),
            deleting: HashSet::new(),
            global: HashSet::new(),
            sensitive: HashSet::new(),
        })
    }

    /// Does the walk of the target's history miss one of `starts`?
    fn rescan_needed(&self, repo: &Repository, starts: &[Oid]) -> bool {
        let present: Vec<Oid> = starts
            .iter()
            .copied()
            .filter(|o| repo.find_commit(*o).is_ok())
            .collect();
        if present.is_empty() {
            return false;
        }
        let Some(base) = self.walk_base else {
            return true;
        };
        present
            .iter()
            .any(|&s| match repo.merge_base(self.target_tip, s) {
                Ok(m) => m != base && !repo.graph_descendant_of(m, base).unwrap_or(false),
                Err(_) => true,
            })
    }

    fn scan(&mut self, repo: &Repository, starts: &[Oid]) -> Result<()> {
        let mut present: Vec<Oid> = starts
            .iter()
            .copied()
            .filter(|o| repo.find_commit(*o).is_ok())
            .collect();
        present.sort();
        present.dedup();
        self.landed = Landed::scan(repo, self.target_tip, &present)?;
        let mut all = vec![self.target_tip];
        all.extend_from_slice(&present);
        self.walk_base = repo.merge_base_octopus(&all).ok();
        Ok(())
    }

    fn clear_evals(&mut self) {
        let ids: Vec<String> = self.entries.keys().cloned().collect();
        for id in ids {
            let e = self.entries.get_mut(&id).expect("listed");
            if let Some(old) = e.eval.take() {
                self.effects.remove(&id, old.effect.iter().map(|(p, _)| p));
            }
        }
        self.deleting.clear();
        self.global.clear();
        self.sensitive.clear();
    }

    /// Take a task out of the indexes (it left the plan, or is planned anew).
    fn forget(&mut self, id: &str, e: &Entry) {
        self.ranges.remove(id, &e.paths);
        if let Some(ev) = &e.eval {
            self.effects.remove(id, ev.effect.iter().map(|(p, _)| p));
        }
        self.deleting.remove(id);
        self.global.remove(id);
        self.sensitive.remove(id);
    }

    /// Index a task's new eval in place of its old one.
    fn index_eval(&mut self, id: &str, old: Option<&Eval>, new: &Eval) {
        if let Some(old) = old {
            self.effects.remove(id, old.effect.iter().map(|(p, _)| p));
        }
        self.effects.add(id, new.effect.iter().map(|(p, _)| p));
        for (set, on) in [
            (&mut self.deleting, new.deletes()),
            (&mut self.global, new.global),
            (&mut self.sensitive, new.sensitive),
        ] {
            if on {
                set.insert(id.to_string());
            } else {
                set.remove(id);
            }
        }
    }

    /// The tasks after `after` (anywhere when None) that a change of a
    /// task's eval from `old` to `new` can affect.
    fn touched_by(&self, old: &Eval, new: &Eval, after: Option<usize>, work: &mut BTreeSet<usize>) {
        let later = |pos: usize| after.is_none_or(|a| pos > a);
        let mut ids: Vec<&str> = Vec::new();
        for (p, _) in old.effect.iter().chain(&new.effect) {
            self.ranges.related(p, &mut ids);
        }
        ids.extend(self.global.iter().map(String::as_str));
        if old.deletes() || new.deletes() {
            ids.extend(self.sensitive.iter().map(String::as_str));
        }
        for id in ids {
            if let Some(e) = self.entries.get(id)
                && later(e.pos)
            {
                work.insert(e.pos);
            }
        }
    }

    /// The latest effect at `p` of a task before `pos` that lands.
    fn effect_before(&self, p: &str, pos: usize) -> Option<Option<Val>> {
        let mut best: Option<(usize, Option<Val>)> = None;
        for id in self.effects.at(p) {
            let Some(e) = self.entries.get(id) else {
                continue;
            };
            if e.pos >= pos || best.is_some_and(|(b, _)| b > e.pos) {
                continue;
            }
            let Some(ev) = &e.eval else { continue };
            if let Ok(i) = ev.effect.binary_search_by(|(q, _)| q.as_str().cmp(p)) {
                best = Some((e.pos, ev.effect[i].1));
            }
        }
        best.map(|(_, v)| v)
    }

    fn target_value(&self, repo: &Repository, p: &str) -> Result<Option<Val>> {
        if let Some(v) = self.target_values.borrow().get(p) {
            return Ok(*v);
        }
        let tree = repo
            .find_tree(self.target_tree)
            .ctx(|| "read the target's tree".into())?;
        let v = tree
            .get_path(Path::new(p))
            .ok()
            .map(|e| (e.id(), e.filemode() as u32));
        self.target_values.borrow_mut().insert(p.to_string(), v);
        Ok(v)
    }

    /// What the target changed since `origin`.
    fn delta(&self, repo: &Repository, origin: Oid) -> Result<Arc<Delta>> {
        if let Some(d) = self.deltas.borrow().get(&origin) {
            return Ok(d.clone());
        }
        let mut d = Delta {
            paths: PathIndex::default(),
            deletes: false,
        };
        if origin != self.target_tip {
            self.diff_target(repo, origin, &mut d)?;
        }
        let d = Arc::new(d);
        self.deltas.borrow_mut().insert(origin, d.clone());
        Ok(d)
    }

    fn diff_target(&self, repo: &Repository, origin: Oid, d: &mut Delta) -> Result<()> {
        let old = repo
            .find_commit(origin)
            .and_then(|c| c.tree())
            .ctx(|| format!("read the tree of {origin}"))?;
        let new = repo
            .find_tree(self.target_tree)
            .ctx(|| "read the target's tree".into())?;
        let mut changes = Vec::new();
        diff_trees(repo, Some(&old), Some(&new), "", &mut changes)?;
        for x in changes {
            if x.new.is_none() {
                d.deletes = true;
            }
            d.paths.add("", [x.path]);
        }
        Ok(())
    }

    /// The earlier tasks that land and change one of `files` (or a path
    /// below one), in landing order.
    fn with(&self, pos: usize, files: &[String]) -> Vec<String> {
        let mut found: Vec<(usize, &str)> = Vec::new();
        for f in files {
            let mut ids = Vec::new();
            ids.extend(self.effects.at(f).iter().map(String::as_str));
            if let Some(v) = self.effects.dirs.get(f.as_str()) {
                ids.extend(v.iter().map(String::as_str));
            }
            for id in ids {
                if let Some(e) = self.entries.get(id)
                    && e.pos < pos
                    && !found.iter().any(|(_, x)| *x == id)
                {
                    found.push((e.pos, id));
                }
            }
        }
        found.sort();
        found.into_iter().map(|(_, id)| id.to_string()).collect()
    }

    /// The whole result before `pos`: the target with every earlier effect,
    /// as a commit in the in-memory store.
    fn result_before(&self, repo: &Repository, pos: usize) -> Result<Oid> {
        let mut at: HashMap<&str, Option<Val>> = HashMap::new();
        for id in self.order.iter().take(pos) {
            let Some(ev) = self.entries.get(id).and_then(|e| e.eval.as_ref()) else {
                continue;
            };
            for (p, v) in &ev.effect {
                at.insert(p.as_str(), *v);
            }
        }
        let target = repo
            .find_commit(self.target_tip)
            .ctx(|| "read the target's tip".into())?;
        let base = target.tree().ctx(|| "read the target's tree".into())?;
        // What to take out first: deleted paths the target has, a
        // directory where a file goes, a file where a directory goes.
        let kind = |p: &str| base.get_path(Path::new(p)).ok().map(|e| e.kind());
        let mut removes: Vec<String> = Vec::new();
        for (p, v) in &at {
            match v {
                None if kind(p).is_some() => removes.push(p.to_string()),
                Some(_) if kind(p) == Some(Some(git2::ObjectType::Tree)) => {
                    removes.push(p.to_string())
                }
                Some(_) => {
                    for d in ancestors(p) {
                        if kind(d) == Some(Some(git2::ObjectType::Blob)) {
                            removes.push(d.to_string());
                        }
                    }
                }
                None => {}
            }
        }
        removes.sort();
        removes.dedup();
        let all: HashSet<String> = removes.iter().cloned().collect();
        removes.retain(|p| !ancestors(p).any(|d| all.contains(d)));
        let mut upserts: Vec<(&str, Val)> =
            at.iter().filter_map(|(p, v)| v.map(|v| (*p, v))).collect();
        upserts.sort();
        let mut tree = base.id();
        if !removes.is_empty() {
            let mut b = TreeUpdateBuilder::new();
            for p in &removes {
                b.remove(p.as_str());
            }
            tree = b
                .create_updated(repo, &repo.find_tree(tree).ctx(|| "read a tree".into())?)
                .ctx(|| "write the result before a task".into())?;
        }
        if !upserts.is_empty() {
            let mut b = TreeUpdateBuilder::new();
            for (p, (oid, mode)) in upserts {
                b.upsert(p, oid, file_mode(mode));
            }
            tree = b
                .create_updated(repo, &repo.find_tree(tree).ctx(|| "read a tree".into())?)
                .ctx(|| "write the result before a task".into())?;
        }
        let tree = repo.find_tree(tree).ctx(|| "read a tree".into())?;
        let sig = crate::git::signature(repo);
        repo.commit(None, &sig, &sig, "the result so far", &tree, &[&target])
            .ctx(|| "write the result before a task".into())
    }

    fn prediction(&self, target: &str, applied: usize) -> Prediction {
        let tip = self.target_tip.to_string();
        Prediction {
            target_tip: self.target_tip,
            tasks: self
                .order
                .iter()
                .map(|id| {
                    let c = self.entries[id]
                        .eval
                        .as_ref()
                        .and_then(|e| e.conflict.as_ref())
                        .map(|f| PredictedConflict {
                            commit: f.commit.to_string(),
                            files: f.files.clone(),
                            with: f.with.clone(),
                            with_target: f.with_target,
                            target: target.to_string(),
                            target_tip: tip.clone(),
                        });
                    (id.clone(), c)
                })
                .collect(),
            applied,
        }
    }
}

/// What planning a task reads of its record.
fn record_key(t: &TaskRecord) -> String {
    let a = t.successful_attempt();
    format!(
        "{}\0{:?}\0{:?}\0{:?}\0{:?}\0{:?}",
        t.branch,
        t.origin_commit(),
        a.map(|a| a.number),
        a.and_then(|a| a.end_tip.as_deref()),
        a.and_then(|a| a.ended_at),
        t.depends_on
    )
}

/// The paths each of a planned task's commits changes (no rename detection:
/// a rename is its two paths).
fn commit_changes(repo: &Repository, t: &PlannedTask) -> Result<Vec<CommitChanges>> {
    if t.status != PlanStatus::Ready {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in &t.commits {
        let commit = repo
            .find_commit(c.id)
            .ctx(|| format!("read commit {}", c.id))?;
        let tree = commit.tree().ctx(|| format!("read the tree of {}", c.id))?;
        let parent = commit
            .parent(0)
            .and_then(|p| p.tree())
            .ctx(|| format!("read the parent of {}", c.id))?;
        let mut changes = Vec::new();
        diff_trees(repo, Some(&parent), Some(&tree), "", &mut changes)?;
        out.push(CommitChanges { id: c.id, changes });
    }
    Ok(out)
}

/// The files (blobs, links, submodules) that differ between two trees, as
/// `git diff` without rename detection lists them; subtrees alike on both
/// sides are not read.
fn diff_trees(
    repo: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<()> {
    use std::collections::BTreeMap;
    type Item = (Oid, u32, bool);
    let entries = |t: Option<&git2::Tree<'_>>| -> BTreeMap<String, Item> {
        t.map(|t| {
            t.iter()
                .map(|e| {
                    let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
                    let tree = e.kind() == Some(git2::ObjectType::Tree);
                    (name, (e.id(), e.filemode() as u32, tree))
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let (a, b) = (entries(old), entries(new));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let subtree = |id: Oid| repo.find_tree(id).ctx(|| format!("read tree {id}"));
    for name in names {
        let path = format!("{prefix}{name}");
        let (x, y) = (a.get(name), b.get(name));
        if let (Some(x), Some(y)) = (x, y)
            && x.0 == y.0
            && x.1 == y.1
        {
            continue;
        }
        let file = |i: Option<&Item>| i.filter(|i| !i.2).map(|i| (i.0, i.1));
        let dir = |i: Option<&Item>| i.filter(|i| i.2).map(|i| i.0);
        let (dx, dy) = (dir(x), dir(y));
        if dx.is_some() || dy.is_some() {
            let tx = dx.map(subtree).transpose()?;
            let ty = dy.map(subtree).transpose()?;
            diff_trees(repo, tx.as_ref(), ty.as_ref(), &format!("{path}/"), out)?;
        }
        let (fx, fy) = (file(x), file(y));
        if fx.is_some() || fy.is_some() {
            out.push(Change {
                path,
                old: fx,
                new: fy,
            });
        }
    }
    Ok(())
}

fn is_prefix_related(a: &str, b: &str) -> bool {
    let under =
        |x: &str, d: &str| x.len() > d.len() && x.starts_with(d) && x.as_bytes()[d.len()] == b'/';
    under(a, b) || under(b, a)
}

fn file_mode(mode: u32) -> git2::FileMode {
    match mode {
        0o100755 => git2::FileMode::BlobExecutable,
        0o120000 => git2::FileMode::Link,
        0o160000 => git2::FileMode::Commit,
        0o040000 => git2::FileMode::Tree,
        _ => git2::FileMode::Blob,
    }
}

fn empty_tree(repo: &Repository) -> Result<git2::Tree<'_>> {
    let id = repo
        .treebuilder(None)
        .and_then(|b| b.write())
        .ctx(|| "write the empty tree".into())?;
    repo.find_tree(id).ctx(|| "read the empty tree".into())
}

/// The repository, with new objects kept in memory.
pub(super) fn in_memory(dir: &Path) -> Result<Repository> {
    let repo = crate::git::open(dir)?;
    let odb = repo.odb().ctx(|| "open the object database".into())?;
    odb.add_new_mempack_backend(1000)
        .ctx(|| "add an in-memory object store".into())?;
    drop(odb);
    Ok(repo)
}

#[cfg(test)]
mod tests;
