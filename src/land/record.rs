//! `.flocks/land.json`, land's own history (written only under
//! `.flocks/land.lock`, never state.json), and that lock.
//!
//! Shape (format 1):
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "lands": [
//!     {
//!       "at": "2026-01-01T03:00:00Z",
//!       "target": "main",
//!       "old_tip": "<sha the target was at>",
//!       "new_tip": "<sha land moved it to>",
//!       "state": "pending" | "done" | "undone",
//!       "validated": true,
//!       "undone_at": null,
//!       "pushed": { "remote": "origin", "at": "2026-01-01T03:01:00Z" },
//!       "redo_run": "20260101-030100",
//!       "tasks": [
//!         { "id": "fix-login", "branch": "flocks/fix-login",
//!           "start": "<sha>", "tip": "<sha>",
//!           "commits": [ { "from": "<original sha>", "to": "<landed sha>" } ],
//!           "dropped": 0 }
//!       ]
//!     }
//!   ]
//! }
//! ```
//!
//! `pending` is written before the target moves and `done` after, so that a
//! land cut short between the two can still be undone (`--undo` only acts when
//! the target is at `new_tip`). `dropped` counts commits whose change the
//! target already had; a task whose every commit was dropped is recorded with
//! no `commits`, and counts as landed for `flocks clean`. `pushed` (absent
//! when it was not): `land --push` pushed the target to `remote` with this
//! land on it; `--undo` then refuses without `--force`. `redo_run` (absent
//! when none): the run `land --resolve` started after this land to redo its
//! conflicted tasks (reports count it with the work the land concluded).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::state::store::write_atomic;

pub(super) const FORMAT_VERSION: u32 = 1;
/// Older lands beyond this many are dropped from the file.
const KEEP: usize = 200;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LandLog {
    pub format_version: u32,
    #[serde(default)]
    pub lands: Vec<LandRecord>,
}

impl Default for LandLog {
    fn default() -> Self {
        LandLog {
            format_version: FORMAT_VERSION,
            lands: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandState {
    /// Written before the target moves.
    Pending,
    /// The target moved to `new_tip`.
    Done,
    /// `flocks land --undo` put the target back to `old_tip`.
    Undone,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LandRecord {
    pub at: DateTime<Utc>,
    pub target: String,
    pub old_tip: String,
    pub new_tip: String,
    pub state: LandState,
    /// Validation ran and passed (false: skipped or nothing to run).
    #[serde(default)]
    pub validated: bool,
    #[serde(default)]
    pub undone_at: Option<DateTime<Utc>>,
    /// The target was pushed with this land on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<Pushed>,
    /// `land --resolve` then redid its conflicted tasks in this run: the run
    /// belongs to the same piece of work as the land (reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redo_run: Option<String>,
    #[serde(default)]
    pub tasks: Vec<LandedTask>,
}

/// Where `land --push` pushed a land.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pushed {
    pub remote: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LandedTask {
    pub id: String,
    pub branch: String,
    pub start: String,
    pub tip: String,
    #[serde(default)]
    pub commits: Vec<CommitMap>,
    #[serde(default)]
    pub dropped: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitMap {
    pub from: String,
    pub to: String,
}

pub(super) fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("land.json")
}

impl LandLog {
    /// The saved history, or an empty one. A corrupt file is an error that
    /// names it, and is left as it is.
    pub fn load(state_dir: &Path) -> Result<LandLog> {
        let path = path(state_dir);
        let text = match crate::fsat::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(LandLog::default()),
            Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
        };
        let log: LandLog = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                &path,
                Some(e.line()),
                None,
                format!(
                    "not a valid land history ({e}); it was left as it is: fix it, or move it away"
                ),
            )
        })?;
        if log.format_version > FORMAT_VERSION {
            return Err(Error::input(
                &path,
                None,
                Some("format_version"),
                format!(
                    "written by a newer flocks (format {}): upgrade flocks",
                    log.format_version
                ),
            ));
        }
        Ok(log)
    }

    /// Write atomically (needs the land lock).
    pub fn save(&mut self, state_dir: &Path, _lock: &LandLock) -> Result<()> {
        if self.lands.len() > KEEP {
            let extra = self.lands.len() - KEEP;
            self.lands.drain(..extra);
        }
        std::fs::create_dir_all(state_dir).ctx(|| format!("create {}", state_dir.display()))?;
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("serialize land history: {e}")))?;
        write_atomic(&path(state_dir), &json)
    }

    /// The last land that moved `target`, and is not undone.
    pub fn last_move(&self, target: &str) -> Option<(usize, &LandRecord)> {
        self.lands.iter().enumerate().rev().find(|(_, r)| {
            r.target == target && r.old_tip != r.new_tip && r.state != LandState::Undone
        })
    }
}

/// `.flocks/land.lock`: one `land` (or `clean`) at a time. It is not the
/// dispatcher's lock, so `land` works while a run is going.
pub struct LandLock {
    _lock: crate::state::ProjectLock,
}

impl LandLock {
    pub fn acquire(state_dir: &Path) -> Result<LandLock> {
        let lock = crate::state::ProjectLock::acquire_file(
            state_dir,
            "land.lock",
            "land",
            "wait for it to end",
        )?;
        Ok(LandLock { _lock: lock })
    }
}
