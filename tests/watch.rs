//! Watching a fleet, end to end: the real `flocks` binary runs a fake fleet
//! (tests/support/fake-claude) in a temporary git repo. events.jsonl must
//! follow the state changes in order; the dashboard (`flocks top`) and the
//! progress bars are driven in a real pseudo-terminal through tmux.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{FLOCKS, TestProject, code, text};

/// Three local slots.
const POOL: &str = "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 3\n";

fn fleet(extra: &str, tasks: &[Value]) -> TestProject {
    let p = TestProject::new(&format!("{extra}\n{POOL}"));
    p.tasks(tasks);
    p
}

fn read_events(p: &TestProject) -> Vec<Value> {
    let text = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn task(id: &str, prompt: &str) -> Value {
    serde_json::json!({"id": id, "prompt": prompt})
}

/// Index of the first event of `kind` for `task`.
fn position(events: &[Value], kind: &str, task: &str) -> usize {
    events
        .iter()
        .position(|e| e["event"] == kind && e["task"] == task)
        .unwrap_or_else(|| panic!("no {kind} for {task} in {events:#?}"))
}

#[test]
fn events_jsonl_follows_the_state_changes_in_order() {
    let fleet = fleet(
        "stall_timeout_secs = 4",
        &[
            task("ok", "@fake commit a.txt"),
            task("quiet", "@fake silent 60"),
            task("bad", "@fake fail nope"),
            serde_json::json!({"id": "after-bad", "prompt": "x", "depends_on": ["bad"]}),
        ],
    );
    let out = fleet.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    // Not a terminal: plain lines, no escape sequences.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains('\u{1b}'), "{stdout}");
    assert!(stdout.contains("✔ ok: succeeded"), "{stdout}");

    let events = read_events(&fleet);
    assert_eq!(events[0]["event"], "run_started");
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    let mut last_ts = String::new();
    for e in &events {
        let ts = e["ts"].as_str().expect("every line has ts");
        chrono::DateTime::parse_from_rfc3339(ts).unwrap();
        assert!(ts >= last_ts.as_str(), "timestamps go forward: {events:#?}");
        last_ts = ts.to_string();
        let kind = e["event"].as_str().unwrap();
        assert_ne!(kind, "activity", "activity is not written");
    }
    for id in ["ok", "quiet", "bad"] {
        let queued = position(&events, "queued", id);
        let started = position(&events, "started", id);
        let finished = position(&events, "finished", id);
        assert!(queued < started && started < finished, "{id}: {events:#?}");
    }
    let ok = &events[position(&events, "finished", "ok")];
    assert_eq!(ok["outcome"]["kind"], "success");
    assert_eq!(ok["commits"], 1);
    let stalled = position(&events, "stalled", "quiet");
    let quiet_finished = position(&events, "finished", "quiet");
    assert!(stalled < quiet_finished);
    assert_eq!(events[quiet_finished]["outcome"]["kind"], "stalled");
    assert!(events[stalled]["quiet_secs"].as_f64().unwrap() >= 4.0);
    let bad = position(&events, "finished", "bad");
    assert_eq!(events[bad]["outcome"]["kind"], "failed");
    let blocked = position(&events, "blocked", "after-bad");
    assert!(bad < blocked);
    assert_eq!(events[blocked]["on"], serde_json::json!(["bad"]));
    assert!(
        !events
            .iter()
            .any(|e| e["event"] == "started" && e["task"] == "after-bad")
    );

    // `status` without a run: grouped, with the stall and the failure.
    let out = fleet.flocks(&["status"]);
    let s = text(&out);
    assert!(s.contains("last run"), "{s}");
    assert!(s.contains("stalled: no output for 4s"), "{s}");
    assert!(
        s.contains("failed: the agent reported an error: nope"),
        "{s}"
    );
    assert!(s.contains("waits for bad"), "{s}");

    // `status --json`: the documented shape.
    let out = fleet.flocks(&["status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["run", "tasks", "pools", "credentials", "totals"] {
        assert!(v.get(key).is_some(), "{key} in {v:#}");
    }
    let quiet = v["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "quiet")
        .unwrap();
    assert_eq!(quiet["status"], "stalled");
    assert_eq!(quiet["outcome"]["kind"], "stalled");
    assert_eq!(v["run"]["live"], false);

    // `land` adds a `landed` line for the task whose work reached main.
    let out = fleet.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let events = read_events(&fleet);
    let landed = &events[position(&events, "landed", "ok")];
    assert_eq!(landed["commits"], 1);
    assert_eq!(landed["target"], "main");
    assert_eq!(events.iter().filter(|e| e["event"] == "landed").count(), 1);
}

/// A tmux server of our own, killed (by its socket) when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start() -> Option<Tmux> {
        let found = Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return None;
        }
        Some(Tmux {
            socket: format!("flocks-test-{}", std::process::id()),
        })
    }

    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alternate_on(&self, target: &str) -> bool {
        self.cmd(&["display", "-p", "-t", target, "#{alternate_on}"])
            .trim()
            == "1"
    }

    fn capture(&self, target: &str) -> String {
        self.cmd(&["capture-pane", "-p", "-t", target])
    }

    /// Wait until the pane shows every `needle`; the screen on failure.
    fn wait_for(&self, target: &str, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let screen = self.capture(target);
            if needles.iter().all(|n| screen.contains(n)) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {needles:?} in {target}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let socket = Command::new("tmux")
            .args(["-L", &self.socket, "display", "-p", "#{socket_path}"])
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| !p.is_empty());
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
        if let Some(path) = socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[test]
fn dashboard_and_progress_in_a_real_terminal() {
    let Some(tmux) = Tmux::start() else {
        panic!("this test needs tmux: install it with .ci/ensure-tools.sh (apt-get install tmux)");
    };
    let fleet = fleet(
        "",
        &[
            task(
                "alpha",
                "@fake tool Bash '{\"command\":\"cargo test alpha\"}'\n@fake sleep 8\n@fake commit a.txt",
            ),
            task("beta", "@fake sleep 8\n@fake commit b.txt"),
            task("gamma", "@fake sleep 8\n@fake commit c.txt"),
            task("delta", "@fake commit d.txt"),
        ],
    );
    let env: Vec<String> = fleet.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let env = env.join(" ");
    let repo = fleet.repo.display().to_string();
    // Window 0: the run itself, on a terminal: progress bars.
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "140",
        "-y",
        "40",
        &format!("cd {repo} && env {env} {FLOCKS} run; echo run-exit-$?; sleep 600"),
    ]);
    let bars = tmux.wait_for(
        "w:0",
        &["▶ 3 running", "Bash: cargo test alpha", "beta", "gamma"],
    );
    assert!(bars.contains("1 queued"), "{bars}");

    // Window 1: the dashboard, from a second terminal.
    tmux.cmd(&[
        "new-window",
        "-t",
        "w",
        &format!("cd {repo} && {FLOCKS} top; echo top-exit-$?; {STTY}; sleep 600"),
    ]);
    let screen = tmux.wait_for("w:1", &["pools", "alpha", "beta", "gamma", "delta", "live"]);
    assert!(screen.contains("3/3 slots"), "{screen}");
    assert!(screen.contains("▶ 3 running"), "{screen}");
    assert!(tmux.alternate_on("w:1"));

    // Enter shows the selected task's log; Esc goes back.
    tmux.cmd(&["send-keys", "-t", "w:1", "Enter"]);
    tmux.wait_for("w:1", &["log · alpha"]);
    tmux.cmd(&["send-keys", "-t", "w:1", "Escape"]);
    tmux.wait_for("w:1", &["tasks (4)"]);

    // The run ends; the dashboard shows it.
    tmux.wait_for("w:0", &["run-exit-0"]);
    tmux.wait_for("w:1", &["last run", "✔ 4 done"]);

    // q quits and the terminal is as it was: main screen, cooked mode, echo.
    tmux.cmd(&["send-keys", "-t", "w:1", "q"]);
    let after = tmux.wait_for("w:1", &["top-exit-0", "stty-done"]);
    assert!(after.contains("icanon echo"), "{after}");
    assert!(!after.contains("pools"), "the dashboard is gone: {after}");
    assert!(!tmux.alternate_on("w:1"));

    // A panic restores the terminal too (debug builds panic on request).
    tmux.cmd(&[
        "new-window",
        "-t",
        "w",
        &format!(
            "cd {repo} && env FLOCKS_TUI_TEST_PANIC=1 {FLOCKS} top; echo top-exit-$?; {STTY}; sleep 600"
        ),
    ]);
    let after = tmux.wait_for("w:2", &["top-exit-101", "stty-done"]);
    assert!(after.contains("panicking on purpose"), "{after}");
    assert!(after.contains("icanon echo"), "{after}");
    assert!(!tmux.alternate_on("w:2"));
}

/// Prints whether the terminal is in cooked mode with echo, then `stty-done`.
const STTY: &str = "stty -a | tr ' ' '\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo stty-done";
