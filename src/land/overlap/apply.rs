//! Applying one task where it is in landing order: at its own paths, a
//! lookup or a three-way merge of the paths it shares; the long way (`land`'s
//! own cherry-pick onto the whole result before it) where a rename or a
//! directory/file clash could involve other paths.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use git2::build::TreeUpdateBuilder;
use git2::{Oid, Repository};

use super::index::is_prefix_related;
use super::trees::{Change, CommitChanges, Val, empty_tree, file_mode};
use super::{Book, Delta, Entry, Eval, Found, Predictor};
use crate::error::{Context, Result};
use crate::git::cherry_pick::{Applied, pick};
use crate::land::plan::PlanStatus;

/// A task's eval and, when it conflicts, the commit and files.
type Outcome = (Eval, Option<(Oid, Vec<String>)>);

impl Predictor {
    /// Apply the task `id` where it is in landing order.
    pub(super) fn apply(&mut self, book: &Book, id: &str) -> Result<Eval> {
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
    /// the target alone), at its own paths.
    fn merge(&mut self, book: &Book, id: &str, alone: bool) -> Result<Outcome> {
        let e = &book.entries[id];
        let before = Before::new(&self.repo, book, e, alone)?;
        let mut cur: HashMap<String, Option<Val>> = HashMap::new();
        let mut sensitive = false;
        for c in &e.commits {
            match merge_commit(&before, c, &mut cur, &mut sensitive, &mut self.written)? {
                Step::Applied => {}
                Step::Risky => return self.merge_whole(book, id, alone),
                Step::Conflict(files) => {
                    let eval = Eval {
                        sensitive,
                        ..Eval::none()
                    };
                    return Ok((eval, Some((c.id, files))));
                }
            }
        }
        let mut effect = Vec::new();
        for (p, v) in cur {
            if before.at(&p)? != v {
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
    fn merge_whole(&mut self, book: &Book, id: &str, alone: bool) -> Result<Outcome> {
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

/// The result before a task, as one merge of it reads it.
struct Before<'b> {
    repo: &'b Repository,
    book: &'b Book,
    pos: usize,
    /// Onto the target alone.
    alone: bool,
    delta: Arc<Delta>,
    /// An earlier task that lands deletes a file.
    deleting_before: bool,
}

/// How one change of a commit meets the result before it.
enum Meet {
    /// Nothing to merge: the result takes the change.
    Takes,
    /// A three-way merge with what the result holds there.
    Merge(Option<Val>),
    /// Something outside the task's paths may matter: the long way.
    Risky,
}

/// What one commit did.
enum Step {
    Applied,
    Conflict(Vec<String>),
    Risky,
}

impl<'b> Before<'b> {
    fn new(repo: &'b Repository, book: &'b Book, e: &Entry, alone: bool) -> Result<Before<'b>> {
        let pos = e.pos;
        let origin = e.classified.start.unwrap_or(book.target_tip);
        let delta = book.delta(repo, origin)?;
        let deleting_before = !alone
            && book
                .deleting
                .iter()
                .any(|d| book.entries.get(d).is_some_and(|x| x.pos < pos));
        Ok(Before {
            repo,
            book,
            pos,
            alone,
            delta,
            deleting_before,
        })
    }

    /// What the result before the task holds at `p`.
    fn at(&self, p: &str) -> Result<Option<Val>> {
        if !self.alone
            && let Some(v) = self.book.effect_before(p, self.pos)
        {
            return Ok(v);
        }
        self.book.target_value(self.repo, p)
    }

    /// How change `x` meets the result before the task, with the task's
    /// earlier commits applied (`cur`).
    fn meet(
        &self,
        x: &Change,
        cur: &HashMap<String, Option<Val>>,
        sensitive: &mut bool,
    ) -> Result<Meet> {
        // A file becoming a directory, or one above or below a path
        // someone else changes: the long way.
        let mut near = Vec::new();
        self.delta.paths.prefix_related(&x.path, &mut near);
        if !self.alone {
            self.book.effects.prefix_related(&x.path, &mut near);
        }
        if !near.is_empty()
            || cur
                .keys()
                .any(|k| k != &x.path && is_prefix_related(k, &x.path))
        {
            return Ok(Meet::Risky);
        }
        let ours = match cur.get(&x.path) {
            Some(v) => *v,
            None => self.at(&x.path)?,
        };
        if ours == x.old {
            return Ok(Meet::Takes);
        }
        if x.old.is_some() && ours.is_none() {
            // Deleted on our side (even if the task deletes it too): our
            // side may have renamed it.
            return Ok(Meet::Risky);
        }
        if x.old.is_none() && ours.is_some() {
            // Added on our side: a deletion anywhere on our side could
            // make it a rename.
            *sensitive = true;
            if self.delta.deletes || self.deleting_before {
                return Ok(Meet::Risky);
            }
        }
        if ours == x.new {
            return Ok(Meet::Takes);
        }
        Ok(Meet::Merge(ours))
    }
}

/// Apply one commit's changes onto `cur` (the result before the task with
/// its earlier commits), merging the paths the result changed too.
fn merge_commit(
    before: &Before<'_>,
    c: &CommitChanges,
    cur: &mut HashMap<String, Option<Val>>,
    sensitive: &mut bool,
    written: &mut usize,
) -> Result<Step> {
    let deletes = c.changes.iter().any(|x| x.new.is_none());
    let adds = c.changes.iter().any(|x| x.old.is_none());
    if deletes && adds {
        return Ok(Step::Risky);
    }
    let mut merge: Vec<(&Change, Option<Val>)> = Vec::new();
    for x in &c.changes {
        match before.meet(x, cur, sensitive)? {
            Meet::Takes => {}
            Meet::Merge(ours) => merge.push((x, ours)),
            Meet::Risky => return Ok(Step::Risky),
        }
    }
    if merge.is_empty() {
        for x in &c.changes {
            cur.insert(x.path.clone(), x.new);
        }
        return Ok(Step::Applied);
    }
    *written += 1;
    let merged = match merge_paths(before.repo, &merge)? {
        Ok(merged) => merged,
        Err(files) => return Ok(Step::Conflict(files)),
    };
    for (x, _) in &merge {
        cur.insert(x.path.clone(), merged.get(&x.path).copied().flatten());
    }
    let merged_paths: HashSet<&str> = merge.iter().map(|(x, _)| x.path.as_str()).collect();
    for x in &c.changes {
        if !merged_paths.contains(x.path.as_str()) {
            cur.insert(x.path.clone(), x.new);
        }
    }
    Ok(Step::Applied)
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
        return Ok(Err(crate::git::cherry_pick::conflicted_files(&index)?));
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
    pub(super) fn none() -> Eval {
        Eval {
            lands: false,
            effect: Vec::new(),
            conflict: None,
            global: false,
            sensitive: false,
        }
    }

    /// It lands with nothing to apply (empty, or landed already).
    pub(super) fn landing_nothing() -> Eval {
        Eval {
            lands: true,
            ..Eval::none()
        }
    }

    pub(super) fn deletes(&self) -> bool {
        self.effect.iter().any(|(_, v)| v.is_none())
    }
}
