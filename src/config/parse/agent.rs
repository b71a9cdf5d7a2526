//! `[agent]` and `[[credentials]]`.

use std::collections::HashSet;

use super::raw::{RawAgent, RawCredential};
use super::*;

/// `[agent]`: the command (never empty), its args, model and environment.
pub(super) fn parse_agent(cx: &Ctx, a: RawAgent) -> Result<AgentConfig> {
    Ok(AgentConfig {
        command: match a.command {
            Some(c) if c.get_ref().trim().is_empty() => {
                return Err(cx.err(c.span(), "agent.command", "must not be empty"));
            }
            Some(c) => c.into_inner(),
            None => "claude".into(),
        },
        args: a.args,
        model: a.model.map(|m| m.into_inner()),
        env: a.env.map(|e| e.into_inner()).unwrap_or_default(),
    })
}

/// `[[credentials]]`, and the set of their names (pools name them).
pub(super) fn parse_credentials(
    cx: &Ctx,
    raw: Vec<RawCredential>,
) -> Result<(Vec<CredentialConfig>, HashSet<String>)> {
    let mut credentials = Vec::new();
    let mut cred_names = HashSet::new();
    for c in raw {
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
    Ok((credentials, cred_names))
}
