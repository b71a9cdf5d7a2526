//! A docker pool outside a run: its container found once, the repo mount, the
//! clone root, the container lookup.

use std::path::Path;
use std::time::Duration;

use bollard::Docker;

use super::engine::{EngineError, Lookup};
use super::scripts::Match;
use super::{ExecError, Target, engine, kill_attempt, owner, user};
use crate::config::{Config, DockerConfig, PoolConfig, WorkspaceMode};

/// A docker pool's container and a client, found for one use outside a run
/// (`[validate] pool` runs the validate commands there).
pub(crate) async fn find_pool_target(
    config: &Config,
    pool: &PoolConfig,
    d: &DockerConfig,
) -> Result<(Docker, Target), EngineError> {
    let repo_dir = config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| config.workspace.repo.clone());
    let owner = owner::owner_of(&repo_dir).unwrap_or((0, 0));
    let project_key = crate::paths::key_of(&config.state_dir());
    let docker = engine::connect().await?;
    let info = engine::find(&docker, &lookup_for(&pool.name, d, &project_key)).await?;
    let id = info.id.clone().unwrap_or_default();
    let name = engine::name_of(&info, &id);
    let repo = repo_mount(
        &info,
        &repo_dir,
        d.workspace_mount.as_deref(),
        d.workspace,
        &name,
    )?;
    let t = Target {
        id,
        name,
        repo,
        user: user::exec_user(d, owner),
        network: info
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone()),
        // For `[validate] pool` and `flocks shell`: no agent, no proxy.
        proxy_mount: false,
    };
    user::refuse_root(&docker, &t, d).await?;
    Ok((docker, t))
}

/// When flocks runs as root on a repo that belongs to someone else, give
/// `path` (a worktree flocks wrote on the host, such as the land worktree)
/// to the repo's owner, the pool's default exec user, so that commands in
/// the container can write there.
pub(crate) fn give_to_repo_owner(config: &Config, path: &Path) {
    let repo_dir = config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| config.workspace.repo.clone());
    if let Ok(owner) = owner::owner_of(&repo_dir)
        && owner::needs_fixing(owner)
    {
        owner::give_back(&repo_dir, path, owner);
    }
}

/// Stop every process tagged `FLOCKS_ATTEMPT=<tag>` in the container (TERM,
/// `grace`, KILL), as an attempt is stopped. Ok(the killer's report).
pub(crate) async fn stop_tagged(
    docker: &Docker,
    t: &Target,
    tag: &str,
    grace: Duration,
) -> Result<String, ExecError> {
    kill_attempt(docker, t, Match::Exact, tag, grace).await
}

/// Where the host repo is in the container: it must be mounted in mount
/// mode; in clone mode, whether the container can reach it at all (the
/// guard stays on when it can).
pub(crate) fn repo_mount(
    info: &bollard::models::ContainerInspectResponse,
    repo_dir: &Path,
    workspace_mount: Option<&str>,
    mode: WorkspaceMode,
    name: &str,
) -> Result<Option<String>, EngineError> {
    match engine::repo_in_container(info, repo_dir, workspace_mount, name) {
        Ok(p) => Ok(Some(p)),
        Err(EngineError::NoMount { .. }) if mode == WorkspaceMode::Clone => Ok(None),
        Err(e) => Err(e),
    }
}

/// A clone-mode pool's helper root in the container: one directory per
/// project under `clone_dir`, so that projects sharing a container do not
/// meet.
pub(crate) fn clone_root(d: &DockerConfig, project_key: &str) -> String {
    format!("{}/{project_key}", d.clone_dir())
}

/// How a pool finds its container.
pub(crate) fn lookup_for(pool: &str, d: &DockerConfig, project_key: &str) -> Lookup {
    if let Some(c) = &d.container {
        Lookup::Name(c.clone())
    } else if let Some(p) = &d.project {
        Lookup::Folder(p.clone())
    } else {
        Lookup::Managed {
            pool: pool.to_string(),
            project_key: project_key.to_string(),
        }
    }
}
