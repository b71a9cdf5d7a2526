//! The book a predictor keeps between predictions: every planned task
//! (what its planning read of its record, its paths, its eval) in landing
//! order, the indexes from paths to tasks, and what the target changed.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use git2::build::TreeUpdateBuilder;
use git2::{Oid, Repository};

use super::index::{PathIndex, ancestors};
use super::trees::{Val, diff_trees, file_mode};
use super::{Book, Delta, Entry, Eval};
use crate::error::{Context, Result};
use crate::land::prediction::Prediction;
use crate::land::trailer::Landed;
use crate::state::PredictedConflict;

impl Book {
    pub(super) fn new(repo: &Repository, target_tip: Oid, log_key: u64) -> Result<Book> {
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
            covered: HashSet::new(),
            order: Vec::new(),
            entries: HashMap::new(),
            dependents: BTreeSet::new(),
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
    pub(super) fn rescan_needed(&self, repo: &Repository, starts: &[Oid]) -> bool {
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

    pub(super) fn scan(&mut self, repo: &Repository, starts: &[Oid]) -> Result<()> {
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

    pub(super) fn clear_evals(&mut self) {
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

    /// Plan a task (in place of what was planned of it): returns the old
    /// entry.
    pub(super) fn insert(&mut self, id: &str, e: Entry) -> Option<Entry> {
        let old = self.remove(id);
        self.ranges.add(id, &e.paths);
        if !e.depends_on.is_empty() {
            self.dependents.insert(id.to_string());
        }
        self.entries.insert(id.to_string(), e);
        old
    }

    /// Take a task out of the plan and the indexes.
    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        self.forget(id, &e);
        Some(e)
    }

    /// The planned tasks that depend on `id`.
    pub(super) fn dependents_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Entry> {
        self.dependents
            .iter()
            .filter_map(|x| self.entries.get(x))
            .filter(move |e| e.depends_on.iter().any(|d| d == id))
    }

    /// Take a task out of the indexes (it left the plan, or is planned anew).
    fn forget(&mut self, id: &str, e: &Entry) {
        self.ranges.remove(id, &e.paths);
        self.dependents.remove(id);
        if let Some(ev) = &e.eval {
            self.effects.remove(id, ev.effect.iter().map(|(p, _)| p));
        }
        self.deleting.remove(id);
        self.global.remove(id);
        self.sensitive.remove(id);
    }

    /// Index a task's new eval in place of its old one.
    pub(super) fn index_eval(&mut self, id: &str, old: Option<&Eval>, new: &Eval) {
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
    pub(super) fn touched_by(
        &self,
        old: &Eval,
        new: &Eval,
        after: Option<usize>,
        work: &mut BTreeSet<usize>,
    ) {
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
    pub(super) fn effect_before(&self, p: &str, pos: usize) -> Option<Option<Val>> {
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

    pub(super) fn target_value(&self, repo: &Repository, p: &str) -> Result<Option<Val>> {
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
    pub(super) fn delta(&self, repo: &Repository, origin: Oid) -> Result<Arc<Delta>> {
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
    pub(super) fn with(&self, pos: usize, files: &[String]) -> Vec<String> {
        let mut found: Vec<(usize, &str)> = Vec::new();
        for f in files {
            let mut ids = Vec::new();
            ids.extend(self.effects.at(f).iter().map(String::as_str));
            ids.extend(self.effects.below(f).iter().map(String::as_str));
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
    pub(super) fn result_before(&self, repo: &Repository, pos: usize) -> Result<Oid> {
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

    pub(super) fn prediction(&self, target: &str, applied: usize) -> Prediction {
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
