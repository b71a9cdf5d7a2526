//! Dependency checks and order: unknown ids and cycles are load errors.

use std::collections::HashMap;

use super::Task;

/// Check `depends_on` and return the tasks' indices in an order where every
/// task comes after its dependencies (file order otherwise). The error names
/// the task and what is wrong.
pub fn dependency_order(tasks: &[Task]) -> Result<Vec<usize>, (usize, String)> {
    let index: HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    for (i, t) in tasks.iter().enumerate() {
        for d in &t.depends_on {
            if d == &t.id {
                return Err((i, format!("task `{}` depends on itself", t.id)));
            }
            if !index.contains_key(d.as_str()) {
                return Err((i, format!("task `{}` depends on unknown task `{d}`", t.id)));
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
                        let mut cycle: Vec<&str> = stack[start..]
                            .iter()
                            .map(|(n, _)| tasks[*n].id.as_str())
                            .collect();
                        cycle.push(tasks[dep].id.as_str());
                        return Err((node, format!("dependency cycle: {}", cycle.join(" -> "))));
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
pub fn waves(tasks: &[Task], order: &[usize]) -> Vec<usize> {
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
        let (_, msg) = dependency_order(&tasks).unwrap_err();
        assert!(msg.contains("a -> b -> c -> a"), "{msg}");
    }

    #[test]
    fn unknown_dependency() {
        let tasks = vec![t("a", &["zz"])];
        let (i, msg) = dependency_order(&tasks).unwrap_err();
        assert_eq!(i, 0);
        assert!(msg.contains("unknown task `zz`"));
    }
}
