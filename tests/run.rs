//! `flocks run` end to end on the local backend, with the fake agent.

mod support;

use serde_json::json;
use support::*;

#[test]
fn tasks_commit_on_their_branches_and_the_run_reports() {
    let p = TestProject::new("max_agents = 2");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt alpha"}),
        json!({"id": "b", "prompt": "@fake commit b.txt beta\n@fake cost 0.25"}),
        json!({"id": "c", "prompt": "@fake commit c.txt", "branch": "work/c"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for (id, branch, file) in [
        ("a", "flocks/a", "a.txt"),
        ("b", "flocks/b", "b.txt"),
        ("c", "work/c", "c.txt"),
    ] {
        assert_eq!(p.status_of(id), "success");
        assert!(!p.git(&["show", &format!("{branch}:{file}")]).is_empty());
        let t = p.task(id);
        let a = &t["attempts"][0];
        assert_ne!(
            a["start_commit"], a["end_tip"],
            "{id}: start and tip recorded"
        );
        assert!(a["session_id"].as_str().is_some());
        assert!(p.path(&format!(".flocks/logs/{id}/1.log")).exists());
    }
    assert_eq!(p.task("b")["attempts"][0]["result"]["total_cost_usd"], 0.25);
    // Kept out of git through .git/info/exclude, never by a tracked file.
    let exclude = std::fs::read_to_string(p.path(".git/info/exclude")).unwrap();
    assert!(exclude.contains("/.flocks/") && exclude.contains("/.worktrees/"));
    assert_eq!(
        p.git(&["status", "--porcelain", "--untracked-files=all"]),
        "?? flocks.toml\n?? tasks.jsonl".replace("\\n", "\n")
    );
    let status = p.flocks(&["status"]);
    assert!(text(&status).contains("done (3)"), "{}", text(&status));
    let json: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["totals"]["tasks"], 3);
}

#[test]
fn leftovers_are_committed_and_count() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "lazy", "prompt": "@fake write notes.txt forgot-to-commit"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        p.git(&["log", "-1", "--format=%s", "flocks/lazy"]),
        "flocks: uncommitted changes left by attempt 1"
    );
    assert_eq!(
        p.git(&["show", "flocks/lazy:notes.txt"]),
        "forgot-to-commit"
    );
    assert_eq!(p.task("lazy")["attempts"][0]["leftovers_committed"], true);
}

#[test]
fn failures_are_told_apart() {
    let p = TestProject::new("max_agents = 4");
    p.tasks(&[
        json!({"id": "fails", "prompt": "@fake fail tests are red"}),
        json!({"id": "turns", "prompt": "@fake max-turns"}),
        json!({"id": "crash", "prompt": "@fake stderr boom\n@fake exit 3"}),
        json!({"id": "idle", "prompt": "@fake text nothing to do"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let reason = |id: &str| {
        p.task(id)["status"]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(reason("fails").contains("tests are red"));
    assert!(reason("turns").contains("max_turns"));
    assert!(
        reason("crash").contains("code 3") && reason("crash").contains("boom"),
        "{}",
        reason("crash")
    );
    assert!(reason("idle").contains("without committing"));
    let s = text(&p.flocks(&["status"]));
    assert!(s.contains("failed, timed out or stalled (4)"), "{s}");
}

#[test]
fn timeout_stops_the_agent_and_its_setsid_children() {
    let p = TestProject::new("agent_timeout_secs = 2");
    let pidfile = p.out_file("orphan.pid");
    p.tasks(&[json!({"id": "slow", "prompt": format!("@fake orphan {}\n@fake ignore-term\n@fake hang", pidfile.display())})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(p.status_of("slow"), "timed_out");
    let orphan = read_pid(&pidfile);
    wait_for(5, "the orphan to be gone", || !pid_alive(orphan));
}

#[test]
fn stalled_agents_are_stopped() {
    let p = TestProject::new("stall_timeout_secs = 1");
    p.tasks(&[json!({"id": "quiet", "prompt": "@fake text hello\n@fake silent 30"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(p.status_of("quiet"), "stalled");
}

#[test]
fn dependencies_order_and_block() {
    let p = TestProject::new("max_agents = 4");
    let rec = p.out_file("order.jsonl");
    let r = rec.display();
    p.tasks(&[
        json!({"id": "c", "prompt": format!("@fake record {r}\n@fake commit c.txt"), "depends_on": ["b"]}),
        json!({"id": "a", "prompt": format!("@fake record {r}\n@fake sleep 0.5\n@fake commit a.txt")}),
        json!({"id": "b", "prompt": format!("@fake record {r}\n@fake commit b.txt"), "depends_on": ["a"]}),
        json!({"id": "x", "prompt": "@fake fail nope"}),
        json!({"id": "y", "prompt": "@fake commit y.txt", "depends_on": ["x"]}),
        json!({"id": "z", "prompt": "@fake commit z.txt", "depends_on": ["y"]}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let order: Vec<String> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["env"]["FLOCKS_TASK"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(order, ["a", "b", "c"]);
    assert_eq!(p.status_of("y"), "blocked");
    assert_eq!(p.status_of("z"), "blocked");
    assert!(text(&out).contains("blocked"));
}

#[test]
fn hostile_prompts_reach_the_agent_as_text() {
    let p = TestProject::new("");
    let rec = p.out_file("rec.jsonl");
    let pwned = p.out_file("pwned");
    let hostile = format!(
        "Fix it; $(touch {0}) `touch {0}` \"quoted\" 'single' | && > {0} \\ $HOME",
        pwned.display()
    );
    let prompt = format!(
        "{hostile}\n@fake record {}\n@fake commit x.txt",
        rec.display()
    );
    p.tasks(&[json!({"id": "h", "prompt": prompt})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let seen: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&rec)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(seen["prompt"], prompt);
    assert!(!pwned.exists(), "a shell ran the prompt");
    let argv: Vec<&str> = seen["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for flag in [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--dangerously-skip-permissions",
    ] {
        assert!(argv.contains(&flag), "{argv:?}");
    }
    assert_eq!(seen["env"]["IS_SANDBOX"], "1");
}

#[test]
fn the_pool_credential_wins_over_an_ambient_api_key_and_never_leaks() {
    let oauth = "sk-ant-oat01-SECRET-oauth-value-123456";
    let ambient = "sk-ant-api03-AMBIENT-key-value-654321";
    let p = TestProject::new(
        "[[credentials]]\nname = \"sub-1\"\nenv = \"CLAUDE_TOKEN_1\"\n\n[[containers]]\nname = \"local\"\nmax_worktrees = 2\ncredential = \"sub-1\"\n",
    );
    let rec = p.out_file("rec.jsonl");
    p.tasks(&[json!({"id": "cred", "prompt": format!(
        "@fake record {}\n@fake echo-env CLAUDE_CODE_OAUTH_TOKEN\n@fake stderr leaking {oauth}\n@fake commit x.txt", rec.display())})]);
    let out = p
        .cmd(&["run"])
        .env("ANTHROPIC_API_KEY", ambient)
        .env("CLAUDE_TOKEN_1", oauth)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", text(&out));
    let seen: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&rec)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    // A token for flocks' model proxy in its place, never the secret.
    let token = seen["env"]["CLAUDE_CODE_OAUTH_TOKEN"].as_str().unwrap();
    assert!(token.starts_with("flocks-") && token != oauth, "{seen}");
    assert!(
        seen["env"].get("ANTHROPIC_API_KEY").is_none(),
        "ambient key must be removed: {seen}"
    );
    let all = p.flocks_dir_text() + &text(&out) + &text(&p.flocks(&["logs", "cred", "--raw"]));
    assert!(
        !all.contains(oauth) && !all.contains(ambient),
        "a secret leaked"
    );
    assert!(all.contains("[redacted:sub-1]"));
    // The source variable never reaches the agent either.
    assert!(!seen.to_string().contains("CLAUDE_TOKEN_1"));
}

#[test]
fn a_second_run_is_refused_while_one_holds_the_lock() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "long", "prompt": "@fake sleep 5\n@fake commit x.txt"})]);
    let mut first = p.spawn(&["run"]);
    wait_for(20, "the first run to start", || {
        p.path(".flocks/logs/long/1.log").exists()
    });
    let second = p.flocks(&["run"]);
    assert_eq!(code(&second), 5, "{}", text(&second));
    assert!(
        text(&second).contains(&format!("pid {}", first.id())),
        "{}",
        text(&second)
    );
    // status and logs read freely meanwhile.
    assert_eq!(code(&p.flocks(&["status"])), 0);
    assert_eq!(code(&p.flocks(&["logs", "long"])), 0);
    assert!(first.wait().unwrap().success());
}

#[test]
fn kill_9_then_resume_loses_nothing_and_repeats_nothing() {
    let p = TestProject::new("max_agents = 2");
    let rec = p.out_file("rec.jsonl");
    let pidfile = p.out_file("orphan.pid");
    let r = rec.display();
    p.tasks(&[
        json!({"id": "quick", "prompt": format!("@fake record {r}\n@fake commit q.txt")}),
        json!({"id": "stuck", "prompt": format!("@fake record {r}\n@fake commit part1.txt\n@fake write part2.txt\n@fake orphan {}\n@fake hang", pidfile.display())}),
    ]);
    let mut run = p.spawn(&["run"]);
    wait_for(30, "quick to succeed and stuck to be running", || {
        p.path(".flocks/state.json").exists()
            && p.status_of("quick") == "success"
            && pidfile.exists()
    });
    run.kill().unwrap(); // SIGKILL
    run.wait().unwrap();
    let orphan = read_pid(&pidfile);
    // The supervisor notices that flocks is gone and stops the agent's tree.
    wait_for(10, "the orphan to be stopped", || !pid_alive(orphan));
    assert_eq!(p.status_of("stuck"), "running");

    // Resume with a new prompt for the stuck task.
    p.tasks(&[
        json!({"id": "quick", "prompt": format!("@fake record {r}\n@fake commit q.txt")}),
        json!({"id": "stuck", "prompt": format!("@fake record {r}\n@fake commit part3.txt")}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("left running by a flocks run that ended abruptly"),
        "{t}"
    );
    assert!(t.contains("prompt changed"), "{t}");
    let runs: Vec<String> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["env"]["FLOCKS_TASK"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        runs.iter().filter(|r| *r == "quick").count(),
        1,
        "quick ran twice: {runs:?}"
    );
    // The stuck task kept its earlier work: commit, leftovers, and the new one.
    let log = p.git(&["log", "--format=%s", "flocks/stuck"]);
    assert!(
        log.contains("fake: part1.txt")
            && log.contains("uncommitted changes left by attempt 1")
            && log.contains("fake: part3.txt"),
        "{log}"
    );
    let stuck = p.task("stuck");
    assert_eq!(stuck["attempts"][0]["outcome"]["kind"], "interrupted");
    assert_eq!(stuck["attempts"].as_array().unwrap().len(), 2);
}

#[test]
fn ctrl_c_drains_then_stops_and_exits_130() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let p = TestProject::new("max_agents = 1");
    let pidfile = p.out_file("orphan.pid");
    p.tasks(&[
        json!({"id": "one", "prompt": format!("@fake orphan {}\n@fake hang", pidfile.display())}),
        json!({"id": "two", "prompt": "@fake commit two.txt"}),
    ]);
    let run = p.spawn(&["run"]);
    let pid = Pid::from_raw(run.id() as i32);
    wait_for(20, "the agent to start", || pidfile.exists());
    kill(pid, Signal::SIGINT).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    kill(pid, Signal::SIGINT).unwrap();
    let out = run.wait_with_output().unwrap();
    assert_eq!(code(&out), 130, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("no new agents will start; 1 running agent may finish"),
        "{t}"
    );
    assert!(t.contains("stopping 1 agent:"), "{t}");
    assert_eq!(p.status_of("one"), "interrupted");
    assert_eq!(p.status_of("two"), "pending");
    wait_for(5, "the orphan to be gone", || {
        !pid_alive(read_pid(&pidfile))
    });
}

#[test]
fn dry_run_shows_the_plan_and_touches_nothing() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "x"}),
        json!({"id": "b", "prompt": "y", "depends_on": ["a"]}),
    ]);
    let out = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("flocks/a") && t.contains("flocks/b") && t.contains(".worktrees"),
        "{t}"
    );
    assert!(!p.path(".worktrees").exists() && !p.path(".flocks").exists());
    let plan: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["run", "--dry-run", "--json"]).stdout).unwrap();
    assert_eq!(plan["tasks"][1]["id"], "b");
    assert_eq!(plan["tasks"][1]["depends_on"][0], "a");
}

#[test]
fn logs_render_raw_tail_and_attempts() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "l", "prompt": "@fake text hello there\n@fake tool-output line1\n@fake commit l.txt"})]);
    assert_eq!(code(&p.flocks(&["run"])), 0);
    let rendered = text(&p.flocks(&["logs", "l"]));
    assert!(
        rendered.contains("hello there")
            && rendered.contains("▶ Bash")
            && rendered.contains("■ result: success"),
        "{rendered}"
    );
    let raw = text(&p.flocks(&["logs", "l", "--raw"]));
    assert!(
        raw.lines()
            .next()
            .unwrap()
            .starts_with("{\"type\": \"system\"")
            || raw.contains("\"subtype\": \"init\"")
            || raw.contains("\"subtype\":\"init\""),
        "{raw}"
    );
    let tail = text(&p.flocks(&["logs", "l", "--tail", "1"]));
    assert_eq!(tail.lines().count(), 1, "{tail}");
    let missing = p.flocks(&["logs", "l", "--attempt", "7"]);
    assert_eq!(code(&missing), 2);
    let meta: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["logs", "l", "--json"]).stdout).unwrap();
    assert_eq!(meta["attempt"]["number"], 1);
}

#[test]
fn a_lone_json_result_is_accepted() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "arr", "prompt": "@fake json-array\n@fake commit a.txt\n@fake cost 0.5"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let a = &p.task("arr")["attempts"][0];
    assert_eq!(a["result"]["total_cost_usd"], 0.5);
    assert!(a["session_id"].is_string());
}

#[test]
fn logs_follow_until_the_task_ends() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "f", "prompt": "@fake text first\n@fake sleep 2\n@fake text second\n@fake commit f.txt"})]);
    let mut run = p.spawn(&["run"]);
    wait_for(20, "the log to appear", || {
        p.path(".flocks/logs/f/1.log").exists()
    });
    let out = p.flocks(&["logs", "f", "-f"]);
    let t = text(&out);
    assert!(
        t.contains("first") && t.contains("second") && t.contains("■ result: success"),
        "{t}"
    );
    assert!(run.wait().unwrap().success());
}

#[test]
fn stagger_spaces_out_agent_starts() {
    let p = TestProject::new("max_agents = 3\nstagger_delay_secs = 0.7");
    let rec = p.out_file("rec.jsonl");
    let tasks: Vec<serde_json::Value> = (0..3)
        .map(|i| json!({"id": format!("s{i}"), "prompt": format!("@fake record {}\n@fake commit s{i}.txt", rec.display())}))
        .collect();
    p.tasks(&tasks);
    assert_eq!(code(&p.flocks(&["run"])), 0);
    let mut starts: Vec<chrono::DateTime<chrono::Utc>> = p.state()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            t["attempts"][0]["started_at"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    starts.sort();
    for w in starts.windows(2) {
        assert!((w[1] - w[0]).num_milliseconds() >= 650, "{starts:?}");
    }
}

/// The flocks binary replaced while a run goes on (an upgrade, `cargo
/// install`, a rebuild): the attempts it starts later still start, under
/// the binary the run is.
#[test]
fn a_binary_replaced_mid_run_still_starts_the_next_attempts() {
    let p = TestProject::new("max_agents = 1");
    let bin = p.out_file("flocks");
    std::fs::copy(FLOCKS, &bin).unwrap();
    p.tasks(&[
        json!({"id": "first", "prompt": "@fake text started\n@fake sleep 2\n@fake commit a.txt"}),
        json!({"id": "second", "prompt": "@fake commit b.txt"}),
    ]);
    let run = p.spawn_of(&bin, &["run", "--no-progress"]);
    wait_for(30, "the first agent to start", || {
        std::fs::read_to_string(p.path(".flocks/logs/first/1.log"))
            .is_ok_and(|l| l.contains("started"))
    });
    // Replaced as an installer does: a new file renamed over the old.
    let new = p.out_file("flocks.new");
    std::fs::copy(FLOCKS, &new).unwrap();
    std::fs::rename(&new, &bin).unwrap();
    let out = run.wait_or_kill(60, "the run");
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("second"), "success", "{}", text(&out));
}
