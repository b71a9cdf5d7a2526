//! The `Flocks-Task: <id>` trailer in a commit message: added by every
//! cherry-pick that lands, read back to know what landed.

pub(crate) const KEY: &str = "Flocks-Task";

/// `message` with a `Flocks-Task: <id>` trailer appended (once), keeping the
/// rest as it is. An existing trailer block is extended; otherwise a blank
/// line separates the new trailer from the body.
pub(crate) fn add(message: &str, id: &str) -> String {
    let line = format!("{KEY}: {id}");
    let body = message.trim_end();
    if task_ids(body).iter().any(|t| t == id) {
        return format!("{body}\n");
    }
    if body.is_empty() {
        return format!("{line}\n");
    }
    let last = body.rsplit("\n\n").next().unwrap_or("");
    let is_trailer_block = body.contains("\n\n") && last.lines().all(is_trailer_line);
    if is_trailer_block {
        format!("{body}\n{line}\n")
    } else {
        format!("{body}\n\n{line}\n")
    }
}

/// The task ids named by `Flocks-Task` trailers in the message's last paragraph.
pub(crate) fn task_ids(message: &str) -> Vec<String> {
    if !message.contains(KEY) {
        return Vec::new();
    }
    let body = message.trim_end();
    let last = body.rsplit("\n\n").next().unwrap_or("");
    last.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == KEY && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
        .collect()
}

fn is_trailer_line(line: &str) -> bool {
    match line.split_once(": ") {
        Some((k, _)) => !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_trailer_once() {
        assert_eq!(add("fix it", "a"), "fix it\n\nFlocks-Task: a\n");
        assert_eq!(
            add("fix it\n\nbody text\n", "a"),
            "fix it\n\nbody text\n\nFlocks-Task: a\n"
        );
        assert_eq!(
            add("fix it\n\nSigned-off-by: X <x@y>\n", "a"),
            "fix it\n\nSigned-off-by: X <x@y>\nFlocks-Task: a\n"
        );
        let once = add("fix it", "a");
        assert_eq!(add(&once, "a"), once);
        assert_eq!(task_ids(&add(&once, "b")), vec!["a", "b"]);
    }

    #[test]
    fn reads_only_the_last_paragraph() {
        assert!(task_ids("subject\n\nFlocks-Task: a\n\nmore body").is_empty());
        assert_eq!(
            task_ids("subject\n\nFlocks-Task: a.b-c_1\n"),
            vec!["a.b-c_1"]
        );
        // A one-line message that is only a trailer still counts.
        assert_eq!(task_ids("Flocks-Task: x"), vec!["x"]);
    }
}
