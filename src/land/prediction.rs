//! What a prediction of `land` found, and the in-memory repository it is
//! worked out in: shared by `land --dry-run`'s chain ([`super::predict`])
//! and the run's prediction by overlap ([`super::overlap`]).

use std::path::Path;

use git2::{Oid, Repository};

use crate::error::{Context, Result};
use crate::state::PredictedConflict;

/// What a prediction found: every task `land` would pick, in landing order,
/// with its conflict (None: it applies, or has nothing to apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prediction {
    pub target_tip: Oid,
    pub tasks: Vec<(String, Option<PredictedConflict>)>,
    /// How many tasks were applied again this time (the rest was reused).
    pub applied: usize,
}

/// The repository, with new objects kept in memory (libgit2's mempack over
/// its object store): nothing written reaches a file of the repository.
pub(super) fn in_memory(dir: &Path) -> Result<Repository> {
    let repo = crate::git::open(dir)?;
    let odb = repo.odb().ctx(|| "open the object database".into())?;
    odb.add_new_mempack_backend(1000)
        .ctx(|| "add an in-memory object store".into())?;
    drop(odb);
    Ok(repo)
}
