//! The prompt an agent gets: the task's prompt, or `[prompt] template` with
//! `{{prompt}}` and `{{task.<field>}}` filled in.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tasks::Task;

/// Fields every task has (possibly empty); others must be set by the task.
const STANDARD: &[&str] = &[
    "id",
    "prompt",
    "branch",
    "title",
    "description",
    "depends_on",
    "start_from",
];

#[derive(Debug, Clone)]
pub(crate) struct Template {
    path: PathBuf,
    text: String,
}

impl Template {
    pub(crate) fn load(path: &Path) -> Result<Template> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "cannot read the prompt template {}: {e} (check [prompt] template in flocks.toml)",
                path.display()
            ))
        })?;
        let t = Template {
            path: path.to_path_buf(),
            text,
        };
        // Check the placeholders' syntax once, up front.
        for (line, name) in t.placeholders() {
            if name != "prompt" && !name.starts_with("task.") {
                return Err(Error::input(
                    path,
                    Some(line),
                    None,
                    format!(
                        "unknown placeholder {{{{{name}}}}}: use {{{{prompt}}}} or {{{{task.<field>}}}}"
                    ),
                ));
            }
        }
        Ok(t)
    }

    /// The `<field>` of every `{{task.<field>}}`: fields a task line may
    /// set at its top level for this template.
    pub(crate) fn fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .placeholders()
            .into_iter()
            .filter_map(|(_, name)| name.strip_prefix("task.").map(str::to_string))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn placeholders(&self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, line) in self.text.lines().enumerate() {
            let mut rest = line;
            while let Some(start) = rest.find("{{") {
                let Some(end) = rest[start..].find("}}") else {
                    break;
                };
                out.push((i + 1, rest[start + 2..start + end].trim().to_string()));
                rest = &rest[start + end + 2..];
            }
        }
        out
    }

    /// Render for one task. A `{{task.x}}` the task does not set is an error that
    /// names the template line and the task, rather than a silent blank.
    pub(crate) fn render(&self, task: &Task, source: &Path) -> Result<String> {
        let mut out = String::with_capacity(self.text.len() + task.prompt.len());
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find("{{") {
            let Some(end) = rest[start..].find("}}") else {
                break;
            };
            out.push_str(&rest[..start]);
            let name = rest[start + 2..start + end].trim();
            let value = if name == "prompt" {
                task.prompt.clone()
            } else {
                let field = name.trim_start_matches("task.");
                match task.field(field) {
                    Some(v) => v,
                    None if STANDARD.contains(&field) => String::new(),
                    None => {
                        let line = self.text[..self.text.len() - rest.len() + start]
                            .matches('\n')
                            .count()
                            + 1;
                        return Err(Error::input(
                            &self.path,
                            Some(line),
                            None,
                            format!(
                                "{{{{{name}}}}} is not set by task `{}` ({}:{})",
                                task.id,
                                source.display(),
                                task.line
                            ),
                        ));
                    }
                }
            };
            out.push_str(&value);
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// The prompt for a task: rendered from the template when there is one.
pub(crate) fn render(template: Option<&Template>, task: &Task, source: &Path) -> Result<String> {
    match template {
        Some(t) => t.render(task, source),
        None => Ok(task.prompt.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let mut extra = serde_json::Map::new();
        extra.insert("area".into(), "auth".into());
        Task {
            id: "fix".into(),
            prompt: "Fix it; rm -rf $HOME `x`".into(),
            branch: "flocks/fix".into(),
            title: Some("Fix".into()),
            description: None,
            depends_on: vec![],
            start_from: Default::default(),
            expect_commits: true,
            max_cost_usd: None,
            touches: None,
            best_of: None,
            variant: None,
            extra,
            line: 4,
        }
    }

    #[test]
    fn renders_fields() {
        let t = Template {
            path: "t.md".into(),
            text: "# {{task.title}} ({{ task.id }}) on {{task.branch}} [{{task.area}}]{{task.description}}\n{{prompt}}\n".into(),
        };
        assert_eq!(
            t.render(&task(), Path::new("tasks.jsonl")).unwrap(),
            "# Fix (fix) on flocks/fix [auth]\nFix it; rm -rf $HOME `x`\n"
        );
    }

    #[test]
    fn missing_custom_field_is_an_error() {
        let t = Template {
            path: "t.md".into(),
            text: "a\n{{task.team}}".into(),
        };
        let e = t
            .render(&task(), Path::new("tasks.jsonl"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.md:2") && e.contains("tasks.jsonl:4"), "{e}");
    }
}
