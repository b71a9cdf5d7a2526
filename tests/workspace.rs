//! Every worktree ready to work, on local pools: `.worktreeinclude` copies
//! the checkout's ignored files (`.env`) into each worktree and refreshes
//! them on reuse; `[workspace] setup` runs before the first agent of a
//! worktree, and a failing setup ends the attempt as `setup_failed` without
//! starting the agent.

mod support;

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use support::{TestProject, code, pid_alive, read_pid, text, wait_for};

/// A project whose checkout has an ignored `.env` (mode 600) that
/// `.worktreeinclude` selects, and flocks.toml with `extra`.
fn project(extra: &str) -> TestProject {
    let p = TestProject::new(extra);
    std::fs::write(p.path(".gitignore"), ".env\nsetup-out.txt\nnode_modules/\n").unwrap();
    std::fs::write(p.path(".worktreeinclude"), "# local secrets\n.env\n").unwrap();
    p.git(&["add", ".gitignore", ".worktreeinclude"]);
    p.git(&["commit", "-q", "-m", "ignore and include"]);
    std::fs::write(p.path(".env"), "TOKEN=abc\n").unwrap();
    std::fs::set_permissions(p.path(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn show(p: &TestProject, rev: &str) -> String {
    p.git(&["show", rev])
}

/// What the agent does in each task: record what it sees of `.env` and of the
/// setup's work, then spoil its copy of `.env` (a reuse must refresh it).
fn look(id: &str) -> String {
    format!(
        "@fake bash \"cat .env > seen-{id}.txt; stat -c %a .env > mode-{id}.txt; cat setup-out.txt > setup-{id}.txt; echo spoiled > .env\"\n"
    )
}

#[test]
fn the_agent_sees_included_files_and_the_setups_work() {
    let p = project(
        "[workspace]\nsetup = [\"echo setup ran >> setup-out.txt\", [\"sh\", \"-c\", \"test -f .env\"]]\n",
    );
    p.tasks(&[json!({"id": "t1", "prompt": look("t1")})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(show(&p, "flocks/t1:seen-t1.txt"), "TOKEN=abc");
    assert_eq!(show(&p, "flocks/t1:mode-t1.txt"), "600");
    assert_eq!(show(&p, "flocks/t1:setup-t1.txt"), "setup ran");
    // Ignored files stay out of the task's commits.
    assert!(!p.git_ok(&["cat-file", "-e", "flocks/t1:.env"]));
    // The checkout's own .env is untouched.
    assert_eq!(
        std::fs::read_to_string(p.path(".env")).unwrap(),
        "TOKEN=abc\n"
    );
    let log = std::fs::read_to_string(p.path(".flocks/logs/t1/1.log")).unwrap();
    assert!(
        log.contains("[flocks] .worktreeinclude: copied 1 file (.env)"),
        "{log}"
    );
    assert!(
        log.contains("[flocks] [workspace] setup: $ echo setup ran >> setup-out.txt"),
        "{log}"
    );
    assert!(log.contains("[flocks] [workspace] setup done"), "{log}");
}

#[test]
fn a_failing_setup_spends_no_agent_run() {
    let p = project(
        "[workspace]\nsetup = [\"true\", \"echo preparing; echo npm ERR! broken-dependency >&2; exit 7\", \"echo never > never.txt\"]\n",
    );
    let marker = p.out_file("agent-ran.jsonl");
    p.tasks(&[json!({"id": "t1", "prompt": format!("@fake record {}\n", marker.display())})]);
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!marker.exists(), "the agent must not start");
    assert_eq!(p.status_of("t1"), "setup_failed");
    let t = p.task("t1");
    let outcome = &t["status"]["outcome"];
    assert_eq!(
        outcome["command"],
        "echo preparing; echo npm ERR! broken-dependency >&2; exit 7"
    );
    assert_eq!(outcome["reason"], "exit status 7");
    let mut output: Vec<&str> = outcome["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    // Its own output, not the supervisor's word on it (stdout and stderr are
    // two pipes: the order of lines between them is not kept).
    output.sort();
    assert_eq!(output, ["npm ERR! broken-dependency", "preparing"]);
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1, "not retried");
    let wt = t["worktree"].as_str().unwrap();
    assert!(
        !std::path::Path::new(wt).join("never.txt").exists(),
        "later commands do not run"
    );
    // Said in the run's output, in status, and in events.jsonl.
    let out = text(&o);
    assert!(out.contains("setup failed"), "{out}");
    let st = text(&p.flocks(&["status"]));
    assert!(
        st.contains("setup failed: `echo preparing;") && st.contains("exit status 7"),
        "{st}"
    );
    let events = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    assert!(events.contains("\"kind\":\"setup_failed\""), "{events}");
    let log = std::fs::read_to_string(p.path(".flocks/logs/t1/1.log")).unwrap();
    assert!(log.contains("npm ERR! broken-dependency"), "{log}");

    // A retry reuses the worktree and runs the setup again (it never
    // completed there): it fails the same way, still without an agent run.
    let o = p.flocks(&["retry", "t1", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(!marker.exists());
    assert_eq!(p.status_of("t1"), "setup_failed");
}

#[test]
fn a_setup_that_hangs_times_out() {
    let p = project("[workspace]\nsetup = [\"echo waiting; sleep 60\"]\nsetup_timeout_secs = 1\n");
    let marker = p.out_file("agent-ran.jsonl");
    p.tasks(&[json!({"id": "t1", "prompt": format!("@fake record {}\n", marker.display())})]);
    let started = std::time::Instant::now();
    let o = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
    assert!(!marker.exists());
    let outcome = &p.task("t1")["status"]["outcome"];
    assert_eq!(outcome["kind"], "setup_failed");
    assert_eq!(outcome["output"], json!(["waiting"]));
    assert!(
        outcome["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 1s ([workspace] setup_timeout_secs)"),
        "{outcome}"
    );
}

/// Task b runs after a, in a's worktree taken from the spare pool; a
/// retry reuses its own worktree. The setup runs once per worktree unless
/// `setup_on_reuse`; `.env` is copied again every time.
fn reuse(on_reuse: bool) -> TestProject {
    let p = project(&format!(
        "max_agents = 1\n[workspace]\nsetup = [\"echo setup ran >> setup-out.txt\"]\nsetup_on_reuse = {on_reuse}\n"
    ));
    let once = p.out_file("failed-once");
    p.tasks(&[
        json!({"id": "a", "prompt": look("a")}),
        json!({"id": "b", "depends_on": ["a"], "prompt": format!("{}@fake fail-once {}\n", look("b"), once.display())}),
    ]);
    let o = p.flocks(&["run", "--no-progress", "--supervise", "--max-retries", "1"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(p.task("b")["attempts"].as_array().unwrap().len(), 2);
    // b's worktree is a's, recycled.
    let log = std::fs::read_to_string(p.path(".flocks/logs/b/1.log")).unwrap();
    assert!(
        log.contains(".worktreeinclude: copied 1 file (.env)"),
        "{log}"
    );
    // The retry saw a fresh .env again, though the first attempt spoiled it.
    assert_eq!(show(&p, "flocks/b:seen-b.txt"), "TOKEN=abc");
    assert_eq!(show(&p, "flocks/b:mode-b.txt"), "600");
    p
}

#[test]
fn reuse_refreshes_includes_and_skips_the_setup() {
    let p = reuse(false);
    // One worktree, set up once for a; b (spare) and b's retry did not rerun it.
    assert_eq!(show(&p, "flocks/b:setup-b.txt"), "setup ran");
    let log = std::fs::read_to_string(p.path(".flocks/logs/b/2.log")).unwrap();
    assert!(log.contains("setup already ran in this worktree"), "{log}");
}

#[test]
fn setup_on_reuse_runs_it_again() {
    let p = reuse(true);
    assert_eq!(
        show(&p, "flocks/b:setup-b.txt"),
        "setup ran\nsetup ran\nsetup ran"
    );
}

/// `flocks stop` while the setup runs: the setup's whole tree is stopped,
/// the attempt is interrupted, and the agent never starts.
#[test]
fn stop_during_the_setup_stops_it_and_starts_no_agent() {
    let p = project("");
    let pid = p.out_file("setup.pid");
    p.config(&format!(
        "[workspace]\nsetup = [\"sh -c 'echo $$ > {}; exec sleep 60' & wait\"]\n",
        pid.display()
    ));
    let marker = p.out_file("agent-ran.jsonl");
    p.tasks(&[json!({"id": "t1", "prompt": format!("@fake record {}\n", marker.display())})]);
    let mut run = p.spawn(&["run", "--no-progress"]);
    wait_for(30, "the setup to start", || {
        pid.exists() && std::fs::read_to_string(&pid).is_ok_and(|s| s.ends_with('\n'))
    });
    let sleeper = read_pid(&pid);
    assert!(pid_alive(sleeper));
    let stop = p.flocks(&["stop"]);
    assert_eq!(code(&stop), 0, "{}", text(&stop));
    let status = run.wait().unwrap();
    assert!(status.code().is_some(), "{status:?}");
    assert!(!marker.exists(), "the agent must not start");
    assert_eq!(p.status_of("t1"), "interrupted");
    wait_for(10, "the setup's tree to be stopped", || !pid_alive(sleeper));
    let log = std::fs::read_to_string(p.path(".flocks/logs/t1/1.log")).unwrap();
    assert!(log.contains("stopping the setup command"), "{log}");
}
