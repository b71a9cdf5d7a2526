//! A task's work: `origin..tip`, over all its attempts. The one place that
//! says which commits are a task's; `land` (plan, `--bisect`, `--resolve`),
//! `start_from = "dependencies"`, `clean` and `flocks diff` all ask it.
//!
//! The origin is the commit the task's branch started from (the base, or the
//! start `start_from = "dependencies"` built); only `retry --fresh` and a
//! `land --resolve` redo set a new one. The tip is where the successful
//! attempt left the branch. Attempt records keep their own start and end, but
//! only for history.

use git2::{Oid, Repository, Sort};

use crate::error::{Context, Result};
use crate::state::TaskRecord;

/// A succeeded task's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskRange {
    pub origin: Oid,
    pub tip: Oid,
    /// The attempt that succeeded (its end is the tip).
    pub attempt: u32,
    /// When that attempt ended (unix seconds), if recorded.
    pub ended: Option<i64>,
}

/// Why a task has no range to land (each says what to do, after "it").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NoRange {
    /// It has not succeeded: its status label.
    NotSucceeded(&'static str),
    /// Its origin or tip was never recorded.
    NotRecorded { attempt: u32 },
    /// A commit of its range is not in the repository.
    Missing(Oid),
    /// Its origin is not an ancestor of its tip: the branch was rewritten.
    Rewritten { id: String, origin: Oid, tip: Oid },
}

impl std::fmt::Display for NoRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRange::NotSucceeded(label) => write!(f, "it has not succeeded (it is {label})"),
            NoRange::NotRecorded { attempt } => write!(
                f,
                "its origin or tip (attempt {attempt}) was never recorded, so flocks cannot tell what it made"
            ),
            NoRange::Missing(c) => write!(
                f,
                "commit {c} of its recorded range is not in the repository (was it garbage-collected?)"
            ),
            NoRange::Rewritten { id, origin, tip } => write!(
                f,
                "its branch was rewritten by hand: the commit it started from ({}) is no longer an \
                 ancestor of its tip ({}), so flocks cannot tell which commits are the task's work; \
                 redo it from scratch with `flocks retry --fresh {id}`, or land it by hand",
                short(*origin),
                short(*tip)
            ),
        }
    }
}

/// The work of a succeeded task: `origin..tip`, checked against `repo` (both
/// commits present, the origin an ancestor of the tip).
pub(crate) fn task_range(
    repo: &Repository,
    t: &TaskRecord,
) -> std::result::Result<TaskRange, NoRange> {
    let Some(attempt) = t.successful_attempt() else {
        return Err(NoRange::NotSucceeded(t.status.label()));
    };
    let parse = |s: Option<&str>| s.and_then(|s| s.parse::<Oid>().ok());
    let origin = t.origin_commit();
    let (Some(origin), Some(tip)) = (parse(origin.as_deref()), parse(attempt.end_tip.as_deref()))
    else {
        return Err(NoRange::NotRecorded {
            attempt: attempt.number,
        });
    };
    for c in [origin, tip] {
        if repo.find_commit(c).is_err() {
            return Err(NoRange::Missing(c));
        }
    }
    if origin != tip && !repo.graph_descendant_of(tip, origin).unwrap_or(false) {
        return Err(NoRange::Rewritten {
            id: t.id.clone(),
            origin,
            tip,
        });
    }
    Ok(TaskRange {
        origin,
        tip,
        attempt: attempt.number,
        ended: attempt.ended_at.map(|t| t.timestamp()),
    })
}

/// One commit of a range.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: Oid,
    pub summary: String,
    pub author: String,
}

/// The commits of `start..tip`, oldest first.
pub(crate) fn commits(repo: &Repository, start: Oid, tip: Oid) -> Result<Vec<CommitInfo>> {
    if start == tip {
        return Ok(Vec::new());
    }
    let mut walk = repo.revwalk().ctx(|| "walk the task's commits".into())?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)
        .ctx(|| "walk the task's commits".into())?;
    walk.push(tip).ctx(|| format!("walk from {tip}"))?;
    walk.hide(start).ctx(|| format!("hide {start}"))?;
    let mut out = Vec::new();
    for oid in walk {
        let oid = oid.ctx(|| "walk the task's commits".into())?;
        let c = repo.find_commit(oid).ctx(|| format!("read commit {oid}"))?;
        let summary = String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned();
        let author = String::from_utf8_lossy(c.author().name_bytes()).into_owned();
        out.push(CommitInfo {
            id: oid,
            summary,
            author,
        });
    }
    Ok(out)
}

pub(crate) fn short(oid: Oid) -> String {
    oid.to_string()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::testing::init_repo;
    use crate::state::{Attempt, Outcome, TaskStatus};

    fn commit(repo: &Repository, parent: Oid, name: &str) -> Oid {
        let parent = repo.find_commit(parent).unwrap();
        let mut tb = repo.treebuilder(Some(&parent.tree().unwrap())).unwrap();
        let blob = repo.blob(name.as_bytes()).unwrap();
        tb.insert(name, blob, 0o100644).unwrap();
        let tree = repo.find_tree(tb.write().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        repo.commit(None, &sig, &sig, name, &tree, &[&parent])
            .unwrap()
    }

    fn record(origin: Oid, attempts: &[(Oid, Oid, Outcome)]) -> TaskRecord {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let state: crate::state::State = serde_json::from_str(text).unwrap();
        let mut t = state.tasks[0].clone();
        let proto = t.attempts[0].clone();
        t.origin = Some(origin.to_string());
        t.attempts = attempts
            .iter()
            .enumerate()
            .map(|(i, (s, e, o))| Attempt {
                number: i as u32 + 1,
                start_commit: Some(s.to_string()),
                end_tip: Some(e.to_string()),
                outcome: Some(o.clone()),
                ..proto.clone()
            })
            .collect();
        t.status = TaskStatus::Done {
            outcome: attempts.last().unwrap().2.clone(),
        };
        t
    }

    #[test]
    fn the_range_spans_every_attempt() {
        let dir = tempfile::tempdir().unwrap();
        init_repo(dir.path());
        let repo = Repository::open(dir.path()).unwrap();
        let base = repo.head().unwrap().target().unwrap();
        let one = commit(&repo, base, "one");
        let two = commit(&repo, one, "two");
        let failed = Outcome::Failed { reason: "x".into() };
        let t = record(base, &[(base, one, failed), (one, two, Outcome::Success)]);
        let r = task_range(&repo, &t).unwrap();
        assert_eq!((r.origin, r.tip, r.attempt), (base, two, 2));
        let ids: Vec<Oid> = commits(&repo, r.origin, r.tip)
            .unwrap()
            .iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, vec![one, two]);
    }

    #[test]
    fn a_rewritten_branch_has_no_range() {
        let dir = tempfile::tempdir().unwrap();
        init_repo(dir.path());
        let repo = Repository::open(dir.path()).unwrap();
        let base = repo.head().unwrap().target().unwrap();
        let one = commit(&repo, base, "one");
        let other = commit(&repo, base, "other");
        let t = record(one, &[(one, other, Outcome::Success)]);
        let e = task_range(&repo, &t).unwrap_err();
        assert!(matches!(e, NoRange::Rewritten { .. }), "{e}");
        assert!(
            e.to_string().contains("flocks retry --fresh fix-login"),
            "{e}"
        );
        let t = record(base, &[(base, one, Outcome::Failed { reason: "x".into() })]);
        assert_eq!(task_range(&repo, &t), Err(NoRange::NotSucceeded("failed")));
    }
}
