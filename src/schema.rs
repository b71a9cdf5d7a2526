//! JSON Schemas of what flocks prints for scripts, generated from the types
//! that print it: `status --json` ([`crate::view::StatusView`]), `tasks
//! --json` (`commands::tasks::TasksJson`), `logs --json`
//! (`commands::logs::LogsJson`), `run --dry-run --json`
//! (`service::dry_run::DryRunJson`), `land --dry-run --json`
//! ([`crate::land::PlanJson`]) and a line of
//! `.flocks/events.jsonl` ([`crate::report::Event`] plus its `ts`). The
//! checked-in copies under `docs/src/reference/schemas/` are what the manual
//! links to and what tests/schemas.rs validates real output against; the
//! test here fails when they fall behind the types
//! (`FLOCKS_WRITE_SCHEMAS=1 cargo nextest run -E 'test(/schemas_are_current/)'`
//! writes them again).

use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// Where the checked-in schemas live, from the crate's root.
const DIR: &str = "docs/src/reference/schemas";

/// Schemas for what flocks writes (optional fields may be absent).
fn generator() -> schemars::SchemaGenerator {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
}

/// `flocks status --json`.
fn status() -> Value {
    let mut schema = generator().into_root_schema_for::<crate::view::StatusView>();
    schema.insert("title".into(), json!("flocks status --json"));
    schema.to_value()
}

/// `flocks tasks --json`.
fn tasks() -> Value {
    let mut schema = generator().into_root_schema_for::<crate::commands::tasks::TasksJson>();
    schema.insert("title".into(), json!("flocks tasks --json"));
    schema.to_value()
}

/// `flocks logs <task> --json`.
fn logs() -> Value {
    let mut schema = generator().into_root_schema_for::<crate::commands::logs::LogsJson<'static>>();
    schema.insert("title".into(), json!("flocks logs <task> --json"));
    schema.to_value()
}

/// `flocks run --dry-run --json`.
fn run_plan() -> Value {
    let mut schema =
        generator().into_root_schema_for::<crate::service::dry_run::DryRunJson<'static>>();
    schema.insert("title".into(), json!("flocks run --dry-run --json"));
    schema.to_value()
}

/// `flocks land --dry-run --json`.
fn land_plan() -> Value {
    let mut schema = generator().into_root_schema_for::<crate::land::PlanJson>();
    schema.insert("title".into(), json!("flocks land --dry-run --json"));
    schema.to_value()
}

/// One line of `.flocks/events.jsonl`: an event, and `ts`, when it was
/// written (added by the writer, not a field of the event).
fn event_line() -> Value {
    let mut schema = generator().into_root_schema_for::<crate::report::Event>();
    schema.insert("title".into(), json!("a line of .flocks/events.jsonl"));
    let mut value = schema.to_value();
    let obj = value.as_object_mut().expect("a schema object");
    let event = obj
        .remove("oneOf")
        .expect("Event is an enum: oneOf its kinds");
    obj.insert(
        "allOf".into(),
        json!([
            {"oneOf": event},
            {
                "type": "object",
                "properties": {"ts": {"type": "string", "format": "date-time"}},
                "required": ["event", "ts"]
            }
        ]),
    );
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in schemas are the types' (written again with
    /// FLOCKS_WRITE_SCHEMAS=1).
    #[test]
    fn schemas_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DIR);
        let write = std::env::var_os("FLOCKS_WRITE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, schema) in [
            ("status.schema.json", status()),
            ("event.schema.json", event_line()),
            ("tasks.schema.json", tasks()),
            ("logs.schema.json", logs()),
            ("run-plan.schema.json", run_plan()),
            ("land-plan.schema.json", land_plan()),
        ] {
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            let path = dir.join(name);
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "{} no longer match the types: FLOCKS_WRITE_SCHEMAS=1 cargo nextest run -E 'test(/schemas_are_current/)' writes them again (and say what changed in CHANGELOG.md)",
            stale.join(", ")
        );
    }
}
