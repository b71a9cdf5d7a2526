//! The refs half of the guard: where every ref points, and putting back
//! what an agent moved, added or removed (but the tasks' own branches and
//! flocks' `refs/flocks/` namespace).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Refs flocks itself moves while attempts run: the tasks' branches, on
/// every backend of the run. One set per run ([`super::Guards`]), shared by
/// each repository's guard.
#[derive(Clone, Default)]
pub(super) struct Exempt(Arc<Mutex<HashSet<String>>>);

impl Exempt {
    /// A task's branch: flocks creates and moves it while other attempts
    /// run, and its own agent commits to it, so the ref guard leaves it be.
    pub(super) fn insert(&self, branch: &str) {
        self.lock().insert(format!("refs/heads/{branch}"));
    }

    /// flocks is done moving `branch`: it is guarded again.
    pub(super) fn remove(&self, branch: &str) {
        self.lock().remove(&format!("refs/heads/{branch}"));
    }

    /// The exempt refs now.
    pub(super) fn now(&self) -> HashSet<String> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every ref and where it points (`<oid>` or `-> <name>` for a symbolic one).
pub(super) fn refs(git_dir: &Path) -> Result<BTreeMap<String, String>, git2::Error> {
    let repo = git2::Repository::open_bare(git_dir)?;
    let mut out = BTreeMap::new();
    for r in repo.references()?.flatten() {
        let Ok(name) = r.name() else { continue };
        let to = match (r.target(), r.symbolic_target()) {
            (Some(oid), _) => oid.to_string(),
            (None, Ok(Some(s))) => format!("-> {s}"),
            _ => continue,
        };
        out.insert(name.to_string(), to);
    }
    Ok(out)
}

/// Whether flocks itself may move `name` while attempts run.
fn is_exempt(name: &str, exempt: &HashSet<String>) -> bool {
    exempt.contains(name) || name.starts_with("refs/flocks/")
}

/// Put every moved, added or removed ref (but the exempt ones) back where it
/// was; what was done, for people.
pub(super) fn restore_refs(
    git_dir: &Path,
    base: &BTreeMap<String, String>,
    exempt: &HashSet<String>,
) -> Vec<String> {
    let Ok(now) = refs(git_dir) else {
        return vec!["the refs could not be read".into()];
    };
    let Ok(repo) = git2::Repository::open_bare(git_dir) else {
        return vec!["the refs could not be read".into()];
    };
    let mut out = Vec::new();
    let msg = "flocks: undo a ref change made by an agent";
    for (name, to) in &now {
        if is_exempt(name, exempt) || base.get(name) == Some(to) {
            continue;
        }
        let done = match base.get(name) {
            None => repo
                .find_reference(name)
                .and_then(|mut r| r.delete())
                .map(|()| format!("{name} added (at {to}; removed)")),
            Some(old) => set_ref(&repo, name, old, msg)
                .map(|()| format!("{name} moved from {old} to {to} (moved back)")),
        };
        out.push(
            done.unwrap_or_else(|e| format!("{name} changed to {to} (restoring failed: {e})")),
        );
    }
    for (name, old) in base {
        if is_exempt(name, exempt) || now.contains_key(name) {
            continue;
        }
        out.push(
            set_ref(&repo, name, old, msg)
                .map(|()| format!("{name} removed (restored at {old})"))
                .unwrap_or_else(|e| format!("{name} removed (restoring failed: {e})")),
        );
    }
    out
}

fn set_ref(repo: &git2::Repository, name: &str, to: &str, msg: &str) -> Result<(), git2::Error> {
    match to.strip_prefix("-> ") {
        Some(target) => repo.reference_symbolic(name, target, true, msg).map(|_| ()),
        None => repo
            .reference(name, git2::Oid::from_str(to)?, true, msg)
            .map(|_| ()),
    }
}

/// Where one ref points now, as [`refs`] writes it.
pub(super) fn target_of(git_dir: &Path, name: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(git_dir).ok()?;
    let r = repo.find_reference(name).ok()?;
    match (r.target(), r.symbolic_target()) {
        (Some(oid), _) => Some(oid.to_string()),
        (None, Ok(Some(s))) => Some(format!("-> {s}")),
        _ => None,
    }
}
