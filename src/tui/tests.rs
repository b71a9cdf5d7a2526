//! The dashboard drawn on ratatui's TestBackend from hand-built state and
//! events; times are fixed and shown in UTC.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent};

use super::app::App;
use super::feed::Stamped;
use super::input::{Action, action};
use super::view::draw;
use crate::report::Event;
use crate::state::Outcome;
use crate::view::{CredentialView, PoolView, RunView, StatusView, TaskView, Totals};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::seconds(secs)
}

fn task(id: &str, status: &str) -> TaskView {
    TaskView {
        id: id.into(),
        branch: format!("flocks/{id}"),
        status: status.into(),
        detail: None,
        attempts: 0,
        pool: None,
        elapsed_secs: None,
        activity: None,
        quiet_secs: None,
        pending_secs: None,
        job: None,
        turns: 0,
        cost_usd: 0.0,
        depends_on: vec![],
        blocked_on: vec![],
        worktree: PathBuf::from(format!("/r/.worktrees/{id}")),
        log: None,
        log_tail: vec![],
        outcome: None,
        expect_commits: true,
        result: None,
        conflict: None,
        conflict_unknown: false,
        outside_footprint: vec![],
        variants: vec![],
        judgement: None,
        usage: None,
        egress_denied: 0,
    }
}

fn running(id: &str, pool: &str, elapsed: f64, activity: Option<&str>, quiet: f64) -> TaskView {
    TaskView {
        attempts: 1,
        pool: Some(pool.into()),
        elapsed_secs: Some(elapsed),
        activity: activity.map(str::to_string),
        quiet_secs: Some(quiet),
        ..task(id, "running")
    }
}

fn status() -> StatusView {
    let mut failed = task("flaky-test", "failed");
    failed.detail = Some("failed: the agent reported an error: tests do not pass".into());
    failed.attempts = 2;
    failed.pool = Some("local".into());
    failed.elapsed_secs = Some(305.0);
    let mut timed_out = task("slow-build", "timed out");
    timed_out.detail = Some("timed out (agent_timeout_secs)".into());
    let mut stalled = task("quiet-one", "stalled");
    stalled.detail = Some("stalled: no output for 10m00s".into());
    let mut done = task("fix-login", "succeeded");
    done.attempts = 1;
    done.pool = Some("local".into());
    done.elapsed_secs = Some(125.0);
    done.cost_usd = 0.42;
    let mut blocked = task("docs", "blocked");
    blocked.blocked_on = vec!["flaky-test".into()];
    StatusView {
        run: Some(RunView {
            id: "20260102-030000".into(),
            live: true,
            pid: 4242,
            started_at: t(-300),
            ended_at: None,
        }),
        tasks: vec![
            done,
            running("add-search", "local", 62.0, Some("Bash: cargo test"), 3.0),
            running("refactor-db", "dev", 1500.0, Some("Edit: src/db.rs"), 700.0),
            running("new-api", "dev", 5.0, None, 5.0),
            failed,
            timed_out,
            stalled,
            task("queued-1", "pending"),
            task("queued-2", "interrupted"),
            blocked,
        ],
        pools: vec![
            PoolView {
                name: "local".into(),
                backend: "local".into(),
                isolation: "none".into(),
                slots: 2,
                running: 1,
                credential: "default".into(),
                egress: "open".into(),
            },
            PoolView {
                name: "dev".into(),
                backend: "docker".into(),
                isolation: "clone".into(),
                slots: 4,
                running: 2,
                credential: "default".into(),
                egress: "open".into(),
            },
        ],
        vms: vec![],
        waiting: None,
        disk: None,
        credentials: vec![
            CredentialView {
                name: "sub-1".into(),
                parked_until: Some(t(750)),
                disabled: None,
            },
            CredentialView {
                name: "sub-2".into(),
                parked_until: None,
                disabled: Some("authentication_failed".into()),
            },
        ],
        totals: Totals {
            tasks: 10,
            attempts: 9,
            turns: 87,
            cost_usd: 3.5,
        },
    }
}

fn stamped(at: i64, event: Event) -> Stamped {
    Stamped { ts: t(at), event }
}

fn app() -> App {
    let mut app = App::new(status(), Some(1200.0), t(0));
    app.local_times = false;
    app.add_events(vec![
        stamped(
            -10,
            Event::Queued {
                task: "queued-1".into(),
            },
        ),
        stamped(
            -5,
            Event::Finished {
                task: "flaky-test".into(),
                attempt: 2,
                outcome: Outcome::Failed {
                    reason: "the agent reported an error: tests do not pass".into(),
                },
                duration_secs: 305.0,
                cost_usd: 0.3,
                turns: 12,
                commits: 0,
                phases: None,
            },
        ),
        stamped(
            -2,
            Event::CredentialParked {
                credential: "sub-1".into(),
                until: t(750),
                reason: "rate limited".into(),
            },
        ),
    ]);
    app
}

fn render(app: &App, now: DateTime<Utc>, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| draw(f, app, now)).unwrap();
    let buf = term.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let line: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn key(code: KeyCode) -> Action {
    action(KeyEvent::from(code))
}

#[test]
fn dashboard_shows_pools_agents_counts_credentials_and_events() {
    let app = app();
    insta::assert_snapshot!("dashboard", render(&app, t(2), 110, 34));
}

#[test]
fn elapsed_grows_and_a_quiet_agent_gets_a_stall_warning() {
    let app = app();
    let text = render(&app, t(10), 110, 34);
    // 62 s when read, 10 s later.
    assert!(text.contains("1m12s   Bash: cargo test"), "{text}");
    // Quiet for 710 s with stall_timeout_secs = 1200: more than half.
    assert!(text.contains("⚠ no output for 11m50s"), "{text}");
}

#[test]
fn stalled_event_marks_the_agent_until_it_finishes() {
    let mut app = app();
    app.add_events(vec![stamped(
        3,
        Event::Stalled {
            task: "new-api".into(),
            attempt: 1,
            quiet_secs: 1200.0,
        },
    )]);
    let text = render(&app, t(4), 110, 34);
    assert!(text.contains("⚠ stalled: no output; stopping it"), "{text}");
}

#[test]
fn waiting_banner_counts_down() {
    let mut app = app();
    app.add_events(vec![stamped(
        0,
        Event::Waiting {
            until: Some(t(750)),
            reason: None,
        },
    )]);
    let text = render(&app, t(30), 110, 34);
    assert!(
        text.contains("dispatch resumes at 03:16:35 (in 12m00s)"),
        "{text}"
    );
    app.add_events(vec![stamped(
        40,
        Event::Started {
            task: "queued-1".into(),
            attempt: 1,
            pool: "local".into(),
            worktree: "/r/.worktrees/queued-1".into(),
            credential: None,
            resumed: false,
        },
    )]);
    assert!(!render(&app, t(41), 110, 34).contains("dispatch resumes"));
}

#[test]
fn keys_select_tasks_and_open_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("1.log");
    std::fs::write(
        &log,
        "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"Looking at the failing test\"}]}}\n\
         {\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"tool_use\",\"name\":\"Bash\",\"input\":{\"command\":\"cargo test db\"}}]}}\n",
    )
    .unwrap();
    let mut st = status();
    st.tasks[2].log = Some(log.clone());
    let mut app = App::new(st, None, t(0));
    app.local_times = false;
    // Rows: running first (add-search, refactor-db, new-api), then failed...
    assert_eq!(app.selected.as_deref(), Some("add-search"));
    app.handle(key(KeyCode::Down));
    assert_eq!(app.selected.as_deref(), Some("refactor-db"));
    app.handle(key(KeyCode::Up));
    app.handle(key(KeyCode::Up));
    assert_eq!(app.selected.as_deref(), Some("add-search"));
    app.handle(key(KeyCode::Down));
    app.handle(key(KeyCode::Enter));
    let text = render(&app, t(1), 90, 20);
    assert!(text.contains("log · refactor-db · 1.log · tail"), "{text}");
    assert!(text.contains("Looking at the failing test"), "{text}");
    assert!(text.contains("▶ Bash: cargo test db"), "{text}");

    // `l` follows: new lines appear at the next refresh.
    app.handle(key(KeyCode::Char('l')));
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(
        &mut f,
        b"{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"All green now\"}]}}\n",
    )
    .unwrap();
    app.refresh_log();
    let text = render(&app, t(2), 90, 20);
    assert!(text.contains("following"), "{text}");
    assert!(text.contains("All green now"), "{text}");

    app.handle(key(KeyCode::Esc));
    assert!(render(&app, t(3), 90, 20).contains("tasks (10)"));
    app.handle(key(KeyCode::Char('q')));
    assert!(app.quit);
}

#[test]
fn no_run_yet() {
    let st = StatusView {
        run: None,
        tasks: vec![],
        pools: vec![PoolView {
            name: "local".into(),
            backend: "local".into(),
            isolation: "none".into(),
            slots: 5,
            running: 0,
            credential: "default".into(),
            egress: "open".into(),
        }],
        credentials: vec![],
        vms: vec![],
        waiting: None,
        disk: None,
        totals: Totals {
            tasks: 0,
            attempts: 0,
            turns: 0,
            cost_usd: 0.0,
        },
    };
    let app = App::new(st, None, t(0));
    let text = render(&app, t(0), 80, 12);
    assert!(text.contains("no run yet"), "{text}");
}

/// `--color never` / NO_COLOR: the dashboard keeps its text and emphasis,
/// and loses its colours.
#[test]
fn without_colour_the_dashboard_keeps_its_text() {
    use ratatui::style::{Color, Modifier};
    let app = app();
    let mut term = Terminal::new(TestBackend::new(110, 34)).unwrap();
    term.draw(|f| draw(f, &app, t(2))).unwrap();
    let coloured = term.backend().buffer().clone();
    assert!(coloured.content.iter().any(|c| c.fg != Color::Reset));
    term.draw(|f| {
        draw(f, &app, t(2));
        super::uncolour(f.buffer_mut());
    })
    .unwrap();
    let plain = term.backend().buffer().clone();
    assert!(
        plain
            .content
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset)
    );
    let text =
        |b: &ratatui::buffer::Buffer| b.content.iter().map(|c| c.symbol()).collect::<String>();
    assert_eq!(text(&coloured), text(&plain));
    assert!(
        plain
            .content
            .iter()
            .any(|c| c.modifier.contains(Modifier::BOLD))
    );
}

#[test]
fn landed_tasks_count_as_done() {
    use super::app::{Group, group_of};
    assert!(group_of("landed") == Group::Done);
    assert!(group_of("succeeded") == Group::Done);
    assert!(group_of("failed") == Group::Failed);
    assert!(group_of("removed") == Group::Idle);
    assert!(group_of("not queued") == Group::Idle);
}

#[test]
fn a_predicted_conflict_shows_on_its_task_and_in_the_events() {
    let mut view = status();
    let mut done = task("api-login", "succeeded");
    done.attempts = 1;
    done.conflict = Some(Box::new(crate::state::PredictedConflict {
        commit: "c0ffee".into(),
        files: vec!["src/auth.rs".into()],
        with: vec!["api-auth".into()],
        with_target: false,
        target: "main".into(),
        target_tip: "abc".into(),
    }));
    view.tasks.push(done);
    let mut app = App::new(view, Some(1200.0), t(0));
    app.local_times = false;
    app.add_events(vec![stamped(
        1,
        Event::ConflictPredicted {
            task: "api-login".into(),
            with: vec!["api-auth".into()],
            with_target: false,
            files: vec!["src/auth.rs".into()],
            commit: "c0ffee".into(),
            target: "main".into(),
        },
    )]);
    let text = render(&app, t(2), 120, 40);
    assert!(
        text.contains("⚠ will conflict with `api-auth` in src/auth.rs"),
        "{text}"
    );
    assert!(
        text.contains("⚠ api-login: will conflict with `api-auth` in src/auth.rs"),
        "{text}"
    );
}
