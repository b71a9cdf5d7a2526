//! Where an attempt's output goes: split into lines, secrets redacted, appended
//! to the attempt's log file as it comes, and read as stream-json.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use crate::agent::redact::StreamRedactor;
use crate::agent::{Redactor, StreamEvent, StreamParser};

pub(crate) struct OutputSink {
    log: BufWriter<File>,
    redactor: Arc<Redactor>,
    /// Per stream, so that a secret cut across two lines is still found.
    stdout_redactor: StreamRedactor,
    stderr_redactor: StreamRedactor,
    /// A setup command's output: logged, never read as stream-json.
    command_redactor: StreamRedactor,
    command_partial: Vec<u8>,
    command_tail: Vec<String>,
    pub parser: StreamParser,
    stdout_partial: Vec<u8>,
    stderr_partial: Vec<u8>,
    pub stderr_tail: Vec<String>,
    pub saw_stdout: bool,
}

const STDERR_TAIL: usize = 20;
/// A line longer than this is written out in pieces (and not parsed).
const MAX_LINE: usize = 32 << 20;

impl OutputSink {
    /// Open the attempt's log (`.flocks/logs/<task>/<n>.log`) for appending,
    /// without following a link an agent put there: what flocks replaced is
    /// the log's first note.
    pub(crate) fn create(path: &Path, redactor: Arc<Redactor>) -> std::io::Result<OutputSink> {
        let opened = crate::fsat::append(path)?;
        let mut sink = OutputSink {
            log: BufWriter::new(opened.file),
            stdout_redactor: StreamRedactor::new(redactor.clone()),
            stderr_redactor: StreamRedactor::new(redactor.clone()),
            command_redactor: StreamRedactor::new(redactor.clone()),
            command_partial: Vec::new(),
            command_tail: Vec::new(),
            redactor,
            parser: StreamParser::new(),
            stdout_partial: Vec::new(),
            stderr_partial: Vec::new(),
            stderr_tail: Vec::new(),
            saw_stdout: false,
        };
        for n in &opened.notes {
            sink.note(n);
        }
        Ok(sink)
    }

    /// Redact `more` secrets too from now on (an attempt's proxy tokens,
    /// known once it is admitted, before its setup and agent write anything).
    pub(crate) fn also_redact(&mut self, more: Vec<(String, String)>) {
        if more.is_empty() {
            return;
        }
        let redactor = Arc::new(self.redactor.with(more));
        self.stdout_redactor = StreamRedactor::new(redactor.clone());
        self.stderr_redactor = StreamRedactor::new(redactor.clone());
        self.command_redactor = StreamRedactor::new(redactor.clone());
        self.redactor = redactor;
    }

    /// Take stdout bytes; returns the stream events of the complete lines.
    pub(crate) fn stdout(&mut self, bytes: &[u8]) -> Vec<StreamEvent> {
        self.saw_stdout = true;
        let seen = self.stdout_partial.len();
        self.stdout_partial.extend_from_slice(bytes);
        let lines = take_lines(&mut self.stdout_partial, seen, &self.stdout_redactor);
        let mut events = Vec::new();
        for line in lines {
            events.extend(self.line(&line, true));
        }
        self.flush();
        events
    }

    pub(crate) fn stderr(&mut self, bytes: &[u8]) {
        let seen = self.stderr_partial.len();
        self.stderr_partial.extend_from_slice(bytes);
        for line in take_lines(&mut self.stderr_partial, seen, &self.stderr_redactor) {
            self.line(&line, false);
        }
        self.flush();
    }

    /// The streams ended: write what is left and read a lone JSON document.
    pub(crate) fn finish(&mut self) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        let out = std::mem::take(&mut self.stdout_partial);
        if !out.is_empty() {
            events.extend(self.line(&out, true));
        }
        let err = std::mem::take(&mut self.stderr_partial);
        if !err.is_empty() {
            self.line(&err, false);
        }
        events.extend(self.parser.finish());
        self.flush();
        events
    }

    /// Output of a `[workspace] setup` command (both its streams).
    pub(crate) fn command_output(&mut self, bytes: &[u8]) {
        let seen = self.command_partial.len();
        self.command_partial.extend_from_slice(bytes);
        for line in take_lines(&mut self.command_partial, seen, &self.command_redactor) {
            self.command_line(&line);
        }
        self.flush();
    }

    /// The setup command ended: its last lines of output (redacted).
    pub(crate) fn command_done(&mut self) -> Vec<String> {
        let rest = std::mem::take(&mut self.command_partial);
        if !rest.is_empty() {
            self.command_line(&rest);
        }
        self.flush();
        std::mem::take(&mut self.command_tail)
    }

    fn command_line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let redacted = self
            .command_redactor
            .line(text.trim_end_matches(['\n', '\r']))
            .into_owned();
        let _ = self.log.write_all(redacted.as_bytes());
        let _ = self.log.write_all(b"\n");
        // The supervisor's, the helper's and flocks' word on the command
        // (containment, started, exit status, what it left running) is
        // logged, but is not its output.
        if redacted.starts_with(crate::supervisor::CONTAINMENT_NOTE)
            || redacted.starts_with("flocks-helper: ")
            || redacted.starts_with("flocks: ")
        {
            return;
        }
        if self.command_tail.len() == STDERR_TAIL {
            self.command_tail.remove(0);
        }
        self.command_tail.push(redacted);
    }

    /// A line from flocks itself (not the agent), marked as such.
    pub(crate) fn note(&mut self, text: &str) {
        let _ = writeln!(self.log, "[flocks] {}", self.redactor.redact(text));
        self.flush();
    }

    fn line(&mut self, raw: &[u8], stdout: bool) -> Vec<StreamEvent> {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim_end_matches(['\n', '\r']);
        let redacted = if stdout {
            self.stdout_redactor.line(text)
        } else {
            self.stderr_redactor.line(text)
        };
        let _ = self.log.write_all(redacted.as_bytes());
        let _ = self.log.write_all(b"\n");
        if stdout {
            self.parser.feed_line(&redacted)
        } else if redacted.starts_with(crate::supervisor::CONTAINMENT_NOTE) {
            // The supervisor's word on itself, not the agent's: it must not
            // become the reason an agent failed.
            Vec::new()
        } else {
            if self.stderr_tail.len() == STDERR_TAIL {
                self.stderr_tail.remove(0);
            }
            self.stderr_tail.push(redacted.into_owned());
            Vec::new()
        }
    }

    fn flush(&mut self) {
        let _ = self.log.flush();
    }
}

/// Complete lines out of `buf`; a line longer than `MAX_LINE` is cut where
/// no secret straddles the cut. The first `seen` bytes hold no line break.
fn take_lines(buf: &mut Vec<u8>, seen: usize, redactor: &StreamRedactor) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut from = seen;
    while let Some(pos) = buf[from..].iter().position(|b| *b == b'\n') {
        lines.push(buf[start..from + pos].to_vec());
        start = from + pos + 1;
        from = start;
    }
    buf.drain(..start);
    if buf.len() > MAX_LINE {
        let cut = redactor.cut_point(buf, MAX_LINE);
        lines.push(buf.drain(..cut).collect());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_redacts_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs/t/1.log");
        let r = Arc::new(Redactor::new([(
            "supersecretvalue".to_string(),
            "c".to_string(),
        )]));
        let mut s = OutputSink::create(&log, r).unwrap();
        let ev = s.stdout(
            b"{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"x\"}\n{\"type\":\"assi",
        );
        assert_eq!(ev.len(), 1);
        s.stdout(b"stant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"supersecretvalue\"}]}}\n");
        s.stderr(b"oops supersecretvalue\n");
        s.finish();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("supersecretvalue"));
        assert_eq!(text.lines().count(), 3);
        assert_eq!(s.parser.session_id.as_deref(), Some("x"));
    }

    #[test]
    fn the_supervisors_note_is_logged_but_not_the_agents_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        let mut s = OutputSink::create(&log, Arc::new(Redactor::default())).unwrap();
        s.stderr(b"flocks supervisor: containment: cgroup v2 /sys/fs/cgroup/x\n");
        s.finish();
        assert!(s.stderr_tail.is_empty(), "{:?}", s.stderr_tail);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("containment: cgroup v2"), "{text}");
    }

    #[test]
    fn setup_output_is_logged_redacted_and_never_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("1.log");
        let r = Arc::new(Redactor::new([(
            "supersecretvalue".to_string(),
            "c".to_string(),
        )]));
        let mut s = OutputSink::create(&log, r).unwrap();
        s.command_output(b"flocks supervisor: containment: cgroup v2 /x\n");
        s.command_output(b"{\"type\":\"result\",\"subtype\":\"success\"}\nfetching supersecret");
        s.command_output(b"value\nflocks-helper: exit rc=1\nlast words");
        let tail = s.command_done();
        assert_eq!(
            tail,
            [
                "{\"type\":\"result\",\"subtype\":\"success\"}",
                "fetching [redacted:c]",
                "last words"
            ]
        );
        assert!(s.parser.result.is_none(), "setup output is not the agent's");
        assert!(
            s.command_done().is_empty(),
            "the next command starts afresh"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.contains("supersecretvalue"), "{text}");
        assert!(text.contains("flocks-helper: exit rc=1"), "{text}");
    }
}
