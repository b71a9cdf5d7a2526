//! Reporters: they receive public [`Event`]s from the dispatcher and display
//! them. They never touch state.

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

/// Human-readable durations: `45s`, `3m07s`, `2h05m` (one helper for all).
pub use crate::output::units::duration as human_duration;

/// A `job` event in words: "t1: pending in Slurm: Priority (job 12)",
/// "t1: Slurm job 12 runs on node7 (waited 3m07s)", "t1: Slurm job 12
/// ended COMPLETED after 45s".
pub fn job_words(task: &str, job: &crate::state::Job, pending_secs: Option<f64>) -> String {
    match job.state.as_str() {
        "PENDING" => format!("{task}: {}", job.describe()),
        "RUNNING" => {
            let mut s = format!("{task}: Slurm job {} runs", job.id);
            if let Some(n) = &job.node {
                s.push_str(&format!(" on {n}"));
            }
            if let Some(p) = pending_secs.filter(|p| *p >= 1.0) {
                s.push_str(&format!(" (waited {})", human_duration(p)));
            }
            s
        }
        state => {
            let mut s = format!("{task}: Slurm job {} ended {state}", job.id);
            if let Some(e) = job.elapsed_secs {
                s.push_str(&format!(" after {}", human_duration(e)));
            }
            s
        }
    }
}
