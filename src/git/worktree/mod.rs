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

mod check;

pub(crate) use check::check_task_worktree;

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
        let created_branch = set_branch(&repo, branch, base, base_oid, fresh)?;
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
            note = Some(self.move_aside(id, &path)?);
        }

        self.remove_stale_admin(&repo, id)?;
        match self.take_spare(&repo)? {
            Some(spare) => self.take_over_spare(guard, &repo, &spare, id, &path, &refname)?,
            None => self.make_new(guard, id, &path, &refname)?,
        }
        let start_commit = branch_tip(&repo, branch)?.unwrap_or(base_oid);
        Ok(Prepared {
            path,
            start_commit,
            created_branch,
            note,
        })
    }

    /// Move a spare worktree into place as `id`, then switch it to
    /// `refname`: only the files that differ are written.
    fn take_over_spare(
        &self,
        guard: std::sync::MutexGuard<'_, ()>,
        repo: &Repository,
        spare: &Spare,
        id: &str,
        path: &Path,
        refname: &str,
    ) -> Result<()> {
        crate::fsat::rename(&spare.path, path)
            .ctx(|| format!("move spare worktree to {}", path.display()))?;
        let admin = repo.commondir().join("worktrees").join(id);
        crate::fsat::rename_in(
            repo.commondir(),
            &spare.admin,
            &Path::new("worktrees").join(id),
        )
        .ctx(|| "rename spare worktree admin dir".into())?;
        write_links(path, &admin)?;
        drop(guard);
        let wt = Repository::open(path).ctx(|| format!("open worktree {}", path.display()))?;
        switch_spare(&wt, refname)
    }

    /// A new worktree: its admin dir and links under the lock (as `git
    /// worktree add` writes them), then the checkout of every file, the long
    /// part (seconds, in a big repository), outside it: the first wave's
    /// worktrees are made side by side, and a finish or a spare's move never
    /// waits behind one. (libgit2's own add reads every other worktree as it
    /// goes, and fails on one being made beside it.)
    fn make_new(
        &self,
        guard: std::sync::MutexGuard<'_, ()>,
        id: &str,
        path: &Path,
        refname: &str,
    ) -> Result<()> {
        let admin = self.add_admin(id, path, refname)?;
        drop(guard);
        let made = Repository::open(path)
            .ctx(|| format!("open worktree {}", path.display()))
            // No index yet: libgit2 checks out against an empty baseline,
            // every file.
            .and_then(|wt| check_out(&wt, refname));
        if let Err(e) = made {
            let _guard = self.admin.lock().unwrap_or_else(|e| e.into_inner());
            let _ = crate::fsat::remove_all(path);
            let _ = crate::fsat::remove_in(&self.common, &admin);
            return Err(e);
        }
        Ok(())
    }

    /// Move what stands at `path` but is no worktree of this repository
    /// aside, under `.worktrees/.stale`; the note says where.
    fn move_aside(&self, id: &str, path: &Path) -> Result<String> {
        let aside = self.root.join(".stale").join(format!(
            "{id}-{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        ));
        fs::create_dir_all(aside.parent().unwrap_or(&self.root))
            .ctx(|| "create .worktrees/.stale".into())?;
        fs::rename(path, &aside).ctx(|| format!("move stale {} aside", path.display()))?;
        Ok(format!(
            "{} was not a worktree of this repository; moved it to {}",
            path.display(),
            aside.display()
        ))
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

/// Create `branch` at `base` when it does not exist (`true`), or with
/// `fresh` move it back to `base`.
fn set_branch(
    repo: &Repository,
    branch: &str,
    base: &str,
    base_oid: git2::Oid,
    fresh: bool,
) -> Result<bool> {
    match branch_tip(repo, branch)? {
        None => {
            let base_commit = repo.find_commit(base_oid).ctx(|| format!("read {base}"))?;
            repo.branch(branch, &base_commit, false)
                .ctx(|| format!("create branch {branch}"))?;
            Ok(true)
        }
        Some(_) if fresh => {
            repo.reference(
                &format!("refs/heads/{branch}"),
                base_oid,
                true,
                &format!("flocks: start {branch} over from {base}"),
            )
            .ctx(|| format!("reset branch {branch}"))?;
            Ok(false)
        }
        Some(_) => Ok(false),
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
    check_out(wt, refname)?;
    wt.set_head(refname)
        .ctx(|| format!("set HEAD to {refname}"))?;
    Ok(())
}

/// The files of `refname`'s commit in the worktree `wt`, written where they
/// differ from its index (HEAD is left as it is).
fn check_out(wt: &Repository, refname: &str) -> Result<()> {
    let target = wt
        .find_reference(refname)
        .and_then(|r| r.peel_to_commit())
        .ctx(|| format!("read {refname}"))?;
    let mut co = CheckoutBuilder::new();
    co.force();
    let place = wt.workdir().unwrap_or(wt.path()).display().to_string();
    wt.checkout_tree(target.as_object(), Some(&mut co))
        .ctx(|| format!("check out {refname} in {place}"))
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

#[cfg(test)]
mod tests;
