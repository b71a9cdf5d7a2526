//! `.flocks/events.jsonl`: one line per state change, with a timestamp, so
//! that other tools can follow a run.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::{Event, Reporter};

pub struct EventsFile {
    file: Option<File>,
}

impl EventsFile {
    pub fn open(path: &Path) -> EventsFile {
        if let Some(d) = path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        EventsFile {
            file: OpenOptions::new().create(true).append(true).open(path).ok(),
        }
    }
}

impl Reporter for EventsFile {
    fn event(&mut self, event: &Event) {
        // Activity changes are frequent and not state changes.
        if matches!(event, Event::Activity { .. }) {
            return;
        }
        let Some(f) = self.file.as_mut() else { return };
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(obj) = value.as_object_mut() {
            obj.insert(
                "ts".into(),
                chrono::Utc::now()
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
        }
        let _ = writeln!(f, "{value}");
    }
}
