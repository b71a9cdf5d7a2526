//! `[source]`, `[workspace]` and `[validate]`.

use super::raw::{RawSource, RawValidate, RawWorkspace};
use super::*;

/// `[source]`: a JSONL file (the default) or a script.
pub(super) fn parse_source(
    cx: &Ctx,
    dir: &Path,
    source: Option<Spanned<RawSource>>,
) -> Result<Option<SourceConfig>> {
    let Some(s) = source else {
        return Ok(None);
    };
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
                return Err(cx.err(c.span(), "source.command", "belongs to type = \"script\""));
            }
            let p = s
                .path
                .map(|p| p.into_inner())
                .unwrap_or_else(|| "tasks.jsonl".into());
            Ok(Some(SourceConfig::Jsonl {
                path: resolve_from(dir, Path::new(&p)),
            }))
        }
        "script" => {
            if let Some(p) = &s.path {
                return Err(cx.err(p.span(), "source.path", "belongs to type = \"jsonl\""));
            }
            let Some(command) = s.command else {
                return Err(cx.err(span, "source.command", "type = \"script\" needs a command"));
            };
            Ok(Some(SourceConfig::Script {
                command: command.into_inner(),
            }))
        }
        other => {
            let span = s.kind.map(|k| k.span()).unwrap_or(span);
            Err(cx.err(
                span,
                "source.type",
                format!("unknown source type `{other}`: use \"jsonl\" or \"script\""),
            ))
        }
    }
}

/// `[workspace]`: the repository (from this file's directory), branches,
/// set-up and spares.
pub(super) fn parse_workspace(cx: &Ctx, dir: &Path, ws: RawWorkspace) -> Result<WorkspaceConfig> {
    let repo = resolve_from(
        dir,
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
    Ok(WorkspaceConfig {
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
    })
}

/// `[validate]`: its commands, time limit and pool (a docker pool of this
/// file).
pub(super) fn parse_validate(
    cx: &Ctx,
    v: RawValidate,
    pools: &[PoolConfig],
) -> Result<ValidateConfig> {
    let pool = match v.pool {
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
    Ok(ValidateConfig {
        pool,
        commands: v.commands,
        timeout: optional_secs(
            cx.non_negative(&v.timeout_secs, "validate.timeout_secs")?
                .or(Some(1800.0)),
        ),
    })
}
