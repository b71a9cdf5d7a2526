//! File ownership across the host/container boundary. The agent runs as the
//! owner of the repo; when flocks itself runs as root (CI, a root shell), the
//! worktrees, refs and objects it writes on the host would be root's, and the
//! agent could not write them. So flocks hands what it wrote back to the owner.
//!
//! The agent can swap any name under the repo for a symlink at any moment, so
//! nothing here resolves a path it could have planted: the walk holds each
//! directory open and works relative to it (`openat`, `fstatat`, `fchownat`),
//! never following a symlink (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`): a link is
//! given to the owner itself, its target never.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use nix::dir::Dir;
use nix::fcntl::{AtFlags, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, fchown, fchownat};

/// The owner (uid, gid) of a path.
pub(super) fn owner_of(path: &Path) -> std::io::Result<(u32, u32)> {
    let m = std::fs::metadata(path)?;
    Ok((m.uid(), m.gid()))
}

/// Whether flocks must hand files back to `owner`: it runs as root and the
/// repo belongs to someone else.
pub(super) fn needs_fixing(owner: (u32, u32)) -> bool {
    nix::unistd::geteuid().is_root() && owner.0 != 0
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Open `path` as a directory: `trusted` (a path flocks resolved itself, such
/// as the repo) by its full path, then every component below it one at a
/// time, refusing links. None when that is not a directory reached that way.
fn open_dir(trusted: &Path, path: &Path) -> Option<OwnedFd> {
    let (mut fd, rest) = match path.strip_prefix(trusted) {
        Ok(rest) => (
            open(
                trusted,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .ok()?,
            rest,
        ),
        Err(_) => (open(path, DIR_FLAGS, Mode::empty()).ok()?, Path::new("")),
    };
    for c in rest.components() {
        let Component::Normal(name) = c else {
            return None;
        };
        fd = openat(&fd, name, DIR_FLAGS, Mode::empty()).ok()?;
    }
    Some(fd)
}

fn differs(uid: u32, gid: u32, owner: (u32, u32)) -> bool {
    uid != owner.0 || gid != owner.1
}

fn ids(owner: (u32, u32)) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(owner.0)), Some(Gid::from_raw(owner.1)))
}

/// Give the directory `path` itself (not what is in it) to `owner`.
pub(super) fn give_back_one(trusted: &Path, path: &Path, owner: (u32, u32)) {
    if let Some(fd) = open_dir(trusted, path) {
        give_fd(&fd, owner);
    }
}

fn give_fd(fd: &OwnedFd, owner: (u32, u32)) {
    if let Ok(st) = fstat(fd)
        && differs(st.st_uid, st.st_gid, owner)
    {
        let (u, g) = ids(owner);
        let _ = fchown(fd, u, g);
    }
}

/// Give the directory `root` and everything under it that is not `owner`'s
/// to `owner` (symlinks themselves, never their targets).
pub(super) fn give_back(trusted: &Path, root: &Path, owner: (u32, u32)) {
    let Some(fd) = open_dir(trusted, root) else {
        return;
    };
    give_fd(&fd, owner);
    let mut stack = vec![fd];
    while let Some(dir_fd) = stack.pop() {
        let Ok(dup) = dir_fd.try_clone() else {
            continue;
        };
        let Ok(mut dir) = Dir::from_fd(dup) else {
            continue;
        };
        let names: Vec<std::ffi::CString> = dir
            .iter()
            .flatten()
            .map(|e| e.file_name().to_owned())
            .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
            .collect();
        for name in names {
            let Ok(st) = fstatat(
                dir_fd.as_fd(),
                name.as_c_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            if differs(st.st_uid, st.st_gid, owner) {
                let (u, g) = ids(owner);
                let _ = fchownat(
                    dir_fd.as_fd(),
                    name.as_c_str(),
                    u,
                    g,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                );
            }
            let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
            // Swapped for a link since the stat: O_NOFOLLOW refuses it.
            if is_dir && let Ok(sub) = openat(&dir_fd, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                stack.push(sub);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link to a file outside, planted where a directory or file was, is
    /// never followed: the outside file keeps its owner.
    #[test]
    fn links_are_never_followed_as_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test chowns files to another user, so it needs root: run the tests as root \
             (CI does), or leave the root-only tests out with `cargo nextest run --profile skip-root`"
        );
        let d = tempfile::tempdir().unwrap();
        let repo = d.path().join("repo");
        std::fs::create_dir_all(repo.join(".git/objects/ab")).unwrap();
        std::fs::write(repo.join(".git/objects/ab/cd"), "x").unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::os::unix::fs::symlink(&secret, repo.join(".git/objects/link")).unwrap();
        std::os::unix::fs::symlink(d.path(), repo.join(".git/objects/dirlink")).unwrap();
        give_back(&repo, &repo.join(".git"), (1000, 1000));
        assert_eq!(owner_of(&secret).unwrap().0, 0);
        assert_eq!(owner_of(d.path()).unwrap().0, 0);
        assert_eq!(
            owner_of(&repo.join(".git/objects/ab/cd")).unwrap(),
            (1000, 1000)
        );
        let link = std::fs::symlink_metadata(repo.join(".git/objects/link")).unwrap();
        assert_eq!(link.uid(), 1000);
        // A root given as a link is not walked at all.
        std::os::unix::fs::symlink(d.path(), repo.join("wt")).unwrap();
        give_back(&repo, &repo.join("wt"), (1000, 1000));
        assert_eq!(owner_of(&secret).unwrap().0, 0);
    }
}
