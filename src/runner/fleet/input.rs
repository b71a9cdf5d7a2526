//! What the fleet is told, and its one handler. Everything that happens to
//! a run reaches the fleet as one [`Input`]: an executor's event (as it is:
//! [`Input::Attempt`]), an off-loop job's result or panic, a signal, a disk
//! reading, a proxy event, or the loop's turn ([`Input::Tick`]).
//! [`Fleet::handle`] hands each to the rule file that owns it and answers
//! with a [`Step`]: what the dispatcher carries out, and whether the run is
//! over.

use std::path::PathBuf;

use super::{Effect, Fleet, Judged, Now, PredictResult, RedoError, StartError};
use crate::proxy::ProxyEvent;
use crate::report::Event;
use crate::runner::RunEvent;
use crate::state::NextAttempt;

/// One thing that happened, for the fleet.
pub(crate) enum Input {
    /// The run opens: its pools and queued tasks are said.
    RunStarted,
    /// The loop's turn (after any other input, at a wake-up, at the UI
    /// tick): start what is ready, and say whether the run is over.
    Tick,
    /// What an attempt's executor said: started, its session, activity,
    /// job, stall, end.
    Attempt(RunEvent),
    /// The start of a `start_from = "dependencies"` task was built
    /// (`Ok(None)`: its branch exists and is kept), or cannot be.
    DependencyStart {
        task: String,
        start: Result<Option<String>, StartError>,
    },
    /// How a retry starts ([`Effect::PlanRetry`]).
    RetryPlanned { task: String, next: NextAttempt },
    /// Planning a retry failed (`error`: a bug, said as a notice): it starts
    /// without the earlier attempt's context.
    RetryPlanFailed { task: String, error: Option<String> },
    /// A conflict prediction came back ([`Effect::Predict`]).
    Predicted(PredictResult),
    /// A success was checked against its footprint: the paths it changed
    /// outside it, or why they could not be read ([`Effect::CheckFootprint`]).
    FootprintChecked {
        task: String,
        attempt: u32,
        outside: Result<Vec<String>, String>,
    },
    /// An early redo's start was prepared, or could not be
    /// ([`Effect::PrepareRedo`]).
    RedoPrepared {
        task: String,
        next: Result<NextAttempt, RedoError>,
    },
    /// A best-of task was judged (`Ok(None)`: judging stopped before its
    /// end; `Err`: it failed, why) ([`Effect::Judge`]).
    Judged {
        task: String,
        judged: Result<Option<Box<Judged>>, String>,
    },
    /// Ctrl-C.
    Interrupt,
    /// SIGTERM (`flocks stop`).
    StopRequested,
    /// The free space of the fullest filesystem flocks writes to, which
    /// holds `place` (with `min_free_disk_gb`).
    FreeDisk { free: u64, place: PathBuf },
    /// What flocks' proxy saw.
    Proxy(ProxyEvent),
    /// Repository upkeep ended, here and on the pools' hosts (`Err`: its
    /// task failed).
    UpkeepDone(Result<crate::runner::upkeep::Wave, String>),
}

/// What the dispatcher does after an input.
pub(crate) struct Step {
    /// Carried out in order.
    pub effects: Vec<Effect>,
    /// Nothing runs and nothing more will start: the run is over (said by
    /// [`Input::Tick`]).
    pub done: bool,
}

/// The executor's events, as the fleet's inputs.
impl From<RunEvent> for Input {
    fn from(ev: RunEvent) -> Input {
        Input::Attempt(ev)
    }
}

impl Fleet {
    /// Take one input to the rule that owns it.
    pub(crate) fn handle(&mut self, input: Input, now: Now) -> Step {
        let effects = match input {
            Input::Tick => return self.turn(now),
            Input::RunStarted => self.on_run_started(),
            Input::Attempt(ev) => self.on_attempt(ev, now),
            Input::DependencyStart { task, start } => self.on_dependency_start(&task, start, now),
            Input::RetryPlanned { task, next } => {
                self.set_next(&task, next);
                Vec::new()
            }
            Input::RetryPlanFailed { task, error } => {
                self.plan_failed(&task);
                emit_notice(error.map(|e| {
                    format!(
                        "internal error, please report it: planning the retry of {task} failed: {e}"
                    )
                }))
            }
            Input::Predicted(result) => self.on_prediction(result),
            Input::FootprintChecked {
                task,
                attempt,
                outside,
            } => self.on_footprint_checked(&task, attempt, outside),
            Input::RedoPrepared { task, next } => self.on_redo_prepared(&task, next),
            Input::Judged { task, judged } => match judged {
                Ok(Some(j)) => self.on_judged(&task, *j, now),
                Ok(None) => self.on_judge_abandoned(&task, None),
                Err(e) => self.on_judge_abandoned(&task, Some(e)),
            },
            Input::Interrupt => self.on_interrupt(),
            Input::StopRequested => self.on_stop_requested(),
            Input::FreeDisk { free, place } => self.on_free_disk(free, &place),
            Input::Proxy(ev) => self.on_proxy(ev, now),
            Input::UpkeepDone(done) => super::run::on_upkeep(done),
        };
        Step {
            effects,
            done: false,
        }
    }

    /// An executor's event, to the rule that owns it.
    fn on_attempt(&mut self, ev: RunEvent, now: Now) -> Vec<Effect> {
        match ev {
            RunEvent::Started {
                task,
                attempt,
                worktree,
                start_commit,
                origin,
                created_branch,
                note,
            } => {
                self.on_started(
                    &task,
                    attempt,
                    worktree,
                    start_commit,
                    origin,
                    created_branch,
                );
                emit_notice(note)
            }
            RunEvent::Session {
                task,
                attempt,
                session_id,
            } => {
                self.on_session(&task, attempt, session_id);
                Vec::new()
            }
            RunEvent::Activity {
                task,
                attempt,
                activity,
            } => vec![Effect::Emit(Event::Activity {
                task,
                attempt,
                activity,
            })],
            RunEvent::Job { task, attempt, job } => self.on_job(&task, attempt, job, now),
            RunEvent::Stalled {
                task,
                attempt,
                quiet_secs,
            } => vec![Effect::Emit(Event::Stalled {
                task,
                attempt,
                quiet_secs,
            })],
            RunEvent::Finished {
                task,
                attempt,
                report,
            } => self.on_finished(&task, attempt, &report, now),
        }
    }

    /// The loop's turn: start every task that can start now, then say
    /// whether the run is over.
    fn turn(&mut self, now: Now) -> Step {
        let mut effects = self.start_ready(now);
        let (done, more) = super::schedule::is_done(self, now);
        effects.extend(more);
        Step { effects, done }
    }
}

/// A notice, when there is something to say.
fn emit_notice(message: Option<String>) -> Vec<Effect> {
    message
        .map(|message| Effect::Emit(Event::Notice { message }))
        .into_iter()
        .collect()
}
