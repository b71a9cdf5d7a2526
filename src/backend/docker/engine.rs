//! Talking to the Docker Engine: connecting (with API version negotiation),
//! finding a pool's container, mapping the repo into it, and running small
//! helper execs to completion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

/// The label the devcontainer CLI puts on a container: the host folder it serves.
pub(crate) const FOLDER_LABEL: &str = "devcontainer.local_folder";
/// Labels flocks puts on the containers `flocks up` creates.
pub(crate) const MANAGED_LABEL: &str = "flocks.managed";
pub(crate) const POOL_LABEL: &str = "flocks.pool";
pub(crate) const PROJECT_LABEL: &str = "flocks.project";

/// Where flocks connects: `DOCKER_HOST`, or the default socket.
pub(crate) fn endpoint() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => "unix:///var/run/docker.sock".into(),
    }
}

/// Connect through `DOCKER_HOST` or the default socket, and lower the API
/// version to what the engine speaks (bollard's default is newer than many
/// engines in use).
pub(crate) async fn connect() -> Result<Docker, EngineError> {
    let fail = |e: BollardError| EngineError::Unreachable {
        endpoint: endpoint(),
        reason: e.to_string(),
    };
    let docker = match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => Docker::connect_with_host(&h),
        _ => Docker::connect_with_local_defaults(),
    }
    .map_err(fail)?;
    docker.negotiate_version().await.map_err(fail)
}

/// A Docker error, in words that name the container.
pub(crate) fn describe(err: &BollardError, container: &str) -> String {
    match err {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => format!("docker container `{container}` does not exist"),
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } => format!("docker container `{container}` is not running ({message})"),
        BollardError::DockerResponseServerError { message, .. } => {
            format!("docker container `{container}`: {message}")
        }
        other => format!("docker container `{container}`: {other}"),
    }
}

pub(crate) fn is_not_found(err: &BollardError) -> bool {
    matches!(
        err,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// How a pool names its container.
#[derive(Debug, Clone)]
pub(crate) enum Lookup {
    /// A name or id.
    Name(String),
    /// The running container whose `devcontainer.local_folder` is this folder.
    Folder(PathBuf),
    /// The container `flocks up` made for this pool.
    Managed { pool: String, project_key: String },
}

impl Lookup {
    pub(crate) fn describe(&self) -> String {
        match self {
            Lookup::Name(n) => format!("docker container `{n}`"),
            Lookup::Folder(f) => format!(
                "the docker container with label {FOLDER_LABEL}={}",
                f.display()
            ),
            Lookup::Managed { pool, .. } => {
                format!("the docker container `flocks up` made for pool `{pool}`")
            }
        }
    }
}

/// Why the engine or a pool's container cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum EngineError {
    #[error("cannot reach Docker at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("cannot list docker containers: {0}")]
    List(String),
    /// No running container matches (`what` names the lookup).
    #[error("{what} is not running: {hint}")]
    NoContainer { what: String, hint: &'static str },
    #[error("{what} is ambiguous: {} match; name one with `container`", .names.join(", "))]
    Ambiguous { what: String, names: Vec<String> },
    /// Inspecting the container failed, in words that name it.
    #[error("{0}")]
    Inspect(String),
    #[error("docker container `{name}` is not running (status: {status}): start it")]
    Stopped { name: String, status: String },
    /// `workspace_mount` names a mount of something else than the repo.
    #[error(
        "docker container `{container}` mounts {source_dir} at {dest}, not the repo {}: fix workspace_mount",
        .repo.display()
    )]
    WrongMount {
        container: String,
        source_dir: String,
        dest: String,
        repo: PathBuf,
    },
    #[error(
        "docker container `{container}` does not mount the repo {}: mount it, or set workspace_mount",
        .repo.display()
    )]
    NoMount { container: String, repo: PathBuf },
    /// The exec user is root and the pool does not say `allow_root`.
    #[error(
        "docker container `{container}`: {why}, so {}",
        crate::config::ROOT_REFUSED
    )]
    Root { container: String, why: String },
}

/// Find the running container a pool means. Returns its inspect data.
pub(crate) async fn find(
    docker: &Docker,
    lookup: &Lookup,
) -> Result<ContainerInspectResponse, EngineError> {
    let id = match lookup {
        Lookup::Name(n) => n.clone(),
        Lookup::Folder(_) | Lookup::Managed { .. } => {
            let labels = match lookup {
                Lookup::Folder(f) => vec![format!("{FOLDER_LABEL}={}", f.display())],
                Lookup::Managed { pool, project_key } => vec![
                    format!("{POOL_LABEL}={pool}"),
                    format!("{PROJECT_LABEL}={project_key}"),
                ],
                Lookup::Name(_) => unreachable!(),
            };
            let filters = HashMap::from([("label", labels)]);
            let opts = ListContainersOptionsBuilder::new()
                .all(false)
                .filters(&filters)
                .build();
            let list = docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| EngineError::List(e.to_string()))?;
            let mut ids: Vec<(String, String)> = list
                .into_iter()
                .filter_map(|c| {
                    let name = c.names.and_then(|n| n.first().cloned()).unwrap_or_default();
                    Some((c.id?, name.trim_start_matches('/').to_string()))
                })
                .collect();
            match ids.len() {
                0 => {
                    let hint = match lookup {
                        Lookup::Managed { .. } => "run `flocks up` first",
                        _ => "start the devcontainer, or name it with `container`",
                    };
                    return Err(EngineError::NoContainer {
                        what: lookup.describe(),
                        hint,
                    });
                }
                1 => ids.remove(0).0,
                _ => {
                    let names: Vec<String> = ids.into_iter().map(|(_, n)| n).collect();
                    return Err(EngineError::Ambiguous {
                        what: lookup.describe(),
                        names,
                    });
                }
            }
        }
    };
    let info = docker
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| EngineError::Inspect(describe(&e, &id)))?;
    let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
    if !running {
        let status = info
            .state
            .as_ref()
            .and_then(|s| s.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into());
        return Err(EngineError::Stopped {
            name: name_of(&info, &id),
            status,
        });
    }
    Ok(info)
}

/// A container's name without the leading slash, or `fallback`.
pub(crate) fn name_of(info: &ContainerInspectResponse, fallback: &str) -> String {
    info.name
        .as_deref()
        .map(|n| n.trim_start_matches('/').to_string())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// Where the host repo `repo` is inside the container. With `workspace_mount`
/// the repo is mounted there; without it, the bind mount whose source holds the
/// repo tells.
pub(crate) fn repo_in_container(
    info: &ContainerInspectResponse,
    repo: &Path,
    workspace_mount: Option<&str>,
    container: &str,
) -> Result<String, EngineError> {
    let mounts = info.mounts.clone().unwrap_or_default();
    if let Some(dest) = workspace_mount {
        // Check it against the container when it tells (a missing mount may be
        // a volume or an image layer the user knows about).
        if let Some(m) = mounts
            .iter()
            .find(|m| m.destination.as_deref() == Some(dest))
            && let Some(src) = &m.source
            && !Path::new(src).starts_with(repo)
            && !repo.starts_with(src)
        {
            return Err(EngineError::WrongMount {
                container: container.to_string(),
                source_dir: src.clone(),
                dest: dest.to_string(),
                repo: repo.to_path_buf(),
            });
        }
        return Ok(dest.trim_end_matches('/').to_string());
    }
    // The mount whose source is the repo or its closest ancestor.
    let best = mounts
        .iter()
        .filter_map(|m| Some((PathBuf::from(m.source.as_ref()?), m.destination.clone()?)))
        .filter(|(src, _)| repo.starts_with(src))
        .max_by_key(|(src, _)| src.components().count());
    match best {
        Some((src, dest)) => {
            let rel = repo.strip_prefix(&src).unwrap_or(Path::new(""));
            let p = Path::new(&dest).join(rel);
            Ok(p.display().to_string().trim_end_matches('/').to_string())
        }
        None => Err(EngineError::NoMount {
            container: container.to_string(),
            repo: repo.to_path_buf(),
        }),
    }
}

/// What a helper exec printed and how it ended.
pub(crate) struct ExecOutput {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i64>,
}

/// Run a short helper exec (no stdin) to its end.
pub(crate) async fn run(
    docker: &Docker,
    container: &str,
    argv: Vec<String>,
    env: Vec<String>,
    user: &str,
) -> Result<ExecOutput, BollardError> {
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions::<String> {
                cmd: Some(argv),
                env: Some(env),
                user: Some(user.to_string()),
                working_dir: Some("/".into()),
                attach_stdin: Some(false),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await?
        .id;
    let mut out = ExecOutput {
        stdout: String::new(),
        stderr: String::new(),
        code: None,
    };
    if let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker.start_exec(&exec, None).await?
    {
        let _ = input.shutdown().await;
        while let Some(item) = output.next().await {
            match item? {
                LogOutput::StdErr { message } => {
                    out.stderr.push_str(&String::from_utf8_lossy(&message))
                }
                other => out
                    .stdout
                    .push_str(&String::from_utf8_lossy(&other.into_bytes())),
            }
        }
    }
    out.code = docker.inspect_exec(&exec).await?.exit_code;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::MountPoint;

    fn info(mounts: &[(&str, &str)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            mounts: Some(
                mounts
                    .iter()
                    .map(|(s, d)| MountPoint {
                        source: Some(s.to_string()),
                        destination: Some(d.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn repo_path_from_mounts() {
        let i = info(&[
            ("/usr", "/usr"),
            ("/home/me/src", "/src"),
            ("/home/me/src/app", "/workspace"),
        ]);
        let repo = Path::new("/home/me/src/app");
        assert_eq!(
            repo_in_container(&i, repo, None, "c").unwrap(),
            "/workspace"
        );
        let i = info(&[("/home/me", "/h")]);
        assert_eq!(
            repo_in_container(&i, repo, None, "c").unwrap(),
            "/h/src/app"
        );
        let i = info(&[("/other", "/workspace")]);
        assert!(
            repo_in_container(&i, repo, None, "c")
                .unwrap_err()
                .to_string()
                .contains("does not mount")
        );
        assert!(
            repo_in_container(&i, repo, Some("/workspace"), "c")
                .unwrap_err()
                .to_string()
                .contains("fix workspace_mount")
        );
        assert_eq!(
            repo_in_container(&i, repo, Some("/ws/"), "c").unwrap(),
            "/ws"
        );
    }
}
