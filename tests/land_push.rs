//! `flocks land --push` with a local bare repository as the remote: the
//! lease, a remote that moves between the plan and the push, a target
//! behind its remote, `[land] after_push`, and `--undo` after a push.

mod support;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use support::{TestProject, code, git_in, text};

/// A project whose `origin` is a bare repository holding its main, and a
/// second clone of it (someone else's) at `other`.
struct Pushy {
    p: TestProject,
    bare: PathBuf,
    other: PathBuf,
}

fn git_at(dir: &Path, args: &[&str]) -> String {
    git_in(dir, args, &[])
}

impl Pushy {
    fn new(extra: &str) -> Pushy {
        let p = TestProject::new(extra);
        let bare = p.tmp.path().join("remote.git");
        let other = p.tmp.path().join("other");
        git_at(
            p.tmp.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        p.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
        p.git(&["push", "-q", "origin", "main"]);
        git_at(
            p.tmp.path(),
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                other.to_str().unwrap(),
            ],
        );
        git_at(&other, &["config", "user.name", "Someone Else"]);
        git_at(&other, &["config", "user.email", "else@example.com"]);
        Pushy { p, bare, other }
    }

    /// Someone else pushes a commit adding `file`.
    fn push_from_other(&self, file: &str) {
        std::fs::write(self.other.join(file), "theirs\n").unwrap();
        git_at(&self.other, &["pull", "-q", "--ff-only"]);
        git_at(&self.other, &["add", file]);
        git_at(&self.other, &["commit", "-q", "-m", &format!("add {file}")]);
        git_at(&self.other, &["push", "-q", "origin", "main"]);
    }

    fn remote_main(&self) -> String {
        git_at(&self.bare, &["rev-parse", "main"])
    }

    fn land_json(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.p.path(".flocks/land.json")).unwrap())
            .unwrap()
    }

    /// One task that commits `a.txt`, run to success.
    fn run_one(&self) {
        self.p
            .tasks(&[json!({"id": "a", "prompt": "@fake commit a.txt A\n@fake cost 0.01"})]);
        let out = self.p.flocks(&["run", "--no-progress"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
    }
}

#[test]
fn land_push_publishes_the_target_runs_after_push_and_guards_undo() {
    let out_file = tempfile::NamedTempFile::new().unwrap();
    let x = Pushy::new(&format!(
        "[land]\nafter_push = [\"echo \\\"$FLOCKS_REMOTE $FLOCKS_TARGET $FLOCKS_PUSHED\\\" > {}\"]\n",
        out_file.path().display()
    ));
    x.run_one();
    let before = x.remote_main();

    // Without --push (and no `[land] push`), the remote is left alone.
    let dry = x.p.flocks(&["land", "--dry-run", "--push"]);
    assert_eq!(code(&dry), 0, "{}", text(&dry));
    assert!(
        text(&dry).contains("Then main is pushed to origin"),
        "{}",
        text(&dry)
    );

    let out = x.p.flocks(&["land", "-y", "--push"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let main = x.p.git(&["rev-parse", "main"]);
    assert_ne!(main, before);
    assert_eq!(x.remote_main(), main, "{}", text(&out));
    assert!(text(&out).contains("Pushed main"), "{}", text(&out));
    assert!(text(&out).contains("after_push passed"), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(out_file.path()).unwrap().trim(),
        format!("origin main {main}")
    );
    let log = x.land_json();
    let last = log["lands"].as_array().unwrap().last().unwrap();
    assert_eq!(last["pushed"]["remote"], "origin", "{log}");

    // Undo refuses: the remote has it.
    let out = x.p.flocks(&["land", "--undo", "-y"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("pushed to origin") && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(x.p.git(&["rev-parse", "main"]), main, "nothing moved");
    let out = x.p.flocks(&["land", "--undo", "-y", "--force"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("origin keeps it"), "{}", text(&out));
    assert_eq!(x.p.git(&["rev-parse", "main"]), before);
    assert_eq!(x.remote_main(), main, "the remote keeps the land");
}

#[test]
fn a_remote_that_moved_between_plan_and_push_is_fetched_and_landed_on_again() {
    let flag = tempfile::tempdir().unwrap();
    let moved = flag.path().join("moved");
    let count = flag.path().join("validations");
    // The first validation is where someone else pushes: after flocks
    // planned on the remote's tip, before it pushes.
    let x = Pushy::new("");
    let other = x.other.display().to_string();
    let validate = format!(
        "echo x >> {count}; if [ ! -e {moved} ]; then touch {moved}; cd {other} && echo theirs > other.txt && git add other.txt && git commit -q -m 'add other.txt' && git push -q origin main; fi",
        count = count.display(),
        moved = moved.display(),
    );
    x.p.config(&format!(
        "[validate]\ncommands = [{}]\n",
        serde_json::to_string(&validate).unwrap()
    ));
    x.run_one();
    let base = x.p.git(&["rev-parse", "main"]);

    let out = x.p.flocks(&["land", "-y", "--push=origin"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("origin/main moved while flocks landed")
            && said.contains("planning the land again on top of it"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        2,
        "validated again on the new base: {said}"
    );
    let main = x.p.git(&["rev-parse", "main"]);
    assert_eq!(x.remote_main(), main, "{said}");
    // Their commit, then the task's on top; nothing of theirs lost.
    assert_eq!(x.p.git(&["show", "main:other.txt"]), "theirs");
    assert_eq!(x.p.git(&["show", "main:a.txt"]), "A");
    let theirs = x.p.git(&["rev-parse", "main~1"]);
    assert_eq!(git_at(&x.other, &["rev-parse", "HEAD"]), theirs);
    assert_eq!(x.p.git(&["rev-parse", "main~2"]), base);
    // land.json: the first land (never pushed) is undone, the second pushed.
    let log = x.land_json();
    let lands = log["lands"].as_array().unwrap();
    assert_eq!(lands.len(), 2, "{log}");
    assert_eq!(lands[0]["state"], "undone", "{log}");
    assert!(lands[0]["pushed"].is_null(), "{log}");
    assert_eq!(lands[1]["state"], "done", "{log}");
    assert_eq!(lands[1]["new_tip"], main.as_str(), "{log}");
    assert_eq!(lands[1]["pushed"]["remote"], "origin", "{log}");
    // Landed once in the events, however many times it was built.
    let events = std::fs::read_to_string(x.p.path(".flocks/events.jsonl")).unwrap();
    assert_eq!(
        events.matches("\"event\":\"landed\"").count(),
        1,
        "{events}"
    );
}

#[test]
fn a_target_behind_its_remote_is_brought_up_first_and_after_push_failure_is_exit_4() {
    let x = Pushy::new(
        "[land]\npush = \"origin\"\nafter_push = [[\"sh\", \"-c\", \"echo checking the deploy; exit 3\"]]\n",
    );
    x.run_one();
    // Someone pushed before the land: main is behind origin/main.
    x.push_from_other("early.txt");

    // `--no-push` overrides `[land] push`.
    let out = x.p.flocks(&["land", "--dry-run", "--no-push"]);
    assert!(!text(&out).contains("pushed to origin"), "{}", text(&out));

    let out = x.p.flocks(&["land", "-y"]);
    let said = text(&out);
    assert_eq!(code(&out), 4, "{said}");
    assert!(
        said.contains("main was behind origin/main: fast-forwarded it"),
        "{said}"
    );
    assert!(
        said.contains("after_push `sh -c echo checking the deploy; exit 3` failed (exit status 3); the push stands"),
        "{said}"
    );
    assert!(
        said.contains("checking the deploy"),
        "its output is shown: {said}"
    );
    let main = x.p.git(&["rev-parse", "main"]);
    assert_eq!(x.remote_main(), main, "{said}");
    assert_eq!(x.p.git(&["show", "main:early.txt"]), "theirs");
    assert_eq!(x.p.git(&["show", "main:a.txt"]), "A");

    // A remote that is not one: named, with the remotes there are.
    let out = x.p.flocks(&["land", "-y", "--push=upstream"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("no remote `upstream`") && text(&out).contains("origin"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_target_that_diverged_from_its_remote_is_refused_before_anything_moves() {
    let x = Pushy::new("");
    x.run_one();
    x.push_from_other("theirs.txt");
    // A commit of main's own, not on origin.
    std::fs::write(x.p.path("mine.txt"), "mine\n").unwrap();
    x.p.git(&["add", "mine.txt"]);
    x.p.git(&["commit", "-q", "-m", "mine"]);
    let main = x.p.git(&["rev-parse", "main"]);
    let out = x.p.flocks(&["land", "-y", "--push"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(
        text(&out).contains("main and origin/main have diverged"),
        "{}",
        text(&out)
    );
    assert_eq!(x.p.git(&["rev-parse", "main"]), main, "nothing moved");
}

#[test]
fn bad_land_keys_name_the_file_line_and_field() {
    for (toml, key) in [
        ("[land]\npush = 1\n", "land.push"),
        ("[land]\npush = \"-oops\"\n", "land.push"),
        ("[land]\nafter_push = \"true\"\n", "land.after_push"),
    ] {
        let p = TestProject::new(&format!("max_agents = 1\n{toml}"));
        let out = p.flocks(&["land", "--dry-run"]);
        assert_eq!(code(&out), 2, "{toml}: {}", text(&out));
        let said = text(&out);
        assert!(
            said.contains("flocks.toml:5") && said.contains(key),
            "{toml}: {said}"
        );
    }
}
