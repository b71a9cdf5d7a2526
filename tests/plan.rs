//! Planning and waves: `start_from = "dependencies"`, `flocks plan`, `sail`,
//! `tasks` and `init`, end to end with the fake agent.

mod support;

use serde_json::json;
use support::*;

/// How many commits on `rev` carry `Flocks-Task: <id>`.
fn landed_count(p: &TestProject, rev: &str, id: &str) -> usize {
    p.git(&["log", rev, "--format=%B%x00"])
        .split('\0')
        .filter(|m| m.lines().any(|l| l.trim() == format!("Flocks-Task: {id}")))
        .count()
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_string)
        .collect()
}

fn ls(p: &TestProject, id: &str) -> String {
    format!("@fake ls {}", p.out_file(&format!("{id}.ls")).display())
}

#[test]
fn a_chain_starts_each_task_from_its_dependencies_work_and_lands_each_once() {
    let p = TestProject::new("max_agents = 2");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt A"}),
        json!({"id": "b", "prompt": format!("{}\n@fake commit b.txt B", ls(&p, "b")),
               "depends_on": ["a"], "start_from": "dependencies"}),
        json!({"id": "c", "prompt": format!("{}\n@fake commit c.txt C", ls(&p, "c")),
               "depends_on": ["b"], "start_from": "dependencies"}),
        // Without start_from, a dependent starts from the base as before.
        json!({"id": "plain", "prompt": format!("{}\n@fake commit plain.txt P", ls(&p, "plain")),
               "depends_on": ["a"]}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    let b = lines(&p.out_file("b.ls"));
    assert!(b.contains(&"a.txt".to_string()), "{b:?}");
    let c = lines(&p.out_file("c.ls"));
    assert!(
        c.contains(&"a.txt".to_string()) && c.contains(&"b.txt".to_string()),
        "{c:?}"
    );
    let plain = lines(&p.out_file("plain.ls"));
    assert!(!plain.contains(&"a.txt".to_string()), "{plain:?}");

    // The recorded start is the synthesized commit: c's range is c's own work.
    let start = p.task("c")["attempts"][0]["start_commit"]
        .as_str()
        .unwrap()
        .to_string();
    let tip = p.task("c")["attempts"][0]["end_tip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        p.git(&["log", "--format=%s", &format!("{start}..{tip}")]),
        "fake: c.txt"
    );
    assert_eq!(p.git(&["show", &format!("{start}:b.txt")]), "B");
    // Building it touched no checkout.
    assert_eq!(p.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "main");

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for id in ["a", "b", "c", "plain"] {
        assert_eq!(landed_count(&p, "main", id), 1, "{id}");
    }
    assert_eq!(p.git(&["rev-list", "--count", "main"]), "5");
    for f in ["a.txt", "b.txt", "c.txt", "plain.txt"] {
        assert!(p.git_ok(&["cat-file", "-e", &format!("main:{f}")]), "{f}");
    }
}

#[test]
fn a_diamond_gives_the_join_both_branches_and_lands_each_once() {
    let p = TestProject::new("max_agents = 3");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt A"}),
        json!({"id": "b", "prompt": "@fake commit b.txt B", "depends_on": ["a"],
               "start_from": "dependencies"}),
        json!({"id": "c", "prompt": "@fake commit c.txt C", "depends_on": ["a"],
               "start_from": "dependencies"}),
        json!({"id": "d", "prompt": format!("{}\n@fake commit d.txt D", ls(&p, "d")),
               "depends_on": ["b", "c"], "start_from": "dependencies"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let d = lines(&p.out_file("d.ls"));
    for f in ["a.txt", "b.txt", "c.txt"] {
        assert!(d.contains(&f.to_string()), "{f} in {d:?}");
    }
    // a's work is in d's start once, not once per path through the diamond.
    let start = p.task("d")["attempts"][0]["start_commit"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(p.git(&["rev-list", "--count", &start]), "4");

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for id in ["a", "b", "c", "d"] {
        assert_eq!(landed_count(&p, "main", id), 1, "{id}");
    }
    assert_eq!(p.git(&["rev-list", "--count", "main"]), "5");
}

#[test]
fn conflicting_dependencies_block_the_dependent_with_the_reason() {
    let p = TestProject::new("max_agents = 2");
    p.tasks(&[
        json!({"id": "b", "prompt": "@fake commit shared.txt from-b"}),
        json!({"id": "c", "prompt": "@fake commit shared.txt from-c"}),
        json!({"id": "d", "prompt": format!("{}\n@fake commit d.txt D", ls(&p, "d")),
               "depends_on": ["b", "c"], "start_from": "dependencies"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("conflicts in shared.txt"), "{t}");
    assert_eq!(p.status_of("d"), "blocked");
    let reason = p.task("d")["status"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("`c`") && reason.contains("`b`"), "{reason}");
    assert!(p.task("d")["attempts"].as_array().unwrap().is_empty());
    assert!(!p.out_file("d.ls").exists(), "the agent never started");
    assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "refs/heads/flocks/d"]));
    let status = text(&p.flocks(&["status"]));
    assert!(status.contains("conflicts in shared.txt"), "{status}");

    // Once the conflict is resolved (c redone without touching shared.txt),
    // the next run starts d from both.
    p.tasks(&[
        json!({"id": "b", "prompt": "@fake commit shared.txt from-b"}),
        json!({"id": "c", "prompt": "@fake commit other.txt from-c"}),
        json!({"id": "d", "prompt": format!("{}\n@fake commit d.txt D", ls(&p, "d")),
               "depends_on": ["b", "c"], "start_from": "dependencies"}),
    ]);
    let out = p.flocks(&["retry", "c", "--force", "--fresh"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let d = lines(&p.out_file("d.ls"));
    assert!(d.contains(&"other.txt".to_string()), "{d:?}");
}

#[test]
fn start_from_values_are_checked_with_the_line() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "x"}),
        json!({"id": "b", "prompt": "y", "depends_on": ["a"], "start_from": "deps"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("tasks.jsonl:2: field `start_from`: unknown value `deps`"),
        "{}",
        text(&out)
    );
}
