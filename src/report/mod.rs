//! Reporters: they receive public [`Event`]s from the dispatcher and display
//! them. They never touch state.

pub mod event;
pub mod jsonl;
pub mod line;
pub mod progress;
pub mod summary;

pub use event::{Event, PoolInfo};

pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    /// Called about once a second while a run goes on.
    fn tick(&mut self) {}
    /// The run is over; release the terminal.
    fn finish(&mut self) {}
}

/// Human-readable durations: `45s`, `3m07s`, `2h05m`.
pub fn human_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}
