//! Docker clone mode (`workspace = "clone"`, the default): each task's agent
//! works in a repository of its own inside the container, under
//! `clone_dir/<project key>/worktrees/<task>` (kept across the task's
//! attempts, so that claude's session resumes by path). Nothing of the host
//! repository is in the agent's view through flocks: the helper (the same
//! script as ssh's, `helper.sh`) runs in a docker exec as the pool's exec
//! user, the start commit's objects go in as a bundle on its stdin, and the
//! task's branch comes back as a bundle on its stdout, through the intake.
//!
//! ```text
//!  host repo ──bundle (what the mirror lacks)──▶ exec: sh -c HELPER   (as the exec user,
//!                                                under the reaper: nothing a hook starts outlives it)
//!            ◀──"head", "bundle N", N bytes─────  <clone_dir>/<key>/mirror.git, worktrees/<task>
//!  intake: quarantine, one ref, strict fsck, max_fetch_mb, origin ancestry ─▶ flocks/<task>
//! ```
//!
//! The agent and `[workspace] setup` start as in mount mode (under the
//! reaper, `docker::start`), with their working directory in the clone.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{DockerBackend, Exec, Started, Target, start};
use crate::backend::helper::session::{self, CallError, Input, Session, Transport};
use crate::backend::helper::{self, ROOT_VAR, Reply, ReplyError, SCRIPT, Spec};
use crate::backend::{
    BoxFuture, FinishError, Finished, MarkError, PrepareError, PrepareJob, Workspace,
};
use crate::git::include::{Copied, IncludeError, IncludeSet};
use crate::git::intake::Want;

/// How long one helper call may take (a first bundle of a large history).
const CALL_LIMIT: Duration = Duration::from_secs(900);

/// The helper as a docker exec: `sh -c HELPER flocks-helper`, as the exec
/// user, under the reaper when the container has one (a hook the agent
/// planted in its repository cannot leave a process behind), its stdin the
/// header and body, its stdout read as it streams.
pub(super) struct ExecHelper {
    pub docker: Docker,
    pub target: Target,
    pub reaper: bool,
    /// The helper's root in the container.
    pub root: String,
    /// The tag of its processes (`<project key>:helper:<n>`), for the sweep.
    pub tag: String,
    pub grace: Duration,
}

/// A container's helper root is changed by one call at a time (the mirror's
/// refs and worktrees), whichever pool calls.
fn admin_lock(container: &str, root: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(format!("{container}\n{root}"))
        .or_default()
        .clone()
}

/// The helper's last words: its own error line, not the reaper's notes.
fn last_words(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("flocks-reaper:"))
        .map(|l| l.strip_prefix("flocks-helper: ").unwrap_or(l).to_string())
        .unwrap_or_else(|| "no message".into())
}

impl ExecHelper {
    async fn run(
        &self,
        input: Input,
        spec: &'static Spec,
        want: Option<&Want>,
    ) -> Result<Reply, CallError> {
        let mut stdin = input.header;
        if let Some(mut body) = input.body {
            stdin =
                tokio::task::spawn_blocking(move || body.read_to_end(&mut stdin).map(|_| stdin))
                    .await
                    .map_err(|e| CallError::Failed(e.to_string()))?
                    .map_err(|e| {
                        CallError::Failed(format!("cannot read what goes to the helper: {e}"))
                    })?;
        }
        let args: Vec<String> = ["-c", SCRIPT, "flocks-helper"].map(String::from).to_vec();
        let x = Exec {
            program: "/bin/sh".into(),
            args: &args,
            env: vec![
                format!("{ROOT_VAR}={}", self.root),
                format!("{}={}", crate::proc::TAG_VAR, self.tag),
                "FLOCKS_UNSET=".into(),
            ],
            cwd: "/",
            stdin,
            grace: self.grace,
        };
        let Started {
            exec,
            mut output,
            input: held,
            writer,
        } = start(&self.docker, &self.target, self.reaper, x)
            .await
            .map_err(|e| CallError::Lost(e.to_string()))?;
        let (mut tx, rx) = tokio::io::duplex(256 * 1024);
        let read = helper::read_reply(rx, spec, want);
        let pump = async {
            let mut err: Vec<u8> = Vec::new();
            let mut reader_gone = false;
            while let Some(item) = output.next().await {
                match item {
                    Ok(LogOutput::StdErr { message }) => {
                        err.extend_from_slice(&message);
                        if err.len() > 64 * 1024 {
                            err.drain(..err.len() - 32 * 1024);
                        }
                    }
                    Ok(other) => {
                        if !reader_gone && tx.write_all(&other.into_bytes()).await.is_err() {
                            // The reply was refused: stop the helper.
                            reader_gone = true;
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.shutdown().await;
            drop(tx);
            (err, reader_gone)
        };
        let (reply, (err, reader_gone)) = tokio::join!(read, pump);
        if reader_gone {
            let stopped = match &held {
                Some(h) => super::tell(h, Duration::ZERO).await,
                None => false,
            };
            if !stopped {
                let _ = super::kill_attempt(
                    &self.docker,
                    &self.target,
                    super::scripts::Match::Exact,
                    &self.tag,
                    Duration::ZERO,
                )
                .await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                while output.next().await.is_some() {}
            })
            .await;
        }
        writer.abort();
        if let Some(h) = &held
            && let Some(mut w) = h.lock().await.take()
        {
            let _ = w.shutdown().await;
        }
        let info = super::conclude(&self.docker, &exec, &self.target, None).await;
        if !self.reaper {
            // What a hook in the agent's repository left running.
            let _ = super::kill_attempt(
                &self.docker,
                &self.target,
                super::scripts::Match::Exact,
                &self.tag,
                self.grace.min(Duration::from_secs(2)),
            )
            .await;
        }
        match (reply, info.lost, info.code) {
            (Err(ReplyError::Intake(e)), _, _) => Err(CallError::Intake(e)),
            (_, Some(lost), _) => Err(CallError::Lost(lost)),
            (reply, None, Some(0)) => Ok(reply?),
            (_, None, Some(126 | 127)) => Err(CallError::Lost(format!(
                "docker container `{}` cannot run /bin/sh for flocks' helper: {}",
                self.target.name,
                last_words(&err)
            ))),
            (_, None, _) => Err(CallError::Failed(format!(
                "in docker container `{}`: {}",
                self.target.name,
                last_words(&err)
            ))),
        }
    }
}

impl Transport for ExecHelper {
    fn call<'a>(
        &'a self,
        input: Input,
        spec: &'static Spec,
        want: Option<&'a Want>,
    ) -> BoxFuture<'a, Result<Reply, CallError>> {
        Box::pin(async move {
            tokio::time::timeout(CALL_LIMIT, self.run(input, spec, want))
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Lost(format!(
                        "flocks' helper in docker container `{}` did not answer within {}s",
                        self.target.name,
                        CALL_LIMIT.as_secs()
                    )))
                })
        })
    }
}

/// Why the pool cannot prepare: a lost container takes the pool down.
fn prepare_error(e: CallError) -> PrepareError {
    match e {
        CallError::Lost(m) => PrepareError::HostLost(m),
        e => PrepareError::Failed(e.to_string()),
    }
}

/// Clone mode's `[validate] pool`: check `commit` out in the container, in
/// a worktree of the helper's mirror named `name` (`@land`, `@judge`: kept,
/// so that builds there are incremental), its objects sent in as a bundle.
/// Returns the worktree's path there.
pub(crate) async fn checkout_commit(
    config: &crate::config::Config,
    d: &crate::config::DockerConfig,
    docker: &Docker,
    t: &Target,
    reaper: bool,
    name: &str,
    commit: git2::Oid,
) -> Result<String, CallError> {
    let key = crate::paths::key_of(&config.state_dir());
    let h = ExecHelper {
        docker: docker.clone(),
        target: t.clone(),
        reaper,
        root: super::clone_root(d, &key),
        tag: format!("{key}:helper:validate-{}", std::process::id()),
        grace: config.kill_grace.min(Duration::from_secs(5)),
    };
    let known = session::Known::default();
    let s = Session {
        transport: &h,
        repo_dir: &config.workspace.repo,
        env: &[],
        max_bytes: d.max_fetch_bytes(),
        known: &known,
    };
    let lock = admin_lock(&t.id, &h.root);
    let _admin = lock.lock().await;
    session::init(&h, "").await?;
    s.send_start(name, commit).await?;
    let p = s
        .prepare(
            name,
            &format!("flocks-validate/{}", name.trim_start_matches('@')),
            commit,
        )
        .await?;
    Ok(p.worktree)
}

impl DockerBackend {
    /// The helper over an exec into the pool's container.
    pub(super) async fn exec_helper(&self) -> Result<ExecHelper, CallError> {
        static N: AtomicU64 = AtomicU64::new(0);
        let t = self
            .target()
            .await
            .map_err(|e| CallError::Lost(e.to_string()))?;
        let docker = self
            .client()
            .await
            .map_err(|e| CallError::Lost(e.to_string()))?;
        let reaper = self.has_reaper(&t).await;
        Ok(ExecHelper {
            docker,
            target: t,
            reaper,
            root: self.clone_root.clone(),
            tag: format!(
                "{}:helper:{}-{}",
                self.project_key,
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ),
            grace: self.grace.min(Duration::from_secs(5)),
        })
    }

    fn session<'a>(&'a self, h: &'a ExecHelper) -> Session<'a> {
        Session {
            transport: h,
            repo_dir: &self.repo_dir,
            env: &self.git_env,
            max_bytes: self.max_bytes,
            known: &self.known,
        }
    }

    /// The helper's root and mirror in the container, made once per
    /// process. Err: why the pool cannot be used (git missing there, a
    /// root it cannot write).
    pub(super) async fn helper_ready(&self) -> Result<String, String> {
        self.helper
            .get_or_init(|| async {
                let h = self.exec_helper().await.map_err(|e| e.to_string())?;
                let lock = admin_lock(&h.target.id, &h.root);
                let _admin = lock.lock().await;
                session::init(&h, "")
                    .await
                    .map(|r| r.root)
                    .map_err(|e| format!("clone_dir {}: {e}", self.clone_root))
            })
            .await
            .clone()
    }

    /// The task's clone in the container, ready for the attempt, in one
    /// helper call when the container has the start commit and nothing of
    /// an interrupted attempt waits there (else the work comes back, or the
    /// objects go in, first).
    pub(super) async fn prepare_clone(&self, job: &PrepareJob) -> Result<Workspace, PrepareError> {
        self.helper_ready().await.map_err(PrepareError::HostLost)?;
        let h = self.exec_helper().await.map_err(prepare_error)?;
        let s = self.session(&h);
        let place = format!("docker container `{}`", h.target.name);
        let host_wt = Some(self.worktrees.path_for(&job.task));
        let (repo_dir, j) = (self.repo_dir.clone(), job.clone());
        let (start, created) = tokio::task::spawn_blocking(move || {
            crate::backend::ssh::local_start(&repo_dir, &j.branch, &j.base, j.fresh)
        })
        .await
        .map_err(|e| PrepareError::Failed(e.to_string()))?
        .map_err(|e| PrepareError::Failed(e.to_string()))?;
        let oid = git2::Oid::from_str(&start).map_err(|e| PrepareError::Failed(e.to_string()))?;
        let (p, start, note) = {
            let lock = admin_lock(&h.target.id, &h.root);
            let _admin = lock.lock().await;
            s.prepare_ready(job, oid, !job.fresh, host_wt, &place)
                .await
                .map_err(prepare_error)?
        };
        // flocks as root on someone else's repo: what it wrote in .git
        // (the branch, salvaged objects) goes to the repo's owner.
        self.give_back(&self.git_dir).await;
        let start = start.to_string();
        Ok(Workspace {
            host_path: format!("{}:{}", h.target.name, p.worktree).into(),
            agent_cwd: p.worktree,
            origin: job.origin_for(&start, created),
            start_commit: start,
            created_branch: created,
            note,
            setup_mark: p.setup_mark,
        })
    }

    /// After the agent: leftovers committed in the clone, the branch back
    /// through the intake.
    pub(super) async fn finish_clone(
        &self,
        ws: &Workspace,
        task: &str,
        branch: &str,
        attempt: u32,
    ) -> Result<Finished, FinishError> {
        let h = self.exec_helper().await?;
        let reflog = format!(
            "flocks: attempt {attempt} of {task} from docker container `{}`",
            h.target.name
        );
        let finished = self
            .session(&h)
            .finish(
                task,
                branch,
                attempt,
                &ws.start_commit,
                &ws.origin,
                Some(self.worktrees.path_for(task)),
                &reflog,
            )
            .await;
        self.give_back(&self.git_dir).await;
        Ok(finished?)
    }

    pub(super) async fn copy_in_clone(
        &self,
        task: &str,
        files: Arc<IncludeSet>,
    ) -> Result<Copied, IncludeError> {
        let transfer = |why: String| IncludeError::Transfer {
            host: self.lookup.describe(),
            why,
        };
        let h = self
            .exec_helper()
            .await
            .map_err(|e| transfer(e.to_string()))?;
        self.session(&h)
            .include(task, files)
            .await
            .map_err(|e| transfer(e.to_string()))
    }

    pub(super) async fn mark_clone(&self, task: &str, hash: &str) -> Result<(), MarkError> {
        let h = self.exec_helper().await?;
        Ok(self.session(&h).mark(task, hash).await?)
    }

    pub(super) async fn release_clone(&self, task: &str) {
        let Ok(h) = self.exec_helper().await else {
            return;
        };
        let lock = admin_lock(&h.target.id, &h.root);
        let _admin = lock.lock().await;
        let _ = self.session(&h).release(task).await;
    }
}
