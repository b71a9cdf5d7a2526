//! The free-disk guard: below `min_free_disk_gb`, no new agent starts (running
//! ones go on); a notice and the run's `waiting` state say why, and dispatch
//! resumes when space comes back (with `--no-wait`, the run ends instead,
//! exit 5). The dispatcher reads the free space of the worktrees' and
//! `.flocks/`'s filesystems (on its tick) and hands the lower one here.

use std::path::Path;

use super::{Effect, Fleet};
use crate::error::Exit;
use crate::output::units::bytes;
use crate::report::Event;

impl Fleet {
    /// The free space is `free` bytes now on the fullest of the
    /// filesystems flocks writes to (the worktrees', `.flocks/`'s), the one
    /// that holds `place`.
    pub(super) fn on_free_disk(&mut self, free: u64, place: &Path) -> Vec<Effect> {
        let mut out = Vec::new();
        let Some(min) = self.config.min_free_disk else {
            return out;
        };
        match (&self.disk_low, free < min) {
            (None, true) => {
                let reason = format!(
                    "free disk space is {} under {}, below min_free_disk_gb = {}",
                    bytes(free),
                    place.display(),
                    bytes(min)
                );
                if self.opts.no_wait {
                    if self.stopping.stopped_because.is_none() {
                        let why = format!(
                            "{reason} and --no-wait was given: no new agent starts; running agents finish"
                        );
                        out.push(Effect::Emit(Event::Notice {
                            message: why.clone(),
                        }));
                        self.stopping.stopped_because = Some((why, Exit::CouldNotStart));
                    }
                    return out;
                }
                out.push(Effect::Emit(Event::Notice {
                    message: format!(
                        "{reason}: no new agent starts until space comes back; running agents go on"
                    ),
                }));
                out.push(Effect::Emit(Event::Waiting {
                    until: None,
                    reason: Some(reason.clone()),
                }));
                self.set_waiting(Some(reason.clone()));
                self.disk_low = Some(reason);
            }
            (Some(_), false) => {
                out.push(Effect::Emit(Event::Notice {
                    message: format!(
                        "free disk space is back to {} (min_free_disk_gb = {}): dispatch resumes",
                        bytes(free),
                        bytes(min)
                    ),
                }));
                self.set_waiting(None);
                self.disk_low = None;
            }
            _ => {}
        }
        out
    }

    fn set_waiting(&mut self, why: Option<String>) {
        if let Some(run) = self.state.run.as_mut() {
            run.waiting = why;
            self.dirty = true;
        }
    }
}
