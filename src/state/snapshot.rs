//! The text of state.json: one JSON object, written with each element of
//! its top-level arrays (`tasks`, `managed`) on a line of its own, so that a
//! reader finds the tasks by their newlines (JSON text has none inside a
//! string) and parses them side by side, without a first pass over the
//! whole file. A file in another layout (older flocks, edited by hand) is
//! read the slower way; both read what one `serde_json` pass reads.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{State, TaskRecord};

/// Snapshots smaller than this are parsed on one thread.
pub(super) const PARALLEL_BYTES: usize = 1 << 20;

/// What the lock holder writes: the state and the journal generation that
/// continues it.
#[derive(Serialize)]
struct Snapshot<'a> {
    #[serde(flatten)]
    state: &'a State,
    journal_generation: u64,
}

/// Write `state` as a snapshot's text.
pub(super) fn write(
    out: &mut impl Write,
    state: &State,
    journal_generation: u64,
) -> io::Result<()> {
    let snapshot = Snapshot {
        state,
        journal_generation,
    };
    let mut ser = serde_json::Serializer::with_formatter(out, Lines::default());
    snapshot.serialize(&mut ser).map_err(io::Error::other)
}

/// serde_json's compact text, with a newline before each element of an
/// array that is a field of the top-level object, and before its `]`.
#[derive(Default)]
struct Lines {
    /// Objects and arrays open around the value being written.
    depth: usize,
    /// For each open one: is it an array?
    arrays: Vec<bool>,
}

impl Lines {
    /// The array being written is a top-level field's.
    fn top_array(&self) -> bool {
        self.depth == 2 && self.arrays.last() == Some(&true)
    }
}

impl serde_json::ser::Formatter for Lines {
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.arrays.push(true);
        w.write_all(b"[")
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        let top = self.top_array();
        self.depth -= 1;
        self.arrays.pop();
        w.write_all(if top { b"\n]" } else { b"]" })
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        let top = self.top_array();
        match (first, top) {
            (true, true) => w.write_all(b"\n"),
            (false, true) => w.write_all(b",\n"),
            (true, false) => Ok(()),
            (false, false) => w.write_all(b","),
        }
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth += 1;
        self.arrays.push(false);
        w.write_all(b"{")
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.depth -= 1;
        self.arrays.pop();
        w.write_all(b"}")
    }
}

/// A snapshot's state. A big one (thousands of tasks) has its tasks parsed
/// on the machine's cores side by side: most of a reader's time at 10,000
/// tasks is this parse. What it reads is what one `serde_json` pass reads;
/// an error is that pass's error (line and column).
pub(super) fn parse(text: &str) -> serde_json::Result<State> {
    if text.len() < PARALLEL_BYTES {
        return serde_json::from_str(text);
    }
    let parsed = match by_lines(text) {
        Some((head, tasks)) => parse_parts(&head, &tasks),
        None => match serde_json::from_str::<Split<'_>>(text) {
            Ok(split) => {
                let tasks: Vec<&str> = split.tasks.iter().map(|r| r.get()).collect();
                Ok(parse_tasks(split.rest, &tasks))
            }
            Err(e) => Err(e),
        },
    };
    match parsed {
        Ok(Ok(state)) => Ok(state),
        // Said by the one pass, with its line and column.
        _ => serde_json::from_str(text),
    }
}

/// The snapshot's tasks, each still JSON text (borrowed), and its other
/// fields parsed: the slower way, one pass over the whole text.
#[derive(Deserialize)]
struct Split<'a> {
    #[serde(borrow, default)]
    tasks: Vec<&'a RawValue>,
    #[serde(flatten)]
    rest: State,
}

/// A snapshot in the layout [`write`] gives: the text without its tasks
/// (`"tasks":[` then the `]` line), and each task's text. None when the
/// text is in another layout.
fn by_lines(text: &str) -> Option<(String, Vec<&str>)> {
    let mut lines = text.split('\n');
    let first = lines.next()?;
    if !opens_tasks(first) {
        return None;
    }
    let mut tasks = Vec::with_capacity(text.len() / 800);
    let mut rest = None;
    for line in lines.by_ref() {
        if line.starts_with(']') {
            rest = Some(line);
            break;
        }
        tasks.push(line);
    }
    let rest = rest?;
    // Every task but the last ends with the comma between them, as one
    // array's text would have them; else this is not that layout.
    let last = tasks.len().checked_sub(1);
    for (i, t) in tasks.iter_mut().enumerate() {
        match (t.strip_suffix(','), Some(i) == last) {
            (Some(inner), false) => *t = inner,
            (None, true) => {}
            _ => return None,
        }
    }
    let rest_at = rest.as_ptr() as usize - text.as_ptr() as usize;
    Some((format!("{first}\n{}", &text[rest_at..]), tasks))
}

/// The line ends by opening the top-level object's `tasks` array: it ends
/// with `"tasks":[`, outside any string, one object deep.
fn opens_tasks(line: &str) -> bool {
    if !line.ends_with("\"tasks\":[") {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for b in line.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') => in_string = false,
            (true, false, _) => {}
            (false, _, b'"') => in_string = true,
            (false, _, b'{' | b'[') => depth += 1,
            (false, _, b'}' | b']') => depth = depth.saturating_sub(1),
            (false, _, _) => {}
        }
    }
    !in_string && depth == 2
}

/// The head, then the tasks: Err when the head is not a state.
fn parse_parts(head: &str, tasks: &[&str]) -> serde_json::Result<serde_json::Result<State>> {
    let state: State = serde_json::from_str(head)?;
    Ok(parse_tasks(state, tasks))
}

/// `rest` with `tasks` parsed into it, on the machine's cores.
fn parse_tasks(mut rest: State, tasks: &[&str]) -> serde_json::Result<State> {
    rest.tasks = crate::par::try_map(tasks, 0, |t| serde_json::from_str::<TaskRecord>(t))?;
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: usize) -> State {
        let mut state = State::default();
        for i in 0..n {
            let mut t = crate::state::store::tests::task(&format!("t{i}"));
            t.requeues = i as u32;
            t.title = Some(format!("line\nbreak {i} \"tasks\":["));
            state.push_task(t);
        }
        state.managed.push(crate::state::Managed::Container {
            pool: "p".into(),
            id: "c1".into(),
            name: "n".into(),
        });
        state
    }

    fn text(state: &State) -> String {
        let mut out = Vec::new();
        write(&mut out, state, 7).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn same(a: &State, b: &State) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
        assert_eq!(a.journal_generation, b.journal_generation);
    }

    #[test]
    fn each_task_is_a_line_and_reads_as_one_pass() {
        let s = state(3000);
        let text = text(&s);
        assert!(text.len() > PARALLEL_BYTES);
        // The head, each task, then the rest of the object.
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(lines[0].ends_with("\"tasks\":["), "{}", lines[0]);
        assert!(lines[1].starts_with("{\"id\":\"t0\""));
        assert!(lines[3000].starts_with("{\"id\":\"t2999\""));
        assert!(lines[3001].starts_with("],"));
        let (head, tasks) = by_lines(&text).expect("the layout write gives");
        assert_eq!(tasks.len(), 3000);
        assert!(head.len() < 1000, "{head}");
        let one: State = serde_json::from_str(&text).unwrap();
        same(&parse(&text).unwrap(), &one);
        assert_eq!(one.journal_generation, 7);
        assert_eq!(one.managed.len(), 1);
    }

    #[test]
    fn a_file_on_one_line_reads_the_slower_way() {
        let s = state(3000);
        let one_line = serde_json::to_string(&s).unwrap();
        assert!(by_lines(&one_line).is_none());
        same(&parse(&one_line).unwrap(), &s);
    }

    /// Text that looks like the layout but is not: what one pass reads.
    #[test]
    fn other_layouts_read_as_one_pass() {
        let text = text(&state(3000));
        // `tasks` one level down (an unknown field): not the state's tasks.
        let nested = text
            .replacen("\"tasks\":[", "\"x\":{\"tasks\":[", 1)
            .replacen(
                "\n],\"credentials\"",
                "\n]},\"tasks\":[],\"credentials\"",
                1,
            );
        assert!(by_lines(&nested).is_none());
        let one: State = serde_json::from_str(&nested).unwrap();
        assert!(one.tasks.is_empty());
        same(&parse(&nested).unwrap(), &one);
        // A comma after the last task: not JSON, refused as one pass says.
        let comma = text.replacen("\n],\"credentials\"", ",\n],\"credentials\"", 1);
        assert!(by_lines(&comma).is_none());
        let want = serde_json::from_str::<State>(&comma).unwrap_err();
        assert_eq!(parse(&comma).unwrap_err().to_string(), want.to_string());
        // Two tasks on one line: the layout's parse fails, one pass reads it.
        let joined = text.replacen("},\n{\"id\":\"t1\"", "},{\"id\":\"t1\"", 1);
        let one: State = serde_json::from_str(&joined).unwrap();
        same(&parse(&joined).unwrap(), &one);
        assert_eq!(one.tasks.len(), 3000);
    }

    #[test]
    fn no_tasks() {
        let s = State::default();
        let text = text(&s);
        assert!(text.contains("\"tasks\":[\n]"), "{text}");
        let one: State = serde_json::from_str(&text).unwrap();
        assert!(one.tasks.is_empty());
        let (_, tasks) = by_lines(&text).unwrap();
        assert!(tasks.is_empty());
    }
}
