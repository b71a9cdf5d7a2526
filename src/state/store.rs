//! Reading and writing state: the state.json snapshot (atomic: temp file,
//! fsync, rename; versioned; never overwritten when it cannot be read) and
//! the journal of changes since it (see [`super::journal`]).
//!
//! Readers take no lock: they read the snapshot, then the journal, and start
//! over when the snapshot was replaced in between (a compaction). A reader
//! that looks again and again (the dashboard) keeps a [`StateReader`], which
//! reads the snapshot again only when it was replaced and the journal only
//! from where it stopped.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Deserialize;

use super::journal::{self, Writer};
use super::mapped::Whole;
use super::{FORMAT_VERSION, State};
use crate::error::{Context, Error, Result};

/// Attempts to read a snapshot and journal that belong together while a
/// writer compacts.
const READ_TRIES: usize = 20;

/// What a refused state file's error says was done with it.
const LEFT: &str = "it was left as it is: fix it, or move it away to start over";

#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
    journal: PathBuf,
    /// The journal this process appends to, after its last [`StateStore::save`].
    writer: Arc<Mutex<Option<Writer>>>,
}

/// The version of a state file that does not read as a state.
#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    format_version: Option<u64>,
}

impl StateStore {
    pub fn new(state_dir: &Path) -> Self {
        StateStore {
            path: state_dir.join("state.json"),
            journal: state_dir.join("state.journal"),
            writer: Arc::new(Mutex::new(None)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn journal_path(&self) -> &Path {
        &self.journal
    }

    fn writer(&self) -> MutexGuard<'_, Option<Writer>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The saved state (the snapshot and the journal after it), or a fresh
    /// one when there is none. A corrupt file is an error that names it; the
    /// file is left exactly as it was.
    pub fn load(&self) -> Result<State> {
        for _ in 0..READ_TRIES {
            if let Some(state) = self.try_load()? {
                return Ok(state);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(Error::Other(format!(
            "{} kept being replaced while it was read; try again",
            self.path.display()
        )))
    }

    /// `None` when the snapshot was replaced while the journal was read.
    fn try_load(&self) -> Result<Option<State>> {
        Ok(self.try_read(Whole::MapBig)?.map(|r| r.state))
    }

    /// [`StateStore::try_load`], keeping the files open for a [`StateReader`].
    fn try_read(&self, how: Whole) -> Result<Option<Read>> {
        let left = LEFT;
        // The snapshot stays open until the journal is checked, so that its
        // inode number cannot be reused by a newer snapshot meanwhile.
        let (bytes, inode, snapshot) = match crate::fsat::read(&self.path) {
            Ok(mut f) => {
                let read = super::mapped::whole(&mut f, how)
                    .and_then(|bytes| Ok((bytes, f.metadata()?.ino())));
                match read {
                    Ok((bytes, inode)) => (Some(bytes), Some(inode), Some(f)),
                    Err(e) => return Err(unreadable(&self.path, &e, left)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None, None),
            Err(e) => return Err(unreadable(&self.path, &e, left)),
        };
        let (mut state, generation) = match &bytes {
            Some(b) => self.parse_snapshot(b, left)?,
            None => (State::default(), 0),
        };
        let journal = match crate::fsat::read(&self.journal) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                match std::io::Read::read_to_end(&mut f, &mut bytes) {
                    Ok(_) => Some((f, bytes)),
                    Err(e) => return Err(unreadable(&self.journal, &e, left)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unreadable(&self.journal, &e, left)),
        };
        let mut followed = None;
        if let Some((file, journal)) = journal {
            let replay = journal::parse(&self.journal, &journal)?;
            let applies = replay.generation.is_some_and(|g| g == generation && g != 0);
            followed = Some(Followed {
                file,
                // A journal that does not apply is not appended to either
                // (the next writer starts a new file): read it again only
                // if it changes.
                read: if applies {
                    replay.good_len as u64
                } else {
                    journal.len() as u64
                },
                lines: replay.good_lines,
                applies,
            });
            if applies {
                replay.apply(&mut state);
            } else if replay.generation.is_some() {
                // Another snapshot's journal: either state.json was replaced
                // after we read it (read again), or the journal is older than
                // state.json (a compaction stopped between the two renames:
                // the snapshot already holds all of it).
                let now = fs::metadata(&self.path).ok().map(|m| m.ino());
                if now != inode {
                    return Ok(None);
                }
            }
        }
        self.check_ids(state.tasks.iter())?;
        state.reindex();
        state.changed.clear();
        Ok(Some(Read {
            state,
            generation,
            snapshot,
            journal: followed,
        }))
    }

    /// Agents in containers can write state.json and its journal: a task
    /// id becomes a path (logs, worktrees), so one that is not a valid id
    /// is refused.
    fn check_ids<'a>(&self, tasks: impl Iterator<Item = &'a super::TaskRecord>) -> Result<()> {
        for t in tasks {
            if let Err(why) = crate::tasks::valid_id(&t.id) {
                return Err(Error::input(
                    &self.path,
                    None,
                    Some("tasks.id"),
                    format!("task id {:?} {why}; {LEFT}", t.id),
                ));
            }
            for v in &t.variants {
                let of_this = crate::tasks::split_variant_id(&v.id).is_some_and(|(p, _)| p == t.id);
                if !of_this || !v.variants.is_empty() {
                    return Err(Error::input(
                        &self.path,
                        None,
                        Some("tasks.variants.id"),
                        format!("variant id {:?} is not `{}@v<k>`; {LEFT}", v.id, t.id),
                    ));
                }
            }
        }
        Ok(())
    }

    /// One pass over the bytes when they are a good state file; the slower
    /// checks only say what is wrong with a bad one.
    fn parse_snapshot(&self, bytes: &[u8], left: &str) -> Result<(State, u64)> {
        let newer = |version: u64| {
            Error::input(
                &self.path,
                None,
                Some("format_version"),
                format!(
                    "written by a newer flocks (format {version}, this one reads up to {FORMAT_VERSION}); \
                     it was left as it is: upgrade flocks to use it"
                ),
            )
        };
        // serde_json does not check the bytes of fields it skips; checked
        // once here, the text is then read as a `str` (not checked again).
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                return Err(Error::input(
                    &self.path,
                    None,
                    None,
                    format!(
                        "state file is not UTF-8 text (bad byte at offset {}); {left}",
                        e.valid_up_to()
                    ),
                ));
            }
        };
        let parsed = super::snapshot::parse(text);
        let mut state = match parsed {
            Ok(state) if state.format_version > FORMAT_VERSION => {
                return Err(newer(state.format_version.into()));
            }
            Ok(state) if state.format_version > 0 => state,
            Ok(_) => {
                return Err(Error::input(
                    &self.path,
                    None,
                    Some("format_version"),
                    "missing: this is not a flocks state file; it was left as it is",
                ));
            }
            Err(e) => return Err(self.diagnose(bytes, e, left, newer)),
        };
        // Older formats are read and brought up to date in memory; the file
        // changes only when the lock holder next saves it.
        state.upgrade();
        let generation = state.journal_generation;
        Ok((state, generation))
    }

    /// Why a state file could not be read as a state.
    fn diagnose(
        &self,
        bytes: &[u8],
        e: serde_json::Error,
        left: &str,
        newer: impl Fn(u64) -> Error,
    ) -> Error {
        let probe: Probe = match serde_json::from_slice(bytes) {
            Ok(p) => p,
            Err(e) => {
                return Error::input(
                    &self.path,
                    Some(e.line()),
                    None,
                    format!("state file is not valid JSON ({e}); {left}"),
                );
            }
        };
        match probe.format_version.unwrap_or(0) {
            0 => Error::input(
                &self.path,
                None,
                Some("format_version"),
                "missing: this is not a flocks state file; it was left as it is",
            ),
            v if v > FORMAT_VERSION as u64 => newer(v),
            v => Error::input(
                &self.path,
                Some(e.line()),
                None,
                format!("state file does not match format {v} ({e}); {left}"),
            ),
        }
    }

    /// Write the whole state (a compaction): the snapshot atomically, then a
    /// new empty journal continuing it. Only the lock holder calls this.
    pub fn save(&self, state: &State) -> Result<()> {
        let mut writer = self.writer();
        let previous = writer.as_ref().map(|w| w.generation).unwrap_or(0);
        // Dropped first: a failed save leaves no journal to append to, so the
        // next commit saves everything again.
        *writer = None;
        let generation = new_generation(previous);
        // Streamed to the file: a large state is never a second time in memory.
        let len = write_atomic_with(&self.path, |f| {
            let mut out = std::io::BufWriter::new(f);
            super::snapshot::write(&mut out, state, generation)?;
            out.flush()
        })?;
        let w = Writer::create(&self.journal, generation, len, state)
            .ctx(|| format!("write {}", self.journal.display()))?;
        *writer = Some(w);
        Ok(())
    }

    /// Save what changed since the last save or commit: the changed tasks
    /// and fleet fields are appended to the journal and fsynced, one batch
    /// per call (the dispatcher calls this once per wake-up). The first
    /// commit of a process without a journal, and a journal grown larger
    /// than its snapshot, are a whole [`StateStore::save`] instead.
    pub fn commit(&self, state: &mut State) -> Result<()> {
        let changed = state.changed.take();
        let appended = {
            let mut writer = self.writer();
            match writer.as_mut() {
                None => None,
                Some(w) => match w.append(state, &changed) {
                    Ok(full) => Some(full),
                    Err(e) => {
                        let path = w.path().display().to_string();
                        // The next commit writes everything again.
                        *writer = None;
                        return Err(Error::Io {
                            context: format!("append to {path}"),
                            source: e,
                        });
                    }
                },
            }
        };
        match appended {
            Some(false) => Ok(()),
            None | Some(true) => self.save(state),
        }
    }
}

/// A state read with its files still open.
struct Read {
    state: State,
    generation: u64,
    /// The snapshot read (None: there was none), held open so that its inode
    /// number cannot be reused by a newer snapshot while it is followed.
    snapshot: Option<fs::File>,
    journal: Option<Followed>,
}

/// The journal as far as it was read.
struct Followed {
    /// Held open: a compaction replaces the file, and this one then ends.
    file: fs::File,
    /// Bytes of whole good lines read so far, and how many lines.
    read: u64,
    lines: usize,
    /// It continues the snapshot read (else it is not applied, and is read
    /// again whole once it changes).
    applies: bool,
}

/// The saved state for a reader that looks again and again (`flocks top`):
/// [`StateReader::refresh`] reads the snapshot again only when it was
/// replaced (a compaction), and otherwise only the journal lines appended
/// since the last look, so a look costs what changed, not the whole state.
/// It sees what [`StateStore::load`] would.
pub(crate) struct StateReader {
    store: StateStore,
    read: Read,
    /// How many times the state was read whole.
    whole_reads: u64,
}

impl StateReader {
    /// Read the state whole, as [`StateStore::load`] does.
    pub(crate) fn open(store: &StateStore) -> Result<StateReader> {
        let read = Self::read_whole(store)?;
        Ok(StateReader {
            store: store.clone(),
            read,
            whole_reads: 1,
        })
    }

    fn read_whole(store: &StateStore) -> Result<Read> {
        for _ in 0..READ_TRIES {
            // Read, not mapped: a long-lived reader (the dashboard, `serve`)
            // must not fall to a SIGBUS if a hand or an agent truncates the
            // file in place; a one-shot reader is over before that matters.
            if let Some(read) = store.try_read(Whole::Read)? {
                return Ok(read);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Err(Error::Other(format!(
            "{} kept being replaced while it was read; try again",
            store.path.display()
        )))
    }

    pub(crate) fn state(&self) -> &State {
        &self.read.state
    }

    /// Bring the state up to date. Whether it changed.
    pub(crate) fn refresh(&mut self) -> Result<bool> {
        if self.replaced() {
            self.read = Self::read_whole(&self.store)?;
            self.whole_reads += 1;
            return Ok(true);
        }
        let Some(j) = &mut self.read.journal else {
            return Ok(false);
        };
        let journal = &self.store.journal;
        let len = j
            .file
            .metadata()
            .map_err(|e| unreadable(journal, &e, LEFT))?
            .len();
        if len <= j.read {
            return Ok(false);
        }
        if !j.applies {
            self.read = Self::read_whole(&self.store)?;
            self.whole_reads += 1;
            return Ok(true);
        }
        let mut bytes = vec![0; (len - j.read) as usize];
        std::os::unix::fs::FileExt::read_exact_at(&j.file, &mut bytes, j.read)
            .map_err(|e| unreadable(journal, &e, LEFT))?;
        let replay = journal::parse_more(journal, &bytes, self.read.generation, j.lines)?;
        if replay.good_len == 0 {
            // A line still being written.
            return Ok(false);
        }
        j.read += replay.good_len as u64;
        j.lines += replay.good_lines;
        let state = &mut self.read.state;
        replay.apply(state);
        let changed = state.changed.take();
        self.store
            .check_ids(changed.iter().filter_map(|&i| state.tasks.get(i)))?;
        Ok(true)
    }

    /// Whether state.json or the journal is another file than the one read
    /// (or appeared, or went away).
    fn replaced(&self) -> bool {
        let ino = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let held = |f: Option<&fs::File>| {
            f.and_then(|f| f.metadata().ok())
                .map(|m| (m.dev(), m.ino()))
        };
        ino(&self.store.path) != held(self.read.snapshot.as_ref())
            || ino(&self.store.journal) != held(self.read.journal.as_ref().map(|j| &j.file))
    }
}

fn unreadable(path: &Path, e: &std::io::Error, left: &str) -> Error {
    Error::input(
        path,
        None,
        None,
        format!("state file cannot be read ({e}); {left}"),
    )
}

/// A generation that differs from the last one: nanoseconds since the epoch,
/// so that it also grows across processes.
fn new_generation(previous: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    now.max(previous + 1)
}

/// Like [`write_atomic`], with the content written by `fill`; returns its size.
fn write_atomic_with(
    path: &Path,
    fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
) -> Result<u64> {
    let (len, notes) =
        crate::fsat::write_atomic(path, fill).ctx(|| format!("write {}", path.display()))?;
    crate::fsat::tell(&notes);
    Ok(len)
}

/// Temp file in the same directory, fsync, rename over, fsync the directory;
/// under `.flocks/` no link is followed (agents can write there).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| f.write_all(bytes)).map(|_| ())
}

#[cfg(test)]
pub(crate) mod tests;
