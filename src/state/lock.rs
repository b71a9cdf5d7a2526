//! `.flocks/lock`: held by the one process that may write state.json (the
//! dispatcher, or a command that changes state while no run is going).
//!
//! The project lock is two flocks: one on `.flocks/lock` (which names the
//! holder: pid, the pid's start time, command) and one on the `.flocks`
//! directory itself, which no `rm .flocks/lock` can take away. Either one
//! held means a live holder. A dispatcher also records its pid and the pid's
//! start time in state.json, so that a run is never taken for dead while that
//! process lives (see [`process_alive`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// Who holds the lock; written into the lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    pub command: String,
    pub started_at: DateTime<Utc>,
    /// The pid's start time (`/proc/<pid>/stat`, clock ticks after boot),
    /// so that a reused pid is not taken for the holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start: Option<u64>,
}

impl LockInfo {
    pub fn describe(&self) -> String {
        format!(
            "`flocks {}` (pid {}, started {})",
            self.command,
            self.pid,
            self.started_at
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
        )
    }
}

/// The exclusive lock; released on drop (or when the process dies).
pub struct ProjectLock {
    _file: Flock<File>,
    /// The `.flocks` directory's flock (the project lock only).
    _dir: Option<Flock<File>>,
    path: PathBuf,
}

const HINT: &str = "wait for it to end, or stop it with `flocks stop`";

impl ProjectLock {
    pub fn acquire(state_dir: &Path, command: &str) -> Result<ProjectLock> {
        std::fs::create_dir_all(state_dir).ctx(|| format!("create {}", state_dir.display()))?;
        let dir = File::open(state_dir).ctx(|| format!("open {}", state_dir.display()))?;
        let dir = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(d) => d,
            Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let holder = Self::holder(state_dir)
                    .map(|i| i.describe())
                    .unwrap_or_else(|| "another flocks process".into());
                return Err(Error::CannotStart(format!(
                    "{holder} holds {} (its lock file {} may have been removed, but that process \
                     still runs): {HINT}",
                    state_dir.display(),
                    state_dir.join("lock").display()
                )));
            }
            Err((_, errno)) => {
                return Err(Error::Other(format!(
                    "cannot lock {}: {errno}",
                    state_dir.display()
                )));
            }
        };
        let mut lock = Self::acquire_file(state_dir, "lock", command, HINT)?;
        lock._dir = Some(dir);
        Ok(lock)
    }

    /// An exclusive lock on `state_dir/name`, naming its holder when taken;
    /// `hint` says what to do then.
    pub fn acquire_file(
        state_dir: &Path,
        name: &str,
        command: &str,
        hint: &str,
    ) -> Result<ProjectLock> {
        std::fs::create_dir_all(state_dir).ctx(|| format!("create {}", state_dir.display()))?;
        let path = state_dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?;
        let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut file, _)) => {
                let holder = read_info(&mut file)
                    .map(|i| i.describe())
                    .unwrap_or_else(|| "another flocks process".into());
                return Err(Error::CannotStart(format!(
                    "{holder} holds {}: {hint}",
                    path.display()
                )));
            }
        };
        let info = LockInfo {
            pid: std::process::id(),
            command: command.to_string(),
            started_at: Utc::now(),
            pid_start: process_start(std::process::id()),
        };
        let json = serde_json::to_string(&info).unwrap_or_default();
        locked
            .set_len(0)
            .ctx(|| format!("write {}", path.display()))?;
        locked
            .rewind()
            .ctx(|| format!("write {}", path.display()))?;
        locked
            .write_all(json.as_bytes())
            .ctx(|| format!("write {}", path.display()))?;
        locked
            .sync_all()
            .ctx(|| format!("write {}", path.display()))?;
        Ok(ProjectLock {
            _file: locked,
            _dir: None,
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who holds the project lock right now, if anyone (without taking it):
    /// named by the lock file, or, when that file is gone, by the run
    /// recorded in state.json.
    pub fn holder(state_dir: &Path) -> Option<LockInfo> {
        let dir_held = File::open(state_dir)
            .ok()
            .is_some_and(|d| Flock::lock(d, FlockArg::LockSharedNonblock).is_err());
        let path = state_dir.join("lock");
        let file = OpenOptions::new().read(true).write(true).open(&path).ok();
        let mut named = None;
        let mut file_held = false;
        if let Some(file) = file {
            match Flock::lock(file, FlockArg::LockSharedNonblock) {
                Ok(_free) => {}
                Err((mut file, _)) => {
                    file_held = true;
                    named = read_info(&mut file);
                }
            }
        }
        if !dir_held && !file_held {
            return None;
        }
        named.or_else(|| recorded_run(state_dir)).or(Some(LockInfo {
            pid: 0,
            command: "?".into(),
            started_at: Utc::now(),
            pid_start: None,
        }))
    }
}

/// The run state.json names, as a lock holder, when its process is alive.
fn recorded_run(state_dir: &Path) -> Option<LockInfo> {
    let state = super::StateStore::new(state_dir).load().ok()?;
    let run = state.run?;
    if run.ended_at.is_some() || !process_alive(run.pid, run.pid_start) {
        return None;
    }
    Some(LockInfo {
        pid: run.pid,
        command: "run".into(),
        started_at: run.started_at,
        pid_start: run.pid_start,
    })
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22, clock
/// ticks after boot), if it exists.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count
    // fields after its closing parenthesis. Field 3 (the state) comes first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X") {
        return None;
    }
    fields.nth(22 - 4)?.parse().ok()
}

/// Is `pid` the live process that was recorded? With a recorded start time
/// the pid must still have it (a reused pid is another process); without
/// one (a state.json from before 0.2), the pid must run a program named
/// like this one.
pub fn process_alive(pid: u32, recorded_start: Option<u64>) -> bool {
    if pid == 0 {
        return false;
    }
    let Some(start) = process_start(pid) else {
        return false;
    };
    match recorded_start {
        Some(r) => r == start,
        None => {
            let exe = |p: &str| {
                std::fs::read_link(p)
                    .ok()
                    .and_then(|l| l.file_name().map(|n| n.to_os_string()))
            };
            let theirs = exe(&format!("/proc/{pid}/exe"));
            theirs.is_some() && theirs == exe("/proc/self/exe")
        }
    }
}

fn read_info(file: &mut File) -> Option<LockInfo> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = ProjectLock::acquire(dir.path(), "run").unwrap();
        let holder = ProjectLock::holder(dir.path()).unwrap();
        assert_eq!(holder.pid, std::process::id());
        // flock locks belong to the open file description, so a second open in
        // the same process conflicts like another process would.
        let err = ProjectLock::acquire(dir.path(), "run").err().unwrap();
        assert!(err.to_string().contains("`flocks run` (pid"), "{err}");
    }

    #[test]
    fn removing_the_lock_file_does_not_free_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _held = ProjectLock::acquire(dir.path(), "run").unwrap();
        std::fs::remove_file(dir.path().join("lock")).unwrap();
        let err = ProjectLock::acquire(dir.path(), "run").err().unwrap();
        assert_eq!(err.exit(), crate::error::Exit::CouldNotStart, "{err}");
        assert!(ProjectLock::holder(dir.path()).is_some());
    }

    #[test]
    fn liveness_needs_the_same_process() {
        let me = std::process::id();
        let start = process_start(me);
        assert!(start.is_some());
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start.map(|s| s + 1)));
        assert!(process_alive(me, None));
        assert!(!process_alive(0, None));
    }
}
