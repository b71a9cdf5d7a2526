//! `flocks up`: create what pools need before a run (exe.dev VMs, docker
//! containers), recorded in state.json so that `flocks down` removes exactly
//! those.

use crate::backend::docker::lifecycle::{self, Up};
use crate::backend::ssh::exedev;
use crate::cli::UpArgs;
use crate::config::BackendConfig;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::State;

pub fn run(project: &Project, args: &UpArgs) -> Result<Exit> {
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
    // state.json is written only under the project lock.
    // Outside a repository, say so before the lock creates `.flocks/`.
    project.repo()?;
    let _lock = project.lock("up")?;
    let mut state = project.store.load()?;
    let store = project.store.clone();
    let mut save = |s: &State| store.save(s);
    let runtime = crate::service::runtime()?;
    let mut did = false;
    let mut made = exedev::Made::load(&project.state_dir());
    for pool in &config.pools {
        if args.pool.as_deref().is_some_and(|p| p != pool.name) {
            continue;
        }
        match &pool.backend {
            BackendConfig::Exedev(x) => {
                did = true;
                for note in runtime.block_on(exedev::up(
                    pool,
                    x,
                    &project.key(),
                    &mut made,
                    &mut state,
                    &mut save,
                ))? {
                    crate::outln!("{note}");
                }
            }
            BackendConfig::Docker(d) => {
                let up = runtime
                    .block_on(lifecycle::up(config, pool, d, &project.key()))
                    .map_err(|e| Error::CannotStart(format!("pool {}: {e}", pool.name)))?;
                match up {
                    Up::Created(m) => {
                        did = true;
                        if let crate::state::Managed::Container { name, .. } = &m {
                            crate::outln!("pool {}: started container {name}", pool.name);
                        }
                        state.managed.push(m);
                        save(&state)?;
                    }
                    Up::Running(name) => {
                        did = true;
                        crate::outln!("pool {}: container {name} is running", pool.name);
                    }
                    Up::NotManaged => {}
                }
            }
            BackendConfig::Local | BackendConfig::Ssh(_) | BackendConfig::Slurm(_) => {}
        }
    }
    if !did {
        crate::outln!(
            "no pool needs `flocks up` (only exedev pools, and docker pools with an image, do)"
        );
    }
    Ok(Exit::Ok)
}
