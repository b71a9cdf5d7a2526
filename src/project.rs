//! A project: its flocks.toml and the places flocks keeps things for it.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::Result;
use crate::state::{ProjectLock, StateStore};

#[derive(Clone)]
pub struct Project {
    pub config: Config,
    pub store: StateStore,
}

impl Project {
    /// Find and load flocks.toml (`--config`, or walking up from the current dir).
    pub fn discover(config: Option<&Path>) -> Result<Project> {
        let cwd = std::env::current_dir().map_err(|e| crate::error::Error::Io {
            context: "read the current directory".into(),
            source: e,
        })?;
        Ok(Project::from_config(Config::discover(config, &cwd)?))
    }

    pub fn from_config(config: Config) -> Project {
        let store = StateStore::new(&config.state_dir());
        Project { config, store }
    }

    /// `.flocks/` next to flocks.toml.
    pub fn state_dir(&self) -> PathBuf {
        self.config.state_dir()
    }

    /// `.flocks/logs/<task>/<attempt>.log`; an error for a `task` that is
    /// not an id (one from a URL or a command line may hold `../`).
    pub fn log_path(&self, task: &str, attempt: u32) -> Result<PathBuf> {
        crate::tasks::valid_path_id(task).map_err(|why| {
            crate::error::Error::Usage(format!("`{task}` is not a task id: it {why}"))
        })?;
        Ok(self
            .state_dir()
            .join("logs")
            .join(task)
            .join(format!("{attempt}.log")))
    }

    /// `.flocks/events.jsonl`
    pub fn events_path(&self) -> PathBuf {
        self.state_dir().join("events.jsonl")
    }

    /// Take the project lock, for commands that write state.json.
    pub fn lock(&self, command: &str) -> Result<ProjectLock> {
        ProjectLock::acquire(&self.state_dir(), command)
    }

    pub fn repo_dir(&self) -> &Path {
        &self.config.workspace.repo
    }

    /// Open the project's repository; outside one, an error that says so
    /// (before a command creates anything under `.flocks/`).
    pub fn repo(&self) -> Result<git2::Repository> {
        crate::git::open(self.repo_dir())
    }

    /// A short key for this project, part of every attempt tag.
    pub fn key(&self) -> String {
        crate::paths::key_of(&self.state_dir())
    }
}
