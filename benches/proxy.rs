//! The model proxy's cost: time to first byte and per-event latency of a
//! streamed answer through flocks' proxy against a direct connection to the
//! same local upstream, and flocks' CPU while 8 agents stream at once (with
//! the proxy, and the same 8 streams straight to the upstream).
//!
//!     cargo bench --bench proxy
//!     REQUESTS=40 EVENTS=50 AGENTS=8 WINDOW_SECS=10 cargo bench --bench proxy
//!
//! Both sides run the same client, the fake agent's `api stream` directive
//! (python3, `tests/support/fake-claude`), which timestamps each event as it
//! reads it (CLOCK_MONOTONIC, against the upstream's send time in the
//! event). The upstream is a small HTTP server in this process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fake_claude() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake-claude")
}

fn monotonic_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// How the upstream streams.
#[derive(Clone, Copy)]
struct Stream {
    /// content_block_delta events per answer.
    events: usize,
    /// Between two events.
    gap: Duration,
    /// Hold every answer until this many are open at once (0: never).
    together: usize,
}

/// Counts shared with the upstream's connection threads.
#[derive(Default)]
struct Counts {
    open: AtomicUsize,
    done: AtomicUsize,
}

/// A model API on 127.0.0.1 answering every request with a stream.
fn upstream(s: Stream, counts: Arc<Counts>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counts = counts.clone();
            std::thread::spawn(move || answer(conn, s, &counts));
        }
    });
    port
}

fn answer(conn: TcpStream, s: Stream, counts: &Counts) {
    let _ = conn.set_nodelay(true);
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    counts.open.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.together > 0
        && counts.open.load(Ordering::SeqCst) < s.together
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n"
    );
    let send = |out: &mut TcpStream, kind: &str, data: String| {
        let data = format!(
            "{},\"sent_ns\":{}}}",
            &data[..data.len() - 1],
            monotonic_ns()
        );
        let _ = write!(out, "event: {kind}\ndata: {data}\n\n");
        let _ = out.flush();
    };
    send(
        &mut out,
        "message_start",
        r#"{"type":"message_start","message":{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"usage":{"input_tokens":2000,"cache_read_input_tokens":20000,"output_tokens":1}}}"#.into(),
    );
    for i in 0..s.events {
        std::thread::sleep(s.gap);
        send(
            &mut out,
            "content_block_delta",
            format!(
                r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"token {i} of a streamed answer, about as long as a real one is"}}}}"#
            ),
        );
    }
    send(
        &mut out,
        "message_delta",
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":300}}"#.into(),
    );
    send(
        &mut out,
        "message_stop",
        r#"{"type":"message_stop"}"#.into(),
    );
    counts.open.fetch_sub(1, Ordering::SeqCst);
    counts.done.fetch_add(1, Ordering::SeqCst);
}

/// A fresh repo with a flocks.toml (`config` appended) and tasks.
fn project(root: &Path, name: &str, config: &str, prompts: &[String]) -> PathBuf {
    let repo = root.join(name);
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "bench\n").unwrap();
    git(&["add", "."]);
    git(&[
        "-c",
        "user.name=b",
        "-c",
        "user.email=b@example.invalid",
        "commit",
        "-q",
        "-m",
        "init",
    ]);
    std::fs::write(
        repo.join("flocks.toml"),
        format!(
            "agent_timeout_secs = 600\n{config}\n[agent]\ncommand = \"{}\"\n",
            fake_claude().display()
        ),
    )
    .unwrap();
    let tasks: String = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "{}\n",
                serde_json::json!({"id": format!("t{i}"), "prompt": p, "expect_commits": false})
            )
        })
        .collect();
    std::fs::write(repo.join("tasks.jsonl"), tasks).unwrap();
    repo
}

fn flocks(repo: &Path, home: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_flocks"))
        .args(["run", "--no-progress"])
        .current_dir(repo)
        .env("FAKE_CLAUDE_HOME", home.join("fake-home"))
        .env("XDG_STATE_HOME", home.join("state-home"))
        .env("BENCH_KEY", "sk-ant-bench-0123456789")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// (time to first byte, per-event latency), in ms, from the agents' records.
fn read(out: &Path) -> (Vec<f64>, Vec<f64>) {
    let (mut ttfb, mut lat) = (Vec::new(), Vec::new());
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(ns) = v["ttfb_ns"].as_f64() {
            assert_eq!(v["status"], 200, "{v}");
            ttfb.push(ns / 1e6);
        }
        // The deltas only: the message_start's send time is before the request's answer.
        if v["type"] == "content_block_delta"
            && let Some(ns) = v["latency_ns"].as_f64()
        {
            lat.push(ns / 1e6);
        }
    }
    (ttfb, lat)
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// flocks' CPU seconds so far (utime + stime of the process, all threads).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, a)| a).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// The latency runs: `requests` streamed answers, one after the other, by
/// one agent, through the proxy and direct.
fn latency(root: &Path, requests: usize, events: usize) {
    let counts = Arc::new(Counts::default());
    let port = upstream(
        Stream {
            events,
            gap: Duration::from_millis(10),
            together: 0,
        },
        counts,
    );
    let direct_out = root.join("direct.jsonl");
    let through_out = root.join("through.jsonl");
    let script = |out: &Path| -> String {
        (0..requests)
            .map(|_| format!("@fake api stream fail out={}\n", out.display()))
            .collect()
    };
    // Direct: the fake agent on its own, at the upstream.
    let dir = root.join("direct");
    std::fs::create_dir_all(&dir).unwrap();
    let mut c = Command::new("python3")
        .arg(fake_claude())
        .args([
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ])
        .current_dir(&dir)
        .env("FAKE_CLAUDE_HOME", root.join("fake-home"))
        .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env("ANTHROPIC_API_KEY", "sk-ant-bench-direct")
        .env("IS_SANDBOX", "1")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script(&direct_out).as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success(), "the direct client failed");
    // Through the proxy: the same script as a task of a flocks run.
    let repo = project(
        root,
        "through",
        &format!(
            "[proxy]\nupstream = \"http://127.0.0.1:{port}\"\n[[credentials]]\nname = \"bench\"\nenv = \"BENCH_KEY\"\nkind = \"api_key\"\n[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 1\ncredential = \"bench\"\n"
        ),
        &[script(&through_out)],
    );
    assert!(
        flocks(&repo, root).wait().unwrap().success(),
        "flocks run failed"
    );

    let (mut dt, mut dl) = read(&direct_out);
    let (mut pt, mut pl) = read(&through_out);
    assert_eq!(dt.len(), requests, "direct answers");
    assert_eq!(pt.len(), requests, "answers through the proxy");
    let row = |what: &str, d: &mut Vec<f64>, p: &mut Vec<f64>| {
        let (d50, d95, p50, p95) = (
            quantile(d, 0.5),
            quantile(d, 0.95),
            quantile(p, 0.5),
            quantile(p, 0.95),
        );
        println!(
            "  {what:<22} direct {d50:>6.2} ms (p95 {d95:>6.2})   through the proxy {p50:>6.2} ms (p95 {p95:>6.2})   added {:>5.2} ms (p95 {:>5.2})",
            p50 - d50,
            p95 - d95
        );
    };
    row("time to first byte", &mut dt, &mut pt);
    row("per-event latency", &mut dl, &mut pl);
    println!(
        "  ({requests} answers of {events} events each, 10 ms apart; {} events each side)",
        dl.len()
    );
}

/// flocks' CPU while `agents` stream at once for `window`: through the
/// proxy, and straight to the upstream (the pool's own login).
fn cpu(root: &Path, agents: usize, window: Duration) {
    for through in [true, false] {
        let counts = Arc::new(Counts::default());
        let gap = Duration::from_millis(20);
        let events = (window.as_millis() / gap.as_millis()) as usize;
        let port = upstream(
            Stream {
                events,
                gap,
                together: agents,
            },
            counts.clone(),
        );
        let name = if through { "cpu-proxy" } else { "cpu-direct" };
        let out = root.join(format!("{name}.jsonl"));
        let pool = if through {
            format!(
                "[proxy]\nupstream = \"http://127.0.0.1:{port}\"\n[[credentials]]\nname = \"bench\"\nenv = \"BENCH_KEY\"\nkind = \"api_key\"\n[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = {agents}\ncredential = \"bench\"\n"
            )
        } else {
            format!(
                "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = {agents}\nenv = {{ ANTHROPIC_BASE_URL = \"http://127.0.0.1:{port}\", ANTHROPIC_API_KEY = \"sk-ant-bench-direct\" }}\n"
            )
        };
        let prompts: Vec<String> = (0..agents)
            .map(|_| format!("@fake api stream fail out={}\n", out.display()))
            .collect();
        let repo = project(
            root,
            name,
            &format!("max_agents = {agents}\n{pool}"),
            &prompts,
        );
        let mut child = flocks(&repo, root);
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts.open.load(Ordering::SeqCst) < agents && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let (c0, t0) = (cpu_secs(pid), Instant::now());
        while counts.done.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        let (c1, t1) = (cpu_secs(pid), Instant::now());
        assert!(child.wait().unwrap().success(), "flocks run failed");
        let wall = (t1 - t0).as_secs_f64();
        println!(
            "  {agents} agents streaming {} ({events} events each over {:.1}s): flocks {:.2} CPU-s = {:.1}% of a core",
            if through {
                "through the proxy"
            } else {
                "straight to the API "
            },
            wall,
            c1 - c0,
            100.0 * (c1 - c0) / wall
        );
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (requests, events, agents, window) = if quick {
        (2, 5, 2, 1)
    } else {
        (
            env_usize("REQUESTS", 40),
            env_usize("EVENTS", 50),
            env_usize("AGENTS", 8),
            env_usize("WINDOW_SECS", 10),
        )
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "proxy benchmark ({cores} cores, load average {})",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let root = tempfile::tempdir().unwrap();
    latency(root.path(), requests, events);
    cpu(root.path(), agents, Duration::from_secs(window as u64));
}
