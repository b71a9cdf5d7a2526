//! Colour for what flocks prints to people: task marks (✔ ✖ ⊘ ...), the
//! section headers of `status`, the run summary and `land`, and task
//! statuses. Styles come from anstyle; nothing is painted when standard
//! output gets no colour (see [`super::colour`]).

use anstyle::{AnsiColor, Style};

pub(crate) const SUCCESS: Style = AnsiColor::Green.on_default();
pub(crate) const FAILURE: Style = AnsiColor::Red.on_default();
pub(crate) const BLOCKED: Style = AnsiColor::Yellow.on_default();
pub(crate) const ACTIVE: Style = AnsiColor::Cyan.on_default();
pub(crate) const MUTED: Style = Style::new().dimmed();

/// `text` in `style`, when standard output shows colour.
pub(crate) fn paint(style: Style, text: &str) -> String {
    if super::colour() {
        styled(style, text)
    } else {
        text.to_string()
    }
}

fn styled(style: Style, text: &str) -> String {
    format!("{style}{text}{style:#}")
}

/// The style of a task status as `status` and `tasks` name it.
pub(crate) fn status_style(status: &str) -> Style {
    match status {
        "succeeded" | "landed" => SUCCESS,
        "running" => ACTIVE,
        "blocked" | "interrupted" => BLOCKED,
        "pending" | "new" | "removed" | "not queued" => MUTED,
        _ => FAILURE,
    }
}

/// Paint every line of a report.
pub(crate) fn paint_text(text: &str) -> std::borrow::Cow<'_, str> {
    if !super::colour() {
        // As it is: `status` at 10,000 tasks is 850 KB, not copied for nothing.
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        out.push_str(&paint_line(body));
        out.push_str(nl);
    }
    out.into()
}

/// Section headers (at the start of a line) and the style of the section.
/// Each is specific enough that no task line (which starts with a mark, an
/// indent or a task id, and ids hold no space or colon) can match it.
const HEADERS: &[(&str, Style)] = &[
    ("succeeded:", SUCCESS.bold()),
    ("done (", SUCCESS.bold()),
    ("Landed on ", SUCCESS.bold()),
    ("Land onto ", Style::new().bold()),
    ("Validation: passed", SUCCESS.bold()),
    ("running (", ACTIVE.bold()),
    ("failed:", FAILURE.bold()),
    ("failed, timed out or stalled (", FAILURE.bold()),
    ("Culprits (", FAILURE.bold()),
    ("Conflicted (", FAILURE.bold()),
    ("Validation FAILED", FAILURE.bold()),
    ("Land stopped:", FAILURE.bold()),
    ("Undo stopped:", FAILURE.bold()),
    ("stopped:", FAILURE.bold()),
    ("blocked:", BLOCKED.bold()),
    ("blocked (", BLOCKED.bold()),
    ("Built but not landed", BLOCKED.bold()),
    ("Refused:", BLOCKED.bold()),
    ("Validation interrupted", BLOCKED.bold()),
    ("queued (", Style::new().bold()),
    ("not run:", Style::new().bold()),
    ("pools:", Style::new().bold()),
    ("credentials:", Style::new().bold()),
    ("next:", Style::new().bold()),
];

/// Marks that open a task line, and their style.
const MARKS: &[(char, Style)] = &[
    ('✔', SUCCESS),
    ('⇡', SUCCESS),
    ('✖', FAILURE),
    ('⛔', FAILURE),
    ('⊘', BLOCKED),
    ('⚠', BLOCKED),
    ('⏸', BLOCKED),
    ('↻', BLOCKED),
    ('■', BLOCKED),
    ('▶', ACTIVE),
];

fn paint_line(line: &str) -> String {
    if let Some((_, style)) = HEADERS.iter().find(|(h, _)| line.starts_with(h)) {
        return styled(*style, line);
    }
    if let Some(l) = land_plan_line(line) {
        return l;
    }
    let rest = line.trim_start();
    let indent = &line[..line.len() - rest.len()];
    let Some(mark) = rest.chars().next() else {
        return line.to_string();
    };
    let Some((_, style)) = MARKS.iter().find(|(m, _)| *m == mark) else {
        return line.to_string();
    };
    // `■ result: success` in a log is good news.
    let style = if mark == '■' && rest.starts_with("■ result: success") && !rest.contains("(error)")
    {
        SUCCESS
    } else {
        *style
    };
    // The mark and the word after it (the task id, or what the line is).
    let after = &rest[mark.len_utf8()..];
    let word_end = after
        .char_indices()
        .skip_while(|(_, c)| *c == ' ')
        .find(|(_, c)| *c == ' ' || *c == ':')
        .map(|(i, _)| i)
        .unwrap_or(after.len());
    let (head, tail) = rest.split_at(mark.len_utf8() + word_end);
    format!("{indent}{}{tail}", styled(style.bold(), head))
}

/// A task of land's plan: `  <id>  (<branch>, N commit(s))` is ready,
/// `  <id>  (<branch>): refused: ...` is not, the others have nothing to land.
fn land_plan_line(line: &str) -> Option<String> {
    let rest = line.strip_prefix("  ")?;
    if rest.starts_with(' ') {
        return None;
    }
    let (id, tail) = rest.split_once("  (")?;
    if id.contains(' ') {
        return None;
    }
    let style = if tail.ends_with(" commit)") || tail.ends_with(" commits)") {
        SUCCESS.bold()
    } else if tail.contains("): refused: ") {
        BLOCKED.bold()
    } else if tail.ends_with("): already landed") || tail.ends_with("): empty, nothing to land") {
        MUTED
    } else {
        return None;
    };
    Some(format!("  {}  ({tail}", styled(style, id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_headers_and_plain_lines() {
        let text = "succeeded:\n  ✔ a  flocks/a\n✖ b: failed after 3s\nplain ✔ line\n";
        let out = {
            let mut o = String::new();
            for l in text.lines() {
                o.push_str(&paint_line(l));
                o.push('\n');
            }
            o
        };
        assert!(out.contains(&styled(SUCCESS.bold(), "succeeded:")));
        assert!(out.contains(&format!("  {}  flocks/a", styled(SUCCESS.bold(), "✔ a"))));
        assert!(out.contains(&format!("{}: failed", styled(FAILURE.bold(), "✖ b"))));
        assert!(out.contains("plain ✔ line\n"));
        // A task id that starts like a header is not one.
        assert_eq!(paint_line("failed-login  failed"), "failed-login  failed");
        assert_eq!(paint_line("blocked-x  new"), "blocked-x  new");
        let stripped = anstream::adapter::strip_str(&out).to_string();
        assert_eq!(stripped, text);
    }
}
