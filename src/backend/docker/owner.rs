//! File ownership across the host/container boundary. The agent runs as the
//! owner of the repo; when flocks itself runs as root (CI, a root shell), the
//! worktrees, refs and objects it writes on the host would be root's, and the
//! agent could not write them. So flocks hands what it wrote back to the owner.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The owner (uid, gid) of a path.
pub fn owner_of(path: &Path) -> std::io::Result<(u32, u32)> {
    let m = std::fs::metadata(path)?;
    Ok((m.uid(), m.gid()))
}

/// Whether flocks must hand files back to `owner`: it runs as root and the
/// repo belongs to someone else.
pub fn needs_fixing(owner: (u32, u32)) -> bool {
    nix::unistd::geteuid().is_root() && owner.0 != 0
}

/// Give `path` itself (not what is in it) to `owner`.
pub fn give_back_one(path: &Path, owner: (u32, u32)) {
    if let Ok(m) = std::fs::symlink_metadata(path)
        && (m.uid() != owner.0 || m.gid() != owner.1)
    {
        let _ = std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1));
    }
}

/// Give everything under `root` that is not `owner`'s to `owner` (symlinks
/// themselves, never their targets).
pub fn give_back(root: &Path, owner: (u32, u32)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.uid() != owner.0 || m.gid() != owner.1 {
            let _ = std::os::unix::fs::lchown(&p, Some(owner.0), Some(owner.1));
        }
        if m.is_dir()
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
}
