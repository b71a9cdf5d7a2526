//! Reporters: they receive public [`Event`]s from the dispatcher and display
//! them. They never touch state.

pub(crate) mod describe;
pub(crate) mod event;
pub(crate) mod jsonl;
pub(crate) mod line;
pub(crate) mod progress;
pub(crate) mod summary;

pub(crate) use event::{AttentionCause, Event, PoolInfo};

pub(crate) trait Reporter: Send {
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
