//! `.flocks/lock`: held by the one process that may write state.json (the
//! dispatcher, or a command that changes state while no run is going).
//!
//! The project lock is three flocks: one on `.flocks/lock` (which names the
//! holder: pid, the pid's start time, command), one on the `.flocks`
//! directory itself, which no `rm .flocks/lock` can take away, and one on a
//! file outside the repo that no `mv .flocks .flocks-old; mkdir .flocks` can
//! take away either: `lock` in the project's directory of the user's state
//! home (`$XDG_STATE_HOME/flocks/<project key>/`, where `flocks trust` keeps
//! its record; the key is the path of `.flocks`). Any one held means a live
//! holder. A dispatcher also records its pid and the pid's start time in
//! state.json, so that a run is never taken for dead while that process
//! lives (see [`process_alive`]). `.flocks/` is agent-writable: its files and
//! the directory are opened without following links (`crate::fsat`).

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
    /// The same lock outside the repo (none without a state home).
    _outside: Option<Flock<File>>,
    path: PathBuf,
}

/// The project's directory outside the repo, where what must not move with
/// `.flocks/` is kept (its locks; `flocks trust`'s record): None when
/// neither `XDG_STATE_HOME` nor `HOME` is set.
pub(crate) fn outside_dir(state_dir: &Path) -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".local/state")
        }
    };
    Some(base.join("flocks").join(crate::paths::key_of(state_dir)))
}

const HINT: &str = "wait for it to end, or stop it with `flocks stop`";

impl ProjectLock {
    pub fn acquire(state_dir: &Path, command: &str) -> Result<ProjectLock> {
        Self::acquire_at(state_dir, outside_dir(state_dir).as_deref(), command)
    }

    /// [`ProjectLock::acquire`] with the outside directory given.
    fn acquire_at(state_dir: &Path, outside: Option<&Path>, command: &str) -> Result<ProjectLock> {
        let outside_lock = Self::lock_outside(state_dir, outside, "lock", HINT)?;
        let (dir, notes) =
            crate::fsat::dir(state_dir, true).ctx(|| format!("open {}", state_dir.display()))?;
        crate::fsat::tell(&notes);
        let dir = match Flock::lock(File::from(dir), FlockArg::LockExclusiveNonblock) {
            Ok(d) => d,
            Err((_, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                // The ordinary case: the holder holds its lock file too.
                if let Some(info) = held_file_info(&state_dir.join("lock")) {
                    return Err(Error::CannotStart(live_holder(&info, state_dir)));
                }
                // The rare one: the lock file was removed or replaced, and
                // the process that held it still runs.
                let holder = Self::holder_at(state_dir, outside)
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
        let mut lock = Self::acquire_file_at(state_dir, None, "lock", command, HINT)?;
        lock._dir = Some(dir);
        lock._outside = outside_lock.map(|mut l| {
            let _ = write_info(&mut l, &this_process(command));
            l
        });
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
        Self::acquire_file_at(
            state_dir,
            outside_dir(state_dir).as_deref(),
            name,
            command,
            hint,
        )
    }

    fn acquire_file_at(
        state_dir: &Path,
        outside: Option<&Path>,
        name: &str,
        command: &str,
        hint: &str,
    ) -> Result<ProjectLock> {
        let outside_lock = Self::lock_outside(state_dir, outside, name, hint)?;
        let path = state_dir.join(name);
        let opened = crate::fsat::open_lock(&path).ctx(|| format!("open {}", path.display()))?;
        crate::fsat::tell(&opened.notes);
        let mut locked = match Flock::lock(opened.file, FlockArg::LockExclusiveNonblock) {
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
        let info = this_process(command);
        write_info(&mut locked, &info).ctx(|| format!("write {}", path.display()))?;
        let outside_lock = outside_lock.map(|mut l| {
            let _ = write_info(&mut l, &info);
            l
        });
        Ok(ProjectLock {
            _file: locked,
            _dir: None,
            _outside: outside_lock,
            path,
        })
    }

    /// The lock `name` of this project outside the repo (`.flocks/` may
    /// have been moved aside and made again): taken, or who holds it.
    fn lock_outside(
        state_dir: &Path,
        outside: Option<&Path>,
        name: &str,
        hint: &str,
    ) -> Result<Option<Flock<File>>> {
        let Some(dir) = outside else {
            return Ok(None);
        };
        let path = dir.join(name);
        let opened = std::fs::create_dir_all(dir).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
        });
        let file = match opened {
            Ok(f) => f,
            // A state home flocks cannot write: the locks in `.flocks/` still
            // hold, but not once `.flocks/` is moved aside. Said, not fatal.
            Err(e) => {
                crate::fsat::tell(&[format!(
                    "cannot lock {} ({e}): a `.flocks/` moved aside while this runs would go unnoticed",
                    path.display()
                )]);
                return Ok(None);
            }
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err((mut file, _)) => {
                // The ordinary case: the holder holds the lock in `.flocks/`
                // as well: named plainly.
                if name == "lock"
                    && let Some(info) = held_file_info(&state_dir.join("lock"))
                {
                    return Err(Error::CannotStart(live_holder(&info, state_dir)));
                }
                let holder = read_info(&mut file)
                    .map(|i| i.describe())
                    .unwrap_or_else(|| "another flocks process".into());
                Err(Error::CannotStart(format!(
                    "{holder} holds this project ({}; flocks also locks {}, which does not move with `.flocks/`, so it holds even if `.flocks/` was moved or made again): {hint}",
                    state_dir.display(),
                    path.display()
                )))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Who holds the project lock right now, if anyone (without taking it):
    /// named by the lock file, or, when that file is gone, by the run
    /// recorded in state.json.
    pub fn holder(state_dir: &Path) -> Option<LockInfo> {
        Self::holder_at(state_dir, outside_dir(state_dir).as_deref())
    }

    fn holder_at(state_dir: &Path, outside: Option<&Path>) -> Option<LockInfo> {
        let dir_held = crate::fsat::dir(state_dir, false)
            .ok()
            .is_some_and(|(d, _)| {
                Flock::lock(File::from(d), FlockArg::LockSharedNonblock).is_err()
            });
        let mut named = None;
        let mut file_held = false;
        let files = [
            crate::fsat::read(&state_dir.join("lock")).ok(),
            outside.and_then(|d| File::open(d.join("lock")).ok()),
        ];
        for file in files.into_iter().flatten() {
            if let Err((mut file, _)) = Flock::lock(file, FlockArg::LockSharedNonblock) {
                file_held = true;
                named = named.or_else(|| read_info(&mut file));
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

/// This process, running `command`, as a lock's holder.
fn this_process(command: &str) -> LockInfo {
    LockInfo {
        pid: std::process::id(),
        command: command.to_string(),
        started_at: Utc::now(),
        pid_start: process_start(std::process::id()),
    }
}

/// Write who holds a lock into its file.
fn write_info(file: &mut File, info: &LockInfo) -> std::io::Result<()> {
    let json = serde_json::to_string(info).unwrap_or_default();
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(json.as_bytes())?;
    file.sync_all()
}

/// Who holds the lock file at `path`, when it is held (without taking it).
fn held_file_info(path: &Path) -> Option<LockInfo> {
    let file = OpenOptions::new().read(true).write(true).open(path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_free) => None,
        Err((mut file, _)) => Some(read_info(&mut file).unwrap_or(LockInfo {
            pid: 0,
            command: "?".into(),
            started_at: Utc::now(),
            pid_start: None,
        })),
    }
}

/// The live holder of the project lock, plainly: "`flocks run` (pid N,
/// started 12:03, run 20261207-1203) is running in this project; `flocks
/// stop` asks it to stop". A command that is not a run is waited for.
fn live_holder(info: &LockInfo, state_dir: &Path) -> String {
    let started = info.started_at.with_timezone(&chrono::Local);
    let at = if started.date_naive() == chrono::Local::now().date_naive() {
        started.format("%H:%M").to_string()
    } else {
        started.format("%Y-%m-%d %H:%M").to_string()
    };
    let run = super::StateStore::new(state_dir)
        .load()
        .ok()
        .and_then(|s| s.run)
        .filter(|r| r.pid == info.pid && r.ended_at.is_none())
        .map(|r| format!(", run {}", r.id))
        .unwrap_or_default();
    let runs_agents = matches!(
        info.command.as_str(),
        "run" | "retry" | "sail" | "land --resolve"
    );
    if info.pid == 0 {
        return format!(
            "another flocks process holds {}: wait for it to end",
            state_dir.join("lock").display()
        );
    }
    format!(
        "`flocks {}` (pid {}, started {at}{run}) is running in this project; {}",
        info.command,
        info.pid,
        if runs_agents {
            "`flocks stop` asks it to stop"
        } else {
            "wait for it to end"
        }
    )
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
pub(crate) fn process_start(pid: u32) -> Option<u64> {
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
pub(crate) fn process_alive(pid: u32, recorded_start: Option<u64>) -> bool {
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
    fn moving_the_state_dir_aside_does_not_free_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".flocks");
        let outside = dir.path().join("outside");
        let _held = ProjectLock::acquire_at(&state, Some(&outside), "run").unwrap();
        std::fs::rename(&state, dir.path().join(".flocks-old")).unwrap();
        std::fs::create_dir(&state).unwrap();
        let err = ProjectLock::acquire_at(&state, Some(&outside), "run")
            .err()
            .unwrap();
        assert_eq!(err.exit(), crate::error::Exit::CouldNotStart, "{err}");
        assert!(err.to_string().contains("`flocks run` (pid"), "{err}");
        assert!(ProjectLock::holder_at(&state, Some(&outside)).is_some());
    }

    #[test]
    fn second_acquire_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let _held = ProjectLock::acquire_at(dir.path(), Some(out.path()), "run").unwrap();
        let holder = ProjectLock::holder_at(dir.path(), Some(out.path())).unwrap();
        assert_eq!(holder.pid, std::process::id());
        // flock locks belong to the open file description, so a second open in
        // the same process conflicts like another process would.
        let err = ProjectLock::acquire_at(dir.path(), Some(out.path()), "run")
            .err()
            .unwrap();
        let said = err.to_string();
        assert!(
            said.starts_with(&format!(
                "`flocks run` (pid {}, started ",
                std::process::id()
            )),
            "{said}"
        );
        assert!(
            said.ends_with(") is running in this project; `flocks stop` asks it to stop"),
            "{said}"
        );
        assert!(!said.contains("may have been removed"), "{said}");
    }

    #[test]
    fn removing_the_lock_file_does_not_free_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _held = ProjectLock::acquire_at(dir.path(), None, "run").unwrap();
        std::fs::remove_file(dir.path().join("lock")).unwrap();
        let err = ProjectLock::acquire_at(dir.path(), None, "run")
            .err()
            .unwrap();
        assert_eq!(err.exit(), crate::error::Exit::CouldNotStart, "{err}");
        // Only here the rare wording.
        assert!(err.to_string().contains("may have been removed"), "{err}");
        assert!(ProjectLock::holder_at(dir.path(), None).is_some());
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
