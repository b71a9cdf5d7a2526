//! `flocks plan "<objective>"`: one agent studies the repo and writes the task
//! list; flocks checks it like any task file, saves it, and shows its waves.
//!
//! The planning agent runs as one attempt of a synthetic task (`plan-<time>`,
//! on its own branch and worktree) through the same executor and backend as
//! every task, so it gets the pool's credential, the timeouts, the log and the
//! tree kill, on any pool. It is not a task of the run: nothing of it goes into
//! state.json. It writes the plan into its worktree; flocks reads the file
//! from the attempt's end tip (leftovers are committed first), which works
//! wherever the agent ran. Its branch is then moved to `refs/flocks/plans/`.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::cli::{PlanArgs, PlanOptions, TaskSource};
use crate::config::{Config, SourceConfig};
use crate::error::{Context, Error, Exit, Result};
use crate::project::Project;
use crate::runner::AttemptReport;
use crate::service::attempt::{self, SingleAttempt};
use crate::state::Outcome;
use crate::tasks::{BranchRules, TaskSet, dependency_order, parse_jsonl, waves};

/// The file the planning agent writes, relative to its worktree.
pub(super) const PLAN_FILE: &str = "flocks-plan.jsonl";

const BUILT_IN: &str = include_str!("plan_prompt.md");

pub(super) fn run(project: &Project, args: &PlanArgs) -> Result<Exit> {
    match make_plan(project, &args.objective, &args.plan)? {
        Ok(_) => {
            crate::outln!(
                "next: `flocks run{}` works the plan (`flocks sail` plans and runs in one go)",
                match &args.plan.source.tasks {
                    Some(p) => format!(" --tasks {}", p.display()),
                    None => String::new(),
                }
            );
            Ok(Exit::Ok)
        }
        Err(exit) => Ok(exit),
    }
}

/// Plan, check, save and show. `Ok(Err(exit))`: the planning agent did not
/// finish (said on stdout); an invalid plan is an error (exit 2).
pub(super) fn make_plan(
    project: &Project,
    objective: &str,
    opts: &PlanOptions,
) -> Result<Result<TaskSet, Exit>> {
    let config = &project.config;
    if objective.trim().is_empty() {
        return Err(Error::Usage(
            "the objective is empty: say what the fleet should achieve".into(),
        ));
    }
    let dest = destination(config, &opts.source)?;
    refuse_overwrite(&dest, opts.force)?;
    let prompt = render_prompt(config, opts.template.as_deref(), objective)?;

    // The repository first: outside one, no lock creates `.flocks/`.
    let repo = crate::git::open(&config.workspace.repo)?;
    crate::git::resolve_commit(&repo, &config.workspace.base)?;
    let _lock = project.lock("plan")?;
    let stamp = Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let mut id = format!("plan-{stamp}");
    let mut n = 1;
    while crate::git::branch_tip(&repo, &format!("{}{id}", config.workspace.branch_prefix))?
        .is_some()
        || config.worktrees_dir().join(&id).exists()
    {
        n += 1;
        id = format!("plan-{stamp}-{n}");
    }
    let branch = format!("{}{id}", config.workspace.branch_prefix);
    let excludes = crate::git::exclude_patterns(
        &config.workspace.repo,
        &[project.state_dir(), config.worktrees_dir()],
    );
    crate::git::ensure_excluded(&repo, &excludes)?;

    let report = run_planner(project, &id, &branch, prompt, opts.pool.as_deref())?;
    let log = project.log_path(&id, 1)?;
    let tip = report.end_tip.as_deref().and_then(|t| t.parse().ok());
    let text = tip.map(|t| read_plan_file(&repo, t)).transpose()?.flatten();
    put_away(config, &repo, &id, &branch);

    match &report.outcome {
        Outcome::Success => {}
        Outcome::Interrupted => {
            crate::outln!("planning interrupted; nothing saved");
            return Ok(Err(Exit::Interrupted));
        }
        other => {
            crate::outln!(
                "the planning agent {}; nothing saved. Its log: {}",
                other.describe(),
                log.display()
            );
            return Ok(Err(Exit::TasksFailed));
        }
    }
    let Some(text) = text else {
        return Err(Error::Usage(format!(
            "the planning agent did not leave {PLAN_FILE} in its worktree (is it git-ignored?); nothing saved. Its log: {}",
            log.display()
        )));
    };

    // Keep every plan as written, so a refused one can be fixed by hand.
    let kept = project
        .state_dir()
        .join("plans")
        .join(format!("{id}.jsonl"));
    crate::state::store::write_atomic(&kept, text.as_bytes())?;

    // The fields the prompt template reads may stand at a line's top level.
    let fields = match &config.prompt_template {
        Some(path) => crate::prompt::Template::load(path)?.fields(),
        None => Vec::new(),
    };
    let rules = BranchRules {
        prefix: &config.workspace.branch_prefix,
        base: &config.workspace.base,
        land_target: &config.workspace.land_target,
        template_fields: &fields,
    };
    let mut checked = check(&kept, &text, &rules);
    if opts.edit {
        if let Err(e) = &checked {
            crate::outln!("the plan as written has a problem: {e}");
        }
        edit(&kept)?;
        let text = crate::fsat::read_to_string(&kept).ctx(|| format!("read {}", kept.display()))?;
        checked = check(&kept, &text, &rules);
    }
    let tasks = checked.map_err(|e| refused(e, &kept))?;

    refuse_overwrite(&dest, opts.force)?;
    let saved = crate::fsat::read_to_string(&kept).ctx(|| format!("read {}", kept.display()))?;
    write_atomic(&dest, &saved)?;
    let tasks = TaskSet::new(dest.clone(), tasks.tasks);
    crate::output::report(&render_table(&tasks));
    crate::outln!("saved to {}", dest.display());
    Ok(Ok(tasks))
}

/// Where the plan is saved: `--tasks`, `[source] path`, or tasks.jsonl.
fn destination(config: &Config, source: &TaskSource) -> Result<PathBuf> {
    match (&source.tasks, &config.source) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(SourceConfig::Jsonl { path })) => Ok(path.clone()),
        (None, Some(SourceConfig::Script { .. })) => Err(Error::Usage(
            "[source] in flocks.toml is a script, so there is no task file to save the plan to: pass --tasks PATH".into(),
        )),
        (None, None) => Ok(config.dir.join("tasks.jsonl")),
    }
}

fn refuse_overwrite(dest: &Path, force: bool) -> Result<()> {
    if dest.exists() && !force {
        return Err(Error::Usage(format!(
            "{} already exists: pass --force to replace it, or --tasks PATH to save the plan elsewhere",
            dest.display()
        )));
    }
    Ok(())
}

/// The planning prompt: `--template`, `[prompt] plan_template` or the built-in
/// one, with `{{objective}}` and `{{plan_path}}` filled in.
fn render_prompt(config: &Config, flag: Option<&Path>, objective: &str) -> Result<String> {
    let (path, text) = match flag.map(Path::to_path_buf).or(config.plan_template.clone()) {
        Some(p) => {
            let text = std::fs::read_to_string(&p).map_err(|e| {
                Error::Usage(format!(
                    "cannot read the planning template {}: {e} (check --template or [prompt] plan_template)",
                    p.display()
                ))
            })?;
            (p, text)
        }
        None => (PathBuf::from("(built-in planning prompt)"), BUILT_IN.into()),
    };
    fill(&path, &text, objective)
}

fn fill(path: &Path, text: &str, objective: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len() + objective.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let Some(end) = rest[start..].find("}}") else {
                break;
            };
            out.push_str(&rest[..start]);
            match rest[start + 2..start + end].trim() {
                "objective" => out.push_str(objective),
                "plan_path" => out.push_str(PLAN_FILE),
                other => {
                    return Err(Error::input(
                        path,
                        Some(i + 1),
                        None,
                        format!(
                            "unknown placeholder {{{{{other}}}}}: a planning template knows {{{{objective}}}} and {{{{plan_path}}}}"
                        ),
                    ));
                }
            }
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
    }
    if !text.contains("{{objective}}") && !text.contains("{{ objective }}") {
        out.push_str("\n\nObjective:\n\n");
        out.push_str(objective);
        out.push('\n');
    }
    Ok(out)
}

/// Run the planning agent: one attempt on the chosen pool, to its end.
fn run_planner(
    project: &Project,
    id: &str,
    branch: &str,
    prompt: String,
    pool: Option<&str>,
) -> Result<AttemptReport> {
    let prepared = attempt::prepare(
        project,
        SingleAttempt {
            id,
            branch,
            prompt,
            pool,
            label: "plan",
            purpose: "the planning agent",
        },
    )?;
    crate::outln!(
        "planning on pool {} (log: {}; Ctrl-C to stop)",
        prepared.pool,
        prepared.log_path.display()
    );
    prepared.run()
}

/// The plan file in the tree of `tip`, if the agent left one.
fn read_plan_file(repo: &git2::Repository, tip: git2::Oid) -> Result<Option<String>> {
    let commit = repo.find_commit(tip).ctx(|| format!("read {tip}"))?;
    let tree = commit.tree().ctx(|| format!("read the tree of {tip}"))?;
    let Ok(entry) = tree.get_path(Path::new(PLAN_FILE)) else {
        return Ok(None);
    };
    let blob = repo
        .find_blob(entry.id())
        .ctx(|| format!("read {PLAN_FILE} at {tip}"))?;
    Ok(Some(String::from_utf8_lossy(blob.content()).into_owned()))
}

/// The planning branch and worktree are scratch: keep the branch's commits
/// under `refs/flocks/plans/<time>` and remove both. Best effort.
fn put_away(config: &Config, repo: &git2::Repository, id: &str, branch: &str) {
    if let Ok(wts) = crate::git::Worktrees::new(&config.workspace.repo, &config.worktrees_dir()) {
        let _ = wts.remove(id);
    }
    if let Ok(Some(tip)) = crate::git::branch_tip(repo, branch) {
        let name = format!("refs/flocks/plans/{}", id.trim_start_matches("plan-"));
        if repo
            .reference(&name, tip, true, "flocks: the planning agent's branch")
            .is_ok()
            && let Ok(mut b) = repo.find_branch(branch, git2::BranchType::Local)
        {
            let _ = b.delete();
        }
    }
}

/// Same rules as any task file, and a plan must hold a task.
fn check(source: &Path, text: &str, rules: &BranchRules) -> Result<TaskSet> {
    if text.trim().is_empty() {
        return Err(Error::input(source, None, None, "the plan holds no task"));
    }
    parse_jsonl(source, text, rules)
}

fn refused(e: Error, kept: &Path) -> Error {
    let hint = format!(
        "the plan is refused and nothing was saved; it is kept in {}: fix it and save it as your task file, or plan again",
        kept.display()
    );
    match e {
        Error::Input {
            file,
            line,
            field,
            message,
        } => Error::Input {
            file,
            line,
            field,
            message: format!("{message}\n{hint}"),
        },
        other => Error::Usage(format!("{other}\n{hint}")),
    }
}

/// `$VISUAL`, `$EDITOR` or vi on `path`, the way git starts an editor.
fn edit(path: &Path) -> Result<()> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("${VISUAL:-${EDITOR:-vi}} \"$@\"")
        .arg("sh")
        .arg(path)
        .status()
        .ctx(|| "start the editor".into())?;
    if !status.success() {
        return Err(Error::Usage(format!(
            "the editor exited with {status}; nothing saved (the plan is kept in {})",
            path.display()
        )));
    }
    Ok(())
}

fn write_atomic(dest: &Path, text: &str) -> Result<()> {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("tasks")
    ));
    std::fs::write(&tmp, text).ctx(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, dest).ctx(|| format!("write {}", dest.display()))
}

/// The plan as a table, by wave.
pub(super) fn render_table(tasks: &TaskSet) -> String {
    use std::fmt::Write;
    let order = dependency_order(&tasks.tasks).unwrap_or_else(|_| (0..tasks.tasks.len()).collect());
    let wave = waves(&tasks.tasks, &order);
    let total = wave.iter().copied().max().unwrap_or(0);
    let mut rows: Vec<usize> = (0..tasks.tasks.len()).collect();
    rows.sort_by_key(|&i| (wave[i], i));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "plan: {} in {}",
        crate::output::units::count(tasks.tasks.len(), "task"),
        crate::output::units::count(total, "wave")
    );
    let _ = writeln!(s, "  {:>4}  {:<24} {:<40} after", "wave", "task", "title");
    for i in rows {
        let t = &tasks.tasks[i];
        let mut after = t.depends_on.join(", ");
        if after.is_empty() {
            after = "-".into();
        } else if t.start_from == crate::tasks::StartFrom::Dependencies {
            after.push_str(" (starts from their work)");
        }
        let title = t.title.clone().unwrap_or_else(|| first_line(&t.prompt));
        let _ = writeln!(
            s,
            "  {:>4}  {:<24} {:<40} {after}",
            wave[i],
            t.id,
            crate::agent::stream::one_line(&title, 40)
        );
    }
    s
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_names_unknown_ones() {
        let p = Path::new("plan.md");
        let out = fill(p, "Do: {{objective}}\nWrite {{ plan_path }}.\n", "add auth").unwrap();
        assert_eq!(out, format!("Do: add auth\nWrite {PLAN_FILE}.\n"));
        let e = fill(p, "ok\n{{task.id}}\n", "x").unwrap_err().to_string();
        assert!(
            e.starts_with("plan.md:2: unknown placeholder {{task.id}}"),
            "{e}"
        );
        // A template without {{objective}} still gets it.
        assert!(
            fill(p, "plan it\n", "add auth")
                .unwrap()
                .contains("add auth")
        );
        assert!(BUILT_IN.contains("{{objective}}") && BUILT_IN.contains("{{plan_path}}"));
    }

    #[test]
    fn table_lists_waves() {
        let rules = BranchRules {
            prefix: "flocks/",
            base: "main",
            land_target: "main",
            template_fields: &[],
        };
        let text = "{\"id\":\"b\",\"prompt\":\"do b\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}\n{\"id\":\"a\",\"prompt\":\"do a\",\"title\":\"First\"}\n";
        let set = parse_jsonl(Path::new("t.jsonl"), text, &rules).unwrap();
        let table = render_table(&set);
        assert!(table.starts_with("plan: 2 tasks in 2 waves"), "{table}");
        let a = table.find("First").unwrap();
        let b = table.find("do b").unwrap();
        assert!(a < b, "{table}");
        assert!(table.contains("a (starts from their work)"), "{table}");
    }
}
