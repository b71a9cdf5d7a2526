//! Paths as flocks compares and names them: a path cleaned lexically, and
//! the project key a state directory gives. Below config, git and state,
//! which all use them.

use std::path::{Path, PathBuf};

/// Lexically clean a path (`a/./b/../c` -> `a/c`) without touching the disk.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The project key of the project whose `.flocks/` is `state_dir`: of its
/// path, with the directory that holds it resolved and `.flocks` itself
/// not (an agent that replaces `.flocks` with a link, or moves it aside and
/// makes a new one, does not change the key).
pub fn key_of(state_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let dir = match (state_dir.parent(), state_dir.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent
                .canonicalize()
                .map(|p| p.join(name))
                .unwrap_or_else(|_| state_dir.to_path_buf())
        }
        _ => state_dir.to_path_buf(),
    };
    let d = Sha256::digest(dir.display().to_string().as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}
