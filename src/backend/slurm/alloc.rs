//! One attempt's job: an allocation that `salloc` asks for and holds, from
//! the login node, for as long as flocks keeps its holder's stdin open.
//!
//! ```text
//!  flocks ──stdin (never written)──▶ salloc -J flocks-<project>-<task>-<n> --comment ... -- sh -c HOLDER
//!         ◀─stderr: "job allocation N" (pending: the id; squeue gives the reason)
//!         ◀─stdout: "granted N NODE"   (the holder runs: so does the job)
//!  the helper's ops run as steps of it (`srun --jobid=N --overlap`)
//!  end: stdin closed → the holder ends → salloc relinquishes the job
//!       (flocks killed: the same, by the kernel); a stopped attempt's job
//!       is ended with scancel
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin};
use tokio::sync::{oneshot, watch};

use super::sched::{self, SchedError};

/// What salloc runs on the login node once the job runs: it says so, then
/// waits for flocks to close its stdin (or to die). flocks' own constant
/// text; nothing of a task is in it.
const HOLDER: &str =
    "printf 'granted %s %s\\n' \"$SLURM_JOB_ID\" \"$SLURM_JOB_NODELIST\"; exec cat >/dev/null";

/// How a job is asked for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub name: String,
    pub comment: String,
    /// `--partition`, `--account`, `--qos`, `--time`, then `sbatch_args`.
    pub options: Vec<String>,
    /// Variables left out of salloc's environment (the credentials').
    pub scrub: Vec<String>,
}

/// A job that runs.
#[derive(Debug)]
pub(crate) struct Alloc {
    pub id: String,
    /// Its node (list).
    pub node: String,
    pub started_at: DateTime<Utc>,
    /// salloc's stdin: closing it ends the job.
    holder: std::sync::Mutex<Option<ChildStdin>>,
    /// salloc ended (the job ended, or was revoked): its last words.
    ended: watch::Receiver<Option<String>>,
    /// flocks stopped the attempt (timeout, stall, stop): its job ends by
    /// scancel.
    pub stopped: AtomicBool,
}

/// Where a job asked for stands, while `wait` waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Queued; the scheduler's reason when it gave one.
    Pending { id: String, reason: Option<String> },
}

/// A job asked for, until it runs. Dropped before then (a stop), it is
/// cancelled.
pub(crate) struct Asked {
    child: Option<Child>,
    /// salloc's stdin, taken at once (tokio's `Child::wait` would close it).
    stdin: Option<ChildStdin>,
    id: Option<String>,
    ids: Option<oneshot::Receiver<String>>,
    granted: Option<oneshot::Receiver<(String, String)>>,
    stderr_tail: Arc<std::sync::Mutex<String>>,
    /// Told the job's id when it is cancelled before it ran.
    on_cancel: Option<Box<dyn FnOnce(String) + Send>>,
}

impl Drop for Asked {
    fn drop(&mut self) {
        // Not granted (or not taken): nothing of it may stay queued.
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let id = self.id.clone();
            if let (Some(id), Some(tell)) = (id.clone(), self.on_cancel.take()) {
                tell(id);
            }
            // scancel starts now, as a process of its own: a run that ends
            // right after this stop (its runtime gone) still cancels the job.
            let scancel = id.map(|id| {
                let mut c = std::process::Command::new("scancel");
                for (k, _) in std::env::vars_os() {
                    if k.to_string_lossy().starts_with("SLURM_") && k != "SLURM_CONF" {
                        c.env_remove(k);
                    }
                }
                c.arg(id)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
            });
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = child.wait().await;
                });
            }
            if let Some(Ok(mut scancel)) = scancel {
                std::thread::spawn(move || scancel.wait());
            }
        }
    }
}

/// Ask for the job: start salloc.
pub(crate) fn ask(req: &Request) -> Result<Asked, SchedError> {
    let mut c = sched::command("salloc", &req.scrub);
    c.arg(format!("--job-name={}", req.name))
        .arg(format!("--comment={}", req.comment))
        .args(&req.options)
        .args(["--", "/bin/sh", "-c", HOLDER, "flocks-holder"])
        .stdin(std::process::Stdio::piped());
    let mut child = c.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SchedError::Missing("salloc"),
        _ => SchedError::NoAnswer(format!("cannot run salloc: {e}")),
    })?;
    let (id_tx, id_rx) = oneshot::channel();
    let (grant_tx, grant_rx) = oneshot::channel();
    let tail = Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(err) = child.stderr.take() {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut id_tx = Some(id_tx);
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(id) = job_id_in(&line)
                    && let Some(tx) = id_tx.take()
                {
                    let _ = tx.send(id);
                }
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                t.push_str(&line);
                t.push('\n');
                if t.len() > 8192 {
                    let cut = t.len() - 4096;
                    let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(0);
                    t.drain(..cut);
                }
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            if let Ok(Some(line)) = lines.next_line().await
                && let Some(g) = granted_in(&line)
            {
                let _ = grant_tx.send(g);
            }
            // Nothing more comes; read to the end so that the holder never blocks.
            while let Ok(Some(_)) = lines.next_line().await {}
        });
    }
    let stdin = child.stdin.take();
    Ok(Asked {
        stdin,
        child: Some(child),
        id: None,
        ids: Some(id_rx),
        granted: Some(grant_rx),
        stderr_tail: tail,
        on_cancel: None,
    })
}

/// salloc's "job allocation 123" / "job 123 queued": the id.
fn job_id_in(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let id = w[1].trim_end_matches([':', '.', ',']);
        ((w[0] == "allocation" || w[0] == "job") && sched::is_job_id(id)).then(|| id.to_string())
    })
}

/// The holder's "granted ID NODES" line.
fn granted_in(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix("granted ")?;
    let (id, nodes) = rest.split_once(' ')?;
    (sched::is_job_id(id) && sched::is_nodelist(nodes)).then(|| (id.to_string(), nodes.to_string()))
}

impl Asked {
    /// Call `tell` with the job's id if it is cancelled before it runs
    /// (this is dropped first).
    pub(crate) fn on_cancel(mut self, tell: impl FnOnce(String) + Send + 'static) -> Asked {
        self.on_cancel = Some(Box::new(tell));
        self
    }

    /// Wait until the job runs, calling `progress` when what is known of
    /// it changes (polled through `reason`, at most every `every`).
    pub(crate) async fn wait<F, R, Fut>(
        mut self,
        every: Duration,
        mut progress: F,
        reason: R,
    ) -> Result<Alloc, String>
    where
        F: FnMut(Progress),
        R: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Option<Option<String>>>,
    {
        let mut ids = self.ids.take();
        let mut granted = self.granted.take().ok_or("asked twice")?;
        let mut last: Option<Progress> = None;
        // A job the scheduler runs within a second is not said to be pending.
        let first = tokio::time::Instant::now() + Duration::from_secs(1);
        let mut tick = tokio::time::interval_at(first, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let child = self.child.as_mut().ok_or("salloc is gone")?;
            tokio::select! {
                g = &mut granted => {
                    let Ok((id, node)) = g else {
                        // The holder never said so: salloc ended first.
                        let status = child.wait().await;
                        return Err(self.refusal(status.ok()));
                    };
                    return Ok(self.take(id, node));
                }
                id = async { ids.as_mut().expect("guarded").await }, if ids.is_some() => {
                    ids = None;
                    if let Ok(id) = id {
                        self.id = Some(id);
                    }
                }
                status = child.wait() => {
                    // Granted and ended at once is still granted.
                    if let Ok((id, node)) = granted.try_recv() {
                        return Ok(self.take(id, node));
                    }
                    return Err(self.refusal(status.ok()));
                }
                _ = tick.tick(), if self.id.is_some() => {
                    let id = self.id.clone().unwrap_or_default();
                    if last.is_none() {
                        // Said at once; its reason follows from squeue.
                        let p = Progress::Pending { id: id.clone(), reason: None };
                        progress(p.clone());
                        last = Some(p);
                    }
                    if let Some(r) = reason(id.clone()).await {
                        let p = Progress::Pending { id, reason: r };
                        if last.as_ref() != Some(&p) {
                            progress(p.clone());
                            last = Some(p);
                        }
                    }
                }
            }
        }
    }

    fn refusal(&self, status: Option<std::process::ExitStatus>) -> String {
        let tail = self
            .stderr_tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let words = sched::last_words(&tail);
        match status.and_then(|s| s.code()) {
            Some(c) => format!("salloc exited {c}: {words}"),
            None => format!("salloc ended: {words}"),
        }
    }

    /// The job runs: from here its holder's stdin keeps it.
    fn take(&mut self, id: String, node: String) -> Alloc {
        let mut child = self.child.take().expect("a child until taken");
        let holder = self.stdin.take();
        let (tx, rx) = watch::channel(None);
        let tail = self.stderr_tail.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            // Its last words arrive just before its end.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let words = sched::last_words(&tail.lock().unwrap_or_else(|e| e.into_inner()));
            let how = match status.ok().and_then(|s| s.code()) {
                Some(c) => format!("salloc exited {c}: {words}"),
                None => format!("salloc ended: {words}"),
            };
            let _ = tx.send(Some(how));
        });
        Alloc {
            id,
            node,
            started_at: Utc::now(),
            holder: std::sync::Mutex::new(holder),
            ended: rx,
            stopped: AtomicBool::new(false),
        }
    }
}

impl Alloc {
    /// Why the job is over, if it is (salloc ended).
    pub(crate) fn gone(&self) -> Option<String> {
        self.ended.borrow().clone()
    }

    /// Let go of the job: relinquished (its holder's stdin closed), or
    /// cancelled when the attempt was stopped; waits (bounded) until salloc
    /// says it ended.
    pub(crate) async fn release(&self) {
        if self.stopped.load(Ordering::SeqCst) {
            let _ = sched::cancel(std::slice::from_ref(&self.id), None).await;
        }
        self.holder.lock().unwrap_or_else(|e| e.into_inner()).take();
        let mut ended = self.ended.clone();
        let ended_soon = matches!(
            tokio::time::timeout(Duration::from_secs(10), ended.wait_for(|e| e.is_some())).await,
            Ok(Ok(_))
        );
        if !ended_soon {
            let _ = sched::cancel(std::slice::from_ref(&self.id), None).await;
            let _ = tokio::time::timeout(Duration::from_secs(10), ended.wait_for(|e| e.is_some()))
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salloc_lines() {
        assert_eq!(
            job_id_in("salloc: Pending job allocation 17").as_deref(),
            Some("17")
        );
        assert_eq!(
            job_id_in("salloc: Granted job allocation 5").as_deref(),
            Some("5")
        );
        assert_eq!(
            job_id_in("salloc: job 17 queued and waiting for resources").as_deref(),
            Some("17")
        );
        assert_eq!(
            job_id_in("salloc: error: invalid partition specified: x"),
            None
        );
        assert_eq!(
            granted_in("granted 17 node[1-2]"),
            Some(("17".into(), "node[1-2]".into()))
        );
        assert_eq!(granted_in("granted 17 a;b"), None);
        assert_eq!(granted_in("granted x vm"), None);
    }
}
