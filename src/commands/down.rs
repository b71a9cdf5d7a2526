//! `flocks down`: remove what `flocks up` created (exe.dev VMs, docker
//! containers), and only that.

use crate::backend::docker::lifecycle;
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
        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "no pool named `{p}` in flocks.toml: the pools are {}",
            names.join(", ")
        )));
    }
    // Outside a repository, say so before the lock creates `.flocks/`.
    project.repo()?;
    let _lock = project.lock("down")?;
    let mut state = project.store.load()?;
    let store = project.store.clone();
    let mut save = |s: &State| store.save(s);
    let runtime = crate::service::runtime()?;
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
                    crate::outln!("{note}");
                }
            }
            BackendConfig::Docker(_) => {
                remove_containers(&runtime, &mut state, &mut save, |p| p == pool.name)?;
            }
            BackendConfig::Local | BackendConfig::Ssh(_) => {}
        }
    }
    // Containers of pools that are no longer docker pools: flocks made them.
    if args.pool.is_none() {
        remove_containers(&runtime, &mut state, &mut save, |p| {
            !matches!(
                config.pool(p).map(|p| &p.backend),
                Some(BackendConfig::Docker(_))
            )
        })?;
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

/// Remove the containers flocks recorded for the pools `which` selects.
fn remove_containers(
    runtime: &tokio::runtime::Runtime,
    state: &mut State,
    save: &mut impl FnMut(&State) -> Result<()>,
    which: impl Fn(&str) -> bool,
) -> Result<()> {
    let mine: Vec<(String, String, String)> = state
        .managed
        .iter()
        .filter_map(|m| match m {
            Managed::Container { pool, id, name } if which(pool) => {
                Some((pool.clone(), id.clone(), name.clone()))
            }
            _ => None,
        })
        .collect();
    for (pool, id, name) in mine {
        let was_there = runtime
            .block_on(lifecycle::down(&id, &name))
            .map_err(|e| Error::Other(format!("pool {pool}: {e}")))?;
        let what = if was_there {
            "removed"
        } else {
            "was already gone:"
        };
        crate::outln!("pool {pool}: {what} container {name}");
        state
            .managed
            .retain(|m| !matches!(m, Managed::Container { id: i, .. } if *i == id));
        save(state)?;
    }
    Ok(())
}
