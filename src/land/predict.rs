//! What `land` will find, worked out in memory: `land --dry-run`'s answer
//! (the same plan, [`super::plan`], and the same chain, [`super::chain`], as
//! `land`, so they agree task for task) and, through
//! [`super::overlap::Predictor`], the run's at each success; both give a
//! [`Prediction`] ([`super::prediction`]). Every object is written to an
//! in-memory object database (libgit2's mempack) over the repository's: no
//! file of the repository's object store, no ref, index or checkout changes.
//!
//! A task that conflicts is named with the earlier tasks whose work changes
//! its conflicting files, and whether it conflicts with the target alone.

use std::path::Path;

use git2::{DiffOptions, Oid, Repository};

use super::TaskOutcome;
use super::apply;
use super::chain::Chain;
pub use super::overlap::Predictor;
use super::plan::Plan;
pub use super::prediction::Prediction;
use super::prediction::in_memory;
use crate::error::{Context, Result};
use crate::git::cherry_pick::Applied;
use crate::state::PredictedConflict;

/// The chain `land` builds, with each conflict explained: `land
/// --dry-run`'s answer.
struct ChainPrediction<'r> {
    repo: &'r Repository,
}

impl ChainPrediction<'_> {
    fn predict_plan(&self, plan: &Plan) -> Result<Prediction> {
        let chain = Chain::build(self.repo, plan)?;
        let mut conflicts = Vec::with_capacity(chain.steps.len());
        for (i, step) in chain.steps.iter().enumerate() {
            let found = match &step.outcome {
                TaskOutcome::Conflicted { commit, files } => {
                    Some(self.explain(plan, &chain, i, *commit, files)?)
                }
                _ => None,
            };
            conflicts.push(found);
        }
        Ok(Prediction {
            target_tip: plan.target_tip,
            tasks: plan
                .tasks
                .iter()
                .zip(conflicts)
                .map(|(t, c)| (t.id.clone(), c))
                .collect(),
            applied: plan.tasks.len(),
        })
    }

    /// Which earlier tasks change `files`, and whether the task conflicts
    /// with the target alone.
    fn explain(
        &self,
        plan: &Plan,
        chain: &Chain,
        i: usize,
        commit: Oid,
        files: &[String],
    ) -> Result<PredictedConflict> {
        let repo = &self.repo;
        let mut with = Vec::new();
        for j in chain.changing().into_iter().filter(|&j| j < i) {
            if touches(repo, chain.tip_before(j), chain.steps[j].tip, files)? {
                with.push(plan.tasks[j].id.clone());
            }
        }
        let alone = if i == 0 {
            true
        } else {
            let (_, applied) = apply::apply_task(repo, plan.target_tip, &plan.tasks[i])?;
            matches!(applied, Applied::Conflicted { .. })
        };
        Ok(PredictedConflict {
            commit: commit.to_string(),
            files: files.to_vec(),
            with,
            with_target: alone,
            target: plan.target.clone(),
            target_tip: plan.target_tip.to_string(),
        })
    }
}

/// The conflicts `land` will meet, for `land --dry-run`: set on each planned
/// task.
pub fn predict_conflicts(repo_dir: &Path, plan: &mut Plan) -> Result<()> {
    let repo = in_memory(repo_dir)?;
    let found = ChainPrediction { repo: &repo }.predict_plan(plan)?;
    for (t, (_, c)) in plan.tasks.iter_mut().zip(found.tasks) {
        t.conflict = c;
    }
    Ok(())
}

/// Does `from..to` change any of `files`?
fn touches(repo: &Repository, from: Oid, to: Oid, files: &[String]) -> Result<bool> {
    let tree = |o: Oid| {
        repo.find_commit(o)
            .and_then(|c| c.tree())
            .ctx(|| format!("read the tree of {o}"))
    };
    let (old, new) = (tree(from)?, tree(to)?);
    let mut opts = DiffOptions::new();
    opts.disable_pathspec_match(true);
    for f in files {
        opts.pathspec(f);
    }
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), Some(&mut opts))
        .ctx(|| "diff the chain".into())?;
    Ok(diff.deltas().len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testing::init_repo;
    use crate::land::LandLog;
    use crate::state::{State, TaskRecord};

    /// A task branch off `base` whose one commit writes `file`.
    fn task(repo: &Repository, base: Oid, id: &str, file: &str, text: &str) -> TaskRecord {
        let parent = repo.find_commit(base).unwrap();
        let mut tb = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
        tb.insert(file, repo.blob(text.as_bytes()).unwrap(), 0o100644)
            .unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tip = repo
            .commit(
                None,
                &sig,
                &sig,
                &format!("{id}: {file}"),
                &tree,
                &[&parent],
            )
            .unwrap();
        repo.branch(
            &format!("flocks/{id}"),
            &repo.find_commit(tip).unwrap(),
            false,
        )
        .unwrap();
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let state: State = serde_json::from_str(text).unwrap();
        let mut t = state.tasks[0].clone();
        t.id = id.into();
        t.branch = format!("flocks/{id}");
        t.origin = Some(base.to_string());
        t.attempts[0].start_commit = Some(base.to_string());
        t.attempts[0].end_tip = Some(tip.to_string());
        t
    }

    /// Every file under .git but the object store's packs and the index's
    /// lock: what a prediction must leave as it was.
    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn predicts_in_memory_reuses_the_chain_and_names_who_clashes() {
        let dir = tempfile::tempdir().unwrap();
        init_repo(dir.path());
        let repo = Repository::open(dir.path()).unwrap();
        let base = repo.head().unwrap().target().unwrap();
        let mut state = State::default();
        state.push_task(task(&repo, base, "a", "x.txt", "from a\n"));
        state.push_task(task(&repo, base, "b", "y.txt", "from b\n"));
        let before = snapshot(dir.path());
        let log = LandLog::default();

        let mut p = Predictor::open(dir.path(), "main").unwrap();
        let first = p.predict(&state, &log).unwrap();
        assert_eq!(first.applied, 2);
        assert!(first.tasks.iter().all(|(_, c)| c.is_none()));

        // c clashes with a; only c is applied this time.
        state.push_task(task(&repo, base, "c", "x.txt", "from c\n"));
        let before_c = snapshot(dir.path());
        let second = p.predict(&state, &log).unwrap();
        assert_eq!(second.applied, 1);
        let c = second.tasks[2].1.clone().expect("c conflicts");
        assert_eq!(c.with, ["a"]);
        assert_eq!(c.files, ["x.txt"]);
        assert!(!c.with_target);
        assert_eq!(c.describe(), "will conflict with `a` in x.txt");
        // Nothing of the repository changed: no object, ref, index or file.
        assert_eq!(snapshot(dir.path()), before_c);
        drop(before);

        // The same state again: nothing to apply.
        assert_eq!(p.predict(&state, &log).unwrap().applied, 0);

        // The target moves (a lands by hand): a chain from scratch; c now
        // conflicts with the target itself.
        let a_tip = repo
            .find_branch("flocks/a", git2::BranchType::Local)
            .unwrap()
            .get()
            .target()
            .unwrap();
        repo.reference("refs/heads/main", a_tip, true, "test")
            .unwrap();
        let third = p.predict(&state, &log).unwrap();
        assert_eq!(third.applied, 3, "the whole chain again");
        let c = third
            .tasks
            .iter()
            .find(|(id, _)| id == "c")
            .unwrap()
            .1
            .clone();
        let c = c.expect("c still conflicts");
        assert!(c.with_target && c.with.is_empty(), "{c:?}");
        assert_eq!(c.describe(), "will conflict with `main` in x.txt");
    }
}
