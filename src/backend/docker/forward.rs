//! flocks' proxy from a container: its address on the host's network, or a
//! `flocks __forward` started in the container.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;

use super::{DockerBackend, Input, Target, engine};
use crate::backend::SpawnError;

/// `flocks __forward` in a container: the address it listens at there, and
/// its stdin, held open (its end ends the forwarder).
pub(super) struct Forwarder {
    addr: String,
    _input: Input,
    ended: Arc<std::sync::atomic::AtomicBool>,
}

impl DockerBackend {
    /// Said as the run starts when the pool's agents need flocks' proxy and
    /// their container offers no way to it.
    pub(super) fn unreachable_note(&self, t: &Target) -> Option<String> {
        (self.needs_proxy && t.network.as_deref() != Some("host") && !t.proxy_mount).then(|| {
            format!(
                "docker container `{}` is not on the host's network and does not mount flocks' proxy directory {} at {}, so its agents cannot reach flocks' proxy (model requests, HTTP(S)_PROXY): let `flocks up` make it (`flocks down`, `flocks up`), add that mount (read-only), or give it network = \"host\"",
                t.name,
                self.proxy_dir.as_deref().unwrap_or(Path::new("?")).display(),
                crate::proxy::CONTAINER_DIR
            )
        })
    }

    /// Where the pool's agents reach flocks' proxy: on the host's network,
    /// its own address; otherwise the forwarder this backend starts in the
    /// container (once per run), listening on the container's loopback and
    /// carrying to the proxy's socket in the project's proxy directory,
    /// which the container mounts.
    pub(super) async fn proxy_address(
        &self,
        proxy: &crate::proxy::Endpoint,
    ) -> Result<String, SpawnError> {
        let t = self
            .target()
            .await
            .map_err(|e| SpawnError::Start(e.to_string()))?;
        if t.network.as_deref() == Some("host") {
            return Ok(proxy.local_authority());
        }
        let dir = self.proxy_dir.clone().unwrap_or_default();
        if !t.proxy_mount {
            // As before the forwarder: said once as the run starts
            // (`unreachable_note`).
            return Ok(proxy.local_authority());
        }
        let name = match proxy.unix.parent() {
            Some(p) if p == dir => proxy.unix.file_name().map(|n| n.to_os_string()),
            _ => None,
        }
        .ok_or_else(|| {
            SpawnError::Start(format!(
                "flocks' proxy socket {} is not in {} (its path there would be too long for a socket): set XDG_STATE_HOME to a shorter directory",
                proxy.unix.display(),
                dir.display()
            ))
        })?;
        let mut fwd = self.forwarder.lock().await;
        if let Some(f) = fwd.as_ref()
            && !f.ended.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(f.addr.clone());
        }
        let bin = tokio::task::spawn_blocking(move || install_forwarder(&dir))
            .await
            .map_err(|e| SpawnError::Start(e.to_string()))?
            .map_err(SpawnError::Start)?;
        let inner = |p: &std::ffi::OsStr| {
            Path::new(crate::proxy::CONTAINER_DIR)
                .join(p)
                .display()
                .to_string()
        };
        let argv = vec![
            inner(bin.as_os_str()),
            crate::proxy::forward::SUBCOMMAND.to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--to".into(),
            inner(&name),
            "--while-stdin".into(),
        ];
        let docker = self
            .client()
            .await
            .map_err(|e| SpawnError::Start(e.to_string()))?;
        let f = start_forwarder(&docker, &t, argv).await?;
        let addr = f.addr.clone();
        *fwd = Some(f);
        Ok(addr)
    }
}

/// Put flocks' own binary in the proxy directory, as `flocks` (a link when
/// it can, else a copy; renamed into place, so that a forwarder running the
/// last one keeps it). Its name in the directory.
fn install_forwarder(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find flocks' own binary for the forwarder: {e}"))?;
    let tmp = dir.join(format!(".flocks-{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(&exe, &tmp).is_err() {
        std::fs::copy(&exe, &tmp)
            .map_err(|e| format!("cannot copy flocks' binary to {}: {e}", tmp.display()))?;
    }
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755));
    let name = PathBuf::from("flocks");
    std::fs::rename(&tmp, dir.join(&name)).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot put flocks' binary in {}: {e}", dir.display())
    })?;
    Ok(name)
}

/// Start the forwarder in the container (as root there: the agents, another
/// user, cannot stop it) and read the address it listens at.
async fn start_forwarder(
    docker: &Docker,
    t: &Target,
    argv: Vec<String>,
) -> Result<Forwarder, SpawnError> {
    let failed = |why: String| {
        SpawnError::Start(format!(
            "cannot start flocks' proxy forwarder in docker container `{}`: {why}",
            t.name
        ))
    };
    let exec = docker
        .create_exec(
            &t.id,
            CreateExecOptions::<String> {
                cmd: Some(argv),
                user: Some("0".into()),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                tty: Some(false),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| failed(engine::describe(&e, &t.name)))?
        .id;
    let (mut output, input) = match docker.start_exec(&exec, None).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => return Err(failed("docker started it detached".into())),
        Err(e) => return Err(failed(engine::describe(&e, &t.name))),
    };
    let mut said = String::new();
    let addr = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = output.next().await {
            let Ok(chunk) = chunk else { break };
            said.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if let Some(line) = said.lines().find(|l| l.starts_with("listening ")) {
                return Some(line["listening ".len()..].trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| {
        failed(if said.trim().is_empty() {
            "it said nothing (can the container run flocks' binary? it needs the same C library as this machine)".into()
        } else {
            said.trim().to_string()
        })
    })?;
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mark = ended.clone();
    tokio::spawn(async move {
        // What it says later (a socket it cannot reach) is not read by anyone.
        while output.next().await.is_some() {}
        mark.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    Ok(Forwarder {
        addr,
        _input: input,
        ended,
    })
}
