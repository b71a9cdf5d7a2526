//! `flocks serve` and `flocks report`: the fleet in a web browser.
//!
//! ```text
//!  state.json + journal ─┐
//!  events.jsonl ─────────┼─ model::watch ─▶ watch::Sender<Model> ─┐
//!  logs, git (diff, land plan) ──────────────────────────────────┼─▶ page streams (SSE) ─▶ browser
//!                                                                   └─▶ pages (maud, svg)
//! ```
//!
//! The server reads what any other process may read (it never writes state
//! and needs no lock); a run goes on in its own process. Pages are rendered
//! on the server; each page follows its own server-sent event stream, which
//! sends the fragments (by element id) that changed, and log lines.
//!
//! Security: read-only unless `--allow-actions`. Bound to a loopback
//! address without `FLOCKS_SERVE_TOKEN`, requests must name a loopback host
//! (no DNS rebinding); otherwise every request must carry the token (the
//! `?token=` of the printed URL once, then a cookie). Actions are POSTs with
//! this server's form token, from pages of this origin. Secrets are redacted
//! from everything shown (the same redactor as the logs).

mod actions;
mod auth;
mod metrics;
mod model;
mod pages;
pub(crate) mod report;
mod scope;
pub(crate) use scope::parse_since;
mod sources;
mod streams;
mod svg;
mod timeline;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use maud::html;
use serde::Deserialize;
use tokio::sync::watch;

use crate::agent::redact::Redactor;
use crate::error::{Context, Error, Exit, Result};
use crate::project::Project;
use model::Model;
use pages::Chrome;

/// The environment variable that sets the token.
pub(crate) const TOKEN_VAR: &str = "FLOCKS_SERVE_TOKEN";

pub(crate) struct ServeOptions {
    pub addr: String,
    pub allow_actions: bool,
}

pub(crate) struct Inner {
    pub project: Arc<Project>,
    pub models: watch::Receiver<Arc<Model>>,
    pub chrome: Chrome,
    pub redactor: Arc<Redactor>,
    pub auth: auth::Auth,
    pub name: String,
    /// What `/metrics` has read of events.jsonl so far.
    pub events_tally: std::sync::Mutex<metrics::EventTally>,
}

pub(crate) type App = Arc<Inner>;

/// Serve until Ctrl-C or SIGTERM.
pub(crate) fn serve(project: Project, opts: &ServeOptions) -> Result<Exit> {
    project.repo()?;
    let addr: SocketAddr = opts.addr.parse().map_err(|_| {
        Error::Usage(format!(
            "--addr `{}` is not an IP:PORT (e.g. 127.0.0.1:7777, or 0.0.0.0:7777 for other machines)",
            opts.addr
        ))
    })?;
    let token = auth::token(addr)?;
    let mut secrets = crate::runner::credentials::Credentials::from_env(&project.config).secrets();
    if let Some(t) = &token.value {
        secrets.push((t.clone(), TOKEN_VAR.to_string()));
    }
    let redactor = Arc::new(Redactor::new(secrets));
    let first = Arc::new(model::first(&project)?);
    let project = Arc::new(project);
    let runtime = crate::service::runtime()?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AddrInUse => Error::CannotStart(format!(
                    "{addr} is in use (another `flocks serve`, or another program): choose another port with --addr, e.g. {}",
                    crate::suggest::command(&[
                        "flocks",
                        "serve",
                        "--addr",
                        &std::net::SocketAddr::new(addr.ip(), addr.port().wrapping_add(1).max(1))
                            .to_string()
                    ])
                )),
                _ => Error::Io {
                    context: format!("listen on {addr}"),
                    source: e,
                },
            })?;
        let bound = listener.local_addr().map_err(|e| Error::Io {
            context: "read the address listened on".into(),
            source: e,
        })?;
        let (tx, rx) = watch::channel(first.clone());
        tokio::spawn(model::watch(project.clone(), first, tx));
        let app: App = Arc::new(Inner {
            name: report::project_name(&project),
            project,
            models: rx,
            chrome: Chrome {
                csrf: opts.allow_actions.then(auth::random_token),
            },
            redactor,
            auth: auth::Auth {
                token: token.value.clone(),
                loopback_only: addr.ip().is_loopback() && token.value.is_none(),
            },
            events_tally: Default::default(),
        });
        say_where(bound, &token, opts.allow_actions);
        let router = router(app);
        let server = axum::serve(listener, router);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .ctx(|| "watch for SIGTERM".into())?;
        tokio::select! {
            r = server => r.map_err(|e| Error::Io { context: "serve".into(), source: e })?,
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok::<(), Error>(())
    });
    // Open event streams do not hold the exit up.
    runtime.shutdown_background();
    result?;
    Ok(Exit::Ok)
}

fn say_where(bound: SocketAddr, token: &auth::Token, actions: bool) {
    let host = if bound.ip().is_unspecified() {
        // Any address of this machine: loopback works here, others elsewhere.
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), bound.port()).to_string()
    } else {
        bound.to_string()
    };
    let mode = if actions {
        "with retry, stop and land buttons"
    } else {
        "read-only"
    };
    match &token.value {
        Some(t) => {
            crate::outln!("flocks serve: http://{host}/?token={t}");
            crate::outln!(
                "  ({mode}; every request needs the token{}; Ctrl-C stops)",
                if token.generated {
                    format!(": generated now, set {TOKEN_VAR} to choose one")
                } else {
                    format!(" from {TOKEN_VAR}")
                }
            );
            if bound.ip().is_unspecified() {
                crate::outln!(
                    "  from other machines: this machine's address, port {}",
                    bound.port()
                );
            }
        }
        None => crate::outln!("flocks serve: http://{host}/  ({mode}; Ctrl-C stops)"),
    }
    let _ = std::io::Write::flush(&mut std::io::stdout());
}

fn router(app: App) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/events", get(streams::dashboard))
        .route("/tasks/{id}", get(task))
        .route("/tasks/{id}/events", get(streams::task))
        .route("/land", get(land))
        .route("/land/events", get(streams::land))
        .route("/report", get(report_page))
        .route("/metrics", get(metrics_page))
        .route("/actions/stop", post(actions::stop))
        .route("/actions/retry/{id}", post(actions::retry))
        .route("/actions/land", post(actions::land))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::guard,
        ))
        .with_state(app)
}

async fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        Html(
            pages::message("Not found", html! { p { a href="/" { "The dashboard" } } })
                .into_string(),
        ),
    )
        .into_response()
}

#[derive(Deserialize)]
pub(crate) struct Filter {
    pub status: Option<String>,
}

async fn dashboard(State(app): State<App>, Query(q): Query<Filter>) -> Html<String> {
    let model = app.models.borrow().clone();
    let filter = q.status.filter(|s| !s.is_empty());
    let frags = pages::dashboard_fragments(&model, filter.as_deref(), &app.chrome, &app.redactor);
    let url = match &filter {
        Some(s) => format!("/events?status={}", streams::query_escape(s)),
        None => "/events".to_string(),
    };
    Html(pages::dashboard(&app.name, &frags, &url).into_string())
}

#[derive(Deserialize)]
pub(crate) struct TaskQuery {
    pub attempt: Option<u32>,
}

async fn task(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<TaskQuery>,
) -> Response {
    let model = app.models.borrow().clone();
    let a = app.clone();
    let id2 = id.clone();
    let loaded = tokio::task::spawn_blocking(move || streams::load_task(&a, &id2, q.attempt)).await;
    let loaded = match loaded {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => return error_page(axum::http::StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => {
            return error_page(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                &e.to_string(),
            );
        }
    };
    let frags = pages::task_fragments(
        &model,
        Some(&loaded.record),
        &id,
        loaded.shown,
        &app.chrome,
        &app.redactor,
    );
    let log = loaded.shown.map(|n| {
        (
            n,
            pages::log_lines(&loaded.lines, &app.redactor),
            q.attempt.is_none(),
        )
    });
    let mut url = format!(
        "/tasks/{}/events?from={}",
        streams::query_escape(&id),
        loaded.pos
    );
    if let Some(n) = q.attempt.or(loaded.shown) {
        url.push_str(&format!("&attempt={n}"));
    }
    if loaded.log_id != id {
        url.push_str(&format!("&log={}", streams::query_escape(&loaded.log_id)));
    }
    if q.attempt.is_none() {
        url.push_str("&follow=1");
    }
    // The prompt is the user's words, but may quote a secret: redacted too.
    let prompt = sources::Prompt {
        text: loaded
            .prompt
            .text
            .as_deref()
            .map(|t| app.redactor.redact(t).into_owned()),
        note: loaded.prompt.note.clone(),
    };
    let page = pages::task_page(
        &id,
        loaded.record.title.as_deref(),
        &frags,
        log,
        &loaded.log_id,
        &prompt,
        loaded.diff,
        &url,
    );
    Html(page.into_string()).into_response()
}

async fn land(State(app): State<App>) -> Html<String> {
    let a = app.clone();
    let live = app.models.borrow().live();
    let plan = tokio::task::spawn_blocking(move || sources::land_plan(&a.project))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    Html(
        pages::land_page(
            pages::land_fragment(plan, live, &app.chrome, &app.redactor),
            "/land/events",
        )
        .into_string(),
    )
}

async fn report_page(State(app): State<App>) -> Response {
    let a = app.clone();
    let r = tokio::task::spawn_blocking(move || {
        report::render(&a.project, report::Pick::Piece, &a.redactor)
    })
    .await;
    match r {
        Ok(Ok(w)) => Html(w.html).into_response(),
        Ok(Err(e)) => error_page(axum::http::StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => error_page(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

/// `/metrics`: Prometheus' text format.
async fn metrics_page(State(app): State<App>) -> Response {
    let model = app.models.borrow().clone();
    let a = app.clone();
    let text = tokio::task::spawn_blocking(move || {
        let mut events = a
            .events_tally
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        events.poll(&a.project.events_path());
        metrics::render(&model.status, &model.tally, &events, model.live())
    })
    .await;
    match text {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => error_page(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            &e.to_string(),
        ),
    }
}

pub(crate) fn error_page(code: axum::http::StatusCode, message: &str) -> Response {
    (
        code,
        Html(
            pages::message(
                "flocks",
                html! { p.error { (message) } p { a href="/" { "The dashboard" } } },
            )
            .into_string(),
        ),
    )
        .into_response()
}
