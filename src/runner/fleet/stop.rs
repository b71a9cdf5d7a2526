//! Ctrl-C and `flocks stop`: drain, stop gracefully, kill.

use super::{Effect, Fleet};
use crate::error::Exit;
use crate::output::units::{count, noun_for};
use crate::report::Event;
use crate::runner::StopLevel;

/// How far the run is from its end: draining (no new starts), the agents'
/// stop level, the signals seen, and why dispatch stopped on its own.
pub(super) struct Stopping {
    pub(super) draining: bool,
    pub(super) stop_level: StopLevel,
    pub(super) interrupts: u32,
    /// Ctrl-C was pressed (the run exits 130); `flocks stop` alone asks for
    /// an orderly end (exit 0 unless a task failed).
    pub(super) ctrl_c: bool,
    /// Dispatch stopped (breaker, budget, `--no-wait`, no usable pool):
    /// why, and the run's exit.
    pub(super) stopped_because: Option<(String, Exit)>,
}

impl Default for Stopping {
    fn default() -> Stopping {
        Stopping {
            draining: false,
            stop_level: StopLevel::Run,
            interrupts: 0,
            ctrl_c: false,
            stopped_because: None,
        }
    }
}

impl Fleet {
    /// Ctrl-C: the first drains, the second stops agents, the third kills them.
    pub(super) fn on_interrupt(&mut self) -> Vec<Effect> {
        self.stopping.interrupts += 1;
        self.stopping.ctrl_c = true;
        match self.stopping.interrupts {
            1 => {
                self.stopping.draining = true;
                let n = self.running.len();
                let message = if n == 0 {
                    "interrupted: stopping".to_string()
                } else {
                    format!(
                        "interrupted: no new agents will start; {} may finish. Ctrl-C again to stop {}, a third time to kill {}",
                        count(n, "running agent"),
                        noun_for(n, "it", "them"),
                        noun_for(n, "it", "them"),
                    )
                };
                vec![Effect::Emit(Event::Notice { message })]
            }
            2 => self.set_stop(StopLevel::Graceful),
            _ => self.set_stop(StopLevel::Kill),
        }
    }

    /// SIGTERM (`flocks stop`): stop agents gracefully and save.
    pub(super) fn on_stop_requested(&mut self) -> Vec<Effect> {
        self.stopping.draining = true;
        self.stopping.interrupts = self.stopping.interrupts.max(2);
        let message = match self.running.len() {
            0 => "stopping: asked by `flocks stop`".to_string(),
            n => format!(
                "stopping: asked by `flocks stop`; {} {} SIGTERM, then SIGKILL after {}s",
                count(n, "running agent"),
                noun_for(n, "gets", "get"),
                self.config.kill_grace.as_secs_f64()
            ),
        };
        self.raise_stop(StopLevel::Graceful, message)
    }

    fn set_stop(&mut self, level: StopLevel) -> Vec<Effect> {
        let n = self.running.len();
        let message = match level {
            StopLevel::Graceful => format!(
                "stopping {}: SIGTERM, then SIGKILL after {}s. Ctrl-C again to kill {} now",
                count(n, "agent"),
                self.config.kill_grace.as_secs_f64(),
                noun_for(n, "it", "them")
            ),
            StopLevel::Kill => format!("killing {}", count(n, "agent")),
            StopLevel::Run => String::new(),
        };
        self.raise_stop(level, message)
    }

    /// Raise the stop level to `level` (never lower it), saying `message`.
    fn raise_stop(&mut self, level: StopLevel, message: String) -> Vec<Effect> {
        self.stopping.draining = true;
        if level <= self.stopping.stop_level || level == StopLevel::Run {
            return Vec::new();
        }
        self.stopping.stop_level = level;
        vec![
            Effect::Emit(Event::Notice { message }),
            Effect::StopAgents(level),
        ]
    }
}
