//! Keys to dashboard actions.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Quit,
    Up,
    Down,
    PageUp,
    PageDown,
    /// Enter: show the selected task's log tail (again: back to the tasks).
    Open,
    /// `l`: follow the selected task's log (in the log pane: toggle).
    Follow,
    /// Esc: back to the tasks.
    Back,
    None,
}

pub(super) fn action(key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Up | KeyCode::Char('k') => Action::Up,
        KeyCode::Down | KeyCode::Char('j') => Action::Down,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Enter => Action::Open,
        KeyCode::Char('l') => Action::Follow,
        KeyCode::Esc | KeyCode::Backspace => Action::Back,
        _ => Action::None,
    }
}
