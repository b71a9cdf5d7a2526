//! Readers' benchmark: `status`, `status --json`, `tasks` and `run --dry-run`
//! on a big finished state, without running thousands of agents first.
//!
//!     cargo bench --bench readers                        # 10,000 tasks
//!     READERS_N=5000 cargo bench --bench readers         # another size
//!     FLOCKS_BIN=/path/to/flocks cargo bench --bench readers   # another build
//!     FLOCKS_BIN_BEFORE=/path/to/old/flocks cargo bench --bench readers
//!     READERS_KEEP=dir cargo bench --bench readers       # make (and keep) it in dir
//!
//! A real 100-task run of the bench agent (a repo of 500 files, 8 slots)
//! gives the records; they are copied with new ids (`c<k>-t<i>`) up to N,
//! each copy's branch made where its original's is and its task line added,
//! then saved by a `flocks run` with nothing left to do (so the readers see
//! what the end of a run leaves). Each reader then runs 15 times (`REPS`),
//! interleaved with the others (and with FLOCKS_BIN_BEFORE's, when given);
//! printed: the median CPU time (user + system, from wait4), the median
//! wall time and the largest peak RSS. Issue 25's target: every
//! reader under 50 ms, and under 64 MiB, at 10,000 tasks.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{env_usize, load, make_repo, run, write_agent, write_project};

const READERS: [&[&str]; 4] = [
    &["status"],
    &["status", "--json"],
    &["tasks"],
    &["run", "--dry-run"],
];

fn bin(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).map(PathBuf::from)
}

/// One reader's run: wall time, CPU time and peak RSS (KiB), from wait4.
// The child is waited for by wait4 (for its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn measure(bin: &Path, repo: &Path, args: &[&str]) -> (Duration, Duration, u64) {
    let start = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .current_dir(repo)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: wait4 writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "flocks {args:?} failed ({status})"
    );
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        wall,
        tv(usage.ru_utime) + tv(usage.ru_stime),
        usage.ru_maxrss as u64,
    )
}

/// The state of a 100-task run, copied up to `n` tasks.
fn synthesize(repo: &Path, n: usize) {
    let state_path = repo.join(".flocks/state.json");
    let text = std::fs::read_to_string(&state_path).unwrap();
    let mut state: serde_json::Value = serde_json::from_str(&text).unwrap();
    let originals = state["tasks"].as_array().unwrap().clone();
    assert!(!originals.is_empty(), "the seed run left no tasks");
    // Each original's branch tip, read once.
    let tips: std::collections::HashMap<String, String> = originals
        .iter()
        .map(|t| {
            let tip = Command::new("git")
                .args(["rev-parse", t["branch"].as_str().unwrap()])
                .current_dir(repo)
                .output()
                .unwrap();
            assert!(tip.status.success(), "{t}");
            let id = t["id"].as_str().unwrap().to_string();
            (id, String::from_utf8_lossy(&tip.stdout).trim().to_string())
        })
        .collect();
    let mut tasks = originals.clone();
    let mut lines = std::fs::read_to_string(repo.join("tasks.jsonl")).unwrap();
    let mut refs = String::new();
    let mut copy = 0;
    while tasks.len() < n {
        copy += 1;
        for orig in &originals {
            if tasks.len() == n {
                break;
            }
            let id = orig["id"].as_str().unwrap();
            let new_id = format!("c{copy}-{id}");
            let text = orig.to_string();
            let branch = orig["branch"].as_str().unwrap().to_string();
            let new_branch = branch.replacen(id, &new_id, 1);
            // Ids, branches, worktrees and log paths all name the task.
            let moved = text.replace(&format!("/{id}\""), &format!("/{new_id}\""));
            let moved = moved.replace(&format!("\"{id}\""), &format!("\"{new_id}\""));
            let mut record: serde_json::Value = serde_json::from_str(&moved).unwrap();
            record["branch"] = new_branch.clone().into();
            refs.push_str(&format!("create refs/heads/{new_branch} {}\n", tips[id]));
            lines.push_str(&format!(
                "{{\"id\":\"{new_id}\",\"prompt\":\"{new_id}\"}}\n"
            ));
            tasks.push(record);
        }
    }
    let mut git = Command::new("git")
        .args(["update-ref", "--stdin"])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    git.stdin
        .take()
        .unwrap()
        .write_all(refs.as_bytes())
        .unwrap();
    assert!(git.wait().unwrap().success());
    run(Command::new("git")
        .args(["pack-refs", "--all"])
        .current_dir(repo));
    state["tasks"] = tasks.into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();
    let _ = std::fs::remove_file(repo.join(".flocks/state.journal"));
    std::fs::write(repo.join("tasks.jsonl"), lines).unwrap();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if let Ok(n) = std::env::var("READERS_SYNTHESIZE") {
        let repo = std::env::args_os().nth(1).unwrap();
        synthesize(Path::new(&repo), n.parse().unwrap());
        return;
    }
    // `cargo test --benches` runs this too: keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (n, seed, reps) = if quick {
        (20, 4, 1)
    } else {
        (env_usize("READERS_N", 10_000), 100, env_usize("REPS", 15))
    };
    let after = bin("FLOCKS_BIN").unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flocks")));
    let mut bins = vec![("after", after.clone())];
    if let Some(before) = bin("FLOCKS_BIN_BEFORE") {
        bins.insert(0, ("before", before));
    }
    let root = tempfile::tempdir().unwrap();
    let agent = write_agent(root.path());
    let keep = std::env::var_os("READERS_KEEP").map(PathBuf::from);
    let repo = keep.clone().unwrap_or_else(|| root.path().join("repo"));
    let _ = std::fs::remove_dir_all(&repo);
    make_repo(&repo, 500);
    write_project(&repo, &agent, 8, seed);
    run(Command::new(&after)
        .args(["run", "--no-progress"])
        .current_dir(&repo));
    // In a process of its own: a reader's peak RSS (wait4's) starts from
    // this process's own peak, which must stay small.
    run(Command::new(std::env::current_exe().unwrap())
        .env("READERS_SYNTHESIZE", format!("{n}"))
        .arg(&repo));
    // A run with nothing left to do saves the copies with the writer's own
    // code, as the end of a run leaves them.
    run(Command::new(&after)
        .args(["run", "--no-progress"])
        .current_dir(&repo));
    // What was just written is on disk before any reader runs: the kernel's
    // writeback would otherwise share the cores with the first readers.
    run(&mut Command::new("sync"));
    std::thread::sleep(Duration::from_secs(2));
    let state_len = std::fs::metadata(repo.join(".flocks/state.json"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "readers benchmark: {n} tasks, state.json {:.2} MB, {reps} runs each (load {})",
        state_len as f64 / 1e6,
        load()
    );
    println!(
        "{:<8} {:<18} {:>8} {:>8} {:>9}",
        "build", "reader", "CPU ms", "wall ms", "peak MiB"
    );
    let mut samples = vec![vec![(Vec::new(), Vec::new(), 0u64); READERS.len()]; bins.len()];
    for _ in 0..reps {
        for (r, args) in READERS.iter().enumerate() {
            for (b, (_, path)) in bins.iter().enumerate() {
                let (wall, cpu, rss) = measure(path, &repo, args);
                let s = &mut samples[b][r];
                s.0.push(wall);
                s.1.push(cpu);
                s.2 = s.2.max(rss);
            }
        }
    }
    for (r, args) in READERS.iter().enumerate() {
        for (b, (name, _)) in bins.iter().enumerate() {
            let (walls, cpus, rss) = samples[b][r].clone();
            println!(
                "{name:<8} {:<18} {:>8.1} {:>8.1} {:>9.1}",
                args.join(" "),
                ms(median(cpus)),
                ms(median(walls)),
                rss as f64 / 1024.0
            );
        }
    }
    println!("(load after: {})", load());
    if let Some(keep) = keep {
        // The agent it names is in the temporary directory: gone after this.
        println!("kept in {}", keep.display());
    }
}
