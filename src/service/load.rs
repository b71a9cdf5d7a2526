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
    let template = match &project.config.prompt_template {
        Some(path) => Some(Template::load(path)?),
        None => None,
    };
    load_tasks_for(project, source, template.as_ref())
}

/// The task list, for `template` (a line may set the fields it reads at its
/// top level).
fn load_tasks_for(
    project: &Project,
    source: &TaskSource,
    template: Option<&Template>,
) -> Result<TaskSet> {
    let c = &project.config;
    let fields = template.map(Template::fields).unwrap_or_default();
    let rules = BranchRules {
        prefix: &c.workspace.branch_prefix,
        base: &c.workspace.base,
        land_target: &c.workspace.land_target,
        template_fields: &fields,
    };
    match (&source.tasks, &c.source) {
        (Some(p), _) => {
            let looked = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            exists(
                p,
                format!(
                    "no task file {} (given with --tasks; looked for {}): check the path",
                    p.display(),
                    looked.display()
                ),
            )?;
            load_jsonl(p, &rules)
        }
        (None, Some(SourceConfig::Jsonl { path })) => {
            exists(
                path,
                format!(
                    "no task file {} ([source] path in {}): check the path, or write the file",
                    path.display(),
                    c.path.display()
                ),
            )?;
            load_jsonl(path, &rules)
        }
        (None, Some(SourceConfig::Script { command })) => {
            load_script(command, &c.dir, &safe_env(c), &rules)
        }
        (None, None) => {
            let path = c.dir.join("tasks.jsonl");
            exists(
                &path,
                format!(
                    "no task file {}: write one (`flocks init` writes an example, `flocks plan` one for an objective), pass --tasks PATH, or set [source] path in flocks.toml",
                    path.display()
                ),
            )?;
            load_jsonl(&path, &rules)
        }
    }
}

/// A task file that is not there is a usage error, said as `missing`.
fn exists(path: &std::path::Path, missing: String) -> Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(crate::error::Error::Usage(missing))
        }
        _ => Ok(()),
    }
}

/// Load `[prompt] template` and check that it renders for every task.
pub(crate) fn load_template(config: &Config, tasks: &TaskSet) -> Result<Option<Template>> {
    let Some(path) = &config.prompt_template else {
        return Ok(None);
    };
    let t = Template::load(path)?;
    check_template(&t, tasks)?;
    Ok(Some(t))
}

fn check_template(t: &Template, tasks: &TaskSet) -> Result<()> {
    for task in &tasks.tasks {
        t.render(task, &tasks.source)?;
    }
    Ok(())
}

/// The task list and its template, as every command that runs tasks needs them.
pub(crate) fn load(project: &Project, source: &TaskSource) -> Result<(TaskSet, Option<Template>)> {
    let template = match &project.config.prompt_template {
        Some(path) => Some(Template::load(path)?),
        None => None,
    };
    let tasks = load_tasks_for(project, source, template.as_ref())?;
    if let Some(t) = &template {
        check_template(t, &tasks)?;
    }
    Ok((tasks, template))
}
