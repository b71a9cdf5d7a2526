//! The second day (issue 27): what a user meets after the first hour. Typos
//! are caught, counts and words are right, what `status` shows is true.

mod support;

use serde_json::json;
use support::*;

/// Exit 2 with every one of `expect` in the output, and nothing run.
fn refused(p: &TestProject, args: &[&str], expect: &[&str]) -> String {
    let attempts = p.path(".flocks/state.json").exists().then(|| p.state());
    let out = p.flocks(args);
    let t = text(&out);
    assert_eq!(code(&out), 2, "{t}");
    for e in expect {
        assert!(t.contains(e), "expected {e:?} in: {t}");
    }
    assert!(!t.contains("panicked"), "{t}");
    match attempts {
        None => assert!(
            !p.path(".worktrees").exists(),
            "a worktree was created: {t}"
        ),
        Some(before) => assert_eq!(before, p.state(), "the state changed: {t}"),
    }
    t
}

// ---- 5: typos are caught ----

#[test]
fn an_unknown_task_field_is_an_error_with_the_near_name() {
    let p = TestProject::new("");
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\",\"expect_commit\":false}\n",
    )
    .unwrap();
    for args in [&["run", "--dry-run"][..], &["run"], &["tasks"]] {
        refused(
            &p,
            args,
            &[
                "tasks.jsonl:2: field `expect_commit`: unknown field",
                "did you mean `expect_commits`?",
            ],
        );
    }
    // A required field with a near typo says so, rather than "missing".
    std::fs::write(p.path("tasks.jsonl"), "{\"id\":\"a\",\"promt\":\"x\"}\n").unwrap();
    refused(
        &p,
        &["run", "--dry-run"],
        &["tasks.jsonl:1: field `promt`", "did you mean `prompt`?"],
    );
    // Far from any known name: what a task line takes, and where free fields go.
    std::fs::write(
        p.path("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\",\"team\":\"core\"}\n",
    )
    .unwrap();
    refused(
        &p,
        &["run", "--dry-run"],
        &[
            "tasks.jsonl:1: field `team`: unknown field",
            "\"vars\"",
            "{{task.team}}",
        ],
    );
    assert!(!p.path(".flocks/state.json").exists());
}

#[test]
fn template_fields_come_from_vars_or_from_the_template_itself() {
    let p = TestProject::new("[prompt]\ntemplate = \"prompt.md\"\n");
    std::fs::write(
        p.path("prompt.md"),
        "Team {{task.team}}, area {{task.area}}.\n{{prompt}}\n",
    )
    .unwrap();
    // `team` is named by the template (a task file of before still works);
    // `area` comes from `vars`.
    p.tasks(&[json!({
        "id": "a",
        "prompt": "@fake print-prompt",
        "expect_commits": false,
        "team": "core",
        "vars": {"area": "auth", "ticket": 42}
    })]);
    let out = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let log = std::fs::read_to_string(p.path(".flocks/logs/a/1.log")).unwrap();
    assert!(log.contains("Team core, area auth."), "{log}");
    // A typo of a template field is caught with the name the template uses.
    p.tasks(&[json!({"id": "a", "prompt": "x", "teem": "core", "vars": {"area": "auth"}})]);
    refused(
        &p,
        &["run", "--dry-run"],
        &["field `teem`: unknown field", "did you mean `team`?"],
    );
    // `vars` is an object of fields, none of them a task field.
    p.tasks(&[json!({"id": "a", "prompt": "x", "team": "c", "vars": ["area"]})]);
    refused(
        &p,
        &["run", "--dry-run"],
        &["field `vars`: expected an object"],
    );
    p.tasks(&[json!({"id": "a", "prompt": "x", "team": "c", "vars": {"area": "a", "title": "t"}})]);
    refused(
        &p,
        &["run", "--dry-run"],
        &["field `vars.title`", "task field"],
    );
}

#[test]
fn a_flocks_toml_typo_names_the_near_key() {
    let p = TestProject::new("max_agent = 2\n");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    let t = refused(
        &p,
        &["run", "--dry-run"],
        &[
            "flocks.toml:3: field `max_agent`: unknown key",
            "did you mean `max_agents`?",
        ],
    );
    assert!(
        !t.contains("stagger_delay_secs"),
        "no list of every key: {t}"
    );
    // Far from every key: the keys of that table are listed.
    p.config("[validate]\nwhatever = 1\n");
    refused(
        &p,
        &["run", "--dry-run"],
        &[
            "field `validate.whatever`: unknown key: the keys here are",
            "`commands`",
        ],
    );
}

#[test]
fn a_subcommand_typo_names_the_near_command() {
    let p = TestProject::new("");
    let out = p.flocks(&["lnad", "-y"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("'land'"), "{}", text(&out));
    let out = p.flocks(&["frget", "x"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("'forget'"), "{}", text(&out));
}

// ---- 4 and 9: a second run names the live one; `flocks stop` ends it with 0 ----

#[test]
fn a_second_run_names_the_live_one_and_stop_ends_it_with_exit_0() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "slow", "prompt": "@fake sleep 60"})]);
    let first = p.spawn(&["run", "--no-progress"]);
    wait_for(30, "the agent to start", || {
        p.path(".flocks/state.json").exists() && p.status_of("slow") == "running"
    });
    let run = p.state()["run"].clone();
    let out = p.flocks(&["run"]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    let expect = format!(
        "`flocks run` (pid {}, started ",
        run["pid"].as_u64().unwrap()
    );
    let at = t
        .find(&expect)
        .unwrap_or_else(|| panic!("{expect:?} in: {t}"));
    // started HH:MM (today), then the run's id.
    let rest = &t[at + expect.len()..];
    let clock: Vec<char> = rest.chars().take(5).collect();
    assert!(
        clock[..2].iter().all(char::is_ascii_digit)
            && clock[2] == ':'
            && clock[3..].iter().all(char::is_ascii_digit),
        "{t}"
    );
    assert!(
        rest[5..].starts_with(&format!(
            ", run {}) is running in this project; `flocks stop` asks it to stop",
            run["id"].as_str().unwrap()
        )),
        "{t}"
    );
    assert!(!t.contains("may have been removed"), "{t}");

    let out = p.flocks(&["stop"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = first.wait_with_output().unwrap();
    assert_eq!(
        code(&out),
        0,
        "a stop asked for is no failure: {}",
        text(&out)
    );
    assert_eq!(p.status_of("slow"), "interrupted");
}

// ---- 6: counts count tasks; every plural right ----

/// Nothing of what flocks prints says "(s)", "1 turns", "1 attempts", ...
fn assert_plurals_right(t: &str) {
    assert!(!t.contains("(s)"), "a plural left to the reader: {t}");
    for wrong in [
        "1 turns",
        "1 lines",
        "1 attempts",
        "1 tasks",
        "1 commits",
        "1 agents",
        "1 files",
        "1 variants",
        "1 runs",
    ] {
        for at in t.match_indices(wrong).map(|(i, _)| i) {
            let before = t[..at].chars().next_back();
            assert!(
                before.is_some_and(|c| c.is_ascii_digit() || c == '.'),
                "{wrong:?} in: {t}"
            );
        }
    }
}

#[test]
fn counts_count_tasks_and_plurals_are_right() {
    let p = TestProject::new("[[containers]]\nname = \"local\"\nmax_worktrees = 3\n");
    p.tasks(&[
        json!({"id": "one", "prompt": "@fake commit one.txt"}),
        json!({"id": "three-ways", "best_of": 3, "prompt": "@fake commit t.txt"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains("2 of 2 tasks to run (3 variants of 1 task) on local"),
        "{t}"
    );
    assert!(t.contains("1 turn · "), "{t}");
    assert!(t.contains("1 attempt"), "{t}");
    assert_plurals_right(&t);
    let out = p.flocks(&["status"]);
    assert_plurals_right(&text(&out));
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_plurals_right(&text(&out));
    let out = p.flocks(&["clean"]);
    assert_plurals_right(&text(&out));
    for args in [&["--help"][..], &["help", "land"], &["tasks"]] {
        assert_plurals_right(&text(&p.flocks(args)));
    }
}

#[test]
fn an_empty_task_file_is_an_error() {
    let p = TestProject::new("");
    for content in ["", "\n\n   \n"] {
        std::fs::write(p.path("tasks.jsonl"), content).unwrap();
        for args in [&["run"][..], &["run", "--dry-run"]] {
            refused(&p, args, &["tasks.jsonl", "holds no task"]);
        }
    }
    assert!(!p.path(".flocks/state.json").exists());
}

#[test]
fn a_retry_says_which_cost_is_this_runs_and_a_landed_task_is_landed() {
    let p = TestProject::new("");
    let flag = p.out_file("failed-once");
    p.tasks(&[
        json!({"id": "a", "prompt": format!("@fake cost 0.5\n@fake fail-once {}\n@fake commit a.txt", flag.display())}),
        json!({"id": "b", "prompt": "@fake cost 0.25\n@fake commit b.txt"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out = p.flocks(&["retry", "a", "--no-progress"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    // $0.50 this run; $1.00 with the failed attempt of the run before.
    assert!(
        t.contains("$0.50 this run · $1.00 in all for this task"),
        "{t}"
    );
    assert_plurals_right(&t);

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["retry", "b"]);
    let t = text(&out);
    assert_eq!(code(&out), 2, "{t}");
    assert!(t.contains("task `b` has landed on main"), "{t}");
    assert!(!t.contains("is succeeded"), "{t}");
}

// ---- 3: clean keeps what land and land --undo need ----

#[test]
fn a_cleaned_no_commit_task_is_no_reason_for_land_to_refuse() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "review", "prompt": "@fake text looks fine", "expect_commits": false}),
        json!({"id": "fix", "prompt": "@fake commit fix.txt"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // A second land moves main again: the first one's branches are no
    // longer what `land --undo` needs first.
    p.tasks(&[
        json!({"id": "review", "prompt": "@fake text looks fine", "expect_commits": false}),
        json!({"id": "fix", "prompt": "@fake commit fix.txt"}),
        json!({"id": "more", "prompt": "@fake commit more.txt"}),
    ]);
    assert_eq!(code(&p.flocks(&["run", "--no-progress"])), 0);
    assert_eq!(code(&p.flocks(&["land", "-y"])), 0);
    let out = p.flocks(&["clean"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        !p.git_ok(&["rev-parse", "--verify", "flocks/review"]),
        "{}",
        text(&out)
    );
    for args in [&["land", "--dry-run"][..], &["land", "-y"]] {
        let out = p.flocks(args);
        let t = text(&out);
        assert_eq!(code(&out), 0, "{t}");
        assert!(!t.contains("refused"), "{t}");
        assert!(!t.contains("no longer exists"), "{t}");
    }
}

#[test]
fn clean_keeps_what_undo_needs_and_undo_restores_or_refuses() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt"}),
        json!({"id": "b", "prompt": "@fake commit b.txt"}),
    ]);
    assert_eq!(code(&p.flocks(&["run", "--no-progress"])), 0);
    assert_eq!(code(&p.flocks(&["land", "-y"])), 0);
    let a_tip = p.git(&["rev-parse", "flocks/a"]);
    // Land, clean, undo, land again: no branch typed by hand.
    let out = p.flocks(&["clean"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(t.contains("Deleted branches: flocks/a, flocks/b"), "{t}");
    assert!(
        t.contains("Kept the tips of flocks/a, flocks/b under refs/flocks/cleaned/"),
        "{t}"
    );
    let out = p.flocks(&["land", "--undo", "--dry-run"]);
    assert!(
        text(&out).contains("and restore branch flocks/a at "),
        "{}",
        text(&out)
    );
    let out = p.flocks(&["land", "--undo", "-y"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains(&format!("restored branch flocks/a at {}", &a_tip[..10])),
        "{t}"
    );
    assert_eq!(p.git(&["rev-parse", "flocks/a"]), a_tip);
    assert!(
        !p.git_ok(&["rev-parse", "--verify", "refs/flocks/cleaned/flocks/a"]),
        "the branch holds it now"
    );
    let out = p.flocks(&["land", "-y"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains("a: 1 commit") && t.contains("b: 1 commit"),
        "{t}"
    );

    // Branches deleted by hand, their commits pruned: undo refuses, naming
    // what is missing, and moves nothing.
    let main_before = p.git(&["rev-parse", "main"]);
    p.git(&["branch", "-D", "flocks/a", "flocks/b"]);
    assert_eq!(code(&p.flocks(&["clean"])), 0);
    p.git(&["reflog", "expire", "--expire=now", "--all"]);
    p.git(&["gc", "-q", "--prune=now"]);
    assert!(
        !p.git_ok(&["cat-file", "-e", &a_tip]),
        "the test needs a_tip gone"
    );
    let out = p.flocks(&["land", "--undo", "-y"]);
    let t = text(&out);
    assert_eq!(code(&out), 4, "{t}");
    assert!(
        t.contains("flocks/a (task a) is gone, and so is its tip"),
        "{t}"
    );
    assert!(t.contains(&a_tip[..10]), "{t}");
    assert_eq!(p.git(&["rev-parse", "main"]), main_before, "nothing moved");
}

// ---- 2: tasks no longer in their task file are `removed` ----

fn json_status(p: &TestProject, id: &str) -> String {
    let out = p.flocks(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in status --json"))["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn removed_tasks_are_marked_left_out_of_land_and_forgotten() {
    let p = TestProject::new("");
    let task = |id: &str| json!({"id": id, "prompt": format!("@fake commit {id}.txt")});
    p.tasks(&[task("a"), task("b"), task("c")]);
    assert_eq!(code(&p.flocks(&["run", "--no-progress"])), 0);
    // b and c leave the file; d comes.
    p.tasks(&[task("a"), task("d")]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(json_status(&p, "b"), "removed");
    assert_eq!(json_status(&p, "a"), "succeeded");
    let out = p.flocks(&["status"]);
    let t = text(&out);
    assert!(t.contains("removed from their task file (2):"), "{t}");
    assert!(t.contains("flocks forget b c"), "{t}");
    let out = p.flocks(&["tasks", "--status", "removed", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b", "c"], "{v}");

    // Another task file leaves these tasks as they are.
    std::fs::write(p.path("more.jsonl"), format!("{}\n", task("e"))).unwrap();
    let out = p.flocks(&["run", "--tasks", "more.jsonl", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(json_status(&p, "a"), "succeeded");
    assert_eq!(json_status(&p, "e"), "succeeded");

    // land leaves them out unless named, and says so.
    let out = p.flocks(&["land", "-y"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains("left out 2 removed tasks (no longer in their task file): b, c; `flocks land b c` lands them"),
        "{t}"
    );
    let files = p.git(&["ls-tree", "--name-only", "main"]);
    assert!(
        files.contains("a.txt") && files.contains("e.txt"),
        "{files}"
    );
    assert!(
        !files.contains("b.txt") && !files.contains("c.txt"),
        "{files}"
    );
    let out = p.flocks(&["land", "b", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(p.git(&["ls-tree", "--name-only", "main"]).contains("b.txt"));

    // forget: only removed tasks; a branch with unlanded work needs --force.
    let out = p.flocks(&["forget", "a"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("task `a` is still in"),
        "{}",
        text(&out)
    );
    let out = p.flocks(&["forget", "zz"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    let out = p.flocks(&["forget", "--branches", "b", "c"]);
    let t = text(&out);
    assert_eq!(code(&out), 2, "{t}");
    assert!(
        t.contains("flocks/c holds 1 commit that has not landed"),
        "{t}"
    );
    assert!(t.contains("--force"), "{t}");
    assert_eq!(json_status(&p, "c"), "removed", "nothing changed: {t}");
    let out = p.flocks(&["forget", "--branches", "b"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(t.contains("forgot b"), "{t}");
    assert!(!p.git_ok(&["rev-parse", "--verify", "flocks/b"]), "{t}");
    let out = p.flocks(&["forget", "c"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        p.git_ok(&["rev-parse", "--verify", "flocks/c"]),
        "kept without --branches"
    );
    let ids: Vec<String> = p.state()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["a", "d", "e"]);
    // The rest still works.
    assert_eq!(code(&p.flocks(&["status"])), 0);
    assert_eq!(code(&p.flocks(&["run", "--no-progress"])), 0);
}

// ---- 7: one answer to "what is it doing now" ----

fn status_json(p: &TestProject) -> serde_json::Value {
    let out = p.flocks(&["status", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn task_json(v: &serde_json::Value, id: &str) -> serde_json::Value {
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no {id} in {v}"))
}

#[test]
fn status_says_what_the_agent_does_never_its_session_line() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "busy", "prompt": "@fake text Reading the code.\n@fake text step 3\n@fake sleep 60"})]);
    let run = p.spawn(&["run", "--no-progress"]);
    wait_for(30, "the agent's words", || {
        std::fs::read_to_string(p.path(".flocks/logs/busy/1.log"))
            .is_ok_and(|l| l.contains("step 3"))
    });
    let v = status_json(&p);
    assert_eq!(task_json(&v, "busy")["activity"], "step 3", "{v}");
    let out = p.flocks(&["status"]);
    let t = text(&out);
    assert!(t.contains("step 3"), "{t}");
    assert!(!t.contains("── session"), "{t}");
    assert!(!t.contains("starting"), "{t}");
    assert_eq!(code(&p.flocks(&["stop"])), 0);
    run.wait_with_output().unwrap();
}

#[test]
fn during_a_retry_what_it_will_not_start_is_not_pending() {
    let p = TestProject::new("max_agents = 1\n");
    let flag = p.out_file("a-failed");
    p.tasks(&[
        json!({"id": "a", "prompt": format!("@fake fail-once {}\n@fake sleep 60", flag.display())}),
        json!({"id": "b", "prompt": "@fake sleep 60"}),
        json!({"id": "c", "prompt": "@fake commit c.txt"}),
    ]);
    let run = p.spawn(&["run", "--no-progress"]);
    wait_for(30, "b to run", || {
        p.path(".flocks/state.json").exists() && p.status_of("b") == "running"
    });
    assert_eq!(code(&p.flocks(&["stop"])), 0);
    run.wait_with_output().unwrap();
    assert_eq!(p.status_of("b"), "interrupted");
    assert_eq!(p.status_of("c"), "pending");

    let retry = p.spawn(&["retry", "a", "--no-progress"]);
    wait_for(30, "a to run again", || {
        p.status_of("a") == "running" && p.task("a")["attempts"].as_array().unwrap().len() == 2
    });
    // The state keeps what they are; the views say this run does not start them.
    assert_eq!(p.status_of("b"), "interrupted");
    assert_eq!(p.status_of("c"), "pending");
    let v = status_json(&p);
    let b = task_json(&v, "b");
    assert_eq!(b["status"], "not queued", "{v}");
    assert!(
        b["detail"].as_str().unwrap().starts_with("interrupted; "),
        "{v}"
    );
    assert_eq!(task_json(&v, "c")["status"], "not queued", "{v}");
    let t = text(&p.flocks(&["status"]));
    assert!(t.contains("0 queued"), "{t}");
    let out = p.flocks(&["tasks", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(task_json(&tasks, "c")["status"], "not queued", "{tasks}");
    assert_eq!(code(&p.flocks(&["stop"])), 0);
    retry.wait_with_output().unwrap();
    // After the retry, they wait for the next run again.
    assert_eq!(json_status(&p, "c"), "pending");
    assert_eq!(json_status(&p, "b"), "interrupted");
}

// ---- 9: the small things ----

#[test]
fn the_man_pages_say_exit_status_and_name_only_pages_that_exist() {
    let p = TestProject::new("");
    let dir = tempfile::tempdir().unwrap();
    let mandir = dir.path().join("man1");
    let out = p.flocks(&["man", "--dir", mandir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let main = std::fs::read_to_string(mandir.join("flocks.1")).unwrap();
    // Every flocks-<command>(1) the page names was written.
    let mut named = 0;
    for part in main.split("flocks\\-").skip(1) {
        if let Some((name, _)) = part.split_once("(1)") {
            named += 1;
            assert!(
                mandir.join(format!("flocks-{name}.1")).is_file(),
                "flocks-{name}(1) is named but not written"
            );
        }
    }
    assert!(named > 10, "{main}");
    for page in ["flocks.1", "flocks-land.1", "flocks-run.1"] {
        let text = std::fs::read_to_string(mandir.join(page)).unwrap();
        assert!(text.contains(".SH \"EXIT STATUS\""), "{page}: {text}");
        assert!(text.contains("130"), "{page}");
    }
    let manual = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/src/getting-started.md"),
    )
    .unwrap();
    assert!(
        manual.contains("MANPATH"),
        "the manual's Getting started says how man finds the pages"
    );
}

#[test]
fn diff_of_a_task_with_no_commit_says_no_change() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "review", "prompt": "@fake text fine", "expect_commits": false})]);
    assert_eq!(code(&p.flocks(&["run", "--no-progress"])), 0);
    for args in [&["diff", "review"][..], &["diff", "review", "--stat"]] {
        let out = p.flocks(args);
        let t = text(&out);
        assert_eq!(code(&out), 0, "{t}");
        assert!(t.contains("task review: no change"), "{t}");
    }
}

#[test]
fn a_missing_task_file_is_named() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    for args in [
        &["run", "--tasks", "nope.jsonl"][..],
        &["run", "--dry-run", "--tasks", "nope.jsonl"],
        &["tasks", "--tasks", "nope.jsonl"],
    ] {
        let t = refused(&p, args, &["nope.jsonl"]);
        assert!(t.contains("no task file nope.jsonl"), "{t}");
        assert!(!t.contains("pass --tasks PATH"), "{t}");
    }
    // Without --tasks, the default one is named, with where it is looked for.
    std::fs::remove_file(p.path("tasks.jsonl")).unwrap();
    let t = refused(&p, &["run"], &["tasks.jsonl"]);
    assert!(t.contains("pass --tasks PATH, or set [source] path"), "{t}");
}

#[test]
fn serve_on_a_busy_port_suggests_addr() {
    let p = TestProject::new("");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let mut serve = p.spawn(&["serve", "--addr", &addr]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while serve.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = serve.kill();
            panic!("flocks serve did not stop on a busy port");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = serve.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(t.contains(&format!("{addr} is in use")), "{t}");
    assert!(t.contains("flocks serve --addr 127.0.0.1:"), "{t}");
}

#[test]
fn durations_in_flocks_toml_take_units() {
    // "2s" is read as two seconds: the agent that hangs times out.
    let p = TestProject::new("agent_timeout_secs = \"2s\"\nkill_grace_secs = \"1s\"\n");
    p.tasks(&[json!({"id": "hang", "prompt": "@fake hang"})]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(p.status_of("hang"), "timed_out");
    assert!(
        text(&out).contains("timed out (agent_timeout_secs) after 2s"),
        "{}",
        text(&out)
    );
    p.config("stall_timeout_secs = \"1h30m\"\n[validate]\ntimeout_secs = \"30m\"\n");
    let out = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    p.config("agent_timeout_secs = \"half an hour\"\n");
    refused(
        &p,
        &["run", "--dry-run"],
        &["flocks.toml:2: field `agent_timeout_secs`: `half an hour` is not a duration"],
    );
}

#[test]
fn a_dirty_checkout_is_mentioned_once_at_run() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt"}),
        json!({"id": "b", "prompt": "@fake commit b.txt"}),
    ]);
    std::fs::write(p.path("README.md"), "edited, not committed\n").unwrap();
    let out = p.flocks(&["run", "--no-progress"]);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert_eq!(
        t.matches("uncommitted changes are not in their worktrees")
            .count(),
        1,
        "{t}"
    );
    assert!(
        t.contains("the checkout has uncommitted changes (1 file: README.md): agents start from main as committed"),
        "{t}"
    );
    // A clean checkout: not a word.
    p.git(&["checkout", "README.md"]);
    p.tasks(&[json!({"id": "c", "prompt": "@fake commit c.txt"})]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert!(
        !text(&out).contains("uncommitted changes"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_trust_check_is_for_projects_whose_agents_can_write_the_host() {
    // Local pools only, a record from an earlier `flocks trust`: the
    // project's own edits need no `flocks trust`.
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "@fake commit a.txt"})]);
    assert_eq!(code(&p.flocks(&["trust"])), 0);
    p.git(&["remote", "add", "origin", "https://example.com/x.git"]);
    p.tasks(&[json!({"id": "b", "prompt": "@fake commit b.txt"})]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // Trusted with a docker pool: an agent that makes the pools local to
    // slip a change through is still refused.
    let q = TestProject::new(
        "[[containers]]\nname = \"dev\"\nbackend = \"docker\"\ncontainer = \"nope\"\n",
    );
    q.tasks(&[json!({"id": "a", "prompt": "x"})]);
    assert_eq!(code(&q.flocks(&["trust"])), 0);
    q.config("[validate]\ncommands = [\"touch pwned\"]\n");
    q.git(&["remote", "add", "origin", "https://example.com/x.git"]);
    q.git(&["config", "branch.main.remote", "origin"]);
    q.git(&["config", "branch.other.remote", "origin"]);
    let out = q.flocks(&["land", "-y"]);
    let t = text(&out);
    assert_eq!(code(&out), 5, "{t}");
    assert!(t.contains("flocks.toml changed"), "{t}");
    // Each line that came once, once.
    assert_eq!(t.matches("+ \tremote = origin").count(), 1, "{t}");
    assert_eq!(
        t.matches("url = https://example.com/x.git").count(),
        1,
        "{t}"
    );
}
