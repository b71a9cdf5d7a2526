//! Best of N: variants of one task run in parallel, validation (or a judge
//! agent) picks the winner, `land` brings the winner's work, `clean` removes
//! the losers.

mod support;

use serde_json::{Value, json};
use support::*;

/// A task whose three variants do different work (the fake agent reads
/// `FLOCKS_TASK`, `<id>@v<k>` for variant k): v1 commits `bad.txt`, which
/// validation refuses; v2 a 40-line file; v3 a 5-line file.
fn three_ways(p: &TestProject, extra: Value) {
    let mut task = json!({"id": "t", "best_of": 3, "prompt": "Add numbers.\n\
        @fake if-env FLOCKS_TASK t@v1 commit bad.txt nope\n\
        @fake if-env FLOCKS_TASK t@v2 bash 'seq 40 > b.txt && git add b.txt && git commit -qm forty'\n\
        @fake if-env FLOCKS_TASK t@v2 cost 0.01\n\
        @fake if-env FLOCKS_TASK t@v3 bash 'seq 5 > c.txt && git add c.txt && git commit -qm five'\n\
        @fake if-env FLOCKS_TASK t@v3 cost 0.02\n"});
    if let (Some(t), Value::Object(more)) = (task.as_object_mut(), extra) {
        t.extend(more);
    }
    p.tasks(&[task]);
}

const VALIDATE: &str = "[validate]\ncommands = [\"test ! -e bad.txt\"]\n\n\
    [[containers]]\nname = \"local\"\nmax_worktrees = 3\n";

fn events(p: &TestProject) -> Vec<Value> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn judged(p: &TestProject) -> Value {
    events(p)
        .into_iter()
        .rfind(|e| e["event"] == "variant_judged")
        .expect("a variant_judged event")
}

#[test]
fn validation_then_the_smallest_change_wins_and_lands() {
    let p = TestProject::new(VALIDATE);
    three_ways(&p, json!({}));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("t"), "success");
    let t = p.task("t");
    let j = &t["best_of"]["judgement"];
    assert_eq!(j["winner"], 3, "{t:#}");
    assert_eq!(j["by"], "ranking");
    let ranking: Vec<(u64, &str)> = j["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["variant"].as_u64().unwrap(), v["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ranking,
        [(3, "winner"), (2, "passed"), (1, "failed_validation")]
    );
    let e = judged(&p);
    assert_eq!(e["task"], "t");
    assert_eq!(e["winner"], 3);
    assert_eq!(e["ranking"][0]["lines"], 5);
    // Every variant ran on a branch of its own, beside the task's.
    for k in 1..=3 {
        assert!(p.git_ok(&["rev-parse", "--verify", &format!("refs/heads/flocks/t@v{k}")]));
    }
    // The task's branch is the winner's work.
    assert_eq!(
        p.git(&["rev-parse", "flocks/t"]),
        p.git(&["rev-parse", "flocks/t@v3"])
    );

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let files = p.git(&["ls-tree", "--name-only", "main"]);
    assert!(files.contains("c.txt"), "{files}");
    assert!(!files.contains("b.txt") && !files.contains("bad.txt"), "{files}");
    assert_eq!(p.git(&["show", "main:c.txt"]), "1\n2\n3\n4\n5");
    // The losers are kept until `clean`.
    assert!(p.git_ok(&["rev-parse", "--verify", "refs/heads/flocks/t@v2"]));
    let out = p.flocks(&["clean"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for k in 1..=3 {
        assert!(
            !p.git_ok(&["rev-parse", "--verify", &format!("refs/heads/flocks/t@v{k}")]),
            "variant {k}'s branch is gone after clean: {}",
            text(&out)
        );
        assert!(!p.path(&format!(".worktrees/t@v{k}")).exists());
    }
}

#[test]
fn status_and_tasks_show_the_variants_and_the_judgement() {
    let p = TestProject::new(VALIDATE);
    three_ways(&p, json!({}));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run = text(&out);
    assert!(run.contains("t: variant 3 wins (ranking)"), "{run}");
    let status = text(&p.flocks(&["status"]));
    assert!(status.contains("v3 won (ranking): passed with the smallest change"), "{status}");
    assert!(status.contains("flocks/t@v1") && status.contains("failed validation"), "{status}");
    let json: Value = serde_json::from_str(&text(&p.flocks(&["status", "--json"]))).unwrap();
    let t = &json["tasks"][0];
    assert_eq!(t["judgement"]["winner"], 3);
    let v: Vec<&str> = t["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(v, ["failed_validation", "passed", "winner"]);
    assert_eq!(t["attempts"], 3);
    let tasks = text(&p.flocks(&["tasks"]));
    assert!(tasks.contains("v3 won (ranking)"), "{tasks}");
    let json: Value = serde_json::from_str(&text(&p.flocks(&["tasks", "--json"]))).unwrap();
    assert_eq!(json["tasks"][0]["judgement"]["by"], "ranking");
    assert_eq!(json["tasks"][0]["variants"][2]["verdict"], "winner");
}
