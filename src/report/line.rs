//! Plain line-by-line progress, for logs and terminals alike.

use std::io::Write;

use super::describe::{Clock, describe};
use super::{Event, Reporter};

pub(crate) struct LineReporter<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> LineReporter<W> {
    pub(crate) fn new(out: W) -> Self {
        LineReporter { out }
    }
}

impl<W: Write + Send> Reporter for LineReporter<W> {
    fn event(&mut self, event: &Event) {
        if let Some(line) = render(event) {
            let _ = writeln!(self.out, "{}", crate::output::paint_text(&line));
            let _ = self.out.flush();
        }
    }
}

/// One line for an event, or nothing for events too frequent to print or
/// said otherwise: usage changes with every answer (`status` shows it); the
/// dispatcher says a wait and the run's end in a notice, with the time; the
/// line of the event a `needs_attention` sums up is already there.
pub(crate) fn render(event: &Event) -> Option<String> {
    match event {
        Event::Queued { .. }
        | Event::Activity { .. }
        | Event::Usage { .. }
        | Event::Waiting { .. }
        | Event::RunFinished { .. }
        | Event::NeedsAttention { .. } => None,
        _ => Some(describe(event, Clock::Local)),
    }
}
