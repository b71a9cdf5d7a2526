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
    let key = project.key();
    let mut made = crate::backend::ssh::exedev::Made::load(&project.state_dir());
    let mut refused = Vec::new();
    for pool in &config.pools {
        if args.pool.as_deref().is_some_and(|p| p != pool.name) {
            continue;
        }
        match &pool.backend {
            BackendConfig::Exedev(_) => {
                let notes = runtime.block_on(exedev::down(
                    config,
                    &key,
                    &mut made,
                    Some(&pool.name),
                    &mut state,
                    &mut save,
                ))?;
                for note in notes {
                    crate::outln!("{note}");
                }
            }
            BackendConfig::Docker(_) => {
                remove_containers(&runtime, &key, &mut state, &mut save, &mut refused, |p| {
                    p == pool.name
                })?;
            }
            BackendConfig::Local | BackendConfig::Ssh(_) | BackendConfig::Slurm(_) => {}
        }
    }
    // Containers of pools that are no longer docker pools: flocks made them.
    if args.pool.is_none() {
        remove_containers(&runtime, &key, &mut state, &mut save, &mut refused, |p| {
            !matches!(
                config.pool(p).map(|p| &p.backend),
                Some(BackendConfig::Docker(_))
            )
        })?;
    }
    if !refused.is_empty() {
        return Err(Error::CannotStart(format!(
            "refused to remove what flocks did not create:\n  {}\n.flocks/state.json named them (the containers can write that file): the records are dropped and the containers left as they are; look at who wrote them",
            refused.join("\n  ")
        )));
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

/// Remove the containers flocks recorded for the pools `which` selects, when
/// they are the ones `flocks up` made (by their labels); the others are
/// added to `refused` and left alone. Either way the record leaves state.
fn remove_containers(
    runtime: &tokio::runtime::Runtime,
    project_key: &str,
    state: &mut State,
    save: &mut impl FnMut(&State) -> Result<()>,
    refused: &mut Vec<String>,
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
        let done = runtime
            .block_on(lifecycle::down(&id, &pool, project_key))
            .map_err(|e| Error::Other(format!("pool {pool}: {e}")))?;
        match done {
            lifecycle::Down::Removed(name) => {
                crate::outln!("pool {pool}: removed container {name}")
            }
            lifecycle::Down::Gone => {
                crate::outln!("pool {pool}: was already gone: container {name}")
            }
            lifecycle::Down::NotOurs(why) => refused.push(format!(
                "pool {pool}: state.json records container id {id:?}, but {why}"
            )),
        }
        state
            .managed
            .retain(|m| !matches!(m, Managed::Container { id: i, .. } if *i == id));
        save(state)?;
    }
    Ok(())
}
