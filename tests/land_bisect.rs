//! `flocks land --bisect` (through the library, on real repos with a
//! hand-written state.json) and `flocks land --resolve` (through the real
//! binary, after a real `flocks run` with the fake agent).

mod support;

use std::path::PathBuf;
use std::process::Command;

use flocks::config::Config;
use flocks::error::Exit;
use flocks::land::{self, LandOptions, TaskOutcome, Validation};
use flocks::project::Project;
use flocks::state::{Attempt, Outcome, State, TaskRecord, TaskStatus};
use serde_json::json;
use support::{TestProject, code, git_in, text};

/// A repo with `main` checked out, tasks built by hand, and a validation
/// script outside the repo that counts its runs, fails when a file holds
/// "BROKEN", and notes when the user's checkout moved while it ran.
struct Fx {
    dir: tempfile::TempDir,
    repo: PathBuf,
    tasks: Vec<TaskRecord>,
}

impl Fx {
    fn new() -> Fx {
        // Validation runs under the flocks supervisor: the flocks binary, not
        // this test binary. SAFETY: nextest runs each test in its own
        // process, and nothing reads the environment concurrently here.
        unsafe { std::env::set_var("FLOCKS_SUPERVISOR", env!("CARGO_BIN_EXE_flocks")) };
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        let fx = Fx {
            repo,
            dir,
            tasks: Vec::new(),
        };
        fx.git(&["init", "-q", "-b", "main"]);
        fx.git(&["config", "user.name", "Lander"]);
        fx.git(&["config", "user.email", "lander@example.com"]);
        std::fs::write(fx.repo.join("README.md"), "hello\n").unwrap();
        fx.git(&["add", "."]);
        fx.git(&["commit", "-q", "-m", "init"]);
        let script = format!(
            "echo round >> '{counter}'\n\
             if [ \"$(git -C '{repo}' rev-parse main)\" != '{orig}' ] || ls '{repo}' | grep -q '^f'; then\n\
             \x20 echo moved >> '{moved}'\n\
             fi\n\
             if grep -rl BROKEN --exclude-dir=.git .; then echo 'BROKEN found'; exit 1; fi\n\
             echo all good\n",
            counter = fx.counter().display(),
            repo = fx.repo.display(),
            orig = fx.tip("main"),
            moved = fx.moved().display(),
        );
        std::fs::write(fx.dir.path().join("check.sh"), script).unwrap();
        fx.config(&fx.check(), 20.0);
        fx
    }

    /// `sh <the validation script>`
    fn check(&self) -> String {
        format!("sh {}", self.dir.path().join("check.sh").display())
    }

    fn config(&self, validate: &str, timeout: f64) {
        std::fs::write(
            self.dir.path().join("flocks.toml"),
            format!(
                "kill_grace_secs = 0.2\n[workspace]\nrepo = \"repo\"\nland_target = \"main\"\n\n\
                 [validate]\ncommands = [{validate:?}]\ntimeout_secs = {timeout}\n"
            ),
        )
        .unwrap();
    }

    fn counter(&self) -> PathBuf {
        self.dir.path().join("validations")
    }

    fn moved(&self) -> PathBuf {
        self.dir.path().join("moved")
    }

    fn validations(&self) -> usize {
        std::fs::read_to_string(self.counter())
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    fn git(&self, args: &[&str]) -> String {
        git_in(&self.repo, args, &[])
    }

    fn tip(&self, rev: &str) -> String {
        self.git(&["rev-parse", rev])
    }

    fn project(&self) -> Project {
        Project::from_config(Config::load(&self.dir.path().join("flocks.toml")).unwrap())
    }

    /// A succeeded task: one commit on its branch (from main) writing `files`.
    fn task(&mut self, id: &str, files: &[(&str, &str)], deps: &[&str]) {
        let branch = format!("flocks/{id}");
        let start = self.tip("main");
        let index = self.dir.path().join(format!("index-{id}"));
        let env = [("GIT_INDEX_FILE", index.to_str().unwrap())];
        git_in(&self.repo, &["read-tree", &start], &env);
        for (path, content) in files {
            let blob_file = self.dir.path().join("blob");
            std::fs::write(&blob_file, content).unwrap();
            let blob = git_in(
                &self.repo,
                &["hash-object", "-w", blob_file.to_str().unwrap()],
                &env,
            );
            git_in(
                &self.repo,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("100644,{blob},{path}"),
                ],
                &env,
            );
        }
        let tree = git_in(&self.repo, &["write-tree"], &env);
        let tip = git_in(
            &self.repo,
            &[
                "commit-tree",
                &tree,
                "-p",
                &start,
                "-m",
                &format!("{id}: work"),
            ],
            &env,
        );
        self.git(&["branch", &branch, &tip]);
        let now = chrono::Utc::now();
        self.tasks.push(TaskRecord {
            id: id.into(),
            branch,
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
                start_commit: Some(start.clone()),
                end_tip: Some(tip),
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
            origin: Some(start),
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
        let state = State {
            tasks: self.tasks.clone(),
            ..State::default()
        };
        self.project().store.save(&state).unwrap();
    }

    /// 16 tasks t01..t16, each adding its own file; those in `broken` write
    /// "BROKEN" into theirs.
    fn sixteen(&mut self, broken: &[usize]) {
        self.sixteen_with(broken, |_| (None, None));
    }

    /// The same, with `more(i)` giving task i an extra file and a dependency.
    fn sixteen_with(
        &mut self,
        broken: &[usize],
        more: impl Fn(usize) -> (Option<(&'static str, &'static str)>, Option<&'static str>),
    ) {
        for i in 1..=16 {
            let content = if broken.contains(&i) {
                format!("BROKEN {i}\n")
            } else {
                format!("ok {i}\n")
            };
            let name = format!("f{i:02}.txt");
            let (extra, dep) = more(i);
            let mut files = vec![(name.as_str(), content.as_str())];
            files.extend(extra);
            let deps: Vec<&str> = dep.into_iter().collect();
            self.task(&format!("t{i:02}"), &files, &deps);
        }
    }

    fn bisect(&self) -> land::Report {
        let opts = LandOptions {
            bisect: true,
            ..LandOptions::default()
        };
        land::land(&self.project(), &[], &opts).unwrap()
    }

    /// Task ids with a `Flocks-Task` trailer on main.
    fn landed(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .git(&[
                "log",
                "--format=%(trailers:key=Flocks-Task,valueonly,separator=)",
                "main",
            ])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        ids.sort();
        ids
    }
}

fn bound(k: usize, n: usize) -> usize {
    k * ((n as f64).log2().ceil() as usize + 1) + 1
}

fn culprits(r: &land::Report) -> Vec<String> {
    r.tasks
        .iter()
        .filter(|t| matches!(t.outcome, TaskOutcome::Culprit { .. }))
        .map(|t| t.id.clone())
        .collect()
}

fn all_but(skip: &[&str]) -> Vec<String> {
    (1..=16)
        .map(|i| format!("t{i:02}"))
        .filter(|id| !skip.contains(&id.as_str()))
        .collect()
}

/// What every test checks after a bisect that landed: main passes
/// validation, the checkout is clean and at main, and it never moved while
/// validation ran.
fn check_landed(fx: &Fx, r: &land::Report) {
    assert!(r.moved, "{}", r.render(&fx.repo));
    assert_eq!(r.validation, Validation::Passed);
    assert_eq!(fx.tip("main"), r.new_tip.to_string());
    assert!(
        !fx.moved().exists(),
        "the user's checkout moved while validation ran"
    );
    assert_eq!(
        fx.git(&["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
    // main as it is now passes the validation command.
    let grep = Command::new("git")
        .args(["grep", "-q", "BROKEN", "main"])
        .current_dir(&fx.repo)
        .status()
        .unwrap();
    assert!(!grep.success(), "main holds BROKEN");
    // The target moved once, to a state that passed validation.
    let log = land::LandLog::load(&fx.project().state_dir()).unwrap();
    assert_eq!(log.lands.len(), 1);
    assert!(log.lands[0].validated);
    assert_eq!(r.validations(), fx.validations());
}

#[test]
fn one_culprit_in_sixteen_is_found_and_the_rest_lands() {
    let mut fx = Fx::new();
    fx.sixteen(&[11]);
    let before = fx.tip("main");
    let r = fx.bisect();
    assert_eq!(culprits(&r), vec!["t11"], "{}", r.render(&fx.repo));
    assert!(fx.validations() <= bound(1, 16), "{}", fx.validations());
    assert_eq!(r.exit(), Exit::LandStopped);
    assert_eq!(fx.landed(), all_but(&["t11"]));
    check_landed(&fx, &r);
    assert_eq!(r.old_tip.to_string(), before);

    // The culprit comes with the output that condemns it.
    let t11 = r.tasks.iter().find(|t| t.id == "t11").unwrap();
    let TaskOutcome::Culprit {
        failure, log, tail, ..
    } = &t11.outcome
    else {
        unreachable!()
    };
    assert!(matches!(failure, Validation::Failed { reason, .. } if reason == "exit status 1"));
    assert!(log.starts_with(fx.project().state_dir().join("land-logs")));
    let logged = std::fs::read_to_string(log).unwrap();
    assert!(
        logged.contains("./f11.txt") && logged.contains("BROKEN found"),
        "{logged}"
    );
    assert!(tail.iter().any(|l| l.contains("f11.txt")));
    let summary = r.render(&fx.repo);
    assert!(summary.contains("Culprits"), "{summary}");
    assert!(summary.contains("flocks retry t11 --force"), "{summary}");
    assert!(summary.contains(&log.display().to_string()), "{summary}");
    assert!(summary.contains("Bisect: "), "{summary}");
}

#[test]
fn two_culprits_in_sixteen_with_a_conflict_and_a_dependent() {
    let mut fx = Fx::new();
    // t15 conflicts with t02 in README.md; t16 depends on t13.
    fx.sixteen_with(&[4, 13], |i| match i {
        2 => (Some(("README.md", "two\n")), None),
        15 => (Some(("README.md", "fifteen\n")), None),
        16 => (None, Some("t13")),
        _ => (None, None),
    });
    let r = fx.bisect();
    assert_eq!(culprits(&r), vec!["t04", "t13"], "{}", r.render(&fx.repo));
    assert!(fx.validations() <= bound(2, 16), "{}", fx.validations());
    match &r.tasks.iter().find(|t| t.id == "t15").unwrap().outcome {
        TaskOutcome::Conflicted { files, .. } => assert_eq!(files, &["README.md".to_string()]),
        o => panic!("{o:?}"),
    }
    match &r.tasks.iter().find(|t| t.id == "t16").unwrap().outcome {
        TaskOutcome::Refused { reason } => assert!(reason.contains("t13"), "{reason}"),
        o => panic!("{o:?}"),
    }
    assert_eq!(fx.landed(), all_but(&["t04", "t13", "t15", "t16"]));
    check_landed(&fx, &r);
}

#[test]
fn a_passing_batch_is_validated_once() {
    let mut fx = Fx::new();
    fx.sixteen(&[]);
    let r = fx.bisect();
    assert_eq!(r.exit(), Exit::Ok, "{}", r.render(&fx.repo));
    assert_eq!(fx.validations(), 1);
    assert_eq!(fx.landed(), all_but(&[]));
    check_landed(&fx, &r);
}

#[test]
fn every_task_guilty_leaves_the_target_alone() {
    let mut fx = Fx::new();
    fx.task("a", &[("fa.txt", "BROKEN\n")], &[]);
    fx.task("b", &[("fb.txt", "BROKEN\n")], &[]);
    let before = fx.tip("main");
    let r = fx.bisect();
    assert_eq!(culprits(&r), vec!["a", "b"]);
    assert!(!r.moved);
    assert_eq!(fx.tip("main"), before);
    assert!(!fx.repo.join("fa.txt").exists());
    assert_eq!(r.exit(), Exit::LandStopped);
}

#[test]
fn a_target_that_fails_on_its_own_blames_nobody_and_nothing_moves() {
    let mut fx = Fx::new();
    fx.config("echo broken from the start; exit 1", 20.0);
    for id in ["a", "b", "c"] {
        fx.task(id, &[(&format!("f{id}.txt"), "ok\n")], &[]);
    }
    let before = fx.tip("main");
    let r = fx.bisect();
    assert!(culprits(&r).is_empty(), "{}", r.render(&fx.repo));
    assert!(!r.moved);
    assert_eq!(fx.tip("main"), before);
    assert!(
        r.stopped
            .as_deref()
            .unwrap()
            .contains("fails validation on its own")
    );
    assert_eq!(r.exit(), Exit::LandStopped);
    assert_eq!(
        fx.git(&["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
}

#[test]
fn a_validation_that_times_out_counts_as_failing() {
    let mut fx = Fx::new();
    // Hangs (instead of failing) on b's file.
    fx.config(
        &format!("if [ -e fb.txt ]; then sleep 30; fi; {}", fx.check()),
        1.0,
    );
    fx.task("a", &[("fa.txt", "ok\n")], &[]);
    fx.task("b", &[("fb.txt", "ok\n")], &[]);
    fx.task("c", &[("fc.txt", "ok\n")], &[]);
    let r = fx.bisect();
    assert_eq!(culprits(&r), vec!["b"], "{}", r.render(&fx.repo));
    assert_eq!(fx.landed(), vec!["a", "c"]);
    assert!(r.render(&fx.repo).contains("timed out"));
}

// --- --resolve -------------------------------------------------------------

/// Two tasks that each append a line to the same new file: whichever lands
/// second conflicts. `b` fails its first redo when `OUT/redo` exists (once,
/// or always with `always`).
fn conflicting(extra: &str, always: bool) -> TestProject {
    let p = TestProject::new(&format!(
        "{extra}\n[validate]\ncommands = [\"test -f notes.txt\"]\ntimeout_secs = 20\n"
    ));
    let redo = p.out_file("redo");
    let fail = if always {
        "fail redo failed".to_string()
    } else {
        format!("fail-once {}", p.out_file("failed-once").display())
    };
    p.tasks(&[
        json!({"id": "a", "prompt": "Add a line.\n@fake append notes.txt from-a"}),
        json!({"id": "b", "prompt": format!(
            "Add another line.\n@fake record {}\n@fake if-exists {} {fail}\n@fake append notes.txt from-b",
            p.out_file("b.jsonl").display(), redo.display())}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    std::fs::write(&redo, "").unwrap();
    p
}

#[test]
fn resolve_redoes_a_conflicted_task_on_the_new_target_and_lands_both() {
    let p = conflicting("max_retries = 1", false);
    let old_b = p.git(&["rev-parse", "flocks/b"]);
    let out = p.flocks(&["land", "-y", "--resolve"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(
        said.contains("resolve: redoing 1 conflicted task "),
        "{said}"
    );
    assert!(said.contains("Resolved"), "{said}");

    // Both landed, b redone on top of a.
    assert_eq!(p.git(&["show", "main:notes.txt"]), "from-a\nfrom-b");
    let trailers = p.git(&[
        "log",
        "--format=%(trailers:key=Flocks-Task,valueonly,separator=)",
        "main",
    ]);
    assert!(trailers.lines().any(|l| l == "a") && trailers.lines().any(|l| l == "b"));
    assert_eq!(
        std::fs::read_to_string(p.path("notes.txt")).unwrap(),
        "from-a\nfrom-b\n"
    );
    assert_eq!(
        p.git(&["status", "--porcelain", "--untracked-files=no"]),
        ""
    );

    // Attempt 2 started from main as a's land left it, failed, and a
    // supervised retry (attempt 3) finished it.
    let b = p.task("b");
    let attempts = b["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "{b}");
    assert_eq!(attempts[1]["start_commit"], p.git(&["rev-parse", "main~1"]));
    // The redo set the task's new origin: what lands is origin..tip.
    assert_eq!(b["origin"], p.git(&["rev-parse", "main~1"]));
    assert_eq!(attempts[1]["outcome"]["kind"], "failed");
    assert_eq!(p.status_of("b"), "success");
    // The old work is kept.
    assert_eq!(p.git(&["rev-parse", "refs/flocks/backup/b/1"]), old_b);
    // Both lands wrote their `landed` events.
    let events = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    for id in ["a", "b"] {
        assert!(
            events
                .lines()
                .any(|l| l.contains(r#""event":"landed""#)
                    && l.contains(&format!(r#""task":"{id}""#))),
            "{events}"
        );
    }

    // The redo's prompt: the original prompt, the conflict, the old diff.
    let recs = std::fs::read_to_string(p.out_file("b.jsonl")).unwrap();
    let redo: serde_json::Value = serde_json::from_str(recs.lines().nth(1).unwrap()).unwrap();
    let prompt = redo["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("Add another line."), "{prompt}");
    assert!(
        prompt.contains("conflicts with `main` in these files:\n\n- notes.txt"),
        "{prompt}"
    );
    assert!(prompt.contains("+from-b"), "{prompt}");
    assert!(prompt.contains("refs/flocks/backup/b/1"), "{prompt}");
}

#[test]
fn resolve_with_a_failing_agent_leaves_nothing_half_applied() {
    let p = conflicting("max_retries = 0", true);
    let out = p.flocks(&["land", "-y", "--resolve"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    // a landed; nothing of b.
    assert_eq!(p.git(&["show", "main:notes.txt"]), "from-a");
    let trailers = p.git(&[
        "log",
        "--format=%(trailers:key=Flocks-Task,valueonly)",
        "main",
    ]);
    assert!(!trailers.lines().any(|l| l == "b"), "{trailers}");
    assert_eq!(
        std::fs::read_to_string(p.path("notes.txt")).unwrap(),
        "from-a\n"
    );
    assert_eq!(
        p.git(&["status", "--porcelain", "--untracked-files=no"]),
        ""
    );
    assert!(said.contains("the redo did not succeed"), "{said}");
    assert!(said.contains("flocks logs b"), "{said}");
    assert!(said.contains("flocks retry b"), "{said}");
    assert_eq!(p.task("b")["attempts"].as_array().unwrap().len(), 2);
    assert!(p.git_ok(&["rev-parse", "--verify", "refs/flocks/backup/b/1"]));
}

#[test]
fn resolve_needs_the_project_lock() {
    let p = conflicting("", false);
    let before = p.git(&["rev-parse", "main"]);
    let _held = flocks::state::ProjectLock::acquire(&p.path(".flocks"), "run").unwrap();
    let out = p.flocks(&["land", "-y", "--resolve"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("land --resolve dispatches agents"));
    // Checked before anything landed.
    assert_eq!(p.git(&["rev-parse", "main"]), before);
}

#[test]
fn bisect_from_the_command_line_shows_its_rounds_and_culprits() {
    let p = TestProject::new(
        "[validate]\ncommands = [\"! grep -rq BROKEN --exclude-dir=.git .\"]\ntimeout_secs = 20\n",
    );
    let tasks: Vec<_> = (1..=4)
        .map(|i| {
            let content = if i == 3 { "BROKEN" } else { "ok" };
            json!({"id": format!("t{i}"), "prompt": format!("@fake commit f{i}.txt {content}")})
        })
        .collect();
    p.tasks(&tasks);
    assert_eq!(code(&p.flocks(&["run"])), 0);
    let out = p.flocks(&["land", "-y", "--bisect"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    assert!(
        said.contains("bisect round 1: validating all 4 tasks (t1 .. t4)"),
        "{said}"
    );
    assert!(said.contains("bisect: t3 breaks validation"), "{said}");
    assert!(said.contains("Culprits"), "{said}");
    assert!(said.contains("Landed on main"), "{said}");
    assert!(!p.path("f3.txt").exists());
    assert!(p.path("f4.txt").exists());
}
