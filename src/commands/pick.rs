//! `flocks pick <id> <k>`: make variant k a best-of task's work, over the
//! judgement, before it lands. The work is in [`crate::service::pick`].

use crate::cli::PickArgs;
use crate::error::{Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project, args: &PickArgs) -> Result<Exit> {
    let p = crate::service::pick::pick(project, &args.task, args.variant)?;
    let before = match p.before {
        Some(w) if w == p.variant => " (the judgement's pick too)".to_string(),
        Some(w) => format!(" instead of v{w}"),
        None => String::new(),
    };
    crate::outln!(
        "task {}: variant {} is its work{before}; {} points at it. `{}` lands it",
        p.task,
        p.variant,
        p.branch,
        crate::suggest::command(&["flocks", "land", &p.task])
    );
    Ok(Exit::Ok)
}
