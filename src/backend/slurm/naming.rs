//! What flocks asks of Slurm in words: the remote dir expanded, the project's
//! and jobs' names and options, the comment that finds stale jobs.

use super::{CHECK_RUN, OPS_MARGIN_SECS, OUTSIDE_A_RUN, sched};
use crate::config::{Config, CredentialChoice, PoolConfig, SlurmConfig};

/// `remote_dir` on this machine's terms: `~` is `$HOME`, `$NAME` and
/// `${NAME}` are variables of flocks' environment (the login node's; the
/// path must mean the same on the compute nodes: a shared filesystem).
pub(crate) fn expand_remote_dir(dir: &str) -> Result<String, String> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            format!("remote_dir `{dir}` uses ${name}, which is not set in flocks' environment")
        })
    };
    let mut out = String::new();
    let mut rest = dir;
    if rest == "~" || rest.starts_with("~/") {
        out.push_str(&var("HOME")?);
        rest = &rest[1..];
    }
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, next) = if let Some(b) = after.strip_prefix('{') {
            let end = b
                .find('}')
                .ok_or_else(|| format!("remote_dir `{dir}`: an unclosed ${{"))?;
            (&b[..end], &b[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            return Err(format!("remote_dir `{dir}`: a `$` without a variable name"));
        }
        out.push_str(&var(name)?);
        rest = next;
    }
    out.push_str(rest);
    let path = out.trim_end_matches('/').to_string();
    if !path.starts_with('/') {
        return Err(format!(
            "remote_dir `{dir}` is `{path}`: it must be an absolute path on the cluster's shared filesystem"
        ));
    }
    if path.split('/').any(|c| c == "..") || path.chars().any(|c| c.is_control()) {
        return Err(format!(
            "remote_dir `{dir}`: no `..` and no control characters"
        ));
    }
    Ok(path)
}

/// The project's part of a job name: the name of the directory of
/// flocks.toml, in letters, digits, `-`, `_` and `.`.
pub(crate) fn project_name(config: &Config) -> String {
    let raw = config
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "project".into());
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if name.is_empty() {
        "project".into()
    } else {
        name
    }
}

/// What `salloc` (and `sbatch --test-only`) is given besides name and
/// comment: partition, account, qos, time limit, then `sbatch_args`.
pub(crate) fn job_options(cfg: &SlurmConfig, time_limit_min: Option<u64>) -> Vec<String> {
    let mut o = Vec::new();
    if let Some(p) = &cfg.partition {
        o.push(format!("--partition={p}"));
    }
    if let Some(a) = &cfg.account {
        o.push(format!("--account={a}"));
    }
    if let Some(q) = &cfg.qos {
        o.push(format!("--qos={q}"));
    }
    if let Some(m) = time_limit_min {
        o.push(format!("--time={m}"));
    }
    o.extend(cfg.sbatch_args.iter().cloned());
    o
}

/// A job's time limit in minutes: `agent_timeout_secs`, the grace, the
/// `[workspace] setup` timeout when there is a setup, and a margin for the
/// helper's ops. None without an agent timeout (the partition's default).
pub(crate) fn time_limit_min(config: &Config) -> Option<u64> {
    let agent = config.agent_timeout?;
    let mut secs = agent.as_secs() + config.kill_grace.as_secs() + 1 + OPS_MARGIN_SECS;
    if !config.workspace.setup.is_empty() {
        secs += config.workspace.setup_timeout.map_or(3600, |t| t.as_secs());
    }
    Some(secs.div_ceil(60))
}

/// Variables no Slurm command of this pool gets: the credentials' (the
/// agent gets its own through the helper's header, never its command line).
pub(super) fn scrub_list(config: &Config, pool: &PoolConfig) -> Vec<String> {
    let mut v: Vec<String> = config.credentials.iter().map(|c| c.env.clone()).collect();
    if pool.credential != CredentialChoice::Default {
        v.extend(
            crate::agent::spec::SCRUBBED_VARS
                .iter()
                .map(|s| s.to_string()),
        );
    }
    v
}

/// `flocks project=<key> run=<run id>`.
pub(crate) fn comment(key: &str, run_id: &str) -> String {
    format!("flocks project={key} run={run_id}")
}

/// The jobs (squeue `%i|%j|%k` lines) a run of this project other than
/// `run_id` left: named `flocks-<project>-...`, commented with this
/// project's key and another run's id.
pub(crate) fn stale_jobs(squeue: &str, project: &str, key: &str, run_id: &str) -> Vec<String> {
    let prefix = format!("flocks-{project}-");
    let ours = format!("flocks project={key} run=");
    squeue
        .lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            let (id, name, comment) = (f.next()?, f.next()?, f.next()?);
            let run = comment.strip_prefix(&ours)?;
            let not_a_run = run.is_empty() || run == OUTSIDE_A_RUN || run == CHECK_RUN;
            (sched::is_job_id(id) && name.starts_with(&prefix) && run != run_id && !not_a_run)
                .then(|| id.to_string())
        })
        .collect()
}

pub(super) fn names(parts: &[(String, bool, String)]) -> String {
    parts
        .iter()
        .map(|(n, ..)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
