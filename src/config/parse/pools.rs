//! `[[containers]]`: the pools, their names, credentials and the keys of
//! each backend.

use std::collections::HashSet;

use super::raw::RawPool;
use super::*;

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
/// Each backend and its keys, in the order errors name them.
const BACKEND_KEYS: &[(&str, &[&str])] = &[
    ("local", LOCAL_KEYS),
    ("docker", DOCKER_KEYS),
    ("ssh", SSH_KEYS),
    ("exedev", EXEDEV_KEYS),
    ("slurm", SLURM_KEYS),
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
    pub(super) fn present(&self) -> Vec<(&'static str, Range<usize>)> {
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

/// Every `[[containers]]` table; none: one local pool with as many slots as
/// `max_agents`.
pub(super) fn parse_pools(
    cx: &Ctx,
    dir: &Path,
    containers: Vec<Spanned<RawPool>>,
    cred_names: &HashSet<String>,
    max_agents: usize,
) -> Result<Vec<PoolConfig>> {
    let mut pools = Vec::new();
    let mut pool_names = HashSet::new();
    for (i, p) in containers.into_iter().enumerate() {
        let table_span = p.span();
        let p = p.into_inner();
        pools.push(parse_pool(
            cx,
            dir,
            p,
            table_span,
            i,
            cred_names,
            &mut pool_names,
        )?);
    }
    if pools.is_empty() {
        pools.push(PoolConfig {
            name: "local".into(),
            max_worktrees: max_agents,
            credential: CredentialChoice::Default,
            env: BTreeMap::new(),
            backend: BackendConfig::Local,
            sandbox: SandboxMode::None,
        });
    }
    Ok(pools)
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
    let name = pool_name(cx, &p, &table_span, index, pool_names)?;
    let backend = p
        .backend
        .as_ref()
        .map(|b| b.get_ref().as_str())
        .unwrap_or("local");
    check_keys(cx, &p, &table_span, &name, backend)?;

    let max_worktrees = cx
        .count(&p.max_worktrees, "containers.max_worktrees", 1)?
        .unwrap_or(1) as usize;
    let credential = pool_credential(cx, &p, &table_span, cred_names)?;
    let env = p
        .env
        .as_ref()
        .map(|e| e.get_ref().clone())
        .unwrap_or_default();
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
        "docker" => docker_backend(cx, dir, &p, table_span, &name)?,
        "ssh" => ssh_backend(cx, dir, &p, table_span, &name)?,
        "exedev" => BackendConfig::Exedev(ExedevConfig {
            count: cx.count(&p.count, "containers.count", 1)?.unwrap_or(1) as usize,
            lobby: take(&p.lobby).unwrap_or_else(|| "exe.dev".into()),
            identity_file: take(&p.identity_file).map(|f| resolve_from(dir, Path::new(&f))),
            ssh_options: take_list(&p.ssh_options),
            remote_dir: remote_dir(&p),
            setup: setup(&p),
        }),
        "slurm" => slurm_backend(cx, &p)?,
        _ => unreachable!("backend checked by check_keys"),
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

/// Where a key's value stands, or the pool's table when it is absent.
fn span_or<T>(v: &S<T>, table_span: &Range<usize>) -> Range<usize> {
    v.as_ref().map(|v| v.span()).unwrap_or(table_span.clone())
}

fn take(v: &S<String>) -> Option<String> {
    v.as_ref().map(|s| s.get_ref().clone())
}

fn take_list(v: &S<Vec<String>>) -> Vec<String> {
    v.as_ref().map(|s| s.get_ref().clone()).unwrap_or_default()
}

fn setup(p: &RawPool) -> Vec<CommandSpec> {
    p.setup
        .as_ref()
        .map(|s| s.get_ref().clone())
        .unwrap_or_default()
}

fn remote_dir(p: &RawPool) -> String {
    take(&p.remote_dir).unwrap_or_else(|| "~/flocks".into())
}

/// `name`: given, not empty, of plain characters, not taken by another pool.
fn pool_name(
    cx: &Ctx,
    p: &RawPool,
    table_span: &Range<usize>,
    index: usize,
    pool_names: &mut HashSet<String>,
) -> Result<String> {
    let name = match &p.name {
        Some(n) if n.get_ref().is_empty() => {
            return Err(cx.err(n.span(), "containers.name", "must not be empty"));
        }
        Some(n) => n.get_ref().clone(),
        None => {
            return Err(cx.err(
                table_span.clone(),
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
        let span = span_or(&p.name, table_span);
        return Err(cx.err(
            span,
            "containers.name",
            format!("`{name}`: a pool name may hold letters, digits, `-`, `_` and `.`"),
        ));
    }
    if !pool_names.insert(name.clone()) {
        let span = span_or(&p.name, table_span);
        return Err(cx.err(span, "containers.name", format!("duplicate pool `{name}`")));
    }
    Ok(name)
}

/// `backend` is known, and every key present belongs to it (or to every pool).
fn check_keys(
    cx: &Ctx,
    p: &RawPool,
    table_span: &Range<usize>,
    name: &str,
    backend: &str,
) -> Result<()> {
    let Some((_, allowed)) = BACKEND_KEYS.iter().find(|(b, _)| *b == backend) else {
        return Err(cx.err(
            span_or(&p.backend, table_span),
            "containers.backend",
            format!(
                "unknown backend `{backend}`: use \"local\", \"docker\", \"ssh\", \"exedev\" or \"slurm\""
            ),
        ));
    };
    for (key, span) in p.present() {
        if COMMON_KEYS.contains(&key) || allowed.contains(&key) {
            continue;
        }
        let owners: Vec<&str> = BACKEND_KEYS
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
    Ok(())
}

/// `credential`: "default", "rotate" (with credentials to rotate) or a
/// `[[credentials]]` name.
fn pool_credential(
    cx: &Ctx,
    p: &RawPool,
    table_span: &Range<usize>,
    cred_names: &HashSet<String>,
) -> Result<CredentialChoice> {
    let credential = match p.credential.as_ref().map(|c| c.get_ref().as_str()) {
        None | Some("default") => CredentialChoice::Default,
        Some("rotate") => CredentialChoice::Rotate,
        Some(c) if cred_names.contains(c) => CredentialChoice::Named(c.to_string()),
        Some(c) => {
            let span = span_or(&p.credential, table_span);
            return Err(cx.err(
                span,
                "containers.credential",
                format!("no [[credentials]] entry named `{c}` (use \"default\", \"rotate\" or a credential name)"),
            ));
        }
    };
    if credential == CredentialChoice::Rotate && cred_names.is_empty() {
        let span = span_or(&p.credential, table_span);
        return Err(cx.err(
            span,
            "containers.credential",
            "\"rotate\" needs at least one [[credentials]] entry",
        ));
    }
    Ok(credential)
}

/// A docker pool: a container, a devcontainer project or an image; the exec
/// user (never root unless allowed); clone or mount.
fn docker_backend(
    cx: &Ctx,
    dir: &Path,
    p: &RawPool,
    table_span: Range<usize>,
    name: &str,
) -> Result<BackendConfig> {
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
    Ok(BackendConfig::Docker(DockerConfig {
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
    }))
}

/// An ssh pool: a host (never an option), a port.
fn ssh_backend(
    cx: &Ctx,
    dir: &Path,
    p: &RawPool,
    table_span: Range<usize>,
    name: &str,
) -> Result<BackendConfig> {
    let Some(host) = take(&p.host) else {
        return Err(cx.err(
            table_span,
            "containers.host",
            format!("ssh pool `{name}` needs a `host`"),
        ));
    };
    if host.starts_with('-') {
        let span = span_or(&p.host, &table_span);
        return Err(cx.err(span, "containers.host", "must not start with `-`"));
    }
    let port = match &p.port {
        Some(v) if !(1..=65535).contains(v.get_ref()) => {
            return Err(cx.err(v.span(), "containers.port", "must be between 1 and 65535"));
        }
        Some(v) => Some(*v.get_ref() as u16),
        None => None,
    };
    Ok(BackendConfig::Ssh(SshConfig {
        host,
        port,
        identity_file: take(&p.identity_file).map(|f| resolve_from(dir, Path::new(&f))),
        ssh_options: take_list(&p.ssh_options),
        remote_dir: remote_dir(p),
        setup: setup(p),
    }))
}

/// A Slurm pool: partition, account and qos as the scheduler names them;
/// `sbatch_args` never set what flocks sets itself.
fn slurm_backend(cx: &Ctx, p: &RawPool) -> Result<BackendConfig> {
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
    Ok(BackendConfig::Slurm(SlurmConfig {
        partition,
        account,
        qos,
        sbatch_args,
        remote_dir: remote_dir(p),
        setup: setup(p),
    }))
}
