//! Best of N: variants of one task run in parallel, validation (or a judge
//! agent) picks the winner, `land` brings the winner's work, `clean` removes
//! the losers.

mod support;

use serde_json::{Value, json};
use support::*;

/// A task whose three variants do different work (the fake agent reads
/// `FLOCKS_TASK`, `<id>@v<k>` for variant k): v1 commits `bad.txt`, which
/// validation refuses; v2 a 40-line file; v3 a 5-line file.
fn three_ways(p: &TestProject, extra: Value) {
    let mut task = json!({"id": "t", "best_of": 3, "prompt": "Add numbers.\n\
        @fake if-env FLOCKS_TASK t@v1 commit bad.txt nope\n\
        @fake if-env FLOCKS_TASK t@v2 bash 'seq 40 > b.txt && git add b.txt && git commit -qm forty'\n\
        @fake if-env FLOCKS_TASK t@v2 cost 0.01\n\
        @fake if-env FLOCKS_TASK t@v3 bash 'seq 5 > c.txt && git add c.txt && git commit -qm five'\n\
        @fake if-env FLOCKS_TASK t@v3 cost 0.02\n"});
    if let (Some(t), Value::Object(more)) = (task.as_object_mut(), extra) {
        t.extend(more);
    }
    p.tasks(&[task]);
}

const VALIDATE: &str = "[validate]\ncommands = [\"test ! -e bad.txt\"]\n\n\
    [[containers]]\nname = \"local\"\nmax_worktrees = 3\n";

/// The first line of tasks.jsonl.
fn task_line(p: &TestProject) -> Value {
    let text = std::fs::read_to_string(p.path("tasks.jsonl")).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

fn events(p: &TestProject) -> Vec<Value> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn judged(p: &TestProject) -> Value {
    events(p)
        .into_iter()
        .rfind(|e| e["event"] == "variant_judged")
        .expect("a variant_judged event")
}

#[test]
fn validation_then_the_smallest_change_wins_and_lands() {
    let p = TestProject::new(VALIDATE);
    three_ways(&p, json!({}));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("t"), "success");
    let t = p.task("t");
    let j = &t["best_of"]["judgement"];
    assert_eq!(j["winner"], 3, "{t:#}");
    assert_eq!(j["by"], "ranking");
    let ranking: Vec<(u64, &str)> = j["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["variant"].as_u64().unwrap(),
                v["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ranking,
        [(3, "winner"), (2, "passed"), (1, "failed_validation")]
    );
    let e = judged(&p);
    assert_eq!(e["task"], "t");
    assert_eq!(e["winner"], 3);
    assert_eq!(e["ranking"][0]["lines"], 5);
    // Every variant ran on a branch of its own, beside the task's.
    for k in 1..=3 {
        assert!(p.git_ok(&[
            "rev-parse",
            "--verify",
            &format!("refs/heads/flocks/t@v{k}")
        ]));
    }
    // The task's branch is the winner's work.
    assert_eq!(
        p.git(&["rev-parse", "flocks/t"]),
        p.git(&["rev-parse", "flocks/t@v3"])
    );

    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let files = p.git(&["ls-tree", "--name-only", "main"]);
    assert!(files.contains("c.txt"), "{files}");
    assert!(
        !files.contains("b.txt") && !files.contains("bad.txt"),
        "{files}"
    );
    assert_eq!(p.git(&["show", "main:c.txt"]), "1\n2\n3\n4\n5");
    // The losers are kept until `clean`.
    assert!(p.git_ok(&["rev-parse", "--verify", "refs/heads/flocks/t@v2"]));
    let out = p.flocks(&["clean"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    for k in 1..=3 {
        assert!(
            !p.git_ok(&[
                "rev-parse",
                "--verify",
                &format!("refs/heads/flocks/t@v{k}")
            ]),
            "variant {k}'s branch is gone after clean: {}",
            text(&out)
        );
        assert!(!p.path(&format!(".worktrees/t@v{k}")).exists());
    }
}

#[test]
fn status_and_tasks_show_the_variants_and_the_judgement() {
    let p = TestProject::new(VALIDATE);
    three_ways(&p, json!({}));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let run = text(&out);
    assert!(run.contains("t: variant 3 wins (ranking)"), "{run}");
    let status = text(&p.flocks(&["status"]));
    assert!(
        status.contains("v3 won (ranking): passed with the smallest change"),
        "{status}"
    );
    assert!(
        status.contains("flocks/t@v1") && status.contains("failed validation"),
        "{status}"
    );
    let json: Value = serde_json::from_str(&text(&p.flocks(&["status", "--json"]))).unwrap();
    let t = &json["tasks"][0];
    assert_eq!(t["judgement"]["winner"], 3);
    let v: Vec<&str> = t["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(v, ["failed_validation", "passed", "winner"]);
    assert_eq!(t["attempts"], 3);
    let tasks = text(&p.flocks(&["tasks"]));
    assert!(tasks.contains("v3 won (ranking)"), "{tasks}");
    let json: Value = serde_json::from_str(&text(&p.flocks(&["tasks", "--json"]))).unwrap();
    assert_eq!(json["tasks"][0]["judgement"]["by"], "ranking");
    assert_eq!(json["tasks"][0]["variants"][2]["verdict"], "winner");
}

/// One GET on 127.0.0.1:`port`: (status, whole response).
fn get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, out)
}

#[test]
fn serve_shows_the_judgement_and_each_variant_on_its_own_page() {
    use std::io::BufRead;
    let p = TestProject::new(VALIDATE);
    three_ways(&p, json!({}));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let mut child = p
        .cmd(&["serve", "--addr", "127.0.0.1:0"])
        .env_remove("FLOCKS_SERVE_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // flocks serve: http://127.0.0.1:PORT/  (...)
    let port: Option<u16> = first
        .split_whitespace()
        .nth(2)
        .and_then(|u| u.strip_prefix("http://127.0.0.1:"))
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok());
    let pages = port.map(|port| (get(port, "/tasks/t"), get(port, "/tasks/t@v1")));
    let _ = child.kill();
    let _ = child.wait();
    let Some(((code_t, task), (code_v, v1))) = pages else {
        panic!("flocks serve printed no address: {first:?}");
    };
    assert_eq!(code_t, 200, "{task}");
    assert!(
        task.contains("v3 won (ranking): passed with the smallest change"),
        "{task}"
    );
    assert!(
        task.contains("href=\"/tasks/t@v1\"") && task.contains(">failed validation<"),
        "{task}"
    );
    assert!(
        task.contains(">winner<") && task.contains("flocks/t@v3"),
        "{task}"
    );
    // A variant's page: whose variant it is, its attempts, log and its own change.
    assert_eq!(code_v, 200, "{v1}");
    assert!(v1.contains("Variant 1 of best-of task"), "{v1}");
    assert!(v1.contains("?attempt=1") && v1.contains("bad.txt"), "{v1}");
    // The run's report draws the variants' attempts and counts them.
    let report = text(&p.flocks(&["report", "-o", "-"]));
    assert!(
        report.contains("t@v1") && report.contains("t@v3"),
        "no variant bars in the report"
    );
    assert!(
        report.contains("data-total=\"attempts\">3<"),
        "the variants' attempts are the task's"
    );
}

const JUDGE: &str = "[validate]\ncommands = [\"test ! -e bad.txt\"]\n\n[best_of]\njudge = true\n\n\
    [[containers]]\nname = \"local\"\nmax_worktrees = 3\n";

#[test]
fn a_judge_agent_picks_and_says_why() {
    let p = TestProject::new(JUDGE);
    let record = p.out_file("judge.jsonl");
    three_ways(&p, json!({"title": "numbers"}));
    // The judge runs as `t@judge`: it records what it was asked and answers.
    let mut tasks: Value = task_line(&p);
    let prompt = format!(
        "{}@fake if-env FLOCKS_TASK t@judge record {}\n\
         @fake if-env FLOCKS_TASK t@judge text '{{\"winner\": 2, \"reason\": \"v2 counts all the way to forty\"}}'\n",
        tasks["prompt"].as_str().unwrap(),
        record.display()
    );
    tasks["prompt"] = json!(prompt);
    p.tasks(&[tasks]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let j = &p.task("t")["best_of"]["judgement"];
    assert_eq!(j["winner"], 2, "{j:#}");
    assert_eq!(j["by"], "judge");
    assert_eq!(j["reason"], "v2 counts all the way to forty");
    assert!(j["judge_cost_usd"].as_f64().unwrap() > 0.0);
    let e = judged(&p);
    assert_eq!(
        (e["winner"].clone(), e["by"].clone()),
        (json!(2), json!("judge"))
    );
    assert_eq!(e["reason"], "v2 counts all the way to forty");
    assert_eq!(e["ranking"][0]["variant"], 2);
    let status = text(&p.flocks(&["status"]));
    assert!(
        status.contains("v2 won (judge): v2 counts all the way to forty"),
        "{status}"
    );
    // It was shown the task and the diffs of the two that passed, not the third's.
    let asked: Value = serde_json::from_str(
        std::fs::read_to_string(&record)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let asked = asked["prompt"].as_str().unwrap();
    assert!(asked.contains("Add numbers."), "{asked}");
    assert!(asked.contains("## Variant 2 (40 lines changed)"), "{asked}");
    assert!(asked.contains("## Variant 3 (5 lines changed)"), "{asked}");
    assert!(!asked.contains("## Variant 1"), "{asked}");
    assert!(asked.contains("+40"), "{asked}");
    // Its own log, and the task's branch is the judge's pick.
    assert!(p.path(".flocks/logs/t@judge/1.log").exists());
    assert_eq!(
        p.git(&["rev-parse", "flocks/t"]),
        p.git(&["rev-parse", "flocks/t@v2"])
    );
}

#[test]
fn a_judge_answering_garbage_falls_back_to_the_ranking_with_a_notice() {
    let p = TestProject::new(JUDGE);
    three_ways(&p, json!({}));
    let mut task = task_line(&p);
    let prompt = format!(
        "{}@fake if-env FLOCKS_TASK t@judge text 'I like the second one best.'\n",
        task["prompt"].as_str().unwrap()
    );
    task["prompt"] = json!(prompt);
    p.tasks(&[task]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let j = &p.task("t")["best_of"]["judgement"];
    assert_eq!(j["winner"], 3, "{j:#}");
    assert_eq!(j["by"], "ranking");
    let notice = j["notice"].as_str().unwrap();
    assert!(
        notice.contains("the judge's answer could not be used")
            && notice.contains("default ranking picked v3"),
        "{notice}"
    );
    assert!(
        text(&out).contains("the judge's answer could not be used"),
        "{}",
        text(&out)
    );
    assert_eq!(judged(&p)["notice"], json!(notice));
    let status = text(&p.flocks(&["status"]));
    assert!(
        status.contains("note: task t: the judge's answer could not be used"),
        "{status}"
    );
}

/// Three variants that each fail their first attempt (`fail-once`) and
/// commit on the next.
fn failing_once(p: &TestProject) {
    let mut prompt = String::from("Fix it.\n");
    for k in 1..=3 {
        prompt.push_str(&format!(
            "@fake if-env FLOCKS_TASK t@v{k} fail-once {} broken {k}\n@fake if-env FLOCKS_TASK t@v{k} commit fixed{k}.txt\n",
            p.out_file(&format!("once{k}")).display()
        ));
    }
    p.tasks(&[json!({"id": "t", "best_of": 3, "prompt": prompt})]);
}

#[test]
fn no_survivor_fails_the_task_with_each_reason_and_supervise_retries_it_as_one() {
    let p = TestProject::new(VALIDATE);
    failing_once(&p);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    assert_eq!(p.status_of("t"), "failed");
    let reason = p.task("t")["status"]["outcome"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    for k in 1..=3 {
        assert!(
            reason.contains(&format!(
                "v{k}: failed: the agent reported an error: broken {k}"
            )),
            "{reason}"
        );
    }
    let e = judged(&p);
    assert_eq!(e["winner"], Value::Null);
    let status = text(&p.flocks(&["status"]));
    assert!(status.contains("no variant survived"), "{status}");
    // A variant whose agent failed has no work to pick.
    let out = p.flocks(&["pick", "t", "1"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("variant 1 of `t` did not succeed"),
        "{}",
        text(&out)
    );

    // --supervise runs the task again as one: all three variants.
    let out = p.flocks(&["run", "--supervise"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("t"), "success");
    let t = p.task("t");
    for v in t["variants"].as_array().unwrap() {
        assert_eq!(v["attempts"].as_array().unwrap().len(), 2, "{v:#}");
    }
    assert_eq!(t["best_of"]["failed_rounds"], 1);
}

#[test]
fn supervise_retries_a_task_none_of_whose_variants_survived_in_the_same_run() {
    let p = TestProject::new(VALIDATE);
    failing_once(&p);
    let out = p.flocks(&["run", "--supervise", "--max-retries", "1"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("t"), "success");
    let judgements: Vec<Value> = events(&p)
        .into_iter()
        .filter(|e| e["event"] == "variant_judged")
        .collect();
    assert_eq!(judgements.len(), 2);
    assert_eq!(judgements[0]["winner"], Value::Null);
    assert!(judgements[1]["winner"].is_u64());
    let requeued: Vec<Value> = events(&p)
        .into_iter()
        .filter(|e| e["event"] == "requeued")
        .collect();
    assert_eq!(
        requeued.len(),
        1,
        "the task, not each variant: {requeued:?}"
    );
    assert_eq!(requeued[0]["task"], "t");
    for v in p.task("t")["variants"].as_array().unwrap() {
        let a = v["attempts"].as_array().unwrap();
        assert_eq!(a.len(), 2, "{v:#}");
        assert_eq!(a[1]["resumed_from"], a[0]["session_id"]);
    }
}

#[test]
fn pick_logs_and_diff_reach_every_variant() {
    let p = TestProject::new(VALIDATE);
    three_ways(&p, json!({}));
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    // Each variant's log and change.
    let log = text(&p.flocks(&["logs", "t", "--variant", "2", "--json"]));
    assert!(log.contains("t@v2/1.log"), "{log}");
    let log = text(&p.flocks(&["logs", "t", "--json"]));
    assert!(log.contains("t@v3/1.log"), "the winner's by default: {log}");
    let diff = text(&p.flocks(&["diff", "t", "--variant", "2"]));
    assert!(diff.contains("+40") && diff.contains("b.txt"), "{diff}");
    let diff = text(&p.flocks(&["diff", "t"]));
    assert!(diff.contains("c.txt") && !diff.contains("b.txt"), "{diff}");
    let out = p.flocks(&["diff", "t", "--variant", "7"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(
        text(&out).contains("variants 1 to 3, not 7"),
        "{}",
        text(&out)
    );
    let out = p.flocks(&["logs", "t", "--judge"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("no judge log"), "{}", text(&out));

    // A pick overrides the judgement before landing.
    let out = p.flocks(&["pick", "t", "2"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        text(&out).contains("variant 2 is its work instead of v3"),
        "{}",
        text(&out)
    );
    let j = &p.task("t")["best_of"]["judgement"];
    assert_eq!(
        (j["winner"].clone(), j["by"].clone()),
        (json!(2), json!("pick"))
    );
    let e = judged(&p);
    assert_eq!(
        (e["winner"].clone(), e["by"].clone()),
        (json!(2), json!("pick"))
    );
    let status = text(&p.flocks(&["status"]));
    assert!(
        status.contains("v2 won (pick): picked by hand over v3"),
        "{status}"
    );
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let files = p.git(&["ls-tree", "--name-only", "main"]);
    assert!(
        files.contains("b.txt") && !files.contains("c.txt"),
        "{files}"
    );
    let out = p.flocks(&["pick", "t", "3"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
    assert!(text(&out).contains("landed already"), "{}", text(&out));
    let out = p.flocks(&["pick", "nope", "1"]);
    assert_eq!(code(&out), 2, "{}", text(&out));
}

#[test]
fn variants_tables_vary_model_args_and_prompt_in_turn() {
    let p = TestProject::new(
        "best_of = 3\n\n[[containers]]\nname = \"local\"\nmax_worktrees = 3\n\n\
         [[variants]]\nmodel = \"opus\"\n\n\
         [[variants]]\nargs = [\"--append-system-prompt\", \"be brief\"]\nprompt_suffix = \"Keep it small.\"\n",
    );
    let rec = p.out_file("rec.jsonl");
    p.tasks(&[
        json!({"id": "t", "prompt": format!("@fake record {}\n@fake commit out.txt", rec.display())}),
        json!({"id": "single", "best_of": 1, "prompt": "@fake commit s.txt"}),
    ]);
    let out = p.flocks(&["run", "--dry-run", "--json"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let plan: Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(plan["agent_runs"], 4, "{plan:#}");
    assert_eq!(plan["tasks"][0]["variants"], 3);
    let out = p.flocks(&["run", "--dry-run"]);
    assert!(text(&out).contains("agent runs: 4"), "{}", text(&out));

    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let records: Vec<Value> = std::fs::read_to_string(&rec)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    let by_variant = |k: u32| {
        records
            .iter()
            .find(|r| r["env"]["FLOCKS_TASK"] == format!("t@v{k}"))
            .unwrap_or_else(|| panic!("variant {k} ran: {records:?}"))
    };
    let argv = |k: u32| -> Vec<String> {
        by_variant(k)["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    // Tables are used in turn: v1 the first, v2 the second, v3 the first again.
    assert!(
        argv(1).windows(2).any(|w| w == ["--model", "opus"]),
        "{:?}",
        argv(1)
    );
    assert!(
        argv(3).windows(2).any(|w| w == ["--model", "opus"]),
        "{:?}",
        argv(3)
    );
    assert!(!argv(2).iter().any(|a| a == "opus"), "{:?}", argv(2));
    assert!(argv(2).ends_with(&["--append-system-prompt".into(), "be brief".into()]));
    let prompt = |k: u32| by_variant(k)["prompt"].as_str().unwrap().to_string();
    assert!(
        prompt(2).ends_with("Keep it small.\n") || prompt(2).ends_with("Keep it small."),
        "{}",
        prompt(2)
    );
    assert!(!prompt(1).contains("Keep it small."));
    // The plain task ran once, on its own branch.
    assert_eq!(p.status_of("single"), "success");
    assert!(p.task("single")["variants"].is_null());
    assert!(p.git_ok(&["rev-parse", "--verify", "flocks/single"]));
    // The run's cost counts every variant.
    let finished = events(&p)
        .into_iter()
        .rfind(|e| e["event"] == "run_finished")
        .unwrap();
    let each = 0.0123;
    assert!(
        (finished["cost_usd"].as_f64().unwrap() - 4.0 * each).abs() < 1e-6,
        "{finished}"
    );
}

#[test]
fn retry_runs_a_failed_best_of_task_again_as_one() {
    let p = TestProject::new(VALIDATE);
    failing_once(&p);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let out = p.flocks(&["retry", "t"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("t"), "success");
    for v in p.task("t")["variants"].as_array().unwrap() {
        assert_eq!(v["attempts"].as_array().unwrap().len(), 2, "{v:#}");
    }
    // The next run leaves a judged task alone.
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(
        events(&p)
            .iter()
            .filter(|e| e["event"] == "variant_judged")
            .count(),
        2
    );
}

#[test]
fn a_run_killed_while_judging_is_judged_by_the_next_run() {
    // Validation that hangs until the test lets it go: the run is killed
    // (SIGKILL) while it judges.
    let p = TestProject::new("");
    let gate = p.out_file("gate");
    p.config(&format!(
        "[validate]\ncommands = [\"while ! test -e {}; do sleep 0.1; done; test ! -e bad.txt\"]\n\
         timeout_secs = 60\n\n[[containers]]\nname = \"local\"\nmax_worktrees = 3\n",
        gate.display()
    ));
    three_ways(&p, json!({}));
    let mut run = p.spawn(&["run", "--no-progress"]);
    wait_for(60, "all three variants to finish", || {
        events(&p)
            .iter()
            .filter(|e| e["event"] == "finished")
            .count()
            == 3
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let _ = run.kill();
    let _ = run.wait();
    assert!(events(&p).iter().all(|e| e["event"] != "variant_judged"));
    std::fs::write(&gate, "").unwrap();
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert_eq!(p.status_of("t"), "success");
    assert_eq!(p.task("t")["best_of"]["judgement"]["winner"], 3);
    for v in p.task("t")["variants"].as_array().unwrap() {
        assert_eq!(
            v["attempts"].as_array().unwrap().len(),
            1,
            "no variant ran again: {v:#}"
        );
    }
}
