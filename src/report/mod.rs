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

/// Human-readable durations: `45s`, `3m07s`, `2h05m` (one helper for all).
pub use crate::output::units::duration as human_duration;
