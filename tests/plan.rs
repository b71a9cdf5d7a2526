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

/// An objective whose fake planner writes `plan` as its plan file.
fn objective(p: &TestProject, name: &str, plan: &str) -> String {
    let src = p.out_file(name);
    std::fs::write(&src, plan).unwrap();
    format!(
        "Make the project better.\n@fake copy {} flocks-plan.jsonl",
        src.display()
    )
}

const TWO_WAVES: &str = concat!(
    r#"{"id": "core", "title": "Core work", "prompt": "@fake commit core.txt C"}"#,
    "\n",
    r#"{"id": "docs", "title": "Docs", "prompt": "@fake commit docs.txt D"}"#,
    "\n",
    r#"{"id": "ui", "title": "UI on core", "prompt": "@fake commit ui.txt U", "depends_on": ["core"], "start_from": "dependencies"}"#,
    "\n",
);

#[test]
fn plan_saves_a_valid_plan_and_shows_its_waves() {
    let p = TestProject::new("");
    let out = p.flocks(&["plan", &objective(&p, "plan.jsonl", TWO_WAVES)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("plan: 3 tasks in 2 waves"), "{t}");
    let row = |id: &str| t.lines().find(|l| l.contains(id)).unwrap().to_string();
    assert!(row("Core work").trim_start().starts_with("1  core"), "{t}");
    assert!(row("UI on core").trim_start().starts_with("2  ui"), "{t}");
    assert_eq!(
        std::fs::read_to_string(p.path("tasks.jsonl")).unwrap(),
        TWO_WAVES
    );
    // The planner's branch and worktree are put away; it is no task of the run.
    assert_eq!(p.git(&["branch", "--list", "flocks/*"]), "");
    assert!(!p.git(&["for-each-ref", "refs/flocks/plans/"]).is_empty());
    assert!(!p.path(".flocks/state.json").exists());

    // A second plan does not overwrite the task file without --force, and
    // says so before running any agent.
    let out = p.flocks(&[
        "plan",
        &objective(&p, "other.jsonl", "{\"id\": \"x\", \"prompt\": \"y\"}\n"),
    ]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("tasks.jsonl already exists: pass --force"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("planning on pool"), "{}", text(&out));
    let out = p.flocks(&[
        "plan",
        "--force",
        &objective(&p, "other.jsonl", "{\"id\": \"x\", \"prompt\": \"y\"}\n"),
    ]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        std::fs::read_to_string(p.path("tasks.jsonl"))
            .unwrap()
            .contains("\"x\"")
    );

    // `tasks` lists the plan before any run.
    let out = p.flocks(&["tasks"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("x ") && text(&out).contains("new"),
        "{}",
        text(&out)
    );
}

#[test]
fn plan_refuses_invalid_empty_and_cyclic_plans_with_the_reason() {
    let p = TestProject::new("");
    let cases = [
        (
            "invalid",
            "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\"}\n",
            ":2: field `prompt`: missing",
        ),
        ("empty", "\n", "the plan holds no task"),
        (
            "cycle",
            "{\"id\": \"a\", \"prompt\": \"x\", \"depends_on\": [\"b\"]}\n{\"id\": \"b\", \"prompt\": \"y\", \"depends_on\": [\"a\"]}\n",
            "dependency cycle: a -> b -> a",
        ),
        ("not-json", "here is your plan!\n", ":1: not valid JSON"),
    ];
    for (name, plan, why) in cases {
        let out = p.flocks(&["plan", &objective(&p, name, plan)]);
        assert_eq!(code(&out), 2, "{name}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains(why), "{name}: {t}");
        assert!(
            t.contains(".flocks/plans/plan-"),
            "{name}: the kept plan is named: {t}"
        );
        assert!(!p.path("tasks.jsonl").exists(), "{name}: nothing saved");
    }
    // A planner that writes nothing, or fails, saves nothing either.
    let out = p.flocks(&["plan", "plan it\n@fake commit notes.txt"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("did not leave flocks-plan.jsonl"),
        "{}",
        text(&out)
    );
    let out = p.flocks(&["plan", "plan it\n@fake fail cannot plan"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        text(&out).contains("the planning agent failed"),
        "{}",
        text(&out)
    );
    assert!(!p.path("tasks.jsonl").exists());
}

#[test]
fn plan_edit_opens_the_editor_and_checks_again() {
    let p = TestProject::new("");
    let plan = "{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": \"y\", \"depends_on\": [\"XX\"]}\n";
    let out = p.flocks(&["plan", &objective(&p, "bad.jsonl", plan)]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("unknown task `XX`"), "{}", text(&out));

    let mut cmd = p.cmd(&["plan", "--edit", &objective(&p, "bad.jsonl", plan)]);
    cmd.env_remove("VISUAL").env("EDITOR", "sed -i -e s/XX/a/");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("in 2 waves"), "{}", text(&out));
    assert!(
        std::fs::read_to_string(p.path("tasks.jsonl"))
            .unwrap()
            .contains("[\"a\"]")
    );

    // An edit that leaves it broken is refused.
    let mut cmd = p.cmd(&[
        "plan",
        "--edit",
        "--force",
        &objective(&p, "bad.jsonl", plan),
    ]);
    cmd.env_remove("VISUAL").env("EDITOR", "true");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("unknown task `XX`"), "{}", text(&out));
}

#[test]
fn plan_template_replaces_the_built_in_prompt() {
    let p = TestProject::new("[prompt]\nplan_template = \"plan.md\"\n");
    std::fs::write(
        p.path("plan.md"),
        "CUSTOM PLANNER into {{plan_path}}:\n{{objective}}\n",
    )
    .unwrap();
    let record = p.out_file("record.jsonl");
    let obj = format!(
        "{}\n@fake record {}",
        objective(&p, "plan.jsonl", TWO_WAVES),
        record.display()
    );
    let out = p.flocks(&["plan", &obj]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let prompt = rec["prompt"].as_str().unwrap();
    assert!(
        prompt.starts_with("CUSTOM PLANNER into flocks-plan.jsonl:\nMake the project better."),
        "{prompt}"
    );

    // --template wins over the config; the built-in one names the plan file.
    std::fs::write(p.out_file("t.md"), "FLAG {{objective}}\n{{bogus}}\n").unwrap();
    let t = p.out_file("t.md").display().to_string();
    let out = p.flocks(&["plan", "--force", "--template", &t, "x"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("t.md:2: unknown placeholder {{bogus}}"),
        "{}",
        text(&out)
    );
}

#[test]
fn sail_plans_then_runs_with_supervise() {
    let p = TestProject::new("max_agents = 2");
    let once = p.out_file("once");
    let plan = format!(
        "{TWO_WAVES}{}\n",
        json!({"id": "flaky", "prompt": format!("@fake fail-once {}\n@fake commit flaky.txt F", once.display())})
    );
    let out = p.flocks(&["sail", &objective(&p, "plan.jsonl", &plan)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("in 2 waves"), "{}", text(&out));
    for id in ["core", "docs", "ui", "flaky"] {
        assert_eq!(p.status_of(id), "success", "{id}");
    }
    assert_eq!(p.task("flaky")["attempts"].as_array().unwrap().len(), 2);
    assert!(p.git_ok(&["cat-file", "-e", "flocks/ui:core.txt"]));

    let out = p.flocks(&["tasks"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    let flaky = t.lines().find(|l| l.starts_with("flaky")).unwrap();
    assert!(
        flaky.contains("succeeded") && flaky.contains(" 2 ") && flaky.contains("local"),
        "{t}"
    );
    assert!(t.contains("core (starts from their work)"), "{t}");
    let json: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["tasks", "--json"]).stdout).unwrap();
    assert_eq!(json["tasks"].as_array().unwrap().len(), 4);
    assert_eq!(json["tasks"][2]["depends_on"], json!(["core"]));
    let out = p.flocks(&["tasks", "--status", "failed", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["tasks"].as_array().unwrap().is_empty());
    let out = p.flocks(&["tasks", "--status", "bogus"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("unknown status `bogus`"),
        "{}",
        text(&out)
    );
}

#[test]
fn init_writes_a_config_that_loads_and_never_overwrites() {
    let p = TestProject::new("");
    std::fs::remove_file(p.path("flocks.toml")).unwrap();
    // A fake docker that knows one devcontainer for this repo.
    let bin = p.tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(
        &docker,
        format!(
            "#!/bin/sh\ncase \"$*\" in *\"label=devcontainer.local_folder={}\"*) echo myproj_devcontainer-app-1;; esac\n",
            p.repo.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    std::fs::create_dir_all(p.path("sub")).unwrap();
    let mut cmd = p.cmd(&["init"]);
    cmd.current_dir(p.path("sub")).env("PATH", &path);
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("myproj_devcontainer-app-1"),
        "{}",
        text(&out)
    );
    let config = flocks::config::Config::load(&p.path("flocks.toml")).unwrap();
    assert_eq!(config.workspace.land_target, "main");
    assert_eq!(config.pools[0].backend.kind(), "docker");
    let text_toml = std::fs::read_to_string(p.path("flocks.toml")).unwrap();
    assert!(text_toml.contains("# "), "commented");
    assert!(p.path("tasks.jsonl").exists());
    let out = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&out), 0, "the example tasks load: {}", text(&out));

    let out = p.flocks(&["init"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("flocks.toml already exists"),
        "{}",
        text(&out)
    );

    // Without docker: a local pool.
    std::fs::remove_file(p.path("flocks.toml")).unwrap();
    std::fs::remove_file(p.path("tasks.jsonl")).unwrap();
    let mut cmd = p.cmd(&["init"]);
    cmd.env("PATH", "/usr/bin:/bin");
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let config = flocks::config::Config::load(&p.path("flocks.toml")).unwrap();
    assert_eq!(config.pools[0].backend.kind(), "local");
    // tasks.jsonl existing alone is refused too, naming it.
    std::fs::remove_file(p.path("flocks.toml")).unwrap();
    let out = p.flocks(&["init"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("tasks.jsonl already exists"),
        "{}",
        text(&out)
    );
    assert!(!p.path("flocks.toml").exists());
}

#[test]
fn a_retry_keeps_the_branch_and_fresh_rebuilds_the_start() {
    let p = TestProject::new("");
    let tasks = |a_file: &str| {
        p.tasks(&[
            json!({"id": "a", "prompt": format!("@fake commit {a_file} A")}),
            // b.txt gets new content every time, so that each attempt commits.
            json!({"id": "b", "prompt": format!("{}\n@fake commit b.txt", ls(&p, "b")),
                   "depends_on": ["a"], "start_from": "dependencies"}),
        ])
    };
    tasks("a.txt");
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // a is redone with other work.
    tasks("a2.txt");
    let out = p.flocks(&["retry", "a", "--force", "--fresh"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // A plain retry of b keeps its branch: it still holds the old a.txt.
    let out = p.flocks(&["retry", "b", "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let seen = lines(&p.out_file("b.ls"));
    assert!(
        seen.contains(&"a.txt".to_string()) && !seen.contains(&"a2.txt".to_string()),
        "{seen:?}"
    );

    // --fresh rebuilds the start from a's current work.
    let out = p.flocks(&["retry", "b", "--force", "--fresh"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let seen = lines(&p.out_file("b.ls"));
    assert!(
        seen.contains(&"a2.txt".to_string()) && !seen.contains(&"a.txt".to_string()),
        "{seen:?}"
    );
    let attempts = p.task("b")["attempts"].as_array().unwrap().clone();
    let last = attempts.last().unwrap();
    let start = last["start_commit"].as_str().unwrap();
    let tip = last["end_tip"].as_str().unwrap();
    assert_eq!(
        p.git(&["log", "--format=%s", &format!("{start}..{tip}")]),
        "fake: b.txt"
    );

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(landed_count(&p, "main", "a"), 1);
    assert_eq!(landed_count(&p, "main", "b"), 1);
    assert!(p.git_ok(&["cat-file", "-e", "main:a2.txt"]));
    assert!(!p.git_ok(&["cat-file", "-e", "main:a.txt"]));
}
