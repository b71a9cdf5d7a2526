//! flocks' model proxy and egress gate: one listener per run, in the flocks
//! process on a thread and runtime of its own (a TCP address, `[proxy]
//! listen`, and a unix socket for agents that reach it through a
//! forwarder), serving three kinds of traffic:
//!
//! ```text
//!  agent ── POST /attempt/<id>/v1/messages ──▶ proxy ── real key ──▶ [proxy] upstream
//!          (its model token as x-api-key       │  (x-api-key or Bearer; what the
//!           or Authorization: Bearer)          │   agent sent is dropped)
//!                          ◀── streamed as it comes (SSE event by event) ──
//!                              usage, 429 resets ──▶ ProxyEvent ──▶ dispatcher
//!  agent ── CONNECT host:443 (HTTPS_PROXY) ──▶ [network] allow? tunnel : 403 + egress_denied
//!  agent ── GET http://host/… (HTTP_PROXY) ──▶ [network] allow? forward : 403 + egress_denied
//! ```
//!
//! Every attempt that gets a flocks credential, or runs while `[network]` is
//! set, is admitted ([`Proxy::admit`]): it gets a route id (public, in its
//! URLs) and random tokens (32 bytes each): a model token in place of the
//! secret (in `ANTHROPIC_API_KEY` or `CLAUDE_CODE_OAUTH_TOKEN`, as the
//! credential's kind says) and a proxy token (the password of the
//! `HTTP(S)_PROXY` URLs, whose user is the route id). A request counts only
//! when its token belongs to the route it names: another attempt's token, or
//! any token once its attempt ended, gets 401 (407 as a proxy). The grant
//! dies with the attempt ([`Admission`] revokes it when dropped). Setup
//! commands get the proxy URLs but no model token.
//!
//! Nothing of a body is stored: usage is read from responses as they pass
//! (`usage.rs`), a 429's headers give the credential's reset (`limits.rs`),
//! and both reach the dispatcher as [`ProxyEvent`]s, an input like the
//! executors' events. An upstream that cannot be reached fails the attempt:
//! the executor checks it before the agent starts ([`Proxy::check_upstream`])
//! and is told ([`Signal::Unreachable`]) when the agent's first request
//! cannot reach it.

pub mod forward;
mod limits;
mod serve;
mod usage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::agent::spec::{BASE_URL_VAR, Injected};
use crate::config::{Config, CredentialChoice, CredentialKind, NetworkConfig};

pub(crate) use usage::UsageDelta;

/// The variables that hold the proxy's URL for HTTP clients; all four are set
/// (and `NO_PROXY`/`no_proxy` removed) when `[network]` is set.
pub const PROXY_VARS: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// Inherited variables that would let an agent's HTTP client bypass the proxy.
pub const BYPASS_VARS: &[&str] = &["NO_PROXY", "no_proxy"];
/// The name of the flocks credential an agent's token stands for.
pub const CREDENTIAL_VAR: &str = "FLOCKS_CREDENTIAL";
/// Where a route's model requests go: `/attempt/<id>/v1/messages`.
const ROUTE_PREFIX: &str = "/attempt/";
/// How long a check of the upstream is trusted.
const CHECK_TTL: Duration = Duration::from_secs(5);
/// How long one check may take.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

/// What the proxy tells the dispatcher.
#[derive(Debug, Clone)]
pub enum ProxyEvent {
    /// Tokens (and their price) of one response, or of its start: add them
    /// to the attempt's.
    Usage {
        task: String,
        attempt: u32,
        usage: UsageDelta,
    },
    /// The API answered 429: the credential's limit resets then (None: the
    /// answer said no time).
    RateLimited {
        task: String,
        attempt: u32,
        credential: String,
        until: Option<DateTime<Utc>>,
    },
    /// Something for people to read (the upstream does not answer).
    Notice(String),
    /// A connection the allowlist refused.
    EgressDenied {
        task: String,
        attempt: u32,
        host: String,
        port: u16,
    },
}

/// What the proxy tells one attempt's executor.
#[derive(Debug, Clone)]
pub enum Signal {
    /// The agent's first request could not reach the upstream: the attempt
    /// ends as `spawn_failed` with this reason.
    Unreachable(String),
}

/// Where the proxy listens, as this machine sees it.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The TCP listener (`[proxy] listen`, its port chosen when it was 0).
    pub tcp: SocketAddr,
    /// The unix socket: a backend whose agents have no network binds it in
    /// and runs `flocks __forward` beside them (see [`forward`]).
    pub unix: PathBuf,
}

impl Endpoint {
    /// `host:port` for a client on this machine (an unspecified listen
    /// address is reached on loopback).
    pub fn local_authority(&self) -> String {
        let ip = match self.tcp.ip() {
            std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        SocketAddr::new(ip, self.tcp.port()).to_string()
    }
}

/// The secret a grant holds for its attempt.
struct Held {
    name: String,
    kind: CredentialKind,
    secret: String,
}

/// One admitted attempt.
struct Grant {
    task: String,
    attempt: u32,
    /// None: the attempt has no flocks credential (only egress).
    model_token: Option<String>,
    proxy_token: String,
    held: Option<Held>,
    /// The `host:port` the agent reaches the proxy at (its own model URL,
    /// when it comes through its HTTP proxy variable).
    base: String,
    /// A request of this attempt got an answer from the upstream.
    reached: AtomicBool,
    signals: mpsc::Sender<Signal>,
}

/// State shared by the listeners' connections.
struct Shared {
    grants: RwLock<HashMap<String, Arc<Grant>>>,
    upstream: reqwest::Url,
    /// `host:port` of the upstream, for messages and the implicit allow.
    upstream_addr: (String, u16),
    client: reqwest::Client,
    network: Option<NetworkConfig>,
    events: Option<mpsc::Sender<ProxyEvent>>,
    checked: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Shared {
    fn grant(&self, id: &str) -> Option<Arc<Grant>> {
        self.grants.read().ok()?.get(id).cloned()
    }

    fn upstream_display(&self) -> String {
        format!(
            "{} ({}:{})",
            self.upstream.as_str().trim_end_matches('/'),
            self.upstream_addr.0,
            self.upstream_addr.1
        )
    }

    async fn emit(&self, event: ProxyEvent) {
        if let Some(tx) = &self.events {
            // The dispatcher is gone only at the run's end: nothing to tell.
            let _ = tx.send(event).await;
        }
    }

    /// Emit from a place that cannot wait (a response body being polled).
    fn emit_later(self: &Arc<Self>, event: ProxyEvent) {
        let shared = self.clone();
        tokio::spawn(async move { shared.emit(event).await });
    }
}

/// The run's proxy: its listeners stop and its socket (with its private
/// directory) goes when it is dropped.
pub struct Proxy {
    shared: Arc<Shared>,
    endpoint: Endpoint,
    /// Ends the proxy's thread.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    sock_dir: PathBuf,
    /// The socket is in the project's [`shared_dir`] (kept; only the socket goes).
    in_shared: bool,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if self.in_shared {
            let _ = std::fs::remove_file(&self.endpoint.unix);
        } else {
            let _ = std::fs::remove_dir_all(&self.sock_dir);
        }
    }
}

/// Where containers made by `flocks up` see the project's [`shared_dir`]
/// (bound read-only): the proxy's socket and flocks' own binary, the
/// forwarder, are there.
pub const CONTAINER_DIR: &str = "/run/flocks-proxy";

/// The project's proxy directory on this machine, outside the repository
/// (`$XDG_STATE_HOME/flocks/<key>/proxy`): `flocks up` binds it into
/// clone-mode containers, and a run whose config has docker pools puts its
/// proxy's socket there (a container's mounts are fixed when it is made).
pub fn shared_dir(config: &Config) -> Option<PathBuf> {
    crate::state::outside_dir(&config.state_dir()).map(|d| d.join("proxy"))
}

/// Make the shared directory: traversable by every user (a container's
/// exec user need not be flocks'), listable by none but its owner.
pub fn make_shared_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// Longest unix socket path (sun_path holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 100;

/// Whether a run of `config` needs the proxy: a pool injects a flocks
/// credential, or `[network]` is set.
pub fn needed(config: &Config) -> bool {
    config.network.is_some()
        || config
            .pools
            .iter()
            .any(|p| p.credential != CredentialChoice::Default)
}

/// The upstream: `[proxy] upstream`, else flocks' own `ANTHROPIC_BASE_URL`,
/// else the default. Err: the environment's value is not an http(s) URL.
pub fn upstream_url(config: &Config) -> Result<reqwest::Url, String> {
    if let Some(u) = &config.proxy.upstream {
        return crate::config::check_upstream(u);
    }
    match std::env::var(BASE_URL_VAR) {
        Ok(v) if !v.trim().is_empty() => crate::config::check_upstream(&v)
            .map_err(|e| format!("{BASE_URL_VAR} in flocks' environment: {e}")),
        _ => crate::config::check_upstream(crate::config::DEFAULT_UPSTREAM),
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Upstream(String),
    #[error("cannot listen on {addr} ([proxy] listen in {}): {source}", .config.display())]
    Listen {
        addr: SocketAddr,
        config: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the proxy's socket in {}: {source}", .dir.display())]
    Socket {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the proxy's HTTP client: {0}")]
    Client(String),
}

impl Proxy {
    /// Bind the listeners and serve them on a thread of the proxy's own.
    /// `events` goes to the dispatcher (None: nobody listens, as for `flocks
    /// plan`).
    pub fn start(
        config: &Config,
        events: Option<mpsc::Sender<ProxyEvent>>,
    ) -> Result<Proxy, StartError> {
        let upstream = upstream_url(config).map_err(StartError::Upstream)?;
        let upstream_addr = (
            upstream.host_str().unwrap_or_default().to_string(),
            upstream.port_or_known_default().unwrap_or(443),
        );
        let client = reqwest::Client::builder()
            .tls_built_in_webpki_certs(false)
            .tls_built_in_native_certs(true)
            .connect_timeout(CHECK_LIMIT)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| StartError::Client(e.to_string()))?;
        let listen_error = |source| StartError::Listen {
            addr: config.proxy.listen,
            config: config.path.clone(),
            source,
        };
        let tcp = std::net::TcpListener::bind(config.proxy.listen).map_err(listen_error)?;
        let tcp_addr = tcp.local_addr().map_err(listen_error)?;
        // Docker pools' containers see the project's shared directory; the
        // socket goes there (a name of this run's own), when its path fits.
        let shared = config
            .pools
            .iter()
            .any(|p| matches!(p.backend, crate::config::BackendConfig::Docker(_)))
            .then(|| shared_dir(config))
            .flatten()
            .map(|d| {
                let name = format!("proxy-{}-{}.sock", std::process::id(), random_hex(4));
                (d, name)
            })
            .filter(|(d, name)| d.join(name).as_os_str().len() <= MAX_SOCKET_PATH)
            .filter(|(d, _)| make_shared_dir(d).is_ok());
        let in_shared = shared.is_some();
        let (sock_dir, unix_path) = match shared {
            Some((d, name)) => (d.clone(), d.join(name)),
            None => {
                let d = socket_dir().map_err(|(dir, source)| StartError::Socket { dir, source })?;
                (d.clone(), d.join("proxy.sock"))
            }
        };
        let socket_error = |source| {
            if in_shared {
                let _ = std::fs::remove_file(&unix_path);
            } else {
                let _ = std::fs::remove_dir_all(&sock_dir);
            }
            StartError::Socket {
                dir: sock_dir.clone(),
                source,
            }
        };
        let unix = std::os::unix::net::UnixListener::bind(&unix_path).map_err(socket_error)?;
        if in_shared {
            // Any exec user of a container connects: the tokens are the key,
            // as for the TCP port that every local user reaches.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&unix_path, std::fs::Permissions::from_mode(0o666))
                .map_err(socket_error)?;
        }
        // Its own thread and runtime: the answers streaming through never
        // wait on the run's other work (git, logs, state), and one thread
        // carries every connection without handing events between threads.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(socket_error)?;
        let (tcp, unix) = {
            let _in = runtime.enter();
            tcp.set_nonblocking(true).map_err(listen_error)?;
            unix.set_nonblocking(true).map_err(socket_error)?;
            (
                tokio::net::TcpListener::from_std(tcp).map_err(listen_error)?,
                tokio::net::UnixListener::from_std(unix).map_err(socket_error)?,
            )
        };
        let shared = Arc::new(Shared {
            grants: RwLock::new(HashMap::new()),
            upstream,
            upstream_addr,
            client,
            network: config.network.clone(),
            events,
            checked: Mutex::new(None),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = shared.clone();
        std::thread::Builder::new()
            .name("flocks-proxy".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        _ = serve::accept_tcp(tcp, serving.clone()) => {}
                        _ = serve::accept_unix(unix, serving) => {}
                        _ = stopped => {}
                    }
                });
                // A DNS lookup still running on its blocking pool is not waited for.
                runtime.shutdown_background();
            })
            .map_err(socket_error)?;
        Ok(Proxy {
            shared,
            endpoint: Endpoint {
                tcp: tcp_addr,
                unix: unix_path,
            },
            stop: Some(stop),
            sock_dir,
            in_shared,
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The upstream for people: its URL and `host:port`.
    pub fn upstream_display(&self) -> String {
        self.shared.upstream_display()
    }

    /// Whether `[network]` is set (agents get the proxy variables).
    pub fn gates_egress(&self) -> bool {
        self.shared.network.is_some()
    }

    /// Can the upstream be reached (a TCP connection to its host and port)?
    /// Answers from the last check for a few seconds. Err names the address.
    pub async fn check_upstream(&self) -> Result<(), String> {
        if let Ok(c) = self.shared.checked.lock()
            && let Some((at, result)) = c.as_ref()
            && at.elapsed() < CHECK_TTL
        {
            return result.clone();
        }
        let (host, port) = self.shared.upstream_addr.clone();
        let result = match tokio::time::timeout(
            CHECK_LIMIT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", CHECK_LIMIT.as_secs())),
        }
        .map_err(|e| {
            format!(
                "flocks' proxy cannot reach the model API at {}: {e}",
                self.shared.upstream_display()
            )
        });
        if let Ok(mut c) = self.shared.checked.lock() {
            *c = Some((Instant::now(), result.clone()));
        }
        result
    }

    /// Admit one attempt: its grant lives until the [`Admission`] is
    /// dropped. `address`: the `host:port` the agent reaches the proxy at.
    pub fn admit(
        &self,
        task: &str,
        attempt: u32,
        credential: Option<Injected>,
        address: &str,
    ) -> Admission {
        let id = random_hex(8);
        let (tx, rx) = mpsc::channel(4);
        let held = credential.map(|c| Held {
            name: c.name,
            kind: c.kind,
            secret: c.value,
        });
        let grant = Arc::new(Grant {
            task: task.to_string(),
            attempt,
            model_token: held.as_ref().map(|_| format!("flocks-{}", random_hex(32))),
            proxy_token: random_hex(32),
            held,
            base: address.to_string(),
            reached: AtomicBool::new(false),
            signals: tx,
        });
        let mut env: Vec<(String, String)> = Vec::new();
        let mut remove_env: Vec<String> = Vec::new();
        if let (Some(token), Some(held)) = (&grant.model_token, &grant.held) {
            env.push((
                BASE_URL_VAR.into(),
                format!("http://{address}{ROUTE_PREFIX}{id}"),
            ));
            env.push((held.kind.target_var().into(), token.clone()));
            // Which credential the token stands for (a name, no secret).
            env.push((CREDENTIAL_VAR.into(), held.name.clone()));
        }
        if self.shared.network.is_some() {
            let url = format!("http://{id}:{}@{address}", grant.proxy_token);
            for v in PROXY_VARS {
                env.push((v.to_string(), url.clone()));
            }
            remove_env.extend(BYPASS_VARS.iter().map(|s| s.to_string()));
        }
        if let Ok(mut g) = self.shared.grants.write() {
            g.insert(id.clone(), grant);
        }
        Admission {
            env,
            remove_env,
            signals: rx,
            guard: Revoke {
                shared: self.shared.clone(),
                id,
            },
        }
    }

    /// Grants alive now (tests, and the run's end).
    #[cfg(test)]
    pub fn live_grants(&self) -> usize {
        self.shared.grants.read().map(|g| g.len()).unwrap_or(0)
    }
}

/// One admitted attempt: what its agent's environment gets, and the
/// proxy's signals for its executor. Dropping it revokes the attempt's tokens.
pub struct Admission {
    /// Set for the agent (the model token and URL; the proxy variables).
    pub env: Vec<(String, String)>,
    /// Removed from the inherited environment (`NO_PROXY`).
    pub remove_env: Vec<String>,
    pub signals: mpsc::Receiver<Signal>,
    guard: Revoke,
}

impl Admission {
    /// The route id (the attempt's public name in its URLs).
    pub fn id(&self) -> &str {
        &self.guard.id
    }

    /// The attempt's tokens and their names for redaction: a live token is
    /// kept out of logs as the secret it stands for (the model token under
    /// its credential's name, the proxy token as `flocks-proxy`).
    pub fn secrets(&self) -> Vec<(String, String)> {
        let Some(grant) = self.guard.shared.grant(&self.guard.id) else {
            return Vec::new();
        };
        let mut out = vec![(grant.proxy_token.clone(), "flocks-proxy".to_string())];
        if let (Some(t), Some(h)) = (&grant.model_token, &grant.held) {
            out.push((t.clone(), h.name.clone()));
        }
        out
    }
}

struct Revoke {
    shared: Arc<Shared>,
    id: String,
}

impl Drop for Revoke {
    fn drop(&mut self) {
        if let Ok(mut g) = self.shared.grants.write() {
            g.remove(&self.id);
        }
    }
}

/// A private directory for the socket (mode 0700): under
/// `$XDG_RUNTIME_DIR` when set, else the temp dir (socket paths are short).
fn socket_dir() -> Result<PathBuf, (PathBuf, std::io::Error)> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(format!(
        "flocks-proxy-{}-{}",
        std::process::id(),
        random_hex(4)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| (dir.clone(), e))?;
    Ok(dir)
}

/// `n` random bytes (the kernel's getrandom) as hex.
fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let got = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr().cast::<libc::c_void>(),
                n - filled,
                0,
            )
        };
        if got > 0 {
            filled += got as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom(2) does not fail on Linux >= 3.17 once the pool is
            // ready; read the device instead of handing out a weak token.
            use std::io::Read;
            let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
            f.read_exact(&mut buf[filled..]).expect("/dev/urandom");
            filled = n;
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal, in time that does not depend on where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests;
