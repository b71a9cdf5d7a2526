//! `[[notify]]`: which events, sent where (a command or a webhook), how
//! fast.

use super::raw::RawNotify;
use super::*;

/// One `[[notify]]` table, `number` counted from 1 in file order.
pub(super) fn parse_notify(
    cx: &Ctx,
    n: RawNotify,
    table_span: Range<usize>,
    number: usize,
    pools: &[PoolConfig],
    repo: &Path,
) -> Result<NotifyConfig> {
    let wanted = parse_on(cx, &n, &table_span, number)?;
    let webhook_only = |v: Option<Range<usize>>, key: &str| -> Result<()> {
        match v {
            Some(span) if n.webhook.is_none() => Err(cx.err(
                span,
                &format!("notify.{key}"),
                format!("`{key}` is for a webhook, and notify #{number} has none"),
            )),
            _ => Ok(()),
        }
    };
    webhook_only(n.format.as_ref().map(|f| f.span()), "format")?;
    webhook_only(n.headers_env.as_ref().map(|h| h.span()), "headers_env")?;
    let target = match (n.command, n.webhook) {
        (Some(_), Some(w)) => {
            return Err(cx.err(
                w.span(),
                "notify.webhook",
                format!("notify #{number} has both `command` and `webhook`: give one (write two [[notify]] tables for both)"),
            ));
        }
        (None, None) => {
            return Err(cx.err(
                table_span,
                "notify.command",
                format!("notify #{number} needs `command` (argv, e.g. [\"notify-send\", \"flocks\"]) or `webhook` (an https:// URL)"),
            ));
        }
        (Some(c), None) => command_target(cx, c, number, pools, repo)?,
        (None, Some(w)) => webhook_target(cx, w, n.format, n.headers_env, table_span)?,
    };
    let timeout = match cx.non_negative(&n.timeout_secs, "notify.timeout_secs")? {
        Some(0.0) => {
            let span = n
                .timeout_secs
                .as_ref()
                .map(|t| t.span())
                .unwrap_or_default();
            return Err(cx.err(
                span,
                "notify.timeout_secs",
                "must be more than 0 (a delivery always has a time limit)",
            ));
        }
        t => secs(t.unwrap_or(10.0)),
    };
    let coalesce = secs(
        cx.non_negative(&n.coalesce_secs, "notify.coalesce_secs")?
            .unwrap_or(5.0),
    );
    Ok(NotifyConfig {
        number,
        on: wanted,
        target,
        timeout,
        coalesce,
    })
}

/// `on`: event kinds (never `activity`), each once.
fn parse_on(
    cx: &Ctx,
    n: &RawNotify,
    table_span: &Range<usize>,
    number: usize,
) -> Result<Vec<String>> {
    let kinds = EVENT_KINDS;
    let Some(on) = n.on.as_ref().filter(|on| !on.get_ref().is_empty()) else {
        let span =
            n.on.as_ref()
                .map(|o| o.span())
                .unwrap_or(table_span.clone());
        return Err(cx.err(
            span,
            "notify.on",
            format!(
                "notify #{number} is sent nothing: list event kinds, e.g. on = [\"needs_attention\", \"run_finished\"]"
            ),
        ));
    };
    let mut wanted: Vec<String> = Vec::new();
    for kind in on.get_ref() {
        let k = kind.get_ref().as_str();
        if k == "activity" {
            return Err(cx.err(
                kind.span(),
                "notify.on",
                "`activity` is not sent: it changes several times a second and is not in events.jsonl",
            ));
        }
        if !kinds.contains(&k) {
            let known: Vec<&str> = kinds.iter().copied().filter(|k| *k != "activity").collect();
            return Err(cx.err(
                kind.span(),
                "notify.on",
                format!("unknown event kind `{k}`: use {}", known.join(", ")),
            ));
        }
        if !wanted.iter().any(|w| w == k) {
            wanted.push(k.to_string());
        }
    }
    Ok(wanted)
}

/// `command`: an argv run on this host, never from inside the repository
/// when agents can write it.
fn command_target(
    cx: &Ctx,
    c: Spanned<Vec<String>>,
    number: usize,
    pools: &[PoolConfig],
    repo: &Path,
) -> Result<NotifyTarget> {
    let mut argv = c.get_ref().clone();
    if argv.first().is_none_or(|a| a.is_empty()) {
        return Err(cx.err(c.span(), "notify.command", "must be a non-empty argv array"));
    }
    // A program named by a path is found from this file's directory
    // (the command itself runs in your home directory).
    if argv[0].contains('/') || argv[0].starts_with('~') {
        let dir = cx.path.parent().unwrap_or(Path::new("/"));
        argv[0] = normalize(&resolve_from(dir, Path::new(&argv[0])))
            .display()
            .to_string();
    }
    // Container and remote agents can write the repository while the
    // run goes on; what a notifier runs on this host must be out of
    // their reach (the local backend is no boundary anyway).
    let agents_write_repo = pools
        .iter()
        .any(|p| !matches!(p.backend, BackendConfig::Local));
    let repo = normalize(repo);
    if agents_write_repo
        && let Some(word) = argv
            .iter()
            .find(|w| Path::new(w).is_absolute() && normalize(Path::new(w)).starts_with(&repo))
    {
        return Err(cx.err(
            c.span(),
            "notify.command",
            format!(
                "`{word}` is in the repository, which container and remote agents can write while the run goes on, and notify #{number} runs on this host: keep the script outside the repository (e.g. in ~/.config/flocks/)"
            ),
        ));
    }
    Ok(NotifyTarget::Command { argv })
}

/// `webhook`: an http(s) URL, its body format and headers read from the
/// environment.
fn webhook_target(
    cx: &Ctx,
    w: Spanned<String>,
    format: S<String>,
    headers_env: S<BTreeMap<String, Spanned<String>>>,
    table_span: Range<usize>,
) -> Result<NotifyTarget> {
    let url = w.get_ref().trim().to_string();
    match reqwest::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
        Ok(u) => {
            return Err(cx.err(
                w.span(),
                "notify.webhook",
                format!(
                    "`{}:` URLs are not posted to: give an https:// (or http://) URL",
                    u.scheme()
                ),
            ));
        }
        Err(e) => {
            return Err(cx.err(
                w.span(),
                "notify.webhook",
                format!("not a URL ({e}): give an https:// (or http://) URL"),
            ));
        }
    }
    let format = match format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("json") => WebhookFormat::Json,
        Some("slack") => WebhookFormat::Slack,
        Some("text") => WebhookFormat::Text,
        Some(other) => {
            let span = format.as_ref().map(|f| f.span()).unwrap_or(table_span);
            return Err(cx.err(
                span,
                "notify.format",
                format!("unknown format `{other}`: use \"json\", \"slack\" or \"text\""),
            ));
        }
    };
    let mut headers = Vec::new();
    for (name, var) in headers_env.map(|h| h.into_inner()).unwrap_or_default() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(cx.err(
                var.span(),
                "notify.headers_env",
                format!("`{name}` is not an HTTP header name"),
            ));
        }
        if !env_name_ok(var.get_ref()) {
            return Err(cx.err(
                var.span(),
                "notify.headers_env",
                format!(
                    "header {name}: `{}` is not an environment variable name (the value is read from that variable, never written here)",
                    var.get_ref()
                ),
            ));
        }
        headers.push(HeaderFromEnv {
            name,
            line: cx.line(var.span()),
            env: var.into_inner(),
        });
    }
    Ok(NotifyTarget::Webhook {
        url,
        format,
        headers,
    })
}
