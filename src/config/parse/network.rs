//! `[proxy]` and `[network]`: the model proxy and the egress allowlist.

use super::raw::{RawNetwork, RawProxy};
use super::*;

/// `[proxy]` and `[network]`.
pub(super) fn parse_network(
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

/// Every pool whose agents need flocks' proxy can reach it: a sandbox
/// with `network = "none"` cannot (a pool with a flocks credential there
/// is refused), nor can a Slurm compute node reach a loopback `[proxy]
/// listen` (a Slurm pool with a credential, or under `[network]`, needs an
/// address the nodes reach).
pub(super) fn check_proxy_reach(
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
