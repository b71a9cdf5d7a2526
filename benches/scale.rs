//! Scale benchmark: how flocks' costs grow with the number of tasks.
//!
//!     cargo bench --bench scale                          # 200, 2000 and 10000 tasks
//!     SCALE_SIZES=200,2000 cargo bench --bench scale     # pick the sizes
//!     FLOCKS_BIN=/path/to/flocks cargo bench --bench scale   # another build
//!
//! For each size N: a repo of F files (`F`, default 500), N tasks of the same
//! one-commit agent on P slots (`P`, default 8). Prints the per-task cost of
//! `flocks run` (wall time / N, and the CPU time of the flocks process
//! itself / N, from /proc: the dispatcher's own work, which a busy machine
//! does not inflate), its peak resident memory (VmHWM sampled every 10 ms),
//! the largest state.journal seen during the run and the size of state.json
//! after it; then, on that finished state, the median wall and CPU time of
//! `status`, `status --json`, `tasks` and `run --dry-run`. The last line
//! compares the per-task cost of the largest size with the smallest.
//!
//! `SCALE_KEEP=dir` keeps each finished project in `dir/n<N>` (to profile
//! readers on it). `SCALE_RUNS=3` measures every size that many times in a
//! row and compares each run's per-task time at the largest size with the
//! smallest (issue 25: within 1.2x, three runs in a row).
//!
//! The repository keeps git's default `gc.auto`: agents run with
//! `gc.auto=0` and flocks packs refs and objects itself (its `upkeep`
//! events), as it does for users.
//!
//! 10,000 tasks take a while (minutes); run it on a quiet machine.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{env_usize, load, make_repo, run, write_agent, write_project};

fn flocks_bin() -> PathBuf {
    std::env::var_os("FLOCKS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flocks")))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

struct RunFigures {
    wall: Duration,
    cpu: Duration,
    peak_kb: u64,
    journal_max: u64,
    state_len: u64,
}

fn flocks_run(repo: &Path) -> RunFigures {
    let start = Instant::now();
    let mut child = Command::new(flocks_bin())
        .args(["run", "--no-progress"])
        .current_dir(repo)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let journal = repo.join(".flocks/state.journal");
    let (mut peak_kb, mut journal_max) = (0, 0);
    let mut cpu = Duration::ZERO;
    loop {
        if let Some(c) = process_cpu(child.id()) {
            cpu = c;
        }
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
        journal_max = journal_max.max(file_len(&journal));
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "flocks run failed: {st}");
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    RunFigures {
        wall: start.elapsed(),
        cpu,
        peak_kb,
        journal_max,
        state_len: file_len(&repo.join(".flocks/state.json")),
    }
}

/// User plus system time of a live process (not its children).
fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    // After the command name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// User plus system time of the children waited for so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Median wall and CPU time of a read-only command on the finished state.
fn time_command(repo: &Path, args: &[&str]) -> (Duration, Duration) {
    let mut times: Vec<(Duration, Duration)> = (0..5)
        .map(|_| {
            let cpu = children_cpu();
            let start = Instant::now();
            let st = Command::new(flocks_bin())
                .args(args)
                .current_dir(repo)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            let t = start.elapsed();
            // `run --dry-run` on a finished run exits 0; `tasks` and
            // `status` too. Anything else is a broken benchmark.
            assert!(st.success(), "flocks {args:?}: {st}");
            (t, children_cpu().saturating_sub(cpu))
        })
        .collect();
    times.sort();
    let wall = times[times.len() / 2].0;
    let mut cpus: Vec<Duration> = times.iter().map(|t| t.1).collect();
    cpus.sort();
    (wall, cpus[cpus.len() / 2])
}

fn wall_cpu(t: (Duration, Duration)) -> String {
    format!("{:.0}/{:.0}ms", ms(t.0), ms(t.1))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that cheap.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = if quick {
        vec![4]
    } else {
        std::env::var("SCALE_SIZES")
            .unwrap_or_else(|_| "200,2000,10000".into())
            .split(',')
            .filter_map(|s| s.trim().replace('_', "").parse().ok())
            .collect()
    };
    let (p, f) = if quick {
        (2, 20)
    } else {
        (env_usize("P", 8), env_usize("F", 500))
    };
    let root = tempfile::tempdir().unwrap();
    let agent = write_agent(root.path());
    println!(
        "scale benchmark: {} on P={p} slots, F={f} files ({})",
        sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        flocks_bin().display()
    );
    println!("(times of status, --json, tasks, dry-run: median wall / CPU)");
    println!(
        "{:>7} {:>8} {:>8} {:>8} {:>8} {:>10} {:>9} {:>12} {:>12} {:>12} {:>12}",
        "tasks",
        "run s",
        "ms/task",
        "cpu ms/t",
        "peak MiB",
        "state.json",
        "journal",
        "status",
        "--json",
        "tasks",
        "dry-run"
    );
    let runs = if quick {
        1
    } else {
        env_usize("SCALE_RUNS", 1).max(1)
    };
    let mut ratios = Vec::new();
    for r in 1..=runs {
        if runs > 1 {
            println!("run {r} of {runs} (load {})", load());
        }
        let mut per_task = Vec::new();
        let mut cpu_per_task = Vec::new();
        for &n in &sizes {
            let repo = root.path().join(format!("n{n}"));
            make_repo(&repo, f);
            // What users have: git's default threshold (flocks' upkeep uses it).
            run(Command::new("git")
                .args(["config", "--unset", "gc.auto"])
                .current_dir(&repo));
            write_project(&repo, &agent, p, n);
            let figures = flocks_run(&repo);
            let cost = figures.wall / n as u32;
            per_task.push(cost);
            let status = time_command(&repo, &["status"]);
            let json = time_command(&repo, &["status", "--json"]);
            let tasks = time_command(&repo, &["tasks"]);
            let dry = time_command(&repo, &["run", "--dry-run"]);
            println!(
                "{n:>7} {:>8.1} {:>8.1} {:>8.2} {:>8.1} {:>8.2}MB {:>7.2}MB {:>12} {:>12} {:>12} {:>12}",
                figures.wall.as_secs_f64(),
                ms(cost),
                ms(figures.cpu) / n as f64,
                figures.peak_kb as f64 / 1024.0,
                figures.state_len as f64 / 1e6,
                figures.journal_max as f64 / 1e6,
                wall_cpu(status),
                wall_cpu(json),
                wall_cpu(tasks),
                wall_cpu(dry),
            );
            cpu_per_task.push(figures.cpu / n as u32);
            if let Some(keep) = std::env::var_os("SCALE_KEEP") {
                // Keep the finished project to profile readers on it.
                let to = PathBuf::from(keep).join(format!("n{n}"));
                let _ = std::fs::remove_dir_all(&to);
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::rename(&repo, &to)
                    .or_else(|_| {
                        Command::new("cp")
                            .arg("-a")
                            .arg(&repo)
                            .arg(&to)
                            .status()
                            .map(|s| assert!(s.success(), "cp -a to {} failed", to.display()))
                    })
                    .unwrap();
                println!("        kept in {}", to.display());
            }
            // The worktrees and branches of a big size take disk; free them.
            let _ = std::fs::remove_dir_all(&repo);
        }
        if let (Some(first), Some(last)) = (per_task.first(), per_task.last())
            && per_task.len() > 1
        {
            let ratio = last.as_secs_f64() / first.as_secs_f64();
            ratios.push(ratio);
            println!(
                "per-task cost at {} tasks / at {}: {ratio:.2}x (target: within 1.2x)",
                sizes[sizes.len() - 1],
                sizes[0],
            );
            let (first, last) = (cpu_per_task[0], cpu_per_task[cpu_per_task.len() - 1]);
            println!(
                "flocks' own CPU per task at {} / at {}: {:.2}x (a busy machine inflates wall time, not this)",
                sizes[sizes.len() - 1],
                sizes[0],
                last.as_secs_f64() / first.as_secs_f64().max(1e-9)
            );
        }
    }
    if runs > 1 && !ratios.is_empty() {
        let all = ratios.iter().all(|r| *r <= 1.2);
        println!(
            "per-task ratios of {runs} runs in a row: {} ({}; load {})",
            ratios
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(", "),
            if all {
                "all within 1.2x"
            } else {
                "NOT all within 1.2x"
            },
            load()
        );
    }
}
