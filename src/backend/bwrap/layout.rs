//! Where sandboxed tasks live on the host, and the read-only base they share.
//!
//! ```text
//!  $XDG_STATE_HOME/flocks/<project key>/sandbox/     (~/.local/state/flocks/...; 0700)
//!    base.git/            a bare mirror of the base branch, made by flocks
//!                         (git fetch of the base's tip into it; libgit2's
//!                         pack builder where that fails); read-only in every
//!                         sandbox
//!    tasks/<task>/home/   the task's home, kept across its attempts
//!    tasks/<task>/work/   the helper's root: mirror.git (objects beyond the
//!                         base; `base.git` as its alternate), worktrees/<task>
//! ```
//!
//! Outside the checkout and outside `.flocks/`: flocks walks `.flocks/`
//! (disk use, `clean --logs`) and opens files there, and none of that should
//! meet a tree an agent wrote. flocks itself only ever creates `tasks/<task>/`
//! and its two directories (an agent cannot replace them: their parent is
//! not in its view), and removes a task's directory with `remove_dir_all`,
//! which never follows a link. It never reads what an agent wrote there.

use std::path::{Path, PathBuf};

use git2::{Oid, Repository};

use crate::config::Config;

/// The sandbox directories of one project.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// `.../flocks/<project key>/sandbox`.
    pub root: PathBuf,
}

/// Why the sandbox directories cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LayoutError {
    #[error(
        "neither XDG_STATE_HOME nor HOME is set: sandboxed tasks keep their homes and repositories there; set one"
    )]
    NoStateHome,
    #[error(
        "the sandboxes would live at {}, inside the repository: set XDG_STATE_HOME to a directory outside it",
        .0.display()
    )]
    InsideRepo(PathBuf),
    #[error("cannot create {}: {source}", .path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("task id `{0}` cannot name a directory")]
    BadTask(String),
    #[error("the base mirror {}: {why}", .path.display())]
    Base { path: PathBuf, why: String },
}

/// Paths inside every sandbox.
pub(crate) const INNER_ROOT: &str = "/var/tmp/flocks";
/// The helper's root inside (the task's `work/`).
pub(crate) const INNER_WORK: &str = "/var/tmp/flocks/work";
/// The shared base inside (read-only).
pub(crate) const INNER_BASE: &str = "/var/tmp/flocks/base.git";
/// The ref in a task's mirror that names the base's tip, so that the helper
/// counts it among what it has (`have`) and bundles leave its history out.
pub(crate) const BASE_REF: &str = "refs/flocks/start/@base";

impl Layout {
    pub(crate) fn for_config(config: &Config) -> Result<Layout, LayoutError> {
        let home = crate::trust::state_home().ok_or(LayoutError::NoStateHome)?;
        let root = home
            .join("flocks")
            .join(crate::paths::key_of(&config.state_dir()))
            .join("sandbox");
        let repo = crate::paths::normalize(&config.workspace.repo);
        if crate::paths::normalize(&root).starts_with(&repo) {
            return Err(LayoutError::InsideRepo(root));
        }
        Ok(Layout { root })
    }

    pub(crate) fn base(&self) -> PathBuf {
        self.root.join("base.git")
    }

    pub(crate) fn task_dir(&self, task: &str) -> PathBuf {
        self.root.join("tasks").join(task)
    }

    pub(crate) fn home(&self, task: &str) -> PathBuf {
        self.task_dir(task).join("home")
    }

    pub(crate) fn work(&self, task: &str) -> PathBuf {
        self.task_dir(task).join("work")
    }

    /// The task's worktree as the host sees it (for people: flocks never
    /// opens it).
    pub(crate) fn host_worktree(&self, task: &str) -> PathBuf {
        self.work(task).join("worktrees").join(task)
    }

    /// Make the task's `home/` and `work/` (mode 0700) if missing.
    pub(crate) fn ensure_task(&self, task: &str) -> Result<(), LayoutError> {
        check_task(task)?;
        for d in [self.home(task), self.work(task)] {
            make_dir(&d)?;
        }
        Ok(())
    }

    /// Remove a task's directories (an agent wrote them: never follows a
    /// link). True when there was something to remove.
    pub(crate) fn remove_task(&self, task: &str) -> Result<bool, LayoutError> {
        check_task(task)?;
        let d = self.task_dir(task);
        match std::fs::symlink_metadata(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            _ => std::fs::remove_dir_all(&d)
                .map(|()| true)
                .map_err(|source| LayoutError::Create { path: d, source }),
        }
    }

    /// Bring `base.git` up to `tip` of the host repository, with
    /// `refs/heads/base` at `tip`: only the base's history goes in, never
    /// another task's branch. The system git fetches what it lacks (`tip`
    /// by its id; base.git is flocks' own, never an agent's); where that git
    /// cannot, libgit2's pack builder writes the pack in process.
    pub(crate) fn refresh_base(&self, repo_dir: &Path, tip: Oid) -> Result<(), LayoutError> {
        let path = self.base();
        let fail = |why: String| LayoutError::Base {
            path: path.clone(),
            why,
        };
        make_dir(&self.root)?;
        let base = match Repository::open_bare(&path) {
            Ok(r) => r,
            Err(_) => Repository::init_bare(&path).map_err(|e| fail(e.message().to_string()))?,
        };
        let odb = base.odb().map_err(|e| fail(e.message().to_string()))?;
        if !odb.exists(tip) && fetch(&path, repo_dir, tip).is_err() {
            pack_in_process(&base, repo_dir, tip).map_err(|e| fail(e.message().to_string()))?;
        }
        base.reference("refs/heads/base", tip, true, "flocks: the sandboxes' base")
            .map_err(|e| fail(e.message().to_string()))?;
        Ok(())
    }
}

/// The objects of `tip` that `base` lacks (beyond its `refs/heads/base`),
/// written by libgit2's pack builder into its object store.
fn pack_in_process(base: &Repository, repo_dir: &Path, tip: Oid) -> Result<(), git2::Error> {
    let host = Repository::open(repo_dir)?;
    let mut walk = host.revwalk()?;
    walk.push(tip)?;
    if let Ok(old) = base.refname_to_id("refs/heads/base")
        && host.find_commit(old).is_ok()
    {
        walk.hide(old)?;
    }
    let mut pb = host.packbuilder()?;
    pb.insert_walk(&mut walk)?;
    let odb = base.odb()?;
    let mut w = odb.packwriter()?;
    let mut failed = None;
    pb.foreach(|chunk| match std::io::Write::write_all(&mut w, chunk) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    })?;
    if let Some(e) = failed {
        return Err(git2::Error::from_str(&e.to_string()));
    }
    w.commit()?;
    Ok(())
}

/// `git fetch` of `tip` from `repo_dir` into the bare `base`, with no
/// configuration but the repositories' own and no `GIT_*` of flocks'
/// environment.
fn fetch(base: &Path, repo_dir: &Path, tip: Oid) -> Result<(), String> {
    let mut c = std::process::Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            c.env_remove(k);
        }
    }
    let out = c
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .arg("--git-dir")
        .arg(base)
        .args([
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
        ])
        .arg(repo_dir)
        .arg(format!("+{tip}:refs/heads/base"))
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A task id from state or the task file, checked again before it becomes
/// a path (ids are `[A-Za-z0-9._@-]`, never `.` or `..`).
fn check_task(task: &str) -> Result<(), LayoutError> {
    let ok = !task.is_empty()
        && task != "."
        && task != ".."
        && task
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(LayoutError::BadTask(task.to_string()))
    }
}

/// `mkdir -p` with 0700 for what it creates.
fn make_dir(d: &Path) -> Result<(), LayoutError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
        .map_err(|source| LayoutError::Create {
            path: d.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_holds_the_base_branch_only_and_grows_by_what_is_new() {
        let tmp = tempfile::tempdir().unwrap();
        let repo_dir = tmp.path().join("repo");
        std::fs::create_dir(&repo_dir).unwrap();
        crate::git::testing::init_repo(&repo_dir);
        let host = Repository::open(&repo_dir).unwrap();
        let first = host.head().unwrap().target().unwrap();
        // A task's branch with a commit of its own: not for the base.
        let sig = git2::Signature::now("A", "a@example.com").unwrap();
        let tree = host.find_commit(first).unwrap().tree().unwrap();
        let parent = host.find_commit(first).unwrap();
        let other_tip = host
            .commit(
                Some("refs/heads/flocks/t"),
                &sig,
                &sig,
                "task work",
                &tree,
                &[&parent],
            )
            .unwrap();
        let layout = Layout {
            root: tmp.path().join("state/sandbox"),
        };
        layout.refresh_base(&repo_dir, first).unwrap();
        let base = Repository::open_bare(layout.base()).unwrap();
        assert_eq!(base.refname_to_id("refs/heads/base").unwrap(), first);
        assert!(base.find_commit(first).is_ok());
        assert!(
            base.find_commit(other_tip).is_err(),
            "only the base's history"
        );
        // The base moves on: only what is new goes in.
        let second = host
            .commit(Some("HEAD"), &sig, &sig, "next", &tree, &[&parent])
            .unwrap();
        layout.refresh_base(&repo_dir, second).unwrap();
        assert_eq!(base.refname_to_id("refs/heads/base").unwrap(), second);
        assert!(base.find_commit(second).is_ok());
        // Up to date: nothing to do.
        layout.refresh_base(&repo_dir, second).unwrap();
        // Where the system git cannot fetch, libgit2 writes the pack.
        let other = Repository::init_bare(tmp.path().join("other.git")).unwrap();
        pack_in_process(&other, &repo_dir, second).unwrap();
        assert!(other.find_commit(second).is_ok() && other.find_commit(first).is_ok());
        assert!(other.find_commit(other_tip).is_err());
    }

    #[test]
    fn task_dirs_are_made_and_removed_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout {
            root: tmp.path().join("sandbox"),
        };
        layout.ensure_task("t1").unwrap();
        assert!(layout.home("t1").is_dir() && layout.work("t1").is_dir());
        // What an agent may leave in its home: a link to a host directory.
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, layout.home("t1").join("link")).unwrap();
        assert!(layout.remove_task("t1").unwrap());
        assert!(!layout.task_dir("t1").exists());
        assert_eq!(std::fs::read_to_string(outside.join("keep")).unwrap(), "x");
        assert!(!layout.remove_task("t1").unwrap());
        for bad in ["..", "a/b", "", "."] {
            assert!(layout.ensure_task(bad).is_err(), "{bad}");
        }
    }
}
