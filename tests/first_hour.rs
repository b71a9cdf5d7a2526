//! The first hour of a new user, through the real binary: output that
//! behaves like a Unix tool (closed pipes, colour, completions, man page,
//! money and time, run ids, tables) and the set-up (demo, prerequisites).

mod support;

use std::process::{Command, Output, Stdio};

use serde_json::json;
use support::*;

const ESC: &str = "\u{1b}[";

/// A project with one succeeded, one failed and one blocked task.
fn ran_project() -> TestProject {
    let p = TestProject::new("max_retries = 0");
    p.tasks(&[
        json!({"id": "good", "prompt": "@fake commit good.txt\n@fake cost 0.1"}),
        json!({"id": "bad", "prompt": "@fake fail it broke"}),
        json!({"id": "after-bad", "prompt": "x", "depends_on": ["bad"]}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    p
}

/// Run with standard output a pipe whose reader is already gone: every
/// write fails with EPIPE.
fn with_closed_stdout(mut cmd: Command) -> Output {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::piped());
    cmd.output().unwrap()
}

#[test]
fn a_closed_pipe_ends_every_printing_command_quietly() {
    let p = ran_project();
    for args in [
        vec!["tasks"],
        vec!["tasks", "--json"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["run", "--dry-run"],
        vec!["run", "--dry-run", "--json"],
        vec!["land", "--dry-run"],
        vec!["logs", "bad"],
        vec!["logs", "good", "--raw"],
        vec!["--color", "always", "tasks"],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["--help"],
        vec!["run", "--help"],
    ] {
        let out = with_closed_stdout(p.cmd(&args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "flocks {args:?}: {err}"
        );
        assert_eq!(code(&out), 0, "flocks {args:?}: {err}");
    }
    // A land whose reader is gone still lands, whole.
    let out = with_closed_stdout(p.cmd(&["land", "-y"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(p.git(&["show", "main:good.txt"]).starts_with("good.txt"));
}

/// The run does not die with its reader: its agents finish and the state
/// records them (see src/output/mod.rs for why).
#[test]
fn a_run_whose_reader_goes_away_still_finishes_and_persists() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake sleep 0.5\n@fake commit a.txt"}),
        json!({"id": "b", "prompt": "@fake commit b.txt"}),
    ]);
    let out = with_closed_stdout(p.cmd(&["run", "--no-progress"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(p.status_of("a"), "success");
    assert_eq!(p.status_of("b"), "success");
    assert!(
        p.state()["run"]["ended_at"].is_string(),
        "the run ended cleanly"
    );
}

fn has_colour(o: &Output) -> bool {
    String::from_utf8_lossy(&o.stdout).contains(ESC)
}

/// `--color always` colours every report; `never`, a pipe (auto) and
/// NO_COLOR do not; CLICOLOR_FORCE forces it through a pipe.
#[test]
fn colour_follows_the_flag_and_the_environment() {
    let p = ran_project();
    let commands: [&[&str]; 5] = [
        &["status"],
        &["tasks"],
        &["logs", "bad"],
        &["land", "--dry-run"],
        &["run", "--dry-run"],
    ];
    for args in commands {
        let mut always = vec!["--color", "always"];
        always.extend_from_slice(args);
        let out = p.flocks(&always);
        assert!(has_colour(&out), "{always:?}: {}", text(&out));
        // The colour is only escapes: without them, the plain text.
        let plain = p.flocks(args);
        assert!(
            !has_colour(&plain),
            "{args:?} through a pipe: {}",
            text(&plain)
        );
        assert_eq!(
            strip(&String::from_utf8_lossy(&out.stdout)),
            String::from_utf8_lossy(&plain.stdout),
            "{args:?}"
        );
        let mut never = vec!["--color", "never"];
        never.extend_from_slice(args);
        assert!(!has_colour(&p.flocks(&never)));
        let forced = p.cmd(args).env("CLICOLOR_FORCE", "1").output().unwrap();
        assert!(has_colour(&forced), "CLICOLOR_FORCE {args:?}");
        let no_color = p
            .cmd(args)
            .env("CLICOLOR_FORCE", "1")
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        assert!(!has_colour(&no_color), "NO_COLOR wins {args:?}");
    }
    // Succeeded green, failed red, blocked yellow.
    let status =
        String::from_utf8_lossy(&p.flocks(&["--color", "always", "status"]).stdout).to_string();
    assert!(status.contains("\u{1b}[1m\u{1b}[32m✔ good"), "{status}");
    assert!(status.contains("\u{1b}[1m\u{1b}[31m✖ bad"), "{status}");
    assert!(
        status.contains("\u{1b}[1m\u{1b}[33m⊘ after-bad"),
        "{status}"
    );
    // Errors too, on stderr.
    let nowhere = tempfile::tempdir().unwrap();
    let err = Command::new(FLOCKS)
        .args(["--color", "always", "status"])
        .current_dir(nowhere.path())
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&err.stderr);
    assert!(e.starts_with("\u{1b}[1m\u{1b}[31merror:\u{1b}[0m "), "{e}");
}

fn strip(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\u{1b}') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail.find('m').map(|e| e + 1).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// On a terminal (a pseudo-terminal from python3's pty module) flocks
/// colours by itself, and NO_COLOR turns it off.
#[test]
fn colour_on_a_terminal_and_not_with_no_color() {
    let p = ran_project();
    let on_tty = |no_color: bool, args: &[&str]| -> String {
        let mut c = Command::new("python3");
        c.args([
            "-c",
            "import os, pty, sys\n\
             pid, fd = pty.fork()\n\
             if pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n\
             out = b''\n\
             while True:\n    try:\n        b = os.read(fd, 4096)\n    except OSError:\n        break\n    if not b:\n        break\n    out += b\n\
             _, st = os.waitpid(pid, 0)\n\
             sys.stdout.buffer.write(out)\n\
             sys.exit(os.waitstatus_to_exitcode(st))",
            FLOCKS,
        ])
        .args(args)
        .current_dir(&p.repo)
        .env("TERM", "xterm-256color")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("CLICOLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c
            .output()
            .expect("python3 is needed (.ci/ensure-tools.sh installs it)");
        assert_eq!(code(&out), 0, "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for args in [
        &["tasks"][..],
        &["status"],
        &["logs", "bad"],
        &["land", "--dry-run"],
    ] {
        assert!(on_tty(false, args).contains(ESC), "{args:?} on a terminal");
        assert!(!on_tty(true, args).contains(ESC), "{args:?} with NO_COLOR");
    }
}

/// The run's own lines are coloured too (with --no-progress, on a pipe,
/// when forced).
#[test]
fn run_lines_and_summary_in_colour() {
    let p = TestProject::new("max_retries = 0");
    p.tasks(&[
        json!({"id": "ok", "prompt": "@fake commit ok.txt"}),
        json!({"id": "ko", "prompt": "@fake fail nope"}),
    ]);
    let out = p.flocks(&["--color", "always", "run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("\u{1b}[1m\u{1b}[32m✔ ok"), "{s}");
    assert!(s.contains("\u{1b}[1m\u{1b}[31m✖ ko"), "{s}");
    assert!(s.contains("\u{1b}[1m\u{1b}[32msucceeded:"), "{s}");
    assert!(s.contains("\u{1b}[1m\u{1b}[31mfailed:"), "{s}");
}

/// Before any run nothing costs `$-0.00`; costs in events.jsonl carry no
/// float noise (0.1 + 0.1 + 0.1 is 0.3).
#[test]
fn money_and_time_print_as_people_expect() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt\n@fake cost 0.1"}),
        json!({"id": "b", "prompt": "@fake commit b.txt\n@fake cost 0.1"}),
        json!({"id": "c", "prompt": "@fake commit c.txt\n@fake cost 0.1"}),
    ]);
    for args in [
        &["status"][..],
        &["tasks"],
        &["status", "--json"],
        &["tasks", "--json"],
    ] {
        let out = p.flocks(args);
        let t = text(&out);
        assert!(!t.contains("-0.0") && !t.contains("$-"), "{args:?}: {t}");
    }
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("· $0.30"), "{}", text(&out));
    let events = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    let finished: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"] == "run_finished")
        .collect();
    assert_eq!(finished.len(), 1, "{events}");
    assert_eq!(finished[0]["cost_usd"].to_string(), "0.3", "{events}");
    // No number with float noise anywhere.
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["cost_usd", "duration_secs"] {
            if let Some(x) = v.get(key) {
                let digits = x.to_string().split('.').nth(1).map_or(0, str::len);
                assert!(digits <= 6, "{key} = {x} in {line}");
            }
        }
    }
    let tasks: serde_json::Value =
        serde_json::from_slice(&p.flocks(&["tasks", "--json"]).stdout).unwrap();
    assert_eq!(tasks["total_cost_usd"].to_string(), "0.3");
}

/// Two runs in the same second get two ids. After the first, the runs have
/// nothing to do and take milliseconds, so most of them share a second
/// (the id's rule itself is unit-tested in src/commands/run.rs).
#[test]
fn run_ids_are_unique() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "t", "prompt": "@fake commit f.txt"})]);
    let mut ids = std::collections::HashSet::new();
    for _ in 0..5 {
        let out = p.flocks(&["run", "--no-progress"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let id = p.state()["run"]["id"].as_str().unwrap().to_string();
        assert!(ids.insert(id.clone()), "run id {id} used twice");
    }
    let events = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    let started: std::collections::HashSet<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "run_started")
        .map(|e| e["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started, ids);
}

/// The dry-run table's header lines up with its rows, whatever the ids.
#[test]
fn dry_run_table_lines_up() {
    let p = TestProject::new("");
    let long = "a-task-id-that-is-much-longer-than-twenty-four-characters";
    p.tasks(&[
        json!({"id": long, "prompt": "x"}),
        json!({"id": "b", "prompt": "y", "depends_on": [long]}),
    ]);
    let out = p.flocks(&["run", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    let header = lines.iter().find(|l| l.contains("branch")).unwrap();
    let row_a = lines
        .iter()
        .find(|l| l.contains(&format!("flocks/{long}")))
        .unwrap();
    let row_b = lines.iter().find(|l| l.contains("flocks/b")).unwrap();
    for (col, a, b) in [
        ("pool", "local", "local"),
        ("branch", "flocks/a", "flocks/b"),
        ("status", "new", "new"),
    ] {
        let h = header.find(col).unwrap();
        assert_eq!(h, row_a.find(a).unwrap(), "{col}:\n{s}");
        assert_eq!(h, row_b.rfind(b).unwrap(), "{col}:\n{s}");
    }
    let tasks = String::from_utf8_lossy(&p.flocks(&["tasks"]).stdout).to_string();
    let tl: Vec<&str> = tasks.lines().collect();
    assert_eq!(tl[0].find("status"), tl[1].find("new"), "{tasks}");
    assert_eq!(tl[0].find("status"), tl[2].find("new"), "{tasks}");
}

/// Completions for three shells come from the clap definitions, and each
/// shell loads its script and completes with it.
#[test]
fn completions_for_three_shells() {
    let p = TestProject::new("");
    let dir = tempfile::tempdir().unwrap();
    let script = |shell: &str| {
        let out = p.flocks(&["completions", shell]);
        assert_eq!(code(&out), 0, "{shell}: {}", text(&out));
        let file = dir.path().join(format!("flocks.{shell}"));
        std::fs::write(&file, &out.stdout).unwrap();
        file
    };
    let shell = |program: &str, args: &[&str], file: &std::path::Path| {
        let out = Command::new(program)
            .args(args)
            .arg(file)
            .env("HOME", dir.path())
            .output()
            .unwrap_or_else(|e| {
                panic!("this test needs {program} ({e}): install it with .ci/ensure-tools.sh")
            });
        let t = text(&out);
        assert!(out.status.success(), "{program}: {t}");
        t
    };

    // bash: load it, then ask what `flocks la<TAB>` and `flocks status --col<TAB>` give.
    let t = shell(
        "bash",
        &[
            "-c",
            "set -e; source \"$1\"; complete -p flocks; \
             COMP_WORDS=(flocks la); COMP_CWORD=1; _flocks flocks la flocks; echo \"${COMPREPLY[*]}\"; \
             COMP_WORDS=(flocks status --col); COMP_CWORD=2; _flocks flocks --col status; echo \"${COMPREPLY[*]}\"",
            "bash",
        ],
        &script("bash"),
    );
    assert!(t.contains("-F _flocks flocks"), "{t}");
    assert!(t.contains("land") && t.contains("--color"), "{t}");

    // zsh: compinit, load it, and it registers itself for flocks.
    let t = shell(
        "zsh",
        &[
            "-f",
            "-c",
            "autoload -U compinit && compinit -u -d \"$HOME/zcompdump\" && source \"$1\" && echo \"${_comps[flocks]}\"",
            "zsh",
        ],
        &script("zsh"),
    );
    assert_eq!(t.trim(), "_flocks", "{t}");

    // fish: load it and complete.
    let t = shell(
        "fish",
        &[
            "-c",
            "source $argv[1]; complete -C 'flocks la'; complete -C 'flocks status --col'",
        ],
        &script("fish"),
    );
    assert!(t.contains("land\t") && t.contains("--color\t"), "{t}");
}

/// The man page renders with man(1) (groff underneath), warns about
/// nothing, and `--dir` installs one page per command.
#[test]
fn the_man_page_renders() {
    let p = TestProject::new("");
    let dir = tempfile::tempdir().unwrap();
    let out = p.flocks(&["man"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let page = dir.path().join("flocks.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let man = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man is needed (.ci/ensure-tools.sh installs man-db and groff)");
    let t = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success(), "{}", text(&man));
    for want in [
        "NAME",
        "SYNOPSIS",
        "--color",
        "flocks-land(1)",
        "EXAMPLES",
        "flocks land -y",
    ] {
        assert!(t.contains(want), "{want} in\n{t}");
    }
    let groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .arg(&page)
        .output()
        .expect("groff is needed (.ci/ensure-tools.sh installs it)");
    assert!(
        groff.status.success() && groff.stderr.is_empty(),
        "{}",
        text(&groff)
    );

    let mandir = dir.path().join("man1");
    let out = p.flocks(&["man", "--dir", mandir.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for name in [
        "flocks.1",
        "flocks-run.1",
        "flocks-land.1",
        "flocks-completions.1",
    ] {
        assert!(mandir.join(name).is_file(), "{name}: {}", text(&out));
    }
    let land = Command::new("man")
        .arg("-l")
        .arg(mandir.join("flocks-land.1"))
        .env("MANPAGER", "cat")
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&land.stdout);
    assert!(
        t.contains("EXAMPLES") && t.contains("flocks land --dry-run") && t.contains("--bisect"),
        "{t}"
    );
}

/// Each command's --help ends with real examples of itself.
#[test]
fn help_ends_with_examples() {
    let p = TestProject::new("");
    for cmd in [
        "run",
        "status",
        "logs",
        "land",
        "tasks",
        "retry",
        "completions",
        "man",
    ] {
        let out = p.flocks(&[cmd, "--help"]);
        assert_eq!(code(&out), 0, "{}", text(&out));
        let help = String::from_utf8_lossy(&out.stdout);
        let tail = help.trim_end().rsplit("Examples:").next().unwrap();
        assert!(help.contains("Examples:"), "{cmd}: {help}");
        assert!(tail.contains(&format!("flocks {cmd}")), "{cmd}: {help}");
    }
}

/// The directory cargo builds this test's binaries in.
fn target_dir() -> std::path::PathBuf {
    // .../<target>/debug/flocks
    std::path::Path::new(FLOCKS)
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .to_path_buf()
}

fn demo(target: Option<&std::path::Path>) -> Output {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut c = Command::new("bash");
    c.arg(root.join("examples/demo.sh")).stdin(Stdio::null());
    match target {
        Some(t) => c.env("CARGO_TARGET_DIR", t),
        None => c.env_remove("CARGO_TARGET_DIR"),
    };
    c.output().unwrap()
}

/// The demo exits 0 when it worked, and runs the binary cargo built.
#[test]
fn the_demo_exits_0() {
    let out = demo(None);
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains("Landed on main") && t.contains("Flocks-Task: credits"),
        "{t}"
    );
}

/// With CARGO_TARGET_DIR set, the demo runs the binary from there (a link
/// to this build's target directory, so that nothing is rebuilt).
#[test]
fn the_demo_follows_cargo_target_dir() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::os::unix::fs::symlink(target_dir(), &elsewhere).unwrap();
    let out = demo(Some(&elsewhere));
    let t = text(&out);
    assert_eq!(code(&out), 0, "{t}");
    assert!(
        t.contains(&format!("   {}/debug/flocks\n", elsewhere.display())),
        "the demo ran the binary in CARGO_TARGET_DIR:\n{t}"
    );
    assert!(t.contains("Landed on main"), "{t}");
}

/// `logs -f` stops following when its reader goes away, while the task
/// still runs.
#[test]
fn logs_follow_stops_when_its_reader_goes_away() {
    let p = TestProject::new("");
    p.tasks(&[json!({"id": "long", "prompt": "@fake text working\n@fake hang"})]);
    let mut run = p.spawn(&["run", "--no-progress"]);
    wait_for(30, "the agent to write its log", || {
        std::fs::read_to_string(p.path(".flocks/logs/long/1.log"))
            .is_ok_and(|l| l.contains("working"))
    });
    let out = with_closed_stdout(p.cmd(&["logs", "long", "-f"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        p.status_of("long"),
        "running",
        "logs -f ended before the task"
    );
    let stop = p.flocks(&["stop"]);
    assert_eq!(code(&stop), 0, "{}", text(&stop));
    let status = run.wait().unwrap();
    assert!(
        status.code().is_some(),
        "the run ended by itself: {status:?}"
    );
}

/// `land` paints conflicts red and what landed green.
#[test]
fn land_conflicts_in_colour() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "one", "prompt": "@fake commit same.txt one"}),
        json!({"id": "two", "prompt": "@fake commit same.txt two"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["--color", "always", "land", "-y"]);
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 4, "{}", text(&out));
    assert!(s.contains("\u{1b}[1m\u{1b}[31mConflicted ("), "{s}");
    assert!(s.contains("\u{1b}[1m\u{1b}[32mLanded on main"), "{s}");
}
