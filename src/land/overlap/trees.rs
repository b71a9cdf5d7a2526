//! What commits and trees change, path by path, and the small tree helpers
//! the merges use.

use std::collections::BTreeSet;

use git2::{Oid, Repository};

use crate::error::{Context, Result};
use crate::land::plan::{PlanStatus, PlannedTask};

/// A blob or tree entry: its id and file mode.
pub(super) type Val = (Oid, u32);

/// One path a commit changes.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) path: String,
    pub(super) old: Option<Val>,
    pub(super) new: Option<Val>,
}

/// The changes of one commit.
#[derive(Debug, Clone)]
pub(super) struct CommitChanges {
    pub(super) id: Oid,
    pub(super) changes: Vec<Change>,
}

/// The paths each of a planned task's commits changes (no rename detection:
/// a rename is its two paths).
pub(super) fn commit_changes(repo: &Repository, t: &PlannedTask) -> Result<Vec<CommitChanges>> {
    if t.status != PlanStatus::Ready {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in &t.commits {
        let commit = repo
            .find_commit(c.id)
            .ctx(|| format!("read commit {}", c.id))?;
        let tree = commit.tree().ctx(|| format!("read the tree of {}", c.id))?;
        let parent = commit
            .parent(0)
            .and_then(|p| p.tree())
            .ctx(|| format!("read the parent of {}", c.id))?;
        let mut changes = Vec::new();
        diff_trees(repo, Some(&parent), Some(&tree), "", &mut changes)?;
        out.push(CommitChanges { id: c.id, changes });
    }
    Ok(out)
}

/// The files (blobs, links, submodules) that differ between two trees, as
/// `git diff` without rename detection lists them; subtrees alike on both
/// sides are not read.
pub(super) fn diff_trees(
    repo: &Repository,
    old: Option<&git2::Tree<'_>>,
    new: Option<&git2::Tree<'_>>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<()> {
    use std::collections::BTreeMap;
    type Item = (Oid, u32, bool);
    let entries = |t: Option<&git2::Tree<'_>>| -> BTreeMap<String, Item> {
        t.map(|t| {
            t.iter()
                .map(|e| {
                    let name = String::from_utf8_lossy(e.name_bytes()).into_owned();
                    let tree = e.kind() == Some(git2::ObjectType::Tree);
                    (name, (e.id(), e.filemode() as u32, tree))
                })
                .collect()
        })
        .unwrap_or_default()
    };
    let (a, b) = (entries(old), entries(new));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let subtree = |id: Oid| repo.find_tree(id).ctx(|| format!("read tree {id}"));
    for name in names {
        let path = format!("{prefix}{name}");
        let (x, y) = (a.get(name), b.get(name));
        if let (Some(x), Some(y)) = (x, y)
            && x.0 == y.0
            && x.1 == y.1
        {
            continue;
        }
        let file = |i: Option<&Item>| i.filter(|i| !i.2).map(|i| (i.0, i.1));
        let dir = |i: Option<&Item>| i.filter(|i| i.2).map(|i| i.0);
        let (dx, dy) = (dir(x), dir(y));
        if dx.is_some() || dy.is_some() {
            let tx = dx.map(subtree).transpose()?;
            let ty = dy.map(subtree).transpose()?;
            diff_trees(repo, tx.as_ref(), ty.as_ref(), &format!("{path}/"), out)?;
        }
        let (fx, fy) = (file(x), file(y));
        if fx.is_some() || fy.is_some() {
            out.push(Change {
                path,
                old: fx,
                new: fy,
            });
        }
    }
    Ok(())
}

/// The git2 file mode of a raw mode.
pub(super) fn file_mode(mode: u32) -> git2::FileMode {
    match mode {
        0o100755 => git2::FileMode::BlobExecutable,
        0o120000 => git2::FileMode::Link,
        0o160000 => git2::FileMode::Commit,
        0o040000 => git2::FileMode::Tree,
        _ => git2::FileMode::Blob,
    }
}

/// The empty tree, written to the object store.
pub(super) fn empty_tree(repo: &Repository) -> Result<git2::Tree<'_>> {
    let id = repo
        .treebuilder(None)
        .and_then(|b| b.write())
        .ctx(|| "write the empty tree".into())?;
    repo.find_tree(id).ctx(|| "read the empty tree".into())
}
