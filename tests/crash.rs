//! kill -9 of the dispatcher at random points of a run: the rerun loses
//! nothing that was saved and runs nothing twice.
//!
//! Each seed runs 16 tasks (some depending on others) on 3 slots with the
//! fake agent, kills `flocks run` with SIGKILL after a seeded delay, reads
//! the state a reader sees then (state.json plus the journal), and reruns.
//! The agent logs every start to a file outside the repo and commits its
//! task's file only when an earlier attempt did not already (the work of an
//! attempt killed after its commit stays on the branch).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const TASKS: usize = 16;

/// xorshift64*: enough randomness for kill points, the same for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Task ids started in `log` (the fake agent's `record` lines), with counts;
/// and the agents' pids.
fn starts(log: &std::path::Path) -> (BTreeMap<String, usize>, Vec<i32>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = BTreeMap::new();
    let mut pids = Vec::new();
    for line in text.lines() {
        let Ok(rec) = serde_json::from_str::<Value>(line) else {
            continue; // the line an agent was writing when it was killed
        };
        let cwd = rec["cwd"].as_str().unwrap_or_default();
        let id = cwd.rsplit('/').next().unwrap_or_default().to_string();
        *counts.entry(id).or_insert(0) += 1;
        if let Some(pid) = rec["pid"].as_i64() {
            pids.push(pid as i32);
        }
    }
    (counts, pids)
}

fn succeeded(state: &Value) -> BTreeMap<String, String> {
    state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["status"]["outcome"]["kind"] == "success")
        .map(|t| {
            let tip = t["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .rev()
                .find(|a| a["outcome"]["kind"] == "success")
                .and_then(|a| a["end_tip"].as_str())
                .unwrap_or_default()
                .to_string();
            (t["id"].as_str().unwrap().to_string(), tip)
        })
        .collect()
}

/// A project with the seed's tasks, and the file their agents log starts to.
fn project(rng: &mut Rng) -> (TestProject, std::path::PathBuf) {
    let p = TestProject::new("max_agents = 3");
    let log = p.out_file("starts.jsonl");
    let tasks: Vec<Value> = (0..TASKS)
        .map(|i| {
            let id = format!("t{i:02}");
            let pause = 0.05 + rng.below(250) as f64 / 1000.0;
            let prompt = format!(
                "@fake record {}\n@fake sleep {pause}\n@fake unless-exists {id}.txt commit {id}.txt {id}",
                log.display()
            );
            // Every fourth task depends on the one before it.
            if i % 4 == 3 {
                json!({"id": id, "prompt": prompt, "depends_on": [format!("t{:02}", i - 1)]})
            } else {
                json!({"id": id, "prompt": prompt})
            }
        })
        .collect();
    p.tasks(&tasks);
    (p, log)
}

fn crash_and_rerun(seed: u64) {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut kill_after = Duration::from_millis(200 + rng.below(2500));
    // The kill must land mid-run: a run that finished first tests no crash,
    // so the seed starts over on a fresh project with an earlier kill.
    let mut tries = 0;
    let (p, log) = loop {
        tries += 1;
        let (p, log) = project(&mut rng);
        let mut run = p.spawn(&["run", "--no-progress"]);
        std::thread::sleep(kill_after);
        let finished_first = run.try_wait().unwrap().is_some();
        let _ = run.kill(); // SIGKILL
        run.wait().unwrap();
        if !finished_first {
            break (p, log);
        }
        assert!(
            tries < 6,
            "seed {seed}: the run finished before every kill point tried (last {kill_after:?})"
        );
        kill_after /= 2;
    };

    // The agents of the killed run stop (their supervisors see flocks gone).
    let (first_starts, pids) = starts(&log);
    wait_for(30, "the killed run's agents to stop", || {
        pids.iter().all(|&pid| !pid_alive(pid))
    });
    std::fs::rename(&log, p.out_file("starts-killed.jsonl")).ok();

    // What was saved when it died: a reader sees it, torn tail or not.
    let status = p.flocks(&["status", "--json"]);
    assert_eq!(code(&status), 0, "seed {seed}: {}", text(&status));
    let saved = if p.path(".flocks/state.json").exists() {
        succeeded(&p.state())
    } else {
        BTreeMap::new()
    };

    eprintln!(
        "seed {seed}: killed mid-run after {kill_after:?} (try {tries}), \
         {} task(s) saved as succeeded",
        saved.len()
    );
    let rerun = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&rerun), 0, "seed {seed}: {}", text(&rerun));
    let (second_starts, _) = starts(&log);
    let after = p.state();
    let done = succeeded(&after);
    let ids: BTreeSet<String> = (0..TASKS).map(|i| format!("t{i:02}")).collect();
    assert_eq!(
        done.keys().cloned().collect::<BTreeSet<_>>(),
        ids,
        "seed {seed}: every task succeeds"
    );
    for (id, tip) in &saved {
        // Nothing saved is lost: a saved success is not run again and keeps its tip.
        assert_eq!(
            second_starts.get(id),
            None,
            "seed {seed}: {id} succeeded before the kill and ran again"
        );
        assert_eq!(&done[id], tip, "seed {seed}: {id}'s tip changed");
    }
    for (id, n) in &second_starts {
        assert_eq!(*n, 1, "seed {seed}: {id} started {n} times in the rerun");
        assert!(
            !saved.contains_key(id),
            "seed {seed}: {id} was saved as succeeded"
        );
    }
    for t in after["tasks"].as_array().unwrap() {
        let id = t["id"].as_str().unwrap();
        let branch = t["branch"].as_str().unwrap();
        // The task's work is on its branch exactly once.
        let commits = p.git(&["rev-list", "--count", &format!("main..{branch}")]);
        if commits != "1" {
            let log = p.git(&["log", "--format=%h %s", &format!("main..{branch}")]);
            let killed =
                std::fs::read_to_string(p.out_file("starts-killed.jsonl")).unwrap_or_default();
            panic!(
                "seed {seed}: {id} has {commits} commits:\n{log}\nstate: {t:#}\nkilled run's starts:\n{killed}"
            );
        }
        let file = p.git(&["show", &format!("{branch}:{id}.txt")]);
        assert_eq!(file, *id, "seed {seed}");
    }
    // Every task ran at least once over both runs.
    for id in &ids {
        assert!(
            first_starts.contains_key(id) || second_starts.contains_key(id),
            "seed {seed}: {id} never started"
        );
    }
}

#[test]
fn kill_9_at_random_points_seeds_1_to_5() {
    (1..=5).for_each(crash_and_rerun);
}

#[test]
fn kill_9_at_random_points_seeds_6_to_10() {
    (6..=10).for_each(crash_and_rerun);
}

#[test]
fn kill_9_at_random_points_seeds_11_to_15() {
    (11..=15).for_each(crash_and_rerun);
}

#[test]
fn kill_9_at_random_points_seeds_16_to_20() {
    (16..=20).for_each(crash_and_rerun);
}
