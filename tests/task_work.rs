//! A task's work is the task's, not one attempt's: every commit any attempt
//! made (and flocks' own leftover commits) counts for success and lands, once.
//! Each test drives the real binary with the fake agent on a real repo and
//! ends with an exact look at the target's files and history.

mod support;

use serde_json::json;
use support::*;

/// The files tracked on `main`, sorted.
fn main_files(p: &TestProject) -> Vec<String> {
    let mut files: Vec<String> = p
        .git(&["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    files
}

/// `main`'s history, newest first: "subject | Flocks-Task trailer".
fn main_log(p: &TestProject) -> Vec<String> {
    p.git(&[
        "log",
        "--format=%s | %(trailers:key=Flocks-Task,valueonly,separator=)",
        "main",
    ])
    .lines()
    .map(|l| l.trim_end().to_string())
    .collect()
}

/// `land -y` twice: the first lands, the second finds nothing new and leaves
/// main where it was (no task lands twice).
fn land_once(p: &TestProject) -> String {
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let tip = p.git(&["rev-parse", "main"]);
    let again = p.flocks(&["land", "-y"]);
    assert_eq!(code(&again), 0, "{}", text(&again));
    assert_eq!(p.git(&["rev-parse", "main"]), tip, "{}", text(&again));
    text(&out)
}

#[test]
fn land_takes_every_attempts_commits_after_a_supervised_retry() {
    let p = TestProject::new("max_retries = 2");
    let (m1, m2) = (p.out_file("m1"), p.out_file("m2"));
    // Attempt 1 commits and then reports an error; attempt 2 (resumed) builds
    // on attempt 1's file and adds its own.
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "@fake once {} append notes.txt one\n@fake once {} commit attempt-1.txt first\n\
         @fake fail-once {} broke after committing\n@fake append notes.txt two\n\
         @fake commit attempt-2.txt second",
        m1.display(), p.out_file("m1b").display(), m2.display()
    )})]);
    let out = p.flocks(&["run", "--supervise"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = p.task("t");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["outcome"]["kind"], "failed");
    assert_eq!(attempts[1]["outcome"]["kind"], "success");
    // One origin for the task; the attempts keep their own start for history.
    let base = p.git(&["rev-parse", "main"]);
    assert_eq!(t["origin"], base);
    assert_eq!(attempts[0]["start_commit"], base);
    assert_eq!(attempts[1]["start_commit"], attempts[0]["end_tip"]);
    let logs = p.flocks(&["logs", "t", "--json"]);
    let logs: serde_json::Value = serde_json::from_slice(&logs.stdout).unwrap();
    assert_eq!(logs["origin"], base);
    assert_eq!(logs["attempt"]["start_commit"], attempts[1]["start_commit"]);

    let plan = p.flocks(&["land", "--dry-run", "--json"]);
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan["tasks"][0]["start"], base);
    assert_eq!(plan["tasks"][0]["commits"].as_array().unwrap().len(), 4);

    land_once(&p);
    assert_eq!(
        main_files(&p),
        ["README.md", "attempt-1.txt", "attempt-2.txt", "notes.txt"]
    );
    assert_eq!(
        std::fs::read_to_string(p.path("notes.txt")).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(
        main_log(&p),
        [
            "fake: attempt-2.txt | t",
            "fake: notes.txt | t",
            "fake: attempt-1.txt | t",
            "fake: notes.txt | t",
            "initial |",
        ]
    );
}

#[test]
fn work_that_survived_a_killed_dispatcher_counts_on_the_rerun() {
    let p = TestProject::new("");
    let committed = p.out_file("committed");
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "@fake once {} commit done.txt work\n@fake once {} hang",
        committed.display(), p.out_file("hung").display()
    )})]);
    let mut run = p.spawn(&["run", "--no-progress"]);
    // The agent committed and now hangs before its result.
    wait_for(60, "the agent's commit", || {
        p.git_ok(&["rev-parse", "--verify", "-q", "flocks/t"])
            && p.git(&["rev-parse", "flocks/t"]) != p.git(&["rev-parse", "main"])
            && p.path(".worktrees/t/done.txt").exists()
    });
    wait_for(30, "the hang marker", || p.out_file("hung").exists());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = run.wait();

    // The rerun stops the orphaned agent, re-queues the task, and the new
    // attempt finds the work done: that is a success, not "nothing committed".
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("ended abruptly"), "{}", text(&out));
    let t = p.task("t");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["outcome"]["kind"], "interrupted");
    assert_eq!(attempts[1]["outcome"]["kind"], "success");
    assert_eq!(p.status_of("t"), "success");

    land_once(&p);
    assert_eq!(main_files(&p), ["README.md", "done.txt"]);
    assert_eq!(main_log(&p), ["fake: done.txt | t", "initial |"]);
}

#[test]
fn leftovers_at_max_turns_count_when_the_resumed_session_reports_success() {
    let p = TestProject::new("max_turns = 2\nmax_retries = 2");
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "@fake once {} write half.txt edited\n@fake once {} max-turns",
        p.out_file("w").display(), p.out_file("m").display()
    )})]);
    let out = p.flocks(&["run", "--supervise"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = p.task("t");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{t}");
    assert_eq!(attempts[0]["leftovers_committed"], true);
    assert!(
        attempts[0]["outcome"]["reason"]
            .as_str()
            .unwrap()
            .contains("max_turns")
    );
    assert!(attempts[1]["resumed_from"].is_string());
    assert_eq!(attempts[1]["outcome"]["kind"], "success");

    land_once(&p);
    assert_eq!(main_files(&p), ["README.md", "half.txt"]);
    assert_eq!(
        std::fs::read_to_string(p.path("half.txt")).unwrap(),
        "edited"
    );
    assert_eq!(
        main_log(&p),
        [
            "flocks: uncommitted changes left by attempt 1 | t",
            "initial |"
        ]
    );
}

#[test]
fn a_task_that_expects_no_commits_succeeds_on_its_result() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "review", "prompt": "@fake text Found three issues: the login form, the cache, the docs.",
               "expect_commits": false}),
        json!({"id": "silent", "prompt": "@fake text nothing to do"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(p.status_of("review"), "success");
    assert_eq!(p.task("review")["expect_commits"], false);
    // The same agent without the flag has not finished.
    let reason = p.task("silent")["status"]["outcome"]["reason"].clone();
    assert!(
        reason.as_str().unwrap().contains("without committing")
            && reason.as_str().unwrap().contains("expect_commits"),
        "{reason}"
    );

    let status = text(&p.flocks(&["status"]));
    assert!(
        status.contains("│ Found three issues: the login form, the cache, the docs."),
        "{status}"
    );
    let logs = text(&p.flocks(&["logs", "review"]));
    assert!(logs.contains("Found three issues"), "{logs}");

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("review  (flocks/review): empty, nothing to land"),
        "{}",
        text(&out)
    );
    assert_eq!(main_files(&p), ["README.md"]);
    assert_eq!(main_log(&p), ["initial |"]);
}

#[test]
fn a_branch_rewritten_under_its_origin_is_refused_until_redone_fresh() {
    let p = TestProject::new("");
    std::fs::write(p.path("second.txt"), "second\n").unwrap();
    p.git(&["add", "second.txt"]);
    p.git(&["commit", "-q", "-m", "second"]);
    p.tasks(&[json!({"id": "t", "prompt": format!(
        "@fake once {} commit a.txt\n@fake fail-once {} stopped\n@fake commit b.txt",
        p.out_file("a").display(), p.out_file("f").display()
    )})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    // By hand: the branch is rebased off the commit it started from.
    let wt = p.path(".worktrees/t");
    let git_wt = |args: &[&str]| {
        let o = std::process::Command::new("git")
            .args(args)
            .current_dir(&wt)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    git_wt(&["rebase", "-q", "--onto", "main~1", "main"]);
    let out = p.flocks(&["retry", "t"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    let out = p.flocks(&["land", "-y"]);
    let said = text(&out);
    assert!(said.contains("rewritten by hand"), "{said}");
    assert!(said.contains("flocks retry --fresh t"), "{said}");
    assert_eq!(main_files(&p), ["README.md", "second.txt"]);

    let out = p.flocks(&["retry", "--fresh", "t"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.task("t")["origin"], p.git(&["rev-parse", "main"]));
    land_once(&p);
    assert_eq!(main_files(&p), ["README.md", "b.txt", "second.txt"]);
    assert_eq!(main_log(&p), ["fake: b.txt | t", "second |", "initial |"]);
}

#[test]
fn retry_after_an_edited_prompt_gives_the_agent_the_new_prompt() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake fail first version of a"}),
        json!({"id": "b", "prompt": "@fake fail first version of b"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let prompts = p.out_file("a-prompts.json");
    p.tasks(&[
        json!({"id": "a", "prompt": format!("Second version of a.\n@fake session-prompts {}\n@fake commit a.txt", prompts.display())}),
        json!({"id": "b", "prompt": "Second version of b.\n@fake commit b.txt"}),
    ]);

    let out = p.flocks(&["retry", "a"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(
        said.contains("task a: its prompt changed since attempt 1: it resumes its session, and the follow-up carries the new prompt in full"),
        "{said}"
    );
    assert!(!said.contains("not run again"), "{said}");
    let seen: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&prompts).unwrap()).unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[1].contains("Second version of a."), "{seen:?}");
    assert!(seen[1].contains("stopped"), "{seen:?}");
    assert!(p.task("a")["attempts"][1]["resumed_from"].is_string());

    let out = p.flocks(&["retry", "--fresh", "b"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(
        said.contains("task b: its prompt changed since attempt 1: it starts a fresh session with the new prompt"),
        "{said}"
    );
    assert!(!said.contains("not run again"), "{said}");
    land_once(&p);
    assert_eq!(main_files(&p), ["README.md", "a.txt", "b.txt"]);
}

#[test]
fn land_never_overwrites_nor_undo_deletes_an_ignored_file() {
    let p = TestProject::new("");
    std::fs::write(p.path(".gitignore"), "local.env\n").unwrap();
    std::fs::write(p.path("settings.local"), "shared\n").unwrap();
    p.git(&["add", ".gitignore", "settings.local"]);
    p.git(&["commit", "-q", "-m", "ignore local.env"]);
    std::fs::write(p.path("local.env"), "SECRET=mine\n").unwrap();
    // The task stops ignoring local.env and commits its own.
    p.tasks(&[json!({"id": "env", "prompt": "@fake commit .gitignore settings.local\n@fake commit local.env SECRET=agent\n@fake remove settings.local"})]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let before = p.git(&["rev-parse", "main"]);

    let out = p.flocks(&["land", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    assert!(said.contains("local.env (ignored)"), "{said}");
    assert_eq!(
        std::fs::read_to_string(p.path("local.env")).unwrap(),
        "SECRET=mine\n"
    );
    assert_eq!(p.git(&["rev-parse", "main"]), before);

    // Moved away by the user, the land goes through.
    std::fs::rename(p.path("local.env"), p.out_file("local.env")).unwrap();
    land_once(&p);
    assert_eq!(main_files(&p), [".gitignore", "README.md", "local.env"]);
    // settings.local is ignored now; the user makes their own.
    std::fs::write(p.path("settings.local"), "mine\n").unwrap();
    let out = p.flocks(&["land", "--undo", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    assert!(said.contains("settings.local (ignored)"), "{said}");
    assert_eq!(
        std::fs::read_to_string(p.path("settings.local")).unwrap(),
        "mine\n"
    );
    // Without it in the way, the undo restores main and its files.
    std::fs::remove_file(p.path("settings.local")).unwrap();
    let out = p.flocks(&["land", "--undo", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.git(&["rev-parse", "main"]), before);
    assert_eq!(
        std::fs::read_to_string(p.path("settings.local")).unwrap(),
        "shared\n"
    );
}

#[test]
fn removing_the_lock_file_does_not_let_a_second_run_take_over() {
    let p = TestProject::new("");
    let pidfile = p.out_file("agent.pid");
    p.tasks(&[json!({"id": "long", "prompt": format!("@fake env FLOCKS_ATTEMPT {}\n@fake hang", pidfile.display())})]);
    let mut first = p.spawn(&["run", "--no-progress"]);
    wait_for(60, "the agent to start", || pidfile.exists());
    std::fs::remove_file(p.path(".flocks/lock")).unwrap();

    let out = p.flocks(&["run", "--no-progress"]);
    let said = text(&out);
    assert_eq!(code(&out), 5, "{said}");
    assert!(said.contains(&format!("pid {}", first.id())), "{said}");
    assert!(!said.contains("ended abruptly"), "{said}");
    // The first run and its agent go on untouched.
    assert!(pid_alive(first.id() as i32));
    let t = p.task("long");
    assert_eq!(t["status"]["state"], "running");
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1);

    // `flocks stop` still finds the run, by the pid state.json records.
    let out = p.flocks(&["stop"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains(&format!("pid {}", first.id())),
        "{}",
        text(&out)
    );
    let status = first.wait().unwrap();
    assert!(status.code().is_some(), "{status:?}");
    assert_eq!(p.status_of("long"), "interrupted");
}

#[test]
fn bisect_and_start_from_see_every_attempts_work() {
    // x's first attempt commits the file that breaks validation, then fails;
    // its second attempt succeeds. Landing only attempt 2 would pass
    // validation and hide the culprit.
    let p = TestProject::new(
        "max_retries = 1\n[validate]\ncommands = [\"test ! -e bad.txt\"]\ntimeout_secs = 20\n",
    );
    let seen = p.out_file("y-files");
    p.tasks(&[
        json!({"id": "x", "prompt": format!(
            "@fake once {} commit bad.txt\n@fake fail-once {} oops\n@fake commit x.txt",
            p.out_file("xa").display(), p.out_file("xf").display()
        )}),
        json!({"id": "a", "prompt": format!(
            "@fake once {} commit a1.txt\n@fake fail-once {} oops\n@fake commit a2.txt",
            p.out_file("aa").display(), p.out_file("af").display()
        )}),
        json!({"id": "y", "prompt": format!("@fake ls {}\n@fake commit y.txt", seen.display()),
               "depends_on": ["a"], "start_from": "dependencies"}),
    ]);
    let out = p.flocks(&["run", "--supervise"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // y started from both of a's attempts' work.
    let files = std::fs::read_to_string(&seen).unwrap();
    assert!(
        files.lines().any(|l| l == "a1.txt") && files.lines().any(|l| l == "a2.txt"),
        "{files}"
    );

    let out = p.flocks(&["land", "--bisect", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    let culprits = said
        .split("Culprits (they break validation; nothing of these was applied)")
        .nth(1)
        .unwrap_or_else(|| panic!("no culprits in: {said}"));
    assert!(culprits.contains("x: `test ! -e bad.txt`"), "{said}");
    assert_eq!(main_files(&p), ["README.md", "a1.txt", "a2.txt", "y.txt"]);
    assert_eq!(
        main_log(&p),
        [
            "fake: y.txt | y",
            "fake: a2.txt | a",
            "fake: a1.txt | a",
            "initial |"
        ]
    );
    // clean removes what landed and keeps the culprit's branch.
    let out = p.flocks(&["clean"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "flocks/a"]));
    assert!(!p.git_ok(&["rev-parse", "--verify", "-q", "flocks/y"]));
    assert!(p.git_ok(&["rev-parse", "--verify", "-q", "flocks/x"]));
}
