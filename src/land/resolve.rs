//! What `flocks land --resolve` tells the agent that redoes a conflicted task
//! on the current target: the conflict, the files, and the earlier attempt's
//! diff (trimmed); and the backup of the branch's old tip, kept before the
//! branch starts over from the target.

use git2::{DiffFormat, Oid, Repository};

use super::plan::short;
use super::{TaskOutcome, TaskReport};
use crate::error::{Context, Result};

/// The earlier diff is trimmed to about this many bytes.
pub(crate) const MAX_DIFF_BYTES: usize = 24_000;

/// `refs/flocks/backup/<id>/<attempt>`, as `retry --fresh` names it.
pub(crate) fn backup_ref(id: &str, attempt: u32) -> String {
    format!("refs/flocks/backup/{id}/{attempt}")
}

/// Keep `branch`'s tip under [`backup_ref`]; returns the ref and the tip.
pub(crate) fn backup(
    repo: &Repository,
    branch: &str,
    id: &str,
    attempt: u32,
) -> Result<Option<(String, Oid)>> {
    let Some(tip) = crate::git::branch_tip(repo, branch)? else {
        return Ok(None);
    };
    let name = backup_ref(id, attempt);
    repo.reference(&name, tip, true, "flocks: backup before a redo")
        .ctx(|| format!("back up {branch} as {name}"))?;
    Ok(Some((name, tip)))
}

/// The text appended to the task's prompt for its redo on `target` (at
/// `onto`).
pub(crate) fn context(
    repo: &Repository,
    task: &TaskReport,
    target: &str,
    onto: Oid,
    backup: Option<&str>,
) -> Result<String> {
    let mut s = String::from("\n\n---\n## Redo this task on the current ");
    s.push_str(target);
    s.push_str("\n\n");
    s.push_str(&format!(
        "An earlier attempt at this task finished, but its change no longer applies to `{target}`: \
         `{target}` has moved on since that attempt started.\n"
    ));
    if let TaskOutcome::Conflicted { commit, files } = &task.outcome {
        s.push_str(&format!(
            "Its commit {} conflicts with `{target}` in these files:\n\n",
            short(*commit)
        ));
        for f in files {
            s.push_str(&format!("- {f}\n"));
        }
    }
    s.push_str(&format!(
        "\nThis branch (`{}`) now starts from the current `{target}` ({}). Do the task again on \
         this base: make the same change, adapted to what `{target}` holds now, and keep what \
         `{target}` already has. Then commit your work.\n",
        task.branch,
        short(onto)
    ));
    if let Some(b) = backup {
        s.push_str(&format!(
            "The earlier attempt's commits are kept as `{b}` (`{}`).\n",
            crate::suggest::command(&["git", "log", "-p", &format!("{target}..{b}")])
        ));
    }
    if let (Some(start), Some(tip)) = (task.start, task.tip) {
        let diff = patch(repo, start, tip)?;
        if !diff.trim().is_empty() {
            s.push_str("\nThe earlier attempt's diff was:\n\n```diff\n");
            s.push_str(&trim(&diff, MAX_DIFF_BYTES));
            if !diff.ends_with('\n') {
                s.push('\n');
            }
            s.push_str("```\n");
        }
    }
    Ok(s)
}

/// The text appended to the prompt of an early redo (`[land] redo_conflicts
/// = "early"`): the task's work was predicted to conflict during the run; it
/// starts over at `onto`, the target with the work of the tasks it clashed
/// with. The same material as [`context`]: the conflict, the files, the
/// earlier diff.
pub(crate) fn early_context(
    repo: &Repository,
    branch: &str,
    conflict: &crate::state::PredictedConflict,
    earlier: Option<(Oid, Oid)>,
    onto: Oid,
    backup: Option<&str>,
) -> Result<String> {
    let target = &conflict.target;
    let with: Vec<String> = conflict.with.iter().map(|w| format!("`{w}`")).collect();
    let mut s = String::from("\n\n---\n## Redo this task on top of the work it conflicts with\n\n");
    s.push_str(&format!(
        "An earlier attempt at this task finished, but its change will not apply when it lands on \
         `{target}`: it {}.\n",
        conflict.describe()
    ));
    if let Ok(c) = conflict.commit.parse::<Oid>() {
        s.push_str(&format!(
            "Its commit {} conflicts in these files:\n\n",
            short(c)
        ));
    }
    for f in &conflict.files {
        s.push_str(&format!("- {f}\n"));
    }
    let base = if with.is_empty() {
        format!("the current `{target}`")
    } else {
        format!("`{target}` with the work of {}", with.join(", "))
    };
    s.push_str(&format!(
        "\nThis branch (`{branch}`) now starts from {base} ({}). Do the task again on this base: \
         make the same change, adapted to what is there now, and keep the work that is already \
         there. Then commit your work.\n",
        short(onto)
    ));
    if let Some(b) = backup {
        s.push_str(&format!(
            "The earlier attempt's commits are kept as `{b}` (`{}`).\n",
            crate::suggest::command(&["git", "log", "-p", &format!("{target}..{b}")])
        ));
    }
    if let Some((start, tip)) = earlier {
        let diff = patch(repo, start, tip)?;
        if !diff.trim().is_empty() {
            s.push_str("\nThe earlier attempt's diff was:\n\n```diff\n");
            s.push_str(&trim(&diff, MAX_DIFF_BYTES));
            if !diff.ends_with('\n') {
                s.push('\n');
            }
            s.push_str("```\n");
        }
    }
    Ok(s)
}

/// `git diff start tip` as a patch of at most about `max` bytes.
pub(crate) fn patch_text(repo: &Repository, start: Oid, tip: Oid, max: usize) -> Result<String> {
    Ok(trim(&patch(repo, start, tip)?, max))
}

/// `git diff start tip` as a patch.
fn patch(repo: &Repository, start: Oid, tip: Oid) -> Result<String> {
    let tree = |o: Oid| -> Result<git2::Tree<'_>> {
        repo.find_commit(o)
            .and_then(|c| c.tree())
            .ctx(|| format!("read the tree of {o}"))
    };
    let (old, new) = (tree(start)?, tree(tip)?);
    let diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .ctx(|| format!("diff {}..{}", short(start), short(tip)))?;
    let mut out = Vec::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            out.push(line.origin() as u8);
        }
        out.extend_from_slice(line.content());
        true
    })
    .ctx(|| "render the diff".into())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// At most about `max` bytes, cut at a line, saying how much was left out.
fn trim(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let cut = text[..cut].rfind('\n').map(|i| i + 1).unwrap_or(cut);
    let left = text[cut..].lines().count();
    format!(
        "{}... ({left} more {} of the diff left out)\n",
        &text[..cut],
        crate::output::units::noun_for(left, "line", "lines")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_at_a_line_and_says_so() {
        let text = "line one\nline two\nline three\n";
        assert_eq!(trim(text, 100), text);
        let t = trim(text, 12);
        assert!(t.starts_with("line one\n"));
        assert!(!t.contains("line two"));
        assert!(t.contains("2 more lines of the diff"), "{t}");
        // Never splits a character.
        let t = trim("ééééé\nx\n", 3);
        assert!(t.contains("left out"));
    }
}
