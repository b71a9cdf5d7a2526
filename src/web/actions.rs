//! The buttons of `flocks serve --allow-actions`: retry a task, stop the
//! run, land. Each runs this flocks binary with the command's argv (the
//! same checks, trust and locks as typed at the terminal), in its own
//! process group (Ctrl-C on `serve` does not stop a retry it started), with
//! its output in `.flocks/serve/<time>-<command>.log`. The page waits a few
//! seconds and shows the output, or says where it goes on.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::{App, auth, error_page, pages};

/// How long the page waits for the command before answering.
const WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn stop(State(app): State<App>, Form(f): Form<ActionForm>) -> Response {
    act(app, &f, vec!["stop".into()]).await
}

pub(crate) async fn retry(
    State(app): State<App>,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Response {
    act(app, &f, vec!["retry".into(), "--".into(), id]).await
}

pub(crate) async fn land(State(app): State<App>, Form(f): Form<ActionForm>) -> Response {
    act(app, &f, vec!["land".into(), "-y".into()]).await
}

async fn act(app: App, form: &ActionForm, args: Vec<String>) -> Response {
    if app.chrome.csrf.is_none() {
        return error_page(
            StatusCode::FORBIDDEN,
            "this dashboard is read-only: start it with `flocks serve --allow-actions` for retry, stop and land",
        );
    }
    if !auth::form_ok(&app, &form.csrf) {
        return error_page(
            StatusCode::FORBIDDEN,
            "this form is not from this dashboard: reload the page and try again",
        );
    }
    let a = app.clone();
    let done = tokio::task::spawn_blocking(move || run(&a, &args)).await;
    match done {
        Ok(Ok(page)) => Html(page).into_response(),
        Ok(Err(e)) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn run(app: &App, args: &[String]) -> Result<String, String> {
    let project = &app.project;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the flocks binary: {e}"))?;
    let dir = project.state_dir().join("serve");
    let verb = args.first().map(String::as_str).unwrap_or("flocks");
    let log = dir.join(format!(
        "{}-{verb}.log",
        chrono::Utc::now().format("%Y%m%d-%H%M%S%.3f")
    ));
    // `.flocks/` is agent-writable: no link is followed.
    let out = crate::fsat::create(&log)
        .map_err(|e| format!("cannot create {}: {e}", log.display()))?
        .file;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--color")
        .arg("never")
        .arg("--config")
        .arg(&project.config.path)
        .args(args)
        .current_dir(&project.config.dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let pid = child.id();
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(100)),
            _ => break None,
        }
    };
    if status.is_none() {
        // Reap it when it ends.
        std::thread::spawn(move || child.wait());
    }
    let output = crate::fsat::read_to_string(&log).unwrap_or_default();
    let mut words = vec!["flocks".to_string()];
    words.extend(args.iter().cloned());
    let shown = crate::suggest::command(&words);
    let body = html! {
        p { code { (shown) } }
        @match status {
            Some(s) => p { @if s.success() { span.badge.s-succeeded { "done" } } @else { span.badge.s-failed { "exit " (s.code().unwrap_or(-1)) } } },
            None => p { span.badge.s-running { "still running" } " as pid " (pid) "; its output goes on in " code { (log.display()) } },
        }
        pre.result { (app.redactor.redact(&output)) }
        p { a href="/" { "The dashboard" } " · " a href="/land" { "Land" } }
    };
    Ok(pages::message("flocks serve: action", body).into_string())
}
