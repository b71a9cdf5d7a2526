//! The pages rendered from hand-built models.

use std::sync::Arc;

use chrono::{Duration, Utc};

use super::*;
use crate::view::{CredentialView, StatusView, TaskView, Totals};

fn model(tasks: Vec<TaskView>, credentials: Vec<CredentialView>) -> Model {
    let now = Utc::now();
    let summary = super::super::scope::Summary::of(
        tasks
            .iter()
            .map(|t| (t.id.clone(), Default::default()))
            .collect(),
    );
    Model {
        status: Arc::new(StatusView {
            run: None,
            tasks,
            pools: Vec::new(),
            credentials,
            vms: Vec::new(),
            waiting: None,
            disk: None,
            totals: Totals {
                tasks: 1,
                attempts: 1,
                turns: 0,
                cost_usd: 0.0,
            },
        }),
        timeline: Arc::new(super::super::timeline::Timeline {
            start: now,
            end: now,
            segments: vec![(now, now)],
            runs: Vec::new(),
            rows: Vec::new(),
            cost_series: Vec::new(),
            cost_per_task: Vec::new(),
        }),
        events: Vec::new(),
        waiting_until: None,
        now,
        version: 0,
        error: None,
        running_since: Arc::default(),
        tally: Arc::default(),
        runs: Arc::default(),
        scope: Arc::new(super::super::scope::Scope {
            kind: super::super::scope::Kind::Piece { after_land: None },
            start: None,
            end: None,
            runs: Vec::new(),
        }),
        summary: Arc::new(summary),
    }
}

fn task(id: &str, status: &str, detail: &str) -> TaskView {
    TaskView {
        id: id.into(),
        branch: format!("flocks/{id}"),
        status: status.into(),
        detail: Some(detail.into()),
        attempts: 1,
        pool: Some("local".into()),
        elapsed_secs: Some(3.0),
        activity: None,
        quiet_secs: None,
        pending_secs: None,
        job: None,
        turns: 0,
        cost_usd: 0.0,
        depends_on: Vec::new(),
        blocked_on: Vec::new(),
        worktree: "/w".into(),
        log: None,
        log_tail: Vec::new(),
        outcome: None,
        expect_commits: true,
        result: None,
        conflict: None,
        conflict_unknown: false,
        outside_footprint: Vec::new(),
        variants: Vec::new(),
        judgement: None,
        usage: None,
        egress_denied: 0,
    }
}

#[test]
fn what_agents_wrote_is_escaped_and_secrets_are_redacted() {
    let m = model(
        vec![task(
            "a",
            "failed",
            "failed: <script>alert(1)</script> with sk-secret-value-123",
        )],
        Vec::new(),
    );
    let r = Redactor::new([("sk-secret-value-123".to_string(), "KEY".to_string())]);
    let f = dashboard_fragments(&m, None, &Chrome::default(), &r);
    let table = &f["tasks"];
    assert!(
        table.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{table}"
    );
    assert!(!table.contains("<script>"), "{table}");
    assert!(
        table.contains("[redacted:KEY]") && !table.contains("sk-secret"),
        "{table}"
    );
    // Read-only: no buttons anywhere.
    assert!(f.values().all(|html| !html.contains("<button")), "{f:?}");
    let lines = log_lines(&["▶ Bash: echo <b>sk-secret-value-123</b>".to_string()], &r);
    let lines = lines.into_string();
    assert!(lines.contains("class=\"l tool\""), "{lines}");
    assert!(
        lines.contains("&lt;b&gt;[redacted:KEY]&lt;/b&gt;"),
        "{lines}"
    );
}

#[test]
fn parked_and_disabled_credentials_show_with_their_reset_times() {
    let until = Utc::now() + Duration::minutes(90);
    let m = model(
        Vec::new(),
        vec![
            CredentialView {
                name: "sub-1".into(),
                parked_until: Some(until),
                disabled: None,
            },
            CredentialView {
                name: "sub-2".into(),
                parked_until: None,
                disabled: Some("rejected: invalid token".into()),
            },
        ],
    );
    let f = dashboard_fragments(&m, None, &Chrome::default(), &Redactor::new([]));
    let creds = &f["creds"];
    assert!(
        creds.contains(&until.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        "{creds}"
    );
    assert!(
        creds.contains("(in 1h29m)") || creds.contains("(in 1h30m)"),
        "{creds}"
    );
    assert!(
        creds.contains("disabled") && creds.contains("rejected: invalid token"),
        "{creds}"
    );
}

#[test]
fn a_best_of_task_page_shows_its_judgement_and_variants() {
    use crate::state::{JudgedBy, Judgement, VerdictOutcome};
    use crate::view::VariantView;
    let variant = |k: u32, verdict: VerdictOutcome, reason: &str, lines: u64| VariantView {
        variant: k,
        id: format!("a@v{k}"),
        branch: format!("flocks/a@v{k}"),
        status: "succeeded".into(),
        detail: None,
        attempts: 1,
        pool: Some("local".into()),
        cost_usd: 0.25,
        activity: None,
        log: None,
        verdict: Some(verdict),
        verdict_reason: Some(reason.into()),
        lines: Some(lines),
    };
    let mut t = task("a", "succeeded", "");
    t.detail = None;
    t.variants = vec![
        variant(
            1,
            VerdictOutcome::FailedValidation,
            "`cargo test` failed: <exit 1>",
            40,
        ),
        variant(2, VerdictOutcome::Winner, "the smallest change", 5),
    ];
    t.judgement = Some(Judgement {
        winner: Some(2),
        by: JudgedBy::Ranking,
        reason: "the smallest change (5 lines)".into(),
        ranking: Vec::new(),
        at: Utc::now(),
        notice: Some("the judge answered garbage".into()),
        judge_cost_usd: 0.0,
    });
    let m = model(vec![t], Vec::new());
    let r = Redactor::new([]);
    let f = task_fragments(&m, None, "a", None, &Chrome::default(), &r);
    let head = &f["taskhead"];
    assert!(
        head.contains("v2 won (ranking): the smallest change (5 lines)"),
        "{head}"
    );
    assert!(head.contains("Note: the judge answered garbage"), "{head}");
    assert!(
        head.contains("href=\"/tasks/a@v1\"") && head.contains("href=\"/tasks/a@v2\""),
        "{head}"
    );
    assert!(
        head.contains(">winner<") && head.contains(">failed validation<"),
        "{head}"
    );
    assert!(
        head.contains("`cargo test` failed: &lt;exit 1&gt;"),
        "{head}"
    );
    // A variant's own page says whose variant it is.
    let f = task_fragments(&m, None, "a@v1", None, &Chrome::default(), &r);
    let head = &f["taskhead"];
    assert!(
        head.contains("Variant 1 of best-of task") && head.contains("href=\"/tasks/a\""),
        "{head}"
    );
    assert!(
        head.contains("40 lines") && !head.contains("No task"),
        "{head}"
    );
}

#[test]
fn the_filter_keeps_the_tasks_of_one_status() {
    let m = model(
        vec![
            task("a", "failed", ""),
            task("b", "succeeded", ""),
            task("c", "failed", ""),
        ],
        Vec::new(),
    );
    let f = dashboard_fragments(&m, Some("failed"), &Chrome::default(), &Redactor::new([]));
    assert!(f["tasks"].contains("data-task=\"a\"") && f["tasks"].contains("data-task=\"c\""));
    assert!(!f["tasks"].contains("data-task=\"b\""));
    assert!(
        f["filters"].contains("failed 2") && f["filters"].contains("succeeded 1"),
        "{}",
        f["filters"]
    );
    // With actions: a retry button for each failed task.
    let chrome = Chrome {
        csrf: Some("t0k".into()),
    };
    let f = dashboard_fragments(&m, None, &chrome, &Redactor::new([]));
    assert_eq!(f["tasks"].matches("data-action=\"retry\"").count(), 2);
    assert!(f["tasks"].contains("value=\"t0k\""));
}
