//! Text and JSON for people and scripts: the plan, the summary, the undo.

use std::fmt::Write;

use super::plan::short;
use super::{Plan, PlanStatus, Report, TaskOutcome, TaskReport, UndoPlan, Validation};
use crate::output::units::count;
use crate::suggest::command;

impl Plan {
    /// What the land will do, for the confirmation question and `--dry-run`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let ready = self.ready().count();
        let commits: usize = self.ready().map(|t| t.commits.len()).sum();
        let _ = writeln!(
            out,
            "Land onto {} (at {}): {}, {}",
            self.target,
            short(self.target_tip),
            count(ready, "task"),
            count(commits, "commit")
        );
        for t in &self.tasks {
            match &t.status {
                PlanStatus::Ready => {
                    let _ = writeln!(
                        out,
                        "  {}  ({}, {})",
                        t.id,
                        t.branch,
                        count(t.commits.len(), "commit")
                    );
                    for c in &t.commits {
                        let _ = writeln!(out, "      {} {}", short(c.id), c.summary);
                    }
                    if let Some(c) = &t.conflict {
                        let _ = writeln!(out, "      {}", c.describe());
                    }
                }
                PlanStatus::Empty => {
                    let _ = writeln!(out, "  {}  ({}): empty, nothing to land", t.id, t.branch);
                }
                PlanStatus::AlreadyLanded => {
                    let _ = writeln!(out, "  {}  ({}): already landed", t.id, t.branch);
                }
                PlanStatus::Refused { reason } => {
                    let _ = writeln!(out, "  {}  ({}): refused: {reason}", t.id, t.branch);
                }
            }
        }
        if self.tasks.is_empty() {
            let _ = writeln!(out, "  no succeeded task to land");
        }
        if !self.left_out.is_empty() {
            let _ = writeln!(
                out,
                "  left out {} (no longer in their task file): {}; `{}` lands them",
                count(self.left_out.len(), "removed task"),
                self.left_out.join(", "),
                command(
                    &["flocks", "land"]
                        .into_iter()
                        .chain(self.left_out.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                )
            );
        }
        if let Some(wt) = &self.checkout {
            let _ = writeln!(out, "{}", checkout_line(&self.target, wt, &self.dirty));
        }
        out
    }

    /// The `--dry-run --json` shape (stable; its schema is
    /// docs/src/reference/schemas/land-plan.schema.json). Tasks are in
    /// landing order.
    pub fn to_json(&self) -> PlanJson {
        let tasks = self
            .tasks
            .iter()
            .map(|t| {
                let (status, reason) = match &t.status {
                    PlanStatus::Ready => ("ready", None),
                    PlanStatus::Empty => ("empty", None),
                    PlanStatus::AlreadyLanded => ("already_landed", None),
                    PlanStatus::Refused { reason } => ("refused", Some(reason.clone())),
                };
                let commits = if t.status == PlanStatus::Ready {
                    t.commits
                        .iter()
                        .map(|c| CommitJson {
                            sha: c.id.to_string(),
                            summary: c.summary.clone(),
                            author: c.author.clone(),
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                PlanTaskJson {
                    id: t.id.clone(),
                    branch: t.branch.clone(),
                    status,
                    reason,
                    start: t.start.map(|o| o.to_string()),
                    tip: t.tip.map(|o| o.to_string()),
                    commits,
                    conflict: t.conflict.as_ref().map(|c| ConflictJson {
                        commit: c.commit.clone(),
                        files: c.files.clone(),
                        with: c.with.clone(),
                        with_target: c.with_target,
                    }),
                }
            })
            .collect();
        PlanJson {
            target: self.target.clone(),
            target_tip: self.target_tip.to_string(),
            checkout: self.checkout.as_ref().map(|p| p.display().to_string()),
            dirty: self.dirty.clone(),
            tasks,
            left_out_removed: self.left_out.clone(),
        }
    }
}

/// `flocks land --dry-run --json`: what the land will do.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct PlanJson {
    /// The branch to land on (`[workspace] land_target`).
    pub target: String,
    /// Its tip when the plan was made.
    pub target_tip: String,
    /// The worktree where the target is checked out, if any.
    pub checkout: Option<String>,
    /// Tracked files with uncommitted changes in that checkout: land refuses.
    pub dirty: Vec<String>,
    /// The tasks in landing order (task-list order, dependencies first).
    pub tasks: Vec<PlanTaskJson>,
    /// Succeeded tasks their task list no longer has (`removed`), left out
    /// since no id was named.
    pub left_out_removed: Vec<String>,
}

/// A task of the land plan.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct PlanTaskJson {
    pub id: String,
    pub branch: String,
    /// `ready`, `empty` (no commit to land), `already_landed` or `refused`.
    pub status: &'static str,
    /// Why it is refused (says what to do).
    pub reason: Option<String>,
    /// The task's origin (or, for a task that landed and then went on, where
    /// its last landing ended).
    pub start: Option<String>,
    /// Its recorded tip: its work is `start..tip`.
    pub tip: Option<String>,
    /// `start..tip` over all its attempts, oldest first (for ready tasks;
    /// empty otherwise).
    pub commits: Vec<CommitJson>,
    /// Its cherry-pick will conflict (predicted in memory).
    pub conflict: Option<ConflictJson>,
}

/// A commit to cherry-pick.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct CommitJson {
    pub sha: String,
    pub summary: String,
    pub author: String,
}

/// Where a task's cherry-pick will conflict.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct ConflictJson {
    /// Its commit that does not apply.
    pub commit: String,
    /// In these files.
    pub files: Vec<String>,
    /// The earlier tasks (landing order) whose work changes those files.
    pub with: Vec<String>,
    /// It does not apply on the target alone either.
    pub with_target: bool,
}

impl Report {
    /// The summary: what landed, was empty, conflicted, already landed, was
    /// refused, and how validation went.
    pub fn render(&self, repo_dir: &std::path::Path) -> String {
        let mut out = String::new();
        let mut section = |title: &str, lines: Vec<String>| {
            if !lines.is_empty() {
                let _ = writeln!(out, "{title}:");
                for l in lines {
                    let _ = writeln!(out, "  {l}");
                }
            }
        };
        let title = if self.moved {
            format!("Landed on {}", self.target)
        } else {
            format!("Built but not landed ({} did not move)", self.target)
        };
        section(
            &title,
            self.tasks
                .iter()
                .filter_map(|t| match &t.outcome {
                    TaskOutcome::Landed { commits, dropped } => {
                        let mut l = format!("{}: {}", t.id, count(*commits, "commit"));
                        if *dropped > 0 {
                            l.push_str(&format!(
                                ", {dropped} already on {} (dropped)",
                                self.target
                            ));
                        }
                        Some(l)
                    }
                    _ => None,
                })
                .collect(),
        );
        section(
            "Nothing to land (no commit beyond the task's origin)",
            self.tasks
                .iter()
                .filter(|t| t.outcome == TaskOutcome::Empty)
                .map(|t| t.id.clone())
                .collect(),
        );
        section(
            "Already landed",
            self.tasks
                .iter()
                .filter(|t| t.outcome == TaskOutcome::AlreadyLanded)
                .map(|t| t.id.clone())
                .collect(),
        );
        section(
            "Resolved (conflicted, redone from the new target by --resolve, landed)",
            self.tasks
                .iter()
                .filter_map(|t| match &t.outcome {
                    TaskOutcome::Resolved { attempt, commits } => Some(format!(
                        "{}: attempt {attempt}, {}\n    see the redo: {}",
                        t.id,
                        count(*commits, "commit"),
                        command(&["flocks", "logs", &t.id, "--attempt", &attempt.to_string()])
                    )),
                    _ => None,
                })
                .collect(),
        );
        section(
            "Culprits (they break validation; nothing of these was applied)",
            self.tasks
                .iter()
                .filter_map(|t| match &t.outcome {
                    TaskOutcome::Culprit { .. } => Some(culprit_line(t, repo_dir)),
                    _ => None,
                })
                .collect(),
        );
        section(
            "Conflicted (nothing of these was applied)",
            self.tasks
                .iter()
                .filter_map(|t| match &t.outcome {
                    TaskOutcome::Conflicted { .. } => Some(self.conflicted_line(t, repo_dir)),
                    _ => None,
                })
                .collect(),
        );
        section(
            "Refused",
            self.tasks
                .iter()
                .filter_map(|t| match &t.outcome {
                    TaskOutcome::Refused { reason } => Some(match &t.note {
                        Some(note) => format!("{}: {reason}\n    {note}", t.id),
                        None => format!("{}: {reason}", t.id),
                    }),
                    _ => None,
                })
                .collect(),
        );
        self.validation_lines(&mut out);
        self.moved_lines(&mut out, repo_dir);
        out
    }
}

/// A culprit: why validation failed, the tail of its log, its change and
/// how to fix it.
fn culprit_line(t: &TaskReport, repo_dir: &std::path::Path) -> String {
    let TaskOutcome::Culprit {
        round,
        failure,
        log,
        tail,
        ..
    } = &t.outcome
    else {
        unreachable!("called for a culprit")
    };
    let why = match failure {
        Validation::Failed { command, reason } => {
            format!("`{command}`: {reason}")
        }
        other => format!("{other:?}"),
    };
    let mut l = format!("{}: {why} (round {round})", t.id);
    for line in tail {
        l.push_str(&format!("\n    | {line}"));
    }
    l.push_str(&format!("\n    log: {}", log.display()));
    if let (Some(s), Some(e)) = (t.start, t.tip) {
        l.push_str(&format!(
            "\n    its change: {}",
            command(&[
                "git",
                "-C",
                &repo_dir.display().to_string(),
                "log",
                "-p",
                &format!("{}..{}", short(s), short(e))
            ])
        ));
    }
    l.push_str(&format!(
        "\n    fix it: {}, then {}",
        command(&["flocks", "retry", &t.id, "--force"]),
        command(&["flocks", "land", &t.id])
    ));
    l
}

impl Report {
    /// A conflicted task: where, and the ways to redo or resolve it.
    fn conflicted_line(&self, t: &TaskReport, repo_dir: &std::path::Path) -> String {
        let TaskOutcome::Conflicted { commit, files } = &t.outcome else {
            unreachable!("called for a conflicted task")
        };
        let range = match (t.start, t.tip) {
            (Some(s), Some(e)) => format!("{s}..{e}"),
            _ => t.branch.clone(),
        };
        let mut l = format!(
            "{}: commit {} conflicts in {}",
            t.id,
            short(*commit),
            files.join(", ")
        );
        match &t.note {
            // What --resolve tried, and what to do next.
            Some(note) => l.push_str(&format!("\n    {note}")),
            None => l.push_str(&format!(
                "\n    redo it on the new {}: {} (or {})",
                self.target,
                command(&["flocks", "land", "--resolve", &t.id]),
                command(&["flocks", "retry", &t.id, "--fresh"])
            )),
        }
        l.push_str(&format!(
            "\n    or by hand: {}, resolving the conflicts, with a \
             `Flocks-Task: {}` trailer in each message so land knows it landed",
            command(&[
                "git",
                "-C",
                &repo_dir.display().to_string(),
                "cherry-pick",
                &range
            ]),
            t.id
        ));
        l
    }

    /// How validation went, and the bisect's rounds.
    fn validation_lines(&self, out: &mut String) {
        match &self.validation {
            Validation::NotNeeded => {}
            Validation::Skipped => {
                let _ = writeln!(out, "Validation: skipped (--no-validate)");
            }
            Validation::NotConfigured => {
                let _ = writeln!(out, "Validation: none ([validate] commands is empty)");
            }
            Validation::Passed => {
                let _ = writeln!(out, "Validation: passed");
            }
            Validation::Failed { command, reason } if self.rounds.is_empty() => {
                let _ = writeln!(
                    out,
                    "Validation FAILED: `{command}`: {reason}; {} was not moved. Land fewer tasks \
                     (flocks land <id>...) or bisect (flocks land --bisect) to find the culprit.",
                    self.target
                );
            }
            Validation::Failed { command, reason } => {
                let _ = writeln!(
                    out,
                    "Validation FAILED: `{command}`: {reason}; {} was not moved.",
                    self.target
                );
            }
            Validation::Interrupted { command } => {
                let _ = writeln!(
                    out,
                    "Validation interrupted during `{command}`; {} was not moved.",
                    self.target
                );
            }
        }
        if let Some(log) = &self.log {
            let _ = writeln!(out, "Validation log: {}", log.display());
        }
        if let Some(first) = self.rounds.first() {
            let _ = writeln!(
                out,
                "Bisect: {}, logged in {}",
                count(self.rounds.len(), "validation"),
                first
                    .log
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
    }

    /// Where the target moved (and how to undo it), or that nothing moved.
    fn moved_lines(&self, out: &mut String, repo_dir: &std::path::Path) {
        if let Some(stop) = &self.stopped {
            let _ = writeln!(out, "Land stopped: {stop}");
        }
        if self.moved {
            let undo = match self.lands {
                0 | 1 => "flocks land --undo".to_string(),
                n => format!("flocks land --undo, {n} times: once per land"),
            };
            let _ = writeln!(
                out,
                "{} moved {} -> {}{} (see: {}; undo: {undo})",
                self.target,
                short(self.old_tip),
                short(self.new_tip),
                self.checkout
                    .as_ref()
                    .map(|p| format!(", with its checkout at {}", p.display()))
                    .unwrap_or_default(),
                command(&[
                    "git",
                    "-C",
                    &repo_dir.display().to_string(),
                    "log",
                    &format!("{}..{}", short(self.old_tip), short(self.new_tip))
                ])
            );
        } else if self.new_tip == self.old_tip && self.stopped.is_none() {
            let _ = writeln!(
                out,
                "Nothing new to land; {} stays at {}",
                self.target,
                short(self.old_tip)
            );
        }
    }
}

impl UndoPlan {
    pub fn render(&self) -> String {
        let mut out = format!(
            "Undo the last land: move {} back from {} to {} (tasks: {})\n",
            self.target,
            short(self.from),
            short(self.to),
            if self.tasks.is_empty() {
                "none".into()
            } else {
                self.tasks.join(", ")
            }
        );
        for r in &self.restore {
            let _ = writeln!(
                out,
                "  and restore branch {} at {} (task {}; it is gone, and `land` needs it to bring the work back)",
                r.branch,
                short(r.tip),
                r.task
            );
        }
        if let Some(wt) = &self.checkout {
            let _ = writeln!(out, "{}", checkout_line(&self.target, wt, &self.dirty));
        }
        out
    }
}

/// Where the target is checked out, and whether its files can move with it.
fn checkout_line(target: &str, wt: &std::path::Path, dirty: &[String]) -> String {
    if dirty.is_empty() {
        format!(
            "{target} is checked out at {}: its files move with it",
            wt.display()
        )
    } else {
        format!(
            "refusing: {}",
            super::target::dirty_message(target, wt, dirty)
        )
    }
}
