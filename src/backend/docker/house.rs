//! What commands ask of a docker pool outside a run: `flocks up` (its
//! container, from an image), `flocks down` (only the containers `up`
//! made, by their labels), and `flocks shell` (`docker exec -it` in the
//! task's worktree or clone).

use super::DockerBackend;
use super::lifecycle::{self, Up};
use crate::backend::house::{At, Records, Shell};
use crate::config::{BackendConfig, WorkspaceMode};
use crate::error::{Error, Result};
use crate::state::{Managed, TaskRecord};

impl DockerBackend {
    /// `flocks up`: the pool's container, made from its image and
    /// recorded; or found running. Whether the pool has one `up` makes.
    pub(super) async fn up_container(&self, at: &At<'_>, rec: &mut Records<'_>) -> Result<bool> {
        let BackendConfig::Docker(d) = &at.pool.backend else {
            return Ok(false);
        };
        let pool = &at.pool.name;
        let up = lifecycle::up(at.config, at.pool, d, at.key)
            .await
            .map_err(|e| Error::CannotStart(format!("pool {pool}: {e}")))?;
        match up {
            Up::Created(m) => {
                if let Managed::Container { name, .. } = &m {
                    (rec.say)(format!("pool {pool}: started container {name}"));
                }
                rec.state.managed.push(m);
                (rec.save)(rec.state)?;
                Ok(true)
            }
            Up::Running(name) => {
                (rec.say)(format!("pool {pool}: container {name} is running"));
                Ok(true)
            }
            Up::NotManaged => Ok(false),
        }
    }

    /// `flocks shell`: `docker exec -it` in the task's clone (clone mode)
    /// or at its worktree's path through the repo's mount.
    pub(super) async fn shell_in(&self, at: &At<'_>, task: &TaskRecord) -> Result<Shell> {
        let (target, dir) = match self.mode {
            WorkspaceMode::Clone => self.clone_dir(&task.id).await?,
            WorkspaceMode::Mount => self.mount_dir(at, task).await?,
        };
        let tty = if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            "-it"
        } else {
            "-i"
        };
        let mut argv: Vec<String> = ["docker", "exec", tty, "-u", &target.user, "-w", &dir]
            .map(String::from)
            .to_vec();
        for e in [
            "GIT_CONFIG_COUNT=1",
            "GIT_CONFIG_KEY_0=safe.directory",
            "GIT_CONFIG_VALUE_0=*",
        ] {
            argv.extend(["-e".to_string(), e.to_string()]);
        }
        argv.push(target.id.clone());
        argv.extend(["sh", "-c", "exec \"${SHELL:-sh}\""].map(String::from));
        Ok(Shell::status(
            argv,
            "`flocks shell` needs the docker CLI for a container shell".into(),
        ))
    }

    /// Clone mode: the task's own clone in the container
    /// (`clone_dir/<project key>/worktrees/<task>`, where its agent worked).
    async fn clone_dir(&self, task: &str) -> Result<(super::Target, String)> {
        let target = self
            .target()
            .await
            .map_err(|e| Error::CannotStart(e.to_string()))?;
        let dir = format!("{}/worktrees/{task}", self.clone_root);
        let there = self.dir_exists(&dir).await.map_err(Error::CannotStart)?;
        if !there {
            return Err(Error::Usage(format!(
                "task {task} has no clone in docker container `{}` ({dir} is not there: a task that succeeded gives its clone back)",
                target.name
            )));
        }
        Ok((target, dir))
    }

    /// Mount mode: the worktree's path in the container, through the
    /// repo's mount; the worktree checked to be this repo's.
    async fn mount_dir(&self, at: &At<'_>, task: &TaskRecord) -> Result<(super::Target, String)> {
        let worktree = crate::backend::house::checked_worktree(at.config, task)?;
        if !worktree.is_dir() {
            return Err(crate::backend::house::no_worktree(&worktree));
        }
        let target = self
            .target()
            .await
            .map_err(|e| Error::CannotStart(e.to_string()))?;
        let repo = &at.config.workspace.repo;
        let repo = repo.canonicalize().unwrap_or_else(|_| repo.clone());
        let wt = worktree.canonicalize().unwrap_or(worktree);
        let rel = wt.strip_prefix(&repo).map_err(|_| {
            Error::Other(format!(
                "{} is not inside the repo {}",
                wt.display(),
                repo.display()
            ))
        })?;
        let Some(mount) = &target.repo else {
            return Err(Error::CannotStart(format!(
                "docker container `{}` does not mount the repo {}",
                target.name,
                repo.display()
            )));
        };
        let dir = format!("{mount}/{}", rel.display());
        Ok((target, dir))
    }
}

/// Remove the containers flocks recorded for the pools `which` selects,
/// when they are the ones `flocks up` made (by their labels); the others go
/// to `rec.refused` and are left alone. Either way the record leaves state.
pub(crate) async fn remove_recorded(
    project_key: &str,
    rec: &mut Records<'_>,
    which: impl Fn(&str) -> bool,
) -> Result<()> {
    let mine: Vec<(String, String, String)> = rec
        .state
        .managed
        .iter()
        .filter_map(|m| match m {
            Managed::Container { pool, id, name } if which(pool) => {
                Some((pool.clone(), id.clone(), name.clone()))
            }
            _ => None,
        })
        .collect();
    for (pool, id, name) in mine {
        let done = lifecycle::down(&id, &pool, project_key)
            .await
            .map_err(|e| Error::Other(format!("pool {pool}: {e}")))?;
        match done {
            lifecycle::Down::Removed(name) => {
                (rec.say)(format!("pool {pool}: removed container {name}"))
            }
            lifecycle::Down::Gone => {
                (rec.say)(format!("pool {pool}: was already gone: container {name}"))
            }
            lifecycle::Down::NotOurs(why) => rec.refused.push(format!(
                "pool {pool}: state.json records container id {id:?}, but {why}"
            )),
        }
        rec.state
            .managed
            .retain(|m| !matches!(m, Managed::Container { id: i, .. } if *i == id));
        (rec.save)(rec.state)?;
    }
    Ok(())
}
