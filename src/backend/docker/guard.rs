//! Guarding the host: an agent in a container can write the repo's shared
//! `.git`, and git on the host would then run what it planted (a hook, a
//! `core.fsmonitor` or `core.hooksPath` in the config). So `.git/config` and
//! `.git/hooks` are snapshotted before attempts and compared after each one;
//! a change is undone and fails the attempt.
//!
//! Attempts overlap, and a change cannot be traced to one agent: the baseline
//! is taken when no attempt on the repo is running, and a change found by any
//! attempt's check fails every attempt that was running when it was found.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// One guarded repository (its common git dir), shared by every pool.
pub struct Guard {
    git_dir: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    baseline: Option<Snapshot>,
    next: u64,
    /// Running attempts, with the violation found while they ran.
    active: HashMap<u64, Option<String>>,
}

/// The guard of the repository whose common git dir is `git_dir`.
pub fn for_repo(git_dir: &Path) -> Arc<Guard> {
    static ALL: OnceLock<Mutex<HashMap<PathBuf, Arc<Guard>>>> = OnceLock::new();
    let key = git_dir
        .canonicalize()
        .unwrap_or_else(|_| git_dir.to_path_buf());
    let mut all = ALL
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    all.entry(key.clone())
        .or_insert_with(|| {
            Arc::new(Guard {
                git_dir: key,
                inner: Mutex::new(Inner::default()),
            })
        })
        .clone()
}

impl Guard {
    /// An attempt starts. Returns its ticket for [`Guard::end`].
    pub fn begin(&self) -> u64 {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.active.is_empty() {
            inner.baseline = Some(Snapshot::take(&self.git_dir));
        }
        inner.next += 1;
        let ticket = inner.next;
        inner.active.insert(ticket, None);
        ticket
    }

    /// An attempt ended: check, restore on change. Returns what was changed
    /// while it ran, if anything.
    pub fn end(&self, ticket: u64) -> Option<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(base) = &inner.baseline {
            let now = Snapshot::take(&self.git_dir);
            let changes = base.diff(&now);
            if !changes.is_empty() {
                let mut what = changes.join(", ");
                if let Err(e) = base.restore(&self.git_dir, &now) {
                    what.push_str(&format!(" (restoring failed: {e})"));
                }
                for v in inner.active.values_mut() {
                    v.get_or_insert_with(|| what.clone());
                }
            }
        }
        inner.active.remove(&ticket).flatten()
    }
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
}

/// `.git/config` and everything under `.git/hooks`, by path relative to `.git`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Snapshot {
    fn take(git_dir: &Path) -> Snapshot {
        let mut entries = BTreeMap::new();
        for top in ["config", "hooks"] {
            walk(git_dir, Path::new(top), &mut entries);
        }
        Snapshot { entries }
    }

    /// What differs, for people: `.git/hooks/pre-commit added`.
    fn diff(&self, now: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (p, e) in &now.entries {
            match self.entries.get(p) {
                None => out.push(format!(".git/{} added", p.display())),
                Some(old) if old != e => out.push(format!(".git/{} changed", p.display())),
                _ => {}
            }
        }
        for p in self.entries.keys() {
            if !now.entries.contains_key(p) {
                out.push(format!(".git/{} removed", p.display()));
            }
        }
        out
    }

    /// Bring `git_dir` back to this snapshot (`now` is what is there).
    fn restore(&self, git_dir: &Path, now: &Snapshot) -> std::io::Result<()> {
        // Remove what was added (children before parents).
        for (p, e) in now.entries.iter().rev() {
            if self.entries.get(p).is_some_and(|old| same_kind(old, e)) {
                continue;
            }
            let full = git_dir.join(p);
            match e {
                Entry::Dir { .. } => std::fs::remove_dir_all(&full).or_else(ignore_missing)?,
                _ => std::fs::remove_file(&full).or_else(ignore_missing)?,
            }
        }
        // Write back what differs (parents before children).
        for (p, e) in &self.entries {
            if now.entries.get(p) == Some(e) {
                continue;
            }
            let full = git_dir.join(p);
            match e {
                Entry::Dir { mode, uid, gid } => {
                    std::fs::create_dir_all(&full)?;
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode))?;
                    let _ = std::os::unix::fs::lchown(&full, Some(*uid), Some(*gid));
                }
                Entry::File {
                    mode,
                    uid,
                    gid,
                    bytes,
                } => {
                    std::fs::write(&full, bytes)?;
                    std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode))?;
                    let _ = std::os::unix::fs::lchown(&full, Some(*uid), Some(*gid));
                }
                Entry::Link { target } => {
                    let _ = std::fs::remove_file(&full);
                    std::os::unix::fs::symlink(target, &full)?;
                }
            }
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

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
    let full = root.join(rel);
    let Ok(meta) = std::fs::symlink_metadata(&full) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let (uid, gid) = (meta.uid(), meta.gid());
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&full).unwrap_or_default();
        out.insert(rel.to_path_buf(), Entry::Link { target });
    } else if meta.is_dir() {
        out.insert(rel.to_path_buf(), Entry::Dir { mode, uid, gid });
        let Ok(rd) = std::fs::read_dir(&full) else {
            return;
        };
        for e in rd.flatten() {
            walk(root, &rel.join(e.file_name()), out);
        }
    } else {
        let bytes = std::fs::read(&full).unwrap_or_default();
        out.insert(
            rel.to_path_buf(),
            Entry::File {
                mode,
                uid,
                gid,
                bytes,
            },
        );
    }
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
        let g = for_repo(d.path());
        let t = g.begin();
        assert_eq!(g.end(t), None);
    }

    #[test]
    fn planted_hook_and_config_are_undone() {
        let d = git_dir();
        let g = for_repo(d.path());
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
        let g = for_repo(d.path());
        let t = g.begin();
        std::fs::remove_dir_all(d.path().join("hooks")).unwrap();
        assert!(g.end(t).unwrap().contains("removed"));
        assert!(d.path().join("hooks/pre-commit.sample").exists());
    }
}
