//! `flocks serve`'s `/metrics`, scraped by a real Prometheus (Debian's
//! `prometheus`, .ci/ensure-prometheus.sh) on loopback with a short scrape
//! interval and the serve token, then read back through Prometheus' HTTP
//! API. `cargo nextest run --profile skip-prometheus` leaves it out.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};
use support::{TestProject, code, on_path, require, text};

const TOKEN: &str = "metrics-test-token-0123456789";

/// A child process killed (by its pid) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from 127.0.0.1:`port`: (status, body).
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    // Prometheus answers its API with chunked encoding: unchunk.
    let body = if out
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut rest = body;
        let mut whole = String::new();
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || after.len() < n {
                break;
            }
            whole.push_str(&after[..n]);
            rest = after[n..].trim_start_matches("\r\n");
        }
        whole
    } else {
        body.to_string()
    };
    (status, body)
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// One instant query: each result's labels and value.
fn query(port: u16, q: &str) -> Vec<(Value, f64)> {
    let (status, body) = get(
        port,
        &format!("/api/v1/query?query={}", query_escape(q)),
        &[],
    );
    if status != 200 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let value = r["value"][1]
                        .as_str()
                        .unwrap_or("nan")
                        .parse()
                        .unwrap_or(f64::NAN);
                    (r["metric"].clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_real_prometheus_scrapes_flocks_serve() {
    require(
        "prometheus (Debian's package: the /metrics test starts a real Prometheus)",
        on_path("prometheus"),
        "install it with .ci/ensure-prometheus.sh (apt-get install prometheus)",
        Some("skip-prometheus"),
    );
    let mut p = TestProject::new(
        "[[credentials]]\nname = \"sub-1\"\nenv = \"METRICS_TOKEN_1\"\n\n[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 2\ncredential = \"sub-1\"\n",
    );
    p.env
        .push(("METRICS_TOKEN_1".into(), "sk-ant-metrics-secret-1".into()));
    p.tasks(&[
        json!({"id": "one", "prompt": "@fake commit one.txt\n@fake cost 0.25"}),
        json!({"id": "two", "prompt": "@fake commit two.txt\n@fake cost 0.5"}),
        json!({"id": "bad", "prompt": "@fake cost 0.125\n@fake fail nope"}),
        json!({"id": "after", "depends_on": ["bad"], "prompt": "x"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    // An egress denial, as the proxy writes it.
    let mut ev = std::fs::OpenOptions::new()
        .append(true)
        .open(p.path(".flocks/events.jsonl"))
        .unwrap();
    writeln!(
        ev,
        "{}",
        json!({"event": "egress_denied", "ts": chrono_now(), "task": "one", "attempt": 1, "host": "evil.example", "port": 443})
    )
    .unwrap();

    let mut serve = p
        .cmd(&["serve", "--addr", "127.0.0.1:0"])
        .env("FLOCKS_SERVE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let _serve = Killed(serve);
    let port: u16 = first
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));

    // The same rules as the pages: the token, here on loopback too.
    let (status, _) = get(port, "/metrics", &[]);
    assert_eq!(status, 401);
    let (status, page) = get(
        port,
        "/metrics",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
    );
    assert_eq!(status, 200, "{page}");
    for line in page.lines().filter(|l| !l.starts_with('#')) {
        for id in ["one", "two", "bad", "after"] {
            assert!(
                !line.contains(&format!("\"{id}\"")),
                "a task id in a label: {line}"
            );
        }
    }
    for name in [
        "flocks_tasks",
        "flocks_attempts",
        "flocks_running_agents",
        "flocks_cost_usd",
        "flocks_tokens",
        "flocks_queue_wait_seconds",
        "flocks_egress_denied_total",
    ] {
        let help = page
            .lines()
            .find(|l| l.starts_with(&format!("# HELP {name} ")))
            .unwrap_or_else(|| panic!("no HELP for {name}: {page}"));
        assert!(help.len() > name.len() + 30, "a real HELP text: {help}");
        assert!(page.contains(&format!("# TYPE {name} ")), "{page}");
    }
    assert!(!page.contains("sk-ant-metrics-secret-1"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: flocks\n    metrics_path: /metrics\n    authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let prom_port = free_port();
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start prometheus");
    let _prom = Killed(prom);

    // Scraped: up, and the series.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let up = query(prom_port, "up{job=\"flocks\"}");
        let tasks = query(prom_port, "flocks_tasks");
        if up.first().is_some_and(|(_, v)| *v == 1.0) && !tasks.is_empty() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            let targets = get(prom_port, "/api/v1/targets", &[]).1;
            panic!("Prometheus did not scrape flocks serve: up={up:?} targets={targets}\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let by_status: std::collections::BTreeMap<String, f64> = query(prom_port, "flocks_tasks")
        .into_iter()
        .map(|(m, v)| (m["status"].as_str().unwrap().to_string(), v))
        .collect();
    assert_eq!(by_status.get("succeeded"), Some(&2.0), "{by_status:?}");
    assert_eq!(by_status.get("failed"), Some(&1.0), "{by_status:?}");
    assert_eq!(by_status.get("blocked"), Some(&1.0), "{by_status:?}");
    let cost = query(prom_port, "flocks_cost_usd{credential=\"sub-1\"}");
    assert_eq!(cost.len(), 1, "{cost:?}");
    assert!((cost[0].1 - 0.875).abs() < 1e-9, "{cost:?}");
    let tokens = query(
        prom_port,
        "sum(flocks_tokens{credential=\"sub-1\",kind=\"output\"})",
    );
    assert!(tokens.first().is_some_and(|(_, v)| *v > 0.0), "{tokens:?}");
    let attempts = query(prom_port, "flocks_attempts{outcome=\"failed\"}");
    assert_eq!(attempts.first().map(|a| a.1), Some(1.0), "{attempts:?}");
    let waits = query(prom_port, "flocks_queue_wait_seconds_count");
    assert_eq!(
        waits.first().map(|a| a.1),
        Some(3.0),
        "three attempts started: {waits:?}"
    );
    let denied = query(prom_port, "flocks_egress_denied_total");
    assert_eq!(denied.first().map(|a| a.1), Some(1.0), "{denied:?}");
}

fn chrono_now() -> String {
    // RFC 3339 in UTC with milliseconds, as events.jsonl writes it.
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000Z"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
