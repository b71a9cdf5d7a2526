//! A night's run left alone (issue 18): the disk guard (`min_free_disk_gb`,
//! disk use in `status`, `clean --logs --older-than`, the spare pool's cap)
//! and the money guards (a task's and a credential's `max_cost_usd`, a
//! credential's `max_concurrent`, the ramp, `run --dry-run`'s worst case),
//! end to end with the fake agent reporting costs.

mod support;

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use support::*;

/// events.jsonl, one value per line.
fn events(p: &TestProject) -> Vec<Value> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn ts(e: &Value) -> DateTime<Utc> {
    e["ts"].as_str().unwrap().parse().unwrap()
}

const TOK_A: &str = "tok-A-0123456789abcdef";
const TOK_B: &str = "tok-B-0123456789abcdef";

/// Two credentials `a` and `b` (values [`TOK_A`], [`TOK_B`]) that the local pool
/// rotates through, each with `extra_a` / `extra_b` keys.
fn two_credentials(top: &str, extra_a: &str, extra_b: &str) -> TestProject {
    let mut p = TestProject::new(&format!(
        "{top}\n[[credentials]]\nname = \"a\"\nenv = \"TOKEN_A\"\n{extra_a}\n\n[[credentials]]\nname = \"b\"\nenv = \"TOKEN_B\"\n{extra_b}\n\n[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 8\ncredential = \"rotate\"\n"
    ));
    p.env.push(("TOKEN_A".into(), TOK_A.into()));
    p.env.push(("TOKEN_B".into(), TOK_B.into()));
    p
}

fn set_age(path: &std::path::Path, secs: u64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn a_task_is_not_retried_once_its_attempts_reach_its_max_cost() {
    let p = TestProject::new("max_agents = 1");
    p.tasks(&[
        json!({"id": "pricey", "prompt": "@fake cost 0.3\n@fake fail tests still fail", "max_cost_usd": 0.5}),
        json!({"id": "cheap", "prompt": "@fake commit c.txt\n@fake cost 0.2"}),
    ]);
    let out = p.flocks(&["run", "--supervise", "--max-retries", "5"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    // Two attempts ($0.60), not six.
    let t = p.task("pricey");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 2, "{t}");
    assert_eq!(p.status_of("pricey"), "failed");
    let why = t["not_retried"].as_str().unwrap();
    assert!(
        why.contains("$0.60") && why.contains("max_cost_usd = 0.5"),
        "{why}"
    );
    assert!(
        text(&out).contains("task pricey: not retried: its attempts have cost $0.60"),
        "{}",
        text(&out)
    );
    // The summary at the end of the run says it too.
    assert!(
        text(&out).contains(
            "; not retried: its attempts have cost $0.60, reaching its max_cost_usd = 0.5"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(p.status_of("cheap"), "success");
    // status and tasks say why it stopped.
    let st = text(&p.flocks(&["status"]));
    assert!(
        st.contains("not retried: its attempts have cost $0.60"),
        "{st}"
    );
    let tasks = text(&p.flocks(&["tasks"]));
    assert!(tasks.contains("not retried"), "{tasks}");
    // An explicit retry gives it another attempt, and clears the note.
    let out = p.flocks(&["retry", "pricey"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let t = p.task("pricey");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 3, "{t}");
}

#[test]
fn a_credential_at_its_max_cost_is_retired_and_its_work_moves() {
    let p = two_credentials(
        "max_agents = 1\ncredential_ramp_secs = 0",
        "max_cost_usd = 0.5",
        "",
    );
    let tasks: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("t{i}"), "prompt": format!("@fake commit f{i}.txt\n@fake cost 0.3")}))
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let ev = events(&p);
    let on: Vec<&str> = of_kind(&ev, "started")
        .iter()
        .map(|e| e["credential"].as_str().unwrap())
        .collect();
    // a runs until it has cost $0.60 (>= $0.50), then only b.
    let a_runs = on.iter().filter(|c| **c == "a").count();
    assert_eq!(a_runs, 2, "{on:?}");
    let disabled = of_kind(&ev, "credential_disabled");
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!(disabled[0]["credential"], "a");
    assert_eq!(disabled[0]["retired"], true);
    let reason = disabled[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("$0.60") && reason.contains("max_cost_usd = 0.5"),
        "{reason}"
    );
    let retired_at = ts(disabled[0]);
    for e in of_kind(&ev, "started") {
        if ts(e) > retired_at {
            assert_eq!(e["credential"], "b", "{e}");
        }
    }
    assert!(
        text(&out).contains(
            "⛔ credential a retired until the next run: it has cost $0.60 in this run, reaching its max_cost_usd = 0.5\n"
        ),
        "{}",
        text(&out)
    );
    // The next run tries it again, and says so.
    p.tasks(&[json!({"id": "t9", "prompt": "@fake commit g.txt\n@fake cost 0.1"})]);
    let out = p.flocks(&["run"]);
    assert!(
        text(&out).contains("credential a was disabled (it has cost $0.60"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_credential_runs_at_most_max_concurrent_agents() {
    let p = two_credentials("max_agents = 4", "max_concurrent = 1", "max_concurrent = 1");
    let tasks: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("t{i}"), "prompt": format!("@fake sleep 1\n@fake commit f{i}.txt")}))
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Along the events, never two agents at once on one credential.
    let ev = events(&p);
    let mut on_cred: std::collections::HashMap<String, String> = Default::default();
    let mut running: std::collections::HashMap<String, i32> = Default::default();
    let mut most = 0;
    for e in &ev {
        match e["event"].as_str().unwrap() {
            "started" => {
                let c = e["credential"].as_str().unwrap().to_string();
                on_cred.insert(e["task"].as_str().unwrap().into(), c.clone());
                let n = running.entry(c).or_default();
                *n += 1;
                most = most.max(*n);
            }
            "finished" => {
                let c = &on_cred[e["task"].as_str().unwrap()];
                *running.get_mut(c).unwrap() -= 1;
            }
            _ => {}
        }
    }
    assert_eq!(most, 1, "{ev:?}");
    assert_eq!(of_kind(&ev, "started").len(), 4);
}

#[test]
fn a_parked_credentials_work_moves_to_the_other_on_a_ramp() {
    let p = two_credentials("max_agents = 4\ncredential_ramp_secs = 2", "", "");
    let resets = Utc::now().timestamp() + 3600;
    // On a, the agent hits its usage limit at once; on b, it works a while.
    let tasks: Vec<Value> = (0..7)
        .map(|i| {
            json!({"id": format!("t{i}"), "prompt": format!(
                "@fake if-env FLOCKS_CREDENTIAL a usage-limit {resets}\n@fake sleep 5\n@fake commit f{i}.txt"
            )})
        })
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let ev = events(&p);
    let parked = of_kind(&ev, "credential_parked");
    assert!(
        !parked.is_empty() && parked.iter().all(|e| e["credential"] == "a"),
        "{parked:?}"
    );
    let since = ts(parked[0]);
    let mut after: Vec<f64> = of_kind(&ev, "started")
        .iter()
        .filter(|e| ts(e) >= since)
        .map(|e| {
            assert_eq!(e["credential"], "b", "{e}");
            (ts(e) - since).num_milliseconds() as f64 / 1000.0
        })
        .collect();
    after.sort_by(f64::total_cmp);
    // b ran 2 of the 4 slots (for 5 s); the 5 other tasks move to it on the
    // ramp: 1 more agent in the first 2 s, 2 more in the next, then 4 (slots
    // allowing). (The ramp starts a moment before the parked event is stamped.)
    assert_eq!(after.len(), 5, "{after:?}");
    let in_step = |from: f64, to: f64| after.iter().filter(|s| **s >= from && **s < to).count();
    assert!(in_step(-1.0, 1.8) <= 1, "{after:?}");
    assert!(in_step(-1.0, 3.8) <= 2, "{after:?}");
    assert!(
        after[1] >= 1.8,
        "the second start waited for the ramp's next step: {after:?}"
    );
}

#[test]
fn low_free_disk_stops_dispatch_and_space_coming_back_resumes_it() {
    let mut p = TestProject::new("max_agents = 2\nmin_free_disk_gb = 5");
    let free = p.out_file("free-gb");
    std::fs::write(&free, "1.5").unwrap();
    p.env.push((
        "FLOCKS_TEST_FREE_DISK_GB_FILE".into(),
        free.display().to_string(),
    ));
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt"}),
        json!({"id": "b", "prompt": "@fake commit b.txt"}),
    ]);
    let run = p.spawn(&["run", "--no-progress"]);
    wait_for(20, "the run to wait for disk space", || {
        of_kind(&events(&p), "waiting").iter().any(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("min_free_disk_gb"))
        })
    });
    // Waiting: nothing starts, and status and tasks say why.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(of_kind(&events(&p), "started").is_empty());
    let st: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    let why = st["waiting"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains("free disk space is 1.50 GB")
            && why.contains("below min_free_disk_gb = 5.00 GB"),
        "{st}"
    );
    assert!(text(&p.flocks(&["status"])).contains("⏸ waiting: free disk space is 1.50 GB"));
    assert!(text(&p.flocks(&["tasks"])).contains("⏸ waiting: free disk space"));
    // Space comes back: dispatch resumes on the next tick, and the run ends well.
    std::fs::write(&free, "20").unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("no new agent starts until space comes back"),
        "{t}"
    );
    assert!(t.contains("free disk space is back to 20.00 GB"), "{t}");
    assert_eq!(p.status_of("a"), "success");
    assert_eq!(p.status_of("b"), "success");
    // The waiting state ended with the run.
    let st: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    assert!(st["waiting"].is_null(), "{st}");
}

#[test]
fn status_shows_disk_use_and_free_space() {
    let p = TestProject::new("max_agents = 3\n[workspace]\nmax_spare_worktrees = 1\n");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt"}),
        json!({"id": "b", "prompt": "@fake commit b.txt"}),
        json!({"id": "c", "prompt": "@fake commit c.txt"}),
    ]);
    // Three tasks at once recycle three worktrees: with a cap of 1, one spare stays.
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let st: Value =
        serde_json::from_slice(&p.flocks(&["status", "--json", "--disk"]).stdout).unwrap();
    let d = &st["disk"];
    assert_eq!(d["complete"], true, "{d}");
    assert!(d["logs_bytes"].as_u64().unwrap() > 0, "{d}");
    assert!(d["free_bytes"].as_u64().unwrap() > 0, "{d}");
    assert!(
        d["total_bytes"].as_u64().unwrap() >= d["free_bytes"].as_u64().unwrap(),
        "{d}"
    );
    assert_eq!(d["spare_worktrees"], 1, "{d}");
    assert!(d["spare_worktrees_bytes"].as_u64().unwrap() > 0, "{d}");
    let spares = std::fs::read_dir(p.path(".worktrees/.spare"))
        .unwrap()
        .count();
    assert_eq!(spares, 1);
    let t = text(&p.flocks(&["status"]));
    assert!(
        t.contains("disk: worktrees") && t.contains("spare worktrees") && t.contains(" free of "),
        "{t}"
    );
}

#[test]
fn clean_logs_removes_old_logs_but_never_a_running_tasks() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let p = TestProject::new("max_agents = 2");
    p.tasks(&[
        json!({"id": "old", "prompt": "@fake commit o.txt"}),
        json!({"id": "new", "prompt": "@fake commit n.txt"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let old_log = p.path(".flocks/logs/old/1.log");
    let new_log = p.path(".flocks/logs/new/1.log");
    set_age(&old_log, 8 * 86400);
    std::fs::create_dir_all(p.path(".flocks/land-logs")).unwrap();
    let land_log = p.path(".flocks/land-logs/20260101T000000.000Z.log");
    std::fs::write(&land_log, "validation output\n").unwrap();
    set_age(&land_log, 8 * 86400);

    // A running task's old log stays.
    let pidfile = p.out_file("hang.pid");
    p.tasks(&[
        json!({"id": "slow", "prompt": format!("@fake orphan {}\n@fake hang", pidfile.display())}),
    ]);
    let run = p.spawn(&["run", "--no-progress"]);
    wait_for(20, "the slow agent to start", || pidfile.exists());
    let slow_log = p.path(".flocks/logs/slow/1.log");
    wait_for(10, "its log", || slow_log.exists());
    set_age(&slow_log, 8 * 86400);

    let out = p.flocks(&["clean", "--logs", "--older-than", "7d"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("Removed 1 attempt log file and 1 land log file older than"),
        "{t}"
    );
    assert!(t.contains("Kept the logs of running tasks: slow"), "{t}");
    assert!(!old_log.exists() && !p.path(".flocks/logs/old").exists());
    assert!(!land_log.exists());
    assert!(new_log.exists());
    assert!(slow_log.exists());
    // Worktrees and branches are not clean --logs' business.
    assert!(p.path(".worktrees").exists());
    assert!(p.git_ok(&["rev-parse", "--verify", "flocks/old"]));

    // Stop the run (drain, then stop its agent).
    let pid = Pid::from_raw(run.id() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill(pid, Signal::SIGINT).unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    wait_for(5, "the orphan to be gone", || {
        !pid_alive(read_pid(&pidfile))
    });
}

#[test]
fn clean_logs_needs_an_age_it_can_read() {
    let p = TestProject::new("");
    let out = p.flocks(&["clean", "--logs", "--older-than", "7x"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("`7x` is not a duration"),
        "{}",
        text(&out)
    );
    let out = p.flocks(&["clean", "--logs"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("--older-than"), "{}", text(&out));
}

#[test]
fn dry_run_prints_the_worst_case_spend() {
    let p = two_credentials("max_cost_usd = 20", "max_cost_usd = 4", "max_cost_usd = 5");
    p.tasks(&[
        json!({"id": "a", "prompt": "x", "max_cost_usd": 2}),
        json!({"id": "b", "prompt": "y", "max_cost_usd": 3}),
    ]);
    let out = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("spend: at most $5.00 before no new agent starts (the run's max_cost_usd $20.00, the tasks' max_cost_usd $5.00, the credentials' max_cost_usd $9.00)"),
        "{t}"
    );
    let out = p.flocks(&["run", "--dry-run", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spend"]["worst_case_usd"], 5.0, "{v}");
    assert_eq!(v["spend"]["credentials_max_cost_usd"], 9.0, "{v}");
}

#[test]
fn a_bad_task_max_cost_names_the_line_and_field() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "x"}),
        json!({"id": "b", "prompt": "y", "max_cost_usd": "lots"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains(
            "tasks.jsonl:2: field `max_cost_usd`: expected a number of dollars, found a string"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn a_run_whose_only_credential_is_spent_ends_as_over_budget() {
    let mut p = TestProject::new(
        "max_agents = 1\n[[credentials]]\nname = \"a\"\nenv = \"TOKEN_A\"\nmax_cost_usd = 0.5\n\n[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 1\ncredential = \"a\"\n",
    );
    p.env.push(("TOKEN_A".into(), TOK_A.into()));
    let tasks: Vec<Value> = (0..3)
        .map(|i| json!({"id": format!("t{i}"), "prompt": format!("@fake commit f{i}.txt\n@fake cost 0.3")}))
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        text(&out).contains("every credential the pools can use reached its max_cost_usd"),
        "{}",
        text(&out)
    );
    assert_eq!(p.status_of("t0"), "success");
    assert_eq!(p.status_of("t1"), "success");
    assert_eq!(p.status_of("t2"), "pending");
    let st = text(&p.flocks(&["status"]));
    assert!(
        st.contains("⛔ a") && st.contains("reaching its max_cost_usd = 0.5"),
        "{st}"
    );
}
