//! Reading claude's stream-json, one line at a time as it comes. Unknown types
//! and fields are ignored; fields are matched by name.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;

use crate::state::ResultInfo;

/// What one line told us.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StreamEvent {
    /// The session id and model, from the init line.
    Init {
        session_id: String,
        model: Option<String>,
    },
    /// The agent called a tool: `Bash: cargo test`.
    ToolUse(String),
    /// The agent said something.
    Text(String),
    /// A tool result came back (first line, shortened).
    ToolResult { text: String, is_error: bool },
    /// A structured rate-limit signal.
    RateLimit {
        rejected: bool,
        resets_at: Option<DateTime<Utc>>,
        kind: Option<String>,
    },
    /// An assistant message carried an `error` field (`rate_limit`, `authentication_failed`, ...).
    AssistantError(String),
    /// The final result.
    Result(ResultInfo),
}

/// Keeps what a stream has said so far.
#[derive(Debug, Default)]
pub(crate) struct StreamParser {
    pub session_id: Option<String>,
    pub model: Option<String>,
    pub activity: Option<String>,
    pub result: Option<ResultInfo>,
    pub rate_limit: Option<(bool, Option<DateTime<Utc>>)>,
    pub assistant_error: Option<String>,
    /// stdout that did not parse line by line, kept (bounded) in case the
    /// agent printed one JSON document over several lines.
    unparsed: String,
    saw_events: bool,
}

const RESULT_TEXT_LIMIT: usize = 4000;
const UNPARSED_LIMIT: usize = 8 << 20;

impl StreamParser {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Read one stdout line. Returns what it said, if anything.
    pub(crate) fn feed_line(&mut self, line: &str) -> Vec<StreamEvent> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Vec::new();
        }
        let value = match serde_json::from_str::<Value>(trimmed) {
            Ok(v) => v,
            Err(_) => {
                if !self.saw_events && self.unparsed.len() + line.len() < UNPARSED_LIMIT {
                    self.unparsed.push_str(line);
                    self.unparsed.push('\n');
                }
                return Vec::new();
            }
        };
        self.saw_events = true;
        let events = match &value {
            Value::Array(items) => items.iter().flat_map(parse_event).collect(),
            v => parse_event(v),
        };
        for e in &events {
            self.absorb(e);
        }
        events
    }

    /// End of stdout: a lone JSON document printed over several lines.
    pub(crate) fn finish(&mut self) -> Vec<StreamEvent> {
        if self.result.is_some() || self.unparsed.is_empty() {
            return Vec::new();
        }
        let text = std::mem::take(&mut self.unparsed);
        let Ok(value) = serde_json::from_str::<Value>(text.trim()) else {
            return Vec::new();
        };
        let events: Vec<StreamEvent> = match &value {
            Value::Array(items) => items.iter().flat_map(parse_event).collect(),
            v => parse_event(v),
        };
        for e in &events {
            self.absorb(e);
        }
        events
    }

    fn absorb(&mut self, e: &StreamEvent) {
        match e {
            StreamEvent::Init { session_id, model } => {
                self.session_id = Some(session_id.clone());
                self.model = model.clone();
            }
            StreamEvent::ToolUse(a) => self.activity = Some(a.clone()),
            StreamEvent::Text(_) | StreamEvent::ToolResult { .. } => {}
            StreamEvent::RateLimit {
                rejected,
                resets_at,
                ..
            } => {
                if *rejected {
                    self.rate_limit = Some((true, *resets_at));
                }
            }
            StreamEvent::AssistantError(kind) => self.assistant_error = Some(kind.clone()),
            StreamEvent::Result(r) => {
                self.result = Some(r.clone());
            }
        }
    }
}

/// The events in one JSON object (an assistant message can hold several).
pub(crate) fn parse_event(v: &Value) -> Vec<StreamEvent> {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    match kind {
        "system" => {
            if v.get("subtype").and_then(Value::as_str) == Some("init")
                && let Some(sid) = v.get("session_id").and_then(Value::as_str)
            {
                out.push(StreamEvent::Init {
                    session_id: sid.to_string(),
                    model: v.get("model").and_then(Value::as_str).map(str::to_string),
                });
            }
        }
        "assistant" => {
            if let Some(err) = v.get("error").and_then(Value::as_str) {
                out.push(StreamEvent::AssistantError(err.to_string()));
            }
            for block in content_blocks(v) {
                match block.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = block.get("text").and_then(Value::as_str) {
                            out.push(StreamEvent::Text(t.to_string()));
                        }
                    }
                    Some("tool_use") => out.push(StreamEvent::ToolUse(describe_tool_use(block))),
                    _ => {}
                }
            }
        }
        "user" => {
            for block in content_blocks(v) {
                if block.get("type").and_then(Value::as_str) == Some("tool_result") {
                    let text = tool_result_text(block.get("content"));
                    out.push(StreamEvent::ToolResult {
                        text,
                        is_error: block
                            .get("is_error")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    });
                }
            }
        }
        "rate_limit_event" => {
            let info = v.get("rate_limit_info").unwrap_or(&Value::Null);
            let status = info.get("status").and_then(Value::as_str).unwrap_or("");
            out.push(StreamEvent::RateLimit {
                rejected: status == "rejected",
                resets_at: info.get("resetsAt").and_then(epoch),
                kind: info
                    .get("rateLimitType")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            });
        }
        "result" => out.push(StreamEvent::Result(result_info(v))),
        _ => {}
    }
    out
}

fn content_blocks(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("message")
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn epoch(v: &Value) -> Option<DateTime<Utc>> {
    let secs = v
        .as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str()?.parse().ok())?;
    // Milliseconds, if it is too large to be seconds.
    let secs = if secs > 100_000_000_000 {
        secs / 1000
    } else {
        secs
    };
    Utc.timestamp_opt(secs, 0).single()
}

pub(crate) fn result_info(v: &Value) -> ResultInfo {
    let text = v.get("result").and_then(Value::as_str).map(|t| {
        if t.len() > RESULT_TEXT_LIMIT {
            let mut end = RESULT_TEXT_LIMIT;
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &t[..end])
        } else {
            t.to_string()
        }
    });
    ResultInfo {
        subtype: v.get("subtype").and_then(Value::as_str).map(str::to_string),
        is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        num_turns: v.get("num_turns").and_then(Value::as_u64),
        total_cost_usd: v.get("total_cost_usd").and_then(Value::as_f64),
        duration_ms: v.get("duration_ms").and_then(Value::as_u64),
        text,
        api_error_status: v.get("api_error_status").filter(|s| !s.is_null()).cloned(),
        terminal_reason: v
            .get("terminal_reason")
            .and_then(Value::as_str)
            .map(str::to_string),
        usage: v.get("usage").filter(|u| u.is_object()).map(|u| {
            let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
            crate::state::Tokens {
                input_tokens: n("input_tokens"),
                output_tokens: n("output_tokens"),
                cache_creation_input_tokens: n("cache_creation_input_tokens"),
                cache_read_input_tokens: n("cache_read_input_tokens"),
            }
        }),
    }
}

/// `Bash: cargo test`, `Edit: src/main.rs`, ... for the live view.
pub(crate) fn describe_tool_use(block: &Value) -> String {
    let name = block.get("name").and_then(Value::as_str).unwrap_or("tool");
    let input = block.get("input").unwrap_or(&Value::Null);
    let field = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "query",
        "description",
        "prompt",
    ]
    .iter()
    .find_map(|k| input.get(*k).and_then(Value::as_str));
    let detail = match field {
        Some(s) => s.to_string(),
        None if input.is_null() => String::new(),
        None => input.to_string(),
    };
    let detail = one_line(&detail, 100);
    if detail.is_empty() {
        name.to_string()
    } else {
        format!("{name}: {detail}")
    }
}

/// The text of a tool result's `content` (a string or text blocks).
pub(crate) fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|i| i.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

/// First line, cut to `max` characters.
/// What an assistant text says the agent does now: its last line that is
/// not blank, cut to 200 characters (None for a blank text).
pub(crate) fn text_activity(text: &str) -> Option<String> {
    let last = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(one_line(last, 200))
}

pub(crate) fn one_line(s: &str, max: usize) -> String {
    let first = s
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if first.chars().count() > max {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        first.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stream() {
        let mut p = StreamParser::new();
        p.feed_line(r#"{"type":"system","subtype":"init","session_id":"s1","model":"m"}"#);
        let ev = p.feed_line(r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"cargo test\nmore"}}]}}"#);
        assert_eq!(ev, vec![StreamEvent::ToolUse("Bash: cargo test".into())]);
        p.feed_line(r#"{"type":"user","message":{"content":[{"type":"tool_result","content":"HTTP 429 Too Many Requests"}]}}"#);
        p.feed_line(r#"{"type":"result","subtype":"success","is_error":false,"num_turns":3,"total_cost_usd":0.5,"result":"ok","session_id":"s1","api_error_status":null}"#);
        assert_eq!(p.session_id.as_deref(), Some("s1"));
        assert_eq!(p.activity.as_deref(), Some("Bash: cargo test"));
        let r = p.result.unwrap();
        assert_eq!(r.num_turns, Some(3));
        assert_eq!(r.api_error_status, None);
        assert!(p.rate_limit.is_none());
    }

    #[test]
    fn lone_object_and_array() {
        let mut p = StreamParser::new();
        p.feed_line(r#"{"type":"result","subtype":"success","is_error":false,"result":"x"}"#);
        assert!(p.result.is_some());
        let mut p = StreamParser::new();
        p.feed_line(r#"[{"type":"system","subtype":"init","session_id":"a"},{"type":"result","subtype":"success","is_error":false}]"#);
        assert_eq!(p.session_id.as_deref(), Some("a"));
        assert!(p.result.is_some());
        // Pretty-printed over several lines.
        let mut p = StreamParser::new();
        for l in [
            "{",
            r#"  "type": "result","#,
            r#"  "subtype": "success", "is_error": false"#,
            "}",
        ] {
            p.feed_line(l);
        }
        assert!(p.result.is_none());
        p.finish();
        assert!(p.result.is_some());
    }

    #[test]
    fn rate_limit_event() {
        let mut p = StreamParser::new();
        p.feed_line(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"rejected","resetsAt":1700000000,"rateLimitType":"five_hour"}}"#);
        let (rejected, at) = p.rate_limit.unwrap();
        assert!(rejected);
        assert_eq!(at.unwrap().timestamp(), 1700000000);
        let mut p = StreamParser::new();
        p.feed_line(r#"{"type":"rate_limit_event","rate_limit_info":{"status":"allowed_warning","resetsAt":1700000000}}"#);
        assert!(p.rate_limit.is_none());
    }
}
