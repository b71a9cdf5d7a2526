//! What a notifier sends: one event as its events.jsonl object (plus
//! `project`), or a coalesced burst as one `coalesced` object; and the same
//! as text, for Slack and ntfy.
//!
//! A coalesced message: `{"event": "coalesced", "ts", "project", "count"
//! (events in it), "events": [their objects, oldest first], "omitted" (how
//! many are counted but not listed)}`.

use serde_json::{Value, json};

use crate::config::Config;
use crate::report::Event;
use crate::report::describe::{Clock, describe};

/// Events listed in one coalesced message (`needs_attention` and
/// `run_finished` always are); the others are counted in `omitted`.
const MAX_LISTED: usize = 100;
/// Lines of a text message; the rest is "… and N more".
const MAX_LINES: usize = 10;

/// Where the events come from, as messages name it.
#[derive(Debug, Clone, Default)]
pub(super) struct Project {
    /// The directory of flocks.toml.
    pub dir: String,
    /// Its last component, for text.
    pub name: String,
}

impl Project {
    pub(super) fn of(config: &Config) -> Project {
        Project {
            dir: config.dir.display().to_string(),
            name: config
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| config.dir.display().to_string()),
        }
    }
}

/// One event, ready to send.
#[derive(Debug, Clone)]
pub(super) struct Item {
    kind: &'static str,
    /// Its events.jsonl object, with `project`.
    json: Value,
    /// One line for people.
    text: String,
}

impl Item {
    /// None for events that are never sent (activity).
    pub(super) fn new(event: &Event, project: &Project) -> Option<Item> {
        let mut json = crate::report::jsonl::to_value(event)?;
        if let Some(obj) = json.as_object_mut() {
            obj.insert("project".into(), project.dir.clone().into());
        }
        Some(Item {
            kind: event.kind(),
            json,
            text: describe(event, Clock::UtcDated),
        })
    }

    fn always_listed(&self) -> bool {
        matches!(self.kind, "needs_attention" | "run_finished")
    }
}

/// A message: its JSON (webhook `json`, a command's stdin) and its text.
#[derive(Debug, Clone)]
pub(super) struct Message {
    /// The event kind, or `coalesced`.
    pub kind: String,
    pub json: Value,
    pub text: String,
}

/// What arrived since the last message.
#[derive(Debug, Default)]
pub(super) struct Batch {
    items: Vec<Item>,
    omitted: usize,
}

impl Batch {
    pub(super) fn push(&mut self, item: Item) {
        if self.items.len() < MAX_LISTED || item.always_listed() {
            self.items.push(item);
        } else {
            self.omitted += 1;
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.omitted == 0
    }

    /// Events in it.
    pub(super) fn len(&self) -> usize {
        self.items.len() + self.omitted
    }

    /// The batch as one message, and how many events it holds; the batch is
    /// empty after.
    pub(super) fn take(&mut self, project: &Project) -> (Message, usize) {
        let items = std::mem::take(&mut self.items);
        let omitted = std::mem::take(&mut self.omitted);
        let count = items.len() + omitted;
        (build(items, omitted, project), count)
    }
}

fn build(mut items: Vec<Item>, omitted: usize, project: &Project) -> Message {
    if items.len() == 1 && omitted == 0 {
        let item = items.remove(0);
        return Message {
            kind: item.kind.to_string(),
            text: format!("flocks · {}: {}", project.name, item.text),
            json: item.json,
        };
    }
    let count = items.len() + omitted;
    // The lines of text: what needs people first, then the rest, in order.
    let mut shown: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].always_listed())
        .take(MAX_LINES)
        .collect();
    for i in 0..items.len() {
        if shown.len() >= MAX_LINES {
            break;
        }
        if !shown.contains(&i) {
            shown.push(i);
        }
    }
    shown.sort_unstable();
    let mut text = format!(
        "flocks · {}: {}",
        project.name,
        crate::output::units::count(count, "event")
    );
    for &i in &shown {
        text.push('\n');
        text.push_str(&items[i].text);
    }
    if count > shown.len() {
        text.push_str(&format!(
            "\n… and {} more (.flocks/events.jsonl)",
            count - shown.len()
        ));
    }
    let json = json!({
        "event": "coalesced",
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "project": project.dir,
        "count": count,
        "events": items.into_iter().map(|i| i.json).collect::<Vec<_>>(),
        "omitted": omitted,
    });
    Message {
        kind: "coalesced".into(),
        json,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::AttentionCause;

    fn project() -> Project {
        Project {
            dir: "/work/repo".into(),
            name: "repo".into(),
        }
    }

    fn queued(n: usize) -> Event {
        Event::Queued {
            task: format!("t{n}"),
        }
    }

    #[test]
    fn one_event_is_its_events_jsonl_object_with_the_project() {
        let mut batch = Batch::default();
        batch.push(Item::new(&queued(1), &project()).unwrap());
        let (m, count) = batch.take(&project());
        assert_eq!(count, 1);
        assert!(batch.is_empty());
        assert_eq!(m.kind, "queued");
        assert_eq!(m.json["event"], "queued");
        assert_eq!(m.json["task"], "t1");
        assert_eq!(m.json["project"], "/work/repo");
        assert!(m.json["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(m.text, "flocks · repo: · t1: queued");
        assert!(
            Item::new(
                &Event::Activity {
                    task: "a".into(),
                    attempt: 1,
                    activity: "Bash".into()
                },
                &project()
            )
            .is_none()
        );
    }

    #[test]
    fn a_burst_is_one_coalesced_message_that_keeps_what_needs_people() {
        let mut batch = Batch::default();
        for n in 0..MAX_LISTED + 20 {
            batch.push(Item::new(&queued(n), &project()).unwrap());
        }
        let attention = Event::NeedsAttention {
            cause: AttentionCause::TaskFailed,
            message: "task t3 failed".into(),
            task: Some("t3".into()),
            credential: None,
        };
        batch.push(Item::new(&attention, &project()).unwrap());
        assert_eq!(batch.len(), MAX_LISTED + 21);
        let (m, count) = batch.take(&project());
        assert_eq!(count, MAX_LISTED + 21);
        assert_eq!(m.kind, "coalesced");
        assert_eq!(m.json["count"], MAX_LISTED + 21);
        assert_eq!(m.json["omitted"], 20);
        let events = m.json["events"].as_array().unwrap();
        assert_eq!(events.len(), MAX_LISTED + 1);
        assert_eq!(events.last().unwrap()["event"], "needs_attention");
        let lines: Vec<&str> = m.text.lines().collect();
        assert_eq!(
            lines[0],
            format!("flocks · repo: {} events", MAX_LISTED + 21)
        );
        assert!(
            lines.contains(&"⚑ needs attention: task t3 failed"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 1 + MAX_LINES + 1);
        assert!(
            lines
                .last()
                .unwrap()
                .starts_with(&format!("… and {} more", MAX_LISTED + 21 - MAX_LINES))
        );
    }
}
