//! `[proxy]` and `[network]`: where flocks' model proxy forwards and listens,
//! and which hosts agents may reach through it (host patterns and their rule).

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The upstream when neither `[proxy] upstream` nor flocks' own
/// `ANTHROPIC_BASE_URL` names one.
pub const DEFAULT_UPSTREAM: &str = "https://api.anthropic.com";

/// `[proxy]`.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `upstream`: an http(s) URL; None: flocks' own `ANTHROPIC_BASE_URL`,
    /// else [`DEFAULT_UPSTREAM`].
    pub upstream: Option<String>,
    /// `listen`: the proxy's TCP address (port 0: any free port).
    pub listen: SocketAddr,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            upstream: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

/// `[network]`: present, the proxy is the agents' HTTP(S) proxy and lets
/// through only these hosts.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    pub allow: Vec<HostPattern>,
    /// Every refused connection is also a `needs_attention` notification
    /// (once per host and port in an attempt).
    pub notify_denied: bool,
}

impl NetworkConfig {
    /// Whether `host:port` (as the agent asked for it) is allowed.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.allow.iter().any(|p| p.matches(host, port))
    }
}

/// One `[network] allow` entry: `host`, `host:port`, `*.domain[:port]`, an
/// IP (`10.0.0.1`, `[::1]:443`). Names match case-insensitively and without
/// a trailing dot; `*.example.com` matches every subdomain of example.com,
/// not example.com itself. A name is never resolved to match an IP pattern:
/// a pattern names what the agent asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: Host,
    /// None: any port.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Name(String),
    /// `*.suffix`: any name that ends in `.suffix`.
    Subdomains(String),
    Ip(IpAddr),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Name(n) => f.write_str(n)?,
            Host::Subdomains(s) => write!(f, "*.{s}")?,
            Host::Ip(IpAddr::V6(ip)) if self.port.is_some() => write!(f, "[{ip}]")?,
            Host::Ip(ip) => write!(f, "{ip}")?,
        }
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => Ok(()),
        }
    }
}

impl HostPattern {
    /// Parse one entry; Err says what is wrong with it, in words.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let s = text.trim().to_ascii_lowercase();
        let what =
            "give a host name, host:port, *.domain or an IP address (no scheme, path or user)";
        if s.is_empty() {
            return Err(format!("an empty entry is not a host: {what}"));
        }
        if s.contains("://") || s.contains('/') || s.contains('@') {
            return Err(format!("`{text}` is not a host: {what}"));
        }
        // `[v6]` or `[v6]:port`.
        if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: an IPv6 address opened with [ has no ]"))?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| format!("`{text}`: `{ip}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(port_of(p.strip_prefix(':').unwrap_or(p), text)?),
            };
            return Ok(HostPattern {
                host: Host::Ip(IpAddr::V6(ip)),
                port,
            });
        }
        // A bare IPv6 address (several colons): no port.
        if s.matches(':').count() > 1 {
            let ip: Ipv6Addr = s.parse().map_err(|_| {
                format!("`{text}` is not a host: write an IPv6 address with a port as [addr]:port")
            })?;
            return Ok(HostPattern {
                host: Host::Ip(IpAddr::V6(ip)),
                port: None,
            });
        }
        let (host, port) = match s.split_once(':') {
            Some((h, p)) => (h, Some(port_of(p, text)?)),
            None => (s.as_str(), None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.parse::<IpAddr>().is_ok() || !is_name(suffix) || !suffix.contains('.') {
                return Err(format!(
                    "`{text}`: *. goes before a domain name with a dot, as in *.example.com"
                ));
            }
            return Ok(HostPattern {
                host: Host::Subdomains(suffix.to_string()),
                port,
            });
        }
        if host.contains('*') {
            return Err(format!(
                "`{text}`: * is only allowed as the first label (*.example.com)"
            ));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(HostPattern {
                host: Host::Ip(ip),
                port,
            });
        }
        if !is_name(host) {
            return Err(format!("`{text}` is not a host: {what}"));
        }
        Ok(HostPattern {
            host: Host::Name(host.to_string()),
            port,
        })
    }

    /// Whether `host:port`, as a client names it (no brackets), matches.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        match &self.host {
            Host::Name(n) => *n == host,
            Host::Subdomains(s) => host.len() > s.len() + 1 && host.ends_with(&format!(".{s}")),
            Host::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
        }
    }
}

fn port_of(p: &str, text: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}`: `{p}` is not a port (1 to 65535)")),
    }
}

/// A DNS name: labels of letters, digits, `-` and `_`, none empty or longer
/// than 63, 253 characters at most.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

/// An upstream URL: http or https, with a host. Err says why not.
pub fn check_upstream(url: &str) -> Result<reqwest::Url, String> {
    match reqwest::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            if u.query().is_some() || u.fragment().is_some() {
                return Err(format!(
                    "`{url}` has a query or fragment: give the API's base URL, e.g. {DEFAULT_UPSTREAM}"
                ));
            }
            Ok(u)
        }
        Ok(u) => Err(format!(
            "`{url}` is a {}: URL: give an http:// or https:// URL, e.g. {DEFAULT_UPSTREAM}",
            u.scheme()
        )),
        Err(e) => Err(format!(
            "`{url}` is not a URL ({e}): give an http:// or https:// URL, e.g. {DEFAULT_UPSTREAM}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn patterns_match_what_they_say() {
        let name = p("Packages.Example.org.");
        assert!(name.matches("packages.example.org", 443));
        assert!(name.matches("PACKAGES.example.org.", 80));
        assert!(!name.matches("evil.packages.example.org", 443));
        assert!(!name.matches("example.org", 443));

        let sub = p("*.example.com");
        assert!(sub.matches("a.example.com", 443));
        assert!(sub.matches("a.b.example.com", 1));
        assert!(!sub.matches("example.com", 443), "not the domain itself");
        assert!(!sub.matches("badexample.com", 443));
        assert!(!sub.matches("example.com.evil.net", 443));

        let port = p("git.example.net:443");
        assert!(port.matches("git.example.net", 443));
        assert!(!port.matches("git.example.net", 22));

        let ip = p("127.0.0.1:8080");
        assert!(ip.matches("127.0.0.1", 8080));
        assert!(!ip.matches("127.0.0.1", 8081));
        assert!(!ip.matches("localhost", 8080), "names are never resolved");

        let v6 = p("[::1]:443");
        assert!(v6.matches("::1", 443));
        assert!(v6.matches("[0:0:0:0:0:0:0:1]", 443));
        assert!(p("fe80::1").matches("fe80::1", 9));
        assert_eq!(p("*.Example.com:8443").to_string(), "*.example.com:8443");
        assert_eq!(p("[::1]:443").to_string(), "[::1]:443");
    }

    #[test]
    fn what_is_not_a_host_says_so() {
        for (bad, says) in [
            ("https://example.com", "not a host"),
            ("example.com/path", "not a host"),
            ("user@example.com", "not a host"),
            ("", "empty"),
            ("exa mple.com", "not a host"),
            ("example.com:0", "not a port"),
            ("example.com:http", "not a port"),
            ("example.com:70000", "not a port"),
            ("*", "first label"),
            ("*.com", "*. goes before"),
            ("*.10.0.0.1", "*. goes before"),
            ("a.*.example.com", "first label"),
            ("[::1", "no ]"),
            ("[zz]:1", "not an IPv6"),
            ("::1:443:x", "IPv6"),
            ("-bad-.example.com", "not a host"),
        ] {
            let e = HostPattern::parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn upstreams_are_http_urls() {
        assert!(check_upstream("https://api.anthropic.com").is_ok());
        assert!(check_upstream("http://127.0.0.1:9/base").is_ok());
        for bad in [
            "ftp://x",
            "api.anthropic.com",
            "unix:/tmp/s",
            "https://x/?a=1",
        ] {
            assert!(check_upstream(bad).is_err(), "{bad}");
        }
    }
}
