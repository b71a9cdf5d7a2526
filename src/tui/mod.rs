//! `flocks status --watch` / `flocks top`: a full-screen live dashboard
//! (ratatui on crossterm). It follows `.flocks/state.json` with its journal
//! and `.flocks/events.jsonl` from any terminal and never writes state.
//!
//! ```text
//!  state.json+journal ──StateReader──view::build──┐
//!  events.jsonl ──EventFeed─────────────────────────┼─▶ App (app.rs) ──view::draw──▶ terminal
//!  keys ──input::action─────────────────────────────┘
//! ```
//!
//! Each refresh reads only what changed: the journal lines appended since
//! the last one, and state.json again only after a compaction replaced it.
//!
//! The terminal is restored on every way out: return, error, and panic
//! (a panic hook restores it before the default hook prints the message).

mod app;
pub(crate) mod feed;
mod input;
#[cfg(test)]
mod tests;
mod view;

use std::io::{IsTerminal, Stdout};
use std::time::{Duration, Instant};

use chrono::Utc;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event as TermEvent};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};

use app::App;
use input::action;
use view::draw;

use crate::error::{Error, Exit, Result};
use crate::project::Project;

/// How often state.json and the events are read again.
const REFRESH: Duration = Duration::from_secs(1);

/// Run the dashboard until the user quits.
pub(crate) fn run(project: &Project) -> Result<Exit> {
    project.repo()?;
    if !std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "the live dashboard needs a terminal: use `flocks status --json`, or follow .flocks/events.jsonl".into(),
        ));
    }
    let mut source = app::Source::new(project);
    let stall = project.config.stall_timeout.map(|d| d.as_secs_f64());
    let status = source
        .status()
        .ok_or_else(|| Error::Other("cannot read the run state".into()))?;
    let mut app = App::new(status, stall, Utc::now());
    source.refresh(&mut app, Utc::now());

    let mut terminal = enter().map_err(io_err)?;
    let result = event_loop(&mut terminal, &mut app, &mut source);
    restore();
    result.map_err(io_err)?;
    Ok(Exit::Ok)
}

fn io_err(e: std::io::Error) -> Error {
    Error::Io {
        context: "drive the terminal".into(),
        source: e,
    }
}

/// Take the colours out of a drawn frame, keeping bold, reverse and the rest.
pub(crate) fn uncolour(buf: &mut ratatui::buffer::Buffer) {
    for cell in buf.content.iter_mut() {
        cell.set_fg(ratatui::style::Color::Reset)
            .set_bg(ratatui::style::Color::Reset);
    }
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    source: &mut app::Source,
) -> std::io::Result<()> {
    let mut next_refresh = Instant::now() + REFRESH;
    // `--color never` and NO_COLOR hold here too: bold and reverse stay.
    let colour = crate::output::colour();
    loop {
        terminal.draw(|f| {
            draw(f, app, Utc::now());
            if !colour {
                uncolour(f.buffer_mut());
            }
        })?;
        // Debug builds only: lets the tests check the terminal after a panic.
        #[cfg(debug_assertions)]
        if std::env::var_os("FLOCKS_TUI_TEST_PANIC").is_some() {
            panic!("FLOCKS_TUI_TEST_PANIC is set: panicking on purpose");
        }
        if app.quit {
            return Ok(());
        }
        let timeout = next_refresh.saturating_duration_since(Instant::now());
        if event::poll(timeout)?
            && let TermEvent::Key(key) = event::read()?
        {
            app.handle(action(key));
        }
        if Instant::now() >= next_refresh {
            source.refresh(app, Utc::now());
            next_refresh = Instant::now() + REFRESH;
        }
    }
}

/// Raw mode and the alternate screen, with a panic hook that undoes both.
fn enter() -> std::io::Result<Terminal<CrosstermBackend<Stdout>>> {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        previous(info);
    }));
    enable_raw_mode()?;
    if let Err(e) = execute!(std::io::stdout(), EnterAlternateScreen) {
        restore();
        return Err(e);
    }
    let mut terminal = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
    terminal.hide_cursor()?;
    terminal.clear()?;
    Ok(terminal)
}

/// Leave the alternate screen, show the cursor, end raw mode. Safe to call
/// more than once.
fn restore() {
    let _ = disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
}
