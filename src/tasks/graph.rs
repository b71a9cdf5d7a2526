//! Dependency checks and order: unknown ids and cycles are load errors.

use std::collections::HashMap;

use super::Task;

/// What is wrong with the tasks' `depends_on`; `index` is the task (in file
/// order) whose line the error points at, and the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DependencyError {
    #[error("task `{id}` depends on itself")]
    OnItself { index: usize, id: String },
    #[error("task `{id}` depends on unknown task `{dep}`")]
    Unknown {
        index: usize,
        id: String,
        dep: String,
    },
    /// `cycle` starts and ends with the same task.
    #[error("dependency cycle: {}", .cycle.join(" -> "))]
    Cycle { index: usize, cycle: Vec<String> },
}

impl DependencyError {
    /// The task the error is about.
    pub(crate) fn index(&self) -> usize {
        match self {
            DependencyError::OnItself { index, .. }
            | DependencyError::Unknown { index, .. }
            | DependencyError::Cycle { index, .. } => *index,
        }
    }
}

/// Check `depends_on` and return the tasks' indices in an order where every
/// task comes after its dependencies (file order otherwise). The error names
/// the task and what is wrong.
pub(crate) fn dependency_order(tasks: &[Task]) -> Result<Vec<usize>, DependencyError> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.depends_on {
            if d == &t.id {
                return Err(DependencyError::OnItself {
                    index: i,
                    id: t.id.clone(),
                });
            }
            if !index.contains_key(d.as_str()) {
                return Err(DependencyError::Unknown {
                    index: i,
                    id: t.id.clone(),
                    dep: d.clone(),
                });
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; tasks.len()];
    let mut order = Vec::with_capacity(tasks.len());
    // Iterative DFS so a long chain cannot overflow the stack.
    for root in 0..tasks.len() {
        if marks[root] != Mark::New {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        marks[root] = Mark::Active;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let deps = &tasks[node].depends_on;
            if *next < deps.len() {
                let dep = index[deps[*next].as_str()];
                *next += 1;
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::Active;
                        stack.push((dep, 0));
                    }
                    Mark::Active => {
                        let start = stack.iter().position(|(n, _)| *n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|(n, _)| tasks[*n].id.clone())
                            .collect();
                        cycle.push(tasks[dep].id.clone());
                        return Err(DependencyError::Cycle { index: node, cycle });
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Each task's dependency wave, by index: 1 for a task without dependencies,
/// otherwise one more than its latest dependency's. `order` is a
/// [`dependency_order`] of the same tasks.
pub(crate) fn waves(tasks: &[Task], order: &[usize]) -> Vec<usize> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut wave = vec![1usize; tasks.len()];
    for &i in order {
        wave[i] = tasks[i]
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()))
            .map(|&d| wave[d] + 1)
            .max()
            .unwrap_or(1);
    }
    wave
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, deps: &[&str]) -> Task {
        Task {
            id: id.into(),
            prompt: "p".into(),
            branch: format!("flocks/{id}"),
            title: None,
            description: None,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            start_from: Default::default(),
            expect_commits: true,
            max_cost_usd: None,
            touches: None,
            best_of: None,
            variant: None,
            extra: Default::default(),
            line: 1,
        }
    }

    #[test]
    fn orders_dependencies_first() {
        let tasks = vec![t("c", &["b"]), t("a", &[]), t("b", &["a"])];
        let order: Vec<&str> = dependency_order(&tasks)
            .unwrap()
            .iter()
            .map(|&i| tasks[i].id.as_str())
            .collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn waves_of_a_diamond() {
        let tasks = vec![
            t("d", &["b", "c"]),
            t("a", &[]),
            t("b", &["a"]),
            t("c", &["a"]),
            t("e", &[]),
        ];
        let order = dependency_order(&tasks).unwrap();
        assert_eq!(waves(&tasks, &order), vec![3, 1, 2, 2, 1]);
    }

    #[test]
    fn finds_cycles() {
        let tasks = vec![t("a", &["b"]), t("b", &["c"]), t("c", &["a"])];
        let msg = dependency_order(&tasks).unwrap_err().to_string();
        assert!(msg.contains("a -> b -> c -> a"), "{msg}");
    }

    #[test]
    fn unknown_dependency() {
        let tasks = vec![t("a", &["zz"])];
        let err = dependency_order(&tasks).unwrap_err();
        assert_eq!(err.index(), 0);
        assert!(err.to_string().contains("unknown task `zz`"));
    }
}
