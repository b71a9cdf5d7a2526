//! Reporters: they receive public [`Event`]s from the dispatcher and display
//! them. They never touch state.

pub(crate) mod describe;
pub mod event;
pub mod jsonl;
pub mod line;
pub mod progress;
pub mod summary;

pub use event::{AttentionCause, Event, PoolInfo};

pub trait Reporter: Send {
    fn event(&mut self, event: &Event);
    /// Called about once a second while a run goes on.
    fn tick(&mut self) {}
    /// What this reporter has to tell people (a notifier that fails): the
    /// dispatcher asks every tick, and once more after `drain`, and emits
    /// each as a `notice`.
    fn notices(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// The run's last event was sent: deliver what is still pending, within
    /// a bounded time. Called before `finish`.
    fn drain(&mut self) {}
    /// The run is over; release the terminal.
    fn finish(&mut self) {}
}
