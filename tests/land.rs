//! `flocks land` and `flocks clean` through the library, on real repos built
//! with the git CLI and a state.json written by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use flocks::config::Config;
use flocks::error::Exit;
use flocks::land::{
    self, CleanOptions, LandLock, LandOptions, PlanStatus, TaskOutcome, Validation,
};
use flocks::project::Project;
use flocks::state::{Attempt, Outcome, State, TaskRecord, TaskStatus};

struct Fx {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    tasks: Vec<TaskRecord>,
}

/// git in `dir`, with a fixed author date (the fixtures' commits are stable).
fn git_in(dir: &Path, args: &[&str]) -> String {
    support::git_in(dir, args, &[("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")])
}

impl Fx {
    /// A repo with `main` (README.md) checked out, and a flocks.toml.
    fn new(validate: &[&str]) -> Fx {
        // Validation runs under the flocks supervisor: the flocks binary, not
        // this test binary. SAFETY: nextest runs each test in its own
        // process, and nothing reads the environment concurrently here.
        unsafe { std::env::set_var("FLOCKS_SUPERVISOR", env!("CARGO_BIN_EXE_flocks")) };
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        git_in(&repo, &["init", "-q", "-b", "main"]);
        git_in(&repo, &["config", "user.name", "Lander"]);
        git_in(&repo, &["config", "user.email", "lander@example.com"]);
        std::fs::write(repo.join("README.md"), "hello\n").unwrap();
        git_in(&repo, &["add", "."]);
        git_in(&repo, &["commit", "-q", "-m", "init"]);
        let cmds: Vec<String> = validate.iter().map(|c| format!("{c:?}")).collect();
        // flocks.toml lives outside the repo, as a sibling.
        std::fs::write(
            dir.path().join("flocks.toml"),
            format!(
                "[workspace]\nrepo = \"repo\"\nland_target = \"main\"\n\n[validate]\ncommands = [{}]\ntimeout_secs = 20\n",
                cmds.join(", ")
            ),
        )
        .unwrap();
        Fx {
            _dir: dir,
            repo,
            tasks: Vec::new(),
        }
    }

    fn git(&self, args: &[&str]) -> String {
        git_in(&self.repo, args)
    }

    fn project(&self) -> Project {
        let cfg = Config::load(&self.repo.parent().unwrap().join("flocks.toml")).unwrap();
        Project::from_config(cfg)
    }

    fn tip(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev])
    }

    /// Commit `files` on `branch` without touching any checkout (plumbing).
    fn commit_on(&self, branch: &str, files: &[(&str, &str)], msg: &str, author: &str) -> String {
        let parent = self.tip(&format!("refs/heads/{branch}"));
        let idx = self
            .repo
            .join(".git")
            .join(format!("tmp-index-{}", branch.replace('/', "-")));
        let env = |c: &mut Command| {
            c.current_dir(&self.repo).env("GIT_INDEX_FILE", &idx);
        };
        let run = |args: &[&str], stdin: Option<&str>| -> String {
            use std::io::Write;
            let mut c = Command::new("git");
            c.args(args);
            env(&mut c);
            c.env("GIT_AUTHOR_NAME", author)
                .env("GIT_AUTHOR_EMAIL", format!("{author}@example.com"));
            c.stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            let mut child = c.spawn().unwrap();
            if let Some(s) = stdin {
                child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
            } else {
                drop(child.stdin.take());
            }
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        run(&["read-tree", &parent], None);
        for (path, content) in files {
            let blob = run(&["hash-object", "-w", "--stdin"], Some(content));
            run(
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("100644,{blob},{path}"),
                ],
                None,
            );
        }
        let tree = run(&["write-tree"], None);
        let commit = run(&["commit-tree", &tree, "-p", &parent, "-m", msg], None);
        self.git(&["update-ref", &format!("refs/heads/{branch}"), &commit]);
        let _ = std::fs::remove_file(&idx);
        commit
    }

    /// A succeeded task whose branch starts at `base` and gets `commits`.
    fn task(&mut self, id: &str, base: &str, commits: &[&[(&str, &str)]]) -> (String, String) {
        let branch = format!("flocks/{id}");
        let start = self.tip(base);
        self.git(&["branch", &branch, &start]);
        for (i, files) in commits.iter().enumerate() {
            self.commit_on(
                &branch,
                files,
                &format!("{id}: change {}", i + 1),
                &format!("agent-{id}"),
            );
        }
        let tip = self.tip(&branch);
        self.add_record(id, &branch, &start, &tip, &[]);
        (start, tip)
    }

    fn add_record(&mut self, id: &str, branch: &str, start: &str, tip: &str, deps: &[&str]) {
        let now = chrono::Utc::now();
        self.tasks.push(TaskRecord {
            id: id.into(),
            branch: branch.into(),
            worktree: self.repo.join(".worktrees").join(id),
            prompt_hash: "00".into(),
            title: None,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            status: TaskStatus::Done {
                outcome: Outcome::Success,
            },
            attempts: vec![Attempt {
                number: 1,
                pool: "local".into(),
                credential: None,
                started_at: now,
                ended_at: Some(now),
                start_commit: Some(start.into()),
                end_tip: Some(tip.into()),
                session_id: None,
                resumed_from: None,
                outcome: Some(Outcome::Success),
                exit_code: Some(0),
                result: None,
                leftovers_committed: false,
                tag: format!("{id}-1"),
                prompt_hash: None,
                usage: None,
                egress_denied: 0,
                pending_secs: None,
                job: None,
            }],
            branch_created: true,
            requeues: 0,
            next: None,
            origin: Some(start.into()),
            expect_commits: true,
            not_retried: None,
            conflict: None,
            conflict_unknown: false,
            outside_footprint: Vec::new(),
            variants: Vec::new(),
            best_of: None,
            source: None,
            removed: false,
            not_in_run: false,
        });
        self.save();
    }

    fn save(&self) {
        let state = State {
            tasks: self.tasks.clone(),
            ..State::default()
        };
        self.project().store.save(&state).unwrap();
    }

    fn land(&self, ids: &[&str]) -> land::Report {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        land::land(&self.project(), &ids, &LandOptions::default()).unwrap()
    }

    fn log(&self, rev: &str) -> Vec<String> {
        let out = self.git(&[
            "log",
            "--format=%s|%an|%(trailers:key=Flocks-Task,valueonly,separator=)",
            rev,
        ]);
        out.lines().map(str::to_string).collect()
    }

    fn status(&self) -> String {
        self.git(&["status", "--porcelain", "--untracked-files=no"])
    }
}

fn outcome<'a>(r: &'a land::Report, id: &str) -> &'a TaskOutcome {
    &r.tasks.iter().find(|t| t.id == id).unwrap().outcome
}

#[test]
fn lands_several_tasks_in_order_with_trailers_and_authors() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.task("b", "main", &[&[("b.txt", "b1\n")], &[("b.txt", "b2\n")]]);
    // c comes first in the list but depends on d.
    let (s, t) = {
        let branch = "flocks/c";
        let start = fx.tip("main");
        fx.git(&["branch", branch, &start]);
        fx.commit_on(branch, &[("c.txt", "c\n")], "c: change 1", "agent-c");
        (start, fx.tip(branch))
    };
    fx.add_record("c", "flocks/c", &s, &t, &["d"]);
    fx.task("d", "main", &[&[("d.txt", "d\n")]]);

    let r = fx.land(&[]);
    assert_eq!(r.exit(), Exit::Ok, "{}", r.render(&fx.repo));
    assert!(r.moved);
    assert_eq!(
        outcome(&r, "b"),
        &TaskOutcome::Landed {
            commits: 2,
            dropped: 0
        }
    );
    assert_eq!(
        fx.log("main"),
        vec![
            "c: change 1|agent-c|c",
            "d: change 1|agent-d|d",
            "b: change 2|agent-b|b",
            "b: change 1|agent-b|b",
            "a: change 1|agent-a|a",
            "init|Lander|",
        ]
    );
    // Committer is the repo's identity.
    assert_eq!(fx.git(&["log", "-1", "--format=%cn", "main"]), "Lander");
    // The checkout moved with the branch: files on disk, nothing dirty.
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("b.txt")).unwrap(),
        "b2\n"
    );
    assert!(fx.repo.join("c.txt").exists());
    assert_eq!(fx.status(), "");
    // land.json remembers the move.
    let log = land::LandLog::load(&fx.project().state_dir()).unwrap();
    assert_eq!(log.lands.len(), 1);
    assert_eq!(log.lands[0].state, land::LandState::Done);
    assert_eq!(log.lands[0].new_tip, fx.tip("main"));
    assert_eq!(log.lands[0].tasks.len(), 4);
}

#[test]
fn lands_only_the_recorded_range_when_the_base_differs() {
    let mut fx = Fx::new(&[]);
    fx.git(&["branch", "dev", "main"]);
    fx.commit_on("dev", &[("dev.txt", "dev only\n")], "dev work", "someone");
    fx.task("a", "dev", &[&[("a.txt", "a\n")]]);
    let r = fx.land(&[]);
    assert_eq!(
        outcome(&r, "a"),
        &TaskOutcome::Landed {
            commits: 1,
            dropped: 0
        }
    );
    assert_eq!(
        fx.log("main"),
        vec!["a: change 1|agent-a|a", "init|Lander|"]
    );
    assert!(fx.repo.join("a.txt").exists());
    assert!(!fx.repo.join("dev.txt").exists());
}

#[test]
fn empty_task_is_reported_and_nothing_moves() {
    let mut fx = Fx::new(&[]);
    fx.task("e", "main", &[]);
    let before = fx.tip("main");
    let r = fx.land(&[]);
    assert_eq!(outcome(&r, "e"), &TaskOutcome::Empty);
    assert_eq!(r.exit(), Exit::Ok);
    assert!(!r.moved);
    assert_eq!(fx.tip("main"), before);
    assert!(r.render(&fx.repo).contains("Nothing to land"));
}

#[test]
fn a_conflicting_task_is_skipped_whole_and_the_rest_lands() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("README.md", "from a\n")]]);
    fx.task(
        "b",
        "main",
        &[&[("b.txt", "b\n")], &[("README.md", "from b\n")]],
    );
    fx.task("c", "main", &[&[("c.txt", "c\n")]]);
    let r = fx.land(&[]);
    assert_eq!(r.exit(), Exit::LandStopped);
    match outcome(&r, "b") {
        TaskOutcome::Conflicted { files, .. } => assert_eq!(files, &vec!["README.md".to_string()]),
        o => panic!("{o:?}"),
    }
    assert!(r.moved);
    assert_eq!(
        fx.log("main"),
        vec![
            "c: change 1|agent-c|c",
            "a: change 1|agent-a|a",
            "init|Lander|"
        ]
    );
    // Nothing of b: not even its first, clean commit.
    assert!(!fx.repo.join("b.txt").exists());
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("README.md")).unwrap(),
        "from a\n"
    );
    assert_eq!(fx.status(), "");
    let text = r.render(&fx.repo);
    assert!(text.contains("flocks retry b --fresh"), "{text}");
    assert!(text.contains("README.md"), "{text}");
}

#[test]
fn dirty_checkout_is_refused_before_anything_changes() {
    let mut fx = Fx::new(&["true"]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    std::fs::write(fx.repo.join("README.md"), "my edit\n").unwrap();
    let before = fx.tip("main");
    let r = fx.land(&[]);
    assert_eq!(r.exit(), Exit::LandStopped);
    let stop = r.stopped.clone().unwrap();
    assert!(
        stop.contains("uncommitted changes") && stop.contains("README.md"),
        "{stop}"
    );
    assert_eq!(fx.tip("main"), before);
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("README.md")).unwrap(),
        "my edit\n"
    );
    assert!(!fx.repo.join("a.txt").exists());
    assert!(
        !fx.repo.join(".worktrees/.land").exists(),
        "refused before building"
    );
    // The plan says so too.
    let plan = land::plan(&fx.project(), &[]).unwrap();
    assert_eq!(plan.dirty, vec!["README.md".to_string()]);
}

#[test]
fn untracked_file_in_the_way_stops_the_move() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    std::fs::write(fx.repo.join("a.txt"), "mine\n").unwrap();
    let before = fx.tip("main");
    let r = fx.land(&[]);
    assert_eq!(r.exit(), Exit::LandStopped);
    assert!(
        r.stopped.as_deref().unwrap().contains("overwrite"),
        "{:?}",
        r.stopped
    );
    assert_eq!(fx.tip("main"), before);
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("a.txt")).unwrap(),
        "mine\n"
    );
    assert!(
        land::LandLog::load(&fx.project().state_dir())
            .unwrap()
            .lands
            .is_empty()
    );
}

#[test]
fn target_checked_out_nowhere_only_the_ref_moves() {
    let mut fx = Fx::new(&[]);
    fx.git(&["switch", "-q", "-c", "elsewhere"]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let r = fx.land(&[]);
    assert!(r.moved && r.checkout.is_none());
    assert_eq!(fx.log("main")[0], "a: change 1|agent-a|a");
    assert!(!fx.repo.join("a.txt").exists());
    assert_eq!(fx.git(&["rev-parse", "--abbrev-ref", "HEAD"]), "elsewhere");
}

#[test]
fn target_checked_out_in_a_linked_worktree_moves_its_files() {
    let mut fx = Fx::new(&[]);
    fx.git(&["switch", "-q", "-c", "elsewhere"]);
    let linked = fx.repo.parent().unwrap().join("main-wt");
    fx.git(&["worktree", "add", "-q", linked.to_str().unwrap(), "main"]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let r = fx.land(&[]);
    assert!(r.moved);
    assert_eq!(
        r.checkout.as_deref().map(|p| p.canonicalize().unwrap()),
        Some(linked.canonicalize().unwrap())
    );
    assert!(linked.join("a.txt").exists());
    assert_eq!(git_in(&linked, &["status", "--porcelain"]), "");
    assert!(!fx.repo.join("a.txt").exists());
}

#[test]
fn validation_passes_in_the_land_worktree_without_credentials() {
    let mut fx = Fx::new(&[
        "test -f a.txt",
        "test -z \"$ANTHROPIC_API_KEY$CLAUDE_CODE_OAUTH_TOKEN\"",
    ]);
    // SAFETY: no other test in this binary reads these variables.
    unsafe {
        std::env::set_var("ANTHROPIC_API_KEY", "sk-secret");
        std::env::set_var("CLAUDE_CODE_OAUTH_TOKEN", "oauth-secret");
    }
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let r = fx.land(&[]);
    assert_eq!(r.validation, Validation::Passed, "{}", r.render(&fx.repo));
    assert!(r.moved);
    assert!(fx.repo.join(".worktrees/.land/a.txt").exists());
    assert_eq!(
        git_in(&fx.repo.join(".worktrees/.land"), &["rev-parse", "HEAD"]),
        fx.tip("main")
    );
    let log = std::fs::read_to_string(r.log.unwrap()).unwrap();
    assert!(log.contains("$ test -f a.txt"), "{log}");
    // The land worktree is excluded from git.
    assert_eq!(fx.git(&["status", "--porcelain"]), "");
}

#[test]
fn failed_validation_leaves_the_target_alone() {
    let mut fx = Fx::new(&["echo checking; exit 3"]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let before = fx.tip("main");
    let r = fx.land(&[]);
    assert_eq!(r.exit(), Exit::LandStopped);
    assert!(
        matches!(&r.validation, Validation::Failed { reason, .. } if reason == "exit status 3")
    );
    assert!(!r.moved);
    assert_eq!(fx.tip("main"), before);
    assert!(!fx.repo.join("a.txt").exists());
    assert!(
        std::fs::read_to_string(r.log.clone().unwrap())
            .unwrap()
            .contains("checking")
    );
    assert!(r.render(&fx.repo).contains("Validation FAILED"));
    // --no-validate lands it.
    let ids: Vec<String> = vec![];
    let r = land::land(
        &fx.project(),
        &ids,
        &LandOptions {
            no_validate: true,
            ..LandOptions::default()
        },
    )
    .unwrap();
    assert!(r.moved);
    assert_eq!(r.validation, Validation::Skipped);
}

#[test]
fn validation_timeout_kills_the_command() {
    let mut fx = Fx::new(&[]);
    std::fs::write(
        fx.repo.parent().unwrap().join("flocks.toml"),
        "kill_grace_secs = 0.2\n[workspace]\nrepo = \"repo\"\n[validate]\ncommands = [\"sleep 30 & sleep 30\"]\ntimeout_secs = 0.5\n",
    )
    .unwrap();
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let before = fx.tip("main");
    let started = std::time::Instant::now();
    let r = fx.land(&[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        matches!(&r.validation, Validation::Failed { reason, .. } if reason.contains("timed out")),
        "{:?}",
        r.validation
    );
    assert_eq!(fx.tip("main"), before);
}

/// A Ctrl-C while a validate command runs stops the command (not flocks):
/// the validation is interrupted and nothing lands.
#[test]
fn ctrl_c_during_validation_stops_the_command_and_lands_nothing() {
    let mut fx = Fx::new(&[]);
    let started_file = fx.repo.parent().unwrap().join("validating");
    std::fs::write(
        fx.repo.parent().unwrap().join("flocks.toml"),
        format!(
            "kill_grace_secs = 0.2\n[workspace]\nrepo = \"repo\"\n[validate]\ncommands = [\"touch {} && sleep 30\"]\n",
            started_file.display()
        ),
    )
    .unwrap();
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let before = fx.tip("main");
    let seen = started_file.clone();
    // nextest runs each test in a process of its own: the SIGINT is ours.
    let ctrl_c = std::thread::spawn(move || {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !seen.exists() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGINT).unwrap();
    });
    let started = std::time::Instant::now();
    let r = fx.land(&[]);
    ctrl_c.join().unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        matches!(&r.validation, Validation::Interrupted { .. }),
        "{:?}",
        r.validation
    );
    assert_eq!(fx.tip("main"), before);
}

#[test]
fn landing_twice_lands_nothing_the_second_time() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.land(&[]);
    let after = fx.tip("main");
    let r = fx.land(&[]);
    assert_eq!(outcome(&r, "a"), &TaskOutcome::AlreadyLanded);
    assert!(!r.moved);
    assert_eq!(fx.tip("main"), after);
}

#[test]
fn crash_between_ref_move_and_record_never_lands_twice() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.land(&[]);
    let after = fx.tip("main");
    std::fs::remove_file(fx.project().state_dir().join("land.json")).unwrap();
    let r = fx.land(&[]);
    assert_eq!(outcome(&r, "a"), &TaskOutcome::AlreadyLanded);
    assert_eq!(fx.tip("main"), after);
    assert_eq!(fx.log("main").len(), 2);
}

#[test]
fn a_branch_moved_after_success_is_refused() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.task("b", "main", &[&[("b.txt", "b\n")]]);
    let recorded = fx.tip("flocks/a");
    fx.commit_on("flocks/a", &[("evil.txt", "x\n")], "rewrite", "other-agent");
    let r = fx.land(&[]);
    match outcome(&r, "a") {
        TaskOutcome::Refused { reason } => {
            assert!(
                reason.contains("moved since the task succeeded")
                    && reason.contains(&recorded[..10]),
                "{reason}"
            )
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(r.exit(), Exit::Ok);
    assert_eq!(
        fx.log("main"),
        vec!["b: change 1|agent-b|b", "init|Lander|"]
    );
    assert!(!fx.repo.join("evil.txt").exists());
}

#[test]
fn dependent_of_a_conflicted_task_does_not_land() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("README.md", "from a\n")]]);
    fx.task("b", "main", &[&[("README.md", "from b\n")]]);
    let (s, t) = {
        let start = fx.tip("flocks/b");
        fx.git(&["branch", "flocks/c", &start]);
        fx.commit_on("flocks/c", &[("c.txt", "c\n")], "c: change 1", "agent-c");
        (start, fx.tip("flocks/c"))
    };
    fx.add_record("c", "flocks/c", &s, &t, &["b"]);
    let r = fx.land(&[]);
    assert!(matches!(outcome(&r, "b"), TaskOutcome::Conflicted { .. }));
    assert!(matches!(outcome(&r, "c"), TaskOutcome::Refused { reason } if reason.contains("`b`")));
    assert!(!fx.repo.join("c.txt").exists());
}

#[test]
fn dry_run_writes_nothing_and_has_a_stable_json_shape() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.task("e", "main", &[]);
    let state_dir = fx.project().state_dir();
    let before: Vec<_> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let plan = land::plan(&fx.project(), &[]).unwrap();
    assert_eq!(plan.tasks[0].status, PlanStatus::Ready);
    assert_eq!(plan.tasks[1].status, PlanStatus::Empty);
    let json = serde_json::to_value(plan.to_json()).unwrap();
    assert_eq!(json["target"], "main");
    assert_eq!(json["target_tip"], fx.tip("main"));
    assert_eq!(json["tasks"][0]["id"], "a");
    assert_eq!(json["tasks"][0]["status"], "ready");
    assert_eq!(json["tasks"][0]["commits"][0]["summary"], "a: change 1");
    assert_eq!(json["tasks"][0]["commits"][0]["sha"], fx.tip("flocks/a"));
    assert_eq!(json["tasks"][1]["status"], "empty");
    assert!(plan.render().contains("a  (flocks/a, 1 commit)"));
    let after: Vec<_> = std::fs::read_dir(&state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    assert!(!fx.repo.join(".worktrees").exists());
    assert_eq!(fx.log("main").len(), 1);
}

#[test]
fn chosen_tasks_only_and_unknown_ids() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.task("b", "main", &[&[("b.txt", "b\n")]]);
    let r = fx.land(&["b"]);
    assert_eq!(r.tasks.len(), 1);
    assert_eq!(
        fx.log("main"),
        vec!["b: change 1|agent-b|b", "init|Lander|"]
    );
    let err = land::plan(&fx.project(), &["nope".to_string()]).unwrap_err();
    assert_eq!(err.exit(), Exit::BadInput);
}

#[test]
fn undo_puts_the_target_back_and_the_task_can_land_again() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    let before = fx.tip("main");
    fx.land(&[]);
    assert!(fx.repo.join("a.txt").exists());
    let project = fx.project();
    let plan = land::plan_undo(&project).unwrap();
    assert_eq!(plan.to.to_string(), before);
    assert_eq!(plan.tasks, vec!["a".to_string()]);
    let lock = LandLock::acquire(&project.state_dir()).unwrap();
    land::undo(&project, &plan, &lock).unwrap().unwrap();
    drop(lock);
    assert_eq!(fx.tip("main"), before);
    assert!(!fx.repo.join("a.txt").exists());
    assert_eq!(fx.status(), "");
    // Nothing left to undo; the task lands again.
    assert!(land::plan_undo(&project).is_err());
    let r = fx.land(&[]);
    assert_eq!(
        outcome(&r, "a"),
        &TaskOutcome::Landed {
            commits: 1,
            dropped: 0
        }
    );
}

#[test]
fn undo_refuses_when_the_target_moved_since() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.land(&[]);
    fx.commit_on("main", &[("later.txt", "x\n")], "later work", "user");
    let err = land::plan_undo(&fx.project()).unwrap_err();
    assert!(
        err.to_string().contains("not where the last land left it"),
        "{err}"
    );
}

#[test]
fn clean_removes_landed_work_and_keeps_unlanded_branches() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.task("b", "main", &[&[("b.txt", "b\n")]]);
    fx.git(&["worktree", "add", "-q", ".worktrees/a", "flocks/a"]);
    fx.git(&["worktree", "add", "-q", ".worktrees/b", "flocks/b"]);
    fx.land(&["a"]);
    let project = fx.project();
    let run_lock = project.lock("clean").unwrap();
    let land_lock = LandLock::acquire(&project.state_dir()).unwrap();
    let report = land::clean(&project, &CleanOptions::default(), &run_lock, &land_lock).unwrap();
    assert_eq!(report.worktrees_removed, vec!["a".to_string()]);
    assert_eq!(report.branches_deleted, vec!["flocks/a".to_string()]);
    assert!(!fx.repo.join(".worktrees/a").exists());
    assert!(fx.repo.join(".worktrees/b").exists());
    assert!(fx.git(&["branch", "--list", "flocks/a"]).is_empty());
    assert!(!fx.git(&["branch", "--list", "flocks/b"]).is_empty());
    assert!(
        report
            .kept
            .iter()
            .any(|(id, why)| id == "b" && why.contains("not landed"))
    );
    // git agrees the worktree is gone.
    assert!(!fx.git(&["worktree", "list"]).contains(".worktrees/a"));
    // A second clean has nothing more to do.
    let again = land::clean(&project, &CleanOptions::default(), &run_lock, &land_lock).unwrap();
    assert!(again.worktrees_removed.is_empty() && again.branches_deleted.is_empty());
}

#[test]
fn clean_removes_the_land_worktree() {
    let mut fx = Fx::new(&["true"]);
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.land(&[]);
    assert!(fx.repo.join(".worktrees/.land").exists());
    assert!(fx.git(&["worktree", "list"]).contains(".land"));
    let project = fx.project();
    let run_lock = project.lock("clean").unwrap();
    let land_lock = LandLock::acquire(&project.state_dir()).unwrap();
    let report = land::clean(&project, &CleanOptions::default(), &run_lock, &land_lock).unwrap();
    assert!(report.land_worktree_removed);
    assert!(!fx.repo.join(".worktrees/.land").exists());
    assert!(!fx.git(&["worktree", "list"]).contains(".land"));
    assert_eq!(report.branches_deleted, vec!["flocks/a".to_string()]);
}

#[test]
fn the_land_worktree_is_reused() {
    let mut fx = Fx::new(&["touch ignored.cache untracked.txt"]);
    std::fs::write(fx.repo.join(".git/info/exclude"), "ignored.cache\n").unwrap();
    fx.task("a", "main", &[&[("a.txt", "a\n")]]);
    fx.land(&[]);
    let wt = fx.repo.join(".worktrees/.land");
    assert!(wt.join("ignored.cache").exists());
    fx.task("b", "main", &[&[("b.txt", "b\n")]]);
    std::fs::remove_file(wt.join("untracked.txt")).unwrap();
    std::fs::write(wt.join("stray.txt"), "x").unwrap();
    let r = fx.land(&["b"]);
    assert!(r.moved, "{}", r.render(&fx.repo));
    assert!(wt.join("b.txt").exists() && wt.join("a.txt").exists());
    // Untracked leftovers are gone, ignored caches stay.
    assert!(!wt.join("stray.txt").exists());
    assert!(wt.join("ignored.cache").exists());
}

#[test]
fn clean_all_removes_failed_worktrees_but_keeps_their_unlanded_branches() {
    let mut fx = Fx::new(&[]);
    fx.task("f", "main", &[&[("f.txt", "f\n")]]);
    fx.tasks[0].status = TaskStatus::Done {
        outcome: Outcome::Failed {
            reason: "tests".into(),
        },
    };
    fx.tasks[0].attempts[0].outcome = Some(Outcome::Failed {
        reason: "tests".into(),
    });
    fx.save();
    fx.git(&["worktree", "add", "-q", ".worktrees/f", "flocks/f"]);
    let project = fx.project();
    let run_lock = project.lock("clean").unwrap();
    let land_lock = LandLock::acquire(&project.state_dir()).unwrap();
    let none = land::clean(
        &project,
        &CleanOptions { all: false },
        &run_lock,
        &land_lock,
    )
    .unwrap();
    assert!(none.worktrees_removed.is_empty());
    let report = land::clean(&project, &CleanOptions { all: true }, &run_lock, &land_lock).unwrap();
    assert_eq!(report.worktrees_removed, vec!["f".to_string()]);
    assert!(report.branches_deleted.is_empty());
    assert!(!fx.git(&["branch", "--list", "flocks/f"]).is_empty());
}

#[test]
fn a_task_retried_after_it_landed_lands_its_new_work() {
    let mut fx = Fx::new(&[]);
    fx.task("a", "main", &[&[("a.txt", "a1\n")]]);
    fx.land(&[]);
    // A second attempt continues on the same branch, after the land.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let start = fx.tip("flocks/a");
    fx.commit_on("flocks/a", &[("a.txt", "a2\n")], "a: more", "agent-a");
    let tip = fx.tip("flocks/a");
    let now = chrono::Utc::now();
    let mut second = fx.tasks[0].attempts[0].clone();
    second.number = 2;
    second.started_at = now;
    second.ended_at = Some(now);
    second.start_commit = Some(start);
    second.end_tip = Some(tip);
    fx.tasks[0].attempts.push(second);
    fx.save();
    let r = fx.land(&[]);
    assert_eq!(
        outcome(&r, "a"),
        &TaskOutcome::Landed {
            commits: 1,
            dropped: 0
        }
    );
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("a.txt")).unwrap(),
        "a2\n"
    );
    // And only once.
    let r = fx.land(&[]);
    assert_eq!(outcome(&r, "a"), &TaskOutcome::AlreadyLanded);
}
