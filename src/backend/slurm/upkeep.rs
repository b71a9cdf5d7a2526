//! The upkeep of the pool's mirror on the shared filesystem (issue 25): the
//! helper's `pack` op, as every op, in a step of one of the pool's jobs
//! (flocks never runs git in `remote_dir` on the login node).
//!
//! ```text
//!  a wave ends ─▶ Backend::upkeep: a job of the pool runs → pack in a step of it
//!                                   none runs (one slot, between attempts) → owed
//!  admit: a job granted while a pack is owed → pack in a step of it, beside
//!         its attempt (a task of its own); said at the next wave
//!  end:   the job a pack runs in is let go of once the pack ended
//! ```
//!
//! Not under the pool's admin lock: git's own locks keep the other ops
//! safe, and a start never waits on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

use super::alloc::Alloc;
use super::step::Step;
use crate::backend::Backend;
use crate::backend::helper::session::{Known, Session};
use crate::git::intake;
use crate::git::upkeep::Remote;

/// The pool's mirror upkeep: what is owed, what runs, what is left to say.
#[derive(Default)]
pub(super) struct Upkeep {
    /// A wave ended while no job of the pool ran: the next one granted packs.
    owed: AtomicBool,
    /// Held while a pack runs: one at a time.
    running: Arc<tokio::sync::Mutex<()>>,
    /// The job the pack under way runs in: its end waits for the pack.
    on_job: Mutex<Option<String>>,
    /// What packs in jobs granted since the last wave did, said at the next.
    later: Mutex<Vec<Remote>>,
}

/// A pack under way in a job's step; [`Upkeep::ended`] lets the job go.
pub(super) struct Claim {
    _held: OwnedMutexGuard<()>,
}

impl Upkeep {
    /// Wait for the pack under way, if any; none starts until [`Self::claim`].
    pub(super) async fn take(&self) -> OwnedMutexGuard<()> {
        self.running.clone().lock_owned().await
    }

    /// Claim `job` for a pack (under the pool's job table's lock, so that
    /// its end sees the claim).
    pub(super) fn claim(&self, guard: OwnedMutexGuard<()>, job: &str) -> Claim {
        *self.on_job.lock().unwrap_or_else(|e| e.into_inner()) = Some(job.to_string());
        Claim { _held: guard }
    }

    /// A job was granted (under the job table's lock): claimed when a pack
    /// is owed and none runs.
    pub(super) fn claim_owed(&self, job: &str) -> Option<Claim> {
        if !self.owed.load(Ordering::SeqCst) {
            return None;
        }
        let guard = self.running.clone().try_lock_owned().ok()?;
        self.owed.store(false, Ordering::SeqCst);
        Some(self.claim(guard, job))
    }

    /// No job of the pool runs: the next one granted packs.
    pub(super) fn owe(&self) {
        self.owed.store(true, Ordering::SeqCst);
    }

    /// The pack in a job's step ended: its job may go.
    pub(super) fn ended(&self, claim: Claim) {
        *self.on_job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        drop(claim);
    }

    /// What a pack in a granted job did, for the next wave (nothing when
    /// nothing was due).
    pub(super) fn say_later(&self, r: Remote) {
        if !matches!(r.done, Ok(None)) {
            self.later.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        }
    }

    /// What packs since the last wave did.
    pub(super) fn said_later(&self) -> Vec<Remote> {
        std::mem::take(&mut *self.later.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A pack runs in `job` (asked under the job table's lock, once the job
    /// was taken out of it).
    pub(super) fn packs_in(&self, job: &str) -> bool {
        self.on_job
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(job)
    }

    /// Until the pack under way ends.
    pub(super) async fn wait(&self) {
        drop(self.running.lock().await);
    }
}

/// Where a pack runs, owned (a pack in a granted job is a task of its own).
pub(super) struct Place {
    pub pool: String,
    /// The helper's root.
    pub root: String,
    pub scrub: Vec<String>,
    pub repo_dir: PathBuf,
}

impl Place {
    /// The helper's `pack` in a step of `alloc`: what it did, on its node.
    pub(super) async fn pack(&self, alloc: &Arc<Alloc>) -> Remote {
        let step = Step {
            alloc,
            root: &self.root,
            scrub: &self.scrub,
        };
        let known = Known::default();
        let session = Session {
            transport: &step,
            repo_dir: &self.repo_dir,
            env: &[],
            max_bytes: intake::DEFAULT_MAX_FETCH_MB << 20,
            known: &known,
        };
        Remote {
            pool: self.pool.clone(),
            host: alloc.node.clone(),
            done: session.pack().await.map_err(|e| e.to_string()),
        }
    }
}

impl super::SlurmBackend {
    /// Where the mirror's pack runs (None: `remote_dir` is not a path).
    pub(super) fn pack_place(&self) -> Option<Place> {
        Some(Place {
            pool: self.pool.clone(),
            root: self.root.clone().ok()?,
            scrub: self.scrub.clone(),
            repo_dir: self.repo_dir.clone(),
        })
    }

    /// The mirror's upkeep between waves: the helper's `pack` in a step of
    /// the pool's job that started last, if one runs; else the next job
    /// granted packs it (said at the next wave), as do the packs owed
    /// before. Not under the admin lock: git's own locks keep the other
    /// ops safe, and a start never waits on it.
    pub(crate) async fn upkeep(&self) -> Vec<crate::git::upkeep::Remote> {
        let Some(place) = self.pack_place() else {
            return Vec::new();
        };
        if self.down_reason().is_some() {
            return self.upkeep.said_later();
        }
        // After a pack under way in a granted job: what it did is said now.
        let guard = self.upkeep.take().await;
        let mut out = self.upkeep.said_later();
        let claimed = {
            let allocs = self.allocs.lock().unwrap_or_else(|e| e.into_inner());
            allocs
                .values()
                .filter(|a| {
                    a.gone().is_none() && !a.stopped.load(std::sync::atomic::Ordering::SeqCst)
                })
                .max_by_key(|a| a.started_at)
                .cloned()
                .map(|a| {
                    let claim = self.upkeep.claim(guard, &a.id);
                    (a, claim)
                })
        };
        match claimed {
            Some((alloc, claim)) => {
                let done = place.pack(&alloc).await;
                self.upkeep.ended(claim);
                if !matches!(done.done, Ok(None)) {
                    out.push(done);
                }
            }
            None => self.upkeep.owe(),
        }
        out
    }
}
