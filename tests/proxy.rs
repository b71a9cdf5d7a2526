//! flocks' model proxy and egress allowlist (issue 24), end to end: the fake
//! agent makes real HTTP requests as claude does (its `api` and `fetch`
//! directives) against a scripted model API on 127.0.0.1, through the proxy
//! of a real `flocks run`.

#[path = "support/http.rs"]
mod http;
#[path = "support/sshd.rs"]
mod sshd;
mod support;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

/// events.jsonl, one value per line.
fn events(p: &TestProject) -> Vec<Value> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind(p: &TestProject, kind: &str) -> Vec<Value> {
    events(p)
        .into_iter()
        .filter(|e| e["event"] == kind)
        .collect()
}

/// The JSON lines the fake agent appended to `path`.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `response` line of an `api` record.
fn response(path: &Path) -> Value {
    lines(path)
        .into_iter()
        .rfind(|l| l["kind"] == "response")
        .unwrap_or_else(|| panic!("no response in {}", path.display()))
}

fn nonce() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

const MODEL: &str = "claude-sonnet-4-5-20250929";

/// A model answer's JSON (or its `message_start` message) with this usage.
fn message(usage: Value) -> Value {
    json!({"id": "msg_test", "type": "message", "role": "assistant", "model": MODEL,
           "content": [], "stop_reason": null, "usage": usage})
}

/// A whole HTTP answer, closed after it.
fn answer(out: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let _ = write!(out, "{head}\r\n{body}");
}

/// The head of a server-sent event stream (the body ends when it closes).
fn stream_head(out: &mut TcpStream) {
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    );
    let _ = out.flush();
}

/// One event, sent at once, with the time it left (CLOCK_MONOTONIC, as the
/// fake agent's `latency_ns` reads it).
fn event(out: &mut TcpStream, kind: &str, mut data: Value) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    data["sent_ns"] = json!(ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128);
    let _ = write!(out, "event: {kind}\ndata: {data}\n\n");
    let _ = out.flush();
}

/// The plain model API: a JSON answer with some usage for every request.
fn plain_api() -> http::Server {
    http::Server::scripted(Arc::new(|_req, out| {
        let body = message(json!({"input_tokens": 12, "output_tokens": 7})).to_string();
        answer(
            out,
            "200 OK",
            &[("content-type", "application/json".into())],
            &body,
        );
    }))
}

/// flocks.toml: the given credentials (name, env, kind), one local pool per
/// credential (`max_worktrees` 1 each), the proxy's upstream, `extra`.
fn project(creds: &[(&str, &str, &str)], upstream: u16, extra: &str) -> TestProject {
    let mut text = format!(
        "max_agents = {}\n[proxy]\nupstream = \"http://127.0.0.1:{upstream}\"\n{extra}\n",
        creds.len().max(1)
    );
    for (name, env, kind) in creds {
        text.push_str(&format!(
            "\n[[credentials]]\nname = \"{name}\"\nenv = \"{env}\"\nkind = \"{kind}\"\n\n[[containers]]\nname = \"pool-{name}\"\nbackend = \"local\"\nmax_worktrees = 1\ncredential = \"{name}\"\n"
        ));
    }
    TestProject::new(&text)
}

/// The agents talk to the model API with a token: the upstream gets the real
/// key in the header its kind takes, and the agent's environment,
/// `/proc/self/environ`, its commits and everything flocks writes never
/// hold it.
#[test]
fn the_upstream_gets_the_real_key_and_the_agent_only_a_token() {
    let api = plain_api();
    let key = format!("sk-ant-api03-PROXYTEST-{}", nonce());
    let oauth = format!("sk-ant-oat01-PROXYTEST-{}", nonce());
    let dir = tempfile::tempdir().unwrap();
    let setup_env = dir.path().join("setup-env");
    let mut p = project(
        &[("key", "PT_KEY", "api_key"), ("sub", "PT_OAUTH", "oauth")],
        api.port,
        &format!(
            "[workspace]\nsetup = [[\"sh\", \"-c\", \"env > {}-$FLOCKS_TASK.txt\"]]\n",
            setup_env.display()
        ),
    );
    p.env.push(("PT_KEY".into(), key.clone()));
    p.env.push(("PT_OAUTH".into(), oauth.clone()));
    let prompt = |id: &str| {
        format!(
            "@fake api fail out={o}/{id}.jsonl\n@fake record {o}/{id}-env.jsonl\n@fake env ANTHROPIC_BASE_URL {o}/{id}.base\n@fake environ environ.txt\n@fake bash \"env > env.txt\"\n@fake commit done.txt",
            o = p.out.display()
        )
    };
    p.tasks(&[
        json!({"id": "one", "prompt": prompt("one")}),
        json!({"id": "two", "prompt": prompt("two")}),
    ]);
    let o = p.flocks(&["run"]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // Each request reached the upstream with a real secret, in its header.
    let asked = api.requests_to("/v1/messages");
    assert_eq!(asked.len(), 2, "{asked:?}");
    let with_key = asked
        .iter()
        .find(|r| r.headers.contains_key("x-api-key"))
        .unwrap();
    assert_eq!(with_key.headers["x-api-key"], key);
    assert!(!with_key.headers.contains_key("authorization"));
    let with_bearer = asked
        .iter()
        .find(|r| r.headers.contains_key("authorization"))
        .unwrap();
    assert_eq!(
        with_bearer.headers["authorization"],
        format!("Bearer {oauth}")
    );
    assert!(!with_bearer.headers.contains_key("x-api-key"));
    assert_eq!(
        with_bearer.headers["anthropic-beta"], "oauth-2025-04-20",
        "the agent's headers pass"
    );

    for id in ["one", "two"] {
        assert_eq!(response(&p.out_file(&format!("{id}.jsonl")))["status"], 200);
        // A token in the variable claude reads, and the proxy's URL.
        let env = &lines(&p.out_file(&format!("{id}-env.jsonl")))[0]["env"];
        let token = env["ANTHROPIC_API_KEY"]
            .as_str()
            .or(env["CLAUDE_CODE_OAUTH_TOKEN"].as_str())
            .unwrap();
        assert!(token.starts_with("flocks-") && token.len() > 60, "{env}");
        let base = std::fs::read_to_string(p.out_file(&format!("{id}.base"))).unwrap();
        assert!(
            base.starts_with("http://127.0.0.1:") && base.contains("/attempt/"),
            "{base}"
        );
        // Its setup command: no secret, no model token, no model URL.
        let setup = std::fs::read_to_string(format!("{}-{id}.txt", setup_env.display())).unwrap();
        assert!(setup.contains(&format!("FLOCKS_TASK={id}")), "{setup}");
        assert!(
            !setup.contains(token),
            "the setup got the model token: {setup}"
        );
        assert!(!setup.contains("ANTHROPIC_BASE_URL"), "{setup}");
        // What the agent committed: its environment and /proc/self/environ.
        let branch = format!("flocks/{id}");
        let environ = p.git(&["show", &format!("{branch}:environ.txt")]);
        assert!(environ.contains("ANTHROPIC_BASE_URL="), "{environ}");
        let all = p.git(&["log", "-p", "--all"]);
        for secret in [&key, &oauth] {
            assert!(!environ.contains(secret.as_str()));
            assert!(!all.contains(secret.as_str()), "a commit holds a secret");
        }
    }
    // Nothing flocks wrote, nothing the agent wrote outside the repository.
    let mut written = p.flocks_dir_text();
    for d in [p.out.clone(), dir.path().to_path_buf()] {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            written.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    written.push_str(&text(&o));
    written.push_str(&text(&p.flocks(&["status", "--json"])));
    for secret in [&key, &oauth] {
        assert!(!written.contains(secret.as_str()), "the secret leaked");
    }
    // The status says who holds what.
    let st = text(&p.flocks(&["status"]));
    assert!(
        st.contains("credential key: agents get a token for flocks' proxy, never the secret"),
        "{st}"
    );
}

/// A token is refused on another attempt's route while it lives, and on
/// its own once its attempt ended.
#[test]
fn a_token_dies_with_its_attempt_and_serves_no_other() {
    let api = plain_api();
    let mut p = project(
        &[("a", "PT_A", "api_key"), ("b", "PT_B", "api_key")],
        api.port,
        "",
    );
    p.env
        .push(("PT_A".into(), "sk-ant-secret-A-0123456789".into()));
    p.env
        .push(("PT_B".into(), "sk-ant-secret-B-0123456789".into()));
    let o = p.out.display().to_string();
    p.tasks(&[
        // `first` keeps its token and route, uses them, and waits for `cross`.
        json!({"id": "first", "prompt": format!(
            "@fake env ANTHROPIC_API_KEY {o}/first.token\n@fake env ANTHROPIC_BASE_URL {o}/first.base\n@fake api fail out={o}/first.jsonl\n@fake wait-for {o}/cross.done\n@fake commit a.txt")}),
        // While `first` runs: its token on this attempt's route, and this
        // attempt's token on its route.
        json!({"id": "cross", "prompt": format!(
            "@fake wait-for {o}/first.jsonl\n@fake api token={o}/first.token out={o}/cross-token.jsonl\n@fake api base={o}/first.base out={o}/cross-route.jsonl\n@fake bash \"touch {o}/cross.done\"\n@fake commit b.txt")}),
        // After `first` ended: its token, on its own route.
        json!({"id": "later", "depends_on": ["first"], "prompt": format!(
            "@fake api token={o}/first.token base={o}/first.base out={o}/later.jsonl\n@fake commit c.txt")}),
    ]);
    let run = p.flocks(&["run"]);
    assert_eq!(code(&run), 0, "{}", text(&run));
    assert_eq!(response(&p.out_file("first.jsonl"))["status"], 200);
    for (file, what) in [
        (
            "cross-token.jsonl",
            "another attempt's token on this attempt's route",
        ),
        (
            "cross-route.jsonl",
            "this attempt's token on another attempt's route",
        ),
        (
            "later.jsonl",
            "a token and its route after its attempt ended",
        ),
    ] {
        let r = response(&p.out_file(file));
        assert_eq!(r["status"], 401, "{what}: {r}");
        assert!(
            r["body"].as_str().unwrap().contains("authentication_error"),
            "{r}"
        );
    }
    // Only `first`'s own request reached the upstream.
    assert_eq!(api.requests_to("/v1/messages").len(), 1);
}

/// A 429 with the API's reset headers parks the credential until that
/// reset, exactly.
#[test]
fn a_429_parks_the_credential_until_its_reset() {
    let reset = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 7200, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let header = reset.clone();
    let api = http::Server::scripted(Arc::new(move |_req, out| {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
        answer(
            out,
            "429 Too Many Requests",
            &[
                ("content-type", "application/json".into()),
                ("retry-after", "30".into()),
                ("anthropic-ratelimit-requests-limit", "50".into()),
                ("anthropic-ratelimit-requests-remaining", "0".into()),
                ("anthropic-ratelimit-requests-reset", header.clone()),
                ("anthropic-ratelimit-tokens-remaining", "10000".into()),
                (
                    "anthropic-ratelimit-tokens-reset",
                    chrono::Utc::now().to_rfc3339(),
                ),
            ],
            body,
        );
    }));
    let mut p = project(&[("key", "PT_KEY", "api_key")], api.port, "");
    p.env
        .push(("PT_KEY".into(), "sk-ant-ratelimited-0123456789".into()));
    p.tasks(&[json!({"id": "busy", "prompt": format!(
        "@fake api fail out={}/busy.jsonl", p.out.display())})]);
    let o = p.flocks(&["run", "--no-wait"]);
    // Parked, nothing else to run on: --no-wait stops the run.
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert_eq!(response(&p.out_file("busy.jsonl"))["status"], 429);
    let parked = p.state()["credentials"]["key"]["parked_until"].clone();
    let parked: chrono::DateTime<chrono::Utc> = parked.as_str().unwrap().parse().unwrap();
    let want: chrono::DateTime<chrono::Utc> = reset.parse().unwrap();
    assert_eq!(parked, want, "parked until the used-up limit's reset");
    let ev = of_kind(&p, "credential_parked");
    assert!(
        ev.iter()
            .any(|e| e["reason"].as_str().unwrap().contains("429")
                && e["until"]
                    .as_str()
                    .unwrap()
                    .parse::<chrono::DateTime<chrono::Utc>>()
                    .unwrap()
                    == want),
        "{ev:?}"
    );
}

/// A streamed answer reaches the agent event by event: the upstream holds
/// the rest of its answer until the agent has seen the first event.
#[test]
fn a_streamed_answer_reaches_the_agent_event_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let seen = dir.path().join("stream.jsonl");
    let watch = seen.clone();
    let held_too_long = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = held_too_long.clone();
    let api = http::Server::scripted(Arc::new(move |_req, out| {
        stream_head(out);
        event(
            out,
            "message_start",
            json!({"type": "message_start", "message":
            message(json!({"input_tokens": 100, "output_tokens": 1}))}),
        );
        // Wait for the agent to write that it got the first event.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines(&watch)
            .iter()
            .any(|l| l["kind"] == "event" && l["n"] == 1)
        {
            if Instant::now() > deadline {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for i in 0..3 {
            event(
                out,
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!("part {i}")}}),
            );
        }
        event(
            out,
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 40}}),
        );
        event(out, "message_stop", json!({"type": "message_stop"}));
    }));
    let mut p = project(&[("key", "PT_KEY", "api_key")], api.port, "");
    p.env
        .push(("PT_KEY".into(), "sk-ant-streaming-0123456789".into()));
    p.tasks(&[json!({"id": "s", "prompt": format!(
        "@fake api stream fail out={}\n@fake commit s.txt", seen.display())})]);
    let o = p.flocks(&["run"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        !held_too_long.load(std::sync::atomic::Ordering::SeqCst),
        "the agent did not see the first event while the upstream held the rest"
    );
    let got = lines(&seen);
    let kinds: Vec<&str> = got
        .iter()
        .filter(|l| l["kind"] == "event")
        .map(|l| l["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(response(&seen)["status"], 200);
    // The usage of the stream is the attempt's.
    let a = &p.task("s")["attempts"][0];
    assert_eq!(a["usage"]["input_tokens"], 100, "{a}");
    assert_eq!(a["usage"]["output_tokens"], 40, "{a}");
}

/// While the attempt runs, `status` shows the tokens and the cost the proxy
/// read; the result's cost is the attempt's once it reports one.
#[test]
fn usage_shows_in_status_while_the_attempt_runs() {
    let api = http::Server::scripted(Arc::new(|_req, out| {
        stream_head(out);
        event(
            out,
            "message_start",
            json!({"type": "message_start", "message":
            message(json!({"input_tokens": 1200, "cache_read_input_tokens": 3000,
                           "cache_creation_input_tokens": 0, "output_tokens": 1}))}),
        );
        event(
            out,
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 345}}),
        );
        event(out, "message_stop", json!({"type": "message_stop"}));
    }));
    let mut p = project(&[("key", "PT_KEY", "api_key")], api.port, "");
    p.env
        .push(("PT_KEY".into(), "sk-ant-usage-0123456789".into()));
    let o = p.out.display().to_string();
    p.tasks(&[json!({"id": "u", "prompt": format!(
        "@fake api stream fail out={o}/u.jsonl\n@fake wait-for {o}/go\n@fake cost 0.5\n@fake commit u.txt")})]);
    let run = p.spawn(&["run"]);
    // $3/MTok in, $15/MTok out, cache reads at a tenth of the input price.
    let expect = (1200.0 * 3.0 + 345.0 * 15.0 + 3000.0 * 0.3) / 1e6;
    let mut live = Value::Null;
    wait_for(60, "usage in status --json while the attempt runs", || {
        let st: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
        live = st["tasks"][0].clone();
        live["status"] == "running" && live["usage"]["output_tokens"] == 345
    });
    assert_eq!(live["usage"]["input_tokens"], 1200, "{live}");
    assert_eq!(live["usage"]["cache_read_input_tokens"], 3000, "{live}");
    assert_eq!(live["usage"]["requests"], 1, "{live}");
    let cost = live["usage"]["cost_usd"].as_f64().unwrap();
    assert!((cost - expect).abs() < 1e-9, "{cost} vs {expect}");
    assert!(
        (live["cost_usd"].as_f64().unwrap() - expect).abs() < 1e-9,
        "the task's cost is live: {live}"
    );
    let st = text(&p.flocks(&["status"]));
    assert!(st.contains("4.2k in / 345 out"), "{st}");
    assert!(
        !of_kind(&p, "usage").is_empty(),
        "usage events in events.jsonl"
    );
    std::fs::write(p.out_file("go"), "").unwrap();
    let done = run.wait_with_output().unwrap();
    assert_eq!(code(&done), 0, "{}", text(&done));
    // The result's total_cost_usd stays the final truth.
    let t = p.task("u");
    assert_eq!(t["attempts"][0]["result"]["total_cost_usd"], 0.5);
    let st: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["tasks"][0]["cost_usd"], 0.5);
    let fin = of_kind(&p, "finished");
    assert_eq!(fin[0]["cost_usd"], 0.5);
}

/// An upstream that does not answer fails the attempt as spawn_failed,
/// naming it, and quickly: the agent (which would retry for minutes) is
/// stopped.
#[test]
fn an_unreachable_upstream_fails_the_attempt_quickly() {
    // Accepts and closes at once: the connection check passes, the
    // agent's first request fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            drop(s);
        }
    });
    let mut p = project(&[("key", "PT_KEY", "api_key")], port, "");
    p.env
        .push(("PT_KEY".into(), "sk-ant-unreachable-0123456789".into()));
    p.tasks(&[json!({"id": "lost", "prompt": format!(
        "@fake api out={}/lost.jsonl\n@fake hang", p.out.display())})]);
    let started = Instant::now();
    let o = p.flocks(&["run"]);
    let took = started.elapsed();
    // Three quick spawn failures in a row stop dispatch.
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(took < Duration::from_secs(50), "took {took:?}");
    let a = &p.task("lost")["attempts"][0];
    assert_eq!(a["outcome"]["kind"], "spawn_failed", "{a}");
    let why = a["outcome"]["reason"].as_str().unwrap();
    assert!(why.contains(&format!("127.0.0.1:{port}")), "{why}");
    assert_eq!(response(&p.out_file("lost.jsonl"))["status"], 502);

    // Nothing listens at all: the run says so at its start, too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = std::fs::read_to_string(p.path("flocks.toml")).unwrap();
    std::fs::write(
        p.path("flocks.toml"),
        cfg.replace(&format!(":{port}\""), &format!(":{closed}\"")),
    )
    .unwrap();
    let o = p.flocks(&["run"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "cannot reach the model API at http://127.0.0.1:{closed}"
        )),
        "{}",
        text(&o)
    );
}

/// Egress: two hosts on 127.0.0.1, one allowed. Through the proxy (plain
/// HTTP and CONNECT) only the allowed one answers; each refusal is an
/// `egress_denied` event naming host and port, counted for the task and
/// (notify_denied) a `needs_attention`. The agent's own network is open on
/// a local pool: the allowlist is advisory there, and status says so.
#[test]
fn egress_only_allowed_hosts_answer_through_the_proxy() {
    let allowed = http::Server::start(http::Answer::Status(200));
    let denied = http::Server::start(http::Answer::Status(200));
    let p = TestProject::new(&format!(
        "[network]\nallow = [\"127.0.0.1:{}\", \"*.example.invalid\"]\nnotify_denied = true\n",
        allowed.port
    ));
    let o = p.out.display().to_string();
    let (a, d) = (allowed.port, denied.port);
    p.tasks(&[json!({"id": "net", "prompt": format!(
        "@fake environ {o}/environ.txt\n\
         @fake fetch http://127.0.0.1:{a}/plain out={o}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/plain out={o}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{a}/tunnel tunnel out={o}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/tunnel tunnel out={o}/f.jsonl\n\
         @fake fetch http://127.0.0.1:{d}/direct direct out={o}/f.jsonl\n\
         @fake commit n.txt")})]);
    let run = p
        .cmd(&["run"])
        .env("NO_PROXY", "*")
        .env("no_proxy", "*")
        .output()
        .unwrap();
    assert_eq!(code(&run), 0, "{}", text(&run));
    assert!(
        text(&run).contains("[network] allow is advisory for pool local"),
        "{}",
        text(&run)
    );

    let environ = std::fs::read_to_string(p.out_file("environ.txt")).unwrap();
    let var = |k: &str| {
        environ
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    let url = var("HTTP_PROXY").expect("HTTP_PROXY");
    for k in ["HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(var(k).as_deref(), Some(url.as_str()), "{k}");
    }
    assert_eq!(
        var("NO_PROXY"),
        None,
        "flocks' NO_PROXY does not reach the agent"
    );
    assert_eq!(var("no_proxy"), None);
    assert_eq!(
        var("ANTHROPIC_BASE_URL"),
        None,
        "no flocks credential: no model URL"
    );

    let got = lines(&p.out_file("f.jsonl"));
    let status = |i: usize| got[i]["status"].clone();
    assert_eq!(status(0), 200, "{got:?}");
    assert_eq!(status(1), 403, "{got:?}");
    assert!(
        got[1]["body"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{d} is not in [network] allow"))
    );
    assert_eq!(status(2), 200, "{got:?}");
    assert!(got[3]["error"].as_str().unwrap().contains("403"), "{got:?}");
    // Advisory: a direct connection is not stopped on a local pool.
    assert_eq!(status(4), 200, "{got:?}");
    assert_eq!(
        allowed.requests().len(),
        2,
        "the plain GET and the tunnelled one"
    );
    let reached: Vec<String> = denied.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        reached,
        ["/direct"],
        "only the direct connection reached the denied host"
    );

    let refused = of_kind(&p, "egress_denied");
    assert_eq!(refused.len(), 2, "{refused:?}");
    for e in &refused {
        assert_eq!(
            (e["task"].as_str(), e["attempt"].as_u64()),
            (Some("net"), Some(1))
        );
        assert_eq!(
            (e["host"].as_str(), e["port"].as_u64()),
            (Some("127.0.0.1"), Some(d as u64))
        );
    }
    let attention: Vec<Value> = of_kind(&p, "needs_attention")
        .into_iter()
        .filter(|e| e["cause"] == "egress_denied")
        .collect();
    assert_eq!(attention.len(), 1, "once per host and port: {attention:?}");
    assert!(
        attention[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{d}"))
    );

    let st: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    assert_eq!(st["tasks"][0]["egress_denied"], 2);
    assert_eq!(st["pools"][0]["egress"], "advisory");
    assert_eq!(st["pools"][0]["credential"], "default");
    let human = text(&p.flocks(&["status"]));
    assert!(
        human.contains("2 connections refused by [network] allow"),
        "{human}"
    );
    assert!(
        human.contains("[network] allow is advisory here"),
        "{human}"
    );
    assert!(human.contains("flocks holds nothing to inject"), "{human}");
    assert!(
        text(&run).contains("connections refused by [network] allow"),
        "the run's summary"
    );
    let report = p.out_file("report.html");
    let o = p.flocks(&["report", "-o", report.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("2 connections refused by [network] allow"),
        "the report"
    );
}

/// `flocks __forward`: a real TCP client reaches a real unix socket through
/// it, and it ends when its stdin does.
#[test]
fn the_forwarder_carries_tcp_to_the_unix_socket() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("proxy.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0
                        || s.write_all(&[b"echo:".as_slice(), &buf[..n]].concat())
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let mut fwd = std::process::Command::new(FLOCKS)
        .args(["__forward", "--listen", "127.0.0.1:0", "--to"])
        .arg(&sock)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(fwd.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().strip_prefix("listening ").unwrap().to_string();
    for word in ["one", "two"] {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.write_all(word.as_bytes()).unwrap();
        let mut got = vec![0u8; 5 + word.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8(got).unwrap(), format!("echo:{word}"));
    }
    drop(fwd.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = fwd.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the forwarder outlived its stdin"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nothing listens once it ended"
    );
    // Bad arguments: usage, exit 2.
    let o = std::process::Command::new(FLOCKS)
        .args(["__forward", "--listen", "nowhere"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}

/// ssh pools: the agent reaches the proxy through a reverse forward on the
/// pool's own ssh connection (a port on the host's loopback), and the
/// upstream gets the real key.
#[test]
fn ssh_agents_reach_the_proxy_through_a_reverse_forward() {
    support::require(
        "root, /usr/sbin/sshd, ssh and ssh-keygen (test sshds run on 127.0.x.y)",
        sshd::TestSshd::available(),
        "install OpenSSH with .ci/ensure-sshd.sh and run the tests as root",
        Some("skip-ssh"),
    );
    let h = sshd::TestSshd::start_any();
    let api = plain_api();
    let key = format!("sk-ant-api03-SSH-{}", nonce());
    let mut opts = h.ssh_options_without_identity();
    opts.extend(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"].map(String::from));
    let opts: Vec<String> = opts.iter().map(|s| format!("{s:?}")).collect();
    let mut p = TestProject::new(&format!(
        "max_agents = 2\n[proxy]\nupstream = \"http://127.0.0.1:{}\"\n\n[[credentials]]\nname = \"key\"\nenv = \"PT_KEY\"\nkind = \"api_key\"\n\n[[containers]]\nname = \"here\"\nbackend = \"local\"\nmax_worktrees = 1\ncredential = \"key\"\n\n[[containers]]\nname = \"box\"\nbackend = \"ssh\"\nhost = \"{}\"\nmax_worktrees = 1\ncredential = \"key\"\nidentity_file = \"{}\"\nremote_dir = \"~/flocks\"\nssh_options = [{}]\n",
        api.port,
        h.host(),
        h.key_path().display(),
        opts.join(", ")
    ));
    p.env.push(("PT_KEY".into(), key.clone()));
    let o = p.out.display().to_string();
    let prompt = |id: &str| {
        format!(
            "@fake env ANTHROPIC_BASE_URL {o}/{id}.base\n@fake api fail out={o}/{id}.jsonl\n@fake commit {id}.txt"
        )
    };
    p.tasks(&[
        json!({"id": "t1", "prompt": prompt("t1")}),
        json!({"id": "t2", "prompt": prompt("t2")}),
    ]);
    let run = p.flocks(&["run"]);
    assert_eq!(code(&run), 0, "{}", text(&run));
    let pools: Vec<String> = ["t1", "t2"]
        .iter()
        .map(|id| {
            p.task(id)["attempts"][0]["pool"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        pools.contains(&"box".to_string()) && pools.contains(&"here".to_string()),
        "{pools:?}"
    );
    let port_of = |id: &str| {
        let base = std::fs::read_to_string(p.out_file(&format!("{id}.base"))).unwrap();
        base.trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .unwrap()
            .to_string()
    };
    let (remote, local) = if pools[0] == "box" {
        ("t1", "t2")
    } else {
        ("t2", "t1")
    };
    assert_ne!(
        port_of(remote),
        port_of(local),
        "the ssh agent's port is the forward's, not the proxy's"
    );
    for id in ["t1", "t2"] {
        assert_eq!(
            response(&p.out_file(&format!("{id}.jsonl")))["status"],
            200,
            "{id}"
        );
    }
    let asked = api.requests_to("/v1/messages");
    assert_eq!(asked.len(), 2);
    assert!(asked.iter().all(|r| r.headers["x-api-key"] == key));
}

/// Bad `[proxy]` and `[network]` tables are config errors (exit 2) naming
/// the file, line and field.
#[test]
fn bad_proxy_and_network_tables_name_the_field() {
    for (table, says) in [
        (
            "[network]\nallow = [\"https://pypi.org/simple\"]\n",
            "flocks.toml:4: field `network.allow`",
        ),
        ("[network]\nallowed = []\n", "field `network.allowed`"),
        (
            "[proxy]\nupstream = \"ftp://x.org\"\n",
            "flocks.toml:4: field `proxy.upstream`",
        ),
        (
            "[proxy]\nlisten = \"localhost:80\"\n",
            "field `proxy.listen`",
        ),
    ] {
        let p = TestProject::new(table);
        p.tasks(&[json!({"id": "x", "prompt": "hi"})]);
        let o = p.flocks(&["run"]);
        assert_eq!(code(&o), 2, "{table}: {}", text(&o));
        assert!(text(&o).contains(says), "{table}: {}", text(&o));
    }
    // flocks' own ANTHROPIC_BASE_URL, when it is the upstream, is checked too.
    let p = project(&[("key", "PT_KEY", "api_key")], 1, "");
    let cfg = std::fs::read_to_string(p.path("flocks.toml")).unwrap();
    std::fs::write(
        p.path("flocks.toml"),
        cfg.replace("[proxy]\nupstream = \"http://127.0.0.1:1\"\n", ""),
    )
    .unwrap();
    p.tasks(&[json!({"id": "x", "prompt": "hi"})]);
    let o = p
        .cmd(&["run"])
        .env("PT_KEY", "sk-0123456789")
        .env("ANTHROPIC_BASE_URL", "api.example.com")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        text(&o).contains("ANTHROPIC_BASE_URL in flocks' environment"),
        "{}",
        text(&o)
    );
}
