//! Task worktrees under `.worktrees/`: created, reused across attempts, and
//! recycled through a pool of spare worktrees so that a new task only writes
//! the files that differ from the last one.
//!
//! Worktree links are written relative (`gitdir: ../../.git/worktrees/<id>`),
//! so that the same worktree works where the repo is mounted at another path
//! (a devcontainer). The admin dir's back link stays absolute, as git writes it.

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use git2::{Oid, Repository, build::CheckoutBuilder};

use super::{branch_tip, resolve_commit};
use crate::error::{Context, Error, Result};

/// The spare worktrees' directory under `.worktrees/`.
pub(crate) const SPARE_DIR: &str = ".spare";
/// In a worktree's admin dir: the hash of the `[workspace] setup` that
/// completed there (it moves with the worktree into and out of the pool).
const SETUP_MARK: &str = "flocks-setup";
const SPARE_PREFIX: &str = "flocks-spare-";

/// A task's worktree, ready for an attempt.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub path: PathBuf,
    /// The branch tip as the attempt starts.
    pub start_commit: Oid,
    /// flocks created the branch just now.
    pub created_branch: bool,
    /// Something the user should know (a stale directory moved aside).
    pub note: Option<String>,
}

/// The worktrees of one repository. Operations that change refs or worktree
/// admin files are serialized; checkouts of different worktrees are not.
pub(crate) struct Worktrees {
    repo_dir: PathBuf,
    /// The repository's common git dir (where `worktrees/<id>` live).
    common: PathBuf,
    root: PathBuf,
    admin: Mutex<()>,
    /// `[workspace] max_spare_worktrees`: spares kept at most (None: no cap).
    max_spares: Option<usize>,
}

impl Worktrees {
    pub(crate) fn new(repo_dir: &Path, root: &Path) -> Result<Worktrees> {
        let repo_dir = repo_dir
            .canonicalize()
            .ctx(|| format!("resolve {}", repo_dir.display()))?;
        fs::create_dir_all(root).ctx(|| format!("create {}", root.display()))?;
        let root = root
            .canonicalize()
            .ctx(|| format!("resolve {}", root.display()))?;
        let common = Repository::open(&repo_dir)
            .ctx(|| format!("open {}", repo_dir.display()))?
            .commondir()
            .to_path_buf();
        Ok(Worktrees {
            repo_dir,
            common,
            root,
            admin: Mutex::new(()),
            max_spares: None,
        })
    }

    /// The worktrees under `root`, named and not made: for commands that
    /// ask a pool outside a run (`up`, `down`, `hosts check`, `shell`) and
    /// create no worktree.
    pub(crate) fn named(repo_dir: &Path, root: &Path) -> Worktrees {
        let common = Repository::open(repo_dir)
            .map(|r| r.commondir().to_path_buf())
            .unwrap_or_else(|_| repo_dir.join(".git"));
        Worktrees {
            repo_dir: repo_dir.to_path_buf(),
            common,
            root: root.to_path_buf(),
            admin: Mutex::new(()),
            max_spares: None,
        }
    }

    /// Keep at most `max` spare worktrees: a recycled worktree beyond it
    /// pushes out the oldest spare (with 0, it is removed instead).
    pub(crate) fn with_max_spares(mut self, max: Option<usize>) -> Worktrees {
        self.max_spares = max;
        self
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path_for(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn repo(&self) -> Result<Repository> {
        Repository::open(&self.repo_dir).ctx(|| format!("open {}", self.repo_dir.display()))
    }

    /// Make `.worktrees/<id>` a worktree with `branch` checked out, creating the
    /// branch at `base` when it does not exist. `fresh` first moves the branch
    /// back to `base` (the caller checked that this loses nothing unlanded).
    pub(crate) fn prepare(
        &self,
        id: &str,
        branch: &str,
        base: &str,
        fresh: bool,
    ) -> Result<Prepared> {
        let guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let repo = self.repo()?;
        let refname = format!("refs/heads/{branch}");
        let path = self.path_for(id);
        let mut note = None;

        let base_oid = resolve_commit(&repo, base)?;
        let mut created_branch = false;
        match branch_tip(&repo, branch)? {
            None => {
                let base_commit = repo.find_commit(base_oid).ctx(|| format!("read {base}"))?;
                repo.branch(branch, &base_commit, false)
                    .ctx(|| format!("create branch {branch}"))?;
                created_branch = true;
            }
            Some(_) if fresh => {
                repo.reference(
                    &refname,
                    base_oid,
                    true,
                    &format!("flocks: start {branch} over from {base}"),
                )
                .ctx(|| format!("reset branch {branch}"))?;
            }
            Some(_) => {}
        }
        self.check_not_checked_out_elsewhere(&repo, &refname, &path)?;

        // Reuse the task's own worktree when it is one.
        if path.exists() {
            if self.is_our_worktree(&repo, &path) {
                drop(guard);
                let wt =
                    Repository::open(&path).ctx(|| format!("open worktree {}", path.display()))?;
                let on_branch = wt
                    .head()
                    .ok()
                    .and_then(|h| h.name().ok().map(str::to_string))
                    == Some(refname.clone());
                // No index: its first checkout never completed (flocks was
                // stopped in it): check it out whole.
                let unfinished = !wt.path().join("index").exists();
                if !on_branch || fresh || unfinished {
                    switch_to(&wt, &refname)?;
                }
                let start_commit = branch_tip(&repo, branch)?.unwrap_or(base_oid);
                return Ok(Prepared {
                    path,
                    start_commit,
                    created_branch,
                    note,
                });
            }
            let aside = self.root.join(".stale").join(format!(
                "{id}-{}",
                chrono::Utc::now().format("%Y%m%d%H%M%S")
            ));
            fs::create_dir_all(aside.parent().unwrap_or(&self.root))
                .ctx(|| "create .worktrees/.stale".into())?;
            fs::rename(&path, &aside).ctx(|| format!("move stale {} aside", path.display()))?;
            note = Some(format!(
                "{} was not a worktree of this repository; moved it to {}",
                path.display(),
                aside.display()
            ));
        }

        self.remove_stale_admin(&repo, id)?;
        if let Some(spare) = self.take_spare(&repo)? {
            // Move a spare worktree into place, then switch it to the branch:
            // only the files that differ are written.
            crate::fsat::rename(&spare.path, &path)
                .ctx(|| format!("move spare worktree to {}", path.display()))?;
            let admin = repo.commondir().join("worktrees").join(id);
            crate::fsat::rename_in(
                repo.commondir(),
                &spare.admin,
                &Path::new("worktrees").join(id),
            )
            .ctx(|| "rename spare worktree admin dir".into())?;
            write_links(&path, &admin)?;
            drop(guard);
            let wt = Repository::open(&path).ctx(|| format!("open worktree {}", path.display()))?;
            switch_spare(&wt, &refname)?;
        } else {
            // A new worktree: its admin dir and links under the lock (as
            // `git worktree add` writes them), then the checkout of every
            // file, the long part (seconds, in a big repository), outside
            // it: the first wave's worktrees are made side by side, and a
            // finish or a spare's move never waits behind one. (libgit2's
            // own add reads every other worktree as it goes, and fails on
            // one being made beside it.)
            let admin = self.add_admin(id, &path, &refname)?;
            drop(guard);
            let made = Repository::open(&path)
                .ctx(|| format!("open worktree {}", path.display()))
                .and_then(|wt| {
                    let target = wt
                        .find_reference(&refname)
                        .and_then(|r| r.peel_to_commit())
                        .ctx(|| format!("read {refname}"))?;
                    // No index yet: libgit2 checks out against an empty
                    // baseline, every file.
                    let mut co = CheckoutBuilder::new();
                    co.force();
                    wt.checkout_tree(target.as_object(), Some(&mut co))
                        .ctx(|| format!("check out {refname} in {}", path.display()))
                });
            if let Err(e) = made {
                let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
                let _ = crate::fsat::remove_all(&path);
                let _ = crate::fsat::remove_in(&self.common, &admin);
                return Err(e);
            }
        }
        let start_commit = branch_tip(&repo, branch)?.unwrap_or(base_oid);
        Ok(Prepared {
            path,
            start_commit,
            created_branch,
            note,
        })
    }

    /// Make `path` a new linked worktree named `id` with HEAD on `refname`,
    /// nothing checked out yet: its admin dir (`HEAD`, then the links).
    /// The admin dir, below the common dir.
    fn add_admin(&self, id: &str, path: &Path, refname: &str) -> Result<PathBuf> {
        let rel = Path::new("worktrees").join(id);
        let admin = self.common.join(&rel);
        fs::create_dir_all(self.common.join("worktrees"))
            .ctx(|| format!("create {}/worktrees", self.common.display()))?;
        fs::create_dir(&admin).ctx(|| format!("create {}", admin.display()))?;
        let linked = fs::create_dir(path)
            .ctx(|| format!("create {}", path.display()))
            .and_then(|()| {
                fs::write(admin.join("HEAD"), format!("ref: {refname}\n"))
                    .ctx(|| format!("write {}/HEAD", admin.display()))
            })
            .and_then(|()| write_links(path, &admin));
        if let Err(e) = linked {
            let _ = crate::fsat::remove_all(path);
            let _ = crate::fsat::remove_in(&self.common, &rel);
            return Err(e);
        }
        Ok(rel)
    }

    /// The `[workspace] setup` (its hash) that last completed in task `id`'s
    /// worktree. Read without following links or blocking: agents in
    /// containers can write the admin dir.
    pub(crate) fn setup_mark(&self, id: &str) -> Option<String> {
        let rel = Path::new("worktrees").join(id);
        super::include::read_small(&self.common, &rel, SETUP_MARK)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Record that the setup `hash` completed in task `id`'s worktree.
    pub(crate) fn mark_setup(&self, id: &str, hash: &str) -> std::io::Result<()> {
        let rel = Path::new("worktrees").join(id);
        super::include::write_small(&self.common, &rel, SETUP_MARK, &format!("{hash}\n"))
    }

    /// Put a finished task's worktree in the spare pool. Its work must already
    /// be committed on its branch; ignored files (build caches) stay.
    pub(crate) fn recycle(&self, id: &str) -> Result<()> {
        let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let repo = self.repo()?;
        let path = self.path_for(id);
        if !self.is_our_worktree(&repo, &path) {
            return Ok(());
        }
        let wt = Repository::open(&path).ctx(|| format!("open worktree {}", path.display()))?;
        let head = wt
            .head()
            .and_then(|h| h.peel_to_commit())
            .ctx(|| "read worktree HEAD".into())?;
        wt.set_head_detached(head.id())
            .ctx(|| "detach worktree HEAD".into())?;
        let common = repo.commondir().to_path_buf();
        let Some(admin) = own_admin(&common, &path) else {
            return Ok(());
        };
        if self.max_spares == Some(0) {
            crate::fsat::remove_all(&path).ctx(|| format!("remove {}", path.display()))?;
            let _ = crate::fsat::remove_in(&common, &admin);
            return Ok(());
        }
        let spare_root = self.root.join(SPARE_DIR);
        fs::create_dir_all(&spare_root).ctx(|| format!("create {}", spare_root.display()))?;
        let mut n = 0;
        let (spare_path, spare_admin) = loop {
            let p = spare_root.join(n.to_string());
            let a = Path::new("worktrees").join(format!("{SPARE_PREFIX}{n}"));
            if fs::symlink_metadata(&p).is_err() && fs::symlink_metadata(common.join(&a)).is_err() {
                break (p, a);
            }
            n += 1;
        };
        crate::fsat::rename(&path, &spare_path).ctx(|| "move worktree to the spare pool".into())?;
        crate::fsat::rename_in(&common, &admin, &spare_admin)
            .ctx(|| "rename worktree admin dir".into())?;
        // The next task starts with a reflog of its own: what this one's
        // worktree reached is not the next one's work (`git::provenance`),
        // and the file does not grow with every task the spare serves.
        let _ = crate::fsat::remove_in(&common, &spare_admin.join("logs/HEAD"));
        write_links(&spare_path, &common.join(&spare_admin))?;
        // Its time of arrival in the pool, which nothing changes while it
        // waits there: the cap removes the oldest first.
        if let Ok((dir, _)) = crate::fsat::dir(&spare_path, false) {
            let _ = fs::File::from(dir).set_modified(std::time::SystemTime::now());
        }
        if let Some(max) = self.max_spares {
            let mut spares: Vec<(std::time::SystemTime, u64, PathBuf)> = self
                .spares()
                .into_iter()
                .map(|(n, p)| {
                    let at = fs::metadata(&p)
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (at, n, p)
                })
                .collect();
            spares.sort();
            for (_, _, old) in spares.iter().take(spares.len().saturating_sub(max)) {
                if let Some(a) = own_admin(&common, old) {
                    let _ = crate::fsat::remove_in(&common, &a);
                }
                crate::fsat::remove_all(old).ctx(|| format!("remove {}", old.display()))?;
            }
        }
        Ok(())
    }

    /// The spare worktrees' directories, by their number.
    fn spares(&self) -> Vec<(u64, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.root.join(SPARE_DIR)) else {
            return Vec::new();
        };
        let mut spares: Vec<(u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_str()?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        spares.sort();
        spares
    }

    /// Remove a task's worktree (its branch stays).
    pub(crate) fn remove(&self, id: &str) -> Result<bool> {
        let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.path_for(id);
        if !path.exists() {
            return Ok(false);
        }
        let common = self.repo()?.commondir().to_path_buf();
        let admin = own_admin(&common, &path);
        crate::fsat::remove_all(&path).ctx(|| format!("remove {}", path.display()))?;
        if let Some(a) = admin {
            let _ = crate::fsat::remove_in(&common, &a);
        }
        Ok(true)
    }

    /// Remove every spare worktree.
    pub(crate) fn remove_spares(&self) -> Result<usize> {
        let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let spare_root = self.root.join(SPARE_DIR);
        let Ok(entries) = fs::read_dir(&spare_root) else {
            return Ok(0);
        };
        let common = self.repo()?.commondir().to_path_buf();
        let mut n = 0;
        for e in entries.flatten() {
            if let Some(a) = own_admin(&common, &e.path()) {
                let _ = crate::fsat::remove_in(&common, &a);
            }
            crate::fsat::remove_all(&e.path()).ctx(|| format!("remove {}", e.path().display()))?;
            n += 1;
        }
        let _ = fs::remove_dir(&spare_root);
        Ok(n)
    }

    fn is_our_worktree(&self, repo: &Repository, path: &Path) -> bool {
        if !path.join(".git").is_file() {
            return false;
        }
        match Repository::open(path) {
            Ok(wt) => {
                same_dir(wt.commondir(), repo.commondir())
                    && same_dir(wt.workdir().unwrap_or(Path::new("")), path)
            }
            Err(_) => false,
        }
    }

    /// An admin dir `.git/worktrees/<id>` whose worktree is gone blocks a new one.
    fn remove_stale_admin(&self, repo: &Repository, id: &str) -> Result<()> {
        let admin = repo.commondir().join("worktrees").join(id);
        if admin.exists() {
            let target = fs::read_to_string(admin.join("gitdir")).unwrap_or_default();
            let wt_git = PathBuf::from(target.trim());
            if !wt_git.exists()
                || !same_dir(wt_git.parent().unwrap_or(Path::new("")), &self.path_for(id))
            {
                crate::fsat::remove_in(repo.commondir(), &Path::new("worktrees").join(id))
                    .ctx(|| format!("remove stale {}", admin.display()))?;
            }
        }
        Ok(())
    }

    fn take_spare(&self, repo: &Repository) -> Result<Option<Spare>> {
        for (_, path) in self.spares() {
            if !self.is_our_worktree(repo, &path) {
                continue;
            }
            if let Some(admin) = own_admin(repo.commondir(), &path) {
                return Ok(Some(Spare { path, admin }));
            }
        }
        Ok(None)
    }

    /// A branch can be checked out in one worktree only.
    fn check_not_checked_out_elsewhere(
        &self,
        repo: &Repository,
        refname: &str,
        ours: &Path,
    ) -> Result<()> {
        let mut holders = Vec::new();
        if !repo.is_bare()
            && repo
                .head()
                .ok()
                .and_then(|h| h.name().ok().map(str::to_string))
                .as_deref()
                == Some(refname)
            && let Some(w) = repo.workdir()
        {
            holders.push(w.to_path_buf());
        }
        // Each linked worktree's HEAD, read from its admin dir (as git
        // does), not by opening every worktree as a repository.
        if let Ok(names) = repo.worktrees() {
            for name in names.iter().flatten().flatten() {
                let admin = Path::new("worktrees").join(name);
                let read = |f: &str| super::include::read_small(repo.commondir(), &admin, f);
                let head = read("HEAD");
                if head.as_deref().map(str::trim) != Some(&format!("ref: {refname}")) {
                    continue;
                }
                let Some(p) = read("gitdir")
                    .and_then(|g| PathBuf::from(g.trim()).parent().map(Path::to_path_buf))
                else {
                    continue;
                };
                if same_dir(&p, ours) || !p.exists() {
                    continue;
                }
                holders.push(p);
            }
        }
        match holders.first() {
            None => Ok(()),
            Some(p) => Err(Error::Other(format!(
                "branch {} is checked out at {}: check out another branch there first",
                refname.trim_start_matches("refs/heads/"),
                p.display()
            ))),
        }
    }
}

struct Spare {
    path: PathBuf,
    admin: PathBuf,
}

/// Check out `refname` in a worktree: files first (against the old HEAD, so
/// only what differs is written), then HEAD.
fn switch_to(wt: &Repository, refname: &str) -> Result<()> {
    // A flocks (or agent's git) killed while it held them leaves these
    // behind, and every later attempt would fail on them. Nothing else
    // works in a worktree flocks is preparing: the project lock is held and
    // what an earlier run left running was stopped by then.
    for lock in ["HEAD.lock", "index.lock"] {
        let _ = fs::remove_file(wt.path().join(lock));
    }
    let target = wt
        .find_reference(refname)
        .and_then(|r| r.peel_to_commit())
        .ctx(|| format!("read {refname}"))?;
    let mut co = CheckoutBuilder::new();
    co.force();
    wt.checkout_tree(target.as_object(), Some(&mut co))
        .ctx(|| format!("check out {refname}"))?;
    wt.set_head(refname)
        .ctx(|| format!("set HEAD to {refname}"))?;
    Ok(())
}

/// Check out `refname` in a spare worktree, writing only the paths that
/// differ between its HEAD and the branch: a spare is clean against its
/// HEAD (its task's finish committed what the agent left; ignored files
/// stay), so no other file can differ, and the whole-tree scan of a full
/// checkout is not needed. A spare whose HEAD cannot be read gets the full
/// checkout.
fn switch_spare(wt: &Repository, refname: &str) -> Result<()> {
    let head = wt.head().ok().and_then(|h| h.peel_to_tree().ok());
    let target = wt
        .find_reference(refname)
        .and_then(|r| r.peel_to_tree())
        .ctx(|| format!("read {refname}"))?;
    let Some(head) = head else {
        return switch_to(wt, refname);
    };
    let diff = wt
        .diff_tree_to_tree(Some(&head), Some(&target), None)
        .ctx(|| format!("compare the spare worktree with {refname}"))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path()
                && !paths.iter().any(|q| q == p)
            {
                paths.push(p.to_path_buf());
            }
        }
    }
    for lock in ["HEAD.lock", "index.lock"] {
        let _ = fs::remove_file(wt.path().join(lock));
    }
    if !paths.is_empty() {
        let mut co = CheckoutBuilder::new();
        co.force().disable_pathspec_match(true);
        for p in &paths {
            co.path(p);
        }
        wt.checkout_tree(target.as_object(), Some(&mut co))
            .ctx(|| format!("check out {refname}"))?;
    }
    wt.set_head(refname)
        .ctx(|| format!("set HEAD to {refname}"))?;
    Ok(())
}

/// The admin dir of `worktree`, as a path below the common dir `common`
/// (`worktrees/<name>`), when its `.git` file names one of this repo's: an
/// agent can rewrite that file to name any directory, which flocks must
/// never move or remove.
fn own_admin(common: &Path, worktree: &Path) -> Option<PathBuf> {
    let admin = admin_dir_of(worktree)?;
    let name = admin.file_name()?;
    let rel = Path::new("worktrees").join(name);
    let ours = common.join(&rel);
    let same = crate::paths::normalize(&admin) == crate::paths::normalize(&ours)
        || same_dir(&admin, &ours);
    same.then_some(rel)
}

/// The admin dir a worktree's `.git` file points to.
pub(crate) fn admin_dir_of(worktree: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(worktree.join(".git")).ok()?;
    let target = text.trim().strip_prefix("gitdir:")?.trim();
    let p = Path::new(target);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        lexical_join(worktree, p)
    })
}

/// `<wt>/.git` holds a relative link to the admin dir; the admin dir's
/// `gitdir` holds the absolute path of `<wt>/.git`, and its `commondir` the
/// relative path to the common dir, as git writes it (libgit2 writes it
/// absolute, which breaks git where the repo is mounted elsewhere).
fn write_links(worktree: &Path, admin: &Path) -> Result<()> {
    fs::write(admin.join("commondir"), "../..\n")
        .ctx(|| format!("write {}/commondir", admin.display()))?;
    let rel = relative_path(worktree, admin);
    fs::write(
        worktree.join(".git"),
        format!("gitdir: {}\n", rel.display()),
    )
    .ctx(|| format!("write {}/.git", worktree.display()))?;
    fs::write(
        admin.join("gitdir"),
        format!("{}\n", worktree.join(".git").display()),
    )
    .ctx(|| format!("write {}/gitdir", admin.display()))
}

/// The path from directory `from` to `to`, both absolute.
pub(crate) fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from.components().collect();
    let to_c: Vec<Component> = to.components().collect();
    let common = from.iter().zip(&to_c).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to_c[common..] {
        out.push(c);
    }
    out
}

fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    crate::paths::normalize(&base.join(rel))
}

fn same_dir(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    canon(a) == canon(b)
}

/// A path state.json names as a task's worktree that flocks will not touch.
#[derive(Debug, thiserror::Error)]
#[error(
    "state.json names {} as task {id}'s worktree, but {why}; flocks leaves it alone",
    .path.display()
)]
pub(crate) struct NotTheWorktree {
    pub path: PathBuf,
    pub id: String,
    pub why: NotTheWorktreeBecause,
}

/// Why a path is not the task's worktree.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotTheWorktreeBecause {
    #[error("it is not {}", .0.display())]
    NotExpected(PathBuf),
    #[error("it is not a directory (a link?)")]
    NotADirectory,
    #[error("it cannot be read ({0})")]
    Unreadable(std::io::Error),
    #[error("it cannot be resolved")]
    Unresolved,
    #[error("a link leads out of the worktrees directory")]
    LinkOut,
    #[error("it is not a linked worktree of this repository")]
    NotLinked,
}

/// Check that `path`, read from state.json (which agents in a container can
/// write), is task `id`'s worktree of the repo at `repo_dir`: exactly
/// `<root>/<id>`, no link on the way, and a linked worktree of this repo.
/// The path, resolved, or why it is not one to touch.
pub(crate) fn check_task_worktree(
    repo_dir: &Path,
    root: &Path,
    id: &str,
    path: &Path,
) -> std::result::Result<PathBuf, NotTheWorktree> {
    use NotTheWorktreeBecause as Because;
    let refuse = |why: Because| {
        Err(NotTheWorktree {
            path: path.to_path_buf(),
            id: id.to_string(),
            why,
        })
    };
    let expected = root.join(id);
    if crate::paths::normalize(path) != crate::paths::normalize(&expected)
        || Path::new(id).components().count() != 1
        || !matches!(
            Path::new(id).components().next(),
            Some(Component::Normal(_))
        )
    {
        return refuse(Because::NotExpected(expected));
    }
    match fs::symlink_metadata(&expected) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return refuse(Because::NotADirectory),
        Err(e) => return refuse(Because::Unreadable(e)),
    }
    let (Ok(root_c), Ok(wt_c)) = (root.canonicalize(), expected.canonicalize()) else {
        return refuse(Because::Unresolved);
    };
    if wt_c.parent() != Some(root_c.as_path()) {
        return refuse(Because::LinkOut);
    }
    let ours = Repository::open(repo_dir).map(|r| r.commondir().canonicalize());
    let theirs = Repository::open(&wt_c).map(|r| (r.is_worktree(), r.commondir().canonicalize()));
    match (ours, theirs) {
        (Ok(Ok(a)), Ok((true, Ok(b)))) if a == b => Ok(wt_c),
        _ => refuse(Because::NotLinked),
    }
}

#[cfg(test)]
mod tests {
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
        let wts =
            std::sync::Arc::new(Worktrees::new(&repo_dir, &repo_dir.join(".worktrees")).unwrap());
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
}
