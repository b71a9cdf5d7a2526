//! A flocks.toml that does not fit the config's shape, said in words: the line,
//! the key (dotted, as in `containers.max_worktrees`) and what it expects.
//!
//! serde's own messages (`invalid type: string "four", expected i64`) name no
//! key and speak Rust; every type error of every key and table goes through
//! [`deserialize`], which tracks the key path and rewrites the message.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Deserialize `text` into `T`; a failure names the file, line and key.
pub(super) fn deserialize<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    let de = toml::Deserializer::parse(text).map_err(|e| syntax(path, text, &e))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = key_of(e.path());
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(text, s.start));
        let (key, message) = in_words(key, inner.message().trim_end());
        Error::input(path, line, key.as_deref(), message)
    })
}

/// A TOML syntax error: no key to name, the parser's own words.
fn syntax(path: &Path, text: &str, e: &toml::de::Error) -> Error {
    let line = e.span().map(|s| line_of(text, s.start));
    Error::input(path, line, None, e.message().trim_end().to_string())
}

/// The 1-based line of a byte offset (bytes, so that an offset inside a
/// character cannot panic).
fn line_of(text: &str, offset: usize) -> usize {
    let bytes = &text.as_bytes()[..offset.min(text.len())];
    bytes.iter().filter(|b| **b == b'\n').count() + 1
}

/// The dotted key of a path (`containers.max_worktrees`), without array
/// indices (the line says which entry) and without the parts that only
/// exist to carry spans.
fn key_of(path: &serde_path_to_error::Path) -> Option<String> {
    use serde_path_to_error::Segment;
    let keys: Vec<&str> = path
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } if !key.starts_with("$__") => Some(key.as_str()),
            Segment::Enum { variant } => Some(variant.as_str()),
            _ => None,
        })
        .collect();
    (!keys.is_empty()).then(|| keys.join("."))
}

/// serde's message, in words. Returns the key to name (an unknown or missing
/// key is named with its table) and the message.
fn in_words(key: Option<String>, message: &str) -> (Option<String>, String) {
    let join = |table: &Option<String>, name: &str| match table {
        Some(t) => format!("{t}.{name}"),
        None => name.to_string(),
    };
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        && let Some((got, expected)) = rest.split_once(", expected ")
    {
        let (expected, got) = (expected_words(expected), got_words(got));
        // `[containers]` where `[[containers]]` was meant.
        if expected == "an array"
            && got == "a table"
            && let Some(name) = key.as_deref().and_then(|k| k.rsplit('.').next())
        {
            let message = format!(
                "expected an array of tables, got one table: write [[{name}]] (two brackets) for each entry"
            );
            return (key, message);
        }
        return (key, format!("expected {expected}, got {got}"));
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, known)) = rest.split_once('`')
    {
        let known = known
            .trim_start_matches(',')
            .trim()
            .trim_start_matches("expected one of ")
            .trim_start_matches("expected ");
        let names: Vec<&str> = known
            .split(['`', ',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect();
        let message = if known.is_empty() || known.starts_with("there are no fields") {
            "unknown key: remove it".to_string()
        } else if let Some(near) = crate::typo::nearest(name, names.iter().copied()) {
            format!("unknown key: did you mean `{near}`?")
        } else if let Some((near, why)) = also_called(name).filter(|(n, _)| names.contains(n)) {
            format!("unknown key: did you mean `{near}`? ({why})")
        } else {
            // serde lists three or more as "one of `a`, `b`, `c`": say "`a`, `b` or `c`".
            let known = match known.rsplit_once(", ") {
                Some((head, last)) if !known.contains(" or ") => format!("{head} or {last}"),
                _ => known.to_string(),
            };
            format!("unknown key: the keys here are {known}")
        };
        // The path already ends with the unknown key.
        let key = match key {
            Some(k) if k == name || k.ends_with(&format!(".{name}")) => Some(k),
            k => Some(join(&k, name)),
        };
        return (key, message);
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(name) = rest.strip_suffix('`')
    {
        return (
            Some(join(&key, name)),
            "missing: this key is required".into(),
        );
    }
    (key, message.to_string())
}

/// Keys known by another name: the manual's word for a key that
/// flocks.toml spells otherwise.
fn also_called(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "pools" | "pool" => Some((
            "containers",
            "flocks.toml writes each pool as [[containers]]",
        )),
        _ => None,
    }
}

/// What a visitor expects (`i64`, `a sequence`, `struct RawPool`), in words.
fn expected_words(expected: &str) -> String {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "i128" | "u8" | "u16" | "u32" | "u64" | "u128" | "isize"
        | "usize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "a character" => "a string".into(),
        "a boolean" => "true or false".into(),
        "a sequence" => "an array".into(),
        "a map" => "a table".into(),
        e if e.starts_with("struct ") => "a table".into(),
        e => e.to_string(),
    }
}

/// What was found (`string "four"`, ``integer `4` ``), in words.
fn got_words(got: &str) -> String {
    let inner = |prefix: &str| {
        got.strip_prefix(prefix)
            .map(|v| v.trim_matches('`').to_string())
    };
    if got.starts_with("string ") {
        return format!("the {got}");
    }
    if let Some(v) = got.strip_prefix("integer `") {
        // toml says ``integer `N` as i128`` for a number out of range.
        return match v.split_once('`') {
            Some((n, rest)) if !rest.is_empty() => {
                format!("the whole number {n}, which is out of range")
            }
            _ => format!("the whole number {}", v.trim_end_matches('`')),
        };
    }
    if let Some(v) = inner("floating point ") {
        return format!("the number {v}");
    }
    if let Some(v) = inner("boolean ") {
        return v;
    }
    match got {
        "sequence" => "an array".into(),
        "map" => "a table".into(),
        g => g.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of every table, given a value of the wrong type (`true` is
    /// wrong for all of them), is named with its dotted path and its line.
    #[test]
    fn every_key_with_a_wrong_type_is_named() {
        let tables: &[(&str, &str, &[&str])] = &[
            (
                "",
                "",
                &[
                    "max_agents",
                    "stagger_delay_secs",
                    "agent_timeout_secs",
                    "kill_grace_secs",
                    "stall_timeout_secs",
                    "max_turns",
                    "max_retries",
                    "max_cost_usd",
                    "agent",
                    "credentials",
                    "containers",
                    "source",
                    "workspace",
                    "prompt",
                    "validate",
                    "land",
                ],
            ),
            ("[agent]", "agent", &["command", "args", "model", "env"]),
            ("[[credentials]]", "credentials", &["name", "env", "kind"]),
            (
                "[[containers]]",
                "containers",
                &[
                    "name",
                    "backend",
                    "max_worktrees",
                    "credential",
                    "env",
                    "container",
                    "project",
                    "kap_project",
                    "workspace_mount",
                    "user",
                    "image",
                    "mounts",
                    "network",
                    "host",
                    "port",
                    "identity_file",
                    "ssh_options",
                    "remote_dir",
                    "setup",
                    "count",
                    "lobby",
                ],
            ),
            ("[source]", "source", &["type", "path", "command"]),
            (
                "[workspace]",
                "workspace",
                &["repo", "branch_prefix", "land_target", "base"],
            ),
            ("[prompt]", "prompt", &["template", "plan_template"]),
            ("[validate]", "validate", &["commands", "timeout_secs"]),
            ("[land]", "land", &["redo_conflicts", "push", "after_push"]),
        ];
        let path = Path::new("/p/flocks.toml");
        for (header, table, keys) in tables {
            for key in *keys {
                let text = format!("# a comment\n{header}\n{key} = true\n");
                let err = match super::super::parse::parse(path, &text) {
                    Ok(_) => panic!("{text}: accepted"),
                    Err(e) => e.to_string(),
                };
                let dotted = if table.is_empty() {
                    key.to_string()
                } else {
                    format!("{table}.{key}")
                };
                let prefix = format!("/p/flocks.toml:3: field `{dotted}`: expected ");
                assert!(
                    err.starts_with(&prefix) && err.ends_with(", got true"),
                    "{text}: {err}"
                );
                assert!(!err.contains("invalid type"), "{err}");
            }
        }
    }

    #[test]
    fn serde_messages_read_as_words() {
        let (k, m) = in_words(
            Some("max_agents".into()),
            "invalid type: string \"four\", expected i64",
        );
        assert_eq!(k.as_deref(), Some("max_agents"));
        assert_eq!(m, "expected a whole number, got the string \"four\"");
        let (_, m) = in_words(None, "invalid type: integer `3`, expected a string");
        assert_eq!(m, "expected a string, got the whole number 3");
        let (_, m) = in_words(
            None,
            "invalid type: integer `99999999999999999999` as i128, expected i64",
        );
        assert_eq!(
            m,
            "expected a whole number, got the whole number 99999999999999999999, which is out of range"
        );
        let (_, m) = in_words(
            Some("containers".into()),
            "invalid type: map, expected a sequence",
        );
        assert_eq!(
            m,
            "expected an array of tables, got one table: write [[containers]] (two brackets) for each entry"
        );
        let (_, m) = in_words(None, "invalid type: sequence, expected struct RawAgent");
        assert_eq!(m, "expected a table, got an array");
        let (k, m) = in_words(Some("agent".into()), "missing field `name`");
        assert_eq!(k.as_deref(), Some("agent.name"));
        assert_eq!(m, "missing: this key is required");
        let (k, m) = in_words(
            Some("validate.comands".into()),
            "unknown field `comands`, expected `commands` or `timeout_secs`",
        );
        assert_eq!(k.as_deref(), Some("validate.comands"));
        assert_eq!(m, "unknown key: did you mean `commands`?");
        // The manual's word for a key: pools are `[[containers]]`.
        let (k, m) = in_words(
            Some("pools".into()),
            "unknown field `pools`, expected one of `max_agents`, `agent`, `containers`, `network`",
        );
        assert_eq!(k.as_deref(), Some("pools"));
        assert_eq!(
            m,
            "unknown key: did you mean `containers`? (flocks.toml writes each pool as [[containers]])"
        );
        // Not where `containers` is not a key.
        let (_, m) = in_words(
            Some("agent.pool".into()),
            "unknown field `pool`, expected `command` or `args`",
        );
        assert_eq!(m, "unknown key: the keys here are `command` or `args`");
        let (_, m) = in_words(
            Some("validate.whatever".into()),
            "unknown field `whatever`, expected one of `commands`, `timeout_secs`, `pool`",
        );
        assert_eq!(
            m,
            "unknown key: the keys here are `commands`, `timeout_secs` or `pool`"
        );
        // A key a small edit away is named instead of the list.
        let (_, m) = in_words(
            None,
            "unknown field `max_agent`, expected one of `max_agents`, `max_turns`, `agent`",
        );
        assert_eq!(m, "unknown key: did you mean `max_agents`?");
    }
}
