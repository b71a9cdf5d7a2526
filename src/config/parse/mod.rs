//! From flocks.toml text to a validated [`Config`]. Every error names the file,
//! the line and the key.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::error::{Error, Result};
use crate::paths::normalize;

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

mod agent;
mod land;
mod network;
mod notify;
mod pools;
mod raw;
mod sandbox;
#[cfg(test)]
mod tests;
mod workspace;

use raw::RawConfig;

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

    let agent = agent::parse_agent(&cx, raw.agent)?;
    let (credentials, cred_names) = agent::parse_credentials(&cx, raw.credentials)?;
    let pools = pools::parse_pools(&cx, &dir, raw.containers, &cred_names, max_agents)?;
    let source = workspace::parse_source(&cx, &dir, raw.source)?;
    let workspace = workspace::parse_workspace(&cx, &dir, raw.workspace)?;
    let sandbox_network_span = raw.sandbox.network.as_ref().map(|v| v.span());
    let sandbox = sandbox::parse_sandbox(&cx, raw.sandbox, &workspace.repo, &dir)?;
    let template = |t: S<String>| t.map(|t| resolve_from(&dir, Path::new(t.get_ref())));
    let prompt_template = template(raw.prompt.template);
    let plan_template = template(raw.prompt.plan_template);
    let validate = workspace::parse_validate(&cx, raw.validate, &pools)?;
    let notify = raw
        .notify
        .into_iter()
        .enumerate()
        .map(|(i, n)| {
            let span = n.span();
            notify::parse_notify(&cx, n.into_inner(), span, i + 1, &pools, &workspace.repo)
        })
        .collect::<Result<Vec<_>>>()?;
    let land = land::parse_land(&cx, raw.land)?;
    let best_of = land::parse_best_of(&cx, raw.best_of)?;
    let variants = land::parse_variants(&cx, raw.variants)?;
    let listen_span = raw.proxy.listen.as_ref().map(|l| l.span());
    let (proxy, network) = network::parse_network(&cx, raw.proxy, raw.network)?;
    network::check_proxy_reach(
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
        land,
        best_of,
        variants,
        sandbox,
        proxy,
        network,
    })
}
