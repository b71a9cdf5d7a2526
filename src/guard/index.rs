//! The index half of the guard: the main checkout's `.git/index`, where a
//! gitlink (an entry of mode 160000) makes the user's next plain `git status`
//! enter the nested repository at its path and run what that repository's
//! config says (`core.fsmonitor`). Only gitlinks are compared (the user may
//! stage files while a run goes on); a gitlink added, moved or removed is put
//! back with libgit2, leaving every other entry as it is. An index that is no
//! longer a regular file, or no longer reads, is replaced by the one from
//! before attempts began.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// An index larger than this is not kept to be written back (its gitlinks
/// are still compared and fixed).
const MAX_KEPT: u64 = 64 << 20;

/// `.git/index` as the guard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexSnap {
    /// What is there when it is not a regular file (a link, a FIFO, ...).
    special: Option<String>,
    /// Path -> commit of every gitlink; None when libgit2 cannot read it.
    gitlinks: Option<BTreeMap<String, String>>,
    /// Its bytes, to write back (None: too large, or not a regular file).
    bytes: Option<Vec<u8>>,
}

impl IndexSnap {
    /// `.git/index` now; None when there is none.
    pub(super) fn take(git_dir: &Path) -> Option<IndexSnap> {
        let path = git_dir.join("index");
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_file() {
            let kind = if meta.file_type().is_symlink() {
                "a link"
            } else {
                "not a regular file"
            };
            return Some(IndexSnap {
                special: Some(kind.into()),
                gitlinks: None,
                bytes: None,
            });
        }
        let bytes = (meta.len() <= MAX_KEPT)
            .then(|| read_regular(&path))
            .flatten();
        Some(IndexSnap {
            special: None,
            gitlinks: gitlinks(&path),
            bytes,
        })
    }

    /// What differs from `self` (the baseline), for people.
    pub(super) fn diff(base: Option<&IndexSnap>, now: Option<&IndexSnap>) -> Vec<String> {
        let mut out = Vec::new();
        let Some(now) = now else {
            return out;
        };
        if let Some(kind) = &now.special {
            out.push(format!(".git/index is {kind}"));
            return out;
        }
        let empty = BTreeMap::new();
        let before = base.and_then(|b| b.gitlinks.as_ref()).unwrap_or(&empty);
        let Some(after) = &now.gitlinks else {
            if base.is_some_and(|b| b.gitlinks.is_some()) {
                out.push(".git/index can no longer be read".into());
            }
            return out;
        };
        for (p, oid) in after {
            match before.get(p) {
                None => out.push(format!(".git/index: gitlink {p} added (at {oid})")),
                Some(old) if old != oid => {
                    out.push(format!(".git/index: gitlink {p} moved from {old} to {oid}"))
                }
                Some(_) => {}
            }
        }
        for p in before.keys() {
            if !after.contains_key(p) {
                out.push(format!(".git/index: gitlink {p} removed"));
            }
        }
        out
    }

    /// Put the index back to `base`'s gitlinks (`now` is what is there).
    pub(super) fn restore(
        git_dir: &Path,
        base: Option<&IndexSnap>,
        now: Option<&IndexSnap>,
    ) -> Result<(), String> {
        let Some(now) = now else {
            return Ok(());
        };
        let Some(base) = base else {
            // No index before attempts began: none now either.
            return crate::fsat::remove_in(git_dir, Path::new("index")).map_err(|e| e.to_string());
        };
        if now.special.is_some() || now.gitlinks.is_none() {
            let Some(bytes) = &base.bytes else {
                return Err("the index from before is too large to write back".into());
            };
            let (dir, name) =
                crate::fsat::parent(git_dir, Path::new("index")).map_err(|e| e.to_string())?;
            return crate::fsat::write_file(&dir, &name, bytes, 0o644, owner_of(git_dir))
                .map_err(|e| e.to_string());
        }
        let empty = BTreeMap::new();
        let before = base.gitlinks.as_ref().unwrap_or(&empty);
        let after = now.gitlinks.as_ref().unwrap_or(&empty);
        let mut index = git2::Index::open(&git_dir.join("index")).map_err(|e| e.to_string())?;
        for p in after.keys() {
            if before.get(p) != after.get(p) {
                let _ = index.remove(Path::new(p), 0);
            }
        }
        for (p, oid) in before {
            if after.get(p) != Some(oid) {
                let id = git2::Oid::from_str(oid).map_err(|e| e.to_string())?;
                index
                    .add(&gitlink_entry(p, id))
                    .map_err(|e| e.to_string())?;
            }
        }
        index.write().map_err(|e| e.to_string())?;
        // Written by flocks (perhaps root): the repo's owner's again.
        let (uid, gid) = owner_of(git_dir);
        let _ = std::os::unix::fs::lchown(git_dir.join("index"), Some(uid), Some(gid));
        Ok(())
    }
}

/// The gitlinks of the index at `path`, read by libgit2 (which runs nothing).
fn gitlinks(path: &Path) -> Option<BTreeMap<String, String>> {
    let index = git2::Index::open(path).ok()?;
    Some(
        index
            .iter()
            .filter(|e| e.mode == 0o160000)
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.path).into_owned(),
                    e.id.to_string(),
                )
            })
            .collect(),
    )
}

#[cfg(test)]
pub(super) fn gitlink_entry_for_test(path: &str, id: git2::Oid) -> git2::IndexEntry {
    gitlink_entry(path, id)
}

fn gitlink_entry(path: &str, id: git2::Oid) -> git2::IndexEntry {
    let zero = git2::IndexTime::new(0, 0);
    git2::IndexEntry {
        ctime: zero,
        mtime: zero,
        dev: 0,
        ino: 0,
        mode: 0o160000,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// A regular file's bytes, read without following a link or blocking.
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    f.take(MAX_KEPT + 1).read_to_end(&mut bytes).ok()?;
    (bytes.len() as u64 <= MAX_KEPT).then_some(bytes)
}

/// The owner of the git dir (what a written-back index is given to).
fn owner_of(git_dir: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(git_dir)
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((0, 0))
}
