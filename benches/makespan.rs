//! Makespan benchmark: 48 tasks whose agents take 0.2 to 1.6 s, on 8 slots.
//!
//!     cargo bench --bench makespan
//!     N=96 P=8 cargo bench --bench makespan
//!
//! The first run has no history: flocks starts the tasks in task order, and
//! its makespan (the run's `run_started` to `run_finished` in events.jsonl)
//! is compared with the FIFO list-schedule bound (the same durations placed
//! in task order on P slots, no overhead; target: within 1.05x). The second
//! run (`flocks retry --force` of every task) has the first one's durations
//! as history: flocks starts the longest expected first, and its makespan is
//! compared with sum/P (target: within 1.10x) and with the LPT bound.
//!
//! The agent is a small sh script that sleeps its task's duration (by
//! `FLOCKS_TASK`) and commits one file. The durations are fixed (a seeded
//! generator).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[expect(
    dead_code,
    reason = "the makespan bench has its own sleeping agent and project"
)]
mod common;
use common::{env_usize, load, make_repo, run};

/// The agent: its task's duration by `FLOCKS_TASK` (a retry's prompt is a
/// follow-up, not the task's line), a sleep, one commit; its result says
/// its `duration_ms`, as claude's does.
fn agent_script(durations: &[f64]) -> String {
    let cases: String = durations
        .iter()
        .enumerate()
        .map(|(i, s)| format!("  t{i}) secs={s} ;;\n"))
        .collect();
    format!(
        r#"#!/bin/sh
prompt=$(cat)
t0=$(date +%s%N)
echo '{{"type":"system","subtype":"init","session_id":"bench","model":"bench"}}'
case "$FLOCKS_TASK" in
{cases}  *) secs=1 ;;
esac
sleep "$secs"
echo "$prompt" >> "out-$FLOCKS_TASK.txt"
git add "out-$FLOCKS_TASK.txt" && git commit -q -m "bench $FLOCKS_TASK"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo '{{"type":"result","subtype":"success","is_error":false,"num_turns":1,"result":"ok","session_id":"bench","total_cost_usd":0,"duration_ms":'$ms'}}'
"#
    )
}

/// `n` durations in 0.2..=1.6 s, the same every time.
fn durations(n: usize) -> Vec<f64> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x % 10_000) as f64 / 9_999.0;
            ((0.2 + 1.4 * u) * 100.0).round() / 100.0
        })
        .collect()
}

/// List scheduling: each task in `order` goes to the slot free first.
fn list_schedule(durations: &[f64], order: &[usize], p: usize) -> f64 {
    let mut slots = vec![0.0f64; p];
    for &i in order {
        let s = slots
            .iter_mut()
            .min_by(|a, b| a.total_cmp(b))
            .expect("p > 0");
        *s += durations[i];
    }
    slots.into_iter().fold(0.0, f64::max)
}

/// The seconds from `run_started` to `run_finished` of the last run in
/// events.jsonl, and each task's attempt duration in it (`finished`'s
/// `duration_secs`, by task index: the agent plus flocks' per-attempt work).
fn makespan(repo: &Path, n: usize) -> (f64, Vec<f64>, Vec<usize>) {
    let text = std::fs::read_to_string(repo.join(".flocks/events.jsonl")).unwrap();
    let (mut start, mut end) = (None, None);
    let mut took = vec![0.0; n];
    let mut started = Vec::new();
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let ts = || {
            chrono::DateTime::parse_from_rfc3339(v["ts"].as_str().unwrap())
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        match v["event"].as_str() {
            Some("run_started") => {
                start = Some(ts());
                started.clear();
            }
            Some("started") => started.push(v["task"].as_str().unwrap()[1..].parse().unwrap()),
            Some("run_finished") => end = Some(ts()),
            Some("finished") => {
                let i: usize = v["task"].as_str().unwrap()[1..].parse().unwrap();
                took[i] = v["duration_secs"].as_f64().unwrap();
            }
            _ => {}
        }
    }
    let (s, e) = (start.unwrap(), end.unwrap());
    ((e - s).num_milliseconds() as f64 / 1000.0, took, started)
}

fn flocks(repo: &Path, args: &[&str]) -> Duration {
    let start = Instant::now();
    let st = Command::new(env!("CARGO_BIN_EXE_flocks"))
        .args(args)
        .current_dir(repo)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(st.success(), "flocks {args:?}: {st}");
    start.elapsed()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, p) = if quick {
        (4, 2)
    } else {
        (env_usize("N", 48), env_usize("P", 8))
    };
    let d = durations(n);
    let root = tempfile::tempdir().unwrap();
    let agent = root.path().join("sleep-agent");
    std::fs::write(&agent, agent_script(&d)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let repo = root.path().join("repo");
    make_repo(&repo, 20);
    std::fs::write(
        repo.join("flocks.toml"),
        format!(
            "max_agents = {p}\n[agent]\ncommand = \"{}\"\n[[containers]]\nname = \"local\"\nmax_worktrees = {p}\n",
            agent.display()
        ),
    )
    .unwrap();
    let tasks: String = d
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{{\"id\":\"t{i}\",\"prompt\":\"t{i} {s}\"}}\n"))
        .collect();
    std::fs::write(repo.join("tasks.jsonl"), tasks).unwrap();
    run(Command::new("git")
        .args(["config", "--unset", "gc.auto"])
        .current_dir(&repo));

    let sum: f64 = d.iter().sum();
    let task_order: Vec<usize> = (0..n).collect();
    let mut lpt: Vec<usize> = (0..n).collect();
    lpt.sort_by(|&a, &b| d[b].total_cmp(&d[a]));
    let fifo_bound = list_schedule(&d, &task_order, p);
    let lpt_bound = list_schedule(&d, &lpt, p);
    let ideal = sum / p as f64;
    println!(
        "makespan benchmark: N={n} tasks of 0.2-1.6 s (sum {sum:.2} s) on P={p} slots; load {}",
        load()
    );
    println!(
        "  bounds: FIFO list schedule {fifo_bound:.2} s, LPT {lpt_bound:.2} s, sum/P {ideal:.2} s"
    );

    let wall = flocks(&repo, &["run", "--no-progress"]);
    let (first, took, _) = makespan(&repo, n);
    println!(
        "  run 1, no history (task order):   makespan {first:.2} s (process {:.2} s): {:.3}x the FIFO bound (target <= 1.05x)",
        wall.as_secs_f64(),
        first / fifo_bound
    );
    let overhead = (took.iter().sum::<f64>() - sum) / n as f64;
    println!(
        "    attempts took {overhead:.3} s more than their agent's sleep on average; with those durations the FIFO bound is {:.2} s ({:.3}x)",
        list_schedule(&took, &task_order, p),
        first / list_schedule(&took, &task_order, p)
    );

    let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
    let mut args = vec!["retry", "--force", "--no-progress"];
    args.extend(ids.iter().map(String::as_str));
    let wall = flocks(&repo, &args);
    let (second, took, started) = makespan(&repo, n);
    println!(
        "  run 2, history (longest first):   makespan {second:.2} s (process {:.2} s): {:.3}x sum/P (target <= 1.10x), {:.3}x the LPT bound",
        wall.as_secs_f64(),
        second / ideal,
        second / lpt_bound
    );
    let took_sum: f64 = took.iter().sum();
    println!(
        "    attempts took {:.3} s more than their agent's sleep on average; with those durations sum/P is {:.2} s ({:.3}x)",
        (took_sum - sum) / n as f64,
        took_sum / p as f64,
        second / (took_sum / p as f64)
    );
    let mut by_length: Vec<usize> = (0..n).collect();
    by_length.sort_by(|&a, &b| d[b].total_cmp(&d[a]));
    println!(
        "    started longest first: {} (first 8: {:?}); list schedule of those durations in that order: {:.2} s",
        started == by_length,
        &started[..started.len().min(8)],
        list_schedule(&took, &started, p)
    );
    println!("  load after: {}", load());
}
