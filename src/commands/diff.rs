//! `flocks diff <id>`: a task's change, the range `land` would apply, as
//! `git diff` shows it, through the user's pager on a terminal.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

use crate::cli::DiffArgs;
use crate::error::{Error, Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &DiffArgs) -> Result<Exit> {
    let change = match args.variant {
        Some(k) => crate::land::variant_change(project, &args.task, k)?,
        None => crate::land::change(project, &args.task)?,
    };
    // No commit, or commits that change nothing in the end: say so (git
    // would print nothing at all).
    let repo = project.repo()?;
    let tree = |c: git2::Oid| repo.find_commit(c).map(|c| c.tree_id()).ok();
    if change.start == change.tip || tree(change.start) == tree(change.tip) {
        crate::outln!(
            "task {}: no change ({})",
            args.task,
            if change.start == change.tip {
                "its branch holds no commit beyond the one it started from"
            } else {
                "its commits change nothing in the end"
            }
        );
        return Ok(Exit::Ok);
    }
    let terminal = std::io::stdout().is_terminal();
    // `--color`, NO_COLOR and CLICOLOR_FORCE, as every command.
    let color = crate::output::colour();
    let mut git = Command::new("git");
    git.arg("-C")
        .arg(project.repo_dir())
        .args(["--no-pager", "diff"])
        .arg(if color {
            "--color=always"
        } else {
            "--color=never"
        });
    if args.stat {
        git.arg("--stat");
    }
    git.arg(change.start.to_string())
        .arg(change.tip.to_string())
        .arg("--")
        .stdin(Stdio::null());

    let pager = if terminal { pager() } else { None };
    let status = match pager {
        None => git
            .status()
            .map_err(|e| Error::Other(format!("cannot run git: {e}")))?,
        Some(pager) => {
            let mut p = Command::new("sh");
            p.arg("-c").arg(&pager).stdin(Stdio::piped());
            if std::env::var_os("LESS").is_none() {
                p.env("LESS", "FRX");
            }
            let mut pager_child = p
                .spawn()
                .map_err(|e| Error::Other(format!("cannot start the pager `{pager}`: {e}")))?;
            let Some(pipe) = pager_child.stdin.take() else {
                return Err(Error::Other("the pager has no stdin".into()));
            };
            git.stdout(pipe);
            let status = git.status();
            // The command holds the pipe's write end: the pager sees the end
            // of the diff only once it is dropped.
            drop(git);
            let _ = pager_child.wait();
            status.map_err(|e| Error::Other(format!("cannot run git: {e}")))?
        }
    };
    // A pager (or a `| head`) that quit early ends git with SIGPIPE, or
    // with 141 when git reports it itself: that is not a failure.
    if status.success() || matches!(status.code(), None | Some(141)) {
        Ok(Exit::Ok)
    } else {
        Err(Error::Other(format!(
            "git diff {}..{} failed ({status})",
            change.start, change.tip
        )))
    }
}

/// `$GIT_PAGER`, then `$PAGER`, then `less -FRX` (when less is installed);
/// none when the one chosen is empty or `cat`.
fn pager() -> Option<String> {
    let chosen = match ["GIT_PAGER", "PAGER"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
    {
        Some(p) => p,
        None if on_path("less") => "less -FRX".into(),
        None => return None,
    };
    let chosen = chosen.trim();
    (!chosen.is_empty() && chosen != "cat").then(|| chosen.to_string())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}
