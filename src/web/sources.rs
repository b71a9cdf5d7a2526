//! What the pages read besides the model: whose attempts a task's page
//! shows, the task's prompt as its task file has it now, and the land plan
//! as `land --dry-run` makes it.

use crate::project::Project;
use crate::state::TaskRecord;

/// A task's prompt, read from the task file the project names.
pub(crate) struct Prompt {
    pub text: Option<String>,
    pub note: Option<String>,
}

/// The record whose attempts a task's page shows: a best-of task's
/// winner, else its variant that started last; any other task itself.
pub(crate) fn log_owner(rec: &TaskRecord) -> &TaskRecord {
    if rec.variants.is_empty() {
        return rec;
    }
    rec.winner().unwrap_or_else(|| {
        rec.variants
            .iter()
            .filter(|v| !v.attempts.is_empty())
            .max_by_key(|v| v.attempts.last().map(|a| a.started_at))
            .unwrap_or(rec)
    })
}

/// The prompt of task `id` in the project's task file (`[source] path`, or
/// tasks.jsonl); a script source is not run for it.
pub(crate) fn prompt_of(project: &Project, rec: &TaskRecord) -> Prompt {
    use crate::config::SourceConfig;
    let c = &project.config;
    let path = match &c.source {
        Some(SourceConfig::Script { command }) => {
            return Prompt {
                text: None,
                note: Some(format!(
                    "The tasks come from a script ([source] command = `{command}`), which this page does not run."
                )),
            };
        }
        Some(SourceConfig::Jsonl { path }) => path.clone(),
        None => c.dir.join("tasks.jsonl"),
    };
    // A line may set the fields the template reads at its top level.
    let template_fields = (c.prompt_template.as_ref())
        .and_then(|p| crate::prompt::Template::load(p).ok())
        .map(|t| t.fields())
        .unwrap_or_default();
    let rules = crate::tasks::BranchRules {
        prefix: &c.workspace.branch_prefix,
        base: &c.workspace.base,
        land_target: &c.workspace.land_target,
        template_fields: &template_fields,
    };
    let id = crate::tasks::split_variant_id(&rec.id).map_or(rec.id.as_str(), |(t, _)| t);
    let set = match crate::tasks::load_jsonl(&path, &rules) {
        Ok(s) => s,
        Err(e) => {
            return Prompt {
                text: None,
                note: Some(format!("Cannot read the task file: {e}")),
            };
        }
    };
    match set.get(id) {
        None => Prompt {
            text: None,
            note: Some(format!(
                "`{id}` is not in {} any more (it may have come from another file given with --tasks).",
                path.display()
            )),
        },
        Some(t) => {
            let ran = rec
                .attempts
                .last()
                .and_then(|a| a.prompt_hash.as_deref())
                .unwrap_or(&rec.prompt_hash);
            let note = (crate::tasks::split_variant_id(&rec.id).is_none()
                && t.prompt_hash() != ran)
                .then(|| {
                    format!(
                        "This is the prompt in {} now: it changed since the task's last attempt ran.",
                        path.display()
                    )
                });
            Prompt {
                text: Some(t.prompt.clone()),
                note,
            }
        }
    }
}

/// What `land --dry-run` says now: the plan with its predicted conflicts,
/// and the files each task's work changes.
pub(crate) struct LandView {
    pub plan: crate::land::Plan,
    pub files: std::collections::HashMap<String, Vec<String>>,
    /// Where the push would go (`[land] push`).
    pub push: Option<String>,
}

/// Files listed per task at most.
const PLAN_FILES: usize = 12;

pub(crate) fn land_plan(project: &Project) -> Result<LandView, String> {
    let mut plan = crate::land::plan(project, &[]).map_err(|e| e.to_string())?;
    // What the cherry-picks will meet, in memory, as `land --dry-run` says.
    crate::land::predict_conflicts(project.repo_dir(), &mut plan).map_err(|e| e.to_string())?;
    let mut files = std::collections::HashMap::new();
    if let Ok(repo) = git2::Repository::open(project.repo_dir()) {
        for t in &plan.tasks {
            let (Some(start), Some(tip)) = (t.start, t.tip) else {
                continue;
            };
            if let Some(list) = changed_files(&repo, start, tip) {
                files.insert(t.id.clone(), list);
            }
        }
    }
    Ok(LandView {
        plan,
        files,
        push: project.config.land.push.clone(),
    })
}

/// The paths `start..tip` changes (the first [`PLAN_FILES`], then a count).
fn changed_files(repo: &git2::Repository, start: git2::Oid, tip: git2::Oid) -> Option<Vec<String>> {
    let a = repo.find_commit(start).ok()?.tree().ok()?;
    let b = repo.find_commit(tip).ok()?.tree().ok()?;
    let diff = repo.diff_tree_to_tree(Some(&a), Some(&b), None).ok()?;
    let mut out: Vec<String> = diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| p.display().to_string())
        .collect();
    if out.len() > PLAN_FILES {
        let more = out.len() - PLAN_FILES;
        out.truncate(PLAN_FILES);
        out.push(format!("and {more} more"));
    }
    Some(out)
}
