//! `flocks up`: start the containers (and, later, VMs) that flocks.toml asks
//! flocks to manage, and record them in state.json so that `down` removes
//! exactly those.

use crate::backend::docker::lifecycle::{self, Up};
use crate::config::BackendConfig;
use crate::error::{Error, Exit, Result};
use crate::project::Project;

#[derive(clap::Args, Debug, Default)]
pub struct UpArgs {
    /// Only these pools (default: every pool)
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
}

pub fn run(project: Project, args: &UpArgs) -> Result<Exit> {
    // state.json is written only under the project lock (not while a run goes).
    let _lock = project.lock("up")?;
    let mut state = project.store.load()?;
    let key = project.key();
    let rt = super::runtime()?;
    let mut failures = Vec::new();
    for pool in &project.config.pools {
        if !args.pools.is_empty() && !args.pools.contains(&pool.name) {
            continue;
        }
        match &pool.backend {
            BackendConfig::Docker(d) => {
                match rt.block_on(lifecycle::up(&project.config, pool, d, &key)) {
                    Ok(Up::Created(m)) => {
                        if let crate::state::Managed::Container { name, .. } = &m {
                            println!("pool {}: started container {name}", pool.name);
                        }
                        state.managed.push(m);
                        project.store.save(&state)?;
                    }
                    Ok(Up::Running(name)) => {
                        println!("pool {}: container {name} is running", pool.name)
                    }
                    Ok(Up::NotManaged) => {}
                    Err(e) => failures.push(format!("pool {}: {e}", pool.name)),
                }
            }
            BackendConfig::Local | BackendConfig::Ssh(_) | BackendConfig::Exedev(_) => {}
        }
    }
    if failures.is_empty() {
        Ok(Exit::Ok)
    } else {
        Err(Error::CannotStart(failures.join("\n")))
    }
}
