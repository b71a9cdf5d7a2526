//! Who may talk to `flocks serve`: the token (every request, once one is
//! set), the Host header on loopback (no DNS rebinding), and, for actions,
//! the form token and the Origin of the page that posts.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::html;

use super::{App, TOKEN_VAR, pages};
use crate::error::{Error, Result};

const COOKIE: &str = "flocks_token";
/// A token from the environment must be at least this long.
const MIN_TOKEN: usize = 16;

pub(crate) struct Token {
    pub value: Option<String>,
    pub generated: bool,
}

pub(crate) struct Auth {
    /// Every request must carry it.
    pub token: Option<String>,
    /// No token: only requests that name a loopback host.
    pub loopback_only: bool,
}

/// The token: `$FLOCKS_SERVE_TOKEN`, or one generated now when `addr` is
/// not loopback, or none.
pub(crate) fn token(addr: SocketAddr) -> Result<Token> {
    match std::env::var(TOKEN_VAR) {
        Ok(t) if !t.is_empty() => {
            if t.len() < MIN_TOKEN
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
            {
                return Err(Error::Usage(format!(
                    "{TOKEN_VAR} must be at least {MIN_TOKEN} characters of A-Z a-z 0-9 - _ . ~ (unset it and flocks serve generates one)"
                )));
            }
            Ok(Token {
                value: Some(t),
                generated: false,
            })
        }
        _ if addr.ip().is_loopback() => Ok(Token {
            value: None,
            generated: false,
        }),
        _ => Ok(Token {
            value: Some(random_token()),
            generated: true,
        }),
    }
}

/// 32 random hex digits.
pub(crate) fn random_token() -> String {
    use std::io::Read;
    let mut buf = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if read.is_err() {
        // No /dev/urandom: hash what differs between processes and moments.
        use sha2::{Digest, Sha256};
        let seed = format!(
            "{:?}{}{:p}",
            std::time::SystemTime::now(),
            std::process::id(),
            &buf
        );
        buf.copy_from_slice(&Sha256::digest(seed.as_bytes())[..16]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compare without leaking where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(COOKIE)?
                .strip_prefix('=')
                .map(str::to_string)
        })
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(|t| t.trim().to_string())
}

/// The host part of a Host header (`[::1]:7777` -> `[::1]`).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn is_loopback_host(host: &str) -> bool {
    let h = host_name(host);
    h.eq_ignore_ascii_case("localhost")
        || h.trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn refuse(code: StatusCode, why: &str) -> Response {
    let page = pages::message("flocks serve: not allowed", html! { p.error { (why) } });
    (code, Html(page.into_string())).into_response()
}

/// Checks every request.
pub(crate) async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    if app.auth.loopback_only && !is_loopback_host(&host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "this dashboard answers requests for 127.0.0.1 or localhost only (it listens on loopback without a token)",
        );
    }
    if let Some(token) = &app.auth.token {
        let query_token = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        });
        if let Some(given) = query_token {
            if !same(&given, token) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "wrong token: open the URL that `flocks serve` printed",
                );
            }
            // Remember it in a cookie and take it out of the address bar.
            let rest: Vec<&str> = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .filter(|kv| !kv.starts_with("token=") && !kv.is_empty())
                .collect();
            let to = if rest.is_empty() {
                req.uri().path().to_string()
            } else {
                format!("{}?{}", req.uri().path(), rest.join("&"))
            };
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            return ([(header::SET_COOKIE, cookie)], Redirect::to(&to)).into_response();
        }
        let ok = cookie_token(headers)
            .or_else(|| bearer(headers))
            .is_some_and(|t| same(&t, token));
        if !ok {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this dashboard needs its token: open the URL with ?token= that `flocks serve` printed",
            );
        }
    }
    if req.method() == Method::POST {
        // A form posted from another site's page carries that site's Origin.
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if origin_host != host {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "actions are taken from this dashboard's own pages only",
                );
            }
        }
    }
    next.run(req).await
}

/// An action's form token matches this server's.
pub(crate) fn form_ok(app: &App, given: &str) -> bool {
    app.chrome.csrf.as_deref().is_some_and(|c| same(c, given))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "127.0.0.1:7777",
            "localhost:80",
            "LOCALHOST",
            "[::1]:7777",
            "127.0.0.2",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example:7777",
            "10.0.0.1:7777",
            "localhost.evil.example",
            "",
            "[fe80::1]:1",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert_eq!(random_token().len(), 32);
        assert_ne!(random_token(), random_token());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; flocks_token=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h).as_deref(), Some("xyz"));
    }
}
