//! `run --dry-run`: the checks a real run makes, with the same errors and
//! exit codes, then which pool each task would go to, in dependency order.

use std::collections::HashMap;
use std::path::PathBuf;

use super::preflight::{check_agents, check_branches, check_repo};
use crate::error::Result;
use crate::project::Project;
use crate::tasks::{TaskSet, dependency_order};

/// One task of the dry-run plan.
pub(crate) struct PlannedRun {
    /// 1-based position in dependency order.
    pub order: usize,
    pub id: String,
    pub branch: String,
    pub worktree: PathBuf,
    /// The pool it would go to; `None`: it succeeded already and is skipped.
    pub pool: Option<String>,
    pub depends_on: Vec<String>,
    /// `new`, `landed`, or its status label.
    pub status: &'static str,
    /// Its footprint lane (1-based): tasks whose declared footprints overlap,
    /// directly or through each other, run one after the other. None: no
    /// declared footprint overlaps its own.
    pub lane: Option<usize>,
    /// The earlier tasks of its lane whose footprints overlap its own: it
    /// waits for them and starts from their work.
    pub waits_for: Vec<String>,
}

/// Check as a run would, then plan the pools without running anything.
pub(crate) fn plan(project: &Project, tasks: &TaskSet) -> Result<Vec<PlannedRun>> {
    let config = &project.config;
    let repo = check_repo(config)?;
    check_agents(config)?;
    let state = project.store.load()?;
    check_branches(&repo, &state, tasks)?;
    drop(repo);
    let landed = crate::land::landed_ids(project, &state);
    let order = dependency_order(&tasks.tasks).unwrap_or_else(|_| (0..tasks.tasks.len()).collect());
    let before = crate::tasks::footprint_before(tasks, &order);
    let lanes = lanes(tasks, &order, &before);
    let mut assigned = vec![0usize; config.pools.len()];
    let mut rows = Vec::new();
    for (step, &i) in order.iter().enumerate() {
        let t = &tasks.tasks[i];
        let status = match state.task(&t.id) {
            Some(_) if landed.contains(&t.id) => crate::view::LANDED,
            Some(r) => r.status.label(),
            None => "new",
        };
        let skip = state.task(&t.id).is_some_and(|r| r.status.is_success());
        let pool = if skip {
            None
        } else {
            let p = (0..config.pools.len())
                .min_by(|&a, &b| {
                    let la = assigned[a] as f64 / config.pools[a].max_worktrees as f64;
                    let lb = assigned[b] as f64 / config.pools[b].max_worktrees as f64;
                    la.partial_cmp(&lb).unwrap_or(std::cmp::Ordering::Equal)
                })
                .unwrap_or(0);
            assigned[p] += 1;
            Some(config.pools[p].name.clone())
        };
        rows.push(PlannedRun {
            order: step + 1,
            id: t.id.clone(),
            branch: t.branch.clone(),
            worktree: config.worktrees_dir().join(&t.id),
            pool,
            depends_on: t.depends_on.clone(),
            status,
            lane: lanes.get(&t.id).copied(),
            waits_for: before.get(&t.id).cloned().unwrap_or_default(),
        });
    }
    Ok(rows)
}

/// Number the groups of tasks whose footprints overlap (through each other),
/// in the order of their first task.
fn lanes(
    tasks: &TaskSet,
    order: &[usize],
    before: &HashMap<String, Vec<String>>,
) -> HashMap<String, usize> {
    let mut lane: HashMap<String, usize> = HashMap::new();
    let mut next = 0;
    for &i in order {
        let id = &tasks.tasks[i].id;
        let Some(earlier) = before.get(id) else {
            continue;
        };
        // Joins the lane of its first overlapping task; lanes it bridges merge.
        let mut found: Vec<usize> = earlier
            .iter()
            .filter_map(|e| lane.get(e).copied())
            .collect();
        found.sort_unstable();
        found.dedup();
        let l = match found.first() {
            Some(&l) => l,
            None => {
                next += 1;
                next
            }
        };
        for e in earlier {
            lane.insert(e.clone(), l);
        }
        for other in found.iter().skip(1) {
            for v in lane.values_mut() {
                if v == other {
                    *v = l;
                }
            }
        }
        lane.insert(id.clone(), l);
    }
    // Renumber 1, 2, ... in order of each lane's first task.
    let mut renumber: HashMap<usize, usize> = HashMap::new();
    for &i in order {
        if let Some(l) = lane.get(&tasks.tasks[i].id) {
            let n = renumber.len() + 1;
            renumber.entry(*l).or_insert(n);
        }
    }
    lane.into_iter().map(|(id, l)| (id, renumber[&l])).collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tasks::{BranchRules, parse_jsonl};

    #[test]
    fn lanes_join_through_a_task_that_bridges_them() {
        let rules = BranchRules {
            prefix: "flocks/",
            base: "main",
            land_target: "main",
        };
        let lines = [
            r#"{"id":"a","prompt":"p","touches":["a/**"]}"#,
            r#"{"id":"b","prompt":"p","touches":["b/**"]}"#,
            r#"{"id":"free","prompt":"p"}"#,
            r#"{"id":"c","prompt":"p","touches":["c/**"]}"#,
            r#"{"id":"ab","prompt":"p","touches":["a/x.rs","b/y.rs"]}"#,
            r#"{"id":"c2","prompt":"p","touches":["c/z.rs"]}"#,
        ]
        .join("\n");
        let set = parse_jsonl(Path::new("/p/t.jsonl"), &lines, &rules).unwrap();
        let order = dependency_order(&set.tasks).unwrap();
        let before = crate::tasks::footprint_before(&set, &order);
        assert_eq!(before["ab"], ["a", "b"]);
        let lanes = lanes(&set, &order, &before);
        assert_eq!(lanes["a"], 1);
        assert_eq!(lanes["b"], 1, "bridged by ab");
        assert_eq!(lanes["ab"], 1);
        assert_eq!(lanes["c"], 2);
        assert_eq!(lanes["c2"], 2);
        assert!(!lanes.contains_key("free"));
    }
}
