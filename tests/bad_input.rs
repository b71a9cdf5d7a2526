//! Bad input exits 2, names the file, line and field, and changes nothing.

mod support;

use serde_json::json;
use support::*;

fn assert_refused(p: &TestProject, args: &[&str], expect: &[&str]) {
    let out = p.flocks(args);
    let t = text(&out);
    assert_eq!(code(&out), 2, "{t}");
    for e in expect {
        assert!(t.contains(e), "expected {e:?} in: {t}");
    }
    assert!(!p.path(".worktrees").exists(), "a worktree was created");
    assert_eq!(
        p.git(&["branch", "--list", "flocks/*"]),
        "",
        "a branch was created"
    );
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn malformed_task_lines() {
    let p = TestProject::new("");
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\": \"b\", \n",
    )
    .unwrap();
    assert_refused(&p, &["run"], &["tasks.jsonl:2", "not valid JSON"]);
    std::fs::write(p.path("tasks.jsonl"), "{\"prompt\":\"x\"}\n").unwrap();
    assert_refused(&p, &["run"], &["tasks.jsonl:1", "field `id`", "missing"]);
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}\n",
    )
    .unwrap();
    assert_refused(&p, &["run"], &["tasks.jsonl:2", "duplicate id `a`"]);
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"../../etc\",\"prompt\":\"x\"}\n",
    )
    .unwrap();
    assert_refused(&p, &["run"], &["tasks.jsonl:1", "field `id`"]);
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\",\"branch\":\"bad..name\"}\n",
    )
    .unwrap();
    assert_refused(&p, &["run"], &["tasks.jsonl:1", "field `branch`"]);
    std::fs::write(p.path("tasks.jsonl"), "{\"id\":\"a\",\"prompt\":\"x\",\"depends_on\":[\"b\"]}\n{\"id\":\"b\",\"prompt\":\"x\",\"depends_on\":[\"a\"]}\n").unwrap();
    assert_refused(&p, &["run"], &["dependency cycle"]);
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\",\"depends_on\":[\"ghost\"]}\n",
    )
    .unwrap();
    assert_refused(&p, &["run"], &["tasks.jsonl:1", "unknown task `ghost`"]);
}

#[test]
fn bad_config() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    std::fs::write(p.path("flocks.toml"), "max_agents = 2\nmax_agentz = 3\n").unwrap();
    assert_refused(&p, &["run"], &["flocks.toml:2", "max_agentz"]);
    std::fs::write(p.path("flocks.toml"), "max_agents = \"two\"\n").unwrap();
    assert_refused(&p, &["run"], &["flocks.toml:1"]);
    std::fs::write(p.path("flocks.toml"), "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"x\"\nremote_dir = \"/r\"\n").unwrap();
    assert_refused(
        &p,
        &["run"],
        &[
            "flocks.toml:5",
            "`remote_dir` belongs to ssh, exedev and slurm pools",
        ],
    );
    // Clone mode's keys: on a pool of another backend, and bad values.
    for (text, said) in [
        (
            "[[containers]]\nname = \"s\"\nbackend = \"ssh\"\nhost = \"h\"\nmax_fetch_mb = 5\n",
            ["flocks.toml:5", "`max_fetch_mb` belongs to docker pools"],
        ),
        (
            "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"x\"\nworkspace = \"copy\"\n",
            ["flocks.toml:5", "containers.workspace"],
        ),
        (
            "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"x\"\nclone_dir = \"tmp\"\n",
            ["flocks.toml:5", "containers.clone_dir"],
        ),
        (
            "[[containers]]\nname = \"d\"\nbackend = \"docker\"\ncontainer = \"x\"\nmax_fetch_mb = 0\n",
            ["flocks.toml:5", "containers.max_fetch_mb"],
        ),
    ] {
        std::fs::write(p.path("flocks.toml"), text).unwrap();
        assert_refused(&p, &["run"], &said);
    }
    std::fs::write(
        p.path("flocks.toml"),
        "[[containers]]\nname = \"k\"\nbackend = \"kubernetes\"\n",
    )
    .unwrap();
    assert_refused(
        &p,
        &["run"],
        &["flocks.toml:3", "unknown backend `kubernetes`"],
    );
}

#[test]
fn missing_files() {
    let p = TestProject::new("");
    assert_refused(&p, &["run"], &["no task file", "tasks.jsonl"]);
    assert_refused(
        &p,
        &["run", "--tasks", "nope.jsonl"],
        &["no task file nope.jsonl", "given with --tasks"],
    );
    std::fs::remove_file(p.path("flocks.toml")).unwrap();
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    let out = p.cmd(&["run"]).current_dir(p.tmp.path()).output().unwrap();
    assert_eq!(code(&out), 2);
    assert!(
        text(&out).contains("no flocks.toml found"),
        "{}",
        text(&out)
    );
}

#[test]
fn corrupt_state_is_kept_as_it_was() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    std::fs::create_dir_all(p.path(".flocks")).unwrap();
    std::fs::write(
        p.path(".flocks/state.json"),
        "{\"format_version\": 1, \"tasks\": [ oops",
    )
    .unwrap();
    assert_refused(&p, &["run"], &["state.json", "left as it is"]);
    assert_eq!(
        std::fs::read_to_string(p.path(".flocks/state.json")).unwrap(),
        "{\"format_version\": 1, \"tasks\": [ oops"
    );
    let status = p.flocks(&["status"]);
    assert_eq!(code(&status), 2);
}

#[test]
fn an_existing_branch_is_not_taken_over() {
    let p = TestProject::new("");
    p.git(&["branch", "flocks/a"]);
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("tasks.jsonl:1") && text(&out).contains("already exists"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_missing_agent_command_stops_before_anything_runs() {
    let p = TestProject::new("[agent]\ncommand = \"claude-that-does-not-exist\"\n");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("not found on PATH"), "{}", text(&out));
    assert!(
        !p.path(".worktrees").exists() && !p.path(".flocks").exists(),
        "nothing is created"
    );
}
