//! Rendering an attempt's raw stream-json log for people: assistant text, tool
//! calls, short tool results, the result. Non-JSON lines pass through.

use serde_json::Value;

use crate::agent::stream::{describe_tool_use, one_line, result_info, tool_result_text};

/// The lines one raw log line renders to (none for noise such as init).
pub(crate) fn render_line(raw: &str) -> Vec<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<Value>(trimmed) else {
        return vec![raw.to_string()];
    };
    if let Value::Array(items) = &v {
        return items.iter().flat_map(render_value).collect();
    }
    render_value(&v)
}

fn render_value(v: &Value) -> Vec<String> {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    match kind {
        "system" if v.get("subtype").and_then(Value::as_str) == Some("init") => {
            let sid = v.get("session_id").and_then(Value::as_str).unwrap_or("?");
            let model = v.get("model").and_then(Value::as_str).unwrap_or("?");
            out.push(format!("── session {sid} · model {model}"));
        }
        "assistant" => {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                out.push(format!("⚠ error: {e}"));
            }
            let blocks = v
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_array);
            for b in blocks.into_iter().flatten() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            out.extend(t.lines().map(str::to_string));
                        }
                    }
                    Some("tool_use") => out.push(format!("▶ {}", describe_tool_use(b))),
                    _ => {}
                }
            }
        }
        "user" => {
            let blocks = v
                .get("message")
                .and_then(|m| m.get("content"))
                .and_then(Value::as_array);
            for b in blocks.into_iter().flatten() {
                if b.get("type").and_then(Value::as_str) != Some("tool_result") {
                    continue;
                }
                let text = tool_result_text(b.get("content"));
                let lines = text.lines().count();
                let err = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                let mut s = format!(
                    "  {} {}",
                    if err { "↳ error:" } else { "↳" },
                    one_line(&text, 100)
                );
                if lines > 1 {
                    s.push_str(&format!(
                        " (+{})",
                        crate::output::units::count(lines - 1, "line")
                    ));
                }
                out.push(s);
            }
        }
        "rate_limit_event" => {
            let info = v.get("rate_limit_info").unwrap_or(&Value::Null);
            let status = info.get("status").and_then(Value::as_str).unwrap_or("?");
            out.push(format!("⚠ rate limit: {status}"));
        }
        "result" => {
            let r = result_info(v);
            let mut s = format!(
                "■ result: {}{}",
                r.subtype.as_deref().unwrap_or("?"),
                if r.is_error { " (error)" } else { "" }
            );
            if let Some(n) = r.num_turns {
                s.push_str(&format!(" · {}", crate::output::units::count(n, "turn")));
            }
            if let Some(c) = r.total_cost_usd {
                s.push_str(&format!(" · {}", crate::output::units::money(c)));
            }
            if let Some(ms) = r.duration_ms {
                s.push_str(&format!(
                    " · {}",
                    crate::output::units::duration(ms as f64 / 1000.0)
                ));
            }
            out.push(s);
            if let Some(t) = r.text {
                out.extend(t.lines().map(|l| format!("  {l}")));
            }
        }
        _ => {}
    }
    out
}

/// What the agent is doing now, read from (the end of) its log: its last
/// tool call (`Bash: cargo test`) or its last words (the last line of its
/// last text), whichever came last. Never the session line, a tool result,
/// the result, or a line that is not the agent's stream-json (stderr,
/// setup output, flocks' notes). The one answer that `run`'s progress,
/// `status`, `top`, the web view and `status --json` give.
pub(crate) fn activity(text: &str) -> Option<String> {
    use crate::agent::StreamEvent;
    for line in text.lines().rev() {
        let Ok(v) = serde_json::from_str::<Value>(line.trim()) else {
            continue;
        };
        let values = match v {
            Value::Array(items) => items,
            v => vec![v],
        };
        for v in values.iter().rev() {
            for ev in crate::agent::stream::parse_event(v).into_iter().rev() {
                match ev {
                    StreamEvent::ToolUse(a) => return Some(a),
                    StreamEvent::Text(t) => {
                        if let Some(a) = crate::agent::stream::text_activity(&t) {
                            return Some(a);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    None
}

/// [`activity`] of a log file, read from its last 256 KB.
pub(crate) fn last_activity(log: &std::path::Path) -> Option<String> {
    activity(&read_tail(log, 256 * 1024))
}

/// The last `n` rendered lines of a log text (without the supervisor's note
/// on its containment, which says nothing about why an attempt ended).
pub(crate) fn tail_rendered(text: &str, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().rev() {
        if line.starts_with(crate::supervisor::CONTAINMENT_NOTE) {
            continue;
        }
        let mut r = render_line(line);
        r.reverse();
        out.extend(r);
        if out.len() >= n {
            break;
        }
    }
    out.truncate(n);
    out.reverse();
    out
}

/// The last `max` bytes of a file, from a line start.
pub(crate) fn read_tail(path: &std::path::Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = crate::fsat::read(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    if start > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default()
    } else {
        text
    }
}
