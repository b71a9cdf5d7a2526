//! What commands ask of a pool outside a run, through [`super::Backend`]:
//! `flocks up` (make what it needs), `flocks down` (remove only that),
//! `flocks hosts check` and `flocks shell` (a shell where a task ran).
//! The service (`service::pools`) picks the pools and calls these; each
//! backend answers for its own kind.

use std::future::Future;
use std::pin::Pin;

use crate::config::{Config, PoolConfig};
use crate::error::Result;
use crate::state::{State, TaskRecord};

pub(crate) use super::check::Checked;

/// A future run on the command's own runtime (`block_on`): it may hold
/// what cannot cross threads (the records below).
pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The pool asked about, and its project.
pub(crate) struct At<'a> {
    pub config: &'a Config,
    pub pool: &'a PoolConfig,
    /// The project's key (`paths::key_of` its state directory).
    pub key: &'a str,
}

/// What `up` and `down` keep: state.json's records of what flocks made
/// (saved at each change), exe.dev's own record of its VMs, and where
/// to say what was done.
pub(crate) struct Records<'a> {
    pub state: &'a mut State,
    pub save: &'a mut dyn FnMut(&State) -> Result<()>,
    pub vms: &'a mut crate::backend::ssh::exedev::Made,
    /// One line for people per thing made, found or removed.
    pub say: &'a mut dyn FnMut(String),
    /// What `down` found recorded but not made by flocks (left alone).
    pub refused: &'a mut Vec<String>,
}

/// A task whose shell is asked for: its record (a best-of task's winner
/// or variant), and its worktree as state.json names it (`host:path` for
/// a remote pool).
pub(crate) struct ShellTask<'a> {
    /// The id asked for (a best-of task's, for its winner), in what is said.
    pub asked: &'a str,
    pub record: &'a TaskRecord,
    pub worktree: String,
}

/// An interactive shell to run, with the terminal, in the foreground.
#[derive(Debug)]
pub(crate) struct Shell {
    /// Its argv (a fixed command: paths quoted, never spliced raw).
    pub argv: Vec<std::ffi::OsString>,
    /// The working directory, for a shell on this machine.
    pub dir: Option<std::path::PathBuf>,
    /// A line to say before it opens.
    pub note: Option<String>,
    /// What the shell needs, said when it cannot start (`cannot run ssh`).
    pub cannot_start: String,
    /// The error that says so (`Error::CannotStart`, or `Error::Other`).
    pub start_error: fn(String) -> crate::error::Error,
    /// How its end is read.
    pub end: ShellEnd,
}

/// How a shell's exit status becomes `flocks shell`'s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShellEnd {
    /// Always fine (the user's own shell said what it had to say).
    Fine,
    /// Fine on success, else an unexpected end.
    Status,
    /// ssh's 255: the connection failed, said with this message; else fine.
    Ssh(String),
}

impl Shell {
    /// A shell that ends `Status`, whose program (`srun`, the docker CLI)
    /// failing to start is `Error::CannotStart`.
    pub(crate) fn status(argv: Vec<String>, cannot_start: String) -> Shell {
        Shell {
            argv: argv.into_iter().map(Into::into).collect(),
            dir: None,
            note: None,
            cannot_start,
            start_error: crate::error::Error::CannotStart,
            end: ShellEnd::Status,
        }
    }
}

/// The worktree of `task` on this machine, checked to be this repo's
/// (state.json is writable by agents in containers); one that is gone is
/// said by each kind of shell in its own words.
pub(crate) fn checked_worktree(config: &Config, task: &TaskRecord) -> Result<std::path::PathBuf> {
    if !task.worktree.exists() {
        return Ok(task.worktree.clone());
    }
    crate::git::check_task_worktree(
        &config.workspace.repo,
        &config.worktrees_dir(),
        &task.id,
        &task.worktree,
    )
    .map_err(|e| crate::error::Error::Usage(e.to_string()))
}

/// The error for a task whose worktree on this machine is gone.
pub(crate) fn no_worktree(worktree: &std::path::Path) -> crate::error::Error {
    crate::error::Error::Usage(format!(
        "the task's worktree {} does not exist (a task that succeeded gives its worktree back)",
        worktree.display()
    ))
}

/// The user's shell in the task's worktree on this machine.
pub(crate) fn local_shell(config: &Config, task: &TaskRecord) -> Result<Shell> {
    let worktree = checked_worktree(config, task)?;
    if !worktree.is_dir() {
        return Err(no_worktree(&worktree));
    }
    let shell = std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into());
    Ok(Shell {
        cannot_start: format!("cannot start {shell}"),
        start_error: crate::error::Error::Other,
        argv: vec![shell.into()],
        dir: Some(worktree),
        note: None,
        end: ShellEnd::Fine,
    })
}
