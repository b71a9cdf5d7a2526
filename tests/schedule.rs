//! Issue 25: the start order from history (longest expected first), the
//! agents' `gc.auto=0`, and the repository upkeep flocks does itself.

mod support;

use serde_json::json;
use support::*;

fn start_order(rec: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(rec)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["env"]["FLOCKS_TASK"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn events(p: &TestProject, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == kind)
        .collect()
}

#[test]
fn with_history_the_longest_expected_task_starts_first() {
    let p = TestProject::new("max_agents = 1");
    let rec = p.out_file("order.jsonl");
    let r = rec.display();
    let task = |id: &str, secs: f64| json!({"id": id, "prompt": format!("@fake record {r}\n@fake sleep {secs}\n@fake commit {id}.txt")});
    p.tasks(&[task("short", 0.1), task("long", 3.0), task("middle", 1.5)]);
    let dry = p.flocks(&["run", "--dry-run"]);
    assert!(
        text(&dry).contains("start order: task order: no history"),
        "{}",
        text(&dry)
    );
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(start_order(&rec), ["short", "long", "middle"]);

    // The same tasks again: their first run is the history.
    let plan: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["run", "--dry-run", "--json"]).stdout).unwrap();
    assert_eq!(plan["start_order"]["kind"], "longest_expected_first");
    assert_eq!(plan["start_order"]["history_tasks"], 3);
    assert!(plan["tasks"][1]["expected_secs"].as_f64().unwrap() >= 3.0);
    std::fs::remove_file(&rec).unwrap();
    let out = p.flocks(&["retry", "--force", "short", "long", "middle"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("start order: longest expected first, from the history of 3 tasks"),
        "{}",
        text(&out)
    );
    // Longest first as measured (on a busy machine a short task's start
    // can take longer than its sleep says).
    let mut measured: Vec<(f64, String)> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["expected_secs"].as_f64().unwrap(),
                t["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    measured.sort_by(|a, b| b.0.total_cmp(&a.0));
    let longest_first: Vec<String> = measured.into_iter().map(|(_, id)| id).collect();
    assert_eq!(start_order(&rec), longest_first);
    assert_eq!(start_order(&rec)[0], "long");

    // A new task with the prompt of one that took long is expected to be as
    // long; one without history counts as the median.
    let mut tasks = vec![task("short", 0.1), task("long", 3.0), task("middle", 1.5)];
    tasks.push(json!({"id": "long-again", "prompt": tasks[1]["prompt"]}));
    tasks.push(json!({"id": "new", "prompt": "@fake commit new.txt"}));
    p.tasks(&tasks);
    let dry = text(&p.flocks(&["run", "--dry-run"]));
    assert!(
        dry.contains("start order: longest expected first, from the history of 4 tasks"),
        "{dry}"
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["run", "--dry-run", "--json"]).stdout).unwrap();
    let row = |id: &str| {
        plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    // Only the two new ones run: the long one's twin first.
    assert_eq!(row("long-again")["start"], 1);
    assert_eq!(row("new")["start"], 2);
    assert!(row("new")["expected_secs"].is_null());
    assert!(row("short")["start"].is_null());
}

#[test]
fn agents_run_with_gc_auto_0_and_flocks_gcs_by_the_users_threshold() {
    let p = TestProject::new("max_agents = 1");
    // The user's own setting stays in their config and is flocks' threshold;
    // agents run with 0. 3,000 new objects are past 100 (git's estimate
    // reads objects/17: about 12 there).
    p.git(&["config", "gc.auto", "100"]);
    p.tasks(&[json!({"id": "a", "prompt": fake_bash(
        "mkdir many && for i in $(seq 3000); do echo $i > many/$i; done && { git config gc.auto; git config maintenance.auto; git config flockstest.kept; } > seen.txt && git add . && git commit -qm seen"
    )})]);
    let out = p
        .cmd(&["run"])
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "flockstest.kept")
        .env("GIT_CONFIG_VALUE_0", "yes")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.git(&["show", "flocks/a:seen.txt"]), "0\nfalse\nyes");
    assert_eq!(p.git(&["config", "gc.auto"]), "100");
    let upkeep = events(&p, "upkeep");
    assert!(
        upkeep
            .iter()
            .any(|e| e["gc"] == true && e["loose_objects"].as_u64() > Some(100)),
        "{upkeep:?}"
    );
    let counts = p.git(&["count-objects", "-v"]);
    assert!(
        counts.contains("\ncount: 0\n") || counts.starts_with("count: 0\n"),
        "{counts}"
    );
}

#[test]
fn a_run_of_many_tasks_packs_the_repository_in_the_background() {
    let p = TestProject::new("max_agents = 4");
    let tasks: Vec<_> = (0..72)
        .map(|i| {
            json!({"id": format!("t{i}"), "prompt": format!(
                "@fake commit f{i}.txt {i}\n{}",
                fake_bash(&format!("git config gc.auto > /dev/null; test \"$(git config gc.auto)\" = 0 || touch {}", p.out_file("agent-saw-gc").display()))
            )})
        })
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!p.out_file("agent-saw-gc").exists());
    let upkeep = events(&p, "upkeep");
    assert!(
        upkeep.iter().any(|e| e["packed_refs"].as_u64() >= Some(64)),
        "{upkeep:?}"
    );
    assert!(upkeep.iter().all(|e| e["secs"].as_f64().is_some()));
    assert!(
        text(&out).contains("repository packed in the background"),
        "{}",
        text(&out)
    );
    // Every branch is there, packed or not.
    let branches = p.git(&["for-each-ref", "--format=%(refname)", "refs/heads/flocks/"]);
    assert_eq!(branches.lines().count(), 72);
    for i in [0, 35, 71] {
        assert_eq!(p.status_of(&format!("t{i}")), "success");
    }
}
