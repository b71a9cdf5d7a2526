//! Reading task lines: every malformed line names the file, the line and the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{Footprint, StartFrom, Task, TaskSet, dependency_order, valid_id};
use crate::config::CommandSpec;
use crate::error::{Error, Result};

/// Naming rules that depend on the config, and the fields its prompt
/// template reads.
pub(crate) struct BranchRules<'a> {
    pub prefix: &'a str,
    pub base: &'a str,
    pub land_target: &'a str,
    /// The `<field>` of every `{{task.<field>}}` in `[prompt] template`: a
    /// line may set them at its top level (as before `vars`).
    pub template_fields: &'a [String],
}

/// The fields flocks reads from a task line (`vars` holds the template's).
pub(super) const FIELDS: &[&str] = &[
    "id",
    "prompt",
    "branch",
    "title",
    "description",
    "depends_on",
    "start_from",
    "expect_commits",
    "max_cost_usd",
    "touches",
    "best_of",
    "vars",
];

pub(crate) fn load_jsonl(path: &Path, rules: &BranchRules) -> Result<TaskSet> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Usage(format!(
                "tasks file {} does not exist: pass --tasks PATH or set [source] path in flocks.toml",
                path.display()
            )));
        }
        Err(e) => return Err(Error::input(path, None, None, format!("cannot read: {e}"))),
    };
    parse_jsonl(path, &text, rules)
}

/// Run a `[source] type = "script"` command and read its stdout as JSONL.
/// `env` is the environment the script runs with (credentials already removed).
pub(crate) fn load_script(
    command: &CommandSpec,
    dir: &Path,
    env: &[(String, String)],
    rules: &BranchRules,
) -> Result<TaskSet> {
    let name = PathBuf::from(format!("[source] script `{command}`"));
    let mut cmd = command.to_command();
    cmd.current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd.stdin(std::process::Stdio::null());
    let out = cmd
        .output()
        .map_err(|e| Error::input(&name, None, None, format!("could not start it: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::input(
            &name,
            None,
            None,
            format!(
                "exited with {}; its stderr ends with:\n{}",
                out.status,
                tail.join("\n")
            ),
        ));
    }
    let text = String::from_utf8(out.stdout)
        .map_err(|_| Error::input(&name, None, None, "printed output that is not UTF-8"))?;
    parse_jsonl(&name, &text, rules)
}

pub(crate) fn parse_jsonl(source: &Path, text: &str, rules: &BranchRules) -> Result<TaskSet> {
    let mut tasks: Vec<Task> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut branches: HashMap<String, usize> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let err = |field: Option<&str>, msg: String| Error::input(source, Some(lineno), field, msg);
        let obj: Map<String, Value> = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Err(err(
                    None,
                    "expected a JSON object (one task per line)".into(),
                ));
            }
            Err(e) => return Err(err(None, format!("not valid JSON: {e}"))),
        };
        let task = task_from_object(obj, lineno, rules)
            .map_err(|(field, msg)| err(field.as_deref(), msg))?;
        if let Some(prev) = ids.insert(task.id.clone(), lineno) {
            return Err(err(
                Some("id"),
                format!("duplicate id `{}` (first on line {prev})", task.id),
            ));
        }
        if let Some(prev) = branches.insert(task.branch.clone(), lineno) {
            return Err(err(
                Some("branch"),
                format!(
                    "branch `{}` is already used by the task on line {prev}",
                    task.branch
                ),
            ));
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(Error::input(
            source,
            None,
            None,
            "holds no task (it is empty, or only blank lines): write one JSON object per line, \
             e.g. {\"id\": \"fix-login\", \"prompt\": \"Fix the login bug ...\"}",
        ));
    }
    if let Err(e) = dependency_order(&tasks) {
        return Err(Error::input(
            source,
            Some(tasks[e.index()].line),
            Some("depends_on"),
            e.to_string(),
        ));
    }
    Ok(TaskSet::new(source.to_path_buf(), tasks))
}

type FieldError = (Option<String>, String);

fn fe(field: &str, msg: impl Into<String>) -> FieldError {
    (Some(field.to_string()), msg.into())
}

/// A task line as flocks reads it, field by field (in this order, so that
/// the first bad field is the one named).
fn task_from_object(
    mut obj: Map<String, Value>,
    line: usize,
    rules: &BranchRules,
) -> Result<Task, FieldError> {
    // A field flocks does not know is a typo, or a field for the template.
    let vars = template_vars(&mut obj, rules)?;
    let id = opt_string(&mut obj, "id")?
        .ok_or_else(|| fe("id", "missing (every task needs a unique id)"))?;
    valid_id(&id).map_err(|m| fe("id", format!("`{id}` {m}")))?;
    let prompt = opt_string(&mut obj, "prompt")?.ok_or_else(|| fe("prompt", "missing"))?;
    if prompt.trim().is_empty() {
        return Err(fe("prompt", "is empty"));
    }
    let branch = opt_string(&mut obj, "branch")?.unwrap_or_else(|| format!("{}{id}", rules.prefix));
    check_branch(&branch, rules).map_err(|m| fe("branch", m.to_string()))?;
    let title = opt_string(&mut obj, "title")?;
    let description = opt_string(&mut obj, "description")?;
    let depends_on = depends_on(&mut obj)?;
    let start_from = start_from(&mut obj)?;
    let expect_commits = expect_commits(&mut obj)?;
    let max_cost_usd = max_cost_usd(&mut obj)?;
    let touches = touches(&mut obj)?;
    let best_of = best_of(&mut obj)?;
    Ok(Task {
        id,
        prompt,
        branch,
        title,
        description,
        depends_on,
        start_from,
        expect_commits,
        max_cost_usd,
        touches,
        best_of,
        variant: None,
        // An emptied map still holds its first node (600 bytes): at 10,000
        // tasks that is 6 MB of nothing.
        extra: if obj.is_empty() && vars.is_empty() {
            Map::new()
        } else {
            obj.extend(vars);
            obj
        },
        line,
    })
}

fn opt_string(obj: &mut Map<String, Value>, key: &str) -> Result<Option<String>, FieldError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(fe(
            key,
            format!("expected a string, found {}", kind(&other)),
        )),
    }
}

/// The strings of an array field; `what` names them in the error.
fn strings(items: Vec<Value>, key: &str, what: &str) -> Result<Vec<String>, FieldError> {
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            other => Err(fe(
                key,
                format!("expected {what} (strings), found {}", kind(&other)),
            )),
        })
        .collect()
}

fn depends_on(obj: &mut Map<String, Value>) -> Result<Vec<String>, FieldError> {
    match obj.remove("depends_on") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => strings(items, "depends_on", "task ids"),
        Some(other) => Err(fe(
            "depends_on",
            format!("expected an array of task ids, found {}", kind(&other)),
        )),
    }
}

fn start_from(obj: &mut Map<String, Value>) -> Result<StartFrom, FieldError> {
    match opt_string(obj, "start_from")? {
        None => Ok(StartFrom::Base),
        Some(v) => StartFrom::parse(&v).ok_or_else(|| {
            fe(
                "start_from",
                format!(
                    "unknown value `{v}`: use \"{}\"",
                    StartFrom::VALUES.join("\" or \"")
                ),
            )
        }),
    }
}

fn expect_commits(obj: &mut Map<String, Value>) -> Result<bool, FieldError> {
    match obj.remove("expect_commits") {
        None | Some(Value::Null) => Ok(true),
        Some(Value::Bool(b)) => Ok(b),
        Some(other) => Err(fe(
            "expect_commits",
            format!("expected true or false, found {}", kind(&other)),
        )),
    }
}

fn max_cost_usd(obj: &mut Map<String, Value>) -> Result<Option<f64>, FieldError> {
    match obj.remove("max_cost_usd") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(c) if c.is_finite() && c >= 0.0 => Ok(Some(c).filter(|c| *c > 0.0)),
            _ => Err(fe(
                "max_cost_usd",
                format!("must be a non-negative number of dollars, found {n}"),
            )),
        },
        Some(other) => Err(fe(
            "max_cost_usd",
            format!("expected a number of dollars, found {}", kind(&other)),
        )),
    }
}

fn touches(obj: &mut Map<String, Value>) -> Result<Option<Footprint>, FieldError> {
    match obj.remove("touches") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let patterns = strings(items, "touches", "glob patterns")?;
            if patterns.is_empty() {
                return Err(fe(
                    "touches",
                    "is empty: list the paths the task changes (e.g. [\"src/auth/**\"]), or leave the field out",
                ));
            }
            Footprint::new(&patterns)
                .map(Some)
                .map_err(|e| fe("touches", e.to_string()))
        }
        Some(other) => Err(fe(
            "touches",
            format!(
                "expected an array of glob patterns (e.g. [\"src/auth/**\"]), found {}",
                kind(&other)
            ),
        )),
    }
}

fn best_of(obj: &mut Map<String, Value>) -> Result<Option<u32>, FieldError> {
    match obj.remove("best_of") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n))
            if n.as_u64()
                .is_some_and(|n| (1..=u64::from(crate::config::MAX_BEST_OF)).contains(&n)) =>
        {
            Ok(n.as_u64().map(|n| n as u32))
        }
        Some(other) => Err(fe(
            "best_of",
            format!(
                "expected a whole number of variants from 1 to {}, found {}",
                crate::config::MAX_BEST_OF,
                match &other {
                    Value::Number(n) => n.to_string(),
                    other => kind(other).to_string(),
                }
            ),
        )),
    }
}

/// Check the fields of a line that flocks does not read: each must be one
/// the prompt template reads (`{{task.<field>}}`), or stand under `vars`. A
/// field a small edit away from a known one is named ("did you mean"),
/// before anything else on the line is checked (a typo of a required field
/// is said as such, not as "missing"). Returns the entries of `vars`.
fn template_vars(
    obj: &mut Map<String, Value>,
    rules: &BranchRules,
) -> Result<Map<String, Value>, FieldError> {
    let known = |k: &str| FIELDS.contains(&k) || rules.template_fields.iter().any(|f| f == k);
    let unknown: Vec<&String> = obj.keys().filter(|k| !known(k)).collect();
    let names = || {
        FIELDS
            .iter()
            .copied()
            .chain(rules.template_fields.iter().map(String::as_str))
    };
    let near = unknown
        .iter()
        .find_map(|k| crate::typo::nearest(k, names()).map(|n| (*k, n)));
    if let Some((k, n)) = near {
        return Err((
            Some(k.clone()),
            format!("unknown field: did you mean `{n}`?"),
        ));
    }
    if let Some(k) = unknown.first() {
        let takes = &FIELDS[..FIELDS.len() - 1];
        return Err((
            Some((*k).clone()),
            format!(
                "unknown field: a task line takes {} and {}; a field for the prompt template goes under \"vars\" ({{\"vars\": {{\"{k}\": ...}}}}), where {{{{task.{k}}}}} finds it",
                takes[..takes.len() - 1].join(", "),
                takes[takes.len() - 1]
            ),
        ));
    }
    let vars = match obj.remove("vars") {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err((
                Some("vars".into()),
                format!(
                    "expected an object of template fields (e.g. {{\"team\": \"core\"}}), found {}",
                    kind(&other)
                ),
            ));
        }
    };
    for k in vars.keys() {
        if FIELDS.contains(&k.as_str()) {
            return Err((
                Some(format!("vars.{k}")),
                format!("`{k}` is a task field: set it on the line itself, not under \"vars\""),
            ));
        }
        if obj.contains_key(k) {
            return Err((
                Some(format!("vars.{k}")),
                format!("`{k}` is set twice, on the line and under \"vars\": keep one"),
            ));
        }
    }
    Ok(vars)
}

/// Why a task's `branch` cannot be its branch.
#[derive(Debug, thiserror::Error)]
enum BadBranch {
    #[error("`{0}` is not a valid branch name")]
    Invalid(String),
    #[error("`{0}` is the base or land target branch; a task needs a branch of its own")]
    NotOwn(String),
    #[error("`{0}` ends like a best-of variant's branch (`@v<k>`, `@judge`): choose another name")]
    Reserved(String),
}

fn check_branch(branch: &str, rules: &BranchRules) -> Result<(), BadBranch> {
    if branch.starts_with('-') || !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(BadBranch::Invalid(branch.to_string()));
    }
    let reserved = branch.ends_with("@judge")
        || branch
            .rsplit_once("@v")
            .is_some_and(|(_, k)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
    if reserved {
        return Err(BadBranch::Reserved(branch.to_string()));
    }
    if branch == rules.base || branch == rules.land_target {
        return Err(BadBranch::NotOwn(branch.to_string()));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: BranchRules = BranchRules {
        prefix: "flocks/",
        base: "main",
        land_target: "main",
        template_fields: &[],
    };

    fn parse(text: &str) -> Result<TaskSet> {
        parse_jsonl(Path::new("tasks.jsonl"), text, &RULES)
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn parses_and_defaults_branch() {
        let set = parse("{\"id\":\"a\",\"prompt\":\"x\",\"vars\":{\"team\":\"core\"}}\n\n{\"id\":\"b\",\"prompt\":\"y\",\"depends_on\":[\"a\"]}\n").unwrap();
        assert_eq!(set.tasks[0].branch, "flocks/a");
        assert_eq!(set.tasks[0].field("team").as_deref(), Some("core"));
        assert_eq!(set.tasks[1].line, 3);
    }

    #[test]
    fn unknown_fields_are_typos_or_template_fields() {
        let e = err("{\"id\":\"a\",\"prompt\":\"x\",\"expect_commit\":false}");
        assert_eq!(
            e,
            "tasks.jsonl:1: field `expect_commit`: unknown field: did you mean `expect_commits`?"
        );
        // Before "missing": the typo is what to fix.
        let e = err("{\"id\":\"a\",\"promt\":\"x\"}");
        assert!(
            e.contains("field `promt`: unknown field: did you mean `prompt`?"),
            "{e}"
        );
        let e = err("{\"id\":\"a\",\"prompt\":\"x\",\"team\":\"core\"}");
        assert!(
            e.contains("field `team`: unknown field: a task line takes id, prompt"),
            "{e}"
        );
        assert!(e.contains("and best_of;"), "{e}");
        assert!(e.contains("{\"vars\": {\"team\": ...}}"), "{e}");
        // The template's fields may stand at the top, as before.
        let fields = ["team".to_string()];
        let rules = BranchRules {
            template_fields: &fields,
            ..RULES
        };
        let set = parse_jsonl(
            Path::new("t.jsonl"),
            "{\"id\":\"a\",\"prompt\":\"x\",\"team\":\"core\",\"vars\":{\"n\":3}}",
            &rules,
        )
        .unwrap();
        assert_eq!(set.tasks[0].field("team").as_deref(), Some("core"));
        assert_eq!(set.tasks[0].field("n").as_deref(), Some("3"));
        assert!(!set.tasks[0].extra.contains_key("vars"));
        let e = parse_jsonl(
            Path::new("t.jsonl"),
            "{\"id\":\"a\",\"prompt\":\"x\",\"teem\":\"core\"}",
            &rules,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("did you mean `team`?"), "{e}");
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"vars\":1}")
                .contains("field `vars`: expected an object")
        );
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"vars\":{\"branch\":\"b\"}}")
                .contains("field `vars.branch`: `branch` is a task field")
        );
    }

    #[test]
    fn no_task_is_an_error() {
        for text in ["", "\n  \n\n"] {
            let e = err(text);
            assert!(e.starts_with("tasks.jsonl: holds no task"), "{e}");
        }
    }

    #[test]
    fn malformed_line_names_line() {
        let e = err("{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\": \n");
        assert!(e.starts_with("tasks.jsonl:2: not valid JSON"), "{e}");
    }

    #[test]
    fn missing_and_duplicate_ids() {
        assert!(err("{\"prompt\":\"x\"}").contains("tasks.jsonl:1: field `id`: missing"));
        let e = err("{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"a\",\"prompt\":\"y\"}");
        assert!(
            e.contains("tasks.jsonl:2: field `id`: duplicate id `a` (first on line 1)"),
            "{e}"
        );
    }

    #[test]
    fn unsafe_ids_and_branches() {
        assert!(err("{\"id\":\"../x\",\"prompt\":\"x\"}").contains("field `id`"));
        assert!(err("{\"id\":\"a/b\",\"prompt\":\"x\"}").contains("field `id`"));
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"branch\":\"a b\"}").contains("field `branch`")
        );
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"branch\":\"main\"}").contains("field `branch`")
        );
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"branch\":\"x;rm -rf ~\"}")
                .contains("field `branch`")
        );
    }

    #[test]
    fn expect_commits_values() {
        let set = parse("{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\",\"expect_commits\":false}").unwrap();
        assert!(set.tasks[0].expect_commits);
        assert!(!set.tasks[1].expect_commits);
        assert!(!set.tasks[1].extra.contains_key("expect_commits"));
        let e = err("{\"id\":\"a\",\"prompt\":\"x\",\"expect_commits\":\"no\"}");
        assert!(
            e.contains(
                "tasks.jsonl:1: field `expect_commits`: expected true or false, found a string"
            ),
            "{e}"
        );
    }

    #[test]
    fn touches_values() {
        let set = parse(
            "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\",\"touches\":[\"src/auth/**\",\"docs/auth.md\"]}",
        )
        .unwrap();
        assert!(set.tasks[0].touches.is_none());
        let f = set.tasks[1].touches.as_ref().unwrap();
        assert!(f.covers("src/auth/login.rs") && !f.covers("src/lib.rs"));
        assert_eq!(
            set.tasks[1].field("touches").unwrap(),
            "src/auth/**, docs/auth.md"
        );
        let bad = |v: &str| {
            err(&format!(
                "{{\"id\":\"a\",\"prompt\":\"x\"}}\n{{\"id\":\"b\",\"prompt\":\"y\",\"touches\":{v}}}"
            ))
        };
        let e = bad("\"src/**\"");
        assert!(
            e.starts_with("tasks.jsonl:2: field `touches`: expected an array"),
            "{e}"
        );
        assert!(bad("[]").contains("field `touches`: is empty"));
        assert!(bad("[1]").contains("field `touches`: expected glob patterns"));
        let e = bad("[\"src/[a\"]");
        assert!(
            e.starts_with("tasks.jsonl:2: field `touches`: `src/[a` is not a valid glob"),
            "{e}"
        );
        assert!(bad("[\"!src\"]").contains("negated"));
    }

    #[test]
    fn start_from_values() {
        let set = parse("{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\",\"depends_on\":[\"a\"],\"start_from\":\"dependencies\"}").unwrap();
        assert_eq!(set.tasks[0].start_from, StartFrom::Base);
        assert_eq!(set.tasks[1].start_from, StartFrom::Dependencies);
        assert!(!set.tasks[1].extra.contains_key("start_from"));
        let e = err(
            "{\"id\":\"a\",\"prompt\":\"x\"}\n{\"id\":\"b\",\"prompt\":\"y\",\"start_from\":\"deps\"}",
        );
        assert!(
            e.contains("tasks.jsonl:2: field `start_from`: unknown value `deps`"),
            "{e}"
        );
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"start_from\":1}").contains("field `start_from`")
        );
    }

    #[test]
    fn max_cost_usd_values() {
        let set = parse(
            "{\"id\":\"a\",\"prompt\":\"x\",\"max_cost_usd\":0.5}\n{\"id\":\"b\",\"prompt\":\"y\"}",
        )
        .unwrap();
        assert_eq!(set.tasks[0].max_cost_usd, Some(0.5));
        assert_eq!(set.tasks[1].max_cost_usd, None);
        assert!(!set.tasks[0].extra.contains_key("max_cost_usd"));
        let e = err("{\"id\":\"a\",\"prompt\":\"x\",\"max_cost_usd\":-1}");
        assert!(
            e.contains(
                "tasks.jsonl:1: field `max_cost_usd`: must be a non-negative number of dollars"
            ),
            "{e}"
        );
        let e = err("{\"id\":\"a\",\"prompt\":\"x\",\"max_cost_usd\":\"5\"}");
        assert!(
            e.contains("field `max_cost_usd`: expected a number of dollars, found a string"),
            "{e}"
        );
    }

    #[test]
    fn best_of_values() {
        let set =
            parse("{\"id\":\"a\",\"prompt\":\"x\",\"best_of\":3}\n{\"id\":\"b\",\"prompt\":\"y\"}")
                .unwrap();
        assert_eq!(set.tasks[0].best_of, Some(3));
        assert_eq!(set.tasks[1].best_of, None);
        assert!(!set.tasks[0].extra.contains_key("best_of"));
        for bad in ["0", "11", "2.5", "\"3\""] {
            let e = err(&format!(
                "{{\"id\":\"a\",\"prompt\":\"x\",\"best_of\":{bad}}}"
            ));
            assert!(
                e.contains("tasks.jsonl:1: field `best_of`: expected a whole number"),
                "{e}"
            );
        }
        let e = err("{\"id\":\"a\",\"prompt\":\"x\",\"branch\":\"b@v2\"}");
        assert!(
            e.contains("field `branch`") && e.contains("best-of variant"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types() {
        assert!(err("{\"id\":1,\"prompt\":\"x\"}").contains("field `id`: expected a string"));
        assert!(
            err("{\"id\":\"a\",\"prompt\":\"x\",\"depends_on\":\"b\"}")
                .contains("field `depends_on`")
        );
    }
}
