//! `[[notify]]` end to end: real `flocks run` and `flocks land` with the fake
//! agent, webhooks posted to a real HTTP server on 127.0.0.1
//! (tests/support/http.rs), and a command notifier that keeps what it reads.

#[path = "support/http.rs"]
mod http;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use http::{Answer, Server};
use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "Bearer s3cret-notify-token";

/// The events of messages (a coalesced one holds several), in order.
fn flatten(messages: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for m in messages {
        if m["event"] == "coalesced" {
            let events = m["events"].as_array().unwrap();
            assert_eq!(
                m["count"],
                events.len() + m["omitted"].as_u64().unwrap() as usize
            );
            out.extend(events.iter().cloned());
        } else {
            out.push(m.clone());
        }
    }
    out
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

/// A command notifier that appends what it reads on stdin (one JSON line per
/// message) and `$FLOCKS_EVENT` to files in the test's out directory.
fn recorder(p: &TestProject, name: &str) -> String {
    let file = p.out_file(name).display().to_string();
    format!(
        "command = [\"sh\", \"-c\", \"cat >> \\\"$0\\\"; echo \\\"$FLOCKS_EVENT\\\" >> \\\"$0.kinds\\\"\", \"{file}\"]"
    )
}

fn recorded(p: &TestProject, name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(p.out_file(name)).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a notifier read a line that is not JSON ({e}): {l}"))
        })
        .collect()
}

/// The notices of events.jsonl that mention `what`.
fn notices_about(p: &TestProject, what: &str) -> Vec<String> {
    std::fs::read_to_string(p.path(".flocks/events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "notice")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .filter(|m| m.contains(what))
        .collect()
}

#[test]
fn webhooks_get_json_slack_and_text_with_the_header_from_the_environment() {
    let server = Server::start(Answer::Status(200));
    let mut config = String::new();
    for format in ["json", "slack", "text"] {
        config.push_str(&format!(
            "[[notify]]\non = [\"started\", \"finished\", \"run_finished\"]\nwebhook = \"{}\"\nformat = \"{format}\"\nheaders_env = {{ Authorization = \"NTFY_TOKEN\" }}\ncoalesce_secs = 60\n\n",
            server.url(&format!("/{format}"))
        ));
    }
    let mut p = TestProject::new(&config);
    p.env.push(("NTFY_TOKEN".into(), TOKEN.into()));
    p.tasks(&[json!({"id": "a", "prompt": "@fake commit a.txt alpha\n@fake cost 0.5"})]);
    let started = Instant::now();
    let out = p.flocks(&["run"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));
    // The end does not wait out the coalescing window: it flushes.
    assert!(took < Duration::from_secs(20), "{took:?}");

    // `started` goes at once; `finished` and `run_finished` come within the
    // window after it, so the flush at the end sends them as one message.
    let json = server.requests_to("/json");
    assert_eq!(json.len(), 2, "{json:?}");
    for r in server.requests() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.headers["authorization"], TOKEN, "{r:?}");
    }
    let first = json[0].json();
    assert_eq!(json[0].headers["content-type"], "application/json");
    assert_eq!(first["event"], "started");
    assert_eq!(first["task"], "a");
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["project"], p.repo.display().to_string());
    assert!(first["ts"].as_str().unwrap().ends_with('Z'));
    let second = json[1].json();
    assert_eq!(second["event"], "coalesced");
    assert_eq!(second["count"], 2);
    assert_eq!(second["omitted"], 0);
    let events = flatten(&[second]);
    assert_eq!(kinds(&events), ["finished", "run_finished"]);
    assert_eq!(events[0]["outcome"]["kind"], "success");
    assert_eq!(events[0]["cost_usd"], 0.5);
    assert_eq!(events[1]["succeeded"], 1);

    let slack = server.requests_to("/slack");
    assert_eq!(slack.len(), 2);
    assert_eq!(slack[0].headers["content-type"], "application/json");
    let body = slack[0].json();
    assert_eq!(body.as_object().unwrap().len(), 1, "only text: {body}");
    assert_eq!(
        body["text"],
        "flocks · repo: ▶ a: started on local (attempt 1)"
    );
    let body = slack[1].json()["text"].as_str().unwrap().to_string();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines[0], "flocks · repo: 2 events", "{body}");
    assert!(lines[1].starts_with("✔ a: succeeded after"), "{body}");
    assert!(
        lines[2].starts_with("■ run finished: 1 succeeded · 0 failed"),
        "{body}"
    );

    let text_requests = server.requests_to("/text");
    assert_eq!(text_requests.len(), 2);
    assert_eq!(
        text_requests[0].headers["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(
        text_requests[0].body,
        "flocks · repo: ▶ a: started on local (attempt 1)"
    );
    assert_eq!(
        text_requests[1].body,
        slack[1].json()["text"].as_str().unwrap()
    );

    // The header's value is nowhere flocks writes.
    assert!(!p.flocks_dir_text().contains("s3cret"));
    assert!(!text(&out).contains("s3cret"));
}

#[test]
fn a_hanging_or_failing_webhook_costs_at_most_its_timeout_and_is_reported_once() {
    let tasks = [
        json!({"id": "a", "prompt": "@fake sleep 1\n@fake commit a.txt"}),
        json!({"id": "b", "prompt": "@fake sleep 1.5\n@fake commit b.txt"}),
        json!({"id": "c", "prompt": "@fake sleep 2\n@fake commit c.txt"}),
    ];
    // The same run without notifiers, for the time it takes.
    let plain = TestProject::new("max_agents = 3");
    plain.tasks(&tasks);
    let started = Instant::now();
    let out = plain.flocks(&["run"]);
    let baseline = started.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));

    let hang = Server::start(Answer::Hang);
    let fail = Server::start(Answer::Status(500));
    let every = "on = [\"run_started\", \"queued\", \"started\", \"finished\", \"run_finished\"]";
    let p = TestProject::new(&format!(
        "max_agents = 3\n\n[[notify]]\n{every}\nwebhook = \"{}\"\ntimeout_secs = 3\ncoalesce_secs = 0\n\n\
         [[notify]]\n{every}\nwebhook = \"{}\"\nformat = \"slack\"\ncoalesce_secs = 0\n",
        hang.url("/hook"),
        fail.url("/hook"),
    ));
    p.tasks(&tasks);
    let started = Instant::now();
    let out = p.flocks(&["run"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        took < baseline + Duration::from_secs(3) + Duration::from_millis(2500),
        "with a hanging notifier (timeout 3 s): {took:?}, without: {baseline:?}"
    );
    // Each is tried again (messages go on), and reported once.
    assert!(hang.requests().len() >= 2, "{:?}", hang.requests());
    assert!(fail.requests().len() >= 3, "{:?}", fail.requests());
    let hung = notices_about(&p, "notify #1");
    assert_eq!(hung.len(), 1, "{hung:?}");
    assert!(
        hung[0].contains("webhook to 127.0.0.1") && hung[0].contains("timeout_secs = 3"),
        "{hung:?}"
    );
    let failed = notices_about(&p, "notify #2");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("HTTP 500"), "{failed:?}");
    // Said on the terminal too, once.
    assert_eq!(text(&out).matches("notify #2").count(), 1, "{}", text(&out));
    for id in ["a", "b", "c"] {
        assert_eq!(p.status_of(id), "success");
    }
}

#[test]
fn a_command_gets_valid_json_for_each_kind_it_asked_for_and_nothing_else() {
    let p = TestProject::new("max_agents = 2");
    p.config(&format!(
        "max_agents = 2\n\n[[notify]]\non = [\"started\", \"needs_attention\", \"run_finished\"]\n{}\ncoalesce_secs = 0\n",
        recorder(&p, "events.jsonl")
    ));
    p.tasks(&[
        json!({"id": "good", "prompt": "@fake commit good.txt"}),
        json!({"id": "bad", "prompt": "@fake fail tests are red"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 3, "{}", text(&out));
    let messages = recorded(&p, "events.jsonl");
    let events = flatten(&messages);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for k in kinds(&events) {
        *count.entry(k).or_default() += 1;
    }
    assert_eq!(
        count,
        BTreeMap::from([
            ("needs_attention".to_string(), 1),
            ("run_finished".to_string(), 1),
            ("started".to_string(), 2),
        ]),
        "{events:?}"
    );
    let attention = events
        .iter()
        .find(|e| e["event"] == "needs_attention")
        .unwrap();
    assert_eq!(attention["cause"], "task_failed");
    assert_eq!(attention["task"], "bad");
    assert!(
        attention["message"]
            .as_str()
            .unwrap()
            .contains("attempt 1 failed: the agent reported an error: tests are red"),
        "{attention}"
    );
    let finished = events
        .iter()
        .find(|e| e["event"] == "run_finished")
        .unwrap();
    assert_eq!(finished["succeeded"], 1);
    assert_eq!(finished["failed"], 1);
    // `$FLOCKS_EVENT` names each message's kind.
    let told = std::fs::read_to_string(p.out_file("events.jsonl.kinds")).unwrap();
    let told: Vec<&str> = told.lines().collect();
    let shown: Vec<String> = messages
        .iter()
        .map(|m| m["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(told, shown);
    // events.jsonl has the needs_attention line too.
    let log = std::fs::read_to_string(p.path(".flocks/events.jsonl")).unwrap();
    assert_eq!(log.matches("\"event\":\"needs_attention\"").count(), 1);
}

#[test]
fn a_burst_is_coalesced_into_one_message_with_its_count() {
    let p = TestProject::new("max_agents = 2");
    p.config(&format!(
        "max_agents = 2\n\n[[notify]]\non = [\"queued\"]\n{}\ncoalesce_secs = 3\n",
        recorder(&p, "queued.jsonl")
    ));
    let tasks: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("t{i}"), "prompt": "@fake commit t.txt"}))
        .collect();
    p.tasks(&tasks);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let messages = recorded(&p, "queued.jsonl");
    // The first goes at once; the other eleven wait for the window, as one.
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0]["event"], "queued");
    assert_eq!(messages[1]["event"], "coalesced");
    assert_eq!(messages[1]["count"], 11);
    let events = flatten(&messages);
    let tasks: Vec<&str> = events.iter().map(|e| e["task"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..12).map(|i| format!("t{i}")).collect();
    assert_eq!(tasks, want);
}

#[test]
fn land_tells_about_a_conflict_and_what_landed() {
    let p = TestProject::new("");
    p.config(&format!(
        "[[notify]]\non = [\"landed\", \"needs_attention\"]\n{}\n",
        recorder(&p, "land.jsonl")
    ));
    p.tasks(&[
        json!({"id": "a", "prompt": "@fake commit README.md from-a"}),
        json!({"id": "b", "prompt": "@fake commit README.md from-b"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(recorded(&p, "land.jsonl").is_empty(), "nothing landed yet");
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let events = flatten(&recorded(&p, "land.jsonl"));
    assert_eq!(kinds(&events), ["landed", "needs_attention"], "{events:?}");
    assert_eq!(events[0]["task"], "a");
    assert_eq!(events[0]["target"], "main");
    assert_eq!(events[1]["cause"], "land_conflict");
    assert_eq!(events[1]["task"], "b");
    let message = events[1]["message"].as_str().unwrap();
    assert!(
        message.contains("README.md") && message.contains("flocks land --resolve b"),
        "{message}"
    );
}

#[test]
fn a_header_variable_that_is_not_set_is_a_config_error_before_anything_runs() {
    let p = TestProject::new(
        "[[notify]]\non = [\"run_finished\"]\nwebhook = \"https://ntfy.example/flocks\"\nformat = \"text\"\n\
         headers_env = { Authorization = \"NOTIFY_TEST_UNSET_TOKEN\" }\n",
    );
    p.tasks(&[json!({"id": "a", "prompt": "@fake commit a.txt"})]);
    for args in [&["run"][..], &["run", "--dry-run"], &["land", "-y"]] {
        let out = p.flocks(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out));
        let err = text(&out);
        assert!(
            err.contains("flocks.toml:7")
                && err.contains("notify.headers_env")
                && err.contains("$NOTIFY_TEST_UNSET_TOKEN is not set"),
            "{args:?}: {err}"
        );
    }
    assert!(!p.path(".flocks/state.json").exists());
}

#[test]
fn a_command_that_hangs_is_stopped_at_its_timeout_with_what_it_started() {
    let p = TestProject::new("");
    let pid_file = p.out_file("notifier.pid");
    p.config(&format!(
        "[[notify]]\non = [\"run_finished\"]\ncommand = [\"sh\", \"-c\", \"sleep 600 & echo $! > \\\"$0\\\"; wait\", \"{}\"]\ntimeout_secs = 1\n",
        pid_file.display()
    ));
    p.tasks(&[json!({"id": "a", "prompt": "@fake commit a.txt"})]);
    let started = Instant::now();
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let sleeper = read_pid(&pid_file);
    wait_for(5, "the notifier's child to be killed", || {
        !pid_alive(sleeper)
    });
    let said = notices_about(&p, "notify #1 (command sh)");
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].contains("timeout_secs = 1"), "{said:?}");
}

#[test]
fn land_tells_about_a_failed_validation_and_then_the_culprit() {
    let p = TestProject::new("");
    p.config(&format!(
        "[validate]\ncommands = [[\"sh\", \"-c\", \"test ! -f bad.txt\"]]\n\n\
         [[notify]]\non = [\"landed\", \"needs_attention\"]\n{}\n",
        recorder(&p, "land.jsonl")
    ));
    p.tasks(&[
        json!({"id": "good", "prompt": "@fake commit good.txt"}),
        json!({"id": "bad", "prompt": "@fake commit bad.txt"}),
    ]);
    let out = p.flocks(&["run"]);
    assert_eq!(code(&out), 0, "{}", text(&out));
    let out = p.flocks(&["land", "-y"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let events = flatten(&recorded(&p, "land.jsonl"));
    assert_eq!(kinds(&events), ["needs_attention"], "{events:?}");
    assert_eq!(events[0]["cause"], "land_validation_failed");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("flocks land --bisect"),
        "{events:?}"
    );
    let out = p.flocks(&["land", "-y", "--bisect"]);
    assert_eq!(code(&out), 4, "{}", text(&out));
    let events = flatten(&recorded(&p, "land.jsonl"));
    assert_eq!(
        kinds(&events),
        ["needs_attention", "landed", "needs_attention"],
        "{events:?}"
    );
    assert_eq!(events[1]["task"], "good");
    assert_eq!(events[2]["cause"], "land_culprit");
    assert_eq!(events[2]["task"], "bad");
    assert!(
        events[2]["message"]
            .as_str()
            .unwrap()
            .contains("test ! -f bad.txt"),
        "{events:?}"
    );
}
