//! `flocks report` and `flocks serve` from the command line (no browser:
//! tests/web_browser.rs drives one).

mod support;

use serde_json::{Value, json};
use support::{TestProject, code, text};

const POOL: &str = "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 2\n";

#[test]
fn report_picks_a_run_by_id_and_names_the_known_ones() {
    let p = TestProject::new(POOL);
    let out = p.flocks(&["report"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("no run yet"), "{}", text(&out));

    let flag = p.out_file("failed-once");
    p.tasks(&[
        json!({"id": "ok", "prompt": "@fake commit ok.txt\n@fake cost 0.2"}),
        json!({"id": "flaky", "prompt": format!("@fake fail-once {} boom\n@fake commit f.txt\n@fake cost 0.3", flag.display())}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let first = p.state()["run"]["id"].as_str().unwrap().to_string();
    let out = p.flocks(&["retry", "flaky", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let second = p.state()["run"]["id"].as_str().unwrap().to_string();
    assert_ne!(first, second);

    // By default: the piece of work, both runs, every attempt.
    let out = p.flocks(&["report"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(text(&out).contains("this piece of work"), "{}", text(&out));
    let file = p.path(&format!("flocks-report-{second}.html"));
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(
        html.contains("This piece of work: since the first run (2 runs)"),
        "{html}"
    );
    assert!(
        html.contains(
            r#"data-task="flaky" data-status="succeeded" data-attempts="2" data-cost="0.3123""#
        ),
        "{html}"
    );
    assert_eq!(
        html.matches("class=\"bar ").count(),
        3,
        "every attempt of both runs: {html}"
    );
    // `--run` narrows to the retry.
    let out = p.flocks(&["report", "--run", &second, "-o", "-"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(html.contains(&format!("Run {second}")), "{html}");
    assert!(
        html.contains(
            r#"data-task="flaky" data-status="succeeded" data-attempts="1" data-cost="0.3000""#
        ),
        "{html}"
    );
    assert_eq!(html.matches("class=\"bar ").count(), 1, "{html}");

    // The first run: its two attempts, as they ended then.
    let out = p.flocks(&["report", "--run", &first, "-o", "-"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let html = String::from_utf8_lossy(&out.stdout);
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    assert!(
        html.contains(r#"data-task="flaky" data-status="failed""#),
        "{html}"
    );
    assert!(
        html.contains(
            r#"data-task="ok" data-status="succeeded" data-attempts="1" data-cost="0.2000""#
        ),
        "{html}"
    );
    assert_eq!(html.matches("class=\"bar ").count(), 2, "{html}");

    let out = p.flocks(&["report", "--run", "19990101-000000"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains(&first) && text(&out).contains(&second),
        "{}",
        text(&out)
    );
    // Nothing half-written where it could not write.
    let out = p.flocks(&["report", "-o", "/nonexistent-dir/r.html"]);
    assert_eq!(code(&out), 1, "{}", text(&out));
    assert!(
        text(&out).contains("/nonexistent-dir/r.html"),
        "{}",
        text(&out)
    );
}

#[test]
fn serve_refuses_a_bad_address_and_a_short_token() {
    let p = TestProject::new(POOL);
    let out = p.flocks(&["serve", "--addr", "localhost"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("--addr `localhost` is not an IP:PORT"),
        "{}",
        text(&out)
    );
    let out = p
        .cmd(&["serve", "--addr", "127.0.0.1:0"])
        .env("FLOCKS_SERVE_TOKEN", "short")
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("FLOCKS_SERVE_TOKEN must be at least 16"),
        "{}",
        text(&out)
    );
}

/// The attributes of a task's row (`tr data-task=ID ...`): (status,
/// attempts, cost).
fn row(html: &str, id: &str) -> Option<(String, usize, String)> {
    let at = html.find(&format!("<tr data-task=\"{id}\" "))?;
    let tag = &html[at..at + html[at..].find('>')?];
    let attr = |name: &str| -> Option<String> {
        let i = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(tag[i..i + tag[i..].find('"')?].to_string())
    };
    Some((
        attr("data-status")?,
        attr("data-attempts")?.parse().ok()?,
        attr("data-cost")?,
    ))
}

/// The `data-total` cards of a page.
fn total(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("data-total=\"{name}\""))
        .unwrap_or_else(|| panic!("no total {name}"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    rest[start..start + rest[start..].find('<').unwrap()].to_string()
}

/// Per task of the state: its attempts (its variants' included) and their cost.
fn expected(state: &Value) -> Vec<(String, usize, f64)> {
    state["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut attempts: Vec<&Value> = t["attempts"].as_array().unwrap().iter().collect();
            for v in t["variants"].as_array().into_iter().flatten() {
                attempts.extend(v["attempts"].as_array().unwrap());
            }
            let cost: f64 = attempts
                .iter()
                .map(|a| a["result"]["total_cost_usd"].as_f64().unwrap_or(0.0))
                .sum();
            // (+ 0.0: an empty sum is -0.0.)
            (
                t["id"].as_str().unwrap().to_string(),
                attempts.len(),
                cost + 0.0,
            )
        })
        .collect()
}

/// `flocks serve` on a free loopback port; killed (by its pid) when dropped.
struct Serve {
    child: std::process::Child,
    port: u16,
}

impl Serve {
    fn start(p: &TestProject) -> Serve {
        use std::io::{BufRead, BufReader};
        let mut child = p
            .cmd(&["serve", "--addr", "127.0.0.1:0"])
            .env_remove("FLOCKS_SERVE_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port: u16 = first
            .split("127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{first}"));
        Serve { child, port }
    }

    /// GET `path`: the whole answer (status line, headers, body).
    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `/` from a `flocks serve` of the project.
fn dashboard(p: &TestProject) -> String {
    Serve::start(p).get("/")
}

/// Finding 1 of issue 27: after Ctrl-C, a resume, a retry and `land
/// --resolve`, the report and the dashboard showed only the last run (tasks
/// "succeeded" with 0 attempts and $0.00 under a header of "1 attempts").
/// The default scope is the piece of work: every run, every attempt, every
/// task of the state, with its totals across the runs.
#[test]
fn a_piece_of_work_holds_every_run_and_attempt_until_the_next_land() {
    let p = TestProject::new(
        "max_retries = 0\n[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 8\n",
    );
    let hung = p.out_file("slow-hung-once");
    let flaky = p.out_file("flaky-failed-once");
    let mut tasks = vec![
        json!({"id": "a", "prompt": "@fake commit a.txt A\n@fake cost 0.1"}),
        json!({"id": "slow", "prompt": format!("@fake once {} hang\n@fake commit s.txt S\n@fake cost 0.2", hung.display())}),
        json!({"id": "flaky", "prompt": format!("@fake cost 0.05\n@fake fail-once {} boom\n@fake commit f.txt F", flaky.display())}),
        json!({"id": "bad", "prompt": "@fake cost 0.03\n@fake fail always"}),
        json!({"id": "stuck", "depends_on": ["bad"], "prompt": "x"}),
        json!({"id": "c1", "prompt": "@fake commit same.txt one\n@fake cost 0.01"}),
        json!({"id": "c2", "prompt": "@fake commit same.txt two\n@fake cost 0.02"}),
    ];
    p.tasks(&tasks);

    // Run 1, interrupted with SIGINT while `slow` hangs.
    let run = p.spawn(&["run", "--no-progress"]);
    support::wait_for(60, "every task but slow to end", || {
        if !p.path(".flocks/state.json").exists() {
            return false;
        }
        let s = p.state();
        let done = |id: &str| {
            s["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == id)
                .is_some_and(|t| t["status"]["state"] == "done")
        };
        ["a", "flaky", "bad", "c1", "c2"].iter().all(|id| done(id))
            && p.status_of("slow") == "running"
            && p.status_of("stuck") == "blocked"
    });
    // The first Ctrl-C lets running agents finish, the second stops them.
    let int = || {
        let sent = std::process::Command::new("kill")
            .args(["-INT", &run.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    int();
    support::wait_for(20, "the first Ctrl-C to be heard", || {
        std::fs::read_to_string(p.path(".flocks/events.jsonl"))
            .unwrap_or_default()
            .contains("interrupted: no new agents will start")
    });
    int();
    let out = run.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Run 2 resumes `slow`; run 3 retries `flaky`; `land --resolve` lands,
    // and redoes `c2` (it conflicts with `c1`) in run 4.
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out = p.flocks(&["retry", "flaky", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["land", "-y", "--resolve"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.git(&["show", "main:same.txt"]), "two", "{}", text(&out));
    let events = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    let runs: Vec<String> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "run_started")
        .map(|v| v["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");

    let state = p.state();
    let want = expected(&state);
    assert_eq!(want.len(), 7);
    let check = |html: &str, what: &str| {
        let mut attempts = 0;
        let mut cost = 0.0;
        for (id, n, c) in &want {
            let (status, shown_n, shown_c) =
                row(html, id).unwrap_or_else(|| panic!("{what}: no row for {id}: {html}"));
            assert_eq!(shown_n, *n, "{what}: {id} ({status})");
            assert_eq!(shown_c, format!("{c:.4}"), "{what}: {id} ({status})");
            attempts += n;
            cost += c;
        }
        assert_eq!(total(html, "tasks"), "7", "{what}");
        assert_eq!(total(html, "attempts"), attempts.to_string(), "{what}");
        assert_eq!(total(html, "cost"), format!("${cost:.2}"), "{what}");
        assert_eq!(
            html.matches("class=\"bar ").count(),
            attempts,
            "{what}: one bar per attempt"
        );
        // Money over time ends where the cards do.
        let line = &html[html.find("<svg class=\"costline\"").unwrap()..];
        assert!(
            line.contains(&format!(">${cost:.2}</text>")),
            "{what}: {line}"
        );
        for r in &runs {
            assert!(
                html.contains(&format!("<g class=\"run\" data-run=\"{r}\"")),
                "{what}: run {r} marked"
            );
        }
        assert!(
            html.contains("This piece of work: since the first run (4 runs)"),
            "{what}: {html}"
        );
    };
    let want_slow = want.iter().find(|w| w.0 == "slow").unwrap();
    assert_eq!(want_slow.1, 2, "interrupted, then resumed");

    let out = p.flocks(&["report", "-o", "-"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let html = String::from_utf8_lossy(&out.stdout).into_owned();
    check(&html, "report");
    // A failure: the end of its log.
    let bad = &html[html.find("<tr data-task=\"bad\" ").unwrap()..];
    let bad = &bad[..bad.find("</tr>").unwrap()];
    assert!(
        bad.contains("last lines of its log") && bad.contains("always"),
        "{bad}"
    );
    assert!(
        html.contains(&format!("<tr data-run=\"{}\"", runs[0])),
        "{html}"
    );
    assert_eq!(
        html.matches("badge s-interrupted\">interrupted").count(),
        1,
        "run 1: {html}"
    );
    // The web model: the same scope for the table, the cards and the charts.
    let page = dashboard(&p);
    check(&page, "dashboard");

    // The first run alone: as it ended then, the blocked task with it.
    let out = p.flocks(&["report", "--run", &runs[0], "-o", "-"]);
    let html = String::from_utf8_lossy(&out.stdout).into_owned();
    for (id, status) in [
        ("a", "succeeded"),
        ("slow", "interrupted"),
        ("flaky", "failed"),
        ("bad", "failed"),
        ("stuck", "blocked"),
        ("c1", "succeeded"),
        ("c2", "succeeded"),
    ] {
        let r = row(&html, id).unwrap_or_else(|| panic!("run 1: no row for {id}: {html}"));
        assert_eq!(r.0, status, "run 1: {id}");
        assert_eq!(r.1, usize::from(id != "stuck"), "run 1: {id}");
    }

    // A new run after the land opens a new piece of work: the landed tasks
    // are left out (and counted), the failed and blocked ones stay.
    tasks.push(json!({"id": "later", "prompt": "@fake commit later.txt L\n@fake cost 0.4"}));
    p.tasks(&tasks);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out = p.flocks(&["report", "-o", "-"]);
    let html = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        html.contains("This piece of work: since the land at"),
        "{html}"
    );
    assert_eq!(row(&html, "later").map(|r| r.1), Some(1), "{html}");
    assert_eq!(
        row(&html, "bad").map(|r| (r.0, r.1)),
        Some(("failed".into(), 0))
    );
    assert_eq!(row(&html, "stuck").map(|r| r.0), Some("blocked".into()));
    for id in ["a", "slow", "flaky", "c1", "c2"] {
        assert_eq!(row(&html, id), None, "{id} landed before: {html}");
    }
    assert!(
        html.contains("5 tasks that landed before this window"),
        "{html}"
    );
    assert_eq!(total(&html, "cost"), "$0.40");
    let page = dashboard(&p);
    assert_eq!(total(&page, "cost"), "$0.40", "the dashboard agrees");
    assert_eq!(row(&page, "a"), None);
    // --since widens it across the land.
    let out = p.flocks(&["report", "--since", "2000-01-01", "-o", "-"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let html = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(total(&html, "tasks"), "8");
    for (id, n, _) in expected(&p.state()) {
        assert_eq!(row(&html, &id).map(|r| r.1), Some(n), "{id}");
    }
    let out = p.flocks(&["report", "--since", "yesterday"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("--since: `yesterday` is not a date"),
        "{}",
        text(&out)
    );
}

/// Finding 8 of issue 27: the landed best-of task's page said "No attempt
/// yet: no log"; task pages showed no prompt, dependencies or landed commit;
/// `/land` was the CLI's text in a `<pre>`.
#[test]
fn task_pages_and_the_land_page_say_what_a_task_is_did_and_landed() {
    let p = TestProject::new(
        "[[containers]]\nname = \"local\"\nbackend = \"local\"\nmax_worktrees = 4\n",
    );
    p.tasks(&[
        json!({"id": "base", "title": "The base", "prompt": "Write the base.\n@fake commit base.txt B\n@fake cost 0.01"}),
        json!({"id": "dep", "depends_on": ["base"], "prompt": "@fake commit dep.txt D"}),
        json!({"id": "bo", "best_of": 2, "prompt": "Two ways.\n\
            @fake if-env FLOCKS_TASK bo@v1 bash 'seq 40 > b.txt && git add b.txt && git commit -qm forty'\n\
            @fake if-env FLOCKS_TASK bo@v2 bash 'seq 5 > c.txt && git add c.txt && git commit -qm five'\n"}),
        json!({"id": "c1", "prompt": "@fake commit same.txt one"}),
        json!({"id": "c2", "prompt": "@fake commit same.txt two"}),
    ]);
    let out = p.flocks(&["run", "--no-progress"]);
    assert_eq!(code(&out), 0, "{}", text(&out));

    // The report: branches, diff stats, the best-of winner, conflict warnings.
    let out = p.flocks(&["report", "-o", "-"]);
    let html = String::from_utf8_lossy(&out.stdout).into_owned();
    let cell = |id: &str| {
        let at = html.find(&format!("<tr data-task=\"{id}\" ")).unwrap();
        html[at..at + html[at..].find("</tr>").unwrap()].to_string()
    };
    let bo = cell("bo");
    assert!(
        bo.contains("<code class=\"branch\">flocks/bo@v2</code>"),
        "the winner's branch: {bo}"
    );
    assert!(bo.contains("best of 2: v2 won (ranking)"), "{bo}");
    assert!(bo.contains("1 file, +5 −0"), "{bo}");
    assert_eq!(
        row(&html, "bo").map(|r| r.1),
        Some(2),
        "its variants' attempts"
    );
    let c2 = cell("c2");
    assert!(c2.contains("⚠ will conflict with `c1` in same.txt"), "{c2}");
    assert!(cell("base").contains("<code class=\"branch\">flocks/base</code>"));

    // /land: a table of the plan, one row per task, with its commits,
    // files, predicted conflict and what land does.
    let serve = Serve::start(&p);
    let land = serve.get("/land");
    assert!(land.contains("<table class=\"tasks plan\">"), "{land}");
    assert!(!land.contains("<pre class=\"land\">"), "{land}");
    for (id, kind) in [
        ("base", "ready"),
        ("dep", "ready"),
        ("bo", "ready"),
        ("c1", "ready"),
        ("c2", "conflict"),
    ] {
        assert!(
            land.contains(&format!("<tr data-task=\"{id}\" data-plan=\"{kind}\">")),
            "{id} {kind}: {land}"
        );
    }
    let c2 = &land[land.find("data-task=\"c2\"").unwrap()..];
    let c2 = &c2[..c2.find("</tr>").unwrap()];
    assert!(
        c2.contains("same.txt") && c2.contains("will conflict with `c1` in same.txt"),
        "{c2}"
    );
    assert!(c2.contains("fake: same.txt"), "its commit: {c2}");
    drop(serve);

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "c2 conflicts: {}", text(&out));
    let serve = Serve::start(&p);

    // The landed best-of task: the winner's attempts and log, its range
    // and where it landed, its diff stat.
    let page = serve.get("/tasks/bo");
    assert!(!page.contains("No attempt yet"), "{page}");
    assert!(
        page.contains("The attempts of <a href=\"/tasks/bo@v2\">bo@v2</a>, the winner"),
        "{page}"
    );
    assert!(page.contains("data-log=\"1\""), "{page}");
    assert!(page.contains("Log of bo@v2's attempt 1"), "{page}");
    assert!(page.contains("result: success"), "the winner's log: {page}");
    assert!(
        page.contains("&amp;log=bo%40v2"),
        "its stream follows the winner's log: {page}"
    );
    assert!(page.contains("Two ways."), "the prompt: {page}");
    assert!(page.contains("data-landed"), "where it landed: {page}");
    assert!(
        page.contains("c.txt") && page.contains("1 file changed"),
        "the diff stat: {page}"
    );
    // Dependencies and dependents, with their statuses; the prompt.
    let page = serve.get("/tasks/base");
    assert!(page.contains("Write the base."), "{page}");
    assert!(
        page.contains("Needed by: <a href=\"/tasks/dep\" data-dependent=\"dep\">dep</a>"),
        "{page}"
    );
    let landed_as = page.find("data-landed").map(|i| &page[i..i + 200]);
    let main_tip = p.git(&["log", "-1", "--format=%H", "--", "base.txt"]);
    assert!(
        landed_as.is_some_and(|l| l.contains(&main_tip[..10])),
        "its landed commit {main_tip}: {page}"
    );
    let page = serve.get("/tasks/dep");
    assert!(
        page.contains("Depends on: <a href=\"/tasks/base\" data-dep=\"base\">base</a> <span class=\"badge s-landed\">landed</span>"),
        "{page}"
    );
    // A task that did not land: the range that would.
    let page = serve.get("/tasks/c2");
    assert!(page.contains("what `flocks land` applies"), "{page}");
    assert!(!page.contains("data-landed"), "{page}");
    // The prompt changed in the task file since: said so.
    let text = std::fs::read_to_string(p.path("tasks.jsonl")).unwrap();
    std::fs::write(
        p.path("tasks.jsonl"),
        text.replace("Write the base.", "Write a better base."),
    )
    .unwrap();
    let page = serve.get("/tasks/base");
    assert!(
        page.contains("Write a better base.")
            && page.contains("it changed since the task's last attempt ran"),
        "{page}"
    );
}
