//! `flocks diff <id>`: the task's change (the range land applies) as git
//! shows it; through the user's pager with colours on a terminal, plain
//! otherwise.

mod support;

use std::process::Command;

use serde_json::json;
use support::*;

/// Runs argv[1..] on a new pseudo-terminal and copies what it printed.
const ON_A_TERMINAL: &str = r#"
import os, pty, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = bytearray()
while True:
    try:
        b = os.read(fd, 65536)
    except OSError:
        break
    if not b:
        break
    out += b
_, st = os.waitpid(pid, 0)
sys.stdout.buffer.write(bytes(out))
sys.exit(os.waitstatus_to_exitcode(st))
"#;

/// `flocks args` with stdout on a terminal, with `env` set.
fn on_terminal(p: &TestProject, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("python3");
    c.arg("-c").arg(ON_A_TERMINAL).arg(FLOCKS).args(args);
    c.current_dir(&p.repo);
    for v in ["GIT_PAGER", "PAGER", "NO_COLOR", "LESS"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied());
    c.output()
        .expect("python3 runs the terminal helper: install python3")
}

fn git_out(p: &TestProject, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(&p.repo)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn project() -> TestProject {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt from-a\n@fake append README.md more-from-a"}),
        json!({"id": "bad", "prompt": "@fake fail broken"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    p
}

#[test]
fn diff_shows_the_tasks_change_plain_when_not_on_a_terminal() {
    let p = project();
    let out = p.flocks(&["diff", "a"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let shown = String::from_utf8(out.stdout).unwrap();
    // The task started from main, which has not moved: its change is main..flocks/a.
    assert_eq!(
        shown,
        git_out(&p, &["diff", "--color=never", "main", "flocks/a"])
    );
    assert!(
        shown.contains("+from-a") && shown.contains("+more-from-a"),
        "{shown}"
    );
    assert!(!shown.contains('\x1b'), "no colour off a terminal");
    // Asked for, colour comes through a pipe too, as with every command.
    let forced = p.flocks(&["--color", "always", "diff", "a"]);
    assert_eq!(code(&forced), 0, "{}", text(&forced));
    assert_eq!(
        String::from_utf8(forced.stdout).unwrap(),
        git_out(&p, &["diff", "--color=always", "main", "flocks/a"])
    );

    let out = p.flocks(&["diff", "a", "--stat"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        git_out(&p, &["diff", "--color=never", "--stat", "main", "flocks/a"])
    );

    // Once landed, diff still shows what land applied.
    assert_eq!(code(&p.flocks(&["land", "-y", "a"])), 0);
    let out = p.flocks(&["diff", "a"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), shown);
}

#[test]
fn diff_says_why_a_task_has_no_change() {
    let p = project();
    let out = p.flocks(&["diff", "ghost"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no task `ghost` in the run state: see `flocks status` for the task ids\n"
    );
    assert_eq!(code(&out), 2);
    let out = p.flocks(&["diff", "bad"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: task `bad` has no change that land would apply: it has not succeeded (it is failed); `flocks logs bad` shows its last attempt\n"
    );
    assert_eq!(code(&out), 2);
}

#[test]
fn on_a_terminal_diff_goes_through_the_pager_with_colours() {
    let p = project();
    let paged = p.out_file("paged");
    let git_paged = p.out_file("git-paged");
    let pager = format!("cat > '{}'", paged.display());
    let git_pager = format!("cat > '{}'", git_paged.display());

    let out = on_terminal(&p, &["diff", "a"], &[("PAGER", &pager)]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let text_paged = std::fs::read_to_string(&paged).expect("the pager got the diff");
    assert!(text_paged.contains("from-a"), "{text_paged}");
    assert!(
        text_paged.contains("\x1b[32mfrom-a\x1b[m"),
        "git's diff colours: {text_paged:?}"
    );

    // $GIT_PAGER comes before $PAGER.
    std::fs::remove_file(&paged).unwrap();
    let out = on_terminal(
        &p,
        &["diff", "a", "--stat"],
        &[("PAGER", &pager), ("GIT_PAGER", &git_pager)],
    );
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(!paged.exists(), "PAGER was used although GIT_PAGER is set");
    let stat = std::fs::read_to_string(&git_paged).unwrap();
    assert!(stat.contains("2 files changed"), "{stat:?}");

    // NO_COLOR: the pager gets plain text.
    let out = on_terminal(&p, &["diff", "a"], &[("PAGER", &pager), ("NO_COLOR", "1")]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plain = std::fs::read_to_string(&paged).unwrap();
    assert!(
        plain.contains("+from-a") && !plain.contains('\x1b'),
        "{plain:?}"
    );

    // An empty pager (or `cat`) means none: the diff goes to the terminal.
    let out = on_terminal(&p, &["diff", "a"], &[("PAGER", "")]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-a"));
}
