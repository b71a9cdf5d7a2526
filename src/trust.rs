//! Trust anchors: what flocks reads to decide what to run on the host
//! (flocks.toml, the task source script, the prompt templates, and the places
//! git executes from: `.git/config`, hooks, attributes, worktree configs),
//! fingerprinted when a run starts container or remote agents, and compared
//! before anything from them runs again.
//!
//! Container agents can write the whole repo mount, `.flocks/` included, so
//! the record lives outside it: `$XDG_STATE_HOME/flocks/<project key>/`
//! (`~/.local/state/flocks/...`), which no container of a pool mounts. A
//! change found there is refused with what changed; `flocks trust` accepts it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{BackendConfig, CommandSpec, Config, SourceConfig};
use crate::error::{Error, Result};

/// `$XDG_STATE_HOME`, or `~/.local/state`: where flocks keeps what agents
/// must not reach (trust records, sandboxed tasks' directories).
pub(crate) fn state_home() -> Option<PathBuf> {
    match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => Some(PathBuf::from(d)),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".local/state")),
    }
}

/// Where this project's record lives.
pub(crate) fn record_path(config: &Config) -> Result<PathBuf> {
    let path = crate::state::outside_dir(&config.state_dir())
        .ok_or_else(|| {
            Error::CannotStart(
                "neither XDG_STATE_HOME nor HOME is set: flocks keeps what it trusts there, out of the containers' reach; set one".into(),
            )
        })?
        .join("trust.json");
    let repo = crate::paths::normalize(&config.workspace.repo);
    if crate::paths::normalize(&path).starts_with(&repo) {
        return Err(Error::CannotStart(format!(
            "flocks would keep what it trusts at {}, inside the repo agents can write: set XDG_STATE_HOME to a directory outside it",
            path.display()
        )));
    }
    Ok(path)
}

/// Whether agents of this config run somewhere that can write the repo
/// behind flocks' back (a container mounting it, a remote host pushing to it).
pub(crate) fn has_remote_agents(config: &Config) -> bool {
    config
        .pools
        .iter()
        .any(|p| !matches!(p.backend, BackendConfig::Local))
}

/// What is trusted: a fingerprint per file, by path as people read it, and
/// the text of the small text files (to show what changed).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Record {
    files: BTreeMap<String, String>,
    #[serde(default)]
    texts: BTreeMap<String, String>,
}

/// Texts longer than this are fingerprinted only.
const MAX_TEXT: usize = 64 * 1024;

impl Record {
    fn add(&mut self, path: String, print: String, text: Option<String>) {
        if let Some(t) = text.filter(|t| t.len() <= MAX_TEXT) {
            self.texts.insert(path.clone(), t);
        }
        self.files.insert(path, print);
    }
}

/// Everything trusted, as it is now.
pub(crate) fn current(config: &Config) -> Record {
    let mut out = Record::default();
    let mut file = |p: &Path| {
        let shown = p
            .strip_prefix(&config.dir)
            .unwrap_or(p)
            .display()
            .to_string();
        let (print, text) = fingerprint(p);
        out.add(shown, print, text);
    };
    file(&config.path);
    for t in [&config.prompt_template, &config.plan_template]
        .into_iter()
        .flatten()
    {
        file(t);
    }
    if let Some(SourceConfig::Script { command }) = &config.source {
        for p in files_named(command, &config.dir) {
            file(&p);
        }
    }
    if let Ok(repo) = crate::git::open(&config.workspace.repo) {
        for (p, (print, text)) in crate::guard::fingerprints(repo.commondir()) {
            out.add(p, print, text);
        }
    }
    out
}

/// Words of a command that name files under `dir`: the script it runs.
fn files_named(command: &CommandSpec, dir: &Path) -> Vec<PathBuf> {
    let words: Vec<String> = match command {
        CommandSpec::Shell(s) => s.split_whitespace().map(str::to_string).collect(),
        CommandSpec::Argv(v) => v.clone(),
    };
    words
        .iter()
        .map(|w| crate::paths::normalize(&dir.join(w)))
        .filter(|p| p.starts_with(dir) && p.is_file())
        .collect()
}

/// A file's fingerprint and text; never blocks on a FIFO put in its place.
fn fingerprint(p: &Path) -> (String, Option<String>) {
    use sha2::{Digest, Sha256};
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return ("not a regular file".into(), None),
        Err(_) => return ("absent".into(), None),
    }
    match std::fs::read(p) {
        Ok(bytes) => {
            let hex = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (hex, String::from_utf8(bytes).ok())
        }
        Err(_) => ("absent".into(), None),
    }
}

fn load(path: &Path) -> Result<Option<Record>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::CannotStart(format!(
                "{} is not a record flocks wrote ({e}): remove it and run `flocks trust`",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            context: format!("read {}", path.display()),
            source: e,
        }),
    }
}

/// What differs between a record and now, for people: one line per file,
/// then the lines that came and went where the texts are known.
fn changes(old: &Record, now: &Record) -> Vec<String> {
    let mut out = Vec::new();
    for (p, f) in &now.files {
        let what = match old.files.get(p) {
            None if f == "absent" => continue,
            None => "added",
            Some(o) if o == f => continue,
            Some(_) if f == "absent" => "removed",
            Some(o) if o == "absent" => "added",
            Some(_) => "changed",
        };
        let mut line = format!("{p} {what}");
        line.push_str(&lines_diff(
            old.texts.get(p).map(String::as_str),
            now.texts.get(p).map(String::as_str),
        ));
        out.push(line);
    }
    for (p, f) in &old.files {
        if !now.files.contains_key(p) && f != "absent" {
            out.push(format!("{p} removed"));
        }
    }
    out
}

/// The lines only in `new` (+) and only in `old` (-), a few of each.
fn lines_diff(old: Option<&str>, new: Option<&str>) -> String {
    const MAX: usize = 8;
    let (old, new) = (old.unwrap_or(""), new.unwrap_or(""));
    let was: std::collections::HashSet<&str> = old.lines().collect();
    let is: std::collections::HashSet<&str> = new.lines().collect();
    let mut out = String::new();
    for (sign, lines, other) in [('+', new, &was), ('-', old, &is)] {
        // Each line once, in order (a line that came twice, such as
        // `remote = origin` in two branches' sections, is one change).
        let mut seen = std::collections::HashSet::new();
        let only: Vec<&str> = lines
            .lines()
            .filter(|l| !other.contains(l) && seen.insert(*l))
            .collect();
        for l in only.iter().take(MAX) {
            let shown: String = l.chars().take(200).collect();
            out.push_str(&format!("\n      {sign} {shown}"));
        }
        if only.len() > MAX {
            out.push_str(&format!("\n      {sign} ... {} more", only.len() - MAX));
        }
    }
    out
}

/// Refuse when something trusted changed since the record was taken (no
/// record: nothing to compare, as before the first container run). Only
/// for projects whose pools let agents write what the host runs: the
/// current config's, or the trusted one's (an agent that made every pool
/// local still meets the check); with local pools only, before and after,
/// the changes are the user's own.
pub(crate) fn check(config: &Config, doing: &str) -> Result<()> {
    not_blocking(&config.workspace.repo)?;
    let path = record_path(config)?;
    let Some(old) = load(&path)? else {
        return Ok(());
    };
    if !has_remote_agents(config) && !trusted_has_remote_agents(config, &old) {
        return Ok(());
    }
    let found = changes(&old, &current(config));
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::CannotStart(format!(
        "refusing to {doing}: these changed since flocks last started container or remote agents here, and those agents can write them:\n  {}\nflocks would run what they say on this machine. Review them (git diff, git config --list --show-origin, ls .git/hooks), \
         then run `flocks trust` to accept them",
        found.join("\n  ")
    )))
}

/// Whether the config as trusted (its text in the record) had pools whose
/// agents can write the repo; when the record does not hold a text flocks
/// can read, it is taken as if it had.
fn trusted_has_remote_agents(config: &Config, old: &Record) -> bool {
    let shown = config
        .path
        .strip_prefix(&config.dir)
        .unwrap_or(&config.path)
        .display()
        .to_string();
    match old.texts.get(&shown) {
        Some(text) => crate::config::Config::parse_text(&config.path, text)
            .map(|c| has_remote_agents(&c))
            .unwrap_or(true),
        None => true,
    }
}

/// Refuse when a file git reads as it opens the repo is not a regular file
/// (a FIFO there would hang git, libgit2 and so flocks, before any guard).
fn not_blocking(repo: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let git = repo.join(".git");
    if !std::fs::symlink_metadata(&git).is_ok_and(|m| m.is_dir()) {
        return Ok(());
    }
    for f in [
        "config",
        "config.worktree",
        "HEAD",
        "packed-refs",
        "commondir",
    ] {
        let p = git.join(f);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let t = m.file_type();
        if t.is_fifo() || t.is_socket() || t.is_block_device() || t.is_char_device() || t.is_dir() {
            return Err(Error::CannotStart(format!(
                "{} is not a regular file, so git would hang or fail reading it (an agent may have put it there): look at it, remove it and restore it from a backup or a fresh clone",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Take the record now. Returns what changed since the previous one.
pub(crate) fn record(config: &Config) -> Result<Vec<String>> {
    let path = record_path(config)?;
    let old = load(&path).ok().flatten().unwrap_or_default();
    let now = current(config);
    let io = |e: std::io::Error| Error::Io {
        context: format!("write {}", path.display()),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let text = serde_json::to_string_pretty(&now).map_err(|e| Error::Usage(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(changes(&old, &now))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> Record {
        Record {
            files: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            texts: BTreeMap::new(),
        }
    }

    #[test]
    fn changes_name_what_moved() {
        let old = rec(&[
            ("flocks.toml", "a"),
            (".git/hooks/x", "f"),
            ("t.md", "absent"),
        ]);
        let mut now = rec(&[("flocks.toml", "b"), ("t.md", "c"), (".git/config", "d")]);
        let c = changes(&old, &now);
        assert_eq!(
            c,
            vec![
                ".git/config added",
                "flocks.toml changed",
                "t.md added",
                ".git/hooks/x removed"
            ]
        );
        assert!(changes(&now, &now).is_empty());
        // With the texts, the lines that came and went.
        let mut old = rec(&[("flocks.toml", "a")]);
        old.texts
            .insert("flocks.toml".into(), "a = 1\nb = 2\n".into());
        now.texts
            .insert("flocks.toml".into(), "a = 1\nc = \"evil\"\n".into());
        let c = changes(&old, &now);
        assert!(
            c.contains(&"flocks.toml changed\n      + c = \"evil\"\n      - b = 2".to_string()),
            "{c:?}"
        );
        // A line that came twice is said once.
        assert_eq!(
            lines_diff(
                Some("a\n"),
                Some("a\n[b]\nremote = origin\n[c]\nremote = origin\n")
            ),
            "\n      + [b]\n      + remote = origin\n      + [c]"
        );
    }

    #[test]
    fn source_script_words_that_are_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("gen.sh"), "").unwrap();
        let found = files_named(
            &CommandSpec::Shell("sh ./gen.sh --all /etc/passwd".into()),
            d.path(),
        );
        assert_eq!(found, vec![d.path().join("gen.sh")]);
    }
}
