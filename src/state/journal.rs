//! The state journal, `.flocks/state.journal`: the changes made since
//! state.json was last written, one self-checking JSON line each.
//!
//! A line is `{"crc":"<crc32 of rec, 8 hex digits>","rec":<record>}`. The
//! first record is a header naming the journal's version and the generation
//! of the state.json snapshot it continues; then come whole task records
//! (replacing the task with that id, or adding it at the end) and fleet
//! records (run, credentials, back-off, managed resources). Only the holder
//! of `.flocks/lock` appends, and only whole lines, each batch fsynced before
//! the change counts as saved. A kill can therefore only tear the last line:
//! that tail is dropped. A damaged line followed by good ones is not a kill
//! but damage, and the journal is refused and left as it is.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{CredentialState, Managed, RunInfo, State, TaskRecord};
use crate::error::{Error, Result};

/// Bumped when the journal's records change in a way old readers cannot follow.
pub(super) const JOURNAL_VERSION: u32 = 1;

/// Compact when the journal is larger than half the snapshot and than this:
/// a reader never reads more than 1.5 snapshots, a writer rewrites the
/// snapshot after every half snapshot of changes (amortized O(1) a change).
const MIN_COMPACT_BYTES: u64 = 64 * 1024;

/// What a line holds, as written (borrowed from the state).
#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Out<'a> {
    Header {
        journal_version: u32,
        generation: u64,
    },
    Task {
        task: &'a TaskRecord,
    },
    Fleet(FleetOut<'a>),
}

#[derive(Serialize)]
struct FleetOut<'a> {
    run: &'a Option<RunInfo>,
    credentials: &'a BTreeMap<String, CredentialState>,
    backoff_until: &'a Option<DateTime<Utc>>,
    managed: &'a Vec<Managed>,
}

impl<'a> FleetOut<'a> {
    fn of(state: &'a State) -> Self {
        FleetOut {
            run: &state.run,
            credentials: &state.credentials,
            backoff_until: &state.backoff_until,
            managed: &state.managed,
        }
    }
}

/// What a line holds, as read.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum In {
    Header {
        journal_version: u32,
        generation: u64,
    },
    Task {
        task: Box<TaskRecord>,
    },
    Fleet {
        #[serde(default)]
        run: Option<RunInfo>,
        #[serde(default)]
        credentials: BTreeMap<String, CredentialState>,
        #[serde(default)]
        backoff_until: Option<DateTime<Utc>>,
        #[serde(default)]
        managed: Vec<Managed>,
    },
}

#[derive(Deserialize)]
struct Line<'a> {
    crc: &'a str,
    #[serde(borrow)]
    rec: &'a RawValue,
}

fn encode(record: &Out<'_>, out: &mut Vec<u8>) -> std::io::Result<()> {
    let body = serde_json::to_vec(record)?;
    let crc = crc32fast::hash(&body);
    write!(out, "{{\"crc\":\"{crc:08x}\",\"rec\":")?;
    out.extend_from_slice(&body);
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// What is wrong with a journal line.
#[derive(Debug, thiserror::Error)]
enum BadLine {
    #[error("not a journal line ({0})")]
    NotALine(serde_json::Error),
    #[error("bad checksum field")]
    ChecksumField,
    #[error("its checksum does not match")]
    Checksum,
    #[error("unknown record ({0})")]
    Unknown(serde_json::Error),
}

/// A line's record, if its checksum holds; `Err` says what is wrong.
fn decode(line: &[u8]) -> std::result::Result<In, BadLine> {
    let parsed: Line<'_> = serde_json::from_slice(line).map_err(BadLine::NotALine)?;
    let body = parsed.rec.get();
    let crc = u32::from_str_radix(parsed.crc, 16).map_err(|_| BadLine::ChecksumField)?;
    if crc32fast::hash(body.as_bytes()) != crc {
        return Err(BadLine::Checksum);
    }
    serde_json::from_str(body).map_err(BadLine::Unknown)
}

/// The journal as read: the generation of the snapshot it continues, and the
/// changes to apply to that snapshot.
pub(super) struct Replay {
    pub generation: Option<u64>,
    records: Vec<In>,
    /// Bytes of whole, good lines (a torn tail starts here).
    pub good_len: usize,
    /// How many lines those bytes hold.
    pub good_lines: usize,
}

impl Replay {
    /// Apply the journal's changes to the snapshot they continue.
    pub(super) fn apply(self, state: &mut State) {
        for record in self.records {
            match record {
                In::Header { .. } => {}
                In::Task { task } => state.push_task(*task),
                In::Fleet {
                    run,
                    credentials,
                    backoff_until,
                    managed,
                } => {
                    state.run = run;
                    state.credentials = credentials;
                    state.backoff_until = backoff_until;
                    state.managed = managed;
                }
            }
        }
    }
}

/// Read a journal's bytes. A torn tail (the lines after the last good one)
/// is dropped; a damaged line before a good one, or a newer journal, is an
/// error naming the line.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Replay> {
    parse_lines(path, bytes, None, 0)
}

/// Read lines appended to a journal of `generation` after its first
/// `lines_before` lines (read earlier, header included), as [`parse`] reads
/// a whole journal: errors name the line in the whole file.
pub(super) fn parse_more(
    path: &Path,
    bytes: &[u8],
    generation: u64,
    lines_before: usize,
) -> Result<Replay> {
    parse_lines(path, bytes, Some(generation), lines_before)
}

fn parse_lines(
    path: &Path,
    bytes: &[u8],
    generation: Option<u64>,
    lines_before: usize,
) -> Result<Replay> {
    let left = "the journal and state.json were left as they are: move the journal \
                away to go back to state.json as it was last compacted (the changes \
                after that are lost), or restore both from a backup";
    let mut replay = Replay {
        generation,
        records: Vec::new(),
        good_len: 0,
        good_lines: 0,
    };
    // The first damaged line after the last good one, if any.
    let mut damaged: Option<(usize, BadLine)> = None;
    let mut offset = 0;
    for (n, chunk) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let number = lines_before + n + 1;
        let end = offset + chunk.len();
        offset = end;
        let Some(line) = chunk.strip_suffix(b"\n") else {
            // The last line, never finished: torn.
            break;
        };
        let record = match decode(line) {
            Ok(r) => r,
            Err(why) => {
                damaged.get_or_insert((number, why));
                continue;
            }
        };
        if let Some((at, why)) = damaged.take() {
            return Err(Error::input(
                path,
                Some(at),
                None,
                format!("journal line {at} is damaged ({why}) and later lines are intact; {left}"),
            ));
        }
        match (&record, replay.generation) {
            (
                In::Header {
                    journal_version,
                    generation,
                },
                None,
            ) if number == 1 => {
                if *journal_version > JOURNAL_VERSION {
                    return Err(Error::input(
                        path,
                        Some(number),
                        Some("journal_version"),
                        format!(
                            "written by a newer flocks (journal version {journal_version}, this one reads up to {JOURNAL_VERSION}); \
                             it was left as it is: upgrade flocks to use it"
                        ),
                    ));
                }
                replay.generation = Some(*generation);
            }
            (In::Header { .. }, _) | (_, None) => {
                return Err(Error::input(
                    path,
                    Some(number),
                    None,
                    format!("the journal's header is not its first line; {left}"),
                ));
            }
            _ => replay.records.push(record),
        }
        replay.good_len = end;
        replay.good_lines = n + 1;
    }
    Ok(replay)
}

/// The journal being appended to by the lock holder.
#[derive(Debug)]
pub(super) struct Writer {
    file: File,
    path: PathBuf,
    pub generation: u64,
    /// Bytes in the journal now, and the size at which it is compacted.
    bytes: u64,
    limit: u64,
    /// The last fleet record written (or the snapshot's), to write it only
    /// when it changed.
    fleet: Vec<u8>,
}

impl Writer {
    /// Start an empty journal continuing the snapshot of `generation` (just
    /// written, `snapshot_len` bytes): temp file, fsync, rename, fsync the
    /// directory.
    pub(super) fn create(
        path: &Path,
        generation: u64,
        snapshot_len: u64,
        state: &State,
    ) -> std::io::Result<Writer> {
        let mut header = Vec::new();
        encode(
            &Out::Header {
                journal_version: JOURNAL_VERSION,
                generation,
            },
            &mut header,
        )?;
        // `.flocks/` is agent-writable: no link is followed (fsat).
        let (_, notes) = crate::fsat::write_atomic(path, |f| f.write_all(&header))?;
        let opened = crate::fsat::append(path)?;
        crate::fsat::tell(&notes);
        crate::fsat::tell(&opened.notes);
        let file = opened.file;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
            generation,
            bytes: header.len() as u64,
            limit: (snapshot_len / 2).max(MIN_COMPACT_BYTES),
            fleet: serde_json::to_vec(&FleetOut::of(state))?,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Append the changed tasks (positions in `state.tasks`) and the fleet
    /// fields if they changed, in one write, then fsync: only then are the
    /// changes saved. Returns whether the journal outgrew its snapshot.
    pub(super) fn append(&mut self, state: &State, changed: &[usize]) -> std::io::Result<bool> {
        let mut buf = Vec::new();
        for &i in changed {
            if let Some(task) = state.tasks.get(i) {
                encode(&Out::Task { task }, &mut buf)?;
            }
        }
        let fleet = serde_json::to_vec(&FleetOut::of(state))?;
        if fleet != self.fleet {
            encode(&Out::Fleet(FleetOut::of(state)), &mut buf)?;
            self.fleet = fleet;
        }
        if buf.is_empty() {
            return Ok(false);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.bytes += buf.len() as u64;
        Ok(self.bytes > self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn task(id: &str) -> TaskRecord {
        let text = include_str!("../../tests/fixtures/state-v1.json");
        let state: State = serde_json::from_str(text).unwrap();
        TaskRecord {
            id: id.into(),
            ..state.tasks[0].clone()
        }
    }

    fn journal(records: &[Out<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode(r, &mut out).unwrap();
        }
        out
    }

    fn header(generation: u64) -> Out<'static> {
        Out::Header {
            journal_version: JOURNAL_VERSION,
            generation,
        }
    }

    #[test]
    fn records_round_trip() {
        let (a, b) = (task("a"), task("b"));
        let state = State {
            backoff_until: Some(Utc::now()),
            ..State::default()
        };
        let bytes = journal(&[
            header(7),
            Out::Task { task: &a },
            Out::Task { task: &b },
            Out::Fleet(FleetOut::of(&state)),
            Out::Task { task: &a },
        ]);
        let replay = parse(Path::new("j"), &bytes).unwrap();
        assert_eq!(replay.generation, Some(7));
        assert_eq!(replay.good_len, bytes.len());
        let mut out = State::default();
        replay.apply(&mut out);
        let ids: Vec<&str> = out.tasks.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(out.backoff_until, state.backoff_until);
        // Every line is JSON a person (or jq) can read.
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            serde_json::from_slice::<serde_json::Value>(line).unwrap();
        }
    }

    #[test]
    fn torn_tail_is_dropped_at_any_byte() {
        let (a, b) = (task("a"), task("b"));
        let whole = journal(&[header(1), Out::Task { task: &a }]);
        let last = journal(&[Out::Task { task: &b }]);
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&last);
        for cut in whole.len()..bytes.len() {
            let replay = parse(Path::new("j"), &bytes[..cut]).unwrap();
            assert_eq!(replay.good_len, whole.len(), "cut at {cut}");
            let mut s = State::default();
            replay.apply(&mut s);
            assert_eq!(s.tasks.len(), 1, "cut at {cut}");
        }
        // A torn header: nothing to apply, and no generation.
        let h = journal(&[header(1)]);
        for cut in 0..h.len() {
            let replay = parse(Path::new("j"), &h[..cut]).unwrap();
            assert_eq!(replay.generation, None);
        }
        // A whole last line whose bytes did not all reach the disk.
        let mut garbled = bytes.clone();
        let at = whole.len() + 40;
        garbled[at] ^= 0x20;
        let replay = parse(Path::new("j"), &garbled).unwrap();
        assert_eq!(replay.good_len, whole.len());
    }

    #[test]
    fn damage_before_good_lines_is_refused() {
        let (a, b) = (task("a"), task("b"));
        let first = journal(&[header(1), Out::Task { task: &a }]);
        let mut bytes = first.clone();
        bytes.extend_from_slice(&journal(&[Out::Task { task: &b }]));
        // Flip one byte inside the second line's record.
        let mut damaged = bytes.clone();
        let at = first.len() - 20;
        damaged[at] = if damaged[at] == b'a' { b'b' } else { b'a' };
        let err = parse(Path::new("/p/state.journal"), &damaged)
            .err()
            .expect("refused");
        assert_eq!(err.exit(), crate::error::Exit::BadInput);
        let text = err.to_string();
        assert!(text.contains("/p/state.journal"), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(text.contains("left as they are"), "{text}");
    }

    #[test]
    fn newer_journal_is_refused() {
        let bytes = journal(&[Out::Header {
            journal_version: JOURNAL_VERSION + 1,
            generation: 1,
        }]);
        let err = parse(Path::new("j"), &bytes).err().expect("refused");
        assert!(err.to_string().contains("newer flocks"), "{err}");
    }

    #[test]
    fn writer_appends_only_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.journal");
        let mut state = State::default();
        state.push_task(task("a"));
        state.push_task(task("b"));
        let mut w = Writer::create(&path, 3, 0, &state).unwrap();
        assert_eq!(state.changed.take(), [0, 1]);
        let len = fs::metadata(&path).unwrap().len();
        // Nothing changed: nothing written.
        assert!(!w.append(&state, &[]).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
        state.task_mut("b").unwrap().requeues = 5;
        let changed = state.changed.take();
        assert_eq!(changed, [1]);
        w.append(&state, &changed).unwrap();
        let replay = parse(&path, &fs::read(&path).unwrap()).unwrap();
        assert_eq!(replay.generation, Some(3));
        assert_eq!(replay.records.len(), 1);
        // The fleet fields are written when they change.
        state.backoff_until = Some(Utc::now());
        w.append(&state, &[]).unwrap();
        let replay = parse(&path, &fs::read(&path).unwrap()).unwrap();
        assert_eq!(replay.records.len(), 2);
    }
}
