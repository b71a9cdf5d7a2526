//! Guarding the host: an agent in a container can write the repo's shared
//! `.git`, and git on the host would then run what it planted (a hook, a
//! `core.fsmonitor` or `core.hooksPath` in a config, a filter driver named in
//! `info/attributes`, a gitlink in the index to a nested repository whose
//! config says what to run) or trust what it moved (the land target). So the
//! places git executes from (`config`, `config.worktree`, `hooks/`,
//! `info/attributes`, `worktrees/*/config{,.worktree}`, the submodules' git
//! dirs under `modules/`: their directories, configs, hooks and links), the
//! index's gitlinks (`index.rs`) and every ref outside the tasks' own
//! branches are snapshotted before attempts and compared after each one; a
//! change is undone and fails the attempt.
//!
//! Reading never blocks and never follows a link: entries are `lstat`ed first,
//! only regular files are opened (`O_NONBLOCK | O_NOFOLLOW`) and read up to a
//! cap; a FIFO, socket or device there is itself a violation, and is removed.
//!
//! Attempts overlap, and a change cannot be traced to one agent: the baseline
//! is taken when no attempt on the repo is running, and a change found by any
//! attempt's check fails every attempt that was running when it was found.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::fsat;
use index::IndexSnap;

mod index;
mod refs;

/// Files larger than this in a guarded place are not read: a violation.
const MAX_FILE: u64 = 1 << 20;
/// Deeper directories under `hooks/` are not walked: a violation.
const MAX_DEPTH: usize = 8;

/// The guards of one run (or one `flocks land`): one per repository, shared
/// by every pool of the run and by the validation a judge runs meanwhile,
/// and the task branches flocks itself moves (exempt from the ref guard).
/// Made where the run starts and passed to each backend and validator.
#[derive(Default)]
pub(crate) struct Guards {
    repos: Mutex<HashMap<PathBuf, Arc<Guard>>>,
    exempt: refs::Exempt,
}

/// One guarded repository (its common git dir), shared by every pool.
pub(crate) struct Guard {
    git_dir: PathBuf,
    exempt: refs::Exempt,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    baseline: Option<Snapshot>,
    refs: Option<BTreeMap<String, String>>,
    next: u64,
    /// Running attempts, with the violation found while they ran.
    active: HashMap<u64, Option<String>>,
}

impl Guards {
    /// A run's guards: none yet, no branch exempt.
    pub(crate) fn new() -> Arc<Guards> {
        Arc::new(Guards::default())
    }

    /// The guard of the repository whose common git dir is `git_dir`.
    pub(crate) fn for_repo(&self, git_dir: &Path) -> Arc<Guard> {
        let key = git_dir
            .canonicalize()
            .unwrap_or_else(|_| git_dir.to_path_buf());
        let mut all = self.repos.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Guard {
                    git_dir: key,
                    exempt: self.exempt.clone(),
                    inner: Mutex::new(Inner::default()),
                })
            })
            .clone()
    }

    /// A task's branch: flocks creates and moves it while other attempts
    /// run, and its own agent commits to it, so the ref guard leaves it be.
    /// Called as any backend prepares a task.
    pub(crate) fn exempt_branch(&self, branch: &str) {
        self.exempt.insert(branch);
    }

    /// A task's attempt is over and flocks has put its work on its branch:
    /// from now on the branch is guarded like any other ref, at where flocks
    /// left it (until the task is prepared again).
    pub(crate) fn settle_branch(&self, branch: &str) {
        let name = format!("refs/heads/{branch}");
        let guards: Vec<Arc<Guard>> = self
            .repos
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for g in guards {
            let mut inner = g.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(base) = inner.refs.as_mut() {
                match refs::target_of(&g.git_dir, &name) {
                    Some(to) => base.insert(name.clone(), to),
                    None => base.remove(&name),
                };
            }
        }
        self.exempt.remove(branch);
    }
}

impl Guard {
    /// An attempt starts. Returns its ticket for [`Guard::end`].
    pub(crate) fn begin(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.active.is_empty() {
            let base = Snapshot::take(&self.git_dir);
            base.remove_specials(&self.git_dir);
            inner.baseline = Some(base);
            inner.refs = refs::refs(&self.git_dir).ok();
        }
        inner.next += 1;
        let ticket = inner.next;
        inner.active.insert(ticket, None);
        ticket
    }

    /// An attempt ended: check, restore on change. Returns what was changed
    /// while it ran, if anything.
    pub(crate) fn end(&self, ticket: u64) -> Option<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut changes = Vec::new();
        if let Some(base) = &inner.baseline {
            let now = Snapshot::take(&self.git_dir);
            let found = base.diff(&now);
            if !found.is_empty() {
                let mut what = found.join(", ");
                if let Err(e) = base.restore(&self.git_dir, &now) {
                    what.push_str(&format!(" (restoring failed: {e})"));
                }
                changes.push(what);
            }
        }
        if let Some(base) = &inner.refs {
            let found = refs::restore_refs(&self.git_dir, base, &self.exempt.now());
            if !found.is_empty() {
                changes.push(found.join(", "));
            }
        }
        if !changes.is_empty() {
            let what = changes.join(", ");
            for v in inner.active.values_mut() {
                v.get_or_insert_with(|| what.clone());
            }
        }
        inner.active.remove(&ticket).flatten()
    }
}

/// What the places git executes from hold now, one line per entry (by path
/// relative to the git dir), with the text of the small text files: what
/// `flocks trust` records and compares.
pub(crate) fn fingerprints(git_dir: &Path) -> BTreeMap<String, (String, Option<String>)> {
    use sha2::{Digest, Sha256};
    Snapshot::take(git_dir)
        .entries
        .into_iter()
        // A directory is nothing to run (what is in it is recorded), and
        // flocks itself makes some (`info/`) as a run starts.
        .filter(|(_, e)| !matches!(e, Entry::Dir { .. }))
        .map(|(p, e)| {
            let (print, text) = match e {
                Entry::File { mode, bytes, .. } => {
                    let d = Sha256::digest(&bytes);
                    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                    (
                        format!("file {mode:o} {hex}"),
                        String::from_utf8(bytes).ok(),
                    )
                }
                Entry::Dir { .. } => (String::new(), None),
                Entry::Link { target } => (format!("link {}", target.display()), None),
                Entry::Special { kind } => (format!("special {kind}"), None),
            };
            (format!(".git/{}", p.display()), (print, text))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        bytes: Vec<u8>,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Link {
        target: PathBuf,
    },
    /// Not something git should find there: a FIFO, socket or device, a
    /// file over the size cap, a directory too deep. Always a violation.
    Special {
        kind: String,
    },
}

/// The guarded files, by path relative to `.git`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    entries: BTreeMap<PathBuf, Entry>,
    /// The main checkout's index (its gitlinks).
    index: Option<IndexSnap>,
}

impl Snapshot {
    fn take(git_dir: &Path) -> Snapshot {
        let mut entries = BTreeMap::new();
        for top in ["config", "config.worktree", "hooks", "info"] {
            walk(git_dir, Path::new(top), 0, top != "info", &mut entries);
        }
        if entries
            .get(Path::new("info"))
            .is_some_and(|e| matches!(e, Entry::Dir { .. }))
        {
            walk(
                git_dir,
                Path::new("info/attributes"),
                0,
                false,
                &mut entries,
            );
        }
        // Linked worktrees' own configs (git reads them with
        // extensions.worktreeConfig); the worktree dirs themselves come and
        // go with tasks.
        if let Ok(rd) = std::fs::read_dir(git_dir.join("worktrees")) {
            for e in rd.flatten() {
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let wt = Path::new("worktrees").join(e.file_name());
                for f in ["config", "config.worktree"] {
                    walk(git_dir, &wt.join(f), 0, false, &mut entries);
                }
            }
        }
        // Submodules' git dirs: what git runs from when it enters one.
        modules(git_dir, Path::new("modules"), 0, &mut entries);
        // What git2 reads refs from: only looked at for what would block it.
        for top in ["refs", "packed-refs", "HEAD"] {
            specials(git_dir, Path::new(top), 0, &mut entries);
        }
        Snapshot {
            entries,
            index: IndexSnap::take(git_dir),
        }
    }

    /// Remove what would make reading refs block (FIFOs and the like).
    fn remove_specials(&self, git_dir: &Path) {
        for (p, e) in &self.entries {
            if matches!(e, Entry::Special { .. }) {
                let _ = std::fs::remove_file(git_dir.join(p));
            }
        }
    }

    /// What differs, for people: `.git/hooks/pre-commit added`.
    fn diff(&self, now: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (p, e) in &now.entries {
            match (self.entries.get(p), e) {
                (_, Entry::Special { kind }) => out.push(format!(".git/{} is {kind}", p.display())),
                (None, _) => out.push(format!(".git/{} added", p.display())),
                (Some(old), _) if old != e => out.push(format!(".git/{} changed", p.display())),
                _ => {}
            }
        }
        for p in self.entries.keys() {
            if !now.entries.contains_key(p) {
                out.push(format!(".git/{} removed", p.display()));
            }
        }
        out.extend(IndexSnap::diff(self.index.as_ref(), now.index.as_ref()));
        out
    }

    /// Bring `git_dir` back to this snapshot (`now` is what is there). Every
    /// step works relative to a directory opened without following links, so
    /// an agent that swaps a directory for a link meanwhile cannot make flocks
    /// (perhaps root) remove or write anything outside `.git`.
    fn restore(&self, git_dir: &Path, now: &Snapshot) -> std::io::Result<()> {
        // Remove what was added or is not what it was (children before parents).
        for (p, e) in now.entries.iter().rev() {
            if !matches!(e, Entry::Special { .. })
                && self.entries.get(p).is_some_and(|old| same_kind(old, e))
            {
                continue;
            }
            let (dir, name) = fsat::parent(git_dir, p)?;
            fsat::remove_tree(&dir, &name).or_else(ignore_missing)?;
        }
        // Write back what differs (parents before children).
        for (p, e) in &self.entries {
            if now.entries.get(p) == Some(e) && !matches!(e, Entry::Special { .. }) {
                continue;
            }
            let (dir, name) = fsat::parent(git_dir, p)?;
            match e {
                Entry::Dir { mode, uid, gid } => fsat::make_dir(&dir, &name, *mode, (*uid, *gid))?,
                Entry::File {
                    mode,
                    uid,
                    gid,
                    bytes,
                } => fsat::write_file(&dir, &name, bytes, *mode, (*uid, *gid))?,
                Entry::Link { target } => {
                    fsat::remove_tree(&dir, &name).or_else(ignore_missing)?;
                    nix::unistd::symlinkat(target.as_path(), &dir, name.as_os_str())?;
                }
                // What was already wrong before attempts began stays removed.
                Entry::Special { .. } => {}
            }
        }
        if !IndexSnap::diff(self.index.as_ref(), now.index.as_ref()).is_empty() {
            IndexSnap::restore(git_dir, self.index.as_ref(), now.index.as_ref())
                .map_err(|e| std::io::Error::other(format!("the index: {e}")))?;
        }
        Ok(())
    }
}

fn same_kind(a: &Entry, b: &Entry) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// Record `rel` (and, for a directory when `recurse`, what is in it) without
/// following links or blocking.
fn walk(root: &Path, rel: &Path, depth: usize, recurse: bool, out: &mut BTreeMap<PathBuf, Entry>) {
    let full = root.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let (uid, gid) = (meta.uid(), meta.gid());
    let ft = meta.file_type();
    let entry = if ft.is_symlink() {
        let target = std::fs::read_link(&full).unwrap_or_default();
        Entry::Link { target }
    } else if ft.is_dir() {
        if recurse && depth >= MAX_DEPTH {
            out.insert(rel.to_path_buf(), special("a directory nested too deep"));
            return;
        }
        out.insert(rel.to_path_buf(), Entry::Dir { mode, uid, gid });
        if recurse && let Ok(rd) = std::fs::read_dir(&full) {
            for e in rd.flatten() {
                walk(root, &rel.join(e.file_name()), depth + 1, true, out);
            }
        }
        return;
    } else if ft.is_file() {
        match read_regular(&full, meta.len()) {
            Ok(bytes) => Entry::File {
                mode,
                uid,
                gid,
                bytes,
            },
            Err(kind) => special(&kind.to_string()),
        }
    } else {
        use std::os::unix::fs::FileTypeExt;
        special(if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        })
    };
    out.insert(rel.to_path_buf(), entry);
}

/// Record the submodules' git dirs under `rel` (`modules/`, nested ones
/// too): every directory, every link, and the files git runs from (`config`,
/// `config.worktree`, `info/attributes`, all of `hooks/`); not their objects,
/// refs, logs or index, which change as the user works with them.
fn modules(root: &Path, rel: &Path, depth: usize, out: &mut BTreeMap<PathBuf, Entry>) {
    let full = root.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return;
    };
    if !meta.is_dir() {
        walk(root, rel, depth, false, out);
        return;
    }
    if depth >= 2 * MAX_DEPTH {
        out.insert(rel.to_path_buf(), special("a directory nested too deep"));
        return;
    }
    walk(root, rel, MAX_DEPTH, false, out);
    let Ok(rd) = std::fs::read_dir(&full) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let child = rel.join(&name);
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            match name.to_str() {
                Some("objects" | "refs" | "logs" | "lfs" | "rr-cache") => {}
                Some("hooks") => walk(root, &child, 0, true, out),
                _ => modules(root, &child, depth + 1, out),
            }
        } else if ft.is_file() {
            let runs = matches!(name.to_str(), Some("config" | "config.worktree"))
                || (name == "attributes" && rel.file_name().is_some_and(|n| n == "info"));
            if runs {
                walk(root, &child, 0, false, out);
            }
        } else {
            // A link (to a git dir elsewhere), a FIFO, a device.
            walk(root, &child, 0, false, out);
        }
    }
}

/// Record only what is neither a directory nor a regular file under `rel`.
fn specials(root: &Path, rel: &Path, depth: usize, out: &mut BTreeMap<PathBuf, Entry>) {
    let Ok(meta) = std::fs::symlink_metadata(root.join(rel)) else {
        return;
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        if depth < 2 * MAX_DEPTH
            && let Ok(rd) = std::fs::read_dir(root.join(rel))
        {
            for e in rd.flatten() {
                specials(root, &rel.join(e.file_name()), depth + 1, out);
            }
        }
    } else if !(ft.is_file() || (ft.is_symlink() && rel == Path::new("HEAD"))) {
        out.insert(rel.to_path_buf(), special("not a regular file"));
    }
}

fn special(kind: &str) -> Entry {
    Entry::Special {
        kind: kind.to_string(),
    }
}

/// Why a file under the guard is not one to read: what the guard records
/// for it instead of its bytes.
#[derive(Debug, thiserror::Error)]
enum Unreadable {
    #[error("a file of {0} bytes (over {MAX_FILE})")]
    TooLarge(u64),
    #[error("a file over {MAX_FILE} bytes")]
    Grew,
    #[error("unreadable ({0})")]
    Io(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
}

/// A regular file's bytes, or why it is not one to read.
fn read_regular(path: &Path, len: u64) -> Result<Vec<u8>, Unreadable> {
    if len > MAX_FILE {
        return Err(Unreadable::TooLarge(len));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)?;
    // Swapped for something else between lstat and open.
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err(Unreadable::NotRegular);
    }
    let mut bytes = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(Unreadable::Grew);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config"), "[core]\n\tbare = false\n").unwrap();
        std::fs::create_dir(d.path().join("hooks")).unwrap();
        std::fs::write(d.path().join("hooks/pre-commit.sample"), "#!/bin/sh\n").unwrap();
        d
    }

    #[test]
    fn unchanged_passes() {
        let d = git_dir();
        let g = Guards::default().for_repo(d.path());
        let t = g.begin();
        assert_eq!(g.end(t), None);
    }

    #[test]
    fn planted_hook_and_config_are_undone() {
        let d = git_dir();
        let g = Guards::default().for_repo(d.path());
        let a = g.begin();
        let b = g.begin();
        std::fs::create_dir(d.path().join("hooks/sub")).unwrap();
        std::fs::write(d.path().join("hooks/sub/x"), "x").unwrap();
        std::fs::write(d.path().join("hooks/pre-commit"), "#!/bin/sh\nevil\n").unwrap();
        std::fs::set_permissions(
            d.path().join("hooks/pre-commit.sample"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(d.path().join("config"), "[core]\n\tfsmonitor = evil\n").unwrap();
        let why = g.end(a).unwrap();
        assert!(why.contains(".git/hooks/pre-commit added"), "{why}");
        assert!(why.contains(".git/config changed"), "{why}");
        assert!(
            why.contains(".git/hooks/pre-commit.sample changed"),
            "{why}"
        );
        // The other attempt that ran meanwhile fails too.
        assert!(g.end(b).is_some());
        assert!(!d.path().join("hooks/pre-commit").exists());
        assert!(!d.path().join("hooks/sub").exists());
        assert_eq!(
            std::fs::read_to_string(d.path().join("config")).unwrap(),
            "[core]\n\tbare = false\n"
        );
        let mode = std::fs::metadata(d.path().join("hooks/pre-commit.sample"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0);
        // A later attempt starts from the restored state.
        let c = g.begin();
        assert_eq!(g.end(c), None);
    }

    #[test]
    fn removed_hooks_dir_comes_back() {
        let d = git_dir();
        let g = Guards::default().for_repo(d.path());
        let t = g.begin();
        std::fs::remove_dir_all(d.path().join("hooks")).unwrap();
        assert!(g.end(t).unwrap().contains("removed"));
        assert!(d.path().join("hooks/pre-commit.sample").exists());
    }

    /// A FIFO (or anything not a regular file) never blocks the check, is a
    /// violation, and goes.
    #[test]
    fn fifo_in_hooks_is_a_violation_not_a_hang() {
        let d = git_dir();
        let g = Guards::default().for_repo(d.path());
        let t = g.begin();
        let fifo = d.path().join("hooks/post-checkout");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        nix::unistd::mkfifo(
            &d.path().join("config.worktree"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let why = g.end(t).unwrap();
        assert!(why.contains(".git/hooks/post-checkout is a FIFO"), "{why}");
        assert!(why.contains(".git/config.worktree is a FIFO"), "{why}");
        assert!(std::fs::symlink_metadata(&fifo).is_err());
    }

    /// A repo whose `main` is at `c1`, with `c2` (its child) on no branch.
    fn two_commits() -> (tempfile::TempDir, git2::Repository, git2::Oid, git2::Oid) {
        let d = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(d.path()).unwrap();
        let sig = git2::Signature::now("t", "t@t").unwrap();
        let tree = repo.treebuilder(None).unwrap().write().unwrap();
        let tree = repo.find_tree(tree).unwrap();
        let c1 = repo
            .commit(Some("refs/heads/main"), &sig, &sig, "1", &tree, &[])
            .unwrap();
        let p = repo.find_commit(c1).unwrap();
        let c2 = repo.commit(None, &sig, &sig, "2", &tree, &[&p]).unwrap();
        drop(tree);
        drop(p);
        (d, repo, c1, c2)
    }

    /// Refs outside the tasks' branches go back where they were.
    #[test]
    fn moved_refs_are_put_back() {
        let (d, repo, c1, c2) = two_commits();
        repo.reference("refs/heads/flocks/t", c1, true, "").unwrap();
        let guards = Guards::default();
        let g = guards.for_repo(&d.path().join(".git"));
        guards.exempt_branch("flocks/t");
        let t = g.begin();
        repo.reference("refs/heads/main", c2, true, "").unwrap();
        repo.reference("refs/heads/flocks/t", c2, true, "").unwrap();
        repo.reference("refs/tags/evil", c2, true, "").unwrap();
        let why = g.end(t).unwrap();
        assert!(
            why.contains(&format!("refs/heads/main moved from {c1} to {c2}")),
            "{why}"
        );
        assert!(why.contains("refs/tags/evil added"), "{why}");
        assert!(!why.contains("flocks/t"), "{why}");
        assert_eq!(repo.refname_to_id("refs/heads/main").unwrap(), c1);
        assert_eq!(repo.refname_to_id("refs/heads/flocks/t").unwrap(), c2);
        assert!(repo.find_reference("refs/tags/evil").is_err());
    }

    /// `hooks` swapped for a link to a directory outside: restoring removes
    /// the link and rebuilds `hooks`, and touches nothing outside.
    #[test]
    fn restore_never_works_through_a_link() {
        let d = git_dir();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("pre-commit.sample"), "theirs").unwrap();
        std::fs::write(outside.path().join("keep"), "keep").unwrap();
        let g = Guards::default().for_repo(d.path());
        let t = g.begin();
        std::fs::remove_dir_all(d.path().join("hooks")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("hooks")).unwrap();
        let why = g.end(t).unwrap();
        assert!(why.contains(".git/hooks changed"), "{why}");
        assert!(
            std::fs::symlink_metadata(d.path().join("hooks"))
                .unwrap()
                .is_dir()
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("hooks/pre-commit.sample")).unwrap(),
            "#!/bin/sh\n"
        );
        assert_eq!(
            std::fs::read_to_string(outside.path().join("pre-commit.sample")).unwrap(),
            "theirs"
        );
        assert!(outside.path().join("keep").exists());
    }

    /// A gitlink planted in the index (the user's next `git status` would
    /// enter the nested repository) and a submodule git dir planted under
    /// `modules/` are found and undone; the user's own staging stays.
    #[test]
    fn planted_gitlinks_and_modules_are_undone() {
        let d = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(d.path()).unwrap();
        std::fs::write(d.path().join("a.txt"), "a").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("a.txt")).unwrap();
        index.write().unwrap();
        let git = d.path().join(".git");
        let g = Guards::default().for_repo(&git);
        let t = g.begin();
        // The user stages a file meanwhile; an agent adds a gitlink.
        std::fs::write(d.path().join("b.txt"), "b").unwrap();
        let mut index = repo.index().unwrap();
        index.add_path(Path::new("b.txt")).unwrap();
        let oid = git2::Oid::from_str("1234567890123456789012345678901234567890").unwrap();
        index
            .add(&index::gitlink_entry_for_test("sub", oid))
            .unwrap();
        index.write().unwrap();
        std::fs::create_dir_all(git.join("modules/sub/hooks")).unwrap();
        std::fs::write(
            git.join("modules/sub/config"),
            "[core]\n\tfsmonitor = evil\n",
        )
        .unwrap();
        std::fs::create_dir_all(git.join("modules/sub/objects/ab")).unwrap();
        let why = g.end(t).unwrap();
        assert!(why.contains(".git/index: gitlink sub added"), "{why}");
        assert!(why.contains(".git/modules added"), "{why}");
        assert!(why.contains(".git/modules/sub/config added"), "{why}");
        assert!(!git.join("modules").exists());
        let mut index = repo.index().unwrap();
        index.read(true).unwrap();
        let paths: Vec<String> = index
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        assert_eq!(paths, ["a.txt", "b.txt"]);
        // A module's objects change as the user works: not a violation.
        std::fs::create_dir_all(git.join("modules/real/objects")).unwrap();
        std::fs::write(git.join("modules/real/config"), "[core]\n").unwrap();
        let t = g.begin();
        std::fs::write(git.join("modules/real/objects/x"), "x").unwrap();
        std::fs::write(git.join("modules/real/index"), "x").unwrap();
        assert_eq!(g.end(t), None);
    }

    /// A finished task's branch is guarded again, from where flocks left it.
    #[test]
    fn settled_branches_are_guarded_again() {
        let (d, repo, c1, c2) = two_commits();
        let guards = Guards::default();
        let g = guards.for_repo(&d.path().join(".git"));
        guards.exempt_branch("flocks/settle-a");
        guards.exempt_branch("flocks/settle-b");
        let a = g.begin();
        let b = g.begin();
        // Task b's attempt ends; flocks puts its work on its branch.
        repo.reference("refs/heads/flocks/settle-b", c1, true, "")
            .unwrap();
        assert_eq!(g.end(b), None);
        guards.settle_branch("flocks/settle-b");
        // Then a's agent moves b's branch: found, and put back.
        repo.reference("refs/heads/flocks/settle-b", c2, true, "")
            .unwrap();
        let why = g.end(a).unwrap();
        assert!(why.contains("refs/heads/flocks/settle-b moved"), "{why}");
        assert_eq!(
            repo.refname_to_id("refs/heads/flocks/settle-b").unwrap(),
            c1
        );
    }
}
