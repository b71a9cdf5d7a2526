//! Disk: the free space of a filesystem (statvfs), the space used under a
//! directory (walked without following links, within a time budget), and
//! removing old log files (`flocks clean --logs --older-than`), by descriptor.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// A filesystem's size and what is free on it for an unprivileged user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Free {
    pub free: u64,
    pub total: u64,
}

/// Debug and test builds only: a file holding the free space to report, in
/// GiB (a decimal number), instead of the filesystem's. Lets tests drive the
/// `min_free_disk_gb` rule without filling a disk; release builds ignore it.
pub(crate) const TEST_FREE_FILE_VAR: &str = "FLOCKS_TEST_FREE_DISK_GB_FILE";

/// The free space of the filesystem that holds `path` (or its nearest
/// existing parent).
pub(crate) fn free_space(path: &Path) -> std::io::Result<Free> {
    if cfg!(debug_assertions)
        && let Some(file) = std::env::var_os(TEST_FREE_FILE_VAR)
        && let Ok(text) = std::fs::read_to_string(&file)
        && let Ok(gb) = text.trim().parse::<f64>()
    {
        let free = (gb.max(0.0) * crate::config::GIB as f64) as u64;
        return Ok(Free {
            free,
            total: free.max(crate::config::GIB * 100),
        });
    }
    let mut at = path;
    while !at.exists() {
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    let st = nix::sys::statvfs::statvfs(at).map_err(std::io::Error::from)?;
    let frag = st.fragment_size() as u64;
    Ok(Free {
        free: (st.blocks_available() as u64).saturating_mul(frag),
        total: (st.blocks() as u64).saturating_mul(frag),
    })
}

/// The filesystem with the least free space among those holding `dirs`,
/// and which of `dirs` it holds. An error when none can say.
pub(crate) fn lowest_free(dirs: &[PathBuf]) -> std::io::Result<(Free, PathBuf)> {
    let mut best: Option<(Free, PathBuf)> = None;
    let mut last_err = None;
    for d in dirs {
        match free_space(d) {
            Ok(f) if best.as_ref().is_none_or(|(b, _)| f.free < b.free) => {
                best = Some((f, d.clone()))
            }
            Ok(_) => {}
            Err(e) => last_err = Some(e),
        }
    }
    best.ok_or_else(|| last_err.unwrap_or_else(|| std::io::Error::other("no directory to read")))
}

/// The filesystem (device) that holds `path`, or its nearest existing parent.
pub(crate) fn device_of(path: &Path) -> Option<u64> {
    path.ancestors()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.dev())
}

/// The space used under a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Bytes on disk (allocated blocks, as `du` counts them).
    pub bytes: u64,
    /// Every file was counted (false: the budget ran out; `bytes` is a lower bound).
    pub complete: bool,
}

/// The space used under `root`, without following symbolic links and
/// without the entries of `root` named in `skip`. Stops at `deadline`
/// (then `complete` is false). A missing `root` uses nothing.
pub(crate) fn usage(root: &Path, skip: &[&str], deadline: Option<Instant>) -> Usage {
    let mut bytes = 0u64;
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut seen = 0u32;
    let mut top = true;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            top = false;
            continue;
        };
        for e in entries.flatten() {
            if top && skip.iter().any(|s| e.file_name() == *s) {
                continue;
            }
            seen += 1;
            if seen.is_multiple_of(256)
                && let Some(d) = deadline
                && Instant::now() >= d
            {
                return Usage {
                    bytes,
                    complete: false,
                };
            }
            // `DirEntry::metadata` does not follow a symbolic link.
            let Ok(meta) = e.metadata() else { continue };
            bytes = bytes.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                stack.push(e.path());
            }
        }
        top = false;
    }
    Usage {
        bytes,
        complete: true,
    }
}

/// What [`remove_old_files`] did.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub files: usize,
    pub bytes: u64,
    /// Files that could not be removed, with why.
    pub failed: Vec<(PathBuf, String)>,
    /// What flocks found in place of the directory and replaced, for people.
    pub notes: Vec<String>,
}

/// Remove the regular files under `root` last changed more than `age` ago,
/// then the directories left empty (never `root` itself). The walk holds
/// each directory open and works relative to it without following a link
/// (agents can rewrite `.flocks/`): a link is removed as a file is, its
/// target never; a link where `root` was is replaced by an empty directory.
/// The first-level entries named in `keep` stay, whatever their age.
pub(crate) fn remove_old_files(root: &Path, age: Duration, keep: &HashSet<String>) -> Removed {
    let mut removed = Removed::default();
    let cutoff = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let dir = match crate::fsat::dir(root, false) {
        Ok((d, _)) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return removed,
        Err(_) => match crate::fsat::dir(root, true) {
            Ok((d, notes)) => {
                removed.notes = notes;
                d
            }
            Err(e) => {
                removed.failed.push((root.to_path_buf(), e.to_string()));
                return removed;
            }
        },
    };
    for name in names_in(&dir) {
        if keep.contains(&*name.to_string_lossy()) {
            continue;
        }
        let path = root.join(&name);
        remove_under(&dir, &name, &path, cutoff, &mut removed);
    }
    removed
}

/// The names in directory `dir` (not `.` and `..`).
fn names_in(dir: &OwnedFd) -> Vec<OsString> {
    use std::os::unix::ffi::OsStrExt;
    let Ok(fd) = dir.try_clone() else {
        return Vec::new();
    };
    let Ok(mut d) = nix::dir::Dir::from_fd(fd) else {
        return Vec::new();
    };
    d.iter()
        .flatten()
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect()
}

/// Remove the old files at or under `name` in `dir` (`path` for people);
/// true when it is gone.
fn remove_under(
    dir: &OwnedFd,
    name: &OsString,
    path: &Path,
    cutoff: SystemTime,
    removed: &mut Removed,
) -> bool {
    use nix::fcntl::{AtFlags, OFlag, openat};
    use nix::sys::stat::{Mode, SFlag, fstatat};
    use nix::unistd::{UnlinkatFlags, unlinkat};
    let Ok(st) = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
        return false;
    };
    let modified = SystemTime::UNIX_EPOCH
        + Duration::new(
            u64::try_from(st.st_mtime).unwrap_or(0),
            u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        );
    let old = modified < cutoff;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        // Swapped for a link since: left alone.
        let Ok(sub) = openat(dir, name.as_os_str(), flags, Mode::empty()) else {
            return false;
        };
        let before = removed.files;
        let mut all_gone = true;
        for n in names_in(&sub) {
            all_gone &= remove_under(&sub, &n, &path.join(&n), cutoff, removed);
        }
        // A directory emptied here goes too; one that was empty already
        // goes once it is old.
        return all_gone
            && (removed.files > before || old)
            && unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir).is_ok();
    }
    if !old {
        return false;
    }
    match unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => {
            removed.files += 1;
            removed.bytes = removed
                .bytes
                .saturating_add(u64::try_from(st.st_blocks).unwrap_or(0).saturating_mul(512));
            true
        }
        Err(e) => {
            removed.failed.push((path.to_path_buf(), e.to_string()));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs);
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn usage_counts_files_not_link_targets_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join(".spare/0")).unwrap();
        std::fs::write(root.join("a/b/f"), vec![1u8; 100_000]).unwrap();
        std::fs::write(root.join(".spare/0/g"), vec![1u8; 300_000]).unwrap();
        let outside = dir.path().join("big");
        std::fs::write(&outside, vec![1u8; 1_000_000]).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a/link")).unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("a/dirlink")).unwrap();
        let all = usage(&root, &[], None);
        assert!(all.complete);
        assert!(all.bytes >= 400_000 && all.bytes < 600_000, "{all:?}");
        let some = usage(&root, &[".spare"], None);
        assert!(some.bytes >= 100_000 && some.bytes < 200_000, "{some:?}");
        assert_eq!(usage(&dir.path().join("none"), &[], None).bytes, 0);
        // Out of time: a lower bound, said as such.
        for i in 0..600 {
            std::fs::write(root.join(format!("a/{i}")), "x").unwrap();
        }
        let cut = usage(&root, &[], Some(Instant::now()));
        assert!(!cut.complete);
    }

    #[test]
    fn old_files_go_new_and_kept_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "old/1.log",
            "old/2.log",
            "mixed/1.log",
            "mixed/2.log",
            "run/1.log",
        ] {
            let path = root.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "log").unwrap();
        }
        for p in ["old/1.log", "old/2.log", "mixed/1.log", "run/1.log"] {
            age(&root.join(p), 8 * 86400);
        }
        let keep: HashSet<String> = ["run".to_string()].into();
        let r = remove_old_files(root, Duration::from_secs(7 * 86400), &keep);
        assert_eq!(r.files, 3, "{r:?}");
        assert!(!root.join("old").exists());
        assert!(!root.join("mixed/1.log").exists());
        assert!(root.join("mixed/2.log").exists());
        assert!(root.join("run/1.log").exists());
    }

    #[test]
    fn links_are_removed_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".flocks");
        let victim = dir.path().join("victim");
        std::fs::create_dir_all(state.join("logs/t")).unwrap();
        std::fs::create_dir_all(victim.join("sub")).unwrap();
        for p in ["victim/a", "victim/sub/b"] {
            std::fs::write(dir.path().join(p), "keep").unwrap();
            age(&dir.path().join(p), 8 * 86400);
        }
        std::os::unix::fs::symlink(&victim, state.join("land-logs")).unwrap();
        std::os::unix::fs::symlink(&victim, state.join("logs/t/dir")).unwrap();
        let week = Duration::from_secs(7 * 86400);
        let r = remove_old_files(&state.join("land-logs"), week, &HashSet::new());
        assert_eq!(r.files, 0, "{r:?}");
        assert!(
            r.notes[0].starts_with(".flocks/land-logs was a link"),
            "{r:?}"
        );
        assert!(state.join("land-logs").is_dir());
        let r = remove_old_files(&state.join("logs"), Duration::ZERO, &HashSet::new());
        assert_eq!(r.files, 1, "the link itself goes: {r:?}");
        assert!(victim.join("a").exists() && victim.join("sub/b").exists());
    }

    #[test]
    fn free_space_of_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let f = free_space(&dir.path().join("not/yet")).unwrap();
        assert!(f.total > 0 && f.free <= f.total, "{f:?}");
    }
}
