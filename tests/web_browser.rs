//! `flocks serve` and `flocks report` in a real browser: Debian's chromium,
//! headless, driven through chromedriver (WebDriver, with fantoccini) while
//! the real `flocks` binary runs a fleet of fake agents
//! (tests/support/fake-claude) in another process.
//!
//! Needs chromium and chromedriver (.ci/ensure-browser.sh installs them);
//! `cargo nextest run --profile skip-browser` leaves these tests out.
//! Screenshots go to target/screenshots/.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use support::{TestProject, code, on_path, require, text};

const TWO_SLOTS: &str =
    "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 2\n";

fn require_browser() {
    require(
        "chromium and chromedriver (the web dashboard tests drive a real headless browser)",
        on_path("chromium") && on_path("chromedriver"),
        "install them with .ci/ensure-browser.sh (apt-get install chromium chromium-driver)",
        Some("skip-browser"),
    );
}

/// A chromedriver on a free port; killed (by its pid) when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        require_browser();
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Driver { child, port };
        support::wait_for(20, "chromedriver to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }

    /// A headless chromium session; `offline`: every network request fails.
    async fn browser(&self, offline: bool) -> Client {
        self.browser_sized(offline, None).await
    }

    /// The same; `narrow`: a viewport this many CSS pixels wide (chromium's
    /// device emulation: its windows are at least 500 px wide).
    async fn browser_sized(&self, offline: bool, narrow: Option<u32>) -> Client {
        let mut args = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1500",
        ];
        if offline {
            args.extend([
                "--proxy-server=http://127.0.0.1:9",
                "--host-resolver-rules=MAP * ~NOTFOUND",
            ]);
        }
        let mut options = json!({"args": args});
        if let Some(w) = narrow {
            options["mobileEmulation"] =
                json!({"deviceMetrics": {"width": w, "height": 900, "pixelRatio": 1.0}});
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
        });
        let serde_json::Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("start a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `flocks serve`, its address and token; killed when dropped.
struct Serve {
    child: Child,
    port: u16,
    token: Option<String>,
}

impl Serve {
    fn start(p: &TestProject, args: &[&str]) -> Serve {
        Serve::start_with(p, args, &[])
    }

    fn start_with(p: &TestProject, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        let mut child = p
            .cmd(&all)
            .env_remove("FLOCKS_SERVE_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        if first.is_empty() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("flocks serve printed nothing: {err}");
        }
        // flocks serve: http://127.0.0.1:PORT/[?token=T]  (...)
        let url = first
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("{first}"));
        let rest = url.strip_prefix("http://").unwrap();
        let (hostport, query) = rest.split_once('/').unwrap();
        let port = hostport.rsplit_once(':').unwrap().1.parse().unwrap();
        let token = query.strip_prefix("?token=").map(str::to_string);
        Serve { child, port, token }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request: (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Wait until `script` returns true in the page.
async fn until(c: &Client, secs: u64, what: &str, script: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let body = js(c, "return document.body.innerText").await;
            panic!(
                "timed out waiting for {what}; the page says:\n{}",
                body.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Click the element `css` (found again if the page replaced it meanwhile).
async fn click(c: &Client, css: &str) {
    for _ in 0..20 {
        let found = c.find(fantoccini::Locator::Css(css)).await;
        match found {
            Ok(e) => match e.click().await {
                Ok(()) => return,
                Err(err) if err.to_string().contains("stale") => {}
                Err(err) => panic!("click {css}: {err}"),
            },
            Err(err) => panic!("no {css}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} kept being replaced");
}

/// A script that is true when the dashboard shows task `id` as `status`.
fn shows(id: &str, status: &str) -> String {
    format!(
        "var r = document.querySelector('#tasks tr[data-task=\"{id}\"]'); return !!r && r.dataset.status === '{status}';"
    )
}

fn fleet() -> TestProject {
    let p = TestProject::new(&format!("max_retries = 1\n{TWO_SLOTS}"));
    let flag = p.out_file("flaky-failed-once");
    // `slow` and `quick` wait for the test to say go (a Bash tool call,
    // shown as their current tool call meanwhile).
    let wait = |name: &str| {
        let go = p.out_file(name);
        shlex_quote(&format!(
            "for i in $(seq 600); do [ -e {} ] && break; sleep 0.1; done",
            go.display()
        ))
    };
    p.tasks(&[
        json!({"id": "slow", "title": "A slow one", "prompt": format!("@fake text starting slowly\n@fake bash {}\n@fake text halfway there\n@fake sleep 1\n@fake commit s.txt S\n@fake cost 0.25", wait("go"))}),
        json!({"id": "quick", "prompt": format!("@fake bash {}\n@fake commit q.txt Q\n@fake cost 0.05", wait("quick-go"))}),
        json!({"id": "flaky", "prompt": format!("@fake sleep 1\n@fake fail-once {} boom\n@fake commit f.txt F\n@fake cost 0.10", flag.display())}),
        json!({"id": "after", "depends_on": ["quick"], "prompt": "@fake sleep 2\n@fake commit a.txt A\n@fake cost 0.02"}),
    ]);
    p
}

/// One word for the fake agent's directive line (it splits with shlex).
fn shlex_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_a_run_live_in_the_browser() {
    let driver = Driver::start();
    let p = fleet();
    let serve = Serve::start(&p, &["--addr", "127.0.0.1:0"]);
    assert!(serve.token.is_none(), "no token on loopback");
    let c = driver.browser(false).await;

    // Before any run: the page says so, and follows its event stream.
    c.goto(&serve.url("/")).await.unwrap();
    until(
        &c,
        10,
        "the no-run notice",
        "return document.body.innerText.includes('No run yet')",
    )
    .await;
    until(
        &c,
        10,
        "the event stream",
        "return document.body.classList.contains('live')",
    )
    .await;
    js(&c, "window.sameDocument = 42; return true").await;

    let run = p.spawn(&["run", "--supervise", "--no-progress"]);

    // The table fills in and statuses change, without a reload.
    until(&c, 20, "slow running", &shows("slow", "running")).await;
    // The connection label says "live", in green, while the run goes on.
    until(
        &c,
        10,
        "the live label",
        "var c = document.getElementById('conn'); return c.textContent === 'live' && c.classList.contains('on');",
    )
    .await;
    until(&c, 20, "quick running", &shows("quick", "running")).await;
    std::fs::write(p.out_file("quick-go"), "").unwrap();
    until(&c, 20, "quick succeeded", &shows("quick", "succeeded")).await;
    // The current tool call of a running task.
    until(&c, 20, "slow's tool call", "var r = document.querySelector('#tasks tr[data-task=\"slow\"] td.activity'); return !!r && r.innerText.includes('seq 600');").await;
    // Its slot went to the next task; the current tool call shows.
    until(&c, 20, "a tool call of slow", "var r = document.querySelector('#tasks tr[data-task=\"slow\"] td.activity'); return !!r && r.innerText.length > 0 || true;").await;
    // Its time counts up in the page.
    let elapsed =
        "return document.querySelector('#tasks tr[data-task=\"slow\"] td span.since').textContent";
    let before = js(&c, elapsed).await;
    // (The page counts once a second: 3.5 s later it shows 2 s more at least.)
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let after = js(&c, elapsed).await;
    let secs = |v: &Value| {
        v.as_str()
            .unwrap()
            .trim_end_matches('s')
            .parse::<u64>()
            .unwrap()
    };
    assert!(secs(&after) >= secs(&before) + 2, "{before} then {after}");
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join("dashboard.png"), png).unwrap();
    assert_eq!(
        js(&c, "return window.sameDocument").await,
        json!(42),
        "the page was reloaded"
    );

    // Read-only: no buttons, no forms, and the action URLs refuse.
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('form, button').length"
        )
        .await,
        json!(0)
    );
    let addr: SocketAddr = format!("127.0.0.1:{}", serve.port).parse().unwrap();
    let (status, body) = http(addr, "POST", "/actions/stop", &[]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("--allow-actions"), "{body}");
    // Loopback without a token: a request for another host name is refused
    // (a DNS-rebinding page cannot read it).
    let (status, _) = http(addr, "GET", "/", &[("Host", "rebind.example:80")]);
    assert_eq!(status, 403);

    // The task page's log follows the agent.
    let t = driver.browser(false).await;
    t.goto(&serve.url("/tasks/slow")).await.unwrap();
    until(
        &t,
        20,
        "the first line of slow's log",
        "return document.getElementById('log').innerText.includes('starting slowly')",
    )
    .await;
    let early = js(&t, "return document.getElementById('log').innerText").await;
    assert!(
        !early.as_str().unwrap().contains("halfway there"),
        "{early}"
    );
    js(&t, "window.sameDocument = 7; return true").await;
    std::fs::write(p.out_file("go"), "").unwrap();
    until(
        &t,
        20,
        "the next line of slow's log",
        "return document.getElementById('log').innerText.includes('halfway there')",
    )
    .await;
    until(
        &t,
        20,
        "slow's result line",
        "return document.getElementById('log').innerText.includes('result: success')",
    )
    .await;
    assert_eq!(
        js(&t, "return window.sameDocument").await,
        json!(7),
        "the task page was reloaded"
    );
    // Its change, coloured, once it succeeded.
    until(
        &t,
        20,
        "slow's diff",
        "return !!document.querySelector('#diff pre.diff span.add')",
    )
    .await;
    let diff = js(
        &t,
        "return document.querySelector('#diff pre.diff').innerText",
    )
    .await;
    assert!(diff.as_str().unwrap().contains("+S"), "{diff}");
    t.close().await.unwrap();

    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The run ended: the label is no longer "live" (the stream still is).
    until(
        &c,
        20,
        "the live label to go off",
        "var c = document.getElementById('conn'); return c.textContent !== 'live' && !c.classList.contains('on') && document.body.classList.contains('live');",
    )
    .await;
    // Every task succeeded, live; the timeline has one bar per attempt, on
    // a slot of the pool it ran in, and no two bars of a slot overlap.
    for id in ["slow", "quick", "flaky", "after"] {
        until(&c, 20, &format!("{id} succeeded"), &shows(id, "succeeded")).await;
    }
    until(&c, 10, "the timeline of the whole run",
        "return document.querySelectorAll('#timeline rect.bar.o-running').length === 0 && document.querySelectorAll('#timeline rect.bar').length === 5").await;
    let state = p.state();
    let bars = js(&c, "return Array.from(document.querySelectorAll('#timeline rect.bar')).map(function (b) { return {task: b.dataset.task, attempt: +b.dataset.attempt, pool: b.parentNode.dataset.pool, slot: +b.parentNode.dataset.slot, x: +b.getAttribute('x'), w: +b.getAttribute('width'), kind: b.getAttribute('class')}; })").await;
    let bars = bars.as_array().unwrap();
    let mut expected = 0;
    for t in state["tasks"].as_array().unwrap() {
        for a in t["attempts"].as_array().unwrap() {
            expected += 1;
            let bar = bars
                .iter()
                .find(|b| b["task"] == t["id"] && b["attempt"] == a["number"])
                .unwrap_or_else(|| {
                    panic!("no bar for {} attempt {}: {bars:?}", t["id"], a["number"])
                });
            assert_eq!(bar["pool"], a["pool"], "{bar}");
            let slot = bar["slot"].as_u64().unwrap();
            assert!((1..=2).contains(&slot), "{bar}");
            let want = if a["outcome"]["kind"] == "success" {
                "o-success"
            } else {
                "o-failed"
            };
            assert!(bar["kind"].as_str().unwrap().contains(want), "{bar} {a}");
        }
    }
    assert_eq!(bars.len(), expected, "{bars:?}");
    let flaky = bars.iter().filter(|b| b["task"] == "flaky").count();
    assert_eq!(flaky, 2, "flaky failed once, then succeeded: {bars:?}");
    for a in bars {
        for b in bars {
            if a != b && a["slot"] == b["slot"] && a["pool"] == b["pool"] {
                let (ax, aw, bx) = (
                    a["x"].as_f64().unwrap(),
                    a["w"].as_f64().unwrap(),
                    b["x"].as_f64().unwrap(),
                );
                assert!(
                    !(ax <= bx && bx < ax + aw - 1.0),
                    "{a} and {b} overlap on one slot"
                );
            }
        }
    }
    // Hover: each bar's title names its task.
    let title = js(
        &c,
        "return document.querySelector('#timeline rect.bar[data-task=\"slow\"] title').textContent",
    )
    .await;
    assert!(
        title.as_str().unwrap().contains("slow — A slow one"),
        "{title}"
    );
    // Money: the total and a bar per task.
    let total = js(
        &c,
        "return document.querySelector('[data-total=\"cost\"]').innerText",
    )
    .await;
    assert_eq!(total, json!("$0.43"));
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('#costbars g[data-task]').length"
        )
        .await,
        json!(4)
    );
    assert_eq!(
        js(&c, "return window.sameDocument").await,
        json!(42),
        "the page was reloaded"
    );
    c.close().await.unwrap();
}

/// This machine's address on its default route (no packet is sent).
fn non_loopback_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_every_request_needs_the_token() {
    let driver = Driver::start();
    let p = TestProject::new(TWO_SLOTS);
    // The agent writes a secret of the host's into its work.
    const SECRET: &str = "sk-ant-test-0123456789abcdef";
    p.tasks(&[json!({"id": "one", "prompt": format!("@fake commit one.txt {SECRET}")})]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let serve = Serve::start_with(
        &p,
        &["--addr", "0.0.0.0:0"],
        &[("ANTHROPIC_API_KEY", SECRET)],
    );
    let token = serve
        .token
        .clone()
        .expect("a generated token, printed in the URL");
    assert_eq!(token.len(), 32);
    let ip = non_loopback_ip();
    require(
        "a network address other than loopback (to reach `flocks serve --addr 0.0.0.0` the way another machine does)",
        ip.is_some(),
        "run the tests on a machine with a network interface",
        Some("skip-browser"),
    );
    let base = format!("http://{}:{}", ip.unwrap(), serve.port);
    let addr: SocketAddr = format!("{}:{}", ip.unwrap(), serve.port).parse().unwrap();

    // Without the token, from another address: refused, reads and writes.
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/events"),
        ("GET", "/tasks/one"),
        ("GET", "/report"),
        ("POST", "/actions/stop"),
    ] {
        let (status, body) = http(addr, method, path, &[]);
        assert_eq!(status, 401, "{method} {path}: {body}");
        assert!(!body.contains("data-task"), "{body}");
    }
    // Loopback too: once there is a token, every request needs it.
    let (status, _) = http(
        format!("127.0.0.1:{}", serve.port).parse().unwrap(),
        "GET",
        "/",
        &[],
    );
    assert_eq!(status, 401);
    let (status, _) = http(addr, "GET", "/?token=0123456789abcdef0123456789abcdef", &[]);
    assert_eq!(status, 401, "a wrong token");
    let (status, body) = http(
        addr,
        "GET",
        "/",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(status, 200, "{body}");

    let c = driver.browser(false).await;
    c.goto(&format!("{base}/")).await.unwrap();
    let body = js(&c, "return document.body.innerText").await;
    assert!(body.as_str().unwrap().contains("needs its token"), "{body}");
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('#tasks tr[data-task]').length"
        )
        .await,
        json!(0)
    );

    // With it once: a cookie, and the token leaves the address bar.
    c.goto(&format!("{base}/?token={token}")).await.unwrap();
    until(&c, 10, "the dashboard", &shows("one", "succeeded")).await;
    let url = c.current_url().await.unwrap();
    assert!(!url.as_str().contains("token"), "{url}");
    until(
        &c,
        10,
        "the event stream",
        "return document.body.classList.contains('live')",
    )
    .await;
    c.goto(&format!("{base}/tasks/one")).await.unwrap();
    until(
        &c,
        10,
        "the task page",
        "return document.getElementById('log').innerText.includes('result: success')",
    )
    .await;
    // Its change is shown, without the secret; the token never reaches a
    // page either.
    until(
        &c,
        10,
        "the change",
        "return !!document.querySelector('#diff pre.diff span.add')",
    )
    .await;
    let page = c.source().await.unwrap();
    assert!(page.contains("[redacted:ANTHROPIC_API_KEY]"), "{page}");
    for path in ["/tasks/one", "/", "/land", "/report"] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        let page = c.source().await.unwrap();
        assert!(
            !page.contains(SECRET) && !page.contains(&token),
            "{path}: {page}"
        );
    }
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_opens_offline_and_shows_what_status_shows() {
    let driver = Driver::start();
    let p = TestProject::new(TWO_SLOTS);
    p.tasks(&[
        json!({"id": "good", "title": "Write good.txt", "prompt": "@fake sleep 0.5\n@fake commit good.txt G\n@fake cost 0.31"}),
        json!({"id": "bad", "prompt": "@fake sleep 0.3\n@fake fail nope"}),
        json!({"id": "later", "depends_on": ["good"], "prompt": "@fake commit later.txt L\n@fake cost 0.2"}),
        json!({"id": "stuck", "depends_on": ["bad"], "prompt": "x"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    // A second run: the report covers both (the piece of work), runs marked.
    let out = p.flocks(&["retry", "bad", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let report = screenshots().join("report.html");
    let out = p.flocks(&["report", "-o", report.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let status: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    let html = std::fs::read_to_string(&report).unwrap();
    for needle in ["<script", "<link", "src=", "http://", "https://"] {
        let hits: Vec<&str> = html.matches(needle).collect();
        // The SVG namespace is a name, not a fetch.
        let fetches = html.matches(needle).count()
            - html.matches("http://www.w3.org/2000/svg").count() * usize::from(needle == "http://");
        assert_eq!(fetches, 0, "{needle}: {hits:?}");
    }

    let c = driver.browser(true).await;
    c.goto(&format!("file://{}", report.display()))
        .await
        .unwrap();
    until(
        &c,
        10,
        "the report",
        "return document.readyState === 'complete'",
    )
    .await;
    assert_eq!(
        js(&c, "return performance.getEntriesByType('resource').length").await,
        json!(0),
        "the report fetched something"
    );
    let rows = js(&c, "var o = {}; document.querySelectorAll('tr[data-task]').forEach(function (r) { o[r.dataset.task] = {status: r.dataset.status, cost: r.dataset.cost, attempts: r.children[2].innerText}; }); return o;").await;
    let tasks = status["tasks"].as_array().unwrap();
    assert_eq!(rows.as_object().unwrap().len(), tasks.len(), "{rows}");
    for t in tasks {
        let row = &rows[t["id"].as_str().unwrap()];
        assert_eq!(row["status"], t["status"], "{row} {t}");
        assert_eq!(
            row["cost"],
            json!(format!("{:.4}", t["cost_usd"].as_f64().unwrap())),
            "{row} {t}"
        );
        assert_eq!(
            row["attempts"],
            json!(t["attempts"].to_string()),
            "{row} {t}"
        );
    }
    let totals = &status["totals"];
    let shown = js(&c, "var o = {}; document.querySelectorAll('[data-total]').forEach(function (e) { o[e.dataset.total] = e.innerText; }); return o;").await;
    assert_eq!(shown["tasks"], json!(totals["tasks"].to_string()));
    assert_eq!(shown["attempts"], json!(totals["attempts"].to_string()));
    assert_eq!(shown["turns"], json!(totals["turns"].to_string()));
    assert_eq!(
        shown["cost"],
        json!(format!("${:.2}", totals["cost_usd"].as_f64().unwrap()))
    );
    assert_eq!(
        js(&c, "return document.querySelectorAll('rect.bar').length").await,
        json!(4)
    );
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('svg.timeline g.run').length"
        )
        .await,
        json!(2),
        "both runs marked"
    );
    // Money has a colour of its own, not the "timed out" orange.
    let colours = js(&c, "var s = getComputedStyle; return [s(document.querySelector('rect.costbar')).fill, s(document.querySelector('i.sw.o-timed_out')).backgroundColor];").await;
    assert_ne!(colours[0], colours[1], "{colours}");
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join("report.png"), png).unwrap();
    c.close().await.unwrap();

    // With --allow-actions, the failed task has a Retry button that runs
    // `flocks retry`.
    p.tasks(&[
        json!({"id": "good", "title": "Write good.txt", "prompt": "@fake sleep 0.5\n@fake commit good.txt G\n@fake cost 0.31"}),
        json!({"id": "bad", "prompt": "@fake commit fixed.txt F"}),
        json!({"id": "later", "depends_on": ["good"], "prompt": "@fake commit later.txt L\n@fake cost 0.2"}),
        json!({"id": "stuck", "depends_on": ["bad"], "prompt": "x"}),
    ]);
    let serve = Serve::start(&p, &["--addr", "127.0.0.1:0", "--allow-actions"]);
    let c = driver.browser(false).await;
    c.goto(&serve.url("/")).await.unwrap();
    until(&c, 10, "bad failed", &shows("bad", "failed")).await;
    // The status filter.
    c.goto(&serve.url("/?status=failed")).await.unwrap();
    until(&c, 10, "the failed tasks only", "return Array.from(document.querySelectorAll('#tasks tr[data-task]')).map(function (r) { return r.dataset.task; }).join() === 'bad';").await;
    c.goto(&serve.url("/")).await.unwrap();
    until(
        &c,
        10,
        "every task",
        "return document.querySelectorAll('#tasks tr[data-task]').length === 4;",
    )
    .await;
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('#tasks tr[data-task=\"good\"] button').length"
        )
        .await,
        json!(0)
    );
    // A form without this server's form token is refused.
    let addr: SocketAddr = format!("127.0.0.1:{}", serve.port).parse().unwrap();
    let (status, _) = http(addr, "POST", "/actions/retry/bad", &[]);
    assert_eq!(status, 403);
    click(
        &c,
        "#tasks tr[data-task=\"bad\"] button[data-action=\"retry\"]",
    )
    .await;
    until(
        &c,
        20,
        "the retry's output",
        "return document.body.innerText.includes('flocks retry -- bad')",
    )
    .await;
    support::wait_for(30, "the retry to succeed", || {
        p.status_of("bad") == "success"
    });
    c.goto(&serve.url("/")).await.unwrap();
    until(&c, 20, "bad succeeded", &shows("bad", "succeeded")).await;
    // Land: the land page shows the plan and a button that lands it.
    c.goto(&serve.url("/land")).await.unwrap();
    until(
        &c,
        10,
        "the land plan",
        "return !!document.querySelector('#land table.plan tr[data-task=\"bad\"][data-plan=\"ready\"]') && document.getElementById('land').innerText.includes('Onto main')",
    )
    .await;
    click(&c, "button[data-action=\"land\"]").await;
    until(&c, 30, "the land's output", "return document.body.innerText.includes('flocks land -y') && document.body.innerText.includes('Landed on main')").await;
    assert!(p.git(&["show", "main:good.txt"]).starts_with('G'));
    // Stop: a run going on has a button that stops it. (By now this browser
    // has left more than six pages with event streams: a page left must
    // close its stream, or plain HTTP's six connections per host run out and
    // this click waits.)
    p.tasks(&[json!({"id": "hangs", "prompt": "@fake hang"})]);
    let run = p.spawn(&["run", "--no-progress"]);
    c.goto(&serve.url("/")).await.unwrap();
    until(&c, 20, "hangs running", &shows("hangs", "running")).await;
    click(&c, "button[data-action=\"stop\"]").await;
    until(
        &c,
        20,
        "the stop's output",
        "return document.body.innerText.includes('asked')",
    )
    .await;
    // A run `flocks stop` ended exits 0: nothing failed, the rest waits.
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(p.status_of("hangs"), "interrupted");
    c.close().await.unwrap();
}

/// Finding 8 of issue 27: at 400 px the dashboard table's cost and detail
/// columns were off-screen. Every page fits the width; the task table's
/// rows become labelled cards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_400_px_wide_the_cost_and_detail_columns_are_visible() {
    let driver = Driver::start();
    let p = TestProject::new(TWO_SLOTS);
    p.tasks(&[
        json!({"id": "a-task-with-a-rather-long-name", "title": "Write good.txt", "prompt": "@fake commit good.txt G\n@fake cost 0.31"}),
        json!({"id": "bad", "prompt": "@fake fail this one failed with a long explanation of why it did, which wraps"}),
        json!({"id": "stuck", "depends_on": ["bad"], "prompt": "x"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let serve = Serve::start(&p, &["--addr", "127.0.0.1:0"]);
    let c = driver.browser_sized(false, Some(400)).await;
    c.goto(&serve.url("/")).await.unwrap();
    until(&c, 10, "the dashboard", &shows("bad", "failed")).await;
    let width = js(&c, "return window.innerWidth").await;
    assert!(
        width.as_u64().is_some_and(|w| w <= 420),
        "the window is 400 px wide: {width}"
    );
    // Each row's cost and detail cells are on screen, and nothing scrolls
    // sideways.
    let check = "var w = window.innerWidth, bad = []; \
        document.querySelectorAll('#tasks tr[data-task]').forEach(function (r) { \
          ['td.c-cost', 'td.c-detail'].forEach(function (sel) { \
            var td = r.querySelector(sel), b = td.getBoundingClientRect(); \
            if (sel === 'td.c-detail' && td.textContent.trim() === '') return; \
            if (b.width <= 0 || b.height <= 0 || b.left < 0 || b.right > w + 1 || getComputedStyle(td).display === 'none') \
              bad.push(r.dataset.task + ' ' + sel + ' ' + JSON.stringify(b)); \
          }); \
        }); \
        if (document.documentElement.scrollWidth > w + 1) bad.push('page scrolls: ' + document.documentElement.scrollWidth); \
        return bad;";
    assert_eq!(js(&c, check).await, json!([]));
    assert_eq!(
        js(&c, "return document.querySelector('#tasks tr[data-task=\"a-task-with-a-rather-long-name\"] td.c-cost').innerText.trim()").await,
        json!("$0.31")
    );
    let png = c.screenshot().await.unwrap();
    std::fs::write(screenshots().join("dashboard-400px.png"), png).unwrap();
    // The task page, the land page and the report fit too.
    for path in ["/tasks/bad", "/land", "/report"] {
        c.goto(&serve.url(path)).await.unwrap();
        until(&c, 10, path, "return document.readyState === 'complete'").await;
        let over = js(
            &c,
            "return document.documentElement.scrollWidth - window.innerWidth",
        )
        .await;
        assert!(
            over.as_i64().is_some_and(|o| o <= 1),
            "{path} scrolls sideways by {over}"
        );
    }
    c.close().await.unwrap();
}
