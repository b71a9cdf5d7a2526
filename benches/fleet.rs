//! Fleet benchmark: N tasks on P slots in a repo of F files, flocks against
//! the shell baseline (`git worktree add` + agent + log file under `xargs -P`).
//!
//!     cargo bench --bench fleet                  # N=200 P=8 F=2000
//!     N=50 P=4 F=500 cargo bench --bench fleet   # smaller
//!
//! Both sides run the same agent: a small sh script that speaks stream-json,
//! writes one file and commits it. Prints wall time per side, the ratio,
//! flocks' peak resident memory, and how long the run's end waited after the
//! last attempt finished (conflict prediction catching up, among others; from
//! events.jsonl).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{env_usize, make_repo, run, write_agent, write_project};

fn baseline(root: &Path, agent: &Path, n: usize, p: usize, files: usize) -> Duration {
    let repo = root.join("baseline");
    make_repo(&repo, files);
    std::fs::create_dir_all(repo.join(".logs")).unwrap();
    let script = format!(
        "seq 1 {n} | xargs -P {p} -I{{}} sh -c 'git worktree add -q -b base/t{{}} .wt/t{{}} main && cd .wt/t{{}} && echo t{{}} | {agent} > ../../.logs/t{{}}.log 2>&1'",
        agent = agent.display()
    );
    let start = Instant::now();
    run(Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&repo));
    start.elapsed()
}

fn flocks(root: &Path, agent: &Path, n: usize, p: usize, files: usize) -> (Duration, u64) {
    let repo = root.join("flocks");
    make_repo(&repo, files);
    write_project(&repo, agent, p, n);
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flocks"))
        .args(["run", "--no-progress"])
        .current_dir(&repo)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut peak_kb = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) {
            for l in s.lines().filter(|l| l.starts_with("VmHWM:")) {
                let kb: u64 = l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                peak_kb = peak_kb.max(kb);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "flocks run failed: {st}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (start.elapsed(), peak_kb)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, p, f) = if quick {
        (4, 2, 20)
    } else {
        (env_usize("N", 200), env_usize("P", 8), env_usize("F", 2000))
    };
    let root = tempfile::tempdir().unwrap();
    let agent = write_agent(root.path());
    println!("fleet benchmark: N={n} tasks, P={p} slots, F={f} files");
    let base = baseline(root.path(), &agent, n, p, f);
    println!(
        "  baseline (git worktree add + agent + log, xargs -P {p}): {:>8.2}s",
        base.as_secs_f64()
    );
    let (ours, peak_kb) = flocks(root.path(), &agent, n, p, f);
    println!(
        "  flocks run:                                          {:>8.2}s",
        ours.as_secs_f64()
    );
    println!(
        "  ratio flocks/baseline: {:.2} (below 1 is faster)",
        ours.as_secs_f64() / base.as_secs_f64()
    );
    println!("  flocks peak RSS: {:.1} MiB", peak_kb as f64 / 1024.0);
    if let Some(tail) = end_wait(&root.path().join("flocks")) {
        println!(
            "  the run's end after the last attempt finished: {:.0} ms",
            tail.as_secs_f64() * 1000.0
        );
    }
}

/// From the last `finished` event to `run_finished`, in events.jsonl.
fn end_wait(repo: &Path) -> Option<Duration> {
    let text = std::fs::read_to_string(repo.join(".flocks/events.jsonl")).ok()?;
    let ts = |l: &str| -> Option<chrono::DateTime<chrono::FixedOffset>> {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        chrono::DateTime::parse_from_rfc3339(v["ts"].as_str()?).ok()
    };
    let kind = |l: &str| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        Some(v["event"].as_str()?.to_string())
    };
    let last_finished = text
        .lines()
        .filter(|l| kind(l).as_deref() == Some("finished"))
        .filter_map(ts)
        .max()?;
    let ended = text
        .lines()
        .filter(|l| kind(l).as_deref() == Some("run_finished"))
        .filter_map(ts)
        .next_back()?;
    (ended - last_finished).to_std().ok()
}
