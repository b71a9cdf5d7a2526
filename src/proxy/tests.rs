//! The proxy in one process: a scripted upstream and two hosts on
//! 127.0.0.1, real listeners, a real unix socket reached through the
//! forwarder, HTTP clients speaking to it as agents would.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;
use crate::agent::spec::{BASE_URL_VAR, Injected};

#[test]
fn tokens_are_random_and_compared_whole() {
    let (a, b) = (random_hex(32), random_hex(32));
    assert_eq!(a.len(), 64);
    assert_ne!(a, b);
    assert!(same_secret(&a, &a.clone()));
    assert!(!same_secret(&a, &b));
    assert!(!same_secret(&a, &a[..63]));
}

#[test]
fn an_unspecified_listen_address_is_reached_on_loopback() {
    let e = |a: &str| Endpoint {
        tcp: a.parse().unwrap(),
        unix: PathBuf::new(),
    };
    assert_eq!(e("0.0.0.0:7").local_authority(), "127.0.0.1:7");
    assert_eq!(e("[::]:7").local_authority(), "[::1]:7");
    assert_eq!(e("10.1.2.3:7").local_authority(), "10.1.2.3:7");
}

/// What a test host was asked: path and headers (lower-case names).
type Seen = Arc<Mutex<Vec<(String, BTreeMap<String, String>)>>>;

/// A plain HTTP/1.1 host on 127.0.0.1 that records each request and answers
/// `answer(path)` (status, content type, body), one request per connection.
fn host(answer: fn(&str) -> (u16, &'static str, String)) -> (u16, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                let mut r = BufReader::new(stream);
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = BTreeMap::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                log.lock().unwrap().push((path.clone(), headers));
                let (status, ctype, body) = answer(&path);
                let _ = write!(
                    out,
                    "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (port, seen)
}

fn api(path: &str) -> (u16, &'static str, String) {
    let body = serde_json::json!({
        "id": "msg_1", "type": "message", "role": "assistant", "path": path,
        "model": "claude-haiku-4-5-20251001", "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": 10, "output_tokens": 20}
    });
    (200, "application/json", body.to_string())
}

fn config(dir: &std::path::Path, upstream: u16, allowed: u16) -> Config {
    let path = dir.join("flocks.toml");
    std::fs::write(
        &path,
        format!(
            "[proxy]\nupstream = \"http://127.0.0.1:{upstream}/base\"\n[network]\nallow = [\"127.0.0.1:{allowed}\"]\n"
        ),
    )
    .unwrap();
    Config::load(&path).unwrap()
}

fn var<'a>(a: &'a Admission, k: &str) -> &'a str {
    a.env
        .iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{k} not set: {:?}", a.env))
}

fn credential(kind: CredentialKind, secret: &str) -> Option<Injected> {
    Some(Injected {
        name: format!("{kind:?}"),
        kind,
        value: secret.into(),
    })
}

/// The next event `want` accepts (others are skipped), within 10 s.
async fn next_event(
    rx: &mut mpsc::Receiver<ProxyEvent>,
    want: impl Fn(&ProxyEvent) -> bool,
) -> ProxyEvent {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(ev)) if want(&ev) => return ev,
            Ok(Some(_)) => {}
            other => panic!("no such event: {other:?}"),
        }
    }
}

/// A raw `CONNECT` through the proxy at `at`, then (when it is let
/// through) a GET inside the tunnel: the status line of each.
async fn tunnel(at: &str, target: u16, auth: &str) -> (String, Option<String>) {
    let mut s = tokio::net::TcpStream::connect(at).await.unwrap();
    let head = format!(
        "CONNECT 127.0.0.1:{target} HTTP/1.1\r\nHost: 127.0.0.1:{target}\r\nProxy-Authorization: Basic {auth}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).await.unwrap();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.unwrap() == 0 || h.trim().is_empty() {
            break;
        }
    }
    if !status.contains(" 200") {
        return (status.trim().to_string(), None);
    }
    r.get_mut()
        .write_all(b"GET /tunnelled HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut inner = String::new();
    r.read_line(&mut inner).await.unwrap();
    (status.trim().to_string(), Some(inner.trim().to_string()))
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_swapped_scoped_and_die_with_their_attempt() {
    let (up, upstream) = host(api);
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let proxy = Proxy::start(&config(dir.path(), up, 1), Some(tx)).unwrap();
    let at = proxy.endpoint().local_authority();
    let a = proxy.admit("a", 1, credential(CredentialKind::ApiKey, "sk-real"), &at);
    let b = proxy.admit("b", 1, credential(CredentialKind::Oauth, "oauth-real"), &at);
    let (base_a, token_a) = (
        var(&a, BASE_URL_VAR).to_string(),
        var(&a, "ANTHROPIC_API_KEY").to_string(),
    );
    let (base_b, token_b) = (
        var(&b, BASE_URL_VAR).to_string(),
        var(&b, "CLAUDE_CODE_OAUTH_TOKEN").to_string(),
    );
    assert!(
        !a.env.iter().any(|(_, v)| v.contains("sk-real")),
        "{:?}",
        a.env
    );
    assert_eq!(var(&a, CREDENTIAL_VAR), "ApiKey", "the credential's name");
    assert!(base_a.starts_with(&format!("http://{at}/attempt/")));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |base: &str, header: (&str, String)| {
        client
            .post(format!("{base}/v1/messages?beta=true"))
            .header(header.0, header.1)
            .header("authorization", "Bearer what-the-agent-sent")
            .body("{}")
            .send()
    };

    // Its own token: the upstream gets the real key, in its header, and
    // nothing the agent sent.
    let r = post(&base_a, ("x-api-key", token_a.clone())).await.unwrap();
    assert_eq!(r.status(), 200);
    let (path, h) = upstream.lock().unwrap().last().cloned().unwrap();
    assert_eq!(path, "/base/v1/messages?beta=true");
    assert_eq!(h.get("x-api-key").map(String::as_str), Some("sk-real"));
    assert!(!h.contains_key("authorization"), "{h:?}");
    match next_event(&mut rx, |e| matches!(e, ProxyEvent::Usage { .. })).await {
        ProxyEvent::Usage {
            task,
            attempt,
            usage,
        } => {
            assert_eq!((task.as_str(), attempt), ("a", 1));
            assert_eq!(
                (usage.requests, usage.input_tokens, usage.output_tokens),
                (1, 10, 20)
            );
            assert!((usage.cost_usd - (10.0 * 1.0 + 20.0 * 5.0) / 1e6).abs() < 1e-12);
        }
        other => panic!("{other:?}"),
    }
    // OAuth: Bearer, and no x-api-key.
    let r = client
        .post(format!("{base_b}/v1/messages"))
        .bearer_auth(&token_b)
        .header("x-api-key", "junk")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, h) = upstream.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        h.get("authorization").map(String::as_str),
        Some("Bearer oauth-real")
    );
    assert!(!h.contains_key("x-api-key"), "{h:?}");

    // Another attempt's token on this route, a made-up one, none: 401.
    let asked = upstream.lock().unwrap().len();
    for (base, token) in [
        (&base_a, token_b.clone()),
        (&base_b, token_a.clone()),
        (&base_a, "flocks-0".into()),
    ] {
        let r = post(base, ("x-api-key", token)).await.unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let r = client
        .post(format!("{base_a}/v1/messages"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        upstream.lock().unwrap().len(),
        asked,
        "nothing reached the upstream"
    );

    // The attempt ends: its token is refused from then on.
    drop(a);
    let r = post(&base_a, ("x-api-key", token_a)).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(proxy.live_grants(), 1);
}

/// The password in a proxy URL (`http://id:password@host:port`).
fn password_of(url: &str) -> &str {
    let (_, password) = url
        .trim_start_matches("http://")
        .split_once('@')
        .unwrap()
        .0
        .split_once(':')
        .unwrap();
    password
}

/// `flocks __forward`'s server on a loopback port of its own, to the
/// proxy's socket: its address, what stops it, and its task.
async fn start_forwarder(
    proxy: &Proxy,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fwd = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let forwarder = tokio::spawn(forward::serve(
        listener,
        proxy.endpoint().unix.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    (fwd, stop, forwarder)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_forwarder_only_allowed_hosts_answer() {
    let (up, upstream) = host(api);
    let (allowed, seen_allowed) = host(|_| (200, "text/plain", "allowed host".into()));
    let (denied, seen_denied) = host(|_| (200, "text/plain", "denied host".into()));
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let proxy = Proxy::start(&config(dir.path(), up, allowed), Some(tx)).unwrap();

    // The agent's side: the forwarder on its own address, to the socket.
    let (fwd, stop, forwarder) = start_forwarder(&proxy).await;

    let own = proxy.admit("own", 2, None, &fwd);
    let url = var(&own, "HTTP_PROXY").to_string();
    for v in PROXY_VARS {
        assert_eq!(var(&own, v), url);
    }
    assert!(own.remove_env.iter().any(|v| v == "NO_PROXY"));
    assert!(
        !own.env.iter().any(|(k, _)| k == BASE_URL_VAR),
        "no credential, no model URL"
    );
    assert!(url.starts_with(&format!("http://{}:", own.id())) && url.ends_with(&format!("@{fwd}")));
    let via = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&url).unwrap())
        .build()
        .unwrap();

    // Plain HTTP through the proxy: the allowed host answers, the other is refused.
    let r = via
        .get(format!("http://127.0.0.1:{allowed}/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "allowed host".into())
    );
    let r = via
        .get(format!("http://127.0.0.1:{denied}/b"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let refused = |e: &ProxyEvent| matches!(e, ProxyEvent::EgressDenied { .. });
    match next_event(&mut rx, refused).await {
        ProxyEvent::EgressDenied {
            task,
            attempt,
            host,
            port,
        } => {
            assert_eq!(
                (task.as_str(), attempt, host.as_str(), port),
                ("own", 2, "127.0.0.1", denied)
            );
        }
        other => panic!("{other:?}"),
    }

    // CONNECT: the same rule; a wrong password is 407.
    let token = password_of(&url);
    let auth = basic(own.id(), token);
    let (status, inner) = tunnel(&fwd, allowed, &auth).await;
    assert!(status.contains(" 200"), "{status}");
    assert!(inner.unwrap().contains(" 200"));
    let (status, inner) = tunnel(&fwd, denied, &auth).await;
    assert!(status.contains(" 403") && inner.is_none(), "{status}");
    next_event(&mut rx, refused).await;
    let (status, _) = tunnel(&fwd, allowed, &basic(own.id(), "nope")).await;
    assert!(status.contains(" 407"), "{status}");
    // Its own login reaches the model API through the tunnel; an attempt
    // with a flocks credential goes through its token instead.
    let (status, _) = tunnel(&fwd, up, &auth).await;
    assert!(status.contains(" 200"), "{status}");
    let held = proxy.admit(
        "held",
        1,
        credential(CredentialKind::ApiKey, "sk-real"),
        &fwd,
    );
    let held_url = var(&held, "HTTPS_PROXY").to_string();
    let held_token = password_of(&held_url);
    let (status, _) = tunnel(&fwd, up, &basic(held.id(), held_token)).await;
    assert!(status.contains(" 403"), "{status}");

    // Its model URL through its HTTP proxy variable is still a model request.
    let via_held = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(&held_url).unwrap())
        .build()
        .unwrap();
    let r = via_held
        .post(format!("{}/v1/messages", var(&held, BASE_URL_VAR)))
        .header("x-api-key", var(&held, "ANTHROPIC_API_KEY"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, h) = upstream.lock().unwrap().last().cloned().unwrap();
    assert_eq!(h.get("x-api-key").map(String::as_str), Some("sk-real"));

    assert_eq!(
        seen_allowed.lock().unwrap().len(),
        2,
        "the GET and the tunnelled GET"
    );
    assert!(
        seen_denied.lock().unwrap().is_empty(),
        "nothing reached the denied host"
    );
    let _ = stop.send(());
    forwarder.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_said_with_its_address() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(&config(dir.path(), closed, 1), None).unwrap();
    let why = proxy.check_upstream().await.unwrap_err();
    assert!(why.contains(&format!("127.0.0.1:{closed}")), "{why}");
    // The agent's first request: a 502 for it, a signal for its executor.
    let at = proxy.endpoint().local_authority();
    let mut a = proxy.admit("a", 1, credential(CredentialKind::ApiKey, "k"), &at);
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/v1/messages", var(&a, BASE_URL_VAR)))
        .header("x-api-key", var(&a, "ANTHROPIC_API_KEY"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // The executor is told after the agent has had its 502.
    let signal = tokio::time::timeout(std::time::Duration::from_secs(5), a.signals.recv()).await;
    match signal.ok().flatten() {
        Some(Signal::Unreachable(why)) => {
            assert!(why.contains(&format!("127.0.0.1:{closed}")), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
