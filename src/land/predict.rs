//! Conflicts seen during the run: what `land` would find, worked out in
//! memory each time a task succeeds. The same plan ([`super::plan`]) and the
//! same chain ([`super::chain`]) as `land`, so the prediction and the land
//! agree task for task; but every object is written to an in-memory object
//! database (libgit2's mempack) over the repository's: no file of the
//! repository's object store, no ref, index or checkout changes.
//!
//! The chain built last time is kept: a new success re-applies only the
//! tasks from its place in landing order on (usually just itself, at the
//! end). A task that conflicts is named with the earlier tasks whose work
//! changes its conflicting files, and whether it conflicts with the target
//! alone.

use std::path::{Path, PathBuf};

use git2::{DiffOptions, Oid, Repository};

use super::TaskOutcome;
use super::apply;
use super::chain::Chain;
use super::plan::{Plan, PlannedTask, plan_tasks};
use super::record::LandLog;
use crate::error::{Context, Error, Result};
use crate::git::cherry_pick::Applied;
use crate::state::{PredictedConflict, State};

/// Keeps the last chain between predictions (one per run).
pub struct Predictor {
    dir: PathBuf,
    target: String,
    repo: Repository,
    last: Option<Last>,
    /// Chain steps written to the in-memory store since it was opened.
    written: usize,
}

/// Chain steps the in-memory store holds at most (each about 20 KB of
/// trees in a mid-sized repository): past it, the store is emptied and the
/// next prediction builds its chain again.
pub const MAX_STEPS_IN_MEMORY: usize = 1_000;

struct Last {
    plan: Plan,
    chain: Chain,
    /// Per step of the chain.
    conflicts: Vec<Option<PredictedConflict>>,
}

/// What a prediction found: every task `land` would pick, in landing order,
/// with its conflict (None: it applies, or has nothing to apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub target_tip: Oid,
    pub tasks: Vec<(String, Option<PredictedConflict>)>,
    /// How many tasks were applied again this time (the rest was reused).
    pub applied: usize,
}

impl Predictor {
    /// Open the repository at `dir` with objects kept in memory.
    pub fn open(dir: &Path, target: &str) -> Result<Predictor> {
        Ok(Predictor {
            dir: dir.to_path_buf(),
            target: target.to_string(),
            repo: in_memory(dir)?,
            last: None,
            written: 0,
        })
    }

    /// What `land` (every succeeded task) would find now, from the run's
    /// state and the land log.
    pub fn predict(&mut self, state: &State, log: &LandLog) -> Result<Prediction> {
        let target = self.target.clone();
        let target_tip = crate::git::branch_tip(&self.repo, &target)?.ok_or_else(|| {
            Error::Usage(format!(
                "land_target `{target}` is not a branch of {}: create it, or set [workspace] land_target",
                self.dir.display()
            ))
        })?;
        let tasks = plan_tasks(&self.repo, state, log, &target, target_tip, &[])?;
        let plan = Plan {
            target,
            target_tip,
            checkout: None,
            dirty: Vec::new(),
            tasks,
            left_out: Vec::new(),
        };
        self.predict_plan(plan)
    }

    /// Apply `plan`, reusing the last chain up to the first task that
    /// differs.
    fn predict_plan(&mut self, plan: Plan) -> Result<Prediction> {
        let reuse = match &self.last {
            Some(last) if last.plan.target_tip == plan.target_tip => last
                .plan
                .tasks
                .iter()
                .zip(&plan.tasks)
                .take_while(|(a, b)| same(a, b))
                .count(),
            Some(_) => {
                // The target moved: start over, with a fresh object store.
                self.repo = in_memory(&self.dir)?;
                self.written = 0;
                0
            }
            None => 0,
        };
        // Bound the memory the written trees take: start over with an
        // empty store (the chain is built again below).
        let reuse = if self.written + plan.tasks.len() - reuse > MAX_STEPS_IN_MEMORY {
            self.repo = in_memory(&self.dir)?;
            self.written = 0;
            self.last = None;
            0
        } else {
            reuse
        };
        self.written += plan.tasks.len() - reuse;
        let (mut chain, mut conflicts) = match self.last.take() {
            Some(last) if reuse > 0 => (last.chain, last.conflicts),
            _ => (
                Chain {
                    base: plan.target_tip,
                    steps: Vec::new(),
                },
                Vec::new(),
            ),
        };
        chain.rebuild_from(&self.repo, &plan, reuse)?;
        conflicts.truncate(reuse);
        for i in reuse..chain.steps.len() {
            let found = match &chain.steps[i].outcome {
                TaskOutcome::Conflicted { commit, files } => {
                    Some(self.explain(&plan, &chain, i, *commit, files)?)
                }
                _ => None,
            };
            conflicts.push(found);
        }
        let prediction = Prediction {
            target_tip: plan.target_tip,
            tasks: plan
                .tasks
                .iter()
                .zip(&conflicts)
                .map(|(t, c)| (t.id.clone(), c.clone()))
                .collect(),
            applied: plan.tasks.len() - reuse,
        };
        self.last = Some(Last {
            plan,
            chain,
            conflicts,
        });
        Ok(prediction)
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
    let mut p = Predictor::open(repo_dir, &plan.target)?;
    let found = p.predict_plan(plan.clone())?;
    for (t, (_, c)) in plan.tasks.iter_mut().zip(found.tasks) {
        t.conflict = c;
    }
    Ok(())
}

/// The same task, as far as the chain is concerned.
fn same(a: &PlannedTask, b: &PlannedTask) -> bool {
    a.id == b.id
        && a.start == b.start
        && a.tip == b.tip
        && a.status == b.status
        && a.depends_on == b.depends_on
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

/// The repository, with new objects kept in memory.
fn in_memory(dir: &Path) -> Result<Repository> {
    let repo = crate::git::open(dir)?;
    let odb = repo.odb().ctx(|| "open the object database".into())?;
    odb.add_new_mempack_backend(1000)
        .ctx(|| "add an in-memory object store".into())?;
    drop(odb);
    Ok(repo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testing::init_repo;
    use crate::state::TaskRecord;

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
