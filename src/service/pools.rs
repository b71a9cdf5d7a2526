//! What `up`, `down`, `hosts check` and `shell` share: the pools asked
//! for, each pool's backend (asked through the `Backend` trait, never by
//! kind), and the records `up` and `down` keep under the project lock.

use std::sync::Arc;

use crate::backend::house::{At, Checked, Records, Shell, ShellTask};
use crate::backend::ssh::exedev;
use crate::backend::{self, Backend};
use crate::config::{BackendConfig, Config, PoolConfig};
use crate::error::{Error, Result};
use crate::project::Project;
use crate::state::{Managed, State};

/// The pools of flocks.toml, or only the one named `only`.
fn select<'a>(config: &'a Config, only: Option<&str>) -> Result<Vec<&'a PoolConfig>> {
    if let Some(p) = only
        && config.pool(p).is_none()
    {
        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        return Err(Error::Usage(format!(
            "no pool named `{p}` in flocks.toml: the pools are {}",
            names.join(", ")
        )));
    }
    Ok(config
        .pools
        .iter()
        .filter(|p| only.is_none_or(|o| o == p.name))
        .collect())
}

/// The backend of `pool`, for a question outside a run: it makes no
/// worktree.
fn backend_of(config: &Config, pool: &PoolConfig) -> Result<Arc<dyn Backend>> {
    let worktrees = crate::git::Worktrees::named(&config.workspace.repo, &config.worktrees_dir());
    let guards = crate::guard::Guards::new();
    backend::for_pool(config, pool, Arc::new(worktrees), &guards)
}

/// Under the project lock (taken as `verb`), with state.json and exe.dev's
/// record of its VMs: `work` over the pools asked for, each with its
/// backend, saying each line through `say`.
fn with_records<T>(
    project: &Project,
    only: Option<&str>,
    verb: &str,
    say: &mut dyn FnMut(String),
    work: impl AsyncFnOnce(Vec<(&PoolConfig, Arc<dyn Backend>)>, &mut Records<'_>) -> Result<T>,
) -> Result<T> {
    let config = &project.config;
    let pools = select(config, only)?;
    // state.json is written only under the project lock.
    // Outside a repository, say so before the lock creates `.flocks/`.
    project.repo()?;
    let _lock = project.lock(verb)?;
    let mut state = project.store.load()?;
    let store = project.store.clone();
    let mut save = |s: &State| store.save(s);
    let mut vms = exedev::Made::load(&project.state_dir());
    let mut refused = Vec::new();
    let backends = pools
        .into_iter()
        .map(|p| Ok((p, backend_of(config, p)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut rec = Records {
        state: &mut state,
        save: &mut save,
        vms: &mut vms,
        say,
        refused: &mut refused,
    };
    crate::service::runtime()?.block_on(work(backends, &mut rec))
}

/// `flocks up`: what the pools asked for need before a run, made and
/// recorded. Whether any pool has something `up` makes.
pub(crate) fn up(
    project: &Project,
    only: Option<&str>,
    say: &mut dyn FnMut(String),
) -> Result<bool> {
    let key = project.key();
    let config = &project.config;
    with_records(project, only, "up", say, async |backends, rec| {
        let mut did = false;
        for (pool, b) in backends {
            let at = At {
                config,
                pool,
                key: &key,
            };
            did |= b.up(&at, rec).await?;
        }
        Ok(did)
    })
}

/// `flocks down`: what `up` made for the pools asked for, removed; with
/// no pool named, also what it made for pools that are no longer of that
/// kind. What flocks did not make is refused and left alone.
pub(crate) fn down(
    project: &Project,
    only: Option<&str>,
    say: &mut dyn FnMut(String),
) -> Result<()> {
    let key = project.key();
    let config = &project.config;
    with_records(project, only, "down", say, async |backends, rec| {
        for (pool, b) in backends {
            let at = At {
                config,
                pool,
                key: &key,
            };
            b.down(&at, rec).await?;
        }
        // Containers of pools that are no longer docker pools: flocks made them.
        if only.is_none() {
            let not_docker = |p: &str| {
                !matches!(
                    config.pool(p).map(|p| &p.backend),
                    Some(BackendConfig::Docker(_))
                )
            };
            backend::docker::house::remove_recorded(&key, rec, not_docker).await?;
        }
        if !rec.refused.is_empty() {
            return Err(Error::CannotStart(format!(
                "refused to remove what flocks did not create:\n  {}\n.flocks/state.json named them (the containers can write that file): the records are dropped and the containers left as they are; look at who wrote them",
                rec.refused.join("\n  ")
            )));
        }
        if only.is_none() {
            orphan_vms(config, rec.state)?;
        }
        Ok(())
    })
}

/// VMs of pools that are no longer exedev pools in flocks.toml: said, to
/// be removed by hand.
fn orphan_vms(config: &Config, state: &State) -> Result<()> {
    let orphans: Vec<String> = state
        .managed
        .iter()
        .filter_map(|m| match m {
            Managed::Vm { pool, name, .. }
                if !matches!(
                    config.pool(pool).map(|p| &p.backend),
                    Some(BackendConfig::Exedev(_))
                ) =>
            {
                Some(format!("{name} (pool {pool})"))
            }
            _ => None,
        })
        .collect();
    if orphans.is_empty() {
        return Ok(());
    }
    Err(Error::Other(format!(
        "these VMs belong to pools that are no longer exedev pools in flocks.toml: {}; remove them with `ssh exe.dev rm NAME` and then from .flocks/state.json",
        orphans.join(", ")
    )))
}

/// `flocks hosts check`: what each pool asked for says of its hosts, pool
/// by pool; `None` where no pool has hosts to check.
pub(crate) fn check(project: &Project, only: Option<&str>) -> Result<Option<Vec<Checked>>> {
    let config = &project.config;
    if let Some(p) = only
        && config.pool(p).is_none()
    {
        return Err(Error::Usage(format!("no pool named `{p}` in flocks.toml")));
    }
    let key = project.key();
    // `.worktreeinclude`'s files travel to the hosts as a tar stream.
    let includes = config
        .workspace
        .repo
        .join(crate::git::include::FILE_NAME)
        .is_file();
    let runtime = crate::service::runtime()?;
    let mut found: Option<Vec<Checked>> = None;
    for pool in select(config, only)? {
        let b = backend_of(config, pool)?;
        let at = At {
            config,
            pool,
            key: &key,
        };
        if let Some(c) = runtime.block_on(b.check(&at, includes)) {
            found.get_or_insert_default().extend(c);
        }
    }
    Ok(found)
}

/// `flocks shell`: the shell to open where task `id` ran (a best-of
/// task's winner; without one, which variants to open instead).
pub(crate) fn shell(project: &Project, id: &str) -> Result<Shell> {
    let config = &project.config;
    let state = project.store.load()?;
    let rec = state.task(id).ok_or_else(|| {
        Error::Usage(format!(
            "no task `{id}` in this project's state: `flocks status` lists them"
        ))
    })?;
    // A best-of task runs in its variants' worktrees: its winner's, or say which.
    let rec = match (rec.variants.is_empty(), rec.winner()) {
        (true, _) => rec,
        (false, Some(w)) => w,
        (false, None) => {
            let ids: Vec<&str> = rec.variants.iter().map(|v| v.id.as_str()).collect();
            return Err(Error::Usage(format!(
                "task `{}` is a best-of task with no winner (yet): open one of its variants, `flocks shell {}`",
                rec.id,
                ids.join("` or `flocks shell ")
            )));
        }
    };
    let Some(pool) = rec.attempts.last().and_then(|a| config.pool(&a.pool)) else {
        return crate::backend::house::local_shell(config, rec);
    };
    let key = project.key();
    let at = At {
        config,
        pool,
        key: &key,
    };
    let task = ShellTask {
        asked: id,
        record: rec,
        worktree: rec.worktree.display().to_string(),
    };
    let b = backend_of(config, pool)?;
    crate::service::runtime()?.block_on(b.shell(&at, &task))
}
