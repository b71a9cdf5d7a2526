//! `.worktreeinclude` at the repo root (gitignore syntax, the file Claude Code
//! itself reads): the git-ignored files of the main checkout that match it
//! (`.env`, local config) are copied into a task's worktree before its agent
//! starts, and again each time flocks reuses the worktree (a retry, a spare).
//!
//! - Only files git ignores: tracked files come from git. A directory git
//!   ignores is copied whole when a pattern matches it, and otherwise looked
//!   into only when an anchored pattern (`config/local/*.yml`) leads there:
//!   an unanchored `.env` does not make flocks search `node_modules/`.
//! - The copy goes one way, from the user's checkout (trusted) into the
//!   worktree, never back. The checkout's `.git`, `.worktrees/` and
//!   `.flocks/` are never read.
//! - Reading: a symlink in the checkout is copied as the regular file it leads
//!   to when that file is inside the checkout, and skipped otherwise (a note
//!   says so); linked directories are not entered. Containers can write the
//!   checkout through the repo's mount, so a file is read by opening each
//!   component from the checkout's root without following links: one swapped
//!   for a link after it was selected is refused, not followed.
//! - Writing: the worktree is the agent's, and may hold links it planted. Each
//!   directory is opened relative to the one above without following links,
//!   and each file is written under a temporary name and renamed into place,
//!   so a link is replaced, never written through. A file keeps its mode bits
//!   (`rwx` for user, group, others); an unchanged file is not rewritten.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use globset::{GlobBuilder, GlobMatcher};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};

/// The file's name, at the root of the repository's checkout.
pub const FILE_NAME: &str = ".worktreeinclude";

/// One file to copy.
#[derive(Debug, Clone)]
pub struct IncludeFile {
    /// Where it goes, relative to the worktree (and to the checkout).
    pub rel: PathBuf,
    /// What is read: the file in the checkout (a link's target, resolved).
    pub source: PathBuf,
    /// Mode bits (`0o777` at most).
    pub mode: u32,
    /// Mode bits of each directory above it in the checkout, outermost first.
    pub dir_modes: Vec<u32>,
}

/// What `.worktreeinclude` selects in the checkout now.
#[derive(Debug, Clone, Default)]
pub struct IncludeSet {
    /// The checkout, resolved: every source lies under it.
    pub root: PathBuf,
    pub files: Vec<IncludeFile>,
    /// Matches that are skipped, and why (for the attempt's log).
    pub notes: Vec<String>,
}

/// What copying into one worktree did.
#[derive(Debug, Clone, Default)]
pub struct Copied {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that were there already, the same.
    pub unchanged: usize,
    /// Files not copied, and why.
    pub notes: Vec<String>,
}

/// Why `.worktreeinclude` could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum IncludeError {
    #[error("{}:{line}: `{pattern}` is not a valid pattern: {why}", .file.display())]
    Pattern {
        file: PathBuf,
        line: usize,
        pattern: String,
        why: String,
    },
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the repository {}: {}", .path.display(), .source.message())]
    Repo {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot send the files to host {host}: {why}")]
    Transfer { host: String, why: String },
    #[error("cannot copy {} into the worktree {}: {source}", .rel.display(), .worktree.display())]
    Write {
        rel: PathBuf,
        worktree: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An anchored pattern, one glob per path component, to tell whether a
/// directory git ignores may hold a match.
struct Anchored {
    parts: Vec<Option<GlobMatcher>>,
}

impl Anchored {
    /// Whether a path below `dir` (its components) could match.
    fn leads_into(&self, dir: &[&OsStr]) -> bool {
        for (i, d) in dir.iter().enumerate() {
            match self.parts.get(i) {
                // `**` matches any depth.
                Some(None) => return true,
                Some(Some(g)) if g.is_match(Path::new(d)) => {}
                // The pattern ends at or above this directory, or differs.
                _ => return false,
            }
        }
        self.parts.len() > dir.len()
    }
}

struct Patterns {
    matcher: Gitignore,
    anchored: Vec<Anchored>,
}

fn read_patterns(repo_dir: &Path) -> Result<Option<Patterns>, IncludeError> {
    let file = repo_dir.join(FILE_NAME);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IncludeError::Read { path: file, source }),
    };
    let mut b = GitignoreBuilder::new(repo_dir);
    let mut anchored = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: String| IncludeError::Pattern {
            file: file.clone(),
            line: i + 1,
            pattern: line.to_string(),
            why,
        };
        b.add_line(Some(file.clone()), line)
            .map_err(|e| bad(e.to_string()))?;
        let p = line.trim();
        if p.is_empty() || p.starts_with('#') || p.starts_with('!') {
            continue;
        }
        let p = p.trim_end_matches('/');
        let p = p.strip_prefix('/').unwrap_or(p);
        if !p.contains('/') {
            continue;
        }
        let mut parts = Vec::new();
        for c in p.split('/') {
            parts.push(if c == "**" {
                None
            } else {
                Some(
                    GlobBuilder::new(c)
                        .literal_separator(true)
                        .build()
                        .map_err(|e| bad(e.to_string()))?
                        .compile_matcher(),
                )
            });
        }
        anchored.push(Anchored { parts });
    }
    let matcher = b.build().map_err(|e| IncludeError::Pattern {
        file: file.clone(),
        line: 0,
        pattern: String::new(),
        why: e.to_string(),
    })?;
    Ok(Some(Patterns { matcher, anchored }))
}

/// The files `.worktreeinclude` selects in the checkout at `repo_dir`, or
/// None when there is no `.worktreeinclude`. `skip`: directories never
/// read (the worktrees, flocks' own state).
pub fn collect(repo_dir: &Path, skip: &[PathBuf]) -> Result<Option<IncludeSet>, IncludeError> {
    let repo_err = |source| IncludeError::Repo {
        path: repo_dir.to_path_buf(),
        source,
    };
    let repo = git2::Repository::open(repo_dir).map_err(repo_err)?;
    let Some(root) = repo.workdir().map(Path::to_path_buf) else {
        return Ok(None);
    };
    let root = root.canonicalize().map_err(|source| IncludeError::Read {
        path: root.clone(),
        source,
    })?;
    let Some(patterns) = read_patterns(&root)? else {
        return Ok(None);
    };
    let index = repo.index().map_err(repo_err)?;
    let skip: Vec<PathBuf> = skip
        .iter()
        .map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()))
        .collect();
    let mut w = Walk {
        root: &root,
        repo: &repo,
        index: &index,
        patterns: &patterns,
        skip: &skip,
        set: IncludeSet {
            root: root.clone(),
            ..IncludeSet::default()
        },
    };
    w.dir(Path::new(""), false)?;
    let mut set = w.set;
    set.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(Some(set))
}

struct Walk<'a> {
    root: &'a Path,
    repo: &'a git2::Repository,
    index: &'a git2::Index,
    patterns: &'a Patterns,
    skip: &'a [PathBuf],
    set: IncludeSet,
}

impl Walk<'_> {
    fn ignored(&self, rel: &Path) -> bool {
        self.repo.is_path_ignored(rel).unwrap_or(false)
    }

    fn tracked(&self, rel: &Path) -> bool {
        self.index.get_path(rel, 0).is_some()
    }

    /// Walk `rel` (a directory). `all`: every file below is selected (a
    /// pattern matched a directory above).
    fn dir(&mut self, rel: &Path, all: bool) -> Result<(), IncludeError> {
        let abs = self.root.join(rel);
        let read = |source| IncludeError::Read {
            path: abs.clone(),
            source,
        };
        let listed = std::fs::read_dir(&abs).and_then(|d| d.collect::<Result<Vec<_>, _>>());
        let mut entries = match listed {
            Ok(e) => e,
            // A directory that is only searched (not selected) and cannot be
            // read holds nothing flocks could copy: say so, go on.
            Err(e) if !all && !rel.as_os_str().is_empty() => {
                self.set.notes.push(format!(
                    "{FILE_NAME}: did not look in {}: {e}",
                    rel.display()
                ));
                return Ok(());
            }
            Err(e) => return Err(read(e)),
        };
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let child = rel.join(&name);
            let child_abs = self.root.join(&child);
            if name == ".git" || self.skip.contains(&child_abs) {
                continue;
            }
            // Gone since it was listed: nothing to copy.
            let Ok(meta) = std::fs::symlink_metadata(&child_abs) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                // A nested repository (a submodule) is not ours.
                if child_abs.join(".git").exists() {
                    continue;
                }
                let matched = all
                    || self
                        .patterns
                        .matcher
                        .matched_path_or_any_parents(&child, true)
                        .is_ignore();
                if matched && (all || self.ignored(&child)) {
                    self.dir(&child, true)?;
                } else if !self.ignored(&child) || self.leads_into(&child) {
                    self.dir(&child, false)?;
                }
                continue;
            }
            let selected = all
                || (self
                    .patterns
                    .matcher
                    .matched_path_or_any_parents(&child, false)
                    .is_ignore()
                    && self.ignored(&child));
            if !selected || self.tracked(&child) {
                continue;
            }
            if ft.is_file() {
                self.add(&child, child_abs, meta.permissions().mode());
            } else if ft.is_symlink() {
                self.link(&child, &child_abs);
            }
            // FIFOs, sockets, devices: not files to copy.
        }
        Ok(())
    }

    fn leads_into(&self, rel: &Path) -> bool {
        let parts: Vec<&OsStr> = rel.iter().collect();
        self.patterns.anchored.iter().any(|a| a.leads_into(&parts))
    }

    /// A selected link: copied as the file it leads to, inside the checkout.
    fn link(&mut self, rel: &Path, abs: &Path) {
        let skip = |set: &mut IncludeSet, why: &str| {
            set.notes
                .push(format!("{FILE_NAME}: skipped {}: {why}", rel.display()))
        };
        let Ok(target) = abs.canonicalize() else {
            return skip(&mut self.set, "a link that leads nowhere");
        };
        let inside = target.starts_with(self.root)
            && !target
                .strip_prefix(self.root)
                .is_ok_and(|r| r.starts_with(".git"))
            && !self.skip.iter().any(|s| target.starts_with(s));
        if !inside {
            return skip(&mut self.set, "a link that leads out of the repository");
        }
        match std::fs::metadata(&target) {
            Ok(m) if m.is_file() => self.add(rel, target, m.permissions().mode()),
            _ => skip(&mut self.set, "a link to something other than a file"),
        }
    }

    fn add(&mut self, rel: &Path, source: PathBuf, mode: u32) {
        let mut dir_modes = Vec::new();
        let mut d = self.root.to_path_buf();
        if let Some(parent) = rel.parent() {
            for c in parent.iter() {
                d.push(c);
                dir_modes.push(
                    std::fs::metadata(&d)
                        .map(|m| m.permissions().mode() & 0o777)
                        .unwrap_or(0o755),
                );
            }
        }
        self.set.files.push(IncludeFile {
            rel: rel.to_path_buf(),
            source,
            mode: mode & 0o777,
            dir_modes,
        });
    }
}

/// Leave out the files that `commit` (a task's start) tracks: the worktree
/// has them from git, and a copy over one would be a change that the
/// attempt's leftovers commit takes into the branch (a secret, say).
pub fn drop_tracked(
    set: &mut IncludeSet,
    repo_dir: &Path,
    commit: &str,
) -> Result<(), IncludeError> {
    let repo_err = |source| IncludeError::Repo {
        path: repo_dir.to_path_buf(),
        source,
    };
    let repo = git2::Repository::open(repo_dir).map_err(repo_err)?;
    let oid = git2::Oid::from_str(commit).map_err(repo_err)?;
    let tree = repo
        .find_commit(oid)
        .and_then(|c| c.tree())
        .map_err(repo_err)?;
    let mut notes = Vec::new();
    set.files.retain(|f| {
        let tracked = tree.get_path(&f.rel).is_ok();
        if tracked {
            notes.push(format!(
                "{FILE_NAME}: skipped {}: the task's branch tracks it",
                f.rel.display()
            ));
        }
        !tracked
    });
    set.notes.extend(notes);
    Ok(())
}

const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Copy `set` into the worktree at `worktree` (a path flocks made), never
/// following a link inside it.
pub fn copy_into(set: &IncludeSet, worktree: &Path) -> Result<Copied, IncludeError> {
    let mut done = Copied::default();
    let root = open(
        worktree,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| IncludeError::Write {
        rel: PathBuf::from("."),
        worktree: worktree.to_path_buf(),
        source: e.into(),
    })?;
    for f in &set.files {
        let write_err = |source: std::io::Error| IncludeError::Write {
            rel: f.rel.clone(),
            worktree: worktree.to_path_buf(),
            source,
        };
        let mut src = set.open(f)?;
        let (dir, name) = match parent_dir(&root, &f.rel, &f.dir_modes) {
            Ok(v) => v,
            Err(Blocked(why)) => {
                done.notes
                    .push(format!("{FILE_NAME}: skipped {}: {why}", f.rel.display()));
                continue;
            }
        };
        let len = src.metadata().map_err(write_err)?.len();
        match existing(&dir, &name).map_err(write_err)? {
            Existing::Dir => {
                done.notes.push(format!(
                    "{FILE_NAME}: skipped {}: a directory has its name in the worktree",
                    f.rel.display()
                ));
                continue;
            }
            Existing::File { size, mode }
                if size == len && mode == f.mode && same_content(&dir, &name, &mut src) =>
            {
                done.unchanged += 1;
                continue;
            }
            Existing::File { .. } | Existing::Other | Existing::Missing => {}
        }
        place(&dir, &name, f.mode, |out| {
            src.rewind()?;
            std::io::copy(&mut src, out).map(|_| ())
        })
        .map_err(write_err)?;
        done.written.push(f.rel.clone());
    }
    Ok(done)
}

impl IncludeSet {
    /// `f` in the checkout, open for reading. Containers can write the
    /// checkout (the repo's mount), so the file is opened from the root one
    /// component at a time without following a link, and only when it is a
    /// regular file: one swapped for a link since `collect` is refused.
    pub fn open(&self, f: &IncludeFile) -> Result<std::fs::File, IncludeError> {
        let open = || -> std::io::Result<std::fs::File> {
            let rel = f
                .source
                .strip_prefix(&self.root)
                .map_err(|_| std::io::Error::other("not inside the checkout"))?;
            let (Some(dir), Some(name)) = (rel.parent(), rel.file_name()) else {
                return Err(Errno::EINVAL.into());
            };
            let dir = open_under(&self.root, dir)?;
            let fd = openat(
                &dir,
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            let file = std::fs::File::from(fd);
            if !file.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            Ok(file)
        };
        open().map_err(|source| IncludeError::Read {
            path: f.source.clone(),
            source,
        })
    }
}

/// Why a file cannot be placed: something that is not a directory is in the way.
struct Blocked(String);

/// The directory that holds `rel` in the worktree, made where missing, and
/// the file's name. Never follows a link.
fn parent_dir(root: &OwnedFd, rel: &Path, modes: &[u32]) -> Result<(OwnedFd, OsString), Blocked> {
    let parts: Vec<Component> = rel.components().collect();
    let Some((Component::Normal(last), dirs)) = parts.split_last() else {
        return Err(Blocked("not a plain relative path".into()));
    };
    let mut fd = root.try_clone().map_err(|e| Blocked(e.to_string()))?;
    for (i, c) in dirs.iter().enumerate() {
        let Component::Normal(n) = c else {
            return Err(Blocked("not a plain relative path".into()));
        };
        let mode = modes.get(i).copied().unwrap_or(0o755);
        match mkdirat(&fd, *n, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(Blocked(format!("cannot make directory {n:?}: {e}"))),
        }
        fd = match openat(&fd, *n, DIR, Mode::empty()) {
            Ok(f) => f,
            Err(Errno::ELOOP) | Err(Errno::ENOTDIR) => {
                return Err(Blocked(format!(
                    "{n:?} in the worktree is not a directory (a link?)"
                )));
            }
            Err(e) => return Err(Blocked(format!("cannot open directory {n:?}: {e}"))),
        };
    }
    Ok((fd, last.to_os_string()))
}

/// What has a name in a worktree directory, seen without following links.
enum Existing {
    Missing,
    Dir,
    File {
        size: u64,
        mode: u32,
    },
    /// A link, a FIFO...: replaced.
    Other,
}

fn existing(dir: &OwnedFd, name: &OsStr) -> std::io::Result<Existing> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            Ok(if kind == SFlag::S_IFDIR {
                Existing::Dir
            } else if kind == SFlag::S_IFREG {
                Existing::File {
                    size: st.st_size as u64,
                    mode: st.st_mode & 0o777,
                }
            } else {
                Existing::Other
            })
        }
        Err(Errno::ENOENT) => Ok(Existing::Missing),
        Err(e) => Err(e.into()),
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Make `name` in `dir` a new regular file with `mode` and what `fill`
/// writes: under a new name first, then renamed over whatever is there (a
/// link is replaced, not followed).
fn place(
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let tmp = OsString::from(format!(
        ".flocks-include.{}.{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let fd = openat(
        dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let result = (|| -> std::io::Result<()> {
        fchmod(&fd, Mode::from_bits_truncate(mode))?;
        let mut f = std::fs::File::from(fd);
        fill(&mut f)?;
        renameat(dir, tmp.as_os_str(), dir, name)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    result
}

/// Whether the file `name` in `dir` holds what `src` holds from where it
/// stands (compared a block at a time).
fn same_content(dir: &OwnedFd, name: &OsStr, src: &mut std::fs::File) -> bool {
    let Ok(fd) = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return false;
    };
    let mut have = std::fs::File::from(fd);
    let mut same = true;
    let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = match read_full(src, &mut a) {
            Ok(n) => n,
            Err(_) => {
                same = false;
                break;
            }
        };
        match read_full(&mut have, &mut b[..n.max(1)]) {
            Ok(m) if m == n && a[..n] == b[..n] => {}
            _ => {
                same = false;
                break;
            }
        }
        if n == 0 {
            break;
        }
    }
    same
}

/// Read until `buf` is full or the file ends.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Read a small flocks file `name` in the directory `rel` under the trusted
/// `root`, never following a link and never blocking (None when it is not
/// a regular file there).
pub(crate) fn read_small(root: &Path, rel: &Path, name: &str) -> Option<String> {
    let dir = open_under(root, rel).ok()?;
    let fd = openat(
        &dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let f = std::fs::File::from(fd);
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut s = String::new();
    f.take(4096).read_to_string(&mut s).ok()?;
    Some(s)
}

/// Write a small flocks file `name` in the directory `rel` under the trusted
/// `root`, never following a link.
pub(crate) fn write_small(root: &Path, rel: &Path, name: &str, text: &str) -> std::io::Result<()> {
    let dir = open_under(root, rel)?;
    place(&dir, OsStr::new(name), 0o644, |f| {
        f.write_all(text.as_bytes())
    })
}

fn open_under(root: &Path, rel: &Path) -> std::io::Result<OwnedFd> {
    let mut fd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for c in rel.components() {
        let Component::Normal(n) = c else {
            return Err(Errno::EINVAL.into());
        };
        fd = openat(&fd, n, DIR, Mode::empty())?;
    }
    Ok(fd)
}

/// `set`'s files as one line for the log: how many, and the first few.
pub fn summary(paths: &[PathBuf]) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<String> = paths
        .iter()
        .take(SHOWN)
        .map(|p| p.display().to_string())
        .collect();
    if paths.len() > SHOWN {
        names.push(format!("and {} more", paths.len() - SHOWN));
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
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
        std::fs::set_permissions(repo.join(".env"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
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
}
