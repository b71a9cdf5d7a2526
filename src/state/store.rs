//! Reading and writing state.json: atomic (temp file, fsync, rename), versioned,
//! and never overwritten when it cannot be read.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{FORMAT_VERSION, State};
use crate::error::{Context, Error, Result};

#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
}

impl StateStore {
    pub fn new(state_dir: &Path) -> Self {
        StateStore {
            path: state_dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved state, or a fresh one when there is none. A corrupt file is an
    /// error that names it; the file is left exactly as it was.
    pub fn load(&self) -> Result<State> {
        let left = "it was left as it is: fix it, or move it away to start over";
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => {
                return Err(Error::input(
                    &self.path,
                    None,
                    None,
                    format!("state file cannot be read ({e}); {left}"),
                ));
            }
        };
        let text = String::from_utf8(bytes).map_err(|e| {
            Error::input(
                &self.path,
                None,
                None,
                format!(
                    "state file is not UTF-8 text (bad byte at offset {}); {left}",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                &self.path,
                Some(e.line()),
                None,
                format!("state file is not valid JSON ({e}); {left}"),
            )
        })?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if version > FORMAT_VERSION as u64 {
            return Err(Error::input(
                &self.path,
                None,
                Some("format_version"),
                format!(
                    "written by a newer flocks (format {version}, this one reads up to {FORMAT_VERSION}); \
                     it was left as it is: upgrade flocks to use it"
                ),
            ));
        }
        if version == 0 {
            return Err(Error::input(
                &self.path,
                None,
                Some("format_version"),
                "missing: this is not a flocks state file; it was left as it is",
            ));
        }
        let mut state: State = serde_json::from_value(value).map_err(|e| {
            Error::input(
                &self.path,
                None,
                None,
                format!("state file does not match format {version} ({e}); {left}"),
            )
        })?;
        // Older formats are read and brought up to date in memory; the file
        // changes only when the lock holder next saves it.
        state.upgrade();
        // Agents in containers can write state.json: a task id becomes a
        // path (logs, worktrees), so one that is not a valid id is refused.
        for t in &state.tasks {
            if let Err(why) = crate::tasks::valid_id(&t.id) {
                return Err(Error::input(
                    &self.path,
                    None,
                    Some("tasks.id"),
                    format!("task id {:?} {why}; {left}", t.id),
                ));
            }
        }
        Ok(state)
    }

    /// Write atomically: a reader sees the old file or the new one, never half.
    pub fn save(&self, state: &State) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::Other(format!("serialize state: {e}")))?;
        write_atomic(&self.path, &json)
    }
}

/// Temp file in the same directory, fsync, rename over, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.ctx(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        fs::write(store.path(), "{\"format_version\": 1, \"tasks\": [").unwrap();
        let err = store.load().unwrap_err();
        assert_eq!(err.exit(), crate::error::Exit::BadInput);
        assert_eq!(
            fs::read_to_string(store.path()).unwrap(),
            "{\"format_version\": 1, \"tasks\": ["
        );
    }

    #[test]
    fn unreadable_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let bytes = b"{\"format_version\": 2, \"tasks\": [], \"x\": \"\xff\xfe\"}".to_vec();
        fs::write(store.path(), &bytes).unwrap();
        let err = store.load().unwrap_err();
        assert_eq!(err.exit(), crate::error::Exit::BadInput);
        assert!(err.to_string().contains("not UTF-8"), "{err}");
        assert!(err.to_string().contains("left as it is"), "{err}");
        assert_eq!(fs::read(store.path()).unwrap(), bytes);

        fs::write(store.path(), "{\"format_version\": 99}").unwrap();
        let err = store.load().unwrap_err();
        assert_eq!(err.exit(), crate::error::Exit::BadInput);
        assert!(err.to_string().contains("newer flocks (format 99"), "{err}");
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(&dir.path().join(".flocks"));
        assert!(store.load().unwrap().tasks.is_empty());
        let s = State {
            backoff_until: Some(chrono::Utc::now()),
            ..State::default()
        };
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap().backoff_until, s.backoff_until);
    }

    /// A task id that would be a path trick (state.json is writable by
    /// agents in containers) is refused, naming the field.
    #[test]
    fn forged_task_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let text = format!(
            "{{\"format_version\": {FORMAT_VERSION}, \"tasks\": [{{\"id\": \"../../x\", \"branch\": \"b\", \"worktree\": \"/w\", \"prompt_hash\": \"h\", \"status\": {{\"state\": \"pending\"}}}}]}}"
        );
        fs::write(store.path(), &text).unwrap();
        let err = store.load().unwrap_err();
        assert_eq!(err.exit(), crate::error::Exit::BadInput);
        assert!(err.to_string().contains("tasks.id"), "{err}");
        assert_eq!(fs::read_to_string(store.path()).unwrap(), text);
    }
}
