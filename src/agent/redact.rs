//! Secret values never reach a log, state.json or the terminal.

/// Values shorter than this are not treated as secrets (they would match
/// everywhere and protect nothing).
const MIN_SECRET_LEN: usize = 8;

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// (value, name), longest first so a secret that contains another is
    /// replaced whole.
    secrets: Vec<(String, String)>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut secrets: Vec<(String, String)> = secrets
            .into_iter()
            .filter(|(v, _)| v.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        secrets.dedup_by(|a, b| a.0 == b.0);
        Redactor { secrets }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    pub fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.secrets.iter().any(|(v, _)| text.contains(v.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for (value, name) in &self.secrets {
            if out.contains(value.as_str()) {
                out = out.replace(value.as_str(), &format!("[redacted:{name}]"));
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values() {
        let r = Redactor::new([
            ("sk-ant-secret-123".into(), "sub-1".into()),
            ("short".into(), "x".into()),
        ]);
        assert_eq!(
            r.redact("token=sk-ant-secret-123!"),
            "token=[redacted:sub-1]!"
        );
        assert_eq!(r.redact("short stays"), "short stays");
    }
}
