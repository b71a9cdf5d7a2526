//! Retries, --supervise, rate limits, bad credentials, quick failures, budget.

mod support;

use serde_json::{Value, json};
use support::*;

const TOK_A: &str = "tok-A-0123456789abcdef";
const TOK_B: &str = "tok-B-0123456789abcdef";

fn two_credentials(extra: &str) -> TestProject {
    TestProject::new(&format!(
        "{extra}\n[[credentials]]\nname = \"a\"\nenv = \"TOK_A\"\n\n[[credentials]]\nname = \"b\"\nenv = \"TOK_B\"\n\n\
         [[containers]]\nname = \"local\"\nmax_worktrees = 1\ncredential = \"rotate\"\n"
    ))
}

fn run_with_creds(p: &TestProject, args: &[&str]) -> std::process::Output {
    p.cmd(args)
        .env("TOK_A", TOK_A)
        .env("TOK_B", TOK_B)
        .output()
        .unwrap()
}

fn records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn supervise_resumes_a_failed_attempt_and_finishes_it() {
    let p = TestProject::new("");
    let rec = p.out_file("rec.jsonl");
    let once = p.out_file("once");
    p.tasks(&[json!({"id": "flaky", "prompt": format!(
        "@fake record {}\n@fake fail-once {} flaky test\n@fake commit fixed.txt", rec.display(), once.display())})]);
    let out = p.flocks(&["run", "--supervise", "--max-retries", "2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = p.task("flaky");
    let attempts = t["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["outcome"]["kind"], "failed");
    let first_session = attempts[0]["session_id"].as_str().unwrap();
    assert_eq!(attempts[1]["resumed_from"], first_session);
    assert_ne!(
        attempts[1]["session_id"], first_session,
        "a resumed session gets a new id"
    );
    let second = &records(&rec)[1];
    let argv: Vec<&str> = second["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        argv.contains(&format!("--resume={first_session}").as_str()),
        "{argv:?}"
    );
    assert!(
        second["prompt"]
            .as_str()
            .unwrap()
            .contains("attempt 1 failed"),
        "{second}"
    );
}

#[test]
fn a_lost_session_starts_fresh_with_the_prior_context() {
    let p = TestProject::new("");
    let rec = p.out_file("rec.jsonl");
    p.tasks(&[json!({"id": "t", "prompt": format!("@fake record {}\n@fake text trying hard\n@fake fail the build is red", rec.display())})]);
    assert_eq!(code(&p.flocks(&["run"])), 3);
    // claude forgot the session (new machine, cleared cache).
    std::fs::remove_dir_all(p.tmp.path().join("fake-home")).unwrap();
    p.tasks(&[json!({"id": "t", "prompt": format!("@fake record {}\n@fake commit ok.txt", rec.display())})]);
    let out = p.flocks(&["retry", "t"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let t = p.task("t");
    let kinds: Vec<&str> = t["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["failed", "spawn_failed", "success"]);
    let fresh = records(&rec).last().unwrap().clone();
    let prompt = fresh["prompt"].as_str().unwrap();
    assert!(
        prompt.contains("An earlier attempt at this task did not finish"),
        "{prompt}"
    );
    assert!(prompt.contains("the build is red"), "{prompt}");
    assert!(prompt.contains("trying hard"), "log tail missing: {prompt}");
    assert!(!fresh["argv"].to_string().contains("--resume"));
}

#[test]
fn always_failing_tasks_stop_after_max_retries() {
    let p = TestProject::new("max_retries = 2");
    p.tasks(&[json!({"id": "bad", "prompt": "@fake fail never works"})]);
    let out = p.flocks(&["run", "--supervise"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(p.task("bad")["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(p.status_of("bad"), "failed");
}

#[test]
fn each_limit_signal_parks_the_credential_and_requeues_the_task() {
    let soon = now() + 1;
    for signal in [
        format!("usage-limit {soon}"),
        "hit-limit".to_string(),
        format!("rate-limit-event {soon}"),
        "assistant-error rate_limit".to_string(),
        "api-error 429".to_string(),
    ] {
        let p = two_credentials("");
        p.tasks(&[json!({"id": "t", "prompt": format!("@fake if-env FLOCKS_CREDENTIAL a {signal}\n@fake commit x.txt")})]);
        let out = run_with_creds(&p, &["run"]);
        assert_eq!(code(&out), 0, "{signal}: {}", text(&out));
        let t = p.task("t");
        let attempts = t["attempts"].as_array().unwrap();
        assert_eq!(attempts[0]["outcome"]["kind"], "rate_limited", "{signal}");
        assert_eq!(attempts[0]["credential"], "a");
        assert_eq!(attempts[1]["credential"], "b");
        assert_eq!(p.status_of("t"), "success");
        assert!(
            p.state()["credentials"]["a"]["parked_until"].is_string(),
            "{signal}"
        );
        assert!(
            text(&out).contains("credential a parked"),
            "{signal}: {}",
            text(&out)
        );
    }
}

#[test]
fn limits_inside_tool_output_do_not_count() {
    let p = two_credentials("");
    p.tasks(&[json!({"id": "t", "prompt": "@fake tool-output HTTP 429 Too Many Requests; usage limit reached|1700000000\n@fake commit x.txt"})]);
    let out = run_with_creds(&p, &["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.task("t")["attempts"].as_array().unwrap().len(), 1);
    assert!(
        p.state()["credentials"]
            .as_object()
            .is_none_or(|c| c.is_empty())
    );
}

#[test]
fn a_rejected_credential_is_disabled() {
    let p = two_credentials("");
    p.tasks(&[
        json!({"id": "t1", "prompt": format!("@fake if-env FLOCKS_CREDENTIAL a assistant-error authentication_failed\n@fake commit x.txt")}),
        json!({"id": "t2", "prompt": format!("@fake if-env FLOCKS_CREDENTIAL a assistant-error authentication_failed\n@fake commit y.txt")}),
    ]);
    let out = run_with_creds(&p, &["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("credential a disabled"),
        "{}",
        text(&out)
    );
    assert_eq!(
        p.state()["credentials"]["a"]["disabled"],
        "authentication failed"
    );
    // After the rejection, only b is used.
    assert_eq!(p.task("t2")["attempts"][0]["credential"], "b");
    assert!(text(&p.flocks(&["status"])).contains("disabled"));
}

#[test]
fn every_credential_parked_waits_or_exits_5_with_no_wait() {
    let p = TestProject::new(
        "[[credentials]]\nname = \"a\"\nenv = \"TOK_A\"\n\n[[containers]]\nname = \"local\"\ncredential = \"a\"\n",
    );
    let once = p.out_file("once");
    p.tasks(&[json!({"id": "t", "prompt": format!("@fake once {} usage-limit {}\n@fake commit x.txt", once.display(), now() + 2)})]);
    let out = run_with_creds(&p, &["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("every usable credential is parked: waiting until"),
        "{}",
        text(&out)
    );

    let p = TestProject::new(
        "[[credentials]]\nname = \"a\"\nenv = \"TOK_A\"\n\n[[containers]]\nname = \"local\"\ncredential = \"a\"\n",
    );
    p.tasks(&[json!({"id": "t", "prompt": format!("@fake usage-limit {}", now() + 3600)})]);
    let out = run_with_creds(&p, &["run", "--no-wait"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(text(&out).contains("--no-wait"), "{}", text(&out));
    assert_eq!(p.status_of("t"), "pending");
}

#[test]
fn quick_failures_in_a_row_stop_dispatching() {
    let p = TestProject::new("max_agents = 1\n[agent]\ncommand = \"/bin/false\"\n");
    let tasks: Vec<Value> = (0..6)
        .map(|i| json!({"id": format!("t{i}"), "prompt": "x"}))
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 5, "{}", text(&out));
    assert!(
        text(&out).contains("dispatch stopped: 3 attempts in a row failed"),
        "{}",
        text(&out)
    );
    let attempts: usize = p.state()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["attempts"].as_array().unwrap().len())
        .sum();
    assert_eq!(attempts, 3);
}

#[test]
fn the_budget_stops_new_dispatches() {
    let p = TestProject::new("max_agents = 1\nmax_cost_usd = 1.5\n");
    let tasks: Vec<Value> = (0..4).map(|i| json!({"id": format!("t{i}"), "prompt": format!("@fake cost 1.0\n@fake commit f{i}.txt")})).collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert!(
        text(&out).contains("reaching max_cost_usd"),
        "{}",
        text(&out)
    );
    let started = p.state()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["attempts"].as_array().unwrap().is_empty())
        .count();
    assert_eq!(started, 2);
}

#[test]
fn retry_command_rules() {
    let p = TestProject::new("");
    p.tasks(&[
        json!({"id": "ok", "prompt": "@fake commit a.txt"}),
        json!({"id": "bad", "prompt": "@fake fail x"}),
        json!({"id": "after", "prompt": "@fake commit c.txt", "depends_on": ["bad"]}),
    ]);
    assert_eq!(code(&p.flocks(&["run"])), 3);
    assert_eq!(p.status_of("after"), "blocked");
    let refused = p.flocks(&["retry", "ok"]);
    assert_eq!(code(&refused), 2);
    assert!(text(&refused).contains("--force"), "{}", text(&refused));
    // Fixed prompt, fresh branch: the dependent runs too.
    p.tasks(&[
        json!({"id": "ok", "prompt": "@fake commit a.txt"}),
        json!({"id": "bad", "prompt": "@fake commit b.txt"}),
        json!({"id": "after", "prompt": "@fake commit c.txt", "depends_on": ["bad"]}),
    ]);
    let out = p.flocks(&["retry", "--all-failed", "--fresh"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("bad"), "success");
    assert_eq!(p.status_of("after"), "success");
    assert_eq!(
        p.task("ok")["attempts"].as_array().unwrap().len(),
        1,
        "ok is not re-run"
    );
    assert!(p.git_ok(&["rev-parse", "--verify", "refs/flocks/backup/bad/1"]));
    let forced = p.flocks(&["retry", "--force", "ok"]);
    assert_eq!(code(&forced), 0, "{}", text(&forced));
    assert_eq!(p.task("ok")["attempts"].as_array().unwrap().len(), 2);
}
