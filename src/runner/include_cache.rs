//! The `.worktreeinclude` walk of the checkout, done once per run while the
//! checkout stays the same: keyed by the stamps (inode, size, times) of its
//! git index, its `.worktreeinclude`, its top `.gitignore` and
//! `info/exclude`. Staging, committing or checking out changes the index, so
//! the next attempt walks again; the files' contents are read at each copy.
//! A new ignored file that nothing else announces (no index change) is seen
//! from the next run on.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::git::include::{IncludeError, IncludeSet, collect};

/// What a file's stamp is made of; None: it is not there.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::symlink_metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// The last walk of one run, and what it was keyed by.
#[derive(Debug, Default)]
pub(crate) struct IncludeCache {
    last: Mutex<Option<(Vec<Stamp>, Option<IncludeSet>)>>,
    /// The checkout's git dir, found at the first walk.
    git_dir: Mutex<Option<PathBuf>>,
}

impl IncludeCache {
    /// The checkout's files `.worktreeinclude` selects (None: it has none),
    /// walked again only when the checkout's stamps changed.
    pub(crate) fn collect(
        &self,
        repo_dir: &Path,
        skip: &[PathBuf],
    ) -> Result<Option<IncludeSet>, IncludeError> {
        let key = self.key(repo_dir);
        if let Some(key) = &key
            && let Some((k, set)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner())
            && k == key
        {
            return Ok(set.clone());
        }
        let set = collect(repo_dir, skip)?;
        // Stamped before the walk: a change during the walk walks again.
        if let Some(key) = key {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((key, set.clone()));
        }
        Ok(set)
    }

    /// The stamps, or None when the git dir cannot be found (no caching).
    fn key(&self, repo_dir: &Path) -> Option<Vec<Stamp>> {
        let git_dir = {
            let mut g = self.git_dir.lock().unwrap_or_else(|p| p.into_inner());
            if g.is_none() {
                *g = git2::Repository::open(repo_dir)
                    .ok()
                    .map(|r| r.path().to_path_buf());
            }
            g.clone()?
        };
        let index = stamp(&git_dir.join("index"));
        // Without an index there is nothing to key on.
        index?;
        Some(vec![
            index,
            stamp(&repo_dir.join(crate::git::include::FILE_NAME)),
            stamp(&repo_dir.join(".gitignore")),
            stamp(&git_dir.join("info/exclude")),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::git::testing::git;

    /// The walk is reused while the checkout is the same, and done again
    /// when its index or `.worktreeinclude` changes.
    #[test]
    fn walks_again_when_the_checkout_changes() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join(".gitignore"), ".env*\n").unwrap();
        std::fs::write(repo.join(".worktreeinclude"), ".env\n").unwrap();
        std::fs::write(repo.join(".env"), "A=1\n").unwrap();
        std::fs::write(repo.join(".env.local"), "B=1\n").unwrap();
        git(repo, &["add", ".gitignore", ".worktreeinclude"]);
        git(
            repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "i",
            ],
        );
        let names = |set: Option<IncludeSet>| -> Vec<String> {
            set.unwrap()
                .files
                .iter()
                .map(|f| f.rel.display().to_string())
                .collect()
        };
        let cache = IncludeCache::default();
        assert_eq!(names(cache.collect(repo, &[]).unwrap()), [".env"]);
        // Same checkout: the same answer, without a walk (a file removed
        // behind its back is still listed; its copy reads it and says so).
        std::fs::write(repo.join(".worktreeinclude"), ".env\n.env.local\n").unwrap();
        assert_eq!(
            names(cache.collect(repo, &[]).unwrap()),
            [".env", ".env.local"],
            ".worktreeinclude changed: walked again"
        );
        std::fs::write(repo.join("x"), "x").unwrap();
        let before = cache.collect(repo, &[]).unwrap();
        std::fs::remove_file(repo.join(".env.local")).unwrap();
        assert_eq!(names(cache.collect(repo, &[]).unwrap()), names(before));
        // The index changed: walked again.
        git(repo, &["add", "x"]);
        assert_eq!(names(cache.collect(repo, &[]).unwrap()), [".env"]);
    }
}
