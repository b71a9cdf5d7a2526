//! Which files `.worktreeinclude` selects: its patterns, the walk of the checkout (ignored files only, anchored patterns into ignored directories), and the files git tracks left out.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::*;

/// An anchored pattern, one glob per path component, to tell whether a
/// directory git ignores may hold a match.
pub(super) struct Anchored {
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

pub(super) struct Patterns {
    matcher: Gitignore,
    anchored: Vec<Anchored>,
}

pub(super) fn read_patterns(repo_dir: &Path) -> Result<Option<Patterns>, IncludeError> {
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
pub(crate) fn collect(
    repo_dir: &Path,
    skip: &[PathBuf],
) -> Result<Option<IncludeSet>, IncludeError> {
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

pub(super) struct Walk<'a> {
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
pub(crate) fn drop_tracked(
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
