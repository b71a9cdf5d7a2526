//! Tasks: one per line of a JSONL file (or of a script's output), validated
//! and put in dependency order.

mod footprint;
mod graph;
mod load;

use std::path::PathBuf;

pub(crate) use footprint::{Footprint, footprint_before};
pub(crate) use graph::{dependency_order, waves};
pub(crate) use load::{BranchRules, load_jsonl, load_script, parse_jsonl};

use serde_json::{Map, Value};

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub id: String,
    pub prompt: String,
    pub branch: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub depends_on: Vec<String>,
    /// Where the task's branch starts: the base, or a commit holding its
    /// dependencies' work (`"start_from": "dependencies"`).
    pub start_from: StartFrom,
    /// The task is meant to commit something (`"expect_commits": false`:
    /// research, review, a report; it succeeds on a clean result alone).
    pub expect_commits: bool,
    /// `"max_cost_usd"`: once the task's attempts have cost this much, it is
    /// not retried again.
    pub max_cost_usd: Option<f64>,
    /// What the task expects to change (`"touches"`: gitignore-style globs);
    /// None when the line does not say.
    pub touches: Option<Footprint>,
    /// `"best_of": N` on the line (None: flocks.toml's `best_of`).
    pub best_of: Option<u32>,
    /// A variant of a best-of task, made by the run (never read from a line).
    pub variant: Option<VariantOf>,
    /// Fields flocks does not know, kept for the template (`{{task.<field>}}`).
    pub extra: Map<String, Value>,
    /// 1-based line in the source, for messages.
    pub line: usize,
}

impl Task {
    /// A field by name as text, for the prompt template.
    pub(crate) fn field(&self, name: &str) -> Option<String> {
        match name {
            "id" => Some(self.id.clone()),
            "prompt" => Some(self.prompt.clone()),
            "branch" => Some(self.branch.clone()),
            "title" => self.title.clone(),
            "description" => self.description.clone(),
            "depends_on" => Some(self.depends_on.join(", ")),
            "start_from" => Some(self.start_from.as_str().to_string()),
            "expect_commits" => Some(self.expect_commits.to_string()),
            "max_cost_usd" => self.max_cost_usd.map(|c| c.to_string()),
            "touches" => self.touches.as_ref().map(|f| f.patterns.join(", ")),
            other => self.extra.get(other).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        }
    }

    /// A short content hash of what the agent is asked to do.
    pub(crate) fn prompt_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.prompt.as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Which variant of which best-of task a task is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VariantOf {
    pub task: String,
    /// 1-based.
    pub k: u32,
}

/// The id of variant `k` of task `id`: `<id>@v<k>`. `@` is not allowed in a
/// task id, so it names no task of the list.
pub(crate) fn variant_id(id: &str, k: u32) -> String {
    format!("{id}@v{k}")
}

/// The branch of variant `k`: `<branch>@v<k>`, beside the task's own branch
/// in git's ref namespace (never under it: `flocks/x` and `flocks/x/v2`
/// cannot both exist).
pub(crate) fn variant_branch(branch: &str, k: u32) -> String {
    format!("{branch}@v{k}")
}

/// The id of a best-of task's judge agent (its worktree, branch and log).
pub(crate) fn judge_id(id: &str) -> String {
    format!("{id}@judge")
}

/// `<id>@v<k>` into the task id and k.
pub(crate) fn split_variant_id(id: &str) -> Option<(&str, u32)> {
    let (task, k) = id.rsplit_once("@v")?;
    let k: u32 = k.parse().ok().filter(|k| *k >= 1)?;
    (valid_id(task).is_ok() && !k.to_string().starts_with('+')).then_some((task, k))
}

/// Where a task's branch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum StartFrom {
    /// `[workspace] base` (the default).
    #[default]
    Base,
    /// The base with each dependency's successful range applied onto it, in
    /// dependency order (transitively).
    Dependencies,
}

impl StartFrom {
    pub(crate) const VALUES: &[&str] = &["base", "dependencies"];

    pub(crate) fn parse(s: &str) -> Option<StartFrom> {
        match s {
            "base" => Some(StartFrom::Base),
            "dependencies" => Some(StartFrom::Dependencies),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StartFrom::Base => "base",
            StartFrom::Dependencies => "dependencies",
        }
    }
}

/// The task list as loaded: file order, every check passed.
#[derive(Debug, Clone)]
pub(crate) struct TaskSet {
    /// Where the tasks came from, for messages.
    pub source: PathBuf,
    pub tasks: Vec<Task>,
    /// Position by id, built at the first lookup.
    index: std::sync::OnceLock<std::collections::HashMap<String, usize>>,
}

impl TaskSet {
    pub(crate) fn new(source: PathBuf, tasks: Vec<Task>) -> TaskSet {
        TaskSet {
            source,
            tasks,
            index: std::sync::OnceLock::new(),
        }
    }

    /// The task with this id, through the index (a task list changed after
    /// the index was built is still answered right, by a scan).
    pub(crate) fn get(&self, id: &str) -> Option<&Task> {
        let index = self.index.get_or_init(|| {
            let mut index = std::collections::HashMap::with_capacity(self.tasks.len());
            for (i, t) in self.tasks.iter().enumerate() {
                index.entry(t.id.clone()).or_insert(i);
            }
            index
        });
        if let Some(t) = index.get(id).and_then(|&i| self.tasks.get(i))
            && t.id == id
        {
            return Some(t);
        }
        if index.len() == self.tasks.len() {
            return None;
        }
        self.tasks.iter().find(|t| t.id == id)
    }
}

/// Is `id` one that may name a log or a worktree: a task id, a best-of
/// variant's (`<id>@v<k>`) or a judge's (`<id>@judge`). Every id that comes
/// from outside (a URL, a command line, state.json) is checked before it
/// becomes part of a path.
pub(crate) fn valid_path_id(id: &str) -> Result<(), &'static str> {
    if split_variant_id(id).is_some() {
        return Ok(());
    }
    valid_id(id.strip_suffix("@judge").unwrap_or(id))
}

/// Is `id` a safe task id: letters, digits, `-`, `_` and `.`, no path tricks.
pub(crate) fn valid_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("must not be empty");
    }
    if id.len() > 100 {
        return Err("is longer than 100 characters");
    }
    if id == "." || id == ".." {
        return Err("must not be `.` or `..`");
    }
    if id.starts_with('-') || id.starts_with('.') {
        return Err("must not start with `-` or `.`");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may contain only letters, digits, `-`, `_` and `.`");
    }
    if id.ends_with(".lock") {
        return Err("must not end with `.lock`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_ids_are_task_variant_or_judge_ids() {
        for ok in ["t", "a.b-c_1", "t@v2", "t@judge"] {
            assert!(valid_path_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../../x",
            "t/../../x",
            "..",
            "t@v0",
            "../t@judge",
            "",
            "t@judge@judge",
        ] {
            assert!(valid_path_id(bad).is_err(), "{bad}");
        }
    }
}
