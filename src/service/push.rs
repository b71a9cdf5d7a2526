//! `flocks land --push` after the land (called by `commands::land`): push
//! the target under the lease [`crate::land::push::prepare`] took; when the
//! remote moved meanwhile, put the target on it, plan, validate and land
//! again, and push again; then `[land] after_push`.
//!
//! ```text
//!  land (report) ──push(lease)──> done ──> record in land.json ──> after_push
//!                        └─moved──> rebase_onto(remote) ──> plan ──> execute ──> push(new lease)
//! ```

use crate::error::{Error, Exit, Result};
use crate::land::push::{self, Pushed, Remote};
use crate::land::{self, LandLock, LandOptions};
use crate::notify::Notifiers;
use crate::project::Project;

/// How many times the land is built again on a remote that moved before
/// flocks gives up.
const PUSH_ROUNDS: usize = 3;

/// After the land: the push, landing again on the remote when it moved, and
/// `[land] after_push`.
pub(crate) struct Pushing<'a> {
    pub remote: &'a Remote<'a>,
    pub lease: push::Lease,
    /// When the land command started (its land.json records are after it).
    pub started: chrono::DateTime<chrono::Utc>,
    pub opts: LandOptions,
    /// The tasks the command was asked to land (none: every succeeded one).
    pub ids: &'a [String],
}

impl Pushing<'_> {
    pub(crate) fn run(
        mut self,
        project: &Project,
        mut report: land::Report,
        lock: &LandLock,
        notify: &Notifiers,
        mut exit: Exit,
    ) -> Result<Exit> {
        let remote = self.remote;
        let label = remote.label();
        let repo = crate::git::open(project.repo_dir())?;
        for round in 1..=PUSH_ROUNDS {
            if report.stopped.is_some() || report.validation.failed() {
                say(&format!(
                    "Not pushed to {}: the land stopped before {} moved.",
                    remote.name, remote.branch
                ));
                return Ok(exit);
            }
            let tip = crate::git::branch_tip(&repo, remote.branch)?
                .ok_or_else(|| Error::BranchGone(remote.branch.to_string()))?;
            if Some(tip) == self.lease.expected {
                say(&format!(
                    "{label} is at {} already: nothing to push.",
                    short(tip)
                ));
                return Ok(exit);
            }
            match remote.push(tip, self.lease.expected)? {
                Pushed::Done => {
                    push::record_pushed(project, remote, tip, lock)?;
                    say(&format!(
                        "Pushed {} ({}) to {}.",
                        remote.branch,
                        short(tip),
                        remote.name
                    ));
                    return self.after_push(project, tip, exit);
                }
                Pushed::Moved { now } => {
                    if round == PUSH_ROUNDS {
                        return Err(Error::LandStopped(format!(
                            "{label} moved again while flocks landed on it ({PUSH_ROUNDS} times);                              {} landed here only, not pushed: run flocks land --push again",
                            remote.branch
                        )));
                    }
                    say(&format!(
                        "{label} moved while flocks landed (was {}, now {}): fetched it; planning the land again on top of it.",
                        self.lease
                            .expected
                            .map(short)
                            .unwrap_or_else(|| "absent".into()),
                        now.map(short).unwrap_or_else(|| "deleted".into())
                    ));
                    let before: Vec<String> = landed_ids(&report);
                    self.lease =
                        push::rebase_onto(project, remote, &self.lease, now, self.started, lock)?;
                    let plan = land::plan(project, self.ids)?;
                    crate::output::report(&plan.render());
                    report = land::execute(project, &plan, &self.opts, lock)?;
                    // Each task says "landed" once, however many times it was built.
                    let mut fresh = report.clone();
                    fresh.tasks.retain(|t| !before.contains(&t.id));
                    crate::service::resolve::record_landed(project, &fresh, notify);
                    crate::service::resolve::record_attention(project, &report, notify);
                    crate::output::report(&report.render(project.repo_dir()));
                    exit = report.exit();
                }
            }
        }
        Ok(exit)
    }

    /// `[land] after_push`; its failure is exit 4, and the push stands.
    fn after_push(&self, project: &Project, tip: git2::Oid, exit: Exit) -> Result<Exit> {
        if project.config.land.after_push.is_empty() {
            return Ok(exit);
        }
        let (outcome, log) = push::after_push(project, self.remote, tip)?;
        match outcome {
            land::Validation::Passed => {
                say("after_push passed.");
                Ok(exit)
            }
            land::Validation::Failed { command, reason } => Err(Error::LandStopped(format!(
                "after_push `{command}` failed ({reason}); the push stands: {} is at {} (log: {})",
                self.remote.label(),
                short(tip),
                log.display()
            ))),
            land::Validation::Interrupted { command } => {
                eprintln!(
                    "after_push `{command}` was interrupted; the push stands: {} is at {}",
                    self.remote.label(),
                    short(tip)
                );
                Ok(Exit::Interrupted)
            }
            _ => Ok(exit),
        }
    }
}

/// The tasks a land report landed (or found landed).
fn landed_ids(report: &land::Report) -> Vec<String> {
    report
        .tasks
        .iter()
        .filter(|t| {
            matches!(
                t.outcome,
                land::TaskOutcome::Landed { .. } | land::TaskOutcome::Resolved { .. }
            )
        })
        .map(|t| t.id.clone())
        .collect()
}

fn short(o: git2::Oid) -> String {
    o.to_string()[..10].to_string()
}

/// Progress, one line at a time.
fn say(line: &str) {
    crate::output::report(&format!("{line}\n"));
}
