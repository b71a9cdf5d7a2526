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
