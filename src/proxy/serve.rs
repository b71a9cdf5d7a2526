//! The proxy's connections (HTTP/1.1 on the TCP listener and the unix
//! socket alike): model requests forwarded to the upstream with the real
//! credential and streamed back as they come, CONNECT tunnels and plain
//! HTTP forwarding through the allowlist.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyDataStream, BodyExt, Full, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};

use super::usage::{Kind, Tap};
use super::{Grant, Held, ProxyEvent, ROUTE_PREFIX, Shared, Signal, same_secret};
use crate::config::CredentialKind;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// How long the proxy waits for a host it was asked to reach.
const DIAL_LIMIT: Duration = Duration::from_secs(10);

pub(super) async fn accept_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                serve(stream, shared.clone());
            }
            // Out of file descriptors and the like: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub(super) async fn accept_unix(listener: UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => serve(stream, shared.clone()),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn serve<S>(stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
        // A connection that breaks only ends itself.
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
    });
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::CONNECT {
        return Ok(connect(&shared, req).await);
    }
    let route = route_of(req.uri().path()).map(|(id, rest)| (id.to_string(), rest.to_string()));
    if req.uri().scheme().is_some() {
        // Through the agent's HTTP proxy variable: its own model URL is
        // still a model request; anything else is egress.
        if let Some((id, rest)) = route
            && let Some(grant) = shared.grant(&id)
            && req.uri().authority().map(|a| a.as_str()) == Some(grant.base.as_str())
        {
            return Ok(model(&shared, grant, &rest, req).await);
        }
        return Ok(forward_http(&shared, req).await);
    }
    Ok(match route {
        Some((id, rest)) => match shared.grant(&id) {
            Some(grant) => model(&shared, grant, &rest, req).await,
            None => unauthorized(),
        },
        None => text(
            StatusCode::NOT_FOUND,
            "flocks' proxy: not a route of this run (agents use their ANTHROPIC_BASE_URL)\n",
        ),
    })
}

/// `/attempt/<id>/<rest>` as `(id, "/<rest>")`.
fn route_of(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix(ROUTE_PREFIX)?;
    let (id, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    (!id.is_empty()).then_some((id, rest))
}

/// The tokens a model request carries: `x-api-key`, `Authorization: Bearer`.
fn model_tokens(h: &HeaderMap) -> impl Iterator<Item = &str> {
    let key = h
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    let bearer = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    key.into_iter().chain(bearer)
}

/// A model request: the route's token checked, swapped for the real
/// credential, forwarded, and the answer streamed back as it comes.
async fn model(
    shared: &Arc<Shared>,
    grant: Arc<Grant>,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let (Some(expected), Some(held)) = (&grant.model_token, &grant.held) else {
        return unauthorized();
    };
    if !model_tokens(req.headers()).any(|t| same_secret(t, expected)) {
        return unauthorized();
    }
    let mut url = shared.upstream.clone();
    let path = format!("{}{rest}", url.path().trim_end_matches('/'));
    url.set_path(if path.is_empty() { "/" } else { &path });
    url.set_query(req.uri().query());

    let headers = match upstream_headers(req.headers(), held) {
        Ok(h) => h,
        Err(why) => return api_error(StatusCode::INTERNAL_SERVER_ERROR, &why),
    };
    let method = req.method().clone();
    let empty = req.body().is_end_stream();
    let mut request = shared.client.request(method, url).headers(headers);
    if !empty {
        request = request.body(reqwest::Body::wrap_stream(BodyDataStream::new(
            req.into_body(),
        )));
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            let why = format!(
                "flocks' proxy cannot reach the model API at {}: {}",
                shared.upstream_display(),
                error_chain(&e)
            );
            if !grant.reached.load(Ordering::Relaxed) {
                // The executor ends the attempt, once the agent has had a
                // moment to read its 502 (it is told first).
                let (signals, said) = (grant.signals.clone(), why.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = signals.try_send(Signal::Unreachable(said));
                });
            }
            return api_error(StatusCode::BAD_GATEWAY, &why);
        }
    };
    grant.reached.store(true, Ordering::Relaxed);
    let status = answer.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        let until = super::limits::reset_of(answer.headers(), chrono::Utc::now());
        shared
            .emit(ProxyEvent::RateLimited {
                task: grant.task.clone(),
                attempt: grant.attempt,
                credential: held.name.clone(),
                until,
            })
            .await;
    }
    let kind = status.is_success().then(|| usage_kind(&answer)).flatten();
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        *h = answer.headers().clone();
        strip_hop_by_hop(h);
    }
    let tapped = Tapped {
        inner: answer.bytes_stream().boxed(),
        tap: kind.map(Tap::new),
        shared: shared.clone(),
        task: grant.task.clone(),
        attempt: grant.attempt,
    };
    let body = StreamBody::new(tapped.map(|r| r.map(Frame::data).map_err(BoxError::from)));
    out.body(UnsyncBoxBody::new(body))
        .unwrap_or_else(|_| text(StatusCode::BAD_GATEWAY, "flocks' proxy: bad answer\n"))
}

/// The agent's headers as the model API gets them: hop-by-hop headers and
/// the agent's token gone, plain bytes asked for (so that usage can be read
/// as they pass), and the real credential in its place.
fn upstream_headers(incoming: &HeaderMap, held: &Held) -> Result<HeaderMap, String> {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    for h in [
        header::HOST,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("x-api-key"),
    ] {
        headers.remove(h);
    }
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    let (name, value) = match held.kind {
        CredentialKind::ApiKey => (HeaderName::from_static("x-api-key"), held.secret.clone()),
        CredentialKind::Oauth => (header::AUTHORIZATION, format!("Bearer {}", held.secret)),
    };
    let Ok(mut value) = HeaderValue::from_str(&value) else {
        return Err(format!(
            "flocks' proxy: credential {}'s value cannot be sent in an HTTP header",
            held.name
        ));
    };
    value.set_sensitive(true);
    headers.insert(name, value);

    Ok(headers)
}

/// Whose usage an answer's body carries: server-sent events or one JSON
/// object; `None` for anything else.
fn usage_kind(answer: &reqwest::Response) -> Option<Kind> {
    let ct = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if ct.starts_with("text/event-stream") {
        Some(Kind::Events)
    } else if ct.starts_with("application/json") {
        Some(Kind::Json)
    } else {
        None
    }
}

/// An answer's body on its way to the agent, its usage read as it passes.
struct Tapped {
    inner: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    tap: Option<Tap>,
    shared: Arc<Shared>,
    task: String,
    attempt: u32,
}

impl Tapped {
    fn report(&mut self, usage: Option<super::UsageDelta>) {
        if let Some(usage) = usage {
            self.shared.emit_later(ProxyEvent::Usage {
                task: self.task.clone(),
                attempt: self.attempt,
                usage,
            });
        }
    }
}

impl Stream for Tapped {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => {
                let now = self.tap.as_mut().and_then(|t| t.feed(chunk));
                self.report(now);
            }
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                let left = self.tap.take().and_then(|mut t| t.finish());
                self.report(left);
            }
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Tapped {
    /// The agent went away before the end: what it got was used all the same.
    fn drop(&mut self) {
        let left = self.tap.take().and_then(|mut t| t.finish());
        self.report(left);
    }
}

/// The grant a proxy request names in `Proxy-Authorization` (Basic, user =
/// route id, password = its proxy token).
fn proxy_grant(shared: &Shared, h: &HeaderMap) -> Option<Arc<Grant>> {
    let v = h.get(header::PROXY_AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, token) = decoded.split_once(':')?;
    let grant = shared.grant(id)?;
    same_secret(token, &grant.proxy_token).then_some(grant)
}

/// Whether the grant's agent may reach `host:port`.
fn allowed(shared: &Shared, grant: &Grant, host: &str, port: u16) -> bool {
    let Some(network) = &shared.network else {
        return true;
    };
    if network.allows(host, port) {
        return true;
    }
    // An agent on its own login (no flocks credential) talks to the model
    // API itself, through the tunnel.
    grant.held.is_none()
        && host.eq_ignore_ascii_case(&shared.upstream_addr.0)
        && port == shared.upstream_addr.1
}

async fn deny(shared: &Shared, grant: &Grant, host: &str, port: u16) -> Response<Body> {
    shared
        .emit(ProxyEvent::EgressDenied {
            task: grant.task.clone(),
            attempt: grant.attempt,
            host: host.to_string(),
            port,
        })
        .await;
    text(
        StatusCode::FORBIDDEN,
        &format!(
            "flocks: {host}:{port} is not in [network] allow (flocks.toml): the connection was refused\n"
        ),
    )
}

/// `host` (no brackets) and port of an authority.
fn host_port(a: &hyper::http::uri::Authority, default_port: Option<u16>) -> Option<(String, u16)> {
    let host = a.host().trim_start_matches('[').trim_end_matches(']');
    let port = a.port_u16().or(default_port)?;
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Dial `host:port` within [`DIAL_LIMIT`].
async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    match tokio::time::timeout(DIAL_LIMIT, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", DIAL_LIMIT.as_secs())),
    }
}

/// `CONNECT host:port`: a tunnel, when the allowlist lets it through.
async fn connect(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let Some(grant) = proxy_grant(shared, req.headers()) else {
        return proxy_unauthorized();
    };
    let Some((host, port)) = req.uri().authority().and_then(|a| host_port(a, None)) else {
        return text(
            StatusCode::BAD_REQUEST,
            "flocks' proxy: CONNECT needs host:port\n",
        );
    };
    if !allowed(shared, &grant, &host, port) {
        return deny(shared, &grant, &host, port).await;
    }
    let mut far = match dial(&host, port).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("flocks' proxy: cannot connect to {host}:{port}: {e}\n"),
            );
        }
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut near = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
        }
    });
    Response::new(empty())
}

/// `GET http://host/...` through the proxy: forwarded when allowed.
async fn forward_http(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let Some(grant) = proxy_grant(shared, req.headers()) else {
        return proxy_unauthorized();
    };
    if req.uri().scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "flocks' proxy: only http:// URLs are forwarded; https goes through CONNECT\n",
        );
    }
    let Some((host, port)) = req.uri().authority().and_then(|a| host_port(a, Some(80))) else {
        return text(
            StatusCode::BAD_REQUEST,
            "flocks' proxy: the URL has no host\n",
        );
    };
    if !allowed(shared, &grant, &host, port) {
        return deny(shared, &grant, &host, port).await;
    }
    let far = match dial(&host, port).await {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("flocks' proxy: cannot connect to {host}:{port}: {e}\n"),
            );
        }
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(far)).await {
        Ok(x) => x,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                &format!("flocks' proxy: {host}:{port}: {e}\n"),
            );
        }
    };
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    let authority = parts.uri.authority().map(|a| a.to_string());
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    strip_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(header::HOST)
        && let Some(v) = authority.and_then(|a| HeaderValue::from_str(&a).ok())
    {
        parts.headers.insert(header::HOST, v);
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(answer) => {
            let (mut parts, body) = answer.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, UnsyncBoxBody::new(body.map_err(BoxError::from)))
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            &format!("flocks' proxy: {host}:{port}: {e}\n"),
        ),
    }
}

/// Headers that belong to one connection, not to the message.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(n);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        source = inner.source();
    }
    s
}

fn empty() -> Body {
    UnsyncBoxBody::new(Full::new(Bytes::new()).map_err(|never| match never {}))
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(UnsyncBoxBody::new(
        Full::new(Bytes::from(body.to_string())).map_err(|never| match never {}),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// An error as the API writes one (so that an agent reads it as such).
fn api_error(status: StatusCode, message: &str) -> Response<Body> {
    let kind = match status {
        StatusCode::UNAUTHORIZED => "authentication_error",
        _ => "api_error",
    };
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut r = text(status, &body.to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn unauthorized() -> Response<Body> {
    api_error(
        StatusCode::UNAUTHORIZED,
        "flocks' proxy: this token is not valid for this route (another attempt's, or its attempt ended)",
    )
}

fn proxy_unauthorized() -> Response<Body> {
    let mut r = text(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "flocks' proxy: no valid token for this attempt (use the HTTP_PROXY URL flocks gave it)\n",
    );
    r.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"flocks\""),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_tokens_are_read_strictly() {
        assert_eq!(
            route_of("/attempt/ab12/v1/messages"),
            Some(("ab12", "/v1/messages"))
        );
        assert_eq!(route_of("/attempt/ab12"), Some(("ab12", "")));
        assert_eq!(route_of("/attempt//v1"), None);
        assert_eq!(route_of("/v1/messages"), None);
        let mut h = HeaderMap::new();
        let tokens = |h: &HeaderMap| model_tokens(h).map(str::to_string).collect::<Vec<_>>();
        assert!(tokens(&h).is_empty());
        h.insert(header::AUTHORIZATION, "Bearer  tok ".parse().unwrap());
        assert_eq!(tokens(&h), ["tok"]);
        h.insert(header::AUTHORIZATION, "Basic tok".parse().unwrap());
        assert!(tokens(&h).is_empty());
        h.insert("x-api-key", "key".parse().unwrap());
        assert_eq!(tokens(&h), ["key"]);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }
}
