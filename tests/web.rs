//! `flocks report` and `flocks serve` from the command line (no browser:
//! tests/web_browser.rs drives one).

mod support;

use serde_json::json;
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

    // The last run: the retry, with every task of the state.
    let out = p.flocks(&["report"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let file = p.path(&format!("flocks-report-{second}.html"));
    let html = std::fs::read_to_string(&file).unwrap();
    assert!(
        html.contains(&format!("Run <strong>{second}</strong>")),
        "{html}"
    );
    assert!(
        html.contains(r#"data-task="flaky" data-status="succeeded" data-cost="0.3000""#),
        "{html}"
    );
    assert_eq!(
        html.matches("class=\"bar ").count(),
        1,
        "one attempt in the retry: {html}"
    );

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
        html.contains(r#"data-task="ok" data-status="succeeded" data-cost="0.2000""#),
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
