//! Conflicts seen during the run (issue 17), with the fake agent: four tasks
//! in two clashing pairs. Without footprints the run predicts the two
//! conflicts `land` will find; with `redo_conflicts = "early"` and
//! `--supervise` it redoes them at once and everything lands; with declared
//! footprints the pairs run one after the other and nothing conflicts.

mod support;

use serde_json::{Value, json};
use support::{TestProject, code, text};

/// a1/a2 both append to a/notes.txt, b1/b2 to b/notes.txt: in landing order
/// (task-list order) a2 conflicts with a1, b2 with b1. Each agent sleeps a
/// little so that, without footprints, all four overlap in time.
fn pairs(extra: &str, touches: bool) -> TestProject {
    let p = TestProject::new(&format!("max_agents = 4\n{extra}"));
    let task = |id: &str, dir: &str, also: &str| {
        let record = p.out_file(&format!("{id}.jsonl"));
        let mut t = json!({
            "id": id,
            "prompt": format!(
                "Add a line.\n@fake record {}\n@fake sleep 0.5\n@fake append {dir}/notes.txt from-{id}\n{also}",
                record.display()
            ),
        });
        if touches {
            t["touches"] = json!([format!("{dir}/**")]);
        }
        t
    };
    p.tasks(&[
        task("a1", "a", ""),
        task("b1", "b", ""),
        task("a2", "a", ""),
        // b2 also writes outside its footprint (flagged, not failed).
        task("b2", "b", "@fake commit extra.txt stray"),
    ]);
    p
}

fn events(p: &TestProject) -> Vec<Value> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn predicted(p: &TestProject) -> Vec<Value> {
    events(p)
        .into_iter()
        .filter(|e| e["event"] == "conflict_predicted")
        .collect()
}

/// What the user's checkout, index and refs (all but flocks' own task
/// branches and backups) look like.
fn user_side(p: &TestProject) -> String {
    let refs = p.git(&["for-each-ref", "--format=%(refname) %(objectname)"]);
    let refs: Vec<&str> = refs
        .lines()
        .filter(|l| !l.starts_with("refs/heads/flocks/") && !l.starts_with("refs/flocks/"))
        .collect();
    let index = std::fs::read(p.path(".git/index")).unwrap();
    let head = std::fs::read_to_string(p.path(".git/HEAD")).unwrap();
    format!(
        "{}\n{head}\n{}\n{}\n{:?}",
        refs.join("\n"),
        p.git(&["status", "--porcelain", "--untracked-files=no"]),
        p.git(&["ls-files", "-s"]),
        sha(&index)
    )
}

fn sha(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:x}", h.finish())
}

fn land_dry_run(p: &TestProject) -> Value {
    let out = p.flocks(&["land", "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_run_predicts_the_conflicts_that_land_finds() {
    let p = pairs("", false);
    let before = user_side(&p);
    let out = p.flocks(&["run"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");

    // Two predictions, naming the right pairs and files.
    let mut got: Vec<(String, Value, Value)> = predicted(&p)
        .iter()
        .map(|e| {
            (
                e["task"].as_str().unwrap().to_string(),
                e["with"].clone(),
                e["files"].clone(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("a2".into(), json!(["a1"]), json!(["a/notes.txt"])),
            ("b2".into(), json!(["b1"]), json!(["b/notes.txt"])),
        ],
        "{said}"
    );
    for e in predicted(&p) {
        assert_eq!(e["with_target"], false, "{e}");
        assert_eq!(e["target"], "main", "{e}");
    }
    // Said live, as it happened, and in the run's summary.
    assert!(
        said.contains("a2: will conflict with `a1` in a/notes.txt"),
        "{said}"
    );
    assert!(
        said.contains("      ⚠ will conflict with `b1` in b/notes.txt"),
        "{said}"
    );
    assert!(
        said.contains("`flocks land --resolve` to land and redo"),
        "{said}"
    );

    // Persisted for status (another process), tasks and status --json.
    let status = text(&p.flocks(&["status"]));
    assert!(
        status.contains("will conflict with `b1` in b/notes.txt"),
        "{status}"
    );
    let tasks = text(&p.flocks(&["tasks"]));
    assert!(tasks.contains("will conflict with `a1`"), "{tasks}");
    let json: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    let conflict = |id: &str| {
        json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["conflict"]
            .clone()
    };
    assert_eq!(conflict("a2")["with"], json!(["a1"]));
    assert_eq!(conflict("a1"), Value::Null);
    assert_eq!(conflict("b1"), Value::Null);

    // Neither the run's predictions nor land --dry-run's touched the user's
    // checkout, index or refs.
    assert_eq!(user_side(&p), before, "the run changed the user's side");
    // land --dry-run agrees, task for task.
    let plan = land_dry_run(&p);
    assert_eq!(
        user_side(&p),
        before,
        "land --dry-run changed the user's side"
    );
    let conflicting: Vec<&str> = plan["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["conflict"].is_null())
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(conflicting, ["a2", "b2"], "{plan}");
    assert_eq!(plan["tasks"][2]["conflict"]["with"], json!(["a1"]));
    let dry = text(&p.flocks(&["land", "--dry-run"]));
    assert!(
        dry.contains("will conflict with `b1` in b/notes.txt"),
        "{dry}"
    );

    // And land finds exactly those.
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let landed = text(&out);
    assert!(landed.contains("a2") && landed.contains("b2"), "{landed}");
    assert_eq!(p.git(&["show", "main:a/notes.txt"]), "from-a1");
    assert_eq!(p.git(&["show", "main:b/notes.txt"]), "from-b1");
}

#[test]
fn early_redo_lands_all_four_without_a_conflict() {
    let p = pairs(
        "max_retries = 1\n[land]\nredo_conflicts = \"early\"\n",
        false,
    );
    let out = p.flocks(&["run", "--supervise"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(
        said.contains("redoing it now on `main` with `a1`"),
        "{said}"
    );
    let redone: Vec<String> = events(&p)
        .iter()
        .filter(|e| e["event"] == "requeued")
        .map(|e| e["task"].as_str().unwrap().to_string())
        .collect();
    assert!(redone.contains(&"a2".to_string()), "{redone:?}");
    assert!(redone.contains(&"b2".to_string()), "{redone:?}");
    // The old tips are kept.
    assert!(p.git_ok(&["rev-parse", "--verify", "refs/flocks/backup/a2/1"]));
    assert!(p.git_ok(&["rev-parse", "--verify", "refs/flocks/backup/b2/1"]));
    // The redo started from main + a1.
    let a2 = p.task("a2");
    let attempts = a2["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{a2}");
    assert!(a2.get("conflict").is_none(), "{a2}");
    assert_eq!(
        p.git(&[
            "show",
            &format!("{}:a/notes.txt", a2["origin"].as_str().unwrap())
        ]),
        "from-a1"
    );
    // The redo's prompt: its own, the conflict, the files, the earlier diff.
    let recs = std::fs::read_to_string(p.out_file("a2.jsonl")).unwrap();
    let redo: Value = serde_json::from_str(recs.lines().nth(1).unwrap()).unwrap();
    let prompt = redo["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("Add a line."), "{prompt}");
    assert!(
        prompt.contains("will conflict with `a1` in a/notes.txt"),
        "{prompt}"
    );
    assert!(prompt.contains("- a/notes.txt\n"), "{prompt}");
    assert!(prompt.contains("+from-a2"), "{prompt}");
    assert!(prompt.contains("refs/flocks/backup/a2/1"), "{prompt}");
    assert!(
        prompt.contains("now starts from `main` with the work of `a1`"),
        "{prompt}"
    );

    let plan = land_dry_run(&p);
    assert!(
        plan["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["conflict"].is_null()),
        "{plan}"
    );
    let out = p.flocks(&["land", "-y"]);
    let landed = text(&out);
    assert_eq!(code(&out), 0, "{landed}");
    assert!(!landed.contains("onflict"), "{landed}");
    assert_eq!(p.git(&["show", "main:a/notes.txt"]), "from-a1\nfrom-a2");
    assert_eq!(p.git(&["show", "main:b/notes.txt"]), "from-b1\nfrom-b2");
}

#[test]
fn footprints_make_lanes_and_nothing_conflicts() {
    let p = pairs("", true);
    let out = p.flocks(&["run", "--dry-run"]);
    let plan = text(&out);
    assert_eq!(code(&out), 0, "{plan}");
    assert!(plan.contains("1, after a1 (touches)"), "{plan}");
    assert!(plan.contains("2, after b1 (touches)"), "{plan}");
    let json: Value =
        serde_json::from_slice(&p.flocks(&["run", "--dry-run", "--json"]).stdout).unwrap();
    let row = |id: &str| {
        json["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(row("a1")["lane"], 1);
    assert_eq!(row("a2")["lane"], 1);
    assert_eq!(row("a2")["waits_for"], json!(["a1"]));
    assert_eq!(row("b1")["lane"], 2);
    assert_eq!(row("b2")["waits_for"], json!(["b1"]));

    let out = p.flocks(&["run"]);
    let said = text(&out);
    assert_eq!(code(&out), 0, "{said}");
    assert!(predicted(&p).is_empty(), "{said}");
    // One after the other: a2 started once a1 had finished, from its work.
    let ended = |id: &str| {
        p.task(id)["attempts"][0]["ended_at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let started = |id: &str| {
        p.task(id)["attempts"][0]["started_at"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(started("a2") >= ended("a1"), "{said}");
    assert!(started("b2") >= ended("b1"), "{said}");
    assert_eq!(
        p.git(&[
            "show",
            &format!("{}:a/notes.txt", p.task("a2")["origin"].as_str().unwrap())
        ]),
        "from-a1"
    );

    // b2 wrote outside its footprint: flagged, not failed.
    assert!(
        said.contains("task b2 changed paths outside its footprint (\"touches\"): extra.txt"),
        "{said}"
    );
    let status: Value = serde_json::from_slice(&p.flocks(&["status", "--json"]).stdout).unwrap();
    let b2 = status["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "b2")
        .unwrap()
        .clone();
    assert_eq!(b2["outside_footprint"], json!(["extra.txt"]), "{b2}");
    assert_eq!(b2["status"], "succeeded", "{b2}");

    let out = p.flocks(&["land", "-y"]);
    let landed = text(&out);
    assert_eq!(code(&out), 0, "{landed}");
    assert_eq!(p.git(&["show", "main:a/notes.txt"]), "from-a1\nfrom-a2");
    assert_eq!(p.git(&["show", "main:b/notes.txt"]), "from-b1\nfrom-b2");
}
