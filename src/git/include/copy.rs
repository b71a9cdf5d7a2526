//! Copying the selected files into a worktree without following links, one way: read from the checkout one component at a time, written under a temporary name and renamed into place.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fchmod, fstatat, mkdirat};

use super::*;

pub(super) const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Copy `set` into the worktree at `worktree` (a path flocks made), never
/// following a link inside it.
pub(crate) fn copy_into(set: &IncludeSet, worktree: &Path) -> Result<Copied, IncludeError> {
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
    pub(crate) fn open(&self, f: &IncludeFile) -> Result<std::fs::File, IncludeError> {
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
pub(super) struct Blocked(String);

/// The directory that holds `rel` in the worktree, made where missing, and
/// the file's name. Never follows a link.
pub(super) fn parent_dir(
    root: &OwnedFd,
    rel: &Path,
    modes: &[u32],
) -> Result<(OwnedFd, OsString), Blocked> {
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
pub(super) enum Existing {
    Missing,
    Dir,
    File {
        size: u64,
        mode: u32,
    },
    /// A link, a FIFO...: replaced.
    Other,
}

pub(super) fn existing(dir: &OwnedFd, name: &OsStr) -> std::io::Result<Existing> {
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

pub(super) static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Make `name` in `dir` a new regular file with `mode` and what `fill`
/// writes: under a new name first, then renamed over whatever is there (a
/// link is replaced, not followed).
pub(super) fn place(
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
pub(super) fn same_content(dir: &OwnedFd, name: &OsStr, src: &mut std::fs::File) -> bool {
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
pub(super) fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
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

pub(super) fn open_under(root: &Path, rel: &Path) -> std::io::Result<OwnedFd> {
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
