//! Secret values never reach a log, state.json or the terminal, in any of
//! the encodings an agent's output commonly carries them in.
//!
//! Text is searched in a decoded view: JSON and C escapes (`\u0073`, `\x73`,
//! `\\u0073` once more decoded), URL escapes (`%73`) and line breaks (raw or
//! escaped `\n`, which may cut a secret) are undone, and every match is
//! mapped back to the raw bytes that encode it, which are replaced by
//! `[redacted:<name>]`. Each secret is also searched as hex and as base64 (at
//! its three alignments). [`StreamRedactor`] carries the end of one line into
//! the next, so a secret split across lines or buffers is found in pieces,
//! and the end of each JSON string of a line into the strings of the next
//! (two stream-json events that each hold half).
//!
//! This is a guard against leaks, not against an agent that wants to
//! publish its own token: any encoding not listed here passes.

use std::borrow::Cow;
use std::ops::Range;

/// Values shorter than this are not treated as secrets (they would match
/// everywhere and protect nothing).
const MIN_SECRET_LEN: usize = 8;

/// A line that ends with this many characters of a secret (or more) has them
/// redacted, in case the next line holds the rest.
const MIN_FRAGMENT: usize = 4;

/// Raw bytes per decoded character at most (`\\u0073` decoded twice).
const MAX_ENCODED_CHAR: usize = 7;

/// Texts longer than this are searched in overlapping windows.
const WINDOW: usize = 1 << 20;

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    chars: Vec<char>,
    name: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Redactor {
    /// Every encoded form of every secret, longest first so a secret that
    /// contains another is replaced whole.
    patterns: Vec<Pattern>,
    /// The longest pattern, in characters.
    longest: usize,
}

/// The position of a character carried from an earlier line.
const CARRIED: usize = usize::MAX;

/// One decoded character and the raw bytes it came from.
#[derive(Debug, Clone, Copy)]
struct Item {
    ch: char,
    start: usize,
    end: usize,
}

impl Redactor {
    pub(crate) fn new(secrets: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut patterns = Vec::new();
        for (value, name) in secrets {
            if value.len() < MIN_SECRET_LEN {
                continue;
            }
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            for form in encodings(value.as_bytes()) {
                patterns.push(Pattern {
                    chars: form.chars().collect(),
                    text: form,
                    name: name.clone(),
                });
            }
            patterns.push(Pattern {
                chars: value.chars().collect(),
                text: value,
                name,
            });
        }
        patterns.sort_by_key(|p| std::cmp::Reverse(p.chars.len()));
        patterns.dedup_by(|a, b| a.chars == b.chars);
        let longest = patterns.first().map_or(0, |p| p.chars.len());
        Redactor { patterns, longest }
    }

    /// This redactor and `more` secrets (an attempt's proxy tokens).
    pub(crate) fn with(&self, more: impl IntoIterator<Item = (String, String)>) -> Redactor {
        let extra = Redactor::new(more);
        let mut patterns = self.patterns.clone();
        patterns.extend(extra.patterns);
        patterns.sort_by_key(|p| std::cmp::Reverse(p.chars.len()));
        patterns.dedup_by(|a, b| a.chars == b.chars);
        let longest = patterns.first().map_or(0, |p| p.chars.len());
        Redactor { patterns, longest }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret (in any form this module knows) replaced.
    pub(crate) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let ranges = self.find(text);
        replace(text, ranges)
    }

    /// Raw byte ranges of `text` that hold a secret, with the secret's name.
    fn find(&self, text: &str) -> Vec<(Range<usize>, String)> {
        if self.is_empty() || text.is_empty() {
            return Vec::new();
        }
        let overlap = self.longest * MAX_ENCODED_CHAR + 16;
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let end = floor_boundary(text, (start + WINDOW + overlap).min(text.len()));
            let window = &text[start..end];
            if window.contains(['\\', '%', '\n', '\r']) {
                let view = decode(&decode(&items(window, start)));
                for (r, name) in self.matches(&view, 0) {
                    out.push((view[r.start].start..view[r.end - 1].end, name));
                }
            } else {
                // Nothing to decode: the text is its own view.
                for p in &self.patterns {
                    for (at, _) in window.match_indices(p.text.as_str()) {
                        out.push((start + at..start + at + p.text.len(), p.name.clone()));
                    }
                }
            }
            if end >= text.len() {
                break;
            }
            start = floor_boundary(text, end - overlap);
        }
        out
    }

    /// Ranges of `view` (item indices) that hold a whole pattern and end after
    /// item `after`.
    fn matches(&self, view: &[Item], after: usize) -> Vec<(Range<usize>, String)> {
        let mut out = Vec::new();
        let first = after.saturating_sub(self.longest);
        for i in first..view.len() {
            let c = view[i].ch;
            for p in &self.patterns {
                let n = p.chars.len();
                if p.chars[0] == c
                    && i + n <= view.len()
                    && i + n > after
                    && view[i..i + n].iter().zip(&p.chars).all(|(a, b)| a.ch == *b)
                {
                    out.push((i..i + n, p.name.clone()));
                }
            }
        }
        out
    }
}

/// Redaction of one stream (an agent's stdout or stderr), line by line: a
/// secret cut by a line break or a buffer boundary is found across them.
#[derive(Debug, Clone)]
pub(crate) struct StreamRedactor {
    redactor: std::sync::Arc<Redactor>,
    /// The decoded end of the stream so far (at most the longest pattern).
    tail: Vec<char>,
    /// Secrets whose beginning ended a JSON string of the previous line:
    /// (pattern index, characters seen). A string of this line that starts
    /// with the rest is redacted.
    pending: Vec<(usize, usize)>,
}

impl StreamRedactor {
    pub(crate) fn new(redactor: std::sync::Arc<Redactor>) -> Self {
        StreamRedactor {
            redactor,
            tail: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// The next line (without its line break), redacted.
    pub(crate) fn line<'a>(&mut self, text: &'a str) -> Cow<'a, str> {
        let r = &*self.redactor;
        if r.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut ranges = r.find(text);
        let edge = r.longest * MAX_ENCODED_CHAR + 16;
        // The rest of a secret that the previous line began.
        let head_end = floor_boundary(text, edge.min(text.len()));
        let head = decode(&decode(&items(&text[..head_end], 0)));
        let mut joined = self.carried();
        let carried = joined.len();
        joined.extend(head.iter().copied());
        for (m, name) in r.matches(&joined, carried) {
            if m.start < carried && m.end > carried && joined[m.end - 1].end != CARRIED {
                ranges.push((0..joined[m.end - 1].end, name));
            }
        }
        // The beginning of a secret that the next line may finish (it may
        // have begun on earlier lines, when this one is short).
        let tail_start = floor_boundary(text, text.len().saturating_sub(edge));
        let mut end_view = if tail_start == 0 {
            self.carried()
        } else {
            Vec::new()
        };
        end_view.extend(decode(&decode(&items(&text[tail_start..], tail_start))));
        for p in &r.patterns {
            let longest = (p.chars.len() - 1).min(end_view.len());
            for k in (MIN_FRAGMENT..=longest).rev() {
                let end = &end_view[end_view.len() - k..];
                if end.iter().zip(&p.chars).all(|(a, b)| a.ch == *b) {
                    if let Some(first) = end.iter().find(|i| i.start != CARRIED) {
                        ranges.push((first.start..text.len(), p.name.clone()));
                    }
                    break;
                }
            }
        }
        let keep = r.longest.saturating_sub(1);
        self.json_strings(text, &mut ranges);
        self.tail = end_view[end_view.len().saturating_sub(keep)..]
            .iter()
            .map(|i| i.ch)
            .collect();
        replace(text, ranges)
    }

    /// A secret split over two JSON documents (two events of a stream-json
    /// agent): each string of this line that starts with the rest of a
    /// secret whose beginning ended a string of the previous line; and the
    /// beginnings this line's strings end with, for the next line.
    fn json_strings(&mut self, text: &str, ranges: &mut Vec<(Range<usize>, String)>) {
        let r = &*self.redactor;
        let pending = std::mem::take(&mut self.pending);
        if !text.trim_start().starts_with(['{', '[']) {
            return;
        }
        for span in string_spans(text) {
            let view = decode(&decode(&items(&text[span.clone()], span.start)));
            for &(i, k) in &pending {
                let rest = &r.patterns[i].chars[k..];
                if view.len() >= rest.len()
                    && view.iter().zip(rest).all(|(a, b)| a.ch == *b)
                    && let Some(last) = view.get(rest.len().wrapping_sub(1))
                {
                    ranges.push((span.start..last.end, r.patterns[i].name.clone()));
                }
            }
            for (i, p) in r.patterns.iter().enumerate() {
                let longest = (p.chars.len() - 1).min(view.len());
                for k in (1..=longest).rev() {
                    let end = &view[view.len() - k..];
                    if end.iter().zip(&p.chars).all(|(a, b)| a.ch == *b) {
                        if k >= MIN_FRAGMENT {
                            ranges.push((end[0].start..span.end, p.name.clone()));
                        }
                        self.pending.push((i, k));
                        break;
                    }
                }
            }
        }
    }

    /// The end of the earlier lines, as items that are not in this line.
    fn carried(&self) -> Vec<Item> {
        self.tail
            .iter()
            .map(|&ch| Item {
                ch,
                start: CARRIED,
                end: CARRIED,
            })
            .collect()
    }

    /// Where to cut `buf`, a line longer than the line buffer, so that no
    /// secret straddles the cut and the part kept back can still hold one
    /// whole: a byte offset, at most `limit` (when that leaves something).
    pub(crate) fn cut_point(&self, buf: &[u8], limit: usize) -> usize {
        let r = &*self.redactor;
        let keep = r.longest * MAX_ENCODED_CHAR + 16;
        let mut cut = buf.len().saturating_sub(keep).min(limit);
        // Not inside a UTF-8 sequence, nor inside an escape.
        while cut > 0 && cut < buf.len() && (buf[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
        // Only a secret near the cut can straddle it.
        let mut from = cut.saturating_sub(keep);
        while from > 0 && (buf[from] & 0xC0) == 0x80 {
            from -= 1;
        }
        let to = (cut + keep).min(buf.len());
        let near = match std::str::from_utf8(&buf[from..to]) {
            Ok(s) => s,
            // A partial character at the end (or bytes that are not UTF-8):
            // the valid part.
            Err(e) => std::str::from_utf8(&buf[from..from + e.valid_up_to()]).unwrap_or(""),
        };
        {
            for (range, _) in r.find(near) {
                if from + range.start < cut && from + range.end > cut {
                    cut = from + range.start;
                }
            }
        }
        if let Some(b) = buf[cut.saturating_sub(MAX_ENCODED_CHAR)..cut]
            .iter()
            .rposition(|b| *b == b'\\' || *b == b'%')
        {
            cut = cut.saturating_sub(MAX_ENCODED_CHAR) + b;
        }
        if cut == 0 { buf.len() } else { cut }
    }
}

/// The byte ranges of the contents of the JSON string literals in `text`
/// (between the quotes, escapes included).
fn string_spans(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut j = start;
        while j < bytes.len() && bytes[j] != b'"' {
            j += if bytes[j] == b'\\' { 2 } else { 1 };
        }
        let end = j.min(bytes.len());
        if end > start {
            out.push(start..end);
        }
        i = end + 1;
    }
    out
}

/// Replace `ranges` of `text` (merged where they overlap) by their names.
fn replace(text: &str, mut ranges: Vec<(Range<usize>, String)>) -> Cow<'_, str> {
    if ranges.is_empty() {
        return Cow::Borrowed(text);
    }
    ranges.sort_by_key(|(r, _)| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (r, name) in ranges {
        if r.end <= at {
            continue;
        }
        let start = r.start.max(at);
        out.push_str(&text[at..start]);
        if start == r.start {
            out.push_str(&format!("[redacted:{name}]"));
        }
        at = r.end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// The largest char boundary of `text` at or below `i`.
fn floor_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn items(text: &str, offset: usize) -> Vec<Item> {
    text.char_indices()
        .map(|(i, ch)| Item {
            ch,
            start: offset + i,
            end: offset + i + ch.len_utf8(),
        })
        .collect()
}

/// One level of decoding: escapes undone, line breaks dropped.
fn decode(input: &[Item]) -> Vec<Item> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let hex = |from: usize, n: usize| -> Option<u32> {
        let s: String = input.get(from..from + n)?.iter().map(|it| it.ch).collect();
        if s.chars().all(|c| c.is_ascii_hexdigit()) {
            u32::from_str_radix(&s, 16).ok()
        } else {
            None
        }
    };
    while i < input.len() {
        let it = input[i];
        let span = |n: usize, ch: char| Item {
            ch,
            start: it.start,
            end: input[i + n - 1].end,
        };
        match it.ch {
            '\n' | '\r' => {
                i += 1;
                continue;
            }
            '\\' if i + 1 < input.len() => {
                let next = input[i + 1].ch;
                match next {
                    'n' | 'r' => {
                        i += 2;
                        continue;
                    }
                    'u' => {
                        if let Some(cp) = hex(i + 2, 4) {
                            let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                            out.push(span(6, ch));
                            i += 6;
                            continue;
                        }
                    }
                    'x' => {
                        if let Some(cp) = hex(i + 2, 2) {
                            out.push(span(4, char::from_u32(cp).unwrap_or('\u{FFFD}')));
                            i += 4;
                            continue;
                        }
                    }
                    't' => {
                        out.push(span(2, '\t'));
                        i += 2;
                        continue;
                    }
                    '\\' | '"' | '/' | '\'' => {
                        out.push(span(2, next));
                        i += 2;
                        continue;
                    }
                    _ => {}
                }
            }
            '%' => {
                if let Some(cp) = hex(i + 1, 2) {
                    out.push(span(3, char::from_u32(cp).unwrap_or('\u{FFFD}')));
                    i += 3;
                    continue;
                }
            }
            _ => {}
        }
        out.push(it);
        i += 1;
    }
    out
}

/// The secret as hex (both cases) and as base64 (standard and URL-safe, at
/// each of the three alignments it can have in a longer encoded text: only
/// the characters that depend on the secret alone).
fn encodings(value: &[u8]) -> Vec<String> {
    let lower: String = value.iter().map(|b| format!("{b:02x}")).collect();
    let upper = lower.to_uppercase();
    let mut out = vec![lower, upper];
    for align in 0..3 {
        let mut bytes = vec![0u8; align];
        bytes.extend_from_slice(value);
        let full = bytes.len() / 3 * 3;
        let encoded = base64(&bytes[..full]);
        let skip = [0, 2, 3][align];
        let core = &encoded[skip.min(encoded.len())..];
        if core.len() >= MIN_SECRET_LEN {
            out.push(core.replace('+', "-").replace('/', "_"));
            out.push(core.to_string());
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len() / 3 * 4 + 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * k)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SECRET: &str = "sk-ant-secret-123";

    fn redactor() -> Redactor {
        Redactor::new([
            (SECRET.into(), "sub-1".into()),
            ("short".into(), "x".into()),
        ])
    }

    #[test]
    fn redacts_values() {
        let r = redactor();
        assert_eq!(
            r.redact("token=sk-ant-secret-123!"),
            "token=[redacted:sub-1]!"
        );
        assert_eq!(r.redact("short stays"), "short stays");
    }

    #[test]
    fn redacts_encoded_values() {
        let r = redactor();
        let escaped: String = SECRET
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let line = format!("{{\"text\":\"a {escaped} b\"}}");
        assert_eq!(r.redact(&line), "{\"text\":\"a [redacted:sub-1] b\"}");
        let twice = escaped.replace('\\', "\\\\");
        assert_eq!(r.redact(&format!("<{twice}>")), "<[redacted:sub-1]>");
        let hex: String = SECRET.bytes().map(|b| format!("\\x{b:02x}")).collect();
        assert_eq!(r.redact(&hex), "[redacted:sub-1]");
        let url: String = SECRET.bytes().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(r.redact(&url), "[redacted:sub-1]");
        let plain_hex: String = SECRET.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!r.redact(&plain_hex).contains(&plain_hex[2..20]));
        for prefix in ["", "a", "ab"] {
            let b64 = base64(format!("{prefix}{SECRET}").as_bytes());
            let out = r.redact(&b64);
            assert!(out.contains("[redacted:sub-1]"), "{prefix:?}: {out}");
        }
        // A line break inside the secret, raw or escaped.
        assert_eq!(r.redact("sk-ant-se\\ncret-123"), "[redacted:sub-1]");
        assert_eq!(r.redact("x sk-ant-se\r\ncret-123"), "x [redacted:sub-1]");
    }

    #[test]
    fn redacts_across_lines() {
        let mut s = StreamRedactor::new(Arc::new(redactor()));
        assert_eq!(s.line("echo sk-ant-se"), "echo [redacted:sub-1]");
        assert_eq!(s.line("cret-123 done"), "[redacted:sub-1] done");
        assert_eq!(s.line("nothing here"), "nothing here");
        // Three characters before the break pass; the rest does not.
        assert_eq!(s.line("x sk-"), "x sk-");
        assert_eq!(s.line("ant-secret-123"), "[redacted:sub-1]");
        // In three pieces, with a blank line between two of them.
        assert_eq!(s.line("sk-an"), "[redacted:sub-1]");
        assert_eq!(s.line(""), "");
        assert_eq!(s.line("t-se"), "[redacted:sub-1]");
        assert_eq!(s.line("cret-123 ok"), "[redacted:sub-1] ok");
        assert_eq!(s.line("ok"), "ok");
    }

    #[test]
    fn redacts_across_json_documents() {
        let mut s = StreamRedactor::new(Arc::new(redactor()));
        assert_eq!(
            s.line(r#"{"type":"assistant","text":"here: sk-an"}"#),
            r#"{"type":"assistant","text":"here: [redacted:sub-1]"}"#
        );
        assert_eq!(
            s.line(r#"{"type":"assistant","text":"t-secret-123 and more"}"#),
            r#"{"type":"assistant","text":"[redacted:sub-1] and more"}"#
        );
        // A short beginning passes; the rest does not.
        assert_eq!(s.line(r#"{"text":"sk-","n":1}"#), r#"{"text":"sk-","n":1}"#);
        assert_eq!(
            s.line(r#"{"type":"x","text":"ant-secret-123"}"#),
            r#"{"type":"x","text":"[redacted:sub-1]"}"#
        );
        assert_eq!(
            s.line(r#"{"text":"ant-secret-123"}"#),
            r#"{"text":"ant-secret-123"}"#
        );
    }

    #[test]
    fn cuts_outside_secrets() {
        let s = StreamRedactor::new(Arc::new(redactor()));
        let mut buf = vec![b'a'; 4000];
        let at = 4000 - 17 * MAX_ENCODED_CHAR - 16 - 5;
        buf[at..at + SECRET.len()].copy_from_slice(SECRET.as_bytes());
        let cut = s.cut_point(&buf, usize::MAX);
        assert!(cut <= at, "cut {cut} inside the secret at {at}");
        assert!(cut > 0);
    }
}
