//! Fleet benchmark: N tasks on P slots in a repo of F files, flocks against
//! the shell baseline (`git worktree add` + agent + log file under `xargs -P`).
//!
//!     cargo bench --bench fleet                  # N=200 P=8 F=2000
//!     N=50 P=4 F=500 cargo bench --bench fleet   # smaller
//!
//! Both sides run the same agent: a small sh script that speaks stream-json,
//! writes one file and commits it. Prints wall time per side, the ratio,
//! flocks' peak resident memory, and where an attempt's time went, read from
//! the run's events.jsonl: per attempt, from its `started` event to its
//! `finished` event, the `phases` the executor timed (prepare, spawn, agent,
//! finish) and the rest (record: the dispatcher saving the start and the
//! end, handing the report over); then the slot gap, from a `finished` event
//! to the next `started` one (the next task's start). The machine's load
//! average is printed with them: the figures mean little on a busy machine.
//! Then how long the run's end waited after the last attempt finished
//! (conflict prediction catching up, among others).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{env_usize, load, make_repo, run, write_agent, write_project};

fn baseline(root: &Path, agent: &Path, n: usize, p: usize, files: usize) -> Duration {
    let repo = root.join("baseline");
    make_repo(&repo, files);
    std::fs::create_dir_all(repo.join(".logs")).unwrap();
    let script = format!(
        // `git worktree add`s side by side can trip on each other's
        // half-made admin dirs (git's own race): a few tries each.
        "seq 1 {n} | xargs -P {p} -I{{}} sh -c 'for try in 1 2 3 4 5; do git worktree add -q -B base/t{{}} .wt/t{{}} main 2>/dev/null && break; sleep 0.1; done; cd .wt/t{{}} && echo t{{}} | {agent} > ../../.logs/t{{}}.log 2>&1'",
        agent = agent.display()
    );
    let start = Instant::now();
    run(Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&repo));
    start.elapsed()
}

fn flocks(root: &Path, agent: &Path, n: usize, p: usize, files: usize) -> (Duration, u64, PathBuf) {
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
    (start.elapsed(), peak_kb, repo.join(".flocks/events.jsonl"))
}

/// Median, mean and 90th percentile, in ms.
fn spread(mut v: Vec<f64>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    format!(
        "median {:>7.1}  mean {:>7.1}  p90 {:>7.1} ms",
        v[v.len() / 2] * 1000.0,
        mean * 1000.0,
        v[v.len() * 9 / 10] * 1000.0
    )
}

/// Where an attempt's time went, from a run's events.jsonl.
fn phases(events: &Path) {
    use std::collections::HashMap;
    let text = std::fs::read_to_string(events).unwrap_or_default();
    let ts = |v: &serde_json::Value| {
        v["ts"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros() as f64 / 1e6)
    };
    let mut started: HashMap<(String, u64), f64> = HashMap::new();
    let names = [
        "prepare",
        "spawn",
        "agent",
        "finish",
        "record",
        "started→finished",
    ];
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    let mut gaps = Vec::new();
    let mut free_slots: Vec<f64> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let key = (
            v["task"].as_str().unwrap_or("").to_string(),
            v["attempt"].as_u64().unwrap_or(0),
        );
        let Some(at) = ts(&v) else { continue };
        match v["event"].as_str() {
            Some("started") => {
                started.insert(key, at);
                // The earliest freed slot takes the next task.
                if !free_slots.is_empty() {
                    gaps.push(at - free_slots.remove(0));
                }
            }
            Some("finished") => {
                free_slots.push(at);
                let (Some(s), Some(p)) = (started.get(&key), v.get("phases")) else {
                    continue;
                };
                let secs = |k: &str| p[k].as_f64().unwrap_or(0.0);
                let parts = [
                    secs("prepare_secs"),
                    secs("spawn_secs"),
                    secs("agent_secs"),
                    secs("finish_secs"),
                ];
                let whole = at - s;
                for (i, x) in parts.iter().enumerate() {
                    figures[i].push(*x);
                }
                figures[4].push((whole - parts.iter().sum::<f64>()).max(0.0));
                figures[5].push(whole);
            }
            _ => {}
        }
    }
    println!(
        "  per attempt ({} attempts, from events.jsonl):",
        figures[5].len()
    );
    for (name, v) in names.iter().zip(figures) {
        println!("    {name:<17} {}", spread(v));
    }
    println!("    {:<17} {}", "slot gap", spread(gaps));
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
    println!("  load before: {}", load());
    let base = baseline(root.path(), &agent, n, p, f);
    println!(
        "  baseline (git worktree add + agent + log, xargs -P {p}): {:>8.2}s",
        base.as_secs_f64()
    );
    let (ours, peak_kb, events) = flocks(root.path(), &agent, n, p, f);
    println!(
        "  flocks run:                                          {:>8.2}s",
        ours.as_secs_f64()
    );
    println!(
        "  ratio flocks/baseline: {:.2}x (below 1 is faster; target at N=200 P=8 F=2000: <= 0.3x)",
        ours.as_secs_f64() / base.as_secs_f64()
    );
    println!("  flocks peak RSS: {:.1} MiB", peak_kb as f64 / 1024.0);
    phases(&events);
    if let Some(tail) = end_wait(&root.path().join("flocks")) {
        println!(
            "  the run's end after the last attempt finished: {:.0} ms",
            tail.as_secs_f64() * 1000.0
        );
    }
    println!("  load after: {}", load());
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
