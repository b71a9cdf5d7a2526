//! Errors a newcomer meets say what to do next, with their exact text and
//! documented exit code; and `landed` shows where a task's work stands.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;
use support::*;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `flocks args` in `dir`, stdin closed (no terminal).
fn flocks_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(FLOCKS)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Exit 2 with exactly `message` on stderr (after `error: `), nothing on stdout.
fn assert_usage(o: &Output, message: &str) {
    assert_eq!(stderr(o), format!("error: {message}\n"), "{}", text(o));
    assert_eq!(code(o), 2, "{}", text(o));
    assert_eq!(stdout(o), "", "{}", text(o));
}

fn config_error(extra: &str, args: &[&str], line: usize, message: &str) {
    let p = TestProject::new(extra);
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    let out = p.flocks(args);
    let path = p.path("flocks.toml");
    assert_usage(&out, &format!("{}:{line}: {message}", path.display()));
    assert!(!p.path(".flocks").exists(), "{}", text(&out));
}

#[test]
fn a_wrong_type_in_flocks_toml_names_the_key_and_says_what_it_expects() {
    // The builder writes two lines (timeouts) before `extra`.
    config_error(
        "max_agents = \"four\"\n",
        &["run"],
        3,
        "field `max_agents`: expected a whole number, got the string \"four\"",
    );
    config_error(
        "stall_timeout_secs = true\n",
        &["status"],
        3,
        "field `stall_timeout_secs`: expected a number of seconds or a duration such as \"30m\", got true",
    );
    config_error(
        "[[containers]]\nname = \"l\"\nbackend = \"local\"\nmax_worktrees = \"2\"\n",
        &["run", "--dry-run"],
        6,
        "field `containers.max_worktrees`: expected a whole number, got the string \"2\"",
    );
    config_error(
        "[agent]\ncommand = \"claude\"\nargs = \"--verbose\"\n",
        &["tasks"],
        5,
        "field `agent.args`: expected an array, got the string \"--verbose\"",
    );
    config_error(
        "[validate]\ntimeout_secs = \"an hour\"\n",
        &["land", "--dry-run"],
        4,
        "field `validate.timeout_secs`: `an hour` is not a duration: write a number and a unit (s, m, h, d, w), e.g. 90s, 30m, 1h30m, 7d",
    );
    config_error(
        "[workspace]\nbase = 3\n",
        &["run"],
        4,
        "field `workspace.base`: expected a string, got the whole number 3",
    );
    config_error(
        "workspace = \"here\"\n",
        &["run"],
        3,
        "field `workspace`: expected a table, got the string \"here\"",
    );
    config_error(
        "[validate]\ncomands = []\n",
        &["run"],
        4,
        "field `validate.comands`: unknown key: did you mean `commands`?",
    );
    config_error(
        "[containers]\nname = \"l\"\n",
        &["run"],
        3,
        "field `containers`: expected an array of tables, got one table: write [[containers]] (two brackets) for each entry",
    );
    config_error(
        "[[containers]]\nname = \"l\"\nbackend = \"local\"\n[containers.env]\nDEBUG = 1\n",
        &["run"],
        7,
        "field `containers.env.DEBUG`: expected a string, got the whole number 1",
    );
    config_error(
        "[[credentials]]\nname = \"one\"\n",
        &["run"],
        3,
        "field `credentials.env`: missing: this key is required",
    );
    config_error(
        "[source]\ntype = \"script\"\ncommand = 5\n",
        &["run"],
        5,
        "field `source.command`: expected a command: a string (run with sh -c) or a non-empty array of strings (argv), got the whole number 5",
    );
}

#[test]
fn without_flocks_toml_the_message_points_to_flocks_init() {
    let p = TestProject::new("");
    std::fs::remove_file(p.path("flocks.toml")).unwrap();
    assert_usage(
        &p.flocks(&["--config", "ci/fleet.toml", "status"]),
        "no config file at ci/fleet.toml: check the --config path, or write one there with `flocks init --config ci/fleet.toml`",
    );
    for args in [&["run"][..], &["status"], &["land"], &["tasks"]] {
        let out = p.flocks(args);
        assert_usage(
            &out,
            &format!(
                "no flocks.toml found in {} or any parent directory: run `flocks init` at the top of your repository to write one, or pass --config PATH",
                p.repo.display()
            ),
        );
    }
}

/// A git repository with no commit, a flocks.toml and a task.
fn repo_without_commit() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let ok = Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .current_dir(&repo)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::write(
        repo.join("flocks.toml"),
        format!("[agent]\ncommand = \"{}\"\n", fake_claude().display()),
    )
    .unwrap();
    std::fs::write(
        repo.join("tasks.jsonl"),
        "{\"id\":\"a\",\"prompt\":\"x\"}\n",
    )
    .unwrap();
    (tmp, repo)
}

#[test]
fn a_repository_with_no_commit_asks_for_a_first_commit() {
    let (_tmp, repo) = repo_without_commit();
    let message = format!(
        "the repository at {} has no commit yet, so tasks have nothing to start from: make a first commit (git commit --allow-empty -m \"first commit\") and run again",
        repo.display()
    );
    for args in [&["run"][..], &["run", "--dry-run"]] {
        let out = flocks_in(&repo, args);
        assert_usage(&out, &message);
    }
    assert!(!repo.join(".flocks").exists());
    assert!(!repo.join(".worktrees").exists());
}

#[test]
fn dry_run_checks_the_base_as_a_real_run_does() {
    let p = TestProject::new("[workspace]\nbase = \"nope\"\nland_target = \"main\"\n");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    let message = format!(
        "`nope` names no commit in {}: set [workspace] base in flocks.toml to a branch, tag or commit there (`git branch` lists the branches)",
        p.repo.display()
    );
    for args in [
        &["run"][..],
        &["run", "--dry-run"],
        &["run", "--dry-run", "--json"],
    ] {
        assert_usage(&p.flocks(args), &message);
    }
    assert!(!p.path(".flocks").exists());

    // A branch flocks did not create: the dry run refuses it too.
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    p.git(&["branch", "flocks/a"]);
    let message = format!(
        "{}:1: field `branch`: branch `flocks/a` already exists and flocks did not create it for task `a`: choose another branch, or delete it if it holds nothing you need",
        p.path("tasks.jsonl").display()
    );
    assert_usage(&p.flocks(&["run", "--dry-run"]), &message);
    assert_usage(&p.flocks(&["run"]), &message);
}

#[test]
fn outside_a_git_repository_every_command_says_so_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("plain");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("flocks.toml"),
        format!("[agent]\ncommand = \"{}\"\n", fake_claude().display()),
    )
    .unwrap();
    std::fs::write(dir.join("tasks.jsonl"), "{\"id\":\"a\",\"prompt\":\"x\"}\n").unwrap();
    let message = format!(
        "{} is not a git repository: run flocks in a git repository (`git init` and a first commit make one), or point [workspace] repo in flocks.toml at one",
        dir.display()
    );
    for args in [
        &["run"][..],
        &["run", "--dry-run"],
        &["status"],
        &["status", "--json"],
        &["top"],
        &["tasks"],
        &["land"],
        &["land", "-y"],
        &["land", "--undo", "-y"],
        &["land", "--dry-run"],
        &["clean"],
        &["diff", "a"],
        &["plan", "--force", "an objective"],
        &["retry", "--all-failed"],
        &["up"],
        &["down"],
        &["serve"],
        &["report"],
    ] {
        let out = flocks_in(&dir, args);
        assert_usage(&out, &message);
        assert!(
            !dir.join(".flocks").exists(),
            "flocks {args:?} left .flocks behind"
        );
    }
}

/// A project whose task `a` succeeded, adding a.txt.
fn succeeded() -> TestProject {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "@fake commit a.txt from-a"})]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    p
}

#[test]
fn land_without_a_terminal_asks_for_y_in_words_about_what_it_does() {
    let p = succeeded();
    let out = p.flocks(&["land"]);
    assert_eq!(
        stderr(&out),
        "error: stdin is not a terminal, so flocks cannot ask \"Land onto main?\": pass -y to land without asking\n"
    );
    assert_eq!(code(&out), 2);
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["land", "--undo"]);
    assert_eq!(
        stderr(&out),
        "error: stdin is not a terminal, so flocks cannot ask \"Undo it?\": pass -y to undo the last land without asking\n"
    );
    assert_eq!(code(&out), 2);
    assert!(p.path("a.txt").exists(), "nothing was undone");
}

#[test]
fn a_dirty_checkout_is_refused_once_before_the_task_list_with_exit_4() {
    let p = succeeded();
    std::fs::write(p.path("README.md"), "my edit\n").unwrap();
    let before = p.git(&["rev-parse", "main"]);
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(
        stderr(&out),
        format!(
            "error: main is checked out at {} with uncommitted changes to tracked files (README.md); land moves that checkout with the branch, so it refuses rather than mix your changes with landed work: commit or stash them (git stash), then run again\n",
            p.repo.display()
        )
    );
    assert_eq!(stdout(&out), "", "no task list before the refusal");
    assert_eq!(code(&out), 4);
    assert_eq!(p.git(&["rev-parse", "main"]), before);
    assert_eq!(
        std::fs::read_to_string(p.path("README.md")).unwrap(),
        "my edit\n"
    );

    // After a land, its undo is refused the same way.
    p.git(&["checkout", "README.md"]);
    assert_eq!(code(&p.flocks(&["land", "-y"])), 0);
    std::fs::write(p.path("README.md"), "my edit\n").unwrap();
    let out = p.flocks(&["land", "--undo", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("uncommitted changes to tracked files (README.md)"));
    assert!(p.path("a.txt").exists(), "nothing was undone");
}

#[test]
fn an_untracked_file_in_the_way_is_named() {
    let p = succeeded();
    std::fs::write(p.path("a.txt"), "mine\n").unwrap();
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let expected = format!(
        "Land stopped: updating the checkout of main at {} would overwrite files there that git does not track (a.txt (untracked)); nothing was changed: move them away (or commit them) and run again\n",
        p.repo.display()
    );
    assert!(stdout(&out).ends_with(&expected), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(p.path("a.txt")).unwrap(), "mine\n");
}

fn status_json(p: &TestProject, id: &str) -> String {
    let out = p.flocks(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn tasks_json(p: &TestProject, id: &str) -> String {
    let out = p.flocks(&["tasks", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn landed_tasks_show_as_landed_and_are_not_suggested_for_land() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt from-a"}),
        json!({"id": "b", "prompt": "@fake commit b.txt from-b"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("next: `flocks land`"), "{}", text(&out));
    assert_eq!(status_json(&p, "a"), "succeeded");

    let out = p.flocks(&["land", "-y", "a"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(status_json(&p, "a"), "landed");
    assert_eq!(status_json(&p, "b"), "succeeded");
    assert_eq!(tasks_json(&p, "a"), "landed");
    let out = p.flocks(&["run", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dry: Vec<(&str, &str)> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    assert_eq!(dry, vec![("a", "landed"), ("b", "succeeded")]);
    let status = stdout(&p.flocks(&["status"]));
    assert!(status.contains("2 succeeded (1 landed)"), "{status}");
    assert!(
        status
            .lines()
            .any(|l| l.contains("✔ a ") && l.ends_with(" · landed")),
        "{status}"
    );
    let tasks = stdout(&p.flocks(&["tasks"]));
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with("a ") && l.contains(" landed ")),
        "{tasks}"
    );
    let only = stdout(&p.flocks(&["tasks", "--status", "landed"]));
    assert!(only.contains("\na ") && !only.contains("\nb "), "{only}");

    // b still waits for land; once it has landed, run suggests nothing.
    let out = p.flocks(&["run", "--no-progress"]);
    assert!(text(&out).contains("next: `flocks land`"), "{}", text(&out));
    assert_eq!(code(&p.flocks(&["land", "-y"])), 0);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!text(&out).contains("flocks land"), "{}", text(&out));
    assert!(text(&out).contains("✔ a "), "{}", text(&out));

    // clean removes the branches; the tasks stay landed.
    let out = p.flocks(&["clean"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "flocks/a"]));
    assert_eq!(status_json(&p, "a"), "landed");
    assert_eq!(tasks_json(&p, "b"), "landed");

    // An undone land is not landed any more.
    assert_eq!(code(&p.flocks(&["land", "--undo", "-y"])), 0);
    assert_eq!(status_json(&p, "b"), "succeeded");
    assert_eq!(status_json(&p, "a"), "landed");
}

#[test]
fn stop_says_it_asked_and_the_run_says_who_asked() {
    let p = TestProject::new("");
    let out = p.flocks(&["stop"]);
    assert_eq!(
        stdout(&out),
        format!("no flocks run is going in {}\n", p.repo.display())
    );
    assert_eq!(code(&out), 0);

    p.tasks(&[json!({"id": "slow", "prompt": "@fake sleep 60"})]);
    let run = p.spawn(&["run", "--no-progress"]);
    wait_for(30, "the task to run", || {
        p.path(".flocks/state.json").exists() && p.status_of("slow") == "running"
    });
    let out = p.flocks(&["stop"]);
    let said = stdout(&out);
    assert!(
        said.starts_with(&format!("asked `flocks run` (pid {}, started ", run.id())),
        "{said}"
    );
    assert!(
        said.ends_with(
            ") to stop its agents gracefully; state is kept. `flocks run` continues later\n"
        ),
        "{said}"
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = run.wait_with_output().unwrap();
    let t = text(&out);
    assert!(
        t.contains(
            "note: stopping: asked by `flocks stop`; 1 running agent gets SIGTERM, then SIGKILL after 1s\n"
        ),
        "{t}"
    );
    assert!(!t.contains("Ctrl-C"), "{t}");
    // Asked to stop: no failure, no interruption (130 is Ctrl-C's).
    assert_eq!(code(&out), 0, "{t}");
    assert_eq!(p.status_of("slow"), "interrupted");
}

#[test]
fn init_with_config_writes_that_path_and_nothing_else() {
    let p = TestProject::new("");
    std::fs::remove_file(p.path("flocks.toml")).unwrap();
    let out = p.flocks(&["init", "--config", "ci/fleet.toml"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let config = p.path("ci/fleet.toml");
    assert_eq!(
        stdout(&out),
        format!(
            "wrote {}\nwrote {} (an example: two tasks, one building on the other)\nnext: edit the tasks, or let an agent write them: `flocks --config {c} plan --force \"<objective>\"`; then `flocks --config {c} run`\n",
            config.display(),
            p.path("ci/tasks.jsonl").display(),
            c = config.display()
        )
    );
    assert!(!p.path("flocks.toml").exists(), "flocks.toml was written");
    assert!(!p.path("tasks.jsonl").exists());
    // The config finds the repository and its tasks from where it is.
    let text_cfg = std::fs::read_to_string(&config).unwrap();
    assert!(text_cfg.contains("\nrepo = \"..\" "), "{text_cfg}");
    let fake = fake_claude().display().to_string();
    std::fs::write(
        &config,
        text_cfg.replace("command = \"claude\"", &format!("command = \"{fake}\"")),
    )
    .unwrap();
    let out = p.flocks(&["--config", "ci/fleet.toml", "run", "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["tasks"][0]["id"], "example-layout");
    assert_eq!(
        plan["tasks"][0]["worktree"],
        p.path(".worktrees/example-layout").display().to_string()
    );

    // Never over an existing file; a directory is refused with the fix.
    let out = p.flocks(&["init", "--config", "ci/fleet.toml"]);
    assert_usage(
        &out,
        &format!(
            "{} already exists: flocks init does not overwrite it (move it away to start over)",
            config.display()
        ),
    );
    let out = p.flocks(&["init", "--config", "ci"]);
    assert_usage(
        &out,
        "--config ci names a directory: give the path of the file to write, e.g. ci/flocks.toml",
    );
}

#[test]
fn up_and_down_say_what_they_do_for_docker_pools_and_exe_dev() {
    let p = TestProject::new("");
    let help = stdout(&p.flocks(&["--help"]));
    // The column is as wide as the longest command name.
    let line = |name: &str| {
        help.lines()
            .find_map(|l| l.strip_prefix(&format!("  {name} ")).map(str::trim_start))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        line("up"),
        "Create what pools need before a run: exe.dev VMs, docker containers",
        "{help}"
    );
    assert_eq!(
        line("down"),
        "Remove what `flocks up` created, and only that: exe.dev VMs, docker containers",
        "{help}"
    );
    for (cmd, words) in [
        (
            "up",
            &["For an exedev pool", "For a docker pool with an `image`"][..],
        ),
        (
            "down",
            &["the docker containers that `flocks up`", "left alone"],
        ),
    ] {
        let out = p.flocks(&[cmd, "--help"]);
        assert_eq!(code(&out), 0);
        for w in words {
            assert!(stdout(&out).contains(w), "{cmd}: {w}: {}", stdout(&out));
        }
    }
    let out = p.flocks(&["up"]);
    assert_eq!(
        stdout(&out),
        "no pool needs `flocks up` (only exedev pools, and docker pools with an image, do)\n"
    );
    assert_eq!(code(&out), 0);
}

#[test]
fn first_steps_errors_say_what_to_do_next() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "a", "prompt": "x"})]);
    assert_usage(
        &p.flocks(&["logs", "a"]),
        "no task `a` has run in this project yet, so there is no log: `flocks run` runs the tasks",
    );
    assert_usage(
        &p.flocks(&["retry", "ghost"]),
        &format!(
            "no task `ghost` in {}: `flocks tasks` lists the tasks",
            p.path("tasks.jsonl").display()
        ),
    );
    assert_usage(
        &p.flocks(&["up", "--pool", "gpu"]),
        "no pool named `gpu` in flocks.toml: the pools are local",
    );
    assert_usage(
        &p.flocks(&["down", "--pool", "gpu"]),
        "no pool named `gpu` in flocks.toml: the pools are local",
    );
    assert_usage(
        &p.flocks(&["diff", "a"]),
        "no task `a` in the run state: see `flocks status` for the task ids",
    );
}
