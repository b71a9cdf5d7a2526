//! Services below the commands: what `run`, `retry`, `sail`, `land --resolve`
//! and `plan` share, called with typed options; commands parse, call, print.
//!
//! ```text
//!  commands::{run, retry, sail}, resolve (land --resolve) ──RunRequest──> run::execute
//!      load tasks + template · pre-flight · lock · reconcile · requeue · merge
//!      · backends · reporters ──> runner::Dispatcher ──> Finished
//!  commands::land --push ──Pushing──> push::run (push, land again on a moved remote, after_push)
//!  commands::plan ──SingleAttempt──> attempt::prepare ──> Prepared::run
//!      (one executor attempt, Ctrl-C as the dispatcher stops) ──> AttemptReport
//! ```

pub(crate) mod attempt;
pub(crate) mod dry_run;
pub(crate) mod forget;
pub(crate) mod load;
mod merge;
pub(crate) mod pick;
pub(crate) mod pools;
mod preflight;
pub(crate) mod push;
pub(crate) mod resolve;
pub(crate) mod run;

use crate::error::{Context, Result};

/// A multi-threaded runtime for the commands that dispatch agents.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .ctx(|| "start the async runtime".into())
}
