//! Directory-fd-relative file operations that never follow a link: what
//! flocks (perhaps root) does where agents can rewrite things under it at any
//! moment: in `.git` (the guard's restores, here), under `.flocks/` (logs,
//! state, locks, events: [`below`]).

mod below;

pub(crate) use below::{
    append, create, dir, open_lock, read, read_to_string, remove_all, remove_in, rename, rename_in,
    tell, write_atomic,
};

use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, unlinkat};

pub(crate) const DIR: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// The directory that holds `rel` (under the trusted `root`), and its name.
pub(crate) fn parent(root: &Path, rel: &Path) -> std::io::Result<(OwnedFd, OsString)> {
    let mut fd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let parts: Vec<Component> = rel.components().collect();
    let Some((Component::Normal(last), dirs)) = parts.split_last() else {
        return Err(Errno::EINVAL.into());
    };
    for c in dirs {
        let Component::Normal(n) = c else {
            return Err(Errno::EINVAL.into());
        };
        fd = openat(&fd, *n, DIR, Mode::empty())?;
    }
    Ok((fd, last.to_os_string()))
}

/// Remove `name` in `dir`, whatever it is (a directory with all it holds).
pub(crate) fn remove_tree(dir: &OwnedFd, name: &OsString) -> std::io::Result<()> {
    match unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) => return Ok(()),
        Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    let sub = openat(dir, name.as_os_str(), DIR, Mode::empty())?;
    let names: Vec<OsString> = {
        let mut d = nix::dir::Dir::from_fd(sub.try_clone()?)?;
        d.iter()
            .flatten()
            .map(|e| {
                use std::os::unix::ffi::OsStrExt;
                std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string()
            })
            .filter(|n| n != "." && n != "..")
            .collect()
    };
    for n in &names {
        remove_tree(&sub, n)?;
    }
    unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::RemoveDir)?;
    Ok(())
}

fn give(fd: &OwnedFd, mode: u32, owner: (u32, u32)) -> std::io::Result<()> {
    fchmod(fd, Mode::from_bits_truncate(mode))?;
    // Not root: the files are already the user's.
    let _ = fchown(
        fd,
        Some(Uid::from_raw(owner.0)),
        Some(Gid::from_raw(owner.1)),
    );
    Ok(())
}

pub(crate) fn make_dir(
    dir: &OwnedFd,
    name: &OsString,
    mode: u32,
    owner: (u32, u32),
) -> std::io::Result<()> {
    match mkdirat(dir, name.as_os_str(), Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = openat(dir, name.as_os_str(), DIR, Mode::empty())?;
    give(&fd, mode, owner)
}

pub(crate) fn write_file(
    dir: &OwnedFd,
    name: &OsString,
    bytes: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> std::io::Result<()> {
    match remove_tree(dir, name) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = openat(
        dir,
        name.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let mut f = std::fs::File::from(fd);
    std::io::Write::write_all(&mut f, bytes)?;
    give(&OwnedFd::from(f), mode, owner)
}
