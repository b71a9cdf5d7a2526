//! Following `.flocks/events.jsonl` from another process: read what was
//! appended since the last look, one complete line at a time.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::report::Event;

/// How much of an existing file is read at the start: recent runs only.
const START_WINDOW: u64 = 256 * 1024;

/// One events.jsonl line: the event and its timestamp.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Stamped {
    pub ts: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
}

pub(crate) struct EventFeed {
    path: PathBuf,
    pos: u64,
    partial: String,
    started: bool,
}

impl EventFeed {
    pub(crate) fn new(path: PathBuf) -> EventFeed {
        EventFeed {
            path,
            pos: 0,
            partial: String::new(),
            started: false,
        }
    }

    /// Events appended since the last call (on the first, the file's last
    /// 256 KB). Lines that do not parse (kinds this version does not know)
    /// are skipped.
    pub(crate) fn poll(&mut self) -> Vec<Stamped> {
        let Ok(mut f) = crate::fsat::read(&self.path) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut skip_first = false;
        if !self.started {
            self.started = true;
            self.pos = len.saturating_sub(START_WINDOW);
            skip_first = self.pos > 0;
        } else if len < self.pos {
            // Truncated or replaced: start over.
            self.pos = 0;
            self.partial.clear();
        }
        if len == self.pos || f.seek(SeekFrom::Start(self.pos)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if f.take(len - self.pos).read_to_end(&mut buf).is_err() {
            return Vec::new();
        }
        self.pos += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut out = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if std::mem::take(&mut skip_first) {
                continue; // started mid-line
            }
            if let Ok(s) = serde_json::from_str::<Stamped>(line.trim()) {
                out.push(s);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_appended_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut feed = EventFeed::new(path.clone());
        assert!(feed.poll().is_empty());
        crate::report::jsonl::append_event(&path, &Event::Queued { task: "a".into() }).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(
            f,
            "{{\"event\":\"queued\",\"task\":\"b\",\"ts\":\"2026-01-01T00:00:00Z\""
        )
        .unwrap();
        let got = feed.poll();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event, Event::Queued { task: "a".into() });
        writeln!(
            f,
            "}}\n{{\"event\":\"from_the_future\",\"ts\":\"2026-01-01T00:00:00Z\"}}"
        )
        .unwrap();
        let got = feed.poll();
        assert_eq!(got.len(), 1, "the unknown kind is skipped");
        assert_eq!(got[0].event, Event::Queued { task: "b".into() });
    }
}
