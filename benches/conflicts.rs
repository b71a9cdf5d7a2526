//! Conflict prediction benchmark: the check a run makes at each success
//! (issue 25: median <= 2 ms per success at N = 1,000 succeeded tasks with
//! 5% overlap).
//!
//!     cargo bench --bench conflicts                  # N=1000,3000,10000, 5% overlap
//!     N=1000 cargo bench --bench conflicts           # one size
//!     OVERLAP=20 cargo bench --bench conflicts       # percent of tasks that overlap
//!
//! For each N: builds a repository of F files (default N, at least 2,000,
//! so tasks overlap only where the bench makes them) and N task branches, each with one commit
//! changing a file of its own; OVERLAP percent of the tasks (every
//! 100/OVERLAP-th) also change the file of the task before them: half of
//! them the same line (a conflict), half another line (a clean merge). Then,
//! with one predictor as a run keeps it: the first prediction (all of them),
//! and, R times each, the prediction after one more task succeeded: the last
//! in landing order, one in the middle (the old chain's worst case: every
//! task after it was applied again), and one that overlaps another. Prints
//! the median per success over those rounds for each N, and the load average.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[expect(
    dead_code,
    reason = "the agent and project helpers serve the run benchmarks"
)]
mod common;
use common::{env_usize, load, make_repo, run};

use flocks::land::{LandLog, Predictor};
use flocks::state::{State, TaskRecord, TaskStatus};

/// N task branches off main; the records of their success.
fn tasks(repo: &Path, n: usize, files: usize) -> State {
    let git = |args: &[&str]| run(Command::new("git").args(args).current_dir(repo));
    let base = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "main"])
            .current_dir(repo)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let template: State =
        serde_json::from_str(include_str!("../tests/fixtures/state-v1.json")).unwrap();
    let mut state = State::default();
    // One fast-import stream: N branches of one commit each.
    let overlap = env_usize("OVERLAP", 5).min(100);
    let every = 100usize.checked_div(overlap).unwrap_or(usize::MAX);
    let file_of = |i: usize| {
        (
            i % files.max(1),
            format!(
                "src/m{:02}/f{}.rs",
                (i % files.max(1)) % 50,
                i % files.max(1)
            ),
        )
    };
    // make_repo's file k: 20 times the two lines of file k.
    let original = |k: usize| format!("// file {k}\npub fn f{k}() -> u32 {{ {k} }}\n").repeat(20);
    let mut stream = String::new();
    for i in 0..n {
        let (k, file) = file_of(i);
        let mut lines: Vec<String> = original(k).lines().map(str::to_string).collect();
        lines[0] = format!("// task t{i}");
        let body = lines.join("\n") + "\n";
        let mut extra = String::new();
        if i > 0 && i % every == every - 1 {
            // Also the file of the task before it: the same line (conflict)
            // or the last line (merges cleanly).
            let (k2, other) = file_of(i - 1);
            let mut lines: Vec<String> = original(k2).lines().map(str::to_string).collect();
            let at = if (i / every).is_multiple_of(2) {
                0
            } else {
                lines.len() - 1
            };
            lines[at] = format!("// and task t{i}");
            let text = lines.join("\n") + "\n";
            extra = format!("M 100644 inline {other}\ndata {}\n{text}\n", text.len());
        }
        stream.push_str(&format!(
            "commit refs/heads/flocks/t{i}\nmark :{m}\ncommitter bench <bench@example.invalid> 1700000000 +0000\ndata {len}\nt{i}\nfrom {base}\nM 100644 inline {file}\ndata {blen}\n{body}\n{extra}\n",
            m = i + 1,
            len = format!("t{i}").len(),
            blen = body.len(),
        ));
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(repo)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "git fast-import failed");
    git(&["gc", "-q"]);
    let out = Command::new("git")
        .args([
            "for-each-ref",
            "--format=%(refname:short) %(objectname)",
            "refs/heads/flocks/",
        ])
        .current_dir(repo)
        .output()
        .unwrap();
    let tips: std::collections::HashMap<String, String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (b, o) = l.split_once(' ')?;
            Some((b.to_string(), o.to_string()))
        })
        .collect();
    for i in 0..n {
        let mut t: TaskRecord = template.tasks[0].clone();
        t.id = format!("t{i}");
        t.branch = format!("flocks/t{i}");
        t.origin = Some(base.clone());
        t.attempts[0].start_commit = Some(base.clone());
        t.attempts[0].end_tip = Some(tips[&t.branch].clone());
        state.push_task(t);
    }
    state
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The times of R predictions after task `k` succeeds (it is pending
/// again between rounds), sorted, and how many tasks the last applied.
fn per_success(p: &mut Predictor, all: &State, k: usize, rounds: usize) -> (Vec<Duration>, usize) {
    let log = LandLog::default();
    let mut without = all.clone();
    without.tasks[k].status = TaskStatus::Pending;
    p.predict(&without, &log).unwrap();
    let mut times = Vec::with_capacity(rounds);
    let mut applied = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        let one = p.predict(all, &log).unwrap();
        times.push(start.elapsed());
        applied = one.applied;
        p.predict(&without, &log).unwrap();
    }
    p.predict(all, &log).unwrap();
    times.sort();
    (times, applied)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("N")
        .unwrap_or_else(|_| "1000,3000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .map(|n: usize| n.max(4))
        .collect();
    let rounds = env_usize("R", 21).max(1);
    let overlap = env_usize("OVERLAP", 5);
    println!("load before: {}", load());
    let mut summary = Vec::new();
    for n in sizes {
        // A file per task (at least 2,000): tasks overlap only where the
        // bench makes them.
        let files = env_usize("F", n.max(2000));
        summary.push((n, one_size(n, files, rounds, overlap)));
    }
    println!("load after: {}", load());
    println!("median per success ({overlap}% overlap, all cases):");
    for (n, median) in summary {
        let verdict = if n > 1000 || median <= Duration::from_millis(2) {
            ""
        } else {
            " (budget 2 ms MISSED)"
        };
        println!("  {n:>6} succeeded tasks: {}{verdict}", ms(median));
    }
}

/// One repository of `n` tasks: the cold prediction, then the cases;
/// returns the median per success over every case's rounds.
fn one_size(n: usize, files: usize, rounds: usize, overlap: usize) -> Duration {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    make_repo(&repo, files);
    let all = tasks(&repo, n, files);
    let log = LandLog::default();

    let mut p = Predictor::open(&repo, "main").unwrap();
    let start = Instant::now();
    let first = p.predict(&all, &log).unwrap();
    let cold = start.elapsed();
    let conflicts = first.tasks.iter().filter(|(_, c)| c.is_some()).count();

    let every = 100usize.checked_div(overlap.min(100)).unwrap_or(usize::MAX);
    let overlapping = (0..n).rev().find(|i| *i > 0 && i % every == every - 1);
    println!(
        "conflict prediction, {n} succeeded tasks ({overlap}% overlap), {files} files in the repository:"
    );
    println!(
        "  first prediction (all {n} applied): {} ({conflicts} conflicts)",
        ms(cold)
    );
    let mut cases = vec![
        ("the last in landing order", n - 1),
        ("one in the middle", n / 2),
    ];
    if let Some(k) = overlapping {
        cases.push(("one that overlaps another", k));
    }
    let mut every_round = Vec::new();
    for (what, k) in cases {
        let (times, applied) = per_success(&mut p, &all, k, rounds);
        println!(
            "  per success, {what} (t{k}; {applied} applied), {rounds} rounds: median {}, max {}",
            ms(times[times.len() / 2]),
            ms(*times.last().unwrap())
        );
        every_round.extend(times);
    }
    every_round.sort();
    every_round[every_round.len() / 2]
}
