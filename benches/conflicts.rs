//! Conflict prediction benchmark: the check a run makes at each success, on
//! a chain of N succeeded tasks (issue 17: under 50 ms at N = 200).
//!
//!     cargo bench --bench conflicts            # N=200, F=2000 files
//!     N=1000 F=5000 cargo bench --bench conflicts
//!
//! Builds a repository of F files and N task branches, each with one commit
//! changing a file of its own (every tenth also one that the task before it
//! changed: those conflict). Then, with one predictor as a run keeps it:
//! the first prediction (the whole chain), and, R times, the prediction after
//! one more task succeeded (the chain of N-1 reused, the new task applied);
//! and the worst case, the first task in landing order succeeding last (the
//! whole chain applied again).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[expect(
    dead_code,
    reason = "the agent and project helpers serve the run benchmarks"
)]
mod common;
use common::{env_usize, make_repo, run};

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
    let mut stream = String::new();
    for i in 0..n {
        let file = format!("src/m{:02}/f{}.rs", i % 50, (i * 7) % files.max(1));
        let mut body = format!("pub fn t{i}() {{}}\n");
        let mut extra = String::new();
        if i % 10 == 9 {
            // Clashes with the task before it: both write shared{i}.rs.
            extra = format!(
                "M 100644 inline src/shared{}.rs\ndata {}\n{}\n",
                i - 1,
                "mine\n".len(),
                "mine"
            );
        }
        if i % 10 == 8 {
            body.push_str("// and a shared file\n");
            extra = format!(
                "M 100644 inline src/shared{i}.rs\ndata {}\n{}\n",
                "theirs\n".len(),
                "theirs"
            );
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
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let n = env_usize("N", 200).max(2);
    let files = env_usize("F", 2000);
    let rounds = env_usize("R", 20).max(1);
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    make_repo(&repo, files);
    let all = tasks(&repo, n, files);
    // The same state, the last task not yet succeeded.
    let mut before = all.clone();
    if let Some(last) = before.tasks.last_mut() {
        last.status = TaskStatus::Pending;
    }
    let log = LandLog::default();

    let mut p = Predictor::open(&repo, "main").unwrap();
    let start = Instant::now();
    let first = p.predict(&before, &log).unwrap();
    let cold = start.elapsed();
    let conflicts = first.tasks.iter().filter(|(_, c)| c.is_some()).count();

    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let one = p.predict(&all, &log).unwrap();
        times.push(start.elapsed());
        assert_eq!(one.applied, 1, "only the new task is applied");
        // Back to N-1 succeeded (nothing applied) for the next round.
        assert_eq!(p.predict(&before, &log).unwrap().applied, 0);
    }
    // The worst case: the first task in landing order succeeds last, so
    // every task after it is applied again.
    let mut first_last = all.clone();
    first_last.tasks[0].status = TaskStatus::Pending;
    p.predict(&first_last, &log).unwrap();
    let start = Instant::now();
    let whole = p.predict(&all, &log).unwrap();
    let worst = start.elapsed();
    assert_eq!(whole.applied, n);

    times.sort();
    let median = times[times.len() / 2];
    let max = *times.last().unwrap();
    println!("conflict prediction, {n} succeeded tasks, {files} files in the repository:");
    println!(
        "  first prediction (chain of {} built): {} ({conflicts} conflicts)",
        n - 1,
        ms(cold)
    );
    println!(
        "  per success (chain reused, 1 task applied), {rounds} rounds: median {}, max {}",
        ms(median),
        ms(max)
    );
    println!(
        "  worst case (the first task in landing order succeeds last: {n} applied): {}",
        ms(worst)
    );
    let budget = Duration::from_millis(50);
    println!(
        "  budget 50 ms per success: {}",
        if median < budget { "met" } else { "MISSED" }
    );
}
