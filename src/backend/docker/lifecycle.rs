//! `flocks up` / `flocks down` for docker pools: create the container a pool
//! asks for (from its `image`, or the image `.devcontainer/devcontainer.json`
//! names), shaped like a devcontainer (in clone mode without the repository
//! mounted), and remove exactly the ones flocks made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, InspectContainerOptions,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::engine::{self, EngineError, FOLDER_LABEL, MANAGED_LABEL, POOL_LABEL, PROJECT_LABEL};
use crate::config::{Config, DockerConfig, PoolConfig, WorkspaceMode};
use crate::state::Managed;

/// PID 1 of a created container: the devcontainer CLI's keep-alive shell,
/// which also reaps orphans.
const KEEP_ALIVE: &str =
    "echo Container started\ntrap \"exit 0\" 15\nexec \"$@\"\nwhile sleep 1 & wait $!; do :; done";

/// What `up` did for one pool.
#[derive(Debug)]
pub(crate) enum Up {
    /// Created and started this container.
    Created(Managed),
    /// The pool's container is already running.
    Running(String),
    /// The pool names a container flocks does not create (no image to make it from).
    NotManaged,
}

/// The parts of `.devcontainer/devcontainer.json` flocks uses.
#[derive(Debug, Default, Clone)]
pub(crate) struct DevContainer {
    pub image: Option<String>,
    pub workspace_folder: Option<String>,
    pub env: Vec<(String, String)>,
}

/// Why `.devcontainer/devcontainer.json` could not be used: the messages
/// name the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DevContainerError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Why `flocks up` could not start a pool's container.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    DevContainer(#[from] DevContainerError),
    #[error("image {image} is not here and cannot be pulled: {reason}")]
    Pull { image: String, reason: String },
    #[error("cannot create container `{name}`: {reason}")]
    Create { name: String, reason: String },
    #[error("cannot start container `{name}`: {reason}")]
    Start { name: String, reason: String },
}

/// Why `flocks down` could not remove a container.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DownError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot inspect container {id}: {reason}")]
    Inspect { id: String, reason: String },
    #[error("cannot remove container `{name}`: {reason}")]
    Remove { name: String, reason: String },
}

/// Read `.devcontainer/devcontainer.json` (or `.devcontainer.json`) of `repo`.
pub(crate) fn devcontainer(repo: &Path) -> Result<Option<DevContainer>, DevContainerError> {
    let path = [
        repo.join(".devcontainer/devcontainer.json"),
        repo.join(".devcontainer.json"),
    ]
    .into_iter()
    .find(|p| p.is_file());
    let Some(path) = path else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(source) => return Err(DevContainerError::Read { path, source }),
    };
    let v: serde_json::Value = match serde_json::from_str(&strip_jsonc(&text)) {
        Ok(v) => v,
        Err(source) => return Err(DevContainerError::Parse { path, source }),
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let env = v
        .get("containerEnv")
        .and_then(|e| e.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(DevContainer {
        image: s("image"),
        workspace_folder: s("workspaceFolder"),
        env,
    }))
}

/// JSON with comments and trailing commas (devcontainer.json) to JSON.
fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_str = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_str = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas: a comma followed only by blanks before } or ].
    let mut cleaned = String::with_capacity(out.len());
    let bytes: Vec<char> = out.chars().collect();
    let mut in_str = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_str {
            if c == '\\' && i + 1 < bytes.len() {
                cleaned.push(c);
                cleaned.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ',' {
            let next = bytes[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                i += 1;
                continue;
            }
        }
        cleaned.push(c);
        i += 1;
    }
    cleaned
}

/// The name `up` gives a pool's container when the pool does not name one.
pub(crate) fn default_name(pool: &str, project_key: &str) -> String {
    format!("flocks-{pool}-{project_key}")
}

/// Start the container of one docker pool, unless it runs already.
pub(crate) async fn up(
    config: &Config,
    pool: &PoolConfig,
    d: &DockerConfig,
    project_key: &str,
) -> Result<Up, UpError> {
    let docker = engine::connect().await?;
    let lookup = super::lookup_for(&pool.name, d, project_key);
    if let Ok(info) = engine::find(&docker, &lookup).await {
        let id = info.id.clone().unwrap_or_default();
        return Ok(Up::Running(engine::name_of(&info, &id)));
    }
    let repo = config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| config.workspace.repo.clone());
    let dc = devcontainer(&repo)?.unwrap_or_default();
    let image = match (&d.image, &d.container, &dc.image) {
        (Some(i), _, _) => i.clone(),
        (None, None, Some(i)) => i.clone(),
        _ => return Ok(Up::NotManaged),
    };
    let name = d
        .container
        .clone()
        .unwrap_or_else(|| default_name(&pool.name, project_key));
    let body = container_body(config, pool, d, project_key, &repo, &dc, &image, &name)?;
    let id = create_and_start(&docker, &name, &image, body).await?;
    Ok(Up::Created(Managed::Container {
        pool: pool.name.clone(),
        id,
        name,
    }))
}

/// What `up` creates: the image kept alive, the repository mounted (mount
/// mode) or not (clone mode), the pool's mounts and env, flocks' labels.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one source of the container's settings"
)]
fn container_body(
    config: &Config,
    pool: &PoolConfig,
    d: &DockerConfig,
    project_key: &str,
    repo: &Path,
    dc: &DevContainer,
    image: &str,
    name: &str,
) -> Result<ContainerCreateBody, UpError> {
    let mount = d
        .workspace_mount
        .clone()
        .or(dc.workspace_folder.clone())
        .unwrap_or_else(|| {
            let base = repo
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "repo".into());
            format!("/workspaces/{base}")
        });
    let folder = d.project.clone().unwrap_or_else(|| repo.to_path_buf());
    // Clone mode: the repository is not mounted; agents get clones of
    // their own inside the container.
    let clone = d.workspace == WorkspaceMode::Clone;
    let mut binds = if clone {
        Vec::new()
    } else {
        vec![format!("{}:{mount}", repo.display())]
    };
    for m in &d.mounts {
        binds.push(resolve_mount(&config.dir, m));
    }
    // Clone mode: the project's proxy directory, read-only (the proxy's
    // socket and the forwarder, started in the container when its network
    // is not the host's).
    if clone && let Some(dir) = crate::proxy::shared_dir(config) {
        crate::proxy::make_shared_dir(&dir).map_err(|e| UpError::Create {
            name: name.to_string(),
            reason: format!("cannot make {}: {e}", dir.display()),
        })?;
        binds.push(format!(
            "{}:{}:ro",
            dir.display(),
            crate::proxy::CONTAINER_DIR
        ));
    }
    let network_mode = d.network.clone().or_else(|| {
        // Under [network], a clone-mode container has no network of its
        // own: the proxy is its only way out.
        (clone && config.network.is_some()).then(|| "none".to_string())
    });
    let mut env: Vec<String> = dc.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(pool.env.iter().map(|(k, v)| format!("{k}={v}")));
    let labels = HashMap::from([
        (FOLDER_LABEL.to_string(), folder.display().to_string()),
        (MANAGED_LABEL.to_string(), "1".to_string()),
        (POOL_LABEL.to_string(), pool.name.clone()),
        (PROJECT_LABEL.to_string(), project_key.to_string()),
    ]);
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(
            ["/bin/sh", "-c", KEEP_ALIVE, "-"]
                .map(String::from)
                .to_vec(),
        ),
        cmd: Some(Vec::new()),
        env: Some(env),
        labels: Some(labels),
        working_dir: (!clone).then(|| mount.clone()),
        host_config: Some(HostConfig {
            binds: Some(binds),
            network_mode,
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Create the container (pulling its image when the engine lacks it) and
/// start it; one that does not start is removed.
async fn create_and_start(
    docker: &Docker,
    name: &str,
    image: &str,
    body: ContainerCreateBody,
) -> Result<String, UpError> {
    let create = |body: ContainerCreateBody| {
        let docker = docker.clone();
        let name = name.to_string();
        async move {
            docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                    body,
                )
                .await
        }
    };
    let id = match create(body.clone()).await {
        Ok(r) => r.id,
        Err(e) if engine::is_not_found(&e) => {
            pull(docker, image).await?;
            create(body)
                .await
                .map_err(|e| UpError::Create {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?
                .id
        }
        Err(e) => {
            return Err(UpError::Create {
                name: name.to_string(),
                reason: e.to_string(),
            });
        }
    };
    if let Err(e) = docker.start_container(&id, None).await {
        let _ = remove(docker, &id).await;
        return Err(UpError::Start {
            name: name.to_string(),
            reason: e.to_string(),
        });
    }
    Ok(id)
}

/// `src:dst[:opts]` with `src` relative to flocks.toml's directory made
/// absolute; a named volume stays as it is.
fn resolve_mount(dir: &Path, spec: &str) -> String {
    match spec.split_once(':') {
        Some((src, rest)) if src.starts_with('.') || src.starts_with('~') => format!(
            "{}:{rest}",
            crate::paths::normalize(&crate::config::resolve_path(dir, &PathBuf::from(src)))
                .display()
        ),
        _ => spec.to_string(),
    }
}

async fn pull(docker: &Docker, image: &str) -> Result<(), UpError> {
    let opts = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut s = docker.create_image(Some(opts), None, None);
    while let Some(item) = s.next().await {
        item.map_err(|e| UpError::Pull {
            image: image.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

async fn remove(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let opts = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    docker.remove_container(id, Some(opts)).await
}

/// What `down` did with one container recorded in state.json.
#[derive(Debug)]
pub(crate) enum Down {
    /// Removed it (its name).
    Removed(String),
    /// It was gone already.
    Gone,
    /// Left it alone: it is not one `flocks up` made for this pool of this
    /// project (why).
    NotOurs(String),
}

/// Remove one container flocks created for `pool` of project `project_key`.
/// state.json is writable from the containers, so the record is not proof:
/// the container must carry the labels `up` sets (`flocks.managed=1`,
/// `flocks.pool=<pool>`, `flocks.project=<project key>`), else it is left
/// alone.
pub(crate) async fn down(id: &str, pool: &str, project_key: &str) -> Result<Down, DownError> {
    let docker = engine::connect().await?;
    let info = match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => info,
        Err(e) if engine::is_not_found(&e) => return Ok(Down::Gone),
        Err(e) => {
            return Err(DownError::Inspect {
                id: id.to_string(),
                reason: e.to_string(),
            });
        }
    };
    let full = info.id.clone().unwrap_or_else(|| id.to_string());
    let name = engine::name_of(&info, &full);
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    let missing = missing_labels(&labels, pool, project_key);
    if !missing.is_empty() {
        return Ok(Down::NotOurs(format!(
            "container `{name}` ({full}) lacks the {} `flocks up` sets: {}",
            crate::output::units::noun_for(missing.len(), "label", "labels"),
            missing.join(", ")
        )));
    }
    match remove(&docker, &full).await {
        Ok(()) => Ok(Down::Removed(name)),
        Err(e) if engine::is_not_found(&e) => Ok(Down::Gone),
        Err(e) => Err(DownError::Remove {
            name,
            reason: e.to_string(),
        }),
    }
}

/// The labels (`key=value`) `up` sets for `pool` of `project_key` that
/// `labels` lacks.
fn missing_labels(labels: &HashMap<String, String>, pool: &str, project_key: &str) -> Vec<String> {
    [
        (MANAGED_LABEL, "1"),
        (POOL_LABEL, pool),
        (PROJECT_LABEL, project_key),
    ]
    .into_iter()
    .filter(|(k, v)| labels.get(*k).map(String::as_str) != Some(*v))
    .map(|(k, v)| format!("{k}={v}"))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonc() {
        let text = r#"{
            // the image
            "image": "mcr.microsoft.com/devcontainers/rust:1", /* inline */
            "workspaceFolder": "/workspaces/x",
            "containerEnv": { "A": "http://x//y", "B": "c\"d", },
        }"#;
        let v: serde_json::Value = serde_json::from_str(&strip_jsonc(text)).unwrap();
        assert_eq!(v["image"], "mcr.microsoft.com/devcontainers/rust:1");
        assert_eq!(v["containerEnv"]["A"], "http://x//y");
        assert_eq!(v["containerEnv"]["B"], "c\"d");
    }

    #[test]
    fn labels_name_what_is_missing() {
        let mut labels = HashMap::from([
            (MANAGED_LABEL.to_string(), "1".to_string()),
            (POOL_LABEL.to_string(), "dev".to_string()),
            (PROJECT_LABEL.to_string(), "abc".to_string()),
        ]);
        assert!(missing_labels(&labels, "dev", "abc").is_empty());
        assert_eq!(
            missing_labels(&labels, "dev", "xyz"),
            ["flocks.project=xyz"]
        );
        labels.clear();
        assert_eq!(missing_labels(&labels, "dev", "abc").len(), 3);
    }

    #[test]
    fn mounts_resolve() {
        assert_eq!(
            resolve_mount(Path::new("/p"), "./cache:/cache:ro"),
            "/p/cache:/cache:ro"
        );
        assert_eq!(resolve_mount(Path::new("/p"), "/a:/b"), "/a:/b");
        assert_eq!(resolve_mount(Path::new("/p"), "vol:/b"), "vol:/b");
    }
}
