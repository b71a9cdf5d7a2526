//! From flocks.toml text to a validated [`Config`]. Every error names the file,
//! the line and the key.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::error::{Error, Result};

type S<T> = Option<Spanned<T>>;

/// A duration key's value: a number of seconds (fractions ok), or a string
/// with units as `--older-than` takes it (`"90s"`, `"30m"`, `"1h30m"`),
/// read by the one parser of durations.
#[derive(Debug, Clone, Copy)]
struct Secs(f64);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Secs, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of seconds or a duration such as \"30m\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Secs, E> {
                Ok(Secs(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Secs, E> {
                Ok(Secs(v as f64))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Secs, E> {
                Ok(Secs(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Secs, E> {
                crate::output::units::parse_duration(v)
                    .map(|d| Secs(d.as_secs_f64()))
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    max_agents: S<i64>,
    stagger_delay_secs: S<Secs>,
    agent_timeout_secs: S<Secs>,
    kill_grace_secs: S<Secs>,
    stall_timeout_secs: S<Secs>,
    max_turns: S<i64>,
    max_retries: S<i64>,
    max_cost_usd: S<f64>,
    min_free_disk_gb: S<f64>,
    credential_ramp_secs: S<Secs>,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    credentials: Vec<RawCredential>,
    #[serde(default)]
    containers: Vec<Spanned<RawPool>>,
    source: Option<Spanned<RawSource>>,
    #[serde(default)]
    workspace: RawWorkspace,
    #[serde(default)]
    prompt: RawPrompt,
    #[serde(default)]
    validate: RawValidate,
    #[serde(default)]
    notify: Vec<Spanned<RawNotify>>,
    #[serde(default)]
    land: RawLand,
    best_of: S<toml::Value>,
    #[serde(default)]
    variants: Vec<Spanned<RawVariant>>,
    #[serde(default)]
    sandbox: RawSandbox,
    #[serde(default)]
    proxy: RawProxy,
    network: Option<Spanned<RawNetwork>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSandbox {
    read: S<Vec<Spanned<String>>>,
    network: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    upstream: S<String>,
    listen: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    allow: S<Vec<Spanned<String>>>,
    notify_denied: S<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    model: S<String>,
    #[serde(default)]
    args: Vec<String>,
    prompt_suffix: S<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    on: S<Vec<Spanned<String>>>,
    command: S<Vec<String>>,
    webhook: S<String>,
    format: S<String>,
    headers_env: S<BTreeMap<String, Spanned<String>>>,
    timeout_secs: S<Secs>,
    coalesce_secs: S<Secs>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLand {
    redo_conflicts: S<String>,
    push: S<String>,
    #[serde(default)]
    after_push: Vec<CommandSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    command: S<String>,
    #[serde(default)]
    args: Vec<String>,
    model: S<String>,
    env: S<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    name: Spanned<String>,
    env: Spanned<String>,
    kind: S<String>,
    max_concurrent: S<i64>,
    max_cost_usd: S<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    name: S<String>,
    backend: S<String>,
    max_worktrees: S<i64>,
    credential: S<String>,
    env: S<BTreeMap<String, String>>,
    // local
    sandbox: S<String>,
    // docker
    container: S<String>,
    project: S<String>,
    kap_project: S<String>,
    workspace_mount: S<String>,
    user: S<String>,
    allow_root: S<bool>,
    image: S<String>,
    mounts: S<Vec<String>>,
    network: S<String>,
    workspace: S<String>,
    clone_dir: S<String>,
    max_fetch_mb: S<i64>,
    // ssh
    host: S<String>,
    port: S<i64>,
    identity_file: S<String>,
    ssh_options: S<Vec<String>>,
    remote_dir: S<String>,
    setup: S<Vec<CommandSpec>>,
    // exedev
    count: S<i64>,
    lobby: S<String>,
    // slurm
    partition: S<String>,
    account: S<String>,
    qos: S<String>,
    sbatch_args: S<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    #[serde(rename = "type")]
    kind: S<String>,
    path: S<String>,
    command: S<CommandSpec>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    repo: S<String>,
    branch_prefix: S<String>,
    land_target: S<String>,
    base: S<String>,
    #[serde(default)]
    setup: Vec<CommandSpec>,
    setup_timeout_secs: S<Secs>,
    setup_on_reuse: S<bool>,
    max_spare_worktrees: S<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrompt {
    template: S<String>,
    plan_template: S<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawValidate {
    #[serde(default)]
    commands: Vec<CommandSpec>,
    timeout_secs: S<Secs>,
    pool: S<String>,
}

/// Keys each backend accepts, beyond the common ones.
const COMMON_KEYS: &[&str] = &["name", "backend", "max_worktrees", "credential", "env"];
const LOCAL_KEYS: &[&str] = &["sandbox"];
const DOCKER_KEYS: &[&str] = &[
    "container",
    "project",
    "kap_project",
    "workspace_mount",
    "user",
    "allow_root",
    "image",
    "mounts",
    "network",
    "workspace",
    "clone_dir",
    "max_fetch_mb",
];
const SSH_KEYS: &[&str] = &[
    "host",
    "port",
    "identity_file",
    "ssh_options",
    "remote_dir",
    "setup",
];
const EXEDEV_KEYS: &[&str] = &[
    "count",
    "lobby",
    "identity_file",
    "ssh_options",
    "remote_dir",
    "setup",
];
const SLURM_KEYS: &[&str] = &[
    "partition",
    "account",
    "qos",
    "sbatch_args",
    "remote_dir",
    "setup",
];
/// Options of `sbatch_args` that flocks sets itself (its sweep of jobs left
/// by a killed run finds them by name and comment) or that would change
/// what the allocation is.
const SBATCH_OWN: &[&str] = &[
    "-J",
    "--job-name",
    "--comment",
    "--jobid",
    "--no-shell",
    "-p",
    "--partition",
    "-A",
    "--account",
    "-q",
    "--qos",
];

impl RawPool {
    /// Every key present in this table, with its span.
    fn present(&self) -> Vec<(&'static str, Range<usize>)> {
        let mut out = Vec::new();
        macro_rules! key {
            ($($f:ident),*) => {$(
                if let Some(v) = &self.$f { out.push((stringify!($f), v.span())); }
            )*};
        }
        key!(
            name,
            backend,
            max_worktrees,
            credential,
            env,
            sandbox,
            container,
            project,
            kap_project,
            workspace_mount,
            user,
            allow_root,
            image,
            mounts,
            network,
            workspace,
            clone_dir,
            max_fetch_mb,
            host,
            port,
            identity_file,
            ssh_options,
            remote_dir,
            setup,
            count,
            lobby,
            partition,
            account,
            qos,
            sbatch_args
        );
        out
    }
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].matches('\n').count() + 1
    }

    fn err(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> Error {
        Error::input(self.path, Some(self.line(span)), Some(key), message)
    }

    /// A duration key: seconds, never negative.
    fn non_negative(&self, v: &S<Secs>, key: &str) -> Result<Option<f64>> {
        match v {
            None => Ok(None),
            Some(s) if !s.get_ref().0.is_finite() || s.get_ref().0 < 0.0 => Err(self.err(
                s.span(),
                key,
                "must be a non-negative number of seconds (or a duration such as \"30m\")",
            )),
            Some(s) => Ok(Some(s.get_ref().0)),
        }
    }

    /// A non-negative amount that is not a duration (dollars, gigabytes).
    fn amount(&self, v: &S<f64>, key: &str, unit: &str) -> Result<Option<f64>> {
        match v {
            None => Ok(None),
            Some(s) if !s.get_ref().is_finite() || *s.get_ref() < 0.0 => Err(self.err(
                s.span(),
                key,
                format!("must be a non-negative number of {unit}"),
            )),
            Some(s) => Ok(Some(*s.get_ref())),
        }
    }

    fn count(&self, v: &S<i64>, key: &str, min: i64) -> Result<Option<i64>> {
        match v {
            None => Ok(None),
            Some(s) if *s.get_ref() < min => {
                Err(self.err(s.span(), key, format!("must be at least {min}")))
            }
            Some(s) => Ok(Some(*s.get_ref())),
        }
    }
}

fn secs(v: f64) -> Duration {
    Duration::from_secs_f64(v)
}

/// 0 means "none" for timeouts.
fn optional_secs(v: Option<f64>) -> Option<Duration> {
    v.filter(|s| *s > 0.0).map(secs)
}

/// A name `git remote add` takes (and nothing git would read as an option).
pub(crate) fn remote_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.starts_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn parse(path: &Path, text: &str) -> Result<Config> {
    let raw: RawConfig = super::toml_error::deserialize(path, text)?;
    let cx = Ctx { path, text };
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();

    let max_agents = cx.count(&raw.max_agents, "max_agents", 1)?.unwrap_or(5) as usize;
    let stagger = cx.non_negative(&raw.stagger_delay_secs, "stagger_delay_secs")?;
    let timeout = cx.non_negative(&raw.agent_timeout_secs, "agent_timeout_secs")?;
    let grace = cx.non_negative(&raw.kill_grace_secs, "kill_grace_secs")?;
    let stall = cx.non_negative(&raw.stall_timeout_secs, "stall_timeout_secs")?;
    let max_turns = cx.count(&raw.max_turns, "max_turns", 1)?;
    let max_retries = cx.count(&raw.max_retries, "max_retries", 0)?;
    let max_cost = cx.amount(&raw.max_cost_usd, "max_cost_usd", "dollars")?;
    let min_free_disk = cx.amount(&raw.min_free_disk_gb, "min_free_disk_gb", "gigabytes")?;
    let ramp = cx.non_negative(&raw.credential_ramp_secs, "credential_ramp_secs")?;

    // [agent]
    let agent_env = raw.agent.env.map(|e| e.into_inner()).unwrap_or_default();
    let agent = AgentConfig {
        command: match raw.agent.command {
            Some(c) if c.get_ref().trim().is_empty() => {
                return Err(cx.err(c.span(), "agent.command", "must not be empty"));
            }
            Some(c) => c.into_inner(),
            None => "claude".into(),
        },
        args: raw.agent.args,
        model: raw.agent.model.map(|m| m.into_inner()),
        env: agent_env,
    };

    // [[credentials]]
    let mut credentials = Vec::new();
    let mut cred_names = HashSet::new();
    for c in raw.credentials {
        let name = c.name.get_ref().clone();
        if name.is_empty() || name == "default" || name == "rotate" {
            return Err(cx.err(
                c.name.span(),
                "credentials.name",
                format!(
                    "`{name}` cannot name a credential (\"default\" and \"rotate\" are reserved)"
                ),
            ));
        }
        if !cred_names.insert(name.clone()) {
            return Err(cx.err(
                c.name.span(),
                "credentials.name",
                format!("duplicate credential `{name}`"),
            ));
        }
        if !env_name_ok(c.env.get_ref()) {
            return Err(cx.err(
                c.env.span(),
                "credentials.env",
                format!("`{}` is not an environment variable name", c.env.get_ref()),
            ));
        }
        let kind = match c.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("oauth") => CredentialKind::Oauth,
            Some("api_key") => CredentialKind::ApiKey,
            Some(other) => {
                let span = c.kind.as_ref().map(|k| k.span()).unwrap_or(0..0);
                return Err(cx.err(
                    span,
                    "credentials.kind",
                    format!("unknown kind `{other}`: use \"oauth\" or \"api_key\""),
                ));
            }
        };
        let max_concurrent = cx
            .count(&c.max_concurrent, "credentials.max_concurrent", 1)?
            .map(|n| n as usize);
        let cred_cost = cx.amount(&c.max_cost_usd, "credentials.max_cost_usd", "dollars")?;
        credentials.push(CredentialConfig {
            name,
            env: c.env.into_inner(),
            kind,
            max_concurrent,
            max_cost_usd: cred_cost.filter(|c| *c > 0.0),
        });
    }

    // [[containers]]
    let mut pools = Vec::new();
    let mut pool_names = HashSet::new();
    for (i, p) in raw.containers.into_iter().enumerate() {
        let table_span = p.span();
        let p = p.into_inner();
        pools.push(parse_pool(
            &cx,
            &dir,
            p,
            table_span,
            i,
            &cred_names,
            &mut pool_names,
        )?);
    }
    if pools.is_empty() {
        // No pools: one local pool with as many slots as max_agents.
        pools.push(PoolConfig {
            name: "local".into(),
            max_worktrees: max_agents,
            credential: CredentialChoice::Default,
            env: BTreeMap::new(),
            backend: BackendConfig::Local,
            sandbox: SandboxMode::None,
        });
    }

    // [source]
    let source = match raw.source {
        None => None,
        Some(s) => {
            let span = s.span();
            let s = s.into_inner();
            let kind = s
                .kind
                .as_ref()
                .map(|k| k.get_ref().clone())
                .unwrap_or_else(|| "jsonl".into());
            match kind.as_str() {
                "jsonl" => {
                    if let Some(c) = &s.command {
                        return Err(cx.err(
                            c.span(),
                            "source.command",
                            "belongs to type = \"script\"",
                        ));
                    }
                    let p = s
                        .path
                        .map(|p| p.into_inner())
                        .unwrap_or_else(|| "tasks.jsonl".into());
                    Some(SourceConfig::Jsonl {
                        path: resolve_from(&dir, Path::new(&p)),
                    })
                }
                "script" => {
                    if let Some(p) = &s.path {
                        return Err(cx.err(p.span(), "source.path", "belongs to type = \"jsonl\""));
                    }
                    let Some(command) = s.command else {
                        return Err(cx.err(
                            span,
                            "source.command",
                            "type = \"script\" needs a command",
                        ));
                    };
                    Some(SourceConfig::Script {
                        command: command.into_inner(),
                    })
                }
                other => {
                    let span = s.kind.map(|k| k.span()).unwrap_or(span);
                    return Err(cx.err(
                        span,
                        "source.type",
                        format!("unknown source type `{other}`: use \"jsonl\" or \"script\""),
                    ));
                }
            }
        }
    };

    // [workspace]
    let ws = raw.workspace;
    let repo = resolve_from(
        &dir,
        Path::new(
            ws.repo
                .as_ref()
                .map(|r| r.get_ref().as_str())
                .unwrap_or("."),
        ),
    );
    let land_target = ws
        .land_target
        .map(|s| s.into_inner())
        .unwrap_or_else(|| "main".into());
    let base = ws
        .base
        .map(|s| s.into_inner())
        .unwrap_or_else(|| land_target.clone());
    let workspace = WorkspaceConfig {
        repo: normalize(&repo),
        branch_prefix: ws
            .branch_prefix
            .map(|s| s.into_inner())
            .unwrap_or_else(|| "flocks/".into()),
        land_target,
        base,
        setup: ws.setup,
        // 0 means none, as for the other timeouts.
        setup_timeout: optional_secs(
            cx.non_negative(&ws.setup_timeout_secs, "workspace.setup_timeout_secs")?
                .or(Some(1800.0)),
        ),
        setup_on_reuse: ws.setup_on_reuse.is_some_and(|b| *b.get_ref()),
        max_spare_worktrees: cx
            .count(&ws.max_spare_worktrees, "workspace.max_spare_worktrees", 0)?
            .map(|n| n as usize),
    };

    let sandbox_network_span = raw.sandbox.network.as_ref().map(|v| v.span());
    let sandbox = parse_sandbox(&cx, raw.sandbox, &workspace.repo, &dir)?;

    let prompt_template = raw
        .prompt
        .template
        .map(|t| resolve_from(&dir, Path::new(t.get_ref())));

    let plan_template = raw
        .prompt
        .plan_template
        .map(|t| resolve_from(&dir, Path::new(t.get_ref())));

    // [validate] pool: a docker pool of this file.
    let validate_pool = match raw.validate.pool {
        None => None,
        Some(name) => {
            let span = name.span();
            let name = name.into_inner();
            match pools.iter().find(|p| p.name == name) {
                Some(p) if matches!(p.backend, BackendConfig::Docker(_)) => Some(name),
                Some(p) => {
                    return Err(cx.err(
                        span,
                        "validate.pool",
                        format!(
                            "pool `{name}` is a {} pool: validation runs only in a docker pool's container",
                            p.backend.kind()
                        ),
                    ));
                }
                None => {
                    return Err(cx.err(
                        span,
                        "validate.pool",
                        format!("no pool named `{name}`: name a [[containers]] pool with backend = \"docker\""),
                    ));
                }
            }
        }
    };
    let validate = ValidateConfig {
        pool: validate_pool,
        commands: raw.validate.commands,
        timeout: optional_secs(
            cx.non_negative(&raw.validate.timeout_secs, "validate.timeout_secs")?
                .or(Some(1800.0)),
        ),
    };

    let notify = raw
        .notify
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let span = n.span();
            parse_notify(&cx, n.into_inner(), span, i + 1, &pools, &workspace.repo)
        })
        .collect::<Result<Vec<_>>>()?;
    let redo_conflicts = match raw.land.redo_conflicts {
        None => RedoConflicts::AtLand,
        Some(v) => RedoConflicts::parse(v.get_ref()).ok_or_else(|| {
            cx.err(
                v.span(),
                "land.redo_conflicts",
                format!(
                    "unknown value `{}`: use \"at_land\" (redo with `flocks land --resolve`) or \"early\" (with --supervise, redo a task as soon as its conflict is predicted)",
                    v.get_ref()
                ),
            )
        })?,
    };

    let push = match raw.land.push {
        None => None,
        Some(v) if !remote_name_ok(v.get_ref()) => {
            return Err(cx.err(
                v.span(),
                "land.push",
                format!(
                    "`{}` is not a git remote name: name one of the repository's remotes (`git remote` lists them), e.g. \"origin\"",
                    v.get_ref()
                ),
            ));
        }
        Some(v) => Some(v.into_inner()),
    };

    let best_of = parse_best_of(&cx, raw.best_of)?;
    let mut variants = Vec::new();
    for v in raw.variants {
        let span = v.span();
        let v = v.into_inner();
        if let Some(m) = &v.model
            && m.get_ref().trim().is_empty()
        {
            return Err(cx.err(m.span(), "variants.model", "must not be empty"));
        }
        let variant = VariantConfig {
            model: v.model.map(|m| m.into_inner()),
            args: v.args,
            prompt_suffix: v.prompt_suffix.map(|s| s.into_inner()),
        };
        if variant == VariantConfig::default() {
            return Err(cx.err(
                span,
                "variants",
                "this [[variants]] table changes nothing: give it model, args or prompt_suffix",
            ));
        }
        variants.push(variant);
    }

    let listen_span = raw.proxy.listen.as_ref().map(|l| l.span());
    let (proxy, network) = parse_network(&cx, raw.proxy, raw.network)?;
    check_proxy_reach(
        &cx,
        &pools,
        &sandbox,
        sandbox_network_span,
        &proxy,
        listen_span,
        network.is_some(),
    )?;

    Ok(Config {
        path: path.to_path_buf(),
        dir,
        max_agents,
        stagger_delay: secs(stagger.unwrap_or(0.0)),
        agent_timeout: optional_secs(timeout.or(Some(1800.0))),
        kill_grace: secs(grace.unwrap_or(10.0)),
        stall_timeout: optional_secs(stall),
        max_turns: max_turns.map(|n| n as u32),
        max_retries: max_retries.unwrap_or(3) as u32,
        max_cost_usd: max_cost.filter(|c| *c > 0.0),
        min_free_disk: min_free_disk
            .filter(|g| *g > 0.0)
            .map(|g| (g * GIB as f64) as u64),
        credential_ramp: secs(ramp.unwrap_or(30.0)),
        agent,
        credentials,
        pools,
        source,
        workspace,
        prompt_template,
        plan_template,
        validate,
        notify,
        land: LandConfig {
            redo_conflicts,
            push,
            after_push: raw.land.after_push,
        },
        best_of,
        variants,
        sandbox,
        proxy,
        network,
    })
}

/// `[sandbox]`: `read` paths absolute (or `~/...`), never inside the
/// repository or flocks' own files (the sandbox shows neither); `network`.
fn parse_sandbox(cx: &Ctx, s: RawSandbox, repo: &Path, dir: &Path) -> Result<SandboxConfig> {
    let mut read = Vec::new();
    for p in s.read.map(|r| r.into_inner()).unwrap_or_default() {
        let span = p.span();
        let given = p.into_inner();
        let path = normalize(&expand_tilde(Path::new(&given)));
        let why = if !path.is_absolute() {
            Some(format!(
                "`{given}` is not an absolute path: give the full path (or ~/...) of what sandboxed agents may read"
            ))
        } else if path == Path::new("/") {
            Some("`/` is visible read-only already; list the hidden places agents need (e.g. ~/.cargo)".to_string())
        } else if path.starts_with(repo) || path.starts_with(dir.join(".flocks")) {
            Some(format!(
                "`{given}` is inside the repository or flocks' own files, which sandboxed agents never see (each works in a repository of its own)"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(cx.err(span, "sandbox.read", why));
        }
        if !read.contains(&path) {
            read.push(path);
        }
    }
    let network = match s.network {
        None => SandboxNetwork::Proxy,
        Some(v) => SandboxNetwork::parse(v.get_ref()).ok_or_else(|| {
            cx.err(
                v.span(),
                "sandbox.network",
                format!(
                    "unknown network `{}`: use \"proxy\" (none but flocks' proxy, the default), \"none\" (no network at all) or \"host\" (the host's)",
                    v.get_ref()
                ),
            )
        })?,
    };
    Ok(SandboxConfig { read, network })
}

/// Every pool whose agents need flocks' proxy can reach it: a sandbox
/// with `network = "none"` cannot (a pool with a flocks credential there
/// is refused), nor can a Slurm compute node reach a loopback `[proxy]
/// listen` (a Slurm pool with a credential, or under `[network]`, needs an
/// address the nodes reach).
fn check_proxy_reach(
    cx: &Ctx,
    pools: &[PoolConfig],
    sandbox: &SandboxConfig,
    sandbox_span: Option<Range<usize>>,
    proxy: &ProxyConfig,
    listen_span: Option<Range<usize>>,
    gated: bool,
) -> Result<()> {
    let line = |span: Option<Range<usize>>| span.map(|s| cx.line(s));
    if sandbox.network == SandboxNetwork::None
        && let Some(p) = pools
            .iter()
            .find(|p| p.sandbox == SandboxMode::Bwrap && p.credential != CredentialChoice::Default)
    {
        return Err(Error::input(
            cx.path,
            line(sandbox_span),
            Some("sandbox.network"),
            format!(
                "\"none\" leaves pool {}'s sandboxed agents no way to flocks' proxy, which holds their credential: use \"proxy\" (no network but the proxy, the default)",
                p.name
            ),
        ));
    }
    if proxy.listen.ip().is_loopback()
        && let Some(p) = pools.iter().find(|p| {
            matches!(p.backend, BackendConfig::Slurm(_))
                && (gated || p.credential != CredentialChoice::Default)
        })
    {
        return Err(Error::input(
            cx.path,
            line(listen_span),
            Some("proxy.listen"),
            format!(
                "{} is loopback, which pool {}'s Slurm compute nodes cannot reach, and its agents need flocks' proxy ({}): listen on an address they reach, e.g. listen = \"0.0.0.0:7878\" (the login node's hostname is what they are given) or this machine's IP",
                proxy.listen,
                p.name,
                if p.credential != CredentialChoice::Default {
                    "it holds their credential"
                } else {
                    "[network] is set"
                }
            ),
        ));
    }
    Ok(())
}

/// `[proxy]` and `[network]`.
fn parse_network(
    cx: &Ctx,
    proxy: RawProxy,
    network: Option<Spanned<RawNetwork>>,
) -> Result<(ProxyConfig, Option<NetworkConfig>)> {
    let mut out = ProxyConfig::default();
    if let Some(u) = proxy.upstream {
        check_upstream(u.get_ref()).map_err(|e| cx.err(u.span(), "proxy.upstream", e))?;
        out.upstream = Some(u.get_ref().trim().to_string());
    }
    if let Some(l) = proxy.listen {
        out.listen = l.get_ref().trim().parse().map_err(|_| {
            cx.err(
                l.span(),
                "proxy.listen",
                format!(
                    "`{}` is not an address: give IP:PORT, e.g. \"127.0.0.1:0\" (port 0: any free port) or \"0.0.0.0:7878\" for agents on other machines",
                    l.get_ref()
                ),
            )
        })?;
    }
    let network = match network {
        None => None,
        Some(n) => {
            let n = n.into_inner();
            let mut allow = Vec::new();
            for entry in n.allow.map(|a| a.into_inner()).unwrap_or_default() {
                allow.push(
                    HostPattern::parse(entry.get_ref())
                        .map_err(|e| cx.err(entry.span(), "network.allow", e))?,
                );
            }
            Some(NetworkConfig {
                allow,
                notify_denied: n.notify_denied.is_some_and(|b| *b.get_ref()),
            })
        }
    };
    Ok((out, network))
}

fn parse_notify(
    cx: &Ctx,
    n: RawNotify,
    table_span: Range<usize>,
    number: usize,
    pools: &[PoolConfig],
    repo: &Path,
) -> Result<NotifyConfig> {
    let kinds = crate::report::Event::KINDS;
    let Some(on) = n.on.as_ref().filter(|on| !on.get_ref().is_empty()) else {
        let span =
            n.on.as_ref()
                .map(|o| o.span())
                .unwrap_or(table_span.clone());
        return Err(cx.err(
            span,
            "notify.on",
            format!(
                "notify #{number} is sent nothing: list event kinds, e.g. on = [\"needs_attention\", \"run_finished\"]"
            ),
        ));
    };
    let mut wanted: Vec<String> = Vec::new();
    for kind in on.get_ref() {
        let k = kind.get_ref().as_str();
        if k == "activity" {
            return Err(cx.err(
                kind.span(),
                "notify.on",
                "`activity` is not sent: it changes several times a second and is not in events.jsonl",
            ));
        }
        if !kinds.contains(&k) {
            let known: Vec<&str> = kinds.iter().copied().filter(|k| *k != "activity").collect();
            return Err(cx.err(
                kind.span(),
                "notify.on",
                format!("unknown event kind `{k}`: use {}", known.join(", ")),
            ));
        }
        if !wanted.iter().any(|w| w == k) {
            wanted.push(k.to_string());
        }
    }
    let webhook_only = |v: Option<Range<usize>>, key: &str| -> Result<()> {
        match v {
            Some(span) if n.webhook.is_none() => Err(cx.err(
                span,
                &format!("notify.{key}"),
                format!("`{key}` is for a webhook, and notify #{number} has none"),
            )),
            _ => Ok(()),
        }
    };
    webhook_only(n.format.as_ref().map(|f| f.span()), "format")?;
    webhook_only(n.headers_env.as_ref().map(|h| h.span()), "headers_env")?;
    let target = match (n.command, n.webhook) {
        (Some(_), Some(w)) => {
            return Err(cx.err(
                w.span(),
                "notify.webhook",
                format!("notify #{number} has both `command` and `webhook`: give one (write two [[notify]] tables for both)"),
            ));
        }
        (None, None) => {
            return Err(cx.err(
                table_span,
                "notify.command",
                format!("notify #{number} needs `command` (argv, e.g. [\"notify-send\", \"flocks\"]) or `webhook` (an https:// URL)"),
            ));
        }
        (Some(c), None) => {
            let mut argv = c.get_ref().clone();
            if argv.first().is_none_or(|a| a.is_empty()) {
                return Err(cx.err(c.span(), "notify.command", "must be a non-empty argv array"));
            }
            // A program named by a path is found from this file's directory
            // (the command itself runs in your home directory).
            if argv[0].contains('/') || argv[0].starts_with('~') {
                let dir = cx.path.parent().unwrap_or(Path::new("/"));
                argv[0] = normalize(&resolve_from(dir, Path::new(&argv[0])))
                    .display()
                    .to_string();
            }
            // Container and remote agents can write the repository while the
            // run goes on; what a notifier runs on this host must be out of
            // their reach (the local backend is no boundary anyway).
            let agents_write_repo = pools
                .iter()
                .any(|p| !matches!(p.backend, BackendConfig::Local));
            let repo = normalize(repo);
            if agents_write_repo
                && let Some(word) = argv.iter().find(|w| {
                    Path::new(w).is_absolute() && normalize(Path::new(w)).starts_with(&repo)
                })
            {
                return Err(cx.err(
                    c.span(),
                    "notify.command",
                    format!(
                        "`{word}` is in the repository, which container and remote agents can write while the run goes on, and notify #{number} runs on this host: keep the script outside the repository (e.g. in ~/.config/flocks/)"
                    ),
                ));
            }
            NotifyTarget::Command { argv }
        }
        (None, Some(w)) => {
            let url = w.get_ref().trim().to_string();
            match reqwest::Url::parse(&url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                Ok(u) => {
                    return Err(cx.err(
                        w.span(),
                        "notify.webhook",
                        format!(
                            "`{}:` URLs are not posted to: give an https:// (or http://) URL",
                            u.scheme()
                        ),
                    ));
                }
                Err(e) => {
                    return Err(cx.err(
                        w.span(),
                        "notify.webhook",
                        format!("not a URL ({e}): give an https:// (or http://) URL"),
                    ));
                }
            }
            let format = match n.format.as_ref().map(|f| f.get_ref().as_str()) {
                None | Some("json") => WebhookFormat::Json,
                Some("slack") => WebhookFormat::Slack,
                Some("text") => WebhookFormat::Text,
                Some(other) => {
                    let span = n.format.as_ref().map(|f| f.span()).unwrap_or(table_span);
                    return Err(cx.err(
                        span,
                        "notify.format",
                        format!("unknown format `{other}`: use \"json\", \"slack\" or \"text\""),
                    ));
                }
            };
            let mut headers = Vec::new();
            for (name, var) in n.headers_env.map(|h| h.into_inner()).unwrap_or_default() {
                if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(cx.err(
                        var.span(),
                        "notify.headers_env",
                        format!("`{name}` is not an HTTP header name"),
                    ));
                }
                if !env_name_ok(var.get_ref()) {
                    return Err(cx.err(
                        var.span(),
                        "notify.headers_env",
                        format!(
                            "header {name}: `{}` is not an environment variable name (the value is read from that variable, never written here)",
                            var.get_ref()
                        ),
                    ));
                }
                headers.push(HeaderFromEnv {
                    name,
                    line: cx.line(var.span()),
                    env: var.into_inner(),
                });
            }
            NotifyTarget::Webhook {
                url,
                format,
                headers,
            }
        }
    };
    let timeout = match cx.non_negative(&n.timeout_secs, "notify.timeout_secs")? {
        Some(0.0) => {
            let span = n
                .timeout_secs
                .as_ref()
                .map(|t| t.span())
                .unwrap_or_default();
            return Err(cx.err(
                span,
                "notify.timeout_secs",
                "must be more than 0 (a delivery always has a time limit)",
            ));
        }
        t => secs(t.unwrap_or(10.0)),
    };
    let coalesce = secs(
        cx.non_negative(&n.coalesce_secs, "notify.coalesce_secs")?
            .unwrap_or(5.0),
    );
    Ok(NotifyConfig {
        number,
        on: wanted,
        target,
        timeout,
        coalesce,
    })
}

/// `best_of = N`, or a `[best_of]` table with `n` and `judge`.
fn parse_best_of(cx: &Ctx, v: S<toml::Value>) -> Result<BestOfConfig> {
    let Some(v) = v else {
        return Ok(BestOfConfig::default());
    };
    let span = v.span();
    let count = |n: &toml::Value, key: &str| match n.as_integer() {
        Some(n) if (1..=i64::from(MAX_BEST_OF)).contains(&n) => Ok(n as u32),
        _ => Err(cx.err(
            span.clone(),
            key,
            format!("must be a whole number from 1 to {MAX_BEST_OF}, found {n}"),
        )),
    };
    match v.into_inner() {
        n @ toml::Value::Integer(_) => Ok(BestOfConfig {
            n: count(&n, "best_of")?,
            judge: false,
        }),
        toml::Value::Table(t) => {
            let mut out = BestOfConfig::default();
            for (key, value) in t {
                match key.as_str() {
                    "n" => out.n = count(&value, "best_of.n")?,
                    "judge" => {
                        out.judge = value.as_bool().ok_or_else(|| {
                            cx.err(
                                span.clone(),
                                "best_of.judge",
                                format!("expected true or false, found {value}"),
                            )
                        })?
                    }
                    other => {
                        return Err(cx.err(
                            span.clone(),
                            &format!("best_of.{other}"),
                            "unknown key (expected `n` or `judge`)",
                        ));
                    }
                }
            }
            Ok(out)
        }
        other => Err(cx.err(
            span,
            "best_of",
            format!(
                "expected a number of variants (best_of = 3) or a table (`[best_of]` with n and judge), found {other}"
            ),
        )),
    }
}

fn parse_pool(
    cx: &Ctx,
    dir: &Path,
    p: RawPool,
    table_span: Range<usize>,
    index: usize,
    cred_names: &HashSet<String>,
    pool_names: &mut HashSet<String>,
) -> Result<PoolConfig> {
    let name = match &p.name {
        Some(n) if n.get_ref().is_empty() => {
            return Err(cx.err(n.span(), "containers.name", "must not be empty"));
        }
        Some(n) => n.get_ref().clone(),
        None => {
            return Err(cx.err(
                table_span,
                "containers.name",
                format!(
                    "pool #{} has no name: give it one (name = \"...\")",
                    index + 1
                ),
            ));
        }
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        let span = p
            .name
            .as_ref()
            .map(|n| n.span())
            .unwrap_or(table_span.clone());
        return Err(cx.err(
            span,
            "containers.name",
            format!("`{name}`: a pool name may hold letters, digits, `-`, `_` and `.`"),
        ));
    }
    if !pool_names.insert(name.clone()) {
        let span = p
            .name
            .as_ref()
            .map(|n| n.span())
            .unwrap_or(table_span.clone());
        return Err(cx.err(span, "containers.name", format!("duplicate pool `{name}`")));
    }
    let backend = p
        .backend
        .as_ref()
        .map(|b| b.get_ref().as_str())
        .unwrap_or("local");
    let allowed: &[&str] = match backend {
        "local" => LOCAL_KEYS,
        "docker" => DOCKER_KEYS,
        "ssh" => SSH_KEYS,
        "exedev" => EXEDEV_KEYS,
        "slurm" => SLURM_KEYS,
        other => {
            let span = p
                .backend
                .as_ref()
                .map(|b| b.span())
                .unwrap_or(table_span.clone());
            return Err(cx.err(
                span,
                "containers.backend",
                format!(
                    "unknown backend `{other}`: use \"local\", \"docker\", \"ssh\", \"exedev\" or \"slurm\""
                ),
            ));
        }
    };
    for (key, span) in p.present() {
        if COMMON_KEYS.contains(&key) || allowed.contains(&key) {
            continue;
        }
        let owners: Vec<&str> = [
            ("local", LOCAL_KEYS),
            ("docker", DOCKER_KEYS),
            ("ssh", SSH_KEYS),
            ("exedev", EXEDEV_KEYS),
            ("slurm", SLURM_KEYS),
        ]
        .iter()
        .filter(|(_, keys)| keys.contains(&key))
        .map(|(b, _)| *b)
        .collect();
        return Err(cx.err(
            span,
            &format!("containers.{key}"),
            format!(
                "`{key}` belongs to {} pools, but pool `{name}` has backend = \"{backend}\"",
                match owners.split_last() {
                    Some((last, rest)) if !rest.is_empty() =>
                        format!("{} and {last}", rest.join(", ")),
                    _ => owners.join(""),
                }
            ),
        ));
    }

    let max_worktrees = cx
        .count(&p.max_worktrees, "containers.max_worktrees", 1)?
        .unwrap_or(1) as usize;
    let credential = match p.credential.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("default") => CredentialChoice::Default,
        Some("rotate") => CredentialChoice::Rotate,
        Some(c) if cred_names.contains(c) => CredentialChoice::Named(c.to_string()),
        Some(c) => {
            let span = p
                .credential
                .as_ref()
                .map(|c| c.span())
                .unwrap_or(table_span.clone());
            return Err(cx.err(
                span,
                "containers.credential",
                format!("no [[credentials]] entry named `{c}` (use \"default\", \"rotate\" or a credential name)"),
            ));
        }
    };
    if credential == CredentialChoice::Rotate && cred_names.is_empty() {
        let span = p
            .credential
            .as_ref()
            .map(|c| c.span())
            .unwrap_or(table_span.clone());
        return Err(cx.err(
            span,
            "containers.credential",
            "\"rotate\" needs at least one [[credentials]] entry",
        ));
    }
    let env = p
        .env
        .as_ref()
        .map(|e| e.get_ref().clone())
        .unwrap_or_default();
    let take = |v: &S<String>| v.as_ref().map(|s| s.get_ref().clone());
    let take_list =
        |v: &S<Vec<String>>| v.as_ref().map(|s| s.get_ref().clone()).unwrap_or_default();
    let setup = p
        .setup
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default();
    let remote_dir = take(&p.remote_dir).unwrap_or_else(|| "~/flocks".into());
    let sandbox = match &p.sandbox {
        None => SandboxMode::None,
        Some(v) => SandboxMode::parse(v.get_ref()).ok_or_else(|| {
            cx.err(
                v.span(),
                "containers.sandbox",
                format!(
                    "unknown sandbox `{}`: use \"bwrap\" (a bubblewrap sandbox per attempt) or \"none\"",
                    v.get_ref()
                ),
            )
        })?,
    };

    let backend = match backend {
        "local" => BackendConfig::Local,
        "docker" => {
            let project = match (&p.project, &p.kap_project) {
                (Some(a), Some(_)) => {
                    return Err(cx.err(
                        a.span(),
                        "containers.project",
                        "give `project` or its alias `kap_project`, not both",
                    ));
                }
                (Some(v), None) | (None, Some(v)) => Some(v),
                (None, None) => None,
            };
            if p.container.is_none() && project.is_none() && p.image.is_none() {
                return Err(cx.err(
                    table_span,
                    "containers.container",
                    format!("docker pool `{name}` needs `container` (a name or id) or `project` (a folder whose devcontainer to use)"),
                ));
            }
            if let Some(u) = &p.user
                && crate::config::names_root(u.get_ref())
                && !p.allow_root.as_ref().is_some_and(|a| *a.get_ref())
            {
                return Err(cx.err(
                    u.span(),
                    "containers.user",
                    format!(
                        "`{}` is root in the container: {}",
                        u.get_ref(),
                        crate::config::ROOT_REFUSED
                    ),
                ));
            }
            if let Some(m) = &p.workspace_mount
                && !m.get_ref().starts_with('/')
            {
                return Err(cx.err(
                    m.span(),
                    "containers.workspace_mount",
                    "must be an absolute path in the container",
                ));
            }
            let workspace = match &p.workspace {
                None => WorkspaceMode::Clone,
                Some(w) => WorkspaceMode::parse(w.get_ref()).ok_or_else(|| {
                    cx.err(
                        w.span(),
                        "containers.workspace",
                        format!(
                            "`{}`: use \"clone\" (the default) or \"mount\"",
                            w.get_ref()
                        ),
                    )
                })?,
            };
            if let Some(d) = &p.clone_dir {
                let v = d.get_ref();
                let bad = if !v.starts_with('/') {
                    Some("must be an absolute path in the container")
                } else if v.contains(['\n', '\r', '\0']) {
                    Some("must be one line")
                } else if Path::new(v)
                    .components()
                    .any(|c| c == std::path::Component::ParentDir)
                {
                    Some("must not contain `..`")
                } else if v.trim_end_matches('/').is_empty() {
                    Some("must not be `/`")
                } else {
                    None
                };
                if let Some(why) = bad {
                    return Err(cx.err(d.span(), "containers.clone_dir", why));
                }
            }
            let max_fetch_mb = cx
                .count(&p.max_fetch_mb, "containers.max_fetch_mb", 1)?
                .map(|n| n as u64);
            if workspace == WorkspaceMode::Mount {
                for (v, key) in [
                    (p.clone_dir.as_ref().map(|v| v.span()), "clone_dir"),
                    (p.max_fetch_mb.as_ref().map(|v| v.span()), "max_fetch_mb"),
                ] {
                    if let Some(span) = v {
                        return Err(cx.err(
                            span,
                            &format!("containers.{key}"),
                            format!("`{key}` is for workspace = \"clone\"; pool `{name}` has workspace = \"mount\""),
                        ));
                    }
                }
            }
            BackendConfig::Docker(DockerConfig {
                workspace,
                clone_dir: take(&p.clone_dir).map(|d| {
                    let t = d.trim_end_matches('/');
                    t.to_string()
                }),
                max_fetch_mb,
                container: take(&p.container),
                project: project.map(|v| normalize(&resolve_from(dir, Path::new(v.get_ref())))),
                workspace_mount: take(&p.workspace_mount),
                user: take(&p.user),
                allow_root: p.allow_root.as_ref().is_some_and(|a| *a.get_ref()),
                image: take(&p.image),
                mounts: take_list(&p.mounts),
                network: take(&p.network),
            })
        }
        "ssh" => {
            let Some(host) = take(&p.host) else {
                return Err(cx.err(
                    table_span,
                    "containers.host",
                    format!("ssh pool `{name}` needs a `host`"),
                ));
            };
            if host.starts_with('-') {
                let span = p.host.as_ref().map(|h| h.span()).unwrap_or(table_span);
                return Err(cx.err(span, "containers.host", "must not start with `-`"));
            }
            let port = match &p.port {
                Some(v) if !(1..=65535).contains(v.get_ref()) => {
                    return Err(cx.err(v.span(), "containers.port", "must be between 1 and 65535"));
                }
                Some(v) => Some(*v.get_ref() as u16),
                None => None,
            };
            BackendConfig::Ssh(SshConfig {
                host,
                port,
                identity_file: take(&p.identity_file).map(|f| resolve_from(dir, Path::new(&f))),
                ssh_options: take_list(&p.ssh_options),
                remote_dir,
                setup,
            })
        }
        "exedev" => BackendConfig::Exedev(ExedevConfig {
            count: cx.count(&p.count, "containers.count", 1)?.unwrap_or(1) as usize,
            lobby: take(&p.lobby).unwrap_or_else(|| "exe.dev".into()),
            identity_file: take(&p.identity_file).map(|f| resolve_from(dir, Path::new(&f))),
            ssh_options: take_list(&p.ssh_options),
            remote_dir,
            setup,
        }),
        "slurm" => {
            // Names the scheduler knows; never an option of its own.
            let name_of = |v: &S<String>, key: &str| -> Result<Option<String>> {
                match v {
                    None => Ok(None),
                    Some(s)
                        if s.get_ref().is_empty()
                            || s.get_ref().starts_with('-')
                            || !s
                                .get_ref()
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                    {
                        Err(cx.err(
                            s.span(),
                            &format!("containers.{key}"),
                            format!(
                                "`{}`: a Slurm {key} name holds letters, digits, `-`, `_` and `.`",
                                s.get_ref()
                            ),
                        ))
                    }
                    Some(s) => Ok(Some(s.get_ref().clone())),
                }
            };
            let partition = name_of(&p.partition, "partition")?;
            let account = name_of(&p.account, "account")?;
            let qos = name_of(&p.qos, "qos")?;
            let sbatch_args = take_list(&p.sbatch_args);
            if let Some(s) = &p.sbatch_args {
                for a in &sbatch_args {
                    let opt = a.split('=').next().unwrap_or(a);
                    let short = SBATCH_OWN
                        .iter()
                        .any(|o| o.len() == 2 && a.starts_with(o) && !a.starts_with("--"));
                    if SBATCH_OWN.contains(&opt) || short {
                        return Err(cx.err(
                            s.span(),
                            "containers.sbatch_args",
                            format!(
                                "`{a}`: flocks sets the job's name, comment, partition, account and qos itself (use the `partition`, `account` and `qos` keys)"
                            ),
                        ));
                    }
                    if a.contains(['\n', '\0']) {
                        return Err(cx.err(
                            s.span(),
                            "containers.sbatch_args",
                            "an argument holds a newline or a NUL byte",
                        ));
                    }
                }
            }
            BackendConfig::Slurm(SlurmConfig {
                partition,
                account,
                qos,
                sbatch_args,
                remote_dir,
                setup,
            })
        }
        _ => unreachable!("backend checked above"),
    };
    Ok(PoolConfig {
        name,
        max_worktrees,
        credential,
        env,
        backend,
        sandbox,
    })
}

/// Lexically clean a path (`a/./b/../c` -> `a/c`) without touching the disk.
pub(crate) fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config> {
        parse(Path::new("/p/flocks.toml"), text)
    }

    fn err(text: &str) -> String {
        parse_str(text).unwrap_err().to_string()
    }

    #[test]
    fn guards_parse_and_bad_values_name_the_key() {
        let c = parse_str(
            "min_free_disk_gb = 2.5\ncredential_ramp_secs = 5\n[[credentials]]\nname = \"a\"\nenv = \"A\"\nmax_concurrent = 2\nmax_cost_usd = 10\n[workspace]\nmax_spare_worktrees = 3\n",
        )
        .unwrap();
        assert_eq!(c.min_free_disk, Some(5 * GIB / 2));
        assert_eq!(c.credential_ramp, Duration::from_secs(5));
        assert_eq!(c.credentials[0].max_concurrent, Some(2));
        assert_eq!(c.credentials[0].max_cost_usd, Some(10.0));
        assert_eq!(c.workspace.max_spare_worktrees, Some(3));
        let d = parse_str("").unwrap();
        assert_eq!(d.min_free_disk, None);
        assert_eq!(d.credential_ramp, Duration::from_secs(30));
        assert_eq!(d.workspace.max_spare_worktrees, None);
        let e = err("min_free_disk_gb = -1\n");
        assert!(e.contains("flocks.toml:1: field `min_free_disk_gb`: must be a non-negative number of gigabytes"), "{e}");
        let e = err("[[credentials]]\nname = \"a\"\nenv = \"A\"\nmax_concurrent = 0\n");
        assert!(
            e.contains("flocks.toml:4: field `credentials.max_concurrent`: must be at least 1"),
            "{e}"
        );
        let e = err("[[credentials]]\nname = \"a\"\nenv = \"A\"\nmax_cost_usd = -2\n");
        assert!(e.contains("flocks.toml:4: field `credentials.max_cost_usd`: must be a non-negative number of dollars"), "{e}");
        let e = err("[workspace]\nmax_spare_worktrees = -1\n");
        assert!(
            e.contains("flocks.toml:2: field `workspace.max_spare_worktrees`: must be at least 0"),
            "{e}"
        );
    }

    #[test]
    fn defaults() {
        let c = parse_str("").unwrap();
        assert_eq!(c.max_agents, 5);
        assert_eq!(c.pools.len(), 1);
        assert_eq!(c.pools[0].max_worktrees, 5);
        assert_eq!(c.workspace.base, "main");
        assert_eq!(c.agent.command, "claude");
        assert_eq!(c.agent_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(c.stall_timeout, None);
        assert_eq!(c.max_retries, 3);
    }

    #[test]
    fn durations_with_units() {
        let c = parse_str(
            "agent_timeout_secs = \"30m\"\nstall_timeout_secs = \"1h30m\"\nkill_grace_secs = \"90s\"\n\
             stagger_delay_secs = \"0.5s\"\ncredential_ramp_secs = \"2m\"\n\
             [workspace]\nsetup_timeout_secs = \"10m\"\n[validate]\ntimeout_secs = \"1h\"\n\
             [[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\ntimeout_secs = \"20s\"\ncoalesce_secs = \"1m\"\n",
        )
        .unwrap();
        assert_eq!(c.agent_timeout, Some(Duration::from_secs(1800)));
        assert_eq!(c.stall_timeout, Some(Duration::from_secs(5400)));
        assert_eq!(c.kill_grace, Duration::from_secs(90));
        assert_eq!(c.stagger_delay, Duration::from_millis(500));
        assert_eq!(c.credential_ramp, Duration::from_secs(120));
        assert_eq!(c.workspace.setup_timeout, Some(Duration::from_secs(600)));
        assert_eq!(c.validate.timeout, Some(Duration::from_secs(3600)));
        assert_eq!(c.notify[0].timeout, Duration::from_secs(20));
        assert_eq!(c.notify[0].coalesce, Duration::from_secs(60));
        let e = err("kill_grace_secs = 1\nagent_timeout_secs = \"soon\"\n");
        assert!(
            e.contains("flocks.toml:2: field `agent_timeout_secs`: `soon` is not a duration"),
            "{e}"
        );
        let e = err("stall_timeout_secs = true\n");
        assert!(
            e.contains("expected a number of seconds or a duration such as \"30m\", got true"),
            "{e}"
        );
    }

    #[test]
    fn fractions_and_zero() {
        let c = parse_str("stagger_delay_secs = 0.5\nagent_timeout_secs = 0\nkill_grace_secs = 2")
            .unwrap();
        assert_eq!(c.stagger_delay, Duration::from_millis(500));
        assert_eq!(c.agent_timeout, None);
        assert_eq!(c.kill_grace, Duration::from_secs(2));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = err("max_agents = 2\n\n[agent]\ncommnd = \"x\"\n");
        assert!(e.contains("flocks.toml:4"), "{e}");
        assert!(e.contains("commnd"), "{e}");
    }

    #[test]
    fn key_of_another_backend() {
        let e = err(
            "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\nhost = \"x\"\n",
        );
        assert!(e.contains("flocks.toml:5"), "{e}");
        assert!(e.contains("`host` belongs to ssh pools"), "{e}");
    }

    #[test]
    fn slurm_pools() {
        let c = parse_str(
            "[[containers]]\nname = \"cluster\"\nbackend = \"slurm\"\npartition = \"gpu-small\"\naccount = \"lab-ai\"\nqos = \"normal\"\nsbatch_args = [\"--mem=8G\", \"--cpus-per-task\", \"4\"]\nremote_dir = \"/shared/$USER/flocks\"\nmax_worktrees = 50\nsetup = [\"module load git\"]\n",
        )
        .unwrap();
        let BackendConfig::Slurm(s) = &c.pools[0].backend else {
            panic!("{:?}", c.pools[0].backend);
        };
        assert_eq!(s.partition.as_deref(), Some("gpu-small"));
        assert_eq!(s.account.as_deref(), Some("lab-ai"));
        assert_eq!(s.qos.as_deref(), Some("normal"));
        assert_eq!(s.sbatch_args, ["--mem=8G", "--cpus-per-task", "4"]);
        assert_eq!(s.remote_dir, "/shared/$USER/flocks");
        assert_eq!(c.pools[0].max_worktrees, 50);
        assert_eq!(c.pools[0].backend.kind(), "slurm");
        // A key of another backend, and a slurm key elsewhere.
        let e = err(
            "[[containers]]\nname = \"c\"\nbackend = \"docker\"\ncontainer = \"x\"\npartition = \"gpu\"\n",
        );
        assert!(
            e.contains("flocks.toml:5") && e.contains("`partition` belongs to slurm pools"),
            "{e}"
        );
        let e = err("[[containers]]\nname = \"c\"\nbackend = \"slurm\"\nhost = \"x\"\n");
        assert!(e.contains("`host` belongs to ssh pools"), "{e}");
        // sbatch_args is argv, not a string.
        let e =
            err("[[containers]]\nname = \"c\"\nbackend = \"slurm\"\nsbatch_args = \"--mem=8G\"\n");
        assert!(
            e.contains("flocks.toml:4") && e.contains("containers.sbatch_args"),
            "{e}"
        );
        // Options flocks sets itself, and names that would be options.
        for (bad, line) in [
            ("sbatch_args = [\"--job-name=x\"]", "sbatch_args"),
            ("sbatch_args = [\"-Jx\"]", "sbatch_args"),
            ("sbatch_args = [\"--comment\", \"x\"]", "sbatch_args"),
            ("sbatch_args = [\"-p\", \"debug\"]", "sbatch_args"),
            ("partition = \"--wrap=x\"", "partition"),
            ("account = \"a b\"", "account"),
            ("qos = \"\"", "qos"),
        ] {
            let e = err(&format!(
                "[[containers]]\nname = \"c\"\nbackend = \"slurm\"\n{bad}\n"
            ));
            assert!(
                e.contains("flocks.toml:4") && e.contains(&format!("containers.{line}")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn land_redo_conflicts() {
        assert_eq!(
            parse_str("").unwrap().land.redo_conflicts,
            RedoConflicts::AtLand
        );
        let c = parse_str("[land]\nredo_conflicts = \"early\"\n").unwrap();
        assert_eq!(c.land.redo_conflicts, RedoConflicts::Early);
        let c =
            parse_str("[land]\npush = \"origin\"\nafter_push = [\"true\", [\"echo\", \"ok\"]]\n")
                .unwrap();
        assert_eq!(c.land.push.as_deref(), Some("origin"));
        assert_eq!(c.land.after_push.len(), 2);
        for bad in ["", "-o", "a b", "x..y"] {
            let e = err(&format!("[land]\npush = {bad:?}\n"));
            assert!(
                e.contains("flocks.toml:2")
                    && e.contains("land.push")
                    && e.contains("not a git remote"),
                "{bad}: {e}"
            );
        }
        let e = err("[land]\nafter_push = 3\n");
        assert!(
            e.contains("flocks.toml:2") && e.contains("land.after_push"),
            "{e}"
        );
        let e = err("[land]\nredo_conflicts = \"soon\"\n");
        assert!(
            e.contains("flocks.toml:2") && e.contains("land.redo_conflicts") && e.contains("early"),
            "{e}"
        );
    }

    #[test]
    fn validate_pool_is_a_docker_pool() {
        let pools = "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\n\n\
                     [[containers]]\nname = \"here\"\nbackend = \"local\"\n\n";
        let c = parse_str(&format!(
            "{pools}[validate]\ncommands = [\"true\"]\npool = \"dev\"\n"
        ))
        .unwrap();
        assert_eq!(c.validate.pool.as_deref(), Some("dev"));
        let e = err(&format!("{pools}[validate]\npool = \"here\"\n"));
        assert!(
            e.contains("flocks.toml:11") && e.contains("validate.pool"),
            "{e}"
        );
        assert!(e.contains("`here` is a local pool"), "{e}");
        let e = err(&format!("{pools}[validate]\npool = \"nope\"\n"));
        assert!(
            e.contains("flocks.toml:11") && e.contains("no pool named `nope`"),
            "{e}"
        );
    }

    #[test]
    fn a_root_exec_user_needs_allow_root() {
        let pool = "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\n";
        for user in ["root", "0", "0:0", "root:wheel", "000"] {
            let e = err(&format!("{pool}user = \"{user}\"\n"));
            assert!(
                e.contains("flocks.toml:5") && e.contains("containers.user"),
                "{e}"
            );
            assert!(
                e.contains("allow_root = true") && e.contains("reaper"),
                "{e}"
            );
            let c = parse_str(&format!("{pool}user = \"{user}\"\nallow_root = true\n")).unwrap();
            assert!(matches!(&c.pools[0].backend, BackendConfig::Docker(d) if d.allow_root));
        }
        for user in ["1000", "1000:1000", "dev", "10"] {
            parse_str(&format!("{pool}user = \"{user}\"\n")).unwrap();
        }
        let e = err("[[containers]]\nname = \"l\"\nallow_root = true\n");
        assert!(e.contains("allow_root"), "{e}");
    }

    #[test]
    fn workspace_setup() {
        let c = parse_str("").unwrap();
        assert!(c.workspace.setup.is_empty());
        assert_eq!(c.workspace.setup_timeout, Some(Duration::from_secs(1800)));
        assert!(!c.workspace.setup_on_reuse);
        let c = parse_str(
            "[workspace]\nsetup = [\"npm ci\", [\"make\", \"deps\"]]\nsetup_timeout_secs = 0\nsetup_on_reuse = true\n",
        )
        .unwrap();
        assert_eq!(c.workspace.setup[0].argv(), vec!["sh", "-c", "npm ci"]);
        assert_eq!(c.workspace.setup[1].argv(), vec!["make", "deps"]);
        assert_eq!(c.workspace.setup_timeout, None);
        assert!(c.workspace.setup_on_reuse);
        let e = err("[workspace]\nsetup_timeout_secs = -1\n");
        assert!(
            e.contains("flocks.toml:2") && e.contains("workspace.setup_timeout_secs"),
            "{e}"
        );
        let e = err("[workspace]\nsetup = [\"\"]\n");
        assert!(
            e.contains("flocks.toml:2") && e.contains("empty command"),
            "{e}"
        );
        let e = err("[workspace]\nsetup_on_reuse = \"yes\"\n");
        assert!(
            e.contains("flocks.toml:2") && e.contains("setup_on_reuse"),
            "{e}"
        );
    }

    #[test]
    fn unknown_backend() {
        let e = err("[[containers]]\nname = \"x\"\nbackend = \"k8s\"\n");
        assert!(
            e.contains(":3") && e.contains("unknown backend `k8s`"),
            "{e}"
        );
    }

    #[test]
    fn mistyped_value() {
        let e = err("max_agents = \"five\"\n");
        assert!(e.contains("flocks.toml:1"), "{e}");
    }

    #[test]
    fn unknown_credential() {
        let e = err("[[containers]]\nname = \"a\"\ncredential = \"nope\"\n");
        assert!(e.contains("no [[credentials]] entry named `nope`"), "{e}");
    }

    #[test]
    fn commands_string_or_argv() {
        let c =
            parse_str("[validate]\ncommands = [\"cargo test\", [\"make\", \"check\"]]\n").unwrap();
        assert_eq!(
            c.validate.commands[0].argv(),
            vec!["sh", "-c", "cargo test"]
        );
        assert_eq!(c.validate.commands[1].argv(), vec!["make", "check"]);
    }

    #[test]
    fn plan_template_is_resolved_and_typos_name_the_line() {
        let c = parse_str("[prompt]\nplan_template = \"plan.md\"\n").unwrap();
        assert_eq!(c.plan_template.as_deref(), Some(Path::new("/p/plan.md")));
        let e = err("[prompt]\nplan_templte = \"plan.md\"\n");
        assert!(
            e.contains("flocks.toml:2") && e.contains("plan_templte"),
            "{e}"
        );
    }

    #[test]
    fn best_of_and_variants() {
        let c = parse_str("best_of = 3\n").unwrap();
        assert_eq!(c.best_of, BestOfConfig { n: 3, judge: false });
        let c = parse_str("[best_of]\nn = 2\njudge = true\n").unwrap();
        assert_eq!(c.best_of, BestOfConfig { n: 2, judge: true });
        let c = parse_str("[best_of]\njudge = true\n").unwrap();
        assert_eq!(c.best_of, BestOfConfig { n: 1, judge: true });
        assert_eq!(parse_str("").unwrap().best_of, BestOfConfig::default());
        let e = err("max_agents = 2\nbest_of = 0\n");
        assert!(
            e.contains("flocks.toml:2: field `best_of`: must be a whole number from 1 to 10"),
            "{e}"
        );
        let e = err("[best_of]\njudge = \"yes\"\n");
        assert!(e.contains("`best_of.judge`: expected true or false"), "{e}");
        let e = err("[best_of]\njury = true\n");
        assert!(e.contains("`best_of.jury`: unknown key"), "{e}");
        let e = err("best_of = \"3\"\n");
        assert!(
            e.contains("`best_of`: expected a number of variants"),
            "{e}"
        );
        let c = parse_str(
            "[[variants]]\nmodel = \"opus\"\n[[variants]]\nargs = [\"-x\"]\nprompt_suffix = \"small\"\n",
        )
        .unwrap();
        assert_eq!(c.variants.len(), 2);
        assert_eq!(c.variant(1).unwrap().model.as_deref(), Some("opus"));
        assert_eq!(
            c.variant(2).unwrap().prompt_suffix.as_deref(),
            Some("small")
        );
        assert_eq!(c.variant(3), c.variant(1));
        let e = err("max_agents = 2\n[[variants]]\n");
        assert!(
            e.contains("flocks.toml:2: field `variants`: this [[variants]] table changes nothing"),
            "{e}"
        );
        let e = err("[[variants]]\nmodle = \"x\"\n");
        assert!(e.contains("modle"), "{e}");
    }

    #[test]
    fn docker_workspace_keys() {
        let pool = "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"c\"\n";
        let c = parse_str(pool).unwrap();
        match &c.pools[0].backend {
            BackendConfig::Docker(d) => {
                assert_eq!(d.workspace, WorkspaceMode::Clone);
                assert_eq!(d.clone_dir(), "/var/tmp/flocks");
                assert_eq!(d.max_fetch_bytes(), 500 << 20);
            }
            other => panic!("{other:?}"),
        }
        let c = parse_str(&format!(
            "{pool}workspace = \"clone\"\nclone_dir = \"/srv/f/\"\nmax_fetch_mb = 20\n"
        ))
        .unwrap();
        match &c.pools[0].backend {
            BackendConfig::Docker(d) => {
                assert_eq!(d.clone_dir(), "/srv/f");
                assert_eq!(d.max_fetch_bytes(), 20 << 20);
            }
            other => panic!("{other:?}"),
        }
        for (extra, line, said) in [
            ("workspace = \"copy\"\n", 5, "containers.workspace"),
            ("clone_dir = \"rel/dir\"\n", 5, "absolute path"),
            ("clone_dir = \"/a/../b\"\n", 5, "`..`"),
            ("clone_dir = \"/\"\n", 5, "must not be `/`"),
            ("max_fetch_mb = 0\n", 5, "containers.max_fetch_mb"),
            ("max_fetch_mb = \"big\"\n", 5, "max_fetch_mb"),
            (
                "workspace = \"mount\"\nclone_dir = \"/x\"\n",
                6,
                "workspace = \"mount\"",
            ),
        ] {
            let e = err(&format!("{pool}{extra}"));
            assert!(
                e.contains(&format!("flocks.toml:{line}")) && e.contains(said),
                "{extra}: {e}"
            );
        }
        for key in [
            "workspace = \"clone\"",
            "clone_dir = \"/x\"",
            "max_fetch_mb = 5",
        ] {
            let e = err(&format!(
                "[[containers]]\nname = \"s\"\nbackend = \"ssh\"\nhost = \"h\"\n{key}\n"
            ));
            assert!(
                e.contains("flocks.toml:5") && e.contains("belongs to docker pools"),
                "{key}: {e}"
            );
        }
        let e = err("[[containers]]\nname = \"l\"\nmax_fetch_mb = 5\n");
        assert!(
            e.contains("flocks.toml:3") && e.contains("belongs to docker pools"),
            "{e}"
        );
    }

    #[test]
    fn sandbox_keys() {
        let c = parse_str("").unwrap();
        assert_eq!(c.pools[0].sandbox, SandboxMode::None);
        assert_eq!(c.sandbox, SandboxConfig::default());
        let c = parse_str(
            "[[containers]]\nname = \"here\"\nsandbox = \"bwrap\"\n\n[sandbox]\nread = [\"/opt/tool\", \"/opt/tool/\", \"/usr/../srv\"]\nnetwork = \"host\"\n",
        )
        .unwrap();
        assert_eq!(c.pools[0].sandbox, SandboxMode::Bwrap);
        assert_eq!(
            c.sandbox.read,
            vec![PathBuf::from("/opt/tool"), PathBuf::from("/srv")]
        );
        assert_eq!(c.sandbox.network, SandboxNetwork::Host);
        let c = parse_str("[[containers]]\nname = \"here\"\nsandbox = \"none\"\n").unwrap();
        assert_eq!(c.pools[0].sandbox, SandboxMode::None);
        assert_eq!(c.sandbox.network, SandboxNetwork::Proxy);
    }

    #[test]
    fn agents_that_need_the_proxy_must_be_able_to_reach_it() {
        let bwrap = "[[credentials]]\nname = \"k\"\nenv = \"K\"\n[[containers]]\nname = \"box\"\nsandbox = \"bwrap\"\ncredential = \"k\"\n";
        let e = err(&format!("{bwrap}[sandbox]\nnetwork = \"none\"\n"));
        assert!(e.contains("flocks.toml:9: field `sandbox.network`"), "{e}");
        assert!(e.contains("use \"proxy\""), "{e}");
        let c = parse_str(bwrap).unwrap();
        assert_eq!(c.sandbox.network, SandboxNetwork::Proxy);
        assert!(c.pools[0].egress_enforced(c.sandbox.network));
        assert!(!c.pools[0].egress_enforced(SandboxNetwork::Host));
        // Without a credential, "none" is no network at all.
        parse_str(
            "[[containers]]\nname = \"box\"\nsandbox = \"bwrap\"\n[sandbox]\nnetwork = \"none\"\n",
        )
        .unwrap();

        let slurm = "[[credentials]]\nname = \"k\"\nenv = \"K\"\n[[containers]]\nname = \"hpc\"\nbackend = \"slurm\"\ncredential = \"k\"\n";
        let e = err(slurm);
        assert!(e.contains("field `proxy.listen`"), "{e}");
        assert!(e.contains("pool hpc's Slurm compute nodes"), "{e}");
        let e = err(&format!("{slurm}[proxy]\nlisten = \"127.0.0.1:7878\"\n"));
        assert!(e.contains("flocks.toml:9: field `proxy.listen`"), "{e}");
        parse_str(&format!("{slurm}[proxy]\nlisten = \"0.0.0.0:0\"\n")).unwrap();
        // Its own login and no [network]: nothing to reach.
        parse_str("[[containers]]\nname = \"hpc\"\nbackend = \"slurm\"\n").unwrap();
        let e = err("[[containers]]\nname = \"hpc\"\nbackend = \"slurm\"\n[network]\nallow = []\n");
        assert!(e.contains("[network] is set"), "{e}");
    }

    #[test]
    fn docker_egress_is_enforced_only_for_clone_mode_without_a_network() {
        let enforced = |pool: &str| {
            let c = parse_str(&format!(
                "[[containers]]\nname = \"d\"\nbackend = \"docker\"\n{pool}"
            ))
            .unwrap();
            c.pools[0].egress_enforced(c.sandbox.network)
        };
        assert!(
            enforced("image = \"img\"\n"),
            "flocks up makes it without a network"
        );
        assert!(enforced("container = \"c\"\nnetwork = \"none\"\n"));
        assert!(
            !enforced("container = \"c\"\n"),
            "a devcontainer's own network"
        );
        assert!(!enforced("image = \"img\"\nnetwork = \"host\"\n"));
        assert!(!enforced("image = \"img\"\nnetwork = \"bridge\"\n"));
        assert!(!enforced(
            "image = \"img\"\nworkspace = \"mount\"\nnetwork = \"none\"\n"
        ));
    }

    #[test]
    fn sandbox_mistakes_name_the_line_and_field() {
        let cases = [
            (
                "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"c\"\nsandbox = \"bwrap\"\n",
                5,
                "containers.sandbox",
                "`sandbox` belongs to local pools, but pool `d` has backend = \"docker\"",
            ),
            (
                "[[containers]]\nname = \"s\"\nbackend = \"ssh\"\nhost = \"h\"\nsandbox = \"none\"\n",
                5,
                "containers.sandbox",
                "belongs to local pools",
            ),
            (
                "[[containers]]\nname = \"l\"\nsandbox = \"firejail\"\n",
                3,
                "containers.sandbox",
                "unknown sandbox `firejail`",
            ),
            (
                "max_agents = 1\n[sandbox]\nread = [\"/opt\"]\nwrite = [\"/srv\"]\n",
                4,
                "sandbox.write",
                "unknown",
            ),
            (
                "[sandbox]\nread = [\"/opt\",\n  \"toolchain/bin\"]\n",
                3,
                "sandbox.read",
                "`toolchain/bin` is not an absolute path",
            ),
            (
                "[sandbox]\nread = [\"/\"]\n",
                2,
                "sandbox.read",
                "visible read-only already",
            ),
            (
                "[sandbox]\nread = [\"/p/vendor\"]\n",
                2,
                "sandbox.read",
                "inside the repository",
            ),
            (
                "[sandbox]\nread = \"/opt\"\n",
                2,
                "sandbox.read",
                "expected",
            ),
            (
                "[sandbox]\nnetwork = \"bridge\"\n",
                2,
                "sandbox.network",
                "unknown network `bridge`",
            ),
        ];
        for (text, line, field, says) in cases {
            let e = parse_str(text).unwrap_err();
            assert_eq!(e.exit(), crate::error::Exit::BadInput, "{text:?}");
            let e = e.to_string();
            assert!(
                e.contains(&format!("flocks.toml:{line}:"))
                    && e.contains(field)
                    && e.contains(says),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn kap_project_alias() {
        let c =
            parse_str("[[containers]]\nname = \"d\"\nbackend = \"docker\"\nkap_project = \"/x\"\n")
                .unwrap();
        match &c.pools[0].backend {
            BackendConfig::Docker(d) => assert_eq!(d.project.as_deref(), Some(Path::new("/x"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn notify_tables() {
        let c = parse_str(
            "[[notify]]\non = [\"needs_attention\", \"run_finished\", \"run_finished\"]\n\
             command = [\"notify-send\", \"flocks\"]\n\n\
             [[notify]]\non = [\"finished\"]\nwebhook = \"https://ntfy.sh/topic\"\nformat = \"text\"\n\
             headers_env = { Authorization = \"NTFY_TOKEN\" }\ntimeout_secs = 2.5\ncoalesce_secs = 0\n",
        )
        .unwrap();
        assert_eq!(c.notify.len(), 2);
        assert_eq!(c.notify[0].on, vec!["needs_attention", "run_finished"]);
        assert_eq!(c.notify[0].timeout, Duration::from_secs(10));
        assert_eq!(c.notify[0].coalesce, Duration::from_secs(5));
        assert!(
            matches!(&c.notify[0].target, NotifyTarget::Command { argv } if argv == &["notify-send", "flocks"])
        );
        assert_eq!(c.notify[1].number, 2);
        assert_eq!(c.notify[1].timeout, Duration::from_millis(2500));
        assert_eq!(c.notify[1].coalesce, Duration::ZERO);
        match &c.notify[1].target {
            NotifyTarget::Webhook {
                url,
                format,
                headers,
            } => {
                assert_eq!(url, "https://ntfy.sh/topic");
                assert_eq!(*format, WebhookFormat::Text);
                assert_eq!(headers[0].name, "Authorization");
                assert_eq!(headers[0].env, "NTFY_TOKEN");
                assert_eq!(headers[0].line, 9);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.notify[1].target.describe(), "webhook to ntfy.sh");
    }

    #[test]
    fn notify_mistakes_name_the_line_and_field() {
        let cases = [
            (
                "[[notify]]\non = [\"finished\", \"finnished\"]\ncommand = [\"x\"]\n",
                2,
                "notify.on",
                "unknown event kind `finnished`",
            ),
            (
                "[[notify]]\non = [\"activity\"]\ncommand = [\"x\"]\n",
                2,
                "notify.on",
                "`activity` is not sent",
            ),
            (
                "\n[[notify]]\ncommand = [\"x\"]\n",
                2,
                "notify.on",
                "notify #1 is sent nothing",
            ),
            (
                "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\nwebhook = \"https://e.x/\"\n",
                4,
                "notify.webhook",
                "both `command` and `webhook`",
            ),
            (
                "[[notify]]\non = [\"finished\"]\n",
                1,
                "notify.command",
                "needs `command`",
            ),
            (
                "[[notify]]\non = [\"finished\"]\nwebhook = \"ntfy.sh/topic\"\n",
                3,
                "notify.webhook",
                "not a URL",
            ),
            (
                "[[notify]]\non = [\"finished\"]\nwebhook = \"file:///etc/passwd\"\n",
                3,
                "notify.webhook",
                "`file:` URLs are not posted to",
            ),
            (
                "[[notify]]\non = [\"finished\"]\nwebhook = \"https://e.x/\"\nformat = \"xml\"\n",
                4,
                "notify.format",
                "unknown format `xml`",
            ),
            (
                "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\nformat = \"text\"\n",
                4,
                "notify.format",
                "is for a webhook",
            ),
            (
                "[[notify]]\non = [\"finished\"]\nwebhook = \"https://e.x/\"\nheaders_env = { \"Bad Header\" = \"T\" }\n",
                4,
                "notify.headers_env",
                "not an HTTP header name",
            ),
            (
                "[[notify]]\non = [\"finished\"]\nwebhook = \"https://e.x/\"\nheaders_env = { Authorization = \"Bearer abc\" }\n",
                4,
                "notify.headers_env",
                "not an environment variable name",
            ),
            (
                "[[notify]]\non = [\"finished\"]\ncommand = []\n",
                3,
                "notify.command",
                "non-empty argv",
            ),
            (
                "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\ntimeout_secs = 0\n",
                4,
                "notify.timeout_secs",
                "more than 0",
            ),
            (
                "[[notify]]\non = [\"finished\"]\ncommand = [\"x\"]\nretries = 3\n",
                4,
                "retries",
                "",
            ),
        ];
        for (text, line, field, says) in cases {
            let e = parse_str(text).unwrap_err();
            assert_eq!(e.exit(), crate::error::Exit::BadInput);
            let e = e.to_string();
            assert!(
                e.contains(&format!("flocks.toml:{line}:"))
                    && e.contains(field)
                    && e.contains(says),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn a_notify_script_is_found_from_this_file_and_kept_out_of_agents_reach() {
        let c = parse_str(
            "[[notify]]\non = [\"finished\"]\ncommand = [\"./hooks/notify.sh\", \"x\"]\n",
        )
        .unwrap();
        assert!(
            matches!(&c.notify[0].target, NotifyTarget::Command { argv } if argv[0] == "/p/hooks/notify.sh")
        );
        let docker = "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"c\"\n\n";
        let e = err(&format!(
            "{docker}[[notify]]\non = [\"finished\"]\ncommand = [\"./hooks/notify.sh\"]\n"
        ));
        assert!(
            e.contains("flocks.toml:8")
                && e.contains("notify.command")
                && e.contains("in the repository"),
            "{e}"
        );
        let e = err(&format!(
            "{docker}[[notify]]\non = [\"finished\"]\ncommand = [\"python3\", \"/p/sub/../notify.py\"]\n"
        ));
        assert!(
            e.contains("`/p/sub/../notify.py` is in the repository"),
            "{e}"
        );
        let c = parse_str(&format!(
            "{docker}[[notify]]\non = [\"finished\"]\ncommand = [\"/usr/local/bin/notify\", \"flocks\"]\n"
        ))
        .unwrap();
        assert_eq!(c.notify.len(), 1);
    }

    #[test]
    fn proxy_and_network_tables() {
        let d = parse_str("").unwrap();
        assert!(d.network.is_none(), "no [network]: open");
        assert_eq!(d.proxy.upstream, None);
        assert_eq!(d.proxy.listen.to_string(), "127.0.0.1:0");
        let c = parse_str(
            "[proxy]\nupstream = \"http://127.0.0.1:9/base\"\nlisten = \"0.0.0.0:7878\"\n[network]\nallow = [\"pypi.org\", \"*.example.com\", \"10.0.0.1:8080\"]\nnotify_denied = true\n",
        )
        .unwrap();
        assert_eq!(c.proxy.upstream.as_deref(), Some("http://127.0.0.1:9/base"));
        assert_eq!(c.proxy.listen.port(), 7878);
        let n = c.network.unwrap();
        assert!(n.notify_denied);
        assert!(n.allows("pypi.org", 443) && n.allows("x.example.com", 1));
        assert!(!n.allows("10.0.0.1", 80) && !n.allows("example.com", 443));
        let empty = parse_str("[network]\n").unwrap().network.unwrap();
        assert!(empty.allow.is_empty() && !empty.allows("pypi.org", 443));

        for (text, says) in [
            (
                "[network]\nallow = [\"pypi.org\",\n  \"https://x.org\"]\n",
                "flocks.toml:3: field `network.allow`: `https://x.org` is not a host",
            ),
            (
                "[network]\nallowed = [\"pypi.org\"]\n",
                "flocks.toml:2: field `network.allowed`",
            ),
            (
                "[proxy]\nupstrem = \"https://x\"\n",
                "flocks.toml:2: field `proxy.upstrem`",
            ),
            (
                "[proxy]\nupstream = \"ftp://x.org\"\n",
                "flocks.toml:2: field `proxy.upstream`: `ftp://x.org` is a ftp: URL",
            ),
            (
                "\n[proxy]\nlisten = \"localhost\"\n",
                "flocks.toml:3: field `proxy.listen`: `localhost` is not an address",
            ),
            (
                "[network]\nallow = [\"*.com\"]\n",
                "flocks.toml:2: field `network.allow`",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
