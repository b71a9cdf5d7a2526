//! `flocks trust`: accept flocks.toml, the task source, the templates and
//! `.git`'s hooks and configs as they are now (see `crate::trust`).

use crate::error::{Exit, Result};
use crate::project::Project;

pub(super) fn run(project: &Project) -> Result<Exit> {
    let changed = crate::trust::record(&project.config)?;
    let path = crate::trust::record_path(&project.config)?;
    if changed.is_empty() {
        crate::outln!("nothing changed; trusted as it is ({})", path.display());
    } else {
        crate::outln!("trusted these changes:");
        for c in &changed {
            crate::outln!("  {c}");
        }
        crate::outln!("recorded in {}", path.display());
    }
    Ok(Exit::Ok)
}
