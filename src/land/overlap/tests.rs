//! The overlap prediction against `land --dry-run`'s chain, on real
//! repositories: random files, random overlaps (same lines, nearby lines,
//! the same new file, deletions, renames, modes, a file becoming a
//! directory), dependencies, a target that moved, random finishing order.
//! After every success both answers must be the same, task for task.
//!
//! `FLOCKS_PREDICT_SEEDS=n` runs more seeds (default 30),
//! `FLOCKS_PREDICT_SEED_FROM=k` from seed k on.

use std::path::Path;

use git2::build::TreeUpdateBuilder;
use git2::{FileMode, Oid, Repository, Tree};

use super::Predictor;
use crate::land::plan::plan_with;
use crate::land::predict::predict_conflicts;
use crate::land::record::LandLog;
use crate::state::{Outcome, PredictedConflict, State, TaskRecord, TaskStatus};

/// splitmix64: a seeded generator, nothing more.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// Every blob of a tree: (path, id, mode).
fn blobs(repo: &Repository, tree: &Tree<'_>) -> Vec<(String, Oid, i32)> {
    let mut out = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        if e.kind() == Some(git2::ObjectType::Blob) {
            out.push((format!("{dir}{}", e.name().unwrap()), e.id(), e.filemode()));
        }
        git2::TreeWalkResult::Ok
    })
    .unwrap();
    let _ = repo;
    out
}

fn text(repo: &Repository, id: Oid) -> String {
    String::from_utf8_lossy(repo.find_blob(id).unwrap().content()).into_owned()
}

/// One random commit's worth of changes to `tree`.
fn edit(repo: &Repository, base: &Tree<'_>, tree: &Tree<'_>, rng: &mut Rng, tag: &str) -> Oid {
    let mut files = blobs(repo, tree);
    let mut b = TreeUpdateBuilder::new();
    let mut dirs: Vec<(String, Oid)> = Vec::new();
    let ops = 1 + rng.below(3);
    let mut touched: Vec<String> = Vec::new();
    for k in 0..ops {
        if files.is_empty() {
            break;
        }
        let (path, id, mode) = files[rng.below(files.len())].clone();
        if touched.iter().any(|t| {
            t == &path || t.starts_with(&format!("{path}/")) || path.starts_with(&format!("{t}/"))
        }) {
            continue;
        }
        let mode = if mode == 0o100755 {
            FileMode::BlobExecutable
        } else {
            FileMode::Blob
        };
        let mut lines: Vec<String> = text(repo, id).lines().map(str::to_string).collect();
        let op = rng.below(100);
        let blob = |s: String| repo.blob(s.as_bytes()).unwrap();
        touched.push(path.clone());
        if op < 40 {
            // Change a line (few lines: nearby and same-line edits are common).
            let i = rng.below(lines.len().clamp(1, 4));
            if lines.is_empty() {
                lines.push(String::new());
            }
            lines[i] = format!("{tag}-{k} {}", lines[i]);
            b.upsert(&path, blob(lines.join("\n") + "\n"), mode);
        } else if op < 50 {
            lines.push(format!("appended by {tag}"));
            b.upsert(&path, blob(lines.join("\n") + "\n"), mode);
        } else if op < 62 {
            // A new file from a small pool of names, often the same text.
            let name = format!("new/n{}.txt", rng.below(4));
            if touched.contains(&name) || files.iter().any(|f| f.0.starts_with(&format!("{name}/")))
            {
                continue;
            }
            let body = if rng.chance(40) {
                "same new file\n".to_string()
            } else {
                format!("new file by {tag}\n")
            };
            touched.push(name.clone());
            b.upsert(&name, blob(body), FileMode::Blob);
        } else if op < 70 {
            b.remove(&path);
            files.retain(|f| f.0 != path);
        } else if op < 78 {
            let to = format!("moved/r{}.txt", rng.below(4));
            if files.iter().any(|f| f.0 == to) || touched.contains(&to) {
                continue;
            }
            b.remove(&path);
            if rng.chance(50) && !lines.is_empty() {
                let i = rng.below(lines.len());
                lines[i] = format!("{tag} renamed {}", lines[i]);
                b.upsert(&to, blob(lines.join("\n") + "\n"), mode);
            } else {
                b.upsert(&to, id, mode);
            }
            touched.push(to);
            files.retain(|f| f.0 != path);
        } else if op < 84 {
            b.upsert(&path, id, FileMode::BlobExecutable);
        } else if op < 88 {
            // The file becomes a directory.
            b.remove(&path);
            dirs.push((
                format!("{path}/inner.txt"),
                blob(format!("inner by {tag}\n")),
            ));
            files.retain(|f| f.0 != path);
        } else if op < 94 {
            // Back to what the base had (a revert, in a later commit).
            match base.get_path(Path::new(&path)) {
                Ok(e) => b.upsert(&path, e.id(), mode),
                Err(_) => b.remove(&path),
            };
        } else {
            // Insert a line in the middle.
            let i = rng.below(lines.len() + 1);
            lines.insert(i, format!("inserted by {tag}"));
            b.upsert(&path, blob(lines.join("\n") + "\n"), mode);
        }
    }
    let mut out = b.create_updated(repo, tree).unwrap();
    if !dirs.is_empty() {
        let mut b = TreeUpdateBuilder::new();
        for (p, id) in dirs {
            b.upsert(p, id, FileMode::Blob);
        }
        out = b
            .create_updated(repo, &repo.find_tree(out).unwrap())
            .unwrap();
    }
    out
}

fn commit(repo: &Repository, parent: Oid, tree: Oid, msg: &str) -> Oid {
    let sig =
        git2::Signature::new("t", "t@example.com", &git2::Time::new(1_700_000_000, 0)).unwrap();
    let parent = repo.find_commit(parent).unwrap();
    let tree = repo.find_tree(tree).unwrap();
    repo.commit(None, &sig, &sig, msg, &tree, &[&parent])
        .unwrap()
}

fn record(template: &TaskRecord, id: &str, base: Oid, tip: Oid, deps: Vec<String>) -> TaskRecord {
    let mut t = template.clone();
    t.id = id.into();
    t.branch = format!("flocks/{id}");
    t.origin = Some(base.to_string());
    t.depends_on = deps;
    t.attempts[0].start_commit = Some(base.to_string());
    t.attempts[0].end_tip = Some(tip.to_string());
    t.status = TaskStatus::Pending;
    t
}

/// `land --dry-run`'s answer: the plan, then the chain.
fn dry_run(dir: &Path, state: &State) -> Vec<(String, Option<PredictedConflict>)> {
    let repo = Repository::open(dir).unwrap();
    let mut plan = plan_with(&repo, state, &LandLog::default(), "main", &[]).unwrap();
    predict_conflicts(dir, &mut plan).unwrap();
    plan.tasks.into_iter().map(|t| (t.id, t.conflict)).collect()
}

fn one_seed(seed: u64, stats: &mut [usize; 3]) {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    crate::git::testing::init_repo(dir.path());
    let repo = Repository::open(dir.path()).unwrap();
    let init = repo.head().unwrap().target().unwrap();

    // The base: a few directories of small files.
    let mut b = TreeUpdateBuilder::new();
    for d in ["a", "b", "c"] {
        for f in 0..3 + rng.below(3) {
            let body: String = (0..6).map(|l| format!("{d}{f} line {l}\n")).collect();
            b.upsert(
                format!("{d}/f{f}.txt"),
                repo.blob(body.as_bytes()).unwrap(),
                FileMode::Blob,
            );
        }
    }
    let init_tree = repo.find_commit(init).unwrap().tree().unwrap();
    let base_tree = repo
        .find_tree(b.create_updated(&repo, &init_tree).unwrap())
        .unwrap();
    let base = commit(&repo, init, base_tree.id(), "base");
    let mut main = base;
    if rng.chance(40) {
        // The target moved on after the tasks started.
        let t = edit(&repo, &base_tree, &base_tree, &mut rng, "main");
        main = commit(&repo, base, t, "main moved");
    }
    repo.reference("refs/heads/main", main, true, "test")
        .unwrap();

    let template: State =
        serde_json::from_str(include_str!("../../../tests/fixtures/state-v1.json")).unwrap();
    let template = &template.tasks[0];
    let n = 4 + rng.below(14);
    let mut state = State::default();
    for i in 0..n {
        let id = format!("t{i:02}");
        let mut tip = base;
        let commits = if rng.chance(8) { 0 } else { 1 + rng.below(3) };
        for c in 0..commits {
            let tree = repo.find_commit(tip).unwrap().tree().unwrap();
            let t = edit(&repo, &base_tree, &tree, &mut rng, &format!("{id}c{c}"));
            if t == tree.id() {
                continue;
            }
            tip = commit(&repo, tip, t, &format!("{id} {c}"));
        }
        repo.branch(
            &format!("flocks/{id}"),
            &repo.find_commit(tip).unwrap(),
            true,
        )
        .unwrap();
        let deps = if i > 0 && rng.chance(15) {
            vec![format!("t{:02}", rng.below(i))]
        } else {
            Vec::new()
        };
        state.push_task(record(template, &id, base, tip, deps));
    }

    let mut left: Vec<usize> = (0..n).collect();
    let mut p = Predictor::open(dir.path(), "main").unwrap();
    let mut round = 0;
    while !left.is_empty() {
        round += 1;
        let i = left.swap_remove(rng.below(left.len()));
        state.tasks[i].status = TaskStatus::Done {
            outcome: Outcome::Success,
        };
        // Now and then a succeeded task goes back to pending (an early
        // redo) and succeeds again later.
        if rng.chance(10) {
            let done: Vec<usize> = (0..n)
                .filter(|&k| k != i && state.tasks[k].status.is_success())
                .collect();
            if !done.is_empty() {
                let k = done[rng.below(done.len())];
                state.tasks[k].status = TaskStatus::Pending;
                left.push(k);
            }
        }
        let want = dry_run(dir.path(), &state);
        let fresh = Predictor::open(dir.path(), "main")
            .unwrap()
            .predict(&state, &LandLog::default())
            .unwrap()
            .tasks;
        assert_eq!(
            fresh, want,
            "seed {seed}, round {round}: from scratch, the overlap prediction (left) is not land --dry-run's (right)"
        );
        let got = p.predict(&state, &LandLog::default()).unwrap().tasks;
        assert_eq!(
            got, want,
            "seed {seed}, round {round}: the overlap prediction (left) is not land --dry-run's (right)"
        );
        stats[0] += 1;
        stats[1] += want.iter().filter(|(_, c)| c.is_some()).count();
    }
    // From scratch, the same.
    let fresh = Predictor::open(dir.path(), "main")
        .unwrap()
        .predict(&state, &LandLog::default())
        .unwrap()
        .tasks;
    assert_eq!(
        fresh,
        dry_run(dir.path(), &state),
        "seed {seed}: from scratch"
    );
    stats[2] += p.written;
}

#[test]
fn prediction_by_overlap_is_land_dry_runs_answer_on_random_task_sets() {
    let seeds: u64 = std::env::var("FLOCKS_PREDICT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let from: u64 = std::env::var("FLOCKS_PREDICT_SEED_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut stats = [0; 3];
    for seed in from..from + seeds {
        one_seed(seed, &mut stats);
    }
    // The sets must exercise what they claim: conflicts were found.
    assert!(stats[1] > seeds as usize, "too few conflicts: {stats:?}");
    eprintln!(
        "{seeds} seeds: {} predictions compared, {} conflicts, {} objects written",
        stats[0], stats[1], stats[2]
    );
}
