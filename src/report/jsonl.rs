//! `.flocks/events.jsonl`: one line per state change, with a timestamp, so
//! that other tools can follow a run. The shape is documented in
//! [`super::event`].

use std::fs::File;
use std::io::Write;
use std::path::Path;

use super::{Event, Reporter};

pub(crate) struct EventsFile {
    file: Option<File>,
}

impl EventsFile {
    pub(crate) fn open(path: &Path) -> EventsFile {
        EventsFile {
            file: open_append(path).ok(),
        }
    }
}

/// Open events.jsonl for appending, without following a link an agent put
/// there (what was replaced is said on stderr).
fn open_append(path: &Path) -> std::io::Result<File> {
    let opened = crate::fsat::append(path)?;
    crate::fsat::tell(&opened.notes);
    Ok(opened.file)
}

/// The line written for an event (with `ts` now), newline included; None for
/// events that are not written (activity).
pub(crate) fn to_line(event: &Event) -> Option<String> {
    to_value(event).map(|value| format!("{value}\n"))
}

/// The JSON object of an event's line (with `ts` now); None for events that
/// are not written (activity).
pub(crate) fn to_value(event: &Event) -> Option<serde_json::Value> {
    // Activity changes are frequent and not state changes.
    if matches!(event, Event::Activity { .. }) {
        return None;
    }
    let mut value = serde_json::to_value(event).ok()?;
    if let Some(obj) = value.as_object_mut() {
        round_numbers(obj);
        obj.insert(
            "ts".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .into(),
        );
    }
    Some(value)
}

/// Costs to the micro-dollar and durations to the millisecond, so that
/// readers never see float noise such as `0.20000000000000004`.
fn round_numbers(obj: &mut serde_json::Map<String, serde_json::Value>) {
    use crate::output::units::{round_cost, round_secs};
    for (key, round) in [
        ("cost_usd", round_cost as fn(f64) -> f64),
        ("duration_secs", round_secs),
        ("quiet_secs", round_secs),
    ] {
        if let Some(v) = obj.get_mut(key)
            && let Some(x) = v.as_f64()
        {
            *v = serde_json::json!(round(x));
        }
    }
}

/// Append one event to an events file, for commands that are not the
/// dispatcher (`flocks land` writes `landed`). One write per line, so that
/// lines from two writers never interleave.
pub(crate) fn append_event(path: &Path, event: &Event) -> std::io::Result<()> {
    let Some(line) = to_line(event) else {
        return Ok(());
    };
    open_append(path)?.write_all(line.as_bytes())
}

impl Reporter for EventsFile {
    fn event(&mut self, event: &Event) {
        let Some(f) = self.file.as_mut() else { return };
        if let Some(line) = to_line(event) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_back_with_a_timestamp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".flocks/events.jsonl");
        let events = [
            Event::Queued { task: "a".into() },
            Event::Activity {
                task: "a".into(),
                attempt: 1,
                activity: "Bash: ls".into(),
            },
            Event::Landed {
                task: "a".into(),
                commits: 2,
                target: "main".into(),
            },
        ];
        let mut file = EventsFile::open(&path);
        file.event(&events[0]);
        file.event(&events[1]);
        append_event(&path, &events[2]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "activity is not written: {text}");
        for (line, want) in lines.iter().zip([&events[0], &events[2]]) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v["ts"].as_str().unwrap().ends_with('Z'));
            let back: Event = serde_json::from_str(line).unwrap();
            assert_eq!(&back, want);
        }
        assert!(lines[1].contains(r#""event":"landed""#));
    }
}
