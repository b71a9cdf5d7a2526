//! The helper's ops over any transport: what a backend whose agent has a
//! repository of its own calls to fill it (the start commit's objects in),
//! set it up (prepare, include, mark), and empty it (finish, salvage: the
//! branch back through the intake), then give it back (release).
//!
//! A transport is anything that runs one helper process per call with its
//! stdin and stdout attached ([`Transport`]): ssh, a docker exec, a
//! process in a bwrap sandbox ([`super::process::Process`]), an srun.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::Oid;

use super::{Header, Reply, ReplyError, Spec, Unsendable, reply};
use crate::backend::{BoxFuture, Finished, PrepareJob};
use crate::git::include::{Copied, IncludeSet};
use crate::git::intake::{self, Incoming, IntakeError, Want};

/// What the helper reads on its stdin for one call: the header, then a body
/// (a bundle, a tar stream) read from the file's start.
pub(crate) struct Input {
    pub header: Vec<u8>,
    pub body: Option<std::fs::File>,
}

impl From<Vec<u8>> for Input {
    fn from(header: Vec<u8>) -> Input {
        Input { header, body: None }
    }
}

/// Why a helper call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// The transport could not run the helper (the host, the container is
    /// gone): the pool may be down. The reason names it.
    #[error("{0}")]
    Lost(String),
    /// The helper ran and failed: its last words.
    #[error("{0}")]
    Failed(String),
    /// A value could not go into the header.
    #[error(transparent)]
    Unsendable(#[from] Unsendable),
    /// Its reply was refused (form, grammar, framing).
    #[error(transparent)]
    Reply(ReplyError),
    /// The intake refused the work, or could not take it.
    #[error(transparent)]
    Intake(#[from] IntakeError),
}

impl From<ReplyError> for CallError {
    fn from(e: ReplyError) -> CallError {
        match e {
            ReplyError::Intake(e) => CallError::Intake(e),
            e => CallError::Reply(e),
        }
    }
}

/// One way to run the helper: each call starts it afresh, writes `input`
/// to its stdin (then closes it), reads its stdout with
/// [`super::read_reply`] against `spec` (a bundle admitted by `want`), and
/// waits for its end. A helper that exits non-zero is `Failed` (its last
/// stderr line); a refusal of the reply as announced (an oversized bundle)
/// wins over the exit status it caused.
pub(crate) trait Transport: Send + Sync {
    fn call<'a>(
        &'a self,
        input: Input,
        spec: &'static Spec,
        want: Option<&'a Want>,
    ) -> BoxFuture<'a, Result<Reply, CallError>>;
}

/// Commits the agent side's mirror of one transport target is known to have
/// (sent to it): a start among them needs no `have` call. (Work taken back
/// lives in its task's repository there, not in the mirror.)
#[derive(Debug, Default)]
pub(crate) struct Known(Mutex<HashSet<Oid>>);

impl Known {
    fn has(&self, oid: Oid) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&oid)
    }

    fn add(&self, oid: Oid) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(oid);
    }
}

/// The helper's ops for one host repository over one transport.
pub(crate) struct Session<'a> {
    pub transport: &'a dyn Transport,
    /// The host repository.
    pub repo_dir: &'a Path,
    /// For the helper's own git: identity, `safe.directory` (env lines).
    pub env: &'a [(String, String)],
    /// `max_fetch_mb`, in bytes.
    pub max_bytes: u64,
    pub known: &'a Known,
}

/// What `init` found.
#[derive(Debug, Clone)]
pub(crate) struct Root {
    /// The helper's root directory.
    pub root: String,
    /// The setup (`setup_hash`) is recorded as done there.
    pub setup_done: bool,
}

/// What `prepare` made.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The task's worktree, where its agent runs.
    pub worktree: String,
    /// The `[workspace] setup` that completed there, if one did.
    pub setup_mark: Option<String>,
}

fn oid(s: &str) -> Result<Oid, CallError> {
    Oid::from_str(s).map_err(|e| CallError::Failed(format!("bad commit id {s:?}: {}", e.message())))
}

/// Make the helper's root and mirror over `transport`; whether `setup_hash`
/// ran there.
pub(crate) async fn init(transport: &dyn Transport, setup_hash: &str) -> Result<Root, CallError> {
    let h = Header::new("init").line("setup_hash", setup_hash)?.end();
    let r = transport.call(h.into(), &reply::INIT, None).await?;
    Ok(Root {
        root: r.get("root").unwrap_or_default().to_string(),
        setup_done: r.get("setup") == Some("done"),
    })
}

impl Session<'_> {
    async fn call(
        &self,
        header: Header,
        spec: &'static Spec,
        want: Option<&Want>,
    ) -> Result<Reply, CallError> {
        let header = header.env(self.env).end();
        self.transport.call(header.into(), spec, want).await
    }

    /// The objects of `start` in: asks what the agent side has (unless it is
    /// known to have `start`), and sends a bundle of what it lacks. The
    /// start is then `refs/flocks/start/<task>` there.
    pub(crate) async fn send_start(&self, task: &str, start: Oid) -> Result<(), CallError> {
        if !self.known.has(start) {
            let h = Header::new("have").line("start", start)?;
            let r = self.call(h, &reply::HAVE, None).await?;
            if r.get("start") != Some("yes") {
                let haves: Vec<Oid> = r
                    .all("have")
                    .filter_map(|h| Oid::from_str(h).ok())
                    .collect();
                return self.send_bundle(task, start, haves).await;
            }
            self.known.add(start);
        }
        Ok(())
    }

    /// The task's worktree on `branch` at `start` (whose objects are there:
    /// [`Session::send_start`]).
    pub(crate) async fn prepare(
        &self,
        task: &str,
        branch: &str,
        start: Oid,
    ) -> Result<Prepared, CallError> {
        let h = Header::new("prepare")
            .line("task", task)?
            .line("branch", branch)?
            .line("start", start)?;
        let r = self.call(h, &reply::PREPARE, None).await?;
        match r.get("worktree") {
            Some(w) => Ok(Prepared {
                worktree: w.to_string(),
                setup_mark: r.get("setup_mark").map(str::to_string),
            }),
            None => Err(CallError::Failed(format!(
                "the helper cannot prepare {task}: it lacks the start commit {start}"
            ))),
        }
    }

    /// Everything `prepare` needs in as few calls as the work allows (one,
    /// usually): the task's worktree on `branch` at `start` (where the
    /// branch is here now, `local_start` made it so). With `salvage`, what
    /// an interrupted attempt left there comes back first, through the
    /// intake (`Session::salvage`'s rules), and the attempt starts from it;
    /// a start the agent side lacks is sent as a bundle. Returns the
    /// worktree, the commit the attempt starts from, and a note.
    pub(crate) async fn prepare_ready(
        &self,
        job: &PrepareJob,
        mut start: Oid,
        mut salvage: bool,
        host_worktree: Option<PathBuf>,
        place: &str,
    ) -> Result<(Prepared, Oid, Option<String>), CallError> {
        let origin = job
            .origin
            .as_deref()
            .and_then(|o| Oid::from_str(o).ok())
            .unwrap_or(start);
        let mut note = None;
        let mut sent = false;
        for _ in 0..4 {
            let mut h = Header::new("prepare")
                .line("task", &job.task)?
                .line("branch", &job.branch)?
                .line("start", start)?;
            if salvage {
                h = h.line("salvage", "yes")?.lines("have", [start, origin])?;
            }
            let want = self.want(
                &job.task,
                &job.branch,
                origin,
                "flocks: work an interrupted attempt left",
                host_worktree.clone(),
            );
            let r = match self.call(h, &reply::PREPARE, Some(&want)).await {
                Err(e @ (CallError::Reply(_) | CallError::Intake(_))) if salvage => {
                    note = Some(format!(
                        "task {}: the work an interrupted attempt left on {place} was not taken: {e}",
                        job.task
                    ));
                    salvage = false;
                    continue;
                }
                r => r?,
            };
            if let Some(worktree) = r.get("worktree") {
                return Ok((
                    Prepared {
                        worktree: worktree.to_string(),
                        setup_mark: r.get("setup_mark").map(str::to_string),
                    },
                    start,
                    note,
                ));
            }
            if let Some(head) = r.oid("head")
                && salvage
            {
                salvage = false;
                let incoming = Incoming {
                    head: Some(head),
                    bundle: r.bundle,
                };
                let (place, task) = (place.to_string(), job.task.clone());
                let got = tokio::task::spawn_blocking(move || {
                    salvaged(&want, incoming, Some(start), &place)
                })
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?;
                note = match got {
                    Ok(n) => n,
                    Err(e) => Some(format!(
                        "task {task}: the work an interrupted attempt left was not taken: {e}"
                    )),
                };
                // Where the branch is now: the salvaged work, or (kept
                // aside, refused) where it was.
                let (repo_dir, branch) = (self.repo_dir.to_path_buf(), job.branch.clone());
                start = tokio::task::spawn_blocking(move || {
                    let repo = git2::Repository::open(&repo_dir).ok()?;
                    let r = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
                    r.target()
                })
                .await
                .ok()
                .flatten()
                .unwrap_or(start);
                continue;
            }
            if r.get("start") == Some("no") && !sent {
                sent = true;
                let haves: Vec<Oid> = r
                    .all("have")
                    .filter_map(|h| Oid::from_str(h).ok())
                    .collect();
                self.send_bundle(&job.task, start, haves).await?;
                continue;
            }
            return Err(CallError::Failed(format!(
                "the helper prepared nothing for {} and said why not in words flocks does not know",
                job.task
            )));
        }
        Err(CallError::Failed(format!(
            "the helper did not prepare {} after several rounds",
            job.task
        )))
    }

    /// A bundle of `start` for an agent side that has `haves`, sent with
    /// `receive`.
    async fn send_bundle(&self, task: &str, start: Oid, haves: Vec<Oid>) -> Result<(), CallError> {
        let repo_dir = self.repo_dir.to_path_buf();
        let (file, len) =
            tokio::task::spawn_blocking(move || super::start_bundle(&repo_dir, start, &haves))
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?
                .map_err(|e| {
                    CallError::Failed(format!("cannot bundle the start commit {start}: {e}"))
                })?;
        let header = Header::new("receive")
            .line("task", task)?
            .env(self.env)
            .bundle(len);
        let input = Input {
            header,
            body: Some(file),
        };
        self.transport.call(input, &reply::NOTHING, None).await?;
        self.known.add(start);
        Ok(())
    }

    /// `.worktreeinclude`'s files (read on this machine) into the worktree.
    pub(crate) async fn include(
        &self,
        task: &str,
        files: Arc<IncludeSet>,
    ) -> Result<Copied, CallError> {
        let (set, t) = (files.clone(), task.to_string());
        let file = tokio::task::spawn_blocking(move || super::include_archive(&t, &set))
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let input = Input {
            header: Vec::new(),
            body: Some(file),
        };
        self.transport.call(input, &reply::NOTHING, None).await?;
        Ok(Copied {
            written: files.files.iter().map(|f| f.rel.clone()).collect(),
            ..Copied::default()
        })
    }

    /// Record that the setup `hash` completed in the task's worktree.
    pub(crate) async fn mark(&self, task: &str, hash: &str) -> Result<(), CallError> {
        let h = Header::new("mark")
            .line("task", task)?
            .line("setup_hash", hash)?;
        self.call(h, &reply::NOTHING, None).await.map(|_| ())
    }

    /// The mirror's upkeep on the agent side (`pack`): its loose refs
    /// packed, its objects repacked when git's own rule says so (nothing
    /// dropped). `Ok(None)`: nothing was due.
    pub(crate) async fn pack(&self) -> Result<Option<crate::git::upkeep::Done>, CallError> {
        let started = std::time::Instant::now();
        let r = self.call(Header::new("pack"), &reply::PACK, None).await?;
        let count = |k: &str| r.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        let done = crate::git::upkeep::Done {
            packed_refs: count("packed_refs"),
            gc: r.get("gc") == Some("yes"),
            loose_objects: count("loose_objects"),
            packs: count("packs"),
            secs: started.elapsed().as_secs_f64(),
        };
        Ok((done.packed_refs > 0 || done.gc).then_some(done))
    }

    /// Remove the task's worktree (its work is on its branch here).
    pub(crate) async fn release(&self, task: &str) -> Result<(), CallError> {
        let h = Header::new("release").line("task", task)?;
        self.call(h, &reply::NOTHING, None).await.map(|_| ())
    }

    fn want(
        &self,
        task: &str,
        branch: &str,
        origin: Oid,
        reflog: &str,
        host_worktree: Option<PathBuf>,
    ) -> Want {
        Want {
            repo_dir: self.repo_dir.to_path_buf(),
            task: task.to_string(),
            branch: branch.to_string(),
            origin,
            max_bytes: self.max_bytes,
            reflog: reflog.to_string(),
            host_worktree,
        }
    }

    /// After the agent: its leftovers committed there, the branch back
    /// through the intake (from `start`, where flocks left it here), and
    /// the attempt measured.
    #[expect(clippy::too_many_arguments, reason = "what an attempt's end is")]
    pub(crate) async fn finish(
        &self,
        task: &str,
        branch: &str,
        attempt: u32,
        start: &str,
        origin: &str,
        host_worktree: Option<PathBuf>,
        reflog: &str,
    ) -> Result<Finished, CallError> {
        let (start, origin) = (oid(start)?, oid(origin)?);
        let h = Header::new("finish")
            .line("task", task)?
            .line("attempt", attempt)?
            .line("branch", branch)?
            .lines("have", [start, origin])?;
        let want = self.want(task, branch, origin, reflog, host_worktree);
        let r = self.call(h, &reply::FINISH, Some(&want)).await?;
        let leftovers = r.get("leftovers") == Some("yes");
        let incoming = Incoming {
            head: r.oid("head"),
            bundle: r.bundle,
        };
        let finished = tokio::task::spawn_blocking(move || -> Result<Finished, CallError> {
            let got = intake::take(&want, incoming, Some(start))?;
            let repo = git2::Repository::open(&want.repo_dir)
                .map_err(|e| CallError::Failed(e.message().to_string()))?;
            let new_commits = if got.tip == start {
                0
            } else {
                repo.graph_ahead_behind(got.tip, start)
                    .map_err(|e| CallError::Failed(e.message().to_string()))?
                    .0
            };
            Ok(Finished {
                tip: got.tip.to_string(),
                leftovers_committed: leftovers,
                new_commits,
                guard_violation: None,
                refused: None,
            })
        })
        .await
        .map_err(|e| CallError::Failed(e.to_string()))??;
        Ok(finished)
    }

    /// Before an attempt that keeps the task's branch: what an interrupted
    /// attempt (flocks was killed) left in the task's worktree there comes
    /// back first, through the intake, so that the next attempt builds on
    /// it. The branch here is fast-forwarded to it; work that went another
    /// way is kept as `refs/flocks/backup/<task>/remote`; work the intake
    /// refuses is left out. Returns a note for the log (`place` names where
    /// the work was).
    pub(crate) async fn salvage(
        &self,
        job: &PrepareJob,
        host_worktree: Option<PathBuf>,
        place: &str,
    ) -> Result<Option<String>, CallError> {
        let (repo_dir, branch) = (self.repo_dir.to_path_buf(), job.branch.clone());
        let local = tokio::task::spawn_blocking(move || {
            let repo = git2::Repository::open(&repo_dir).ok()?;
            let r = repo.find_reference(&format!("refs/heads/{branch}")).ok()?;
            r.target()
        })
        .await
        .unwrap_or(None);
        let origin = job
            .origin
            .as_deref()
            .and_then(|o| Oid::from_str(o).ok())
            .or(local);
        // No origin and no branch here: no attempt whose work could be
        // checked ran; nothing to take back.
        let Some(origin) = origin else {
            return Ok(None);
        };
        let haves: Vec<Oid> = local.into_iter().chain([origin]).collect();
        let h = Header::new("salvage")
            .line("task", &job.task)?
            .line("branch", &job.branch)?
            .lines("have", &haves)?;
        let want = self.want(
            &job.task,
            &job.branch,
            origin,
            "flocks: work an interrupted attempt left",
            host_worktree,
        );
        let task = job.task.clone();
        let not_taken = |e: &dyn std::fmt::Display| {
            Some(format!(
                "task {task}: the work an interrupted attempt left on {place} was not taken: {e}"
            ))
        };
        let r = match self.call(h, &reply::SALVAGE, Some(&want)).await {
            Ok(r) => r,
            Err(e @ (CallError::Reply(_) | CallError::Intake(_))) => return Ok(not_taken(&e)),
            Err(e) => return Err(e),
        };
        let Some(head) = r.oid("head") else {
            return Ok(None);
        };
        let incoming = Incoming {
            head: Some(head),
            bundle: r.bundle,
        };
        let place = place.to_string();
        let got = tokio::task::spawn_blocking(move || salvaged(&want, incoming, local, &place))
            .await
            .map_err(|e| CallError::Failed(e.to_string()))?;
        match got {
            Ok(note) => Ok(note),
            Err(e) => Ok(not_taken(&e)),
        }
    }
}

/// The host half of `salvage`: the work through the intake, then the task
/// branch fast-forwarded to it, or the work kept aside.
fn salvaged(
    want: &Want,
    incoming: Incoming,
    local: Option<Oid>,
    place: &str,
) -> Result<Option<String>, IntakeError> {
    let task = &want.task;
    let remote = intake::receive(want, incoming)?.tip;
    let failed = |e: git2::Error| IntakeError::Failed {
        task: task.clone(),
        why: e.message().to_string(),
    };
    let repo = git2::Repository::open(&want.repo_dir).map_err(failed)?;
    let short = &remote.to_string()[..10];
    let note = match local {
        Some(l) if l == remote || repo.graph_descendant_of(l, remote).unwrap_or(false) => {
            return Ok(None);
        }
        Some(l) if !repo.graph_descendant_of(remote, l).unwrap_or(false) => {
            let keep = format!("refs/flocks/backup/{task}/remote");
            repo.reference(
                &keep,
                remote,
                true,
                "flocks: work of an interrupted attempt",
            )
            .map_err(failed)?;
            format!(
                "task {task}: the work an interrupted attempt left on {place} ({short}) went another way than {}; kept as {keep}",
                want.branch
            )
        }
        _ => {
            let n = match local {
                Some(l) => repo.graph_ahead_behind(remote, l).map_err(failed)?.0,
                None => 0,
            };
            intake::move_branch(want, remote, local)?;
            format!(
                "task {task}: recovered {} an interrupted attempt left on {place}",
                crate::output::units::count(n, "commit")
            )
        }
    };
    Ok(Some(note))
}
