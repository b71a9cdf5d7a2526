//! Validation of a built commit in the land worktree: the `[validate]`
//! settings gathered once, then each commit checked out and validated on the
//! host (`validate.rs`) or in a docker pool's container (`validate_docker.rs`).

use std::path::Path;
use std::time::Duration;

use super::validate::{self, Run, Validation};
use super::validate_docker::{self, Place};
use tokio::sync::watch;

use crate::config::CommandSpec;
use crate::error::Result;
use crate::guard::Guards;
use crate::watch::StopLevel;

/// Validation of a built commit in the land worktree: `[validate] commands`
/// with `timeout_secs`, credential variables removed, output to a log.
pub(crate) struct Validator<'a> {
    commands: &'a [CommandSpec],
    /// `[validate] pool`.
    docker: Option<Place<'a>>,
    wt: std::path::PathBuf,
    timeout: Option<Duration>,
    grace: Duration,
    scrub: Vec<String>,
    /// What says stop while the commands run: inside `flocks run`, its
    /// dispatcher's stop level; else (None) SIGINT and SIGTERM, caught
    /// while the commands run.
    stop: Option<watch::Receiver<StopLevel>>,
}

impl<'a> Validator<'a> {
    /// Ready to validate in `.worktrees/.land` (kept out of git), a docker
    /// pool's container watched by `guards`.
    pub(super) fn new(
        project: &'a crate::project::Project,
        repo: &git2::Repository,
        guards: &'a Guards,
    ) -> Result<Self> {
        let config = &project.config;
        let repo_root = repo.workdir().unwrap_or(project.repo_dir()).to_path_buf();
        let excludes = crate::git::exclude_patterns(
            &repo_root,
            &[project.state_dir(), config.worktrees_dir()],
        );
        crate::git::ensure_excluded(repo, &excludes)?;
        let mut scrub: Vec<String> = [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        scrub.extend(config.secret_vars());
        let docker = match &config.validate.pool {
            None => None,
            Some(name) => match config.pool(name).map(|p| (p, &p.backend)) {
                Some((pool, crate::config::BackendConfig::Docker(d))) => Some(Place {
                    config,
                    pool,
                    docker: d,
                    guards,
                }),
                _ => {
                    return Err(crate::error::Error::Usage(format!(
                        "[validate] pool `{name}` is not a docker pool of {}",
                        config.path.display()
                    )));
                }
            },
        };
        Ok(Validator {
            docker,
            commands: &config.validate.commands,
            wt: super::scratch::path(&config.worktrees_dir()),
            timeout: config.validate.timeout,
            grace: config.kill_grace,
            scrub,
            stop: None,
        })
    }

    /// Validate in this scratch worktree instead (best-of judging).
    pub(super) fn at(mut self, wt: std::path::PathBuf) -> Self {
        self.wt = wt;
        self
    }

    /// Stop when `stop` says so, and leave SIGINT and SIGTERM to the
    /// caller (a run's dispatcher).
    pub(super) fn with_stop(mut self, stop: watch::Receiver<StopLevel>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Check `commit` out in the land worktree and run the commands there,
    /// logging to `log`. Nothing else is touched.
    pub(super) fn run(
        &self,
        repo: &git2::Repository,
        commit: git2::Oid,
        log: &Path,
        echo: bool,
    ) -> Result<Validation> {
        super::scratch::checkout(repo, &self.wt, commit)?;
        let r = Run {
            commands: self.commands,
            dir: &self.wt,
            timeout: self.timeout,
            grace: self.grace,
            scrub: &self.scrub,
            log,
            echo,
            what: "validation",
            env: &[],
        };
        let out = validate::open_log(&r)?;
        let (_caught, mut stop) = match &self.stop {
            Some(stop) => (None, stop.clone()),
            None => {
                let (caught, stop) = super::signals::catch();
                (Some(caught), stop)
            }
        };
        match &self.docker {
            Some(place) => validate_docker::run(&r, &out, place, commit, &mut stop),
            None => validate::run(&r, &out, &mut stop),
        }
    }
}
