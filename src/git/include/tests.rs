//! Tests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::copy::*;
use super::patterns::*;
use super::*;
use crate::git::testing::init_repo;
use std::os::unix::fs::symlink;

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    init_repo(&repo);
    (dir, repo)
}

fn rels(set: &IncludeSet) -> Vec<String> {
    set.files
        .iter()
        .map(|f| f.rel.display().to_string())
        .collect()
}

#[test]
fn selects_ignored_matches_only() {
    let (dir, repo) = setup();
    assert!(collect(&repo, &[]).unwrap().is_none());
    std::fs::write(
        repo.join(".gitignore"),
        ".env\n*.local\nnode_modules/\nconf/private/\n.worktrees/\n",
    )
    .unwrap();
    std::fs::write(
        repo.join(FILE_NAME),
        "# secrets\n.env\n*.local\nREADME.md\nconf/private/\nnode_modules/keep/*.txt\n",
    )
    .unwrap();
    std::fs::write(repo.join(".env"), "A=1\n").unwrap();
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    std::fs::write(repo.join("sub/.env"), "B=2\n").unwrap();
    std::fs::write(repo.join("sub/x.local"), "x").unwrap();
    std::fs::create_dir_all(repo.join("conf/private/deep")).unwrap();
    std::fs::write(repo.join("conf/private/deep/key"), "k").unwrap();
    std::fs::create_dir_all(repo.join("node_modules/pkg")).unwrap();
    std::fs::write(repo.join("node_modules/pkg/.env"), "no").unwrap();
    std::fs::create_dir_all(repo.join("node_modules/keep")).unwrap();
    std::fs::write(repo.join("node_modules/keep/a.txt"), "yes").unwrap();
    std::fs::create_dir_all(repo.join(".worktrees/t")).unwrap();
    std::fs::write(repo.join(".worktrees/t/.env"), "no").unwrap();
    // A link inside the checkout is copied as its file; one out is not.
    std::fs::write(dir.path().join("outside"), "secret").unwrap();
    symlink(dir.path().join("outside"), repo.join("out.local")).unwrap();
    symlink(".env", repo.join("in.local")).unwrap();
    let set = collect(&repo, &[repo.join(".worktrees")]).unwrap().unwrap();
    assert_eq!(
        rels(&set),
        [
            ".env",
            "conf/private/deep/key",
            "in.local",
            "node_modules/keep/a.txt",
            "sub/.env",
            "sub/x.local"
        ],
        "{set:?}"
    );
    assert!(
        set.notes
            .iter()
            .any(|n| n.contains("out.local") && n.contains("out of the repository")),
        "{:?}",
        set.notes
    );
    let link = set
        .files
        .iter()
        .find(|f| f.rel == Path::new("in.local"))
        .unwrap();
    assert_eq!(link.source, repo.canonicalize().unwrap().join(".env"));
}

#[test]
fn copies_with_modes_and_replaces_links() {
    let (dir, repo) = setup();
    std::fs::write(repo.join(".gitignore"), ".env\nconf/\n").unwrap();
    std::fs::write(repo.join(FILE_NAME), ".env\nconf/\n").unwrap();
    std::fs::write(repo.join(".env"), "A=1\n").unwrap();
    std::fs::set_permissions(repo.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir(repo.join("conf")).unwrap();
    std::fs::write(repo.join("conf/run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        repo.join("conf/run.sh"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let set = collect(&repo, &[]).unwrap().unwrap();

    let wt = dir.path().join("wt");
    std::fs::create_dir(&wt).unwrap();
    // The agent planted a link where .env goes: it is replaced, and
    // what it pointed at is untouched.
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "mine").unwrap();
    symlink(&victim, wt.join(".env")).unwrap();
    let done = copy_into(&set, &wt).unwrap();
    assert_eq!(done.written.len(), 2, "{done:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "mine");
    let m = std::fs::symlink_metadata(wt.join(".env")).unwrap();
    assert!(m.is_file());
    assert_eq!(m.permissions().mode() & 0o777, 0o600);
    let m = std::fs::metadata(wt.join("conf/run.sh")).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o750);

    // Again: nothing changed, nothing written.
    let again = copy_into(&set, &wt).unwrap();
    assert!(
        again.written.is_empty() && again.unchanged == 2,
        "{again:?}"
    );
    // Same size, other bytes (the agent edited its copy): written again.
    std::fs::write(wt.join(".env"), "A=2\n").unwrap();
    std::fs::set_permissions(wt.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let refreshed = copy_into(&set, &wt).unwrap();
    assert_eq!(refreshed.written, [PathBuf::from(".env")], "{refreshed:?}");
    assert_eq!(std::fs::read_to_string(wt.join(".env")).unwrap(), "A=1\n");

    // A directory on the way replaced by a link is not entered.
    std::fs::remove_dir_all(wt.join("conf")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, wt.join("conf")).unwrap();
    let blocked = copy_into(&set, &wt).unwrap();
    assert!(!elsewhere.join("run.sh").exists());
    assert!(
        blocked.notes.iter().any(|n| n.contains("conf/run.sh")),
        "{blocked:?}"
    );
}

#[test]
fn files_the_task_branch_tracks_are_left_out() {
    let (_dir, repo) = setup();
    std::fs::write(repo.join(".gitignore"), ".env\n").unwrap();
    std::fs::write(repo.join(FILE_NAME), ".env\n").unwrap();
    std::fs::write(repo.join(".env"), "SECRET=1\n").unwrap();
    let mut set = collect(&repo, &[]).unwrap().unwrap();
    assert_eq!(rels(&set), [".env"]);
    // A branch that force-added .env: its worktree keeps its own.
    let git = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let main = git(&["rev-parse", "HEAD"]);
    git(&["add", "-f", ".env"]);
    git(&["commit", "-q", "-m", "env"]);
    let branch = git(&["rev-parse", "HEAD"]);
    let mut kept = set.clone();
    drop_tracked(&mut kept, &repo, &main).unwrap();
    assert_eq!(rels(&kept), [".env"]);
    drop_tracked(&mut set, &repo, &branch).unwrap();
    assert!(set.files.is_empty());
    assert!(set.notes.iter().any(|n| n.contains("tracks it")), "{set:?}");
}

#[test]
fn a_source_swapped_for_a_link_is_not_read() {
    let (dir, repo) = setup();
    std::fs::write(repo.join(".gitignore"), ".env\n").unwrap();
    std::fs::write(repo.join(FILE_NAME), ".env\n").unwrap();
    std::fs::write(repo.join(".env"), "A=1\n").unwrap();
    let set = collect(&repo, &[]).unwrap().unwrap();
    // Between collect and the copy, something in a container that
    // mounts the repo puts a link to a host file in its place.
    std::fs::write(dir.path().join("host-secret"), "secret").unwrap();
    std::fs::remove_file(repo.join(".env")).unwrap();
    symlink(dir.path().join("host-secret"), repo.join(".env")).unwrap();
    let wt = dir.path().join("wt");
    std::fs::create_dir(&wt).unwrap();
    let e = copy_into(&set, &wt).unwrap_err().to_string();
    assert!(e.contains("cannot read"), "{e}");
    assert!(!wt.join(".env").exists());
}

#[test]
fn bad_pattern_names_the_line() {
    let (_dir, repo) = setup();
    std::fs::write(repo.join(FILE_NAME), ".env\nconf/[z-a]/x\n").unwrap();
    let e = collect(&repo, &[]).unwrap_err().to_string();
    assert!(e.contains(".worktreeinclude:2"), "{e}");
}

#[test]
fn small_files_never_follow_links() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    std::fs::create_dir_all(root.join("a")).unwrap();
    write_small(&root, Path::new("a"), "mark", "x\n").unwrap();
    assert_eq!(
        read_small(&root, Path::new("a"), "mark").as_deref(),
        Some("x\n")
    );
    std::fs::create_dir(dir.path().join("other")).unwrap();
    symlink(dir.path().join("other"), root.join("b")).unwrap();
    assert!(write_small(&root, Path::new("b"), "mark", "x").is_err());
    assert!(!dir.path().join("other/mark").exists());
}
