//! Loading what a run works on: the task list (`--tasks`, `[source]`, or
//! tasks.jsonl) and the prompt template, checked against every task.

use std::collections::HashSet;

use crate::cli::TaskSource;
use crate::config::{Config, SourceConfig};
use crate::error::Result;
use crate::project::Project;
use crate::prompt::Template;
use crate::tasks::{BranchRules, TaskSet, load_jsonl, load_script};

/// The environment for commands flocks runs that are not agents: no credential.
pub(crate) fn safe_env(config: &Config) -> Vec<(String, String)> {
    let drop: HashSet<&str> = crate::agent::SCRUBBED_VARS
        .iter()
        .copied()
        .chain(config.credentials.iter().map(|c| c.env.as_str()))
        .collect();
    std::env::vars()
        .filter(|(k, _)| !drop.contains(k.as_str()))
        .collect()
}

/// The task list: `--tasks`, `[source]` in flocks.toml, or tasks.jsonl.
pub(crate) fn load_tasks(project: &Project, source: &TaskSource) -> Result<TaskSet> {
    let c = &project.config;
    let rules = BranchRules {
        prefix: &c.workspace.branch_prefix,
        base: &c.workspace.base,
        land_target: &c.workspace.land_target,
    };
    match (&source.tasks, &c.source) {
        (Some(p), _) => load_jsonl(p, &rules),
        (None, Some(SourceConfig::Jsonl { path })) => load_jsonl(path, &rules),
        (None, Some(SourceConfig::Script { command })) => {
            load_script(command, &c.dir, &safe_env(c), &rules)
        }
        (None, None) => load_jsonl(&c.dir.join("tasks.jsonl"), &rules),
    }
}

/// Load `[prompt] template` and check that it renders for every task.
pub(crate) fn load_template(config: &Config, tasks: &TaskSet) -> Result<Option<Template>> {
    let Some(path) = &config.prompt_template else {
        return Ok(None);
    };
    let t = Template::load(path)?;
    for task in &tasks.tasks {
        t.render(task, &tasks.source)?;
    }
    Ok(Some(t))
}

/// The task list and its template, as every command that runs tasks needs them.
pub(crate) fn load(project: &Project, source: &TaskSource) -> Result<(TaskSet, Option<Template>)> {
    let tasks = load_tasks(project, source)?;
    let template = load_template(&project.config, &tasks)?;
    Ok((tasks, template))
}
