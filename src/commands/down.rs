//! `flocks down`: remove what `flocks up` created (exe.dev VMs), and only that.

use crate::backend::ssh::exedev;
use crate::cli::DownArgs;
use crate::config::BackendConfig;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::{Managed, State};

pub fn run(project: &Project, args: &DownArgs) -> Result<Exit> {
    let config = &project.config;
    if let Some(p) = &args.pool
        && config.pool(p).is_none()
    {
        return Err(Error::Usage(format!("no pool named `{p}` in flocks.toml")));
    }
    let _lock = project.lock("down")?;
    let mut state = project.store.load()?;
    let store = project.store.clone();
    let mut save = |s: &State| store.save(s);
    let runtime = super::runtime()?;
    for pool in &config.pools {
        if args.pool.as_deref().is_some_and(|p| p != pool.name) {
            continue;
        }
        match &pool.backend {
            BackendConfig::Exedev(_) => {
                let notes = runtime.block_on(exedev::down(
                    config,
                    Some(&pool.name),
                    &mut state,
                    &mut save,
                ))?;
                for note in notes {
                    println!("{note}");
                }
            }
            BackendConfig::Local | BackendConfig::Ssh(_) | BackendConfig::Docker(_) => {}
        }
    }
    // VMs of pools that are no longer exedev pools in flocks.toml.
    let orphans: Vec<String> = state
        .managed
        .iter()
        .filter_map(|m| match m {
            Managed::Vm { pool, name, .. }
                if args.pool.is_none()
                    && !matches!(
                        config.pool(pool).map(|p| &p.backend),
                        Some(BackendConfig::Exedev(_))
                    ) =>
            {
                Some(format!("{name} (pool {pool})"))
            }
            _ => None,
        })
        .collect();
    if !orphans.is_empty() {
        return Err(Error::Other(format!(
            "these VMs belong to pools that are no longer exedev pools in flocks.toml: {}; remove them with `ssh exe.dev rm NAME` and then from .flocks/state.json",
            orphans.join(", ")
        )));
    }
    Ok(Exit::Ok)
}
