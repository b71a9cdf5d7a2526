//! The JSON Schemas the manual publishes (docs/src/reference/schemas/,
//! generated from the types by `src/schema.rs`) hold for real output: every
//! line of `.flocks/events.jsonl`, `flocks status --json` and `flocks tasks
//! --json` of a run with successes, a failure, a retry, a blocked task, a
//! best-of task, a predicted conflict and a land.

mod support;

use serde_json::{Value, json};
use support::*;

fn schema(name: &str) -> jsonschema::Validator {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/src/reference/schemas")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&value)
        .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

fn check(validator: &jsonschema::Validator, what: &str, value: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{what} does not fit its schema:\n{}\n{value:#}",
        errors.join("\n")
    );
}

#[test]
fn events_and_status_json_fit_their_schemas() {
    let p = TestProject::new("max_agents = 4\n");
    let once = p.out_file("fail-once");
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit a.txt from-a"}),
        json!({"id": "b", "prompt": "@fake commit shared.txt from-b"}),
        json!({"id": "c", "prompt": "@fake commit shared.txt from-c"}),
        json!({"id": "d", "prompt": "@fake fail it broke"}),
        json!({"id": "e", "prompt": "@fake commit e.txt e", "depends_on": ["d"]}),
        json!({"id": "f", "prompt": format!("@fake fail-once {} once\n@fake commit f.txt f", once.display())}),
        json!({"id": "g", "best_of": 2, "prompt": "@fake commit g.txt g"}),
    ]);
    let run = p.flocks(&["run", "--supervise", "--max-retries", "1", "--no-progress"]);
    assert_eq!(code(&run), 3, "{}", text(&run));
    let status = p.flocks(&["status", "--json"]);
    assert_eq!(code(&status), 0, "{}", text(&status));
    // The plans, before the land: `land --dry-run` predicts c's conflict.
    let run_plan = p.flocks(&["run", "--dry-run", "--json"]);
    assert_eq!(code(&run_plan), 0, "{}", text(&run_plan));
    let run_plan: Value = serde_json::from_slice(&run_plan.stdout).unwrap();
    assert!(
        run_plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["variants"] == 2),
        "the best-of task in the plan: {run_plan:#}"
    );
    check(
        &schema("run-plan.schema.json"),
        "run --dry-run --json",
        &run_plan,
    );
    let land_plan = p.flocks(&["land", "--dry-run", "--json"]);
    assert_eq!(code(&land_plan), 0, "{}", text(&land_plan));
    let land_plan: Value = serde_json::from_slice(&land_plan.stdout).unwrap();
    assert!(
        land_plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| !t["conflict"].is_null()),
        "c's predicted conflict: {land_plan:#}"
    );
    check(
        &schema("land-plan.schema.json"),
        "land --dry-run --json",
        &land_plan,
    );
    let land = p.flocks(&["land", "-y"]);
    assert_eq!(code(&land), 4, "c conflicts with b: {}", text(&land));

    let events = schema("event.schema.json");
    let lines = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for line in lines.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        kinds.insert(value["event"].as_str().unwrap().to_string());
        check(&events, &format!("events.jsonl line {line}"), &value);
    }
    for kind in [
        "run_started",
        "queued",
        "started",
        "finished",
        "requeued",
        "blocked",
        "conflict_predicted",
        "variant_judged",
        "needs_attention",
        "landed",
        "run_finished",
    ] {
        assert!(kinds.contains(kind), "no {kind} event in:\n{lines}");
    }

    let status_schema = schema("status.schema.json");
    check(
        &status_schema,
        "status --json during the run's aftermath",
        &serde_json::from_slice(&status.stdout).unwrap(),
    );
    // After the land too: landed tasks, a best-of task's variants.
    let after = p.flocks(&["status", "--json"]);
    let value: Value = serde_json::from_slice(&after.stdout).unwrap();
    assert!(
        value["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| !t["variants"].as_array().is_none_or(|v| v.is_empty())),
        "a best-of task with its variants: {value:#}"
    );
    check(&status_schema, "status --json after the land", &value);

    let tasks = p.flocks(&["tasks", "--json"]);
    assert_eq!(code(&tasks), 0, "{}", text(&tasks));
    check(
        &schema("tasks.schema.json"),
        "tasks --json",
        &serde_json::from_slice(&tasks.stdout).unwrap(),
    );

    for task in ["a", "d", "f"] {
        let logs = p.flocks(&["logs", task, "--json"]);
        assert_eq!(code(&logs), 0, "{}", text(&logs));
        check(
            &schema("logs.schema.json"),
            &format!("logs {task} --json"),
            &serde_json::from_slice(&logs.stdout).unwrap(),
        );
    }

    // A schema that does not hold is seen: a wrong type fails it.
    let mut bad = value.clone();
    bad["totals"]["cost_usd"] = json!("free");
    assert!(!status_schema.is_valid(&bad));
}
