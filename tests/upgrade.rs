//! state.json across versions: a file written by flocks 0.1.0 (format 1) is
//! read, upgraded and landed from; a file from a newer flocks and a file that
//! cannot be read are refused with exit 2 and left exactly as they are.

mod support;

use std::path::Path;

use support::*;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/release-v1");

/// A project whose repository and state.json are the fixture's.
fn from_fixture() -> TestProject {
    let p = TestProject::new("max_retries = 1");
    let bundle = Path::new(FIXTURE).join("repo.bundle");
    p.git(&[
        "fetch",
        "-q",
        "--update-head-ok",
        &bundle.display().to_string(),
        "+refs/heads/*:refs/heads/*",
    ]);
    p.git(&["reset", "-q", "--hard", "main"]);
    let repo = p.repo.display().to_string();
    let state = std::fs::read_to_string(Path::new(FIXTURE).join("state.json")).unwrap();
    std::fs::create_dir_all(p.path(".flocks")).unwrap();
    std::fs::write(p.path(".flocks/state.json"), state.replace("@REPO@", &repo)).unwrap();
    let tasks = std::fs::read_to_string(Path::new(FIXTURE).join("tasks.jsonl")).unwrap();
    std::fs::write(
        p.path("tasks.jsonl"),
        tasks.replace("@OUT@", &p.out.display().to_string()),
    )
    .unwrap();
    p
}

#[test]
fn a_state_file_from_the_last_release_upgrades_and_lands() {
    let p = from_fixture();
    let base = p.git(&["rev-parse", "main"]);
    assert_eq!(p.state()["format_version"], 1);

    let status = p.flocks(&["status"]);
    assert_eq!(code(&status), 0, "{}", text(&status));
    assert!(text(&status).contains("2 succeeded"), "{}", text(&status));

    // Format 1 had no origin: the first attempt's start is the task's, so
    // both attempts' commits of two-tries land.
    let plan = p.flocks(&["land", "--dry-run", "--json"]);
    assert_eq!(code(&plan), 0, "{}", text(&plan));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let two = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "two-tries")
        .unwrap()
        .clone();
    assert_eq!(two["start"], base);
    let summaries: Vec<&str> = two["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, ["fake: attempt-1.txt", "fake: attempt-2.txt"]);

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut files: Vec<String> = p
        .git(&["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["README.md", "attempt-1.txt", "attempt-2.txt", "plain.txt"]
    );
    let log = p.git(&[
        "log",
        "--format=%s | %(trailers:key=Flocks-Task,valueonly,separator=)",
        "main",
    ]);
    assert_eq!(
        log.lines().map(str::trim_end).collect::<Vec<_>>(),
        [
            "fake: plain.txt | plain",
            "fake: attempt-2.txt | two-tries",
            "fake: attempt-1.txt | two-tries",
            "initial |",
        ]
    );
    // land reads state.json and never writes it.
    assert_eq!(p.state()["format_version"], 1);

    // The next run (the lock holder) writes it in the new format, with the
    // origins; what landed stays landed.
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        text(&out).contains("not run again: broken"),
        "{}",
        text(&out)
    );
    let state = p.state();
    assert_eq!(state["format_version"], 2);
    assert_eq!(p.task("two-tries")["origin"], base);
    assert_eq!(p.task("plain")["origin"], base);
    let tip = p.git(&["rev-parse", "main"]);
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.git(&["rev-parse", "main"]), tip, "{}", text(&out));
}

#[test]
fn a_state_file_from_a_newer_flocks_is_refused_and_kept() {
    let p = TestProject::new("");
    p.tasks(&[serde_json::json!({"id": "a", "prompt": "@fake commit a.txt"})]);
    std::fs::create_dir_all(p.path(".flocks")).unwrap();
    let newer = "{\"format_version\": 3, \"tasks\": [], \"something_new\": {\"x\": 1}}\n";
    std::fs::write(p.path(".flocks/state.json"), newer).unwrap();
    for args in [&["run"][..], &["status"], &["land", "-y"], &["retry", "a"]] {
        let out = p.flocks(args);
        let said = text(&out);
        assert_eq!(code(&out), 2, "{args:?}: {said}");
        assert!(said.contains("newer flocks (format 3"), "{args:?}: {said}");
        assert!(said.contains("left as it is"), "{args:?}: {said}");
        assert_eq!(
            std::fs::read_to_string(p.path(".flocks/state.json")).unwrap(),
            newer
        );
    }
    assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "flocks/a"]));
}

#[test]
fn a_state_file_that_is_not_utf8_is_refused_and_kept() {
    let p = TestProject::new("");
    p.tasks(&[serde_json::json!({"id": "a", "prompt": "@fake commit a.txt"})]);
    std::fs::create_dir_all(p.path(".flocks")).unwrap();
    let bytes = b"{\"format_version\": 2, \"tasks\": [{\"id\": \"\xff\xfe\"}]}".to_vec();
    std::fs::write(p.path(".flocks/state.json"), &bytes).unwrap();
    for args in [&["run"][..], &["status"], &["logs", "a"], &["land", "-y"]] {
        let out = p.flocks(args);
        let said = text(&out);
        assert_eq!(code(&out), 2, "{args:?}: {said}");
        assert!(said.contains("state.json"), "{args:?}: {said}");
        assert!(said.contains("not UTF-8"), "{args:?}: {said}");
        assert!(said.contains("left as it is"), "{args:?}: {said}");
        assert_eq!(std::fs::read(p.path(".flocks/state.json")).unwrap(), bytes);
    }
}
