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
//!
//! `patterns.rs` selects, `copy.rs` copies.

use std::path::PathBuf;

mod copy;
mod patterns;
#[cfg(test)]
mod tests;

pub(crate) use copy::{copy_into, read_small, write_small};
pub(crate) use patterns::{collect, drop_tracked};

/// The file's name, at the root of the repository's checkout.
pub(crate) const FILE_NAME: &str = ".worktreeinclude";

/// One file to copy.
#[derive(Debug, Clone)]
pub(crate) struct IncludeFile {
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
pub(crate) struct IncludeSet {
    /// The checkout, resolved: every source lies under it.
    pub root: PathBuf,
    pub files: Vec<IncludeFile>,
    /// Matches that are skipped, and why (for the attempt's log).
    pub notes: Vec<String>,
}

/// What copying into one worktree did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Copied {
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files that were there already, the same.
    pub unchanged: usize,
    /// Files not copied, and why.
    pub notes: Vec<String>,
}

/// Why `.worktreeinclude` could not be applied.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IncludeError {
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

/// `set`'s files as one line for the log: how many, and the first few.
pub(crate) fn summary(paths: &[PathBuf]) -> String {
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
