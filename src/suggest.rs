//! Commands flocks suggests to people (in errors, summaries and hints) and
//! to agents (in a redo prompt), quoted for the shell: a branch named
//! `y/$(touch x)` is shown as one word, never as a command substitution.

use std::borrow::Cow;

/// `word` as one POSIX shell word: as it is when it holds only characters
/// that are never special, else in single quotes.
pub(crate) fn quote(word: &str) -> Cow<'_, str> {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b))
    {
        return Cow::Borrowed(word);
    }
    Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
}

/// A command line whose every word is quoted.
pub(crate) fn command<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_what_the_shell_would_read() {
        assert_eq!(quote("flocks/fix-login"), "flocks/fix-login");
        assert_eq!(quote("y/$(touch x)"), "'y/$(touch x)'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(
            command(&["git", "log", "abc..y/`id`"]),
            "git log 'abc..y/`id`'"
        );
        // The shell reads the quoted words back as they were.
        let line = command(&["printf", "%s|", "a b", "$(x)", "it's", "`y`"]);
        let out = std::process::Command::new("sh")
            .args(["-c", &line])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|$(x)|it's|`y`|");
    }
}
