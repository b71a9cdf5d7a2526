//! Delivering one message: run a command with the JSON on stdin, or POST to
//! a webhook (reqwest with rustls). The caller puts the time limit on it.
//! Header values are secrets: they are marked sensitive and scrubbed from
//! every error text.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use tokio::io::AsyncWriteExt;

use super::message::Message;
use crate::config::{NotifyConfig, NotifyTarget, WebhookFormat};
use crate::error::{Error, Result};

/// Bytes of a failed answer's body or a command's stderr quoted in a notice.
const QUOTED: usize = 200;

/// Why a message was not delivered (its text is scrubbed before anyone sees it).
#[derive(Debug, thiserror::Error)]
pub(super) enum DeliveryError {
    #[error("took longer than timeout_secs = {}", .0.as_secs_f64())]
    TimedOut(std::time::Duration),
    /// The request did not get an answer (connect, TLS, ...): the reqwest
    /// error's chain, without the URL.
    #[error("{0}")]
    Request(String),
    #[error("HTTP {status}{}", parenthesized(.body))]
    Status {
        status: reqwest::StatusCode,
        /// The first line of the answer's body, cut short.
        body: String,
    },
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} {}{}", match .code { Some(c) => format!("exited with code {c}"), None => "was killed by a signal".to_string() }, parenthesized(.stderr))]
    Exit {
        program: String,
        code: Option<i32>,
        /// The first line of its stderr, cut short.
        stderr: String,
    },
}

fn parenthesized(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

#[derive(Clone)]
pub(super) enum Delivery {
    Command {
        argv: Arc<Vec<String>>,
        dir: PathBuf,
    },
    Webhook {
        client: reqwest::Client,
        url: Arc<str>,
        format: WebhookFormat,
        headers: HeaderMap,
        /// The header values, to scrub from error texts.
        secrets: Arc<Vec<String>>,
    },
}

impl Delivery {
    pub(super) fn new(n: &NotifyConfig, values: Vec<(String, String)>) -> Result<Self> {
        Ok(match &n.target {
            NotifyTarget::Command { argv } => Delivery::Command {
                argv: Arc::new(argv.clone()),
                // Not the repository: agents may write there while the run goes on.
                dir: std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(PathBuf::from)
                    .filter(|h| h.is_dir())
                    .unwrap_or_else(|| PathBuf::from("/")),
            },
            NotifyTarget::Webhook { url, format, .. } => {
                let mut headers = HeaderMap::new();
                let mut secrets = Vec::new();
                for (name, value) in values {
                    // Both were checked when the config and the variable were read.
                    let (Ok(name), Ok(mut header)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) else {
                        continue;
                    };
                    header.set_sensitive(true);
                    headers.insert(name, header);
                    secrets.push(value);
                }
                let client = reqwest::Client::builder()
                    // A webhook answers; it does not send its headers elsewhere.
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(concat!("flocks/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| Error::Other(format!("set up the HTTP client: {e}")))?;
                Delivery::Webhook {
                    client,
                    url: url.as_str().into(),
                    format: *format,
                    headers,
                    secrets: Arc::new(secrets),
                }
            }
        })
    }

    /// `text` without any header value in it.
    pub(super) fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        if let Delivery::Webhook { secrets, .. } = self {
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                out = out.replace(s.as_str(), "[redacted]");
            }
        }
        out
    }

    pub(super) async fn deliver(self, message: Message) -> Result<(), DeliveryError> {
        match &self {
            Delivery::Command { argv, dir } => run_command(argv, dir, &message).await,
            Delivery::Webhook {
                client,
                url,
                format,
                headers,
                ..
            } => {
                let (content_type, body) = match format {
                    WebhookFormat::Json => ("application/json", message.json.to_string()),
                    WebhookFormat::Slack => (
                        "application/json",
                        serde_json::json!({ "text": message.text }).to_string(),
                    ),
                    WebhookFormat::Text => ("text/plain; charset=utf-8", message.text.clone()),
                };
                let mut all = HeaderMap::new();
                all.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
                // The user's headers win (a Content-Type of their own too).
                for (name, value) in headers {
                    all.insert(name.clone(), value.clone());
                }
                let answer = client
                    .post(url.as_ref())
                    .headers(all)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| DeliveryError::Request(error_chain(&e)))?;
                let status = answer.status();
                if status.is_success() {
                    return Ok(());
                }
                let body = answer.text().await.unwrap_or_default();
                Err(DeliveryError::Status {
                    status,
                    body: quote(body.trim()),
                })
            }
        }
    }
}

/// A reqwest error and its causes, without the URL (a webhook's path may be
/// its secret).
fn error_chain(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let mut out = if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

fn quote(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(QUOTED) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

/// Run `argv` in your home directory with the message's JSON (and a
/// newline) on stdin and `FLOCKS_EVENT` set to its kind. It runs in a
/// process group of its own, killed whole when the time limit drops this.
async fn run_command(
    argv: &[String],
    dir: &PathBuf,
    message: &Message,
) -> Result<(), DeliveryError> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env("FLOCKS_EVENT", &message.kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| DeliveryError::Spawn {
        program: argv[0].clone(),
        source,
    })?;
    let mut group = child.id().map(|pid| GroupGuard {
        pgid: pid as i32,
        armed: true,
    });
    if let Some(mut stdin) = child.stdin.take() {
        let mut line = message.json.to_string();
        line.push('\n');
        // A command that does not read its stdin is fine.
        let _ = stdin.write_all(line.as_bytes()).await;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| DeliveryError::Spawn {
            program: argv[0].clone(),
            source,
        })?;
    // It ended in time: what it started in the background is its own business.
    if let Some(g) = group.as_mut() {
        g.armed = false;
    }
    if out.status.success() {
        return Ok(());
    }
    Err(DeliveryError::Exit {
        program: argv[0].clone(),
        code: out.status.code(),
        stderr: quote(String::from_utf8_lossy(&out.stderr).trim()),
    })
}

/// Kills a command's process group when the time limit drops the delivery
/// before the command ended.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeaderFromEnv;

    #[test]
    fn header_values_are_sensitive_and_scrubbed_from_error_texts() {
        let n = NotifyConfig {
            number: 1,
            on: vec!["finished".into()],
            target: NotifyTarget::Webhook {
                url: "https://ntfy.example/topic".into(),
                format: WebhookFormat::Text,
                headers: vec![HeaderFromEnv {
                    name: "Authorization".into(),
                    env: "T".into(),
                    line: 1,
                }],
            },
            timeout: std::time::Duration::from_secs(1),
            coalesce: std::time::Duration::ZERO,
        };
        let d = Delivery::new(&n, vec![("Authorization".into(), "Bearer tk-123".into())]).unwrap();
        let Delivery::Webhook { headers, .. } = &d else {
            panic!("a webhook");
        };
        assert!(headers["authorization"].is_sensitive());
        assert!(!format!("{headers:?}").contains("tk-123"));
        assert_eq!(
            d.scrub("HTTP 401 (bad token Bearer tk-123)"),
            "HTTP 401 (bad token [redacted])"
        );
    }

    #[test]
    fn quotes_keep_one_short_line() {
        assert_eq!(quote("first\nsecond"), "first");
        let long = "x".repeat(QUOTED + 50);
        assert_eq!(quote(&long).chars().count(), QUOTED + 1);
    }
}
