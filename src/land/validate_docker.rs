//! `[validate] pool`: the validate commands run inside a docker pool's
//! container, at the land worktree's path there (it lives under the repo,
//! which the container mounts), so that the code agents wrote (build
//! scripts, tests) runs where the agents ran and not on the host.
//!
//! Each command starts as an agent does (`docker::start`): under the
//! per-exec reaper, which every descendant reparents to whatever it does
//! (setsid, double forks, removing its `FLOCKS_ATTEMPT=<project>:validate:<n>`
//! tag). When the command exits, the reaper stops what it left running; on a
//! timeout or Ctrl-C flocks tells it TERM over its stdin (TERM,
//! `kill_grace_secs`, KILL); when flocks dies, that stream ends and the
//! reaper stops the tree. A tag sweep follows each command. A container
//! without perl gets the `sh` wrapper and the tag alone, and validation says
//! so. The host `.git` guard watches the repo while the commands run, as it
//! does for agents: what they plant there is undone and fails validation.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::validate::{INTERRUPTED, Out, Run, Validation, emit};
use crate::backend::docker::{self, Target, scripts};
use crate::config::{Config, DockerConfig, PoolConfig, WorkspaceMode};
use crate::error::{Error, Result};

/// The docker pool that validates.
pub struct Place<'a> {
    pub config: &'a Config,
    pub pool: &'a PoolConfig,
    pub docker: &'a DockerConfig,
}

/// How one command ended.
enum Ended {
    Exited(Option<i64>),
    TimedOut,
    Interrupted,
}

/// Validate `commit` (checked out in `r.dir` on the host) in the pool's
/// container: in mount mode at `r.dir`'s path there, in clone mode in a
/// worktree of the container's own clone, the commit's objects sent in.
pub fn run(r: &Run, out: &Out, place: &Place, commit: git2::Oid) -> Result<Validation> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_async(r, out, place, commit))
}

async fn run_async(
    r: &Run<'_>,
    out: &Out,
    place: &Place<'_>,
    commit: git2::Oid,
) -> Result<Validation> {
    let pool = &place.pool.name;
    let (client, t) = docker::find_pool_target(place.config, place.pool, place.docker)
        .await
        .map_err(|why| {
            Error::CannotStart(format!(
                "cannot validate in docker pool `{pool}` ([validate] pool): {why}"
            ))
        })?;
    let repo_dir = place
        .config
        .workspace
        .repo
        .canonicalize()
        .unwrap_or_else(|_| place.config.workspace.repo.clone());
    let host_dir = r.dir.canonicalize().unwrap_or_else(|_| r.dir.to_path_buf());
    let reaper = docker::probe_reaper(&client, &t).await;
    let cwd = match place.docker.workspace {
        WorkspaceMode::Clone => {
            let name = format!(
                "@{}",
                host_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().trim_start_matches('.').to_string())
                    .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()))
                    .unwrap_or_else(|| "land".into())
            );
            docker::checkout_commit(
                place.config,
                place.docker,
                &client,
                &t,
                reaper,
                &name,
                commit,
            )
            .await
            .map_err(|why| {
                Error::CannotStart(format!(
                    "cannot validate in docker pool `{pool}` ([validate] pool): {why}"
                ))
            })?
        }
        WorkspaceMode::Mount => {
            let rel = host_dir.strip_prefix(&repo_dir).map_err(|_| {
                Error::Usage(format!(
                    "the land worktree {} is not inside the repo {} that docker container `{}` mounts, \
                     so [validate] pool cannot run there",
                    host_dir.display(),
                    repo_dir.display(),
                    t.name
                ))
            })?;
            let mount = t.repo.as_deref().unwrap_or_default();
            // This runtime runs nothing else: blocking here is fine.
            docker::give_to_repo_owner(place.config, &host_dir);
            Path::new(mount).join(rel).display().to_string()
        }
    };
    let key = crate::project::key_of(&place.config.state_dir());
    let git_dir = crate::git::open(&repo_dir)
        .map(|repo| repo.commondir().to_path_buf())
        .unwrap_or_else(|_| repo_dir.join(".git"));
    // The guard watches the host repo wherever the container can reach it.
    let guard = t.repo.is_some().then(|| crate::guard::for_repo(&git_dir));
    emit(
        out,
        r.echo,
        format!(
            "[flocks] validating in docker container `{}` (pool `{pool}`) at {cwd}\n",
            t.name
        )
        .as_bytes(),
    );
    if !reaper {
        emit(
            out,
            r.echo,
            format!(
                "[flocks] {}\n",
                docker::no_reaper_note(&t.name, "validate commands")
            )
            .as_bytes(),
        );
    }
    let deadline = r.timeout.map(|t| Instant::now() + t);
    for (n, spec) in r.commands.iter().enumerate() {
        emit(out, r.echo, format!("$ {spec}\n").as_bytes());
        let tag = format!("{key}:validate:{}-{n}", std::process::id());
        let ticket = guard.as_ref().map(|g| g.begin());
        let ended = one(
            r,
            out,
            &client,
            &t,
            reaper,
            &cwd,
            &tag,
            spec.argv(),
            deadline,
        )
        .await;
        let violation = match (guard.clone(), ticket) {
            (Some(g), Some(ticket)) => tokio::task::spawn_blocking(move || g.end(ticket))
                .await
                .unwrap_or(None),
            _ => None,
        };
        let ended = ended.map_err(|why| {
            Error::CannotStart(format!(
                "cannot validate in docker pool `{pool}` ([validate] pool): {why}"
            ))
        })?;
        if let Some(v) = violation {
            let reason = format!("it changed {v} in the host's git dir (undone)");
            emit(
                out,
                r.echo,
                format!("validation failed: {spec}: {reason}\n").as_bytes(),
            );
            return Ok(Validation::Failed {
                command: spec.to_string(),
                reason,
            });
        }
        let reason = match ended {
            Ended::Exited(Some(0)) => continue,
            Ended::Exited(Some(c)) => format!("exit status {c}"),
            Ended::Exited(None) => "no exit status (the container may have stopped)".into(),
            Ended::Interrupted => {
                emit(out, r.echo, format!("interrupted: {spec}\n").as_bytes());
                return Ok(Validation::Interrupted {
                    command: spec.to_string(),
                });
            }
            Ended::TimedOut => format!(
                "timed out after {}s ([validate] timeout_secs)",
                r.timeout.unwrap_or_default().as_secs_f64()
            ),
        };
        emit(
            out,
            r.echo,
            format!("validation failed: {spec}: {reason}\n").as_bytes(),
        );
        return Ok(Validation::Failed {
            command: spec.to_string(),
            reason,
        });
    }
    Ok(Validation::Passed)
}

/// Run one command in the container to its end, its timeout or a Ctrl-C,
/// under the reaper when there is one; then sweep what carries its tag.
/// Err: the container could not run it.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, each argument distinct"
)]
async fn one(
    r: &Run<'_>,
    out: &Out,
    client: &Docker,
    t: &Target,
    reaper: bool,
    cwd: &str,
    tag: &str,
    argv: Vec<String>,
    deadline: Option<Instant>,
) -> std::result::Result<Ended, docker::ExecError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(Ended::Exited(Some(0)));
    };
    let unset: Vec<&str> = r
        .scrub
        .iter()
        .map(String::as_str)
        .filter(|k| scripts::is_var_name(k))
        .collect();
    let env = vec![
        format!("{}={tag}", crate::agent::spec::TAG_VAR),
        format!("FLOCKS_UNSET={}", unset.join(" ")),
        // git checks ownership along the host path in the worktree's link.
        "GIT_CONFIG_COUNT=1".into(),
        "GIT_CONFIG_KEY_0=safe.directory".into(),
        "GIT_CONFIG_VALUE_0=*".into(),
    ];
    let x = docker::Exec {
        program: program.clone(),
        args,
        env,
        cwd,
        stdin: Vec::new(),
        grace: r.grace,
    };
    let docker::Started {
        exec,
        mut output,
        input,
        writer,
    } = docker::start(client, t, reaper, x).await?;
    let mut stopped: Option<Ended> = None;
    loop {
        let stop = if INTERRUPTED.load(Ordering::SeqCst) {
            Some(Ended::Interrupted)
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Ended::TimedOut)
        } else {
            None
        };
        if let Some(why) = stop {
            stopped = Some(why);
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), output.next()).await {
            Err(_) => continue,
            Ok(None) => break,
            Ok(Some(Ok(LogOutput::StdErr { message }))) => emit(out, r.echo, &message),
            Ok(Some(Ok(other))) => emit(out, r.echo, &other.into_bytes()),
            Ok(Some(Err(e))) => {
                return Err(docker::ExecError::Engine(docker::engine::describe(
                    &e, &t.name,
                )));
            }
        }
    }
    if stopped.is_some()
        && let Some(held) = &input
        && docker::tell(held, r.grace).await
    {
        // The reaper stops the tree (TERM, grace, KILL) and exits: let the
        // stream end with it.
        let _ = tokio::time::timeout(r.grace + Duration::from_secs(5), async {
            while let Some(item) = output.next().await {
                if let Ok(o) = item {
                    emit(out, r.echo, &o.into_bytes());
                }
            }
        })
        .await;
    }
    writer.abort();
    if let Some(held) = &input
        && let Some(mut w) = held.lock().await.take()
    {
        let _ = w.shutdown().await;
    }
    // The tag sweep: all there is without the reaper, and a second look with it.
    let grace = if stopped.is_some() {
        r.grace
    } else {
        r.grace.min(Duration::from_secs(2))
    };
    match docker::stop_tagged(client, t, tag, grace).await {
        Ok(report) if scripts::stopped_any(&report) && stopped.is_none() => emit(
            out,
            r.echo,
            format!(
                "[flocks] the command exited; stopped what it left running ({})\n",
                report.trim()
            )
            .as_bytes(),
        ),
        Ok(_) => {}
        Err(why) => emit(
            out,
            r.echo,
            format!("[flocks] stopping the command: {why}\n").as_bytes(),
        ),
    }
    if let Some(why) = stopped {
        // Let the stream end now that its processes are gone.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(item) = output.next().await {
                if let Ok(o) = item {
                    emit(out, r.echo, &o.into_bytes());
                }
            }
        })
        .await;
        return Ok(why);
    }
    let mut code = None;
    for _ in 0..50 {
        match client.inspect_exec(&exec).await {
            Ok(i) if i.running == Some(true) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Ok(i) => {
                code = i.exit_code;
                break;
            }
            Err(e) => {
                return Err(docker::ExecError::Engine(docker::engine::describe(
                    &e, &t.name,
                )));
            }
        }
    }
    Ok(Ended::Exited(code))
}
