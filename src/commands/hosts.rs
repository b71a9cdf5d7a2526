//! `flocks hosts check`: for every host of the ssh and exedev pools, whether it
//! is reachable, has git, has the agent command (and its version), how much disk
//! is free under `remote_dir`, whether the pool's `setup` ran there, and
//! (with a `.worktreeinclude`) whether `tar` is there to receive its files.
//! For a Slurm pool: whether the scheduler answers, the partition exists and
//! takes the pool's jobs, and the same on a compute node, by a short job.

use std::time::Duration;

use crate::backend::ssh::{self, SshError, Target, exedev};
use crate::cli::{HostsAction, HostsArgs};
use crate::config::{BackendConfig, CommandSpec};
use crate::error::{Error, Exit, Result};
use crate::project::Project;

pub fn run(project: &Project, args: &HostsArgs) -> Result<Exit> {
    let HostsAction::Check { pool: only } = &args.action;
    let config = &project.config;
    if let Some(p) = only
        && config.pool(p).is_none()
    {
        return Err(Error::Usage(format!("no pool named `{p}` in flocks.toml")));
    }
    let state = project.store.load()?;
    let runtime = crate::service::runtime()?;
    let mut problems = 0;
    let mut any = false;
    // `.worktreeinclude`'s files travel to the hosts as a tar stream.
    let includes = config
        .workspace
        .repo
        .join(crate::git::include::FILE_NAME)
        .is_file();
    for pool in &config.pools {
        if only.as_deref().is_some_and(|p| p != pool.name) {
            continue;
        }
        let (targets, setup) = match &pool.backend {
            BackendConfig::Ssh(s) => (vec![Target::from_config(s)], &s.setup),
            BackendConfig::Exedev(x) => {
                let made = exedev::Made::load(&project.state_dir());
                let vms = exedev::targets(&state, &pool.name, x, &project.key(), &made);
                for r in &vms.refused {
                    crate::outln!("{r}");
                    problems += 1;
                }
                (vms.targets(), &x.setup)
            }
            BackendConfig::Slurm(s) => {
                any = true;
                crate::outln!("pool {} (slurm)", pool.name);
                let (ok, lines) = runtime.block_on(crate::backend::slurm::check::check(
                    config, pool, s, includes,
                ));
                for (k, v) in &lines {
                    crate::outln!("  {k:<11} {v}");
                }
                if !ok {
                    problems += 1;
                }
                continue;
            }
            BackendConfig::Local | BackendConfig::Docker(_) => continue,
        };
        any = true;
        if targets.is_empty() {
            crate::outln!(
                "pool {} (exedev): no VMs; `flocks up` creates them",
                pool.name
            );
            problems += 1;
            continue;
        }
        for t in targets {
            let kind = pool.backend.kind();
            crate::outln!("pool {} ({kind}) {}", pool.name, t.host);
            let report = runtime.block_on(check(&t, &config.agent.command, setup, includes));
            for (k, v) in &report.lines {
                crate::outln!("  {k:<11} {v}");
            }
            if !report.ok {
                problems += 1;
            }
        }
    }
    if !any {
        crate::outln!("no ssh, exedev or slurm pools in flocks.toml");
    }
    Ok(if problems == 0 {
        Exit::Ok
    } else {
        Exit::CouldNotStart
    })
}

struct Report {
    ok: bool,
    lines: Vec<(&'static str, String)>,
}

async fn check(t: &Target, agent: &str, setup: &[CommandSpec], includes: bool) -> Report {
    let mut lines = Vec::new();
    if let Err(e) = t.output("true", b"", Duration::from_secs(30)).await {
        lines.push(("reachable", format!("no: {e}")));
        return Report { ok: false, lines };
    }
    lines.push(("reachable", "yes".into()));
    let header = match crate::backend::helper::Header::new("check")
        .line("agent", agent)
        .and_then(|h| h.line("setup_hash", ssh::setup_hash(setup)))
    {
        Ok(h) => h.end(),
        Err(e) => {
            lines.push(("agent", e.to_string()));
            return Report { ok: false, lines };
        }
    };
    let out = match t.install_helper().await {
        Ok(()) => t.helper(&header, Duration::from_secs(60)).await,
        Err(e) => Err(e),
    };
    let out = match out {
        Ok(o) => o,
        Err(SshError::Unreachable(m) | SshError::Failed(m)) => {
            lines.push(("remote_dir", format!("cannot use {}: {m}", t.remote_dir)));
            return Report { ok: false, lines };
        }
    };
    let out = match crate::backend::helper::parse(&out, &crate::backend::helper::reply::CHECK) {
        Ok(o) => o,
        Err(e) => {
            lines.push(("remote_dir", format!("{}: {e}", t.remote_dir)));
            return Report { ok: false, lines };
        }
    };
    let get = |k: &str| out.get(k).unwrap_or_default().to_string();
    let mut ok = true;
    let git = get("git");
    if git.is_empty() || git == "missing" {
        ok = false;
        lines.push(("git", "missing: install git on the host".into()));
    } else {
        lines.push(("git", git));
    }
    let path = get("agent_path");
    if path.is_empty() {
        ok = false;
        lines.push((
            "agent",
            format!("`{agent}` not found: install it, or set [agent] command"),
        ));
    } else {
        let version = get("agent_version");
        lines.push(("agent", format!("{path} ({version})")));
    }
    let free = get("free_kb")
        .parse::<u64>()
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|_| "unknown".into());
    lines.push(("free disk", format!("{free} under {}", get("root"))));
    let setup_line = if setup.is_empty() {
        "none configured".to_string()
    } else if get("setup") == "done" {
        "ran".to_string()
    } else {
        "not yet (it runs before the host's first task)".to_string()
    };
    lines.push(("setup", setup_line));
    if includes {
        if get("tar") == "yes" {
            lines.push(("tar", "yes (for .worktreeinclude's files)".into()));
        } else {
            ok = false;
            lines.push((
                "tar",
                "missing: install tar on the host (.worktreeinclude's files travel with it)".into(),
            ));
        }
    }
    Report { ok, lines }
}
