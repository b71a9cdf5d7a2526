//! `.flocks/lock`: held by the one process that may write state.json (the
//! dispatcher, or a command that changes state while no run is going).

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
    path: PathBuf,
}

impl ProjectLock {
    pub fn acquire(state_dir: &Path, command: &str) -> Result<ProjectLock> {
        Self::acquire_file(
            state_dir,
            "lock",
            command,
            "wait for it to end, or stop it with `flocks stop`",
        )
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
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who holds the lock right now, if anyone (without taking it).
    pub fn holder(state_dir: &Path) -> Option<LockInfo> {
        let path = state_dir.join("lock");
        let file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_free) => None,
            Err((mut file, _)) => read_info(&mut file).or(Some(LockInfo {
                pid: 0,
                command: "?".into(),
                started_at: Utc::now(),
            })),
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
}
