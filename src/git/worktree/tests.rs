//! Worktrees made, reused, recycled and switched, on real repositories.

use super::*;
use crate::git::testing::init_repo;

#[test]
fn relative_paths() {
    assert_eq!(
        relative_path(
            Path::new("/r/.worktrees/a"),
            Path::new("/r/.git/worktrees/a")
        ),
        PathBuf::from("../../.git/worktrees/a")
    );
}

#[test]
fn prepare_reuse_recycle() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    fs::create_dir(&repo_dir).unwrap();
    init_repo(&repo_dir);
    let wts = Worktrees::new(&repo_dir, &repo_dir.join(".worktrees")).unwrap();

    let p = wts.prepare("a", "flocks/a", "main", false).unwrap();
    assert!(p.created_branch);
    assert!(p.path.join("README.md").exists());
    let link = fs::read_to_string(p.path.join(".git")).unwrap();
    assert_eq!(link.trim(), "gitdir: ../../.git/worktrees/a");
    let common = fs::read_to_string(repo_dir.join(".git/worktrees/a/commondir")).unwrap();
    assert_eq!(common.trim(), "../..");

    // A commit in the worktree lands on the branch.
    fs::write(p.path.join("a.txt"), "a").unwrap();
    crate::git::commit_leftovers(&p.path, "a").unwrap().unwrap();
    let again = wts.prepare("a", "flocks/a", "main", false).unwrap();
    assert!(!again.created_branch);
    assert_ne!(again.start_commit, p.start_commit);

    // Recycled into a spare, then reused for another task on a new branch.
    wts.recycle("a").unwrap();
    assert!(!p.path.exists());
    let b = wts.prepare("b", "flocks/b", "main", false).unwrap();
    assert!(
        !b.path.join("a.txt").exists(),
        "the spare must be switched to b's branch"
    );
    assert!(b.path.join("README.md").exists());
    let wt = Repository::open(&b.path).unwrap();
    assert_eq!(wt.head().unwrap().name().unwrap(), "refs/heads/flocks/b");
    // git itself agrees.
    let out = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&b.path)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    // a's branch still has its commit and can be checked out again.
    let a2 = wts.prepare("a", "flocks/a", "main", false).unwrap();
    assert!(a2.path.join("a.txt").exists());
}

/// New worktrees are made side by side (their checkouts outside the
/// lock), and a spare switched to another branch writes what differs:
/// files added, changed and removed, in subdirectories too, and its
/// reflog starts afresh.
#[test]
fn new_worktrees_side_by_side_and_spares_switch_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    fs::create_dir(&repo_dir).unwrap();
    init_repo(&repo_dir);
    let wts = std::sync::Arc::new(Worktrees::new(&repo_dir, &repo_dir.join(".worktrees")).unwrap());
    let made: Vec<_> = (0..6)
        .map(|i| {
            let wts = wts.clone();
            std::thread::spawn(move || {
                wts.prepare(&format!("t{i}"), &format!("flocks/t{i}"), "main", false)
            })
        })
        .collect();
    for (i, h) in made.into_iter().enumerate() {
        let p = h.join().unwrap().unwrap_or_else(|e| panic!("t{i}: {e}"));
        assert!(p.path.join("README.md").exists());
    }
    // t0's branch: a file in a subdirectory, README changed.
    let t0 = wts.path_for("t0");
    fs::create_dir_all(t0.join("sub/deep")).unwrap();
    fs::write(t0.join("sub/deep/x.txt"), "x").unwrap();
    fs::write(t0.join("README.md"), "changed\n").unwrap();
    crate::git::commit_leftovers(&t0, "t0").unwrap().unwrap();
    assert!(fs::metadata(repo_dir.join(".git/worktrees/t0/logs/HEAD")).is_ok());
    wts.recycle("t0").unwrap();
    // t0's spare becomes u's worktree, on main: t0's work is gone.
    let u = wts.prepare("u", "flocks/u", "main", false).unwrap();
    assert!(!u.path.join("sub").exists() || !u.path.join("sub/deep/x.txt").exists());
    assert_ne!(
        fs::read_to_string(u.path.join("README.md")).unwrap(),
        "changed\n"
    );
    let reflog =
        fs::read_to_string(repo_dir.join(".git/worktrees/u/logs/HEAD")).unwrap_or_default();
    assert_eq!(
        reflog.lines().count(),
        reflog.lines().filter(|l| l.contains("flocks/u")).count(),
        "{reflog}"
    );
    let out = std::process::Command::new("git")
        .args(["status", "--porcelain"])
        .current_dir(&u.path)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).trim().is_empty());
    // And back: u's spare switched to t0's branch has t0's work.
    wts.recycle("u").unwrap();
    let again = wts.prepare("t0", "flocks/t0", "main", false).unwrap();
    assert_eq!(
        fs::read_to_string(again.path.join("sub/deep/x.txt")).unwrap(),
        "x"
    );
    assert_eq!(
        fs::read_to_string(again.path.join("README.md")).unwrap(),
        "changed\n"
    );
    // A branch held by another worktree is still refused.
    let e = wts.prepare("v", "flocks/t1", "main", false).unwrap_err();
    assert!(e.to_string().contains("is checked out at"), "{e}");
}

#[test]
fn the_spare_pool_is_capped_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    fs::create_dir(&repo_dir).unwrap();
    init_repo(&repo_dir);
    let wts = Worktrees::new(&repo_dir, &repo_dir.join(".worktrees"))
        .unwrap()
        .with_max_spares(Some(2));
    let pause = || std::thread::sleep(std::time::Duration::from_millis(20));
    for id in ["a", "b", "c", "x"] {
        let p = wts
            .prepare(id, &format!("flocks/{id}"), "main", false)
            .unwrap();
        fs::write(p.path.join("mark"), id).unwrap();
    }
    for id in ["a", "b", "c"] {
        wts.recycle(id).unwrap();
        pause();
    }
    let marks = |wts: &Worktrees| -> Vec<(u64, String)> {
        wts.spares()
            .iter()
            .map(|(n, p)| (*n, fs::read_to_string(p.join("mark")).unwrap()))
            .collect()
    };
    // a's spare, the oldest, went; b's and c's stay, with their admin dirs.
    assert_eq!(marks(&wts), [(1, "b".to_string()), (2, "c".to_string())]);
    let admins = fs::read_dir(repo_dir.join(".git/worktrees"))
        .unwrap()
        .count();
    assert_eq!(admins, 3, "b's, c's and x's");
    // Reuse takes the lowest number, and the pool still works.
    let d = wts.prepare("d", "flocks/d", "main", false).unwrap();
    assert_eq!(fs::read_to_string(d.path.join("mark")).unwrap(), "b");
    // Age is arrival in the pool, not the number: d comes back as spare
    // 0, x as spare 1; c (spare 2) is now the oldest, and goes.
    fs::write(d.path.join("mark"), "d").unwrap();
    wts.recycle("d").unwrap();
    pause();
    wts.recycle("x").unwrap();
    assert_eq!(marks(&wts), [(0, "d".to_string()), (1, "x".to_string())]);
    // With 0, a recycled worktree is removed, not kept.
    let d = wts.prepare("d", "flocks/d", "main", false).unwrap();
    let none = Worktrees::new(&repo_dir, &repo_dir.join(".worktrees"))
        .unwrap()
        .with_max_spares(Some(0));
    none.recycle("d").unwrap();
    assert!(!d.path.exists());
    assert_eq!(none.spares().len(), 1);
    assert!(!repo_dir.join(".git/worktrees/d").exists());
}
