//! `flocks down`: remove the containers (and, later, VMs) that `flocks up`
//! created, and only those: the ones state.json records.

use crate::backend::docker::lifecycle;
use crate::config::BackendConfig;
use crate::error::{Error, Exit, Result};
use crate::project::Project;
use crate::state::Managed;

#[derive(clap::Args, Debug, Default)]
pub struct DownArgs {
    /// Only these pools (default: every pool)
    #[arg(long = "pool", value_name = "NAME")]
    pub pools: Vec<String>,
}

pub fn run(project: Project, args: &DownArgs) -> Result<Exit> {
    let _lock = project.lock("down")?;
    let mut state = project.store.load()?;
    let rt = super::runtime()?;
    let wanted = |pool: &str| args.pools.is_empty() || args.pools.iter().any(|p| p == pool);
    let mut failures = Vec::new();
    // Records of pools no longer in flocks.toml are flocks' too.
    let known: Vec<&str> = project
        .config
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let orphans: Vec<String> = state
        .managed
        .iter()
        .filter_map(|m| match m {
            Managed::Container { pool, .. } if !known.contains(&pool.as_str()) => {
                Some(pool.clone())
            }
            _ => None,
        })
        .collect();
    let pools = project
        .config
        .pools
        .iter()
        .map(|p| (p.name.clone(), Some(&p.backend)))
        .chain(orphans.into_iter().map(|n| (n, None)));
    for (pool, backend) in pools {
        if !wanted(&pool) {
            continue;
        }
        match backend {
            Some(BackendConfig::Docker(_)) | None => {
                let mine: Vec<(String, String)> = state
                    .managed
                    .iter()
                    .filter_map(|m| match m {
                        Managed::Container { pool: p, id, name } if *p == pool => {
                            Some((id.clone(), name.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                for (id, name) in mine {
                    match rt.block_on(lifecycle::down(&id, &name)) {
                        Ok(was_there) => {
                            let what = if was_there {
                                "removed"
                            } else {
                                "was already gone:"
                            };
                            println!("pool {pool}: {what} container {name}");
                            state.managed.retain(
                                |m| !matches!(m, Managed::Container { id: i, .. } if *i == id),
                            );
                            project.store.save(&state)?;
                        }
                        Err(e) => failures.push(format!("pool {pool}: {e}")),
                    }
                }
            }
            Some(BackendConfig::Local | BackendConfig::Ssh(_) | BackendConfig::Exedev(_)) => {}
        }
    }
    if failures.is_empty() {
        Ok(Exit::Ok)
    } else {
        Err(Error::Other(failures.join("\n")))
    }
}
