//! Tests of the state store: damaged files kept, the journal, readers racing a run, older formats.

use super::*;
use crate::state::snapshot::{PARALLEL_BYTES, parse as parse_state};

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

pub(crate) fn task(id: &str) -> super::super::TaskRecord {
    let text = include_str!("../../../tests/fixtures/state-v1.json");
    let state: State = serde_json::from_str(text).unwrap();
    super::super::TaskRecord {
        id: id.into(),
        ..state.tasks[0].clone()
    }
}

#[test]
fn commits_are_journaled_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut state = State::default();
    for i in 0..50 {
        state.push_task(task(&format!("t{i}")));
    }
    store.save(&state).unwrap();
    state.changed.clear();
    let snapshot = fs::read(store.path()).unwrap();
    state.task_mut("t7").unwrap().requeues = 3;
    state.credentials.insert("c".into(), Default::default());
    store.commit(&mut state).unwrap();
    // state.json is untouched; the journal has the change.
    assert_eq!(fs::read(store.path()).unwrap(), snapshot);
    let read = store.load().unwrap();
    assert_eq!(read.task("t7").unwrap().requeues, 3);
    assert!(read.credentials.contains_key("c"));
    assert_eq!(read.tasks.len(), 50);
    // A new task goes at the end, in order.
    state.push_task(task("new"));
    store.commit(&mut state).unwrap();
    let read = store.load().unwrap();
    assert_eq!(read.tasks.last().unwrap().id, "new");
    // A torn last line (a kill in the middle of a write) is dropped.
    let journal = store.journal_path().to_path_buf();
    let whole = fs::read(&journal).unwrap();
    state.task_mut("t8").unwrap().requeues = 9;
    store.commit(&mut state).unwrap();
    let grown = fs::read(&journal).unwrap();
    fs::write(&journal, &grown[..grown.len() - 7]).unwrap();
    let read = store.load().unwrap();
    assert_eq!(read.task("t8").unwrap().requeues, 0);
    assert_eq!(read.task("t7").unwrap().requeues, 3);
    fs::write(&journal, &whole).unwrap();
}

/// The reader `flocks top` keeps sees what a whole load sees, after
/// appends, a line still being written, and compactions.
#[test]
fn a_followed_state_is_the_loaded_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let same = |reader: &StateReader| {
        let loaded = store.load().unwrap();
        let followed = reader.state();
        assert_eq!(
            serde_json::to_value(followed).unwrap(),
            serde_json::to_value(&loaded).unwrap()
        );
        assert_eq!(followed.journal_generation, loaded.journal_generation);
        // The index follows the tasks.
        for t in &followed.tasks {
            assert!(
                followed.task(&t.id).is_some_and(|x| std::ptr::eq(x, t)),
                "{}",
                t.id
            );
        }
    };
    // No state yet: an empty one, until the first save.
    let mut reader = StateReader::open(&store).unwrap();
    assert!(reader.state().tasks.is_empty());
    assert!(!reader.refresh().unwrap());
    let mut state = State::default();
    for i in 0..30 {
        state.push_task(task(&format!("t{i}")));
    }
    store.save(&state).unwrap();
    state.changed.clear();
    assert!(reader.refresh().unwrap());
    same(&reader);
    let reads = reader.whole_reads;
    // Appends: a changed task, a new one, the fleet fields.
    state.task_mut("t3").unwrap().requeues = 4;
    state.push_task(task("new"));
    state.credentials.insert("c".into(), Default::default());
    store.commit(&mut state).unwrap();
    assert!(reader.refresh().unwrap());
    same(&reader);
    assert_eq!(reader.state().task("t3").unwrap().requeues, 4);
    assert!(!reader.refresh().unwrap(), "nothing changed");
    // A line still being written is not read until it is whole.
    let journal = store.journal_path().to_path_buf();
    state.task_mut("t5").unwrap().requeues = 6;
    store.commit(&mut state).unwrap();
    let whole = fs::read(&journal).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(whole.len() as u64 - 9)
        .unwrap();
    reader.refresh().unwrap();
    same(&reader);
    assert_eq!(reader.state().task("t5").unwrap().requeues, 0);
    fs::write(&journal, &whole).unwrap();
    assert!(reader.refresh().unwrap());
    same(&reader);
    assert_eq!(reader.state().task("t5").unwrap().requeues, 6);
    assert_eq!(reader.whole_reads, reads, "appends are read alone");
    // A compaction replaces both files: read whole again.
    state.task_mut("t6").unwrap().requeues = 7;
    store.save(&state).unwrap();
    state.changed.clear();
    assert!(reader.refresh().unwrap());
    same(&reader);
    assert_eq!(reader.whole_reads, reads + 1);
    // Many commits, with compactions among them, between two looks.
    let generation = reader.state().journal_generation;
    for n in 0..300 {
        for i in 0..30 {
            state.task_mut(&format!("t{i}")).unwrap().requeues = n;
        }
        store.commit(&mut state).unwrap();
        if n % 7 == 0 {
            reader.refresh().unwrap();
            same(&reader);
        }
    }
    reader.refresh().unwrap();
    same(&reader);
    assert_eq!(reader.state().task("t0").unwrap().requeues, 299);
    assert_ne!(
        reader.state().journal_generation,
        generation,
        "it compacted"
    );
    // A forged id appended to the journal is refused, as a load refuses it.
    state.push_task(task("x"));
    state.tasks.last_mut().unwrap().id = "../x".into();
    store.commit(&mut state).unwrap();
    let err = reader.refresh().unwrap_err();
    assert!(err.to_string().contains("tasks.id"), "{err}");
    assert!(store.load().is_err());
}

/// A journal left from before the snapshot (a compaction killed between
/// its two renames) is ignored by the reader as by a load, and not read
/// again at every look.
#[test]
fn a_followed_stale_journal_is_ignored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut state = State::default();
    state.push_task(task("a"));
    store.save(&state).unwrap();
    state.task_mut("a").unwrap().requeues = 1;
    store.commit(&mut state).unwrap();
    let old_journal = fs::read(store.journal_path()).unwrap();
    state.task_mut("a").unwrap().requeues = 2;
    store.save(&state).unwrap();
    fs::write(store.journal_path(), &old_journal).unwrap();
    let mut reader = StateReader::open(&store).unwrap();
    assert_eq!(reader.state().task("a").unwrap().requeues, 2);
    assert!(!reader.refresh().unwrap());
    assert!(!reader.refresh().unwrap());
    assert_eq!(reader.whole_reads, 1);
    // The next writer's journal replaces it: followed from then on.
    state.task_mut("a").unwrap().requeues = 3;
    store.save(&state).unwrap();
    state.task_mut("a").unwrap().requeues = 4;
    store.commit(&mut state).unwrap();
    assert!(reader.refresh().unwrap());
    assert_eq!(reader.state().task("a").unwrap().requeues, 4);
}

#[test]
fn a_damaged_journal_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut state = State::default();
    state.push_task(task("a"));
    store.save(&state).unwrap();
    for n in 1..=2 {
        state.task_mut("a").unwrap().requeues = n;
        store.commit(&mut state).unwrap();
    }
    let mut bytes = fs::read(store.journal_path()).unwrap();
    // Line 2 (the first change) loses a byte's worth of meaning.
    let second = bytes.iter().position(|&b| b == b'\n').unwrap() + 30;
    bytes[second] ^= 1;
    fs::write(store.journal_path(), &bytes).unwrap();
    let snapshot = fs::read(store.path()).unwrap();
    let err = store.load().unwrap_err();
    assert_eq!(err.exit(), crate::error::Exit::BadInput);
    assert!(err.to_string().contains("line 2"), "{err}");
    assert!(err.to_string().contains("left as they are"), "{err}");
    assert_eq!(fs::read(store.journal_path()).unwrap(), bytes);
    assert_eq!(fs::read(store.path()).unwrap(), snapshot);
}

#[test]
fn a_journal_older_than_its_snapshot_is_ignored() {
    // A compaction killed between writing state.json and the new journal.
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut state = State::default();
    state.push_task(task("a"));
    store.save(&state).unwrap();
    state.task_mut("a").unwrap().requeues = 1;
    store.commit(&mut state).unwrap();
    let old_journal = fs::read(store.journal_path()).unwrap();
    state.task_mut("a").unwrap().requeues = 2;
    store.save(&state).unwrap();
    fs::write(store.journal_path(), &old_journal).unwrap();
    assert_eq!(store.load().unwrap().task("a").unwrap().requeues, 2);
    // And a state.json moved away to start over leaves its journal unused.
    fs::remove_file(store.path()).unwrap();
    assert!(store.load().unwrap().tasks.is_empty());
}

#[test]
fn readers_race_commits_and_compactions() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut state = State::default();
    for i in 0..40 {
        state.push_task(task(&format!("t{i}")));
    }
    store.save(&state).unwrap();
    let acknowledged = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = StateStore::new(dir.path());
        let (acknowledged, done) = (acknowledged.clone(), done.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            let mut last = [0; 40];
            while !done.load(Ordering::SeqCst) || reads < 20 {
                let floor = acknowledged.load(Ordering::SeqCst);
                let read = store.load().unwrap();
                for (i, t) in read.tasks.iter().enumerate() {
                    // Everything saved before the read began is seen,
                    // and nothing goes backwards.
                    assert!(t.requeues >= floor, "task {i}: {} < {floor}", t.requeues);
                    assert!(t.requeues >= last[i]);
                    last[i] = t.requeues;
                }
                reads += 1;
            }
            reads
        })
    };
    let mut n = 0;
    let mut compactions = 0;
    while n < 200 {
        n += 1;
        for i in 0..40 {
            state.task_mut(&format!("t{i}")).unwrap().requeues = n;
        }
        let generation = store.writer().as_ref().map(|w| w.generation);
        store.commit(&mut state).unwrap();
        if store.writer().as_ref().map(|w| w.generation) != generation {
            compactions += 1;
        }
        acknowledged.store(n, Ordering::SeqCst);
    }
    done.store(true, Ordering::SeqCst);
    assert!(reader.join().unwrap() >= 20);
    assert!(compactions >= 2, "{compactions} compactions");
    assert_eq!(store.load().unwrap().task("t39").unwrap().requeues, n);
}

/// A big snapshot, parsed in parts side by side, reads as one pass
/// reads it; a bad task in it is refused with that pass's line.
#[test]
fn a_big_snapshot_reads_as_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path());
    let mut state = State::default();
    for i in 0..2000 {
        let mut t = task(&format!("t{i}"));
        t.requeues = i;
        state.push_task(t);
    }
    state.credentials.insert("c".into(), Default::default());
    store.save(&state).unwrap();
    let bytes = fs::read(store.path()).unwrap();
    assert!(bytes.len() > PARALLEL_BYTES, "{} bytes", bytes.len());
    let one: State = serde_json::from_slice(&bytes).unwrap();
    let parts = parse_state(std::str::from_utf8(&bytes).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_value(&parts).unwrap(),
        serde_json::to_value(&one).unwrap()
    );
    assert_eq!(parts.journal_generation, one.journal_generation);
    let loaded = store.load().unwrap();
    assert_eq!(loaded.tasks.len(), 2000);
    assert_eq!(loaded.task("t1999").unwrap().requeues, 1999);
    // Task 1500's status is damaged: the error is the one pass's.
    let text = String::from_utf8(bytes).unwrap();
    let at = text.find("\"id\":\"t1500\"").unwrap();
    let status = at + text[at..].find("\"state\":\"done\"").unwrap();
    let bad = format!(
        "{}\"state\":\"gone\"{}",
        &text[..status],
        &text[status + 14..]
    );
    let want = serde_json::from_slice::<State>(bad.as_bytes()).unwrap_err();
    let got = parse_state(&bad).unwrap_err();
    assert_eq!(got.to_string(), want.to_string());
    fs::write(store.path(), &bad).unwrap();
    let err = store.load().unwrap_err();
    assert_eq!(err.exit(), crate::error::Exit::BadInput);
    assert_eq!(fs::read_to_string(store.path()).unwrap(), bad);
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
