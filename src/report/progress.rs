//! Live progress for `flocks run` on a terminal (indicatif): one overall line
//! (done, running, failed, queued, cost so far) and one line per running agent
//! (task, pool, elapsed, what it does now: `logview::activity`). Notices and finished tasks print
//! above the bars, so the scrollback keeps the run's story.
//!
//! [`ProgressView`] is the model: it folds events into counts and agents and
//! renders plain text, so tests can drive it with hand-built events.
//! [`ProgressReporter`] puts that text on indicatif bars.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Event, Reporter};
use crate::agent::stream::one_line;
use crate::output::units::duration as human_duration;
use crate::state::Outcome;

/// Width of the text bar in the overall line.
const BAR_WIDTH: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskState {
    Queued,
    Running,
    Done,
    Failed,
    Blocked,
    /// Interrupted: neither done nor failed.
    Stopped,
}

#[derive(Debug, Clone)]
struct Agent {
    task: String,
    pool: String,
    attempt: u32,
    started: DateTime<Utc>,
    /// What it does now: its last tool call or words (from `activity`
    /// events, or read from its log as `status` reads it).
    activity: Option<String>,
    stalled: bool,
}

/// What the progress display shows, folded from events.
#[derive(Debug, Default)]
pub(crate) struct ProgressView {
    /// Tasks to run (a best-of task once).
    total: usize,
    /// By id as events name them: tasks, and best-of variants (`<id>@v<k>`).
    tasks: HashMap<String, TaskState>,
    /// Best-of tasks whose variants were judged: done, or failed.
    judged: HashMap<String, TaskState>,
    /// Running agents, in start order.
    agents: Vec<Agent>,
    cost: f64,
    waiting_until: Option<DateTime<Utc>>,
    /// Why dispatch waits without an end time (free disk below the minimum).
    waiting_reason: Option<String>,
    log_root: Option<PathBuf>,
}

impl ProgressView {
    /// `log_root` (`.flocks/logs`) lets agent lines fall back to the last line
    /// of the agent's output before its first tool call.
    pub(crate) fn new(log_root: Option<PathBuf>) -> ProgressView {
        ProgressView {
            log_root,
            ..ProgressView::default()
        }
    }

    /// Tasks in `state`; a best-of task counts once: judged, or as its
    /// variants stand (one running: running; one queued: queued; all ended:
    /// being judged, in no count).
    fn count(&self, state: TaskState) -> usize {
        let mut by_task: HashMap<&str, TaskState> = HashMap::new();
        for (id, s) in &self.tasks {
            match crate::tasks::split_variant_id(id) {
                None => {
                    by_task.insert(id, *s);
                }
                Some((task, _)) => {
                    if self.tasks.contains_key(task) {
                        continue;
                    }
                    let s = match s {
                        TaskState::Running | TaskState::Queued | TaskState::Stopped => *s,
                        _ => TaskState::Running,
                    };
                    let rank = |s: TaskState| match s {
                        TaskState::Running => 3,
                        TaskState::Queued => 2,
                        _ => 1,
                    };
                    let e = by_task.entry(task).or_insert(s);
                    if rank(s) > rank(*e) {
                        *e = s;
                    }
                }
            }
        }
        for (task, s) in &self.judged {
            by_task.insert(task, *s);
        }
        by_task.values().filter(|s| **s == state).count()
    }

    /// A variant is running or queued again: its task is not judged yet.
    fn unjudge(&mut self, id: &str) {
        if let Some((task, _)) = crate::tasks::split_variant_id(id) {
            self.judged.remove(task);
        }
    }

    pub(crate) fn running(&self) -> usize {
        self.agents.len()
    }

    /// Apply an event received at `now`; returns the line to print above the
    /// bars, if any.
    pub(crate) fn apply(&mut self, event: &Event, now: DateTime<Utc>) -> Option<String> {
        match event {
            Event::RunStarted { pending, .. } => {
                self.total = *pending;
            }
            Event::Queued { task } => {
                self.unjudge(task);
                self.tasks.insert(task.clone(), TaskState::Queued);
            }
            Event::Started {
                task,
                attempt,
                pool,
                ..
            } => {
                self.waiting_until = None;
                self.waiting_reason = None;
                self.unjudge(task);
                self.tasks.insert(task.clone(), TaskState::Running);
                self.agents.retain(|a| a.task != *task);
                self.agents.push(Agent {
                    task: task.clone(),
                    pool: pool.clone(),
                    attempt: *attempt,
                    started: now,
                    activity: None,
                    stalled: false,
                });
                // The bar shows it; no line.
                return None;
            }
            Event::Activity { task, activity, .. } => {
                if let Some(a) = self.agents.iter_mut().find(|a| a.task == *task) {
                    a.activity = Some(activity.clone());
                }
            }
            Event::Stalled { task, .. } => {
                if let Some(a) = self.agents.iter_mut().find(|a| a.task == *task) {
                    a.stalled = true;
                }
            }
            // The bar shows where its job stands, until the agent acts.
            Event::Job { task, job, .. } => {
                if let Some(a) = self.agents.iter_mut().find(|a| a.task == *task) {
                    a.activity = Some(job.describe());
                }
            }
            Event::Finished {
                task,
                outcome,
                cost_usd,
                ..
            } => {
                self.agents.retain(|a| a.task != *task);
                self.cost = crate::output::units::sum_costs([self.cost, *cost_usd]);
                let state = match outcome {
                    Outcome::Success => TaskState::Done,
                    Outcome::Interrupted => TaskState::Stopped,
                    _ => TaskState::Failed,
                };
                self.tasks.insert(task.clone(), state);
            }
            Event::Requeued { task, .. } => {
                self.unjudge(task);
                self.tasks.insert(task.clone(), TaskState::Queued);
            }
            Event::VariantJudged { task, winner, .. } => {
                let state = if winner.is_some() {
                    TaskState::Done
                } else {
                    TaskState::Failed
                };
                self.judged.insert(task.clone(), state);
            }
            Event::Blocked { task, .. } => {
                self.tasks.insert(task.clone(), TaskState::Blocked);
            }
            Event::Waiting {
                until: Some(until), ..
            } => {
                self.waiting_until = Some(*until);
            }
            Event::Waiting {
                until: None,
                reason,
            } => {
                self.waiting_reason = reason.clone();
            }
            Event::RunFinished { .. } => {
                self.waiting_until = None;
                self.waiting_reason = None;
            }
            Event::Notice { .. }
            | Event::CredentialParked { .. }
            | Event::CredentialDisabled { .. }
            | Event::NeedsAttention { .. }
            | Event::ConflictPredicted { .. }
            | Event::Landed { .. }
            | Event::Usage { .. }
            | Event::EgressDenied { .. }
            | Event::Upkeep { .. } => {}
        }
        super::line::render(event)
    }

    /// The overall line: a bar of finished tasks, then the counts and cost.
    pub(crate) fn overall(&self, now: DateTime<Utc>) -> String {
        let done = self.count(TaskState::Done);
        let failed = self.count(TaskState::Failed);
        let blocked = self.count(TaskState::Blocked);
        let queued = self.count(TaskState::Queued);
        let finished = done + failed + blocked;
        let total = self.total.max(finished);
        let filled = (finished * BAR_WIDTH).checked_div(total).unwrap_or(0);
        let mut s = format!(
            "[{}{}] {finished}/{total} · ✔ {done} done · ▶ {} running · ✖ {failed} failed · {queued} queued",
            "█".repeat(filled),
            "░".repeat(BAR_WIDTH - filled),
            self.running(),
        );
        if blocked > 0 {
            s.push_str(&format!(" · ⊘ {blocked} blocked"));
        }
        s.push_str(&format!(" · {}", crate::output::units::money(self.cost)));
        if let Some(until) = self.waiting_until {
            let left = (until - now).num_milliseconds() as f64 / 1000.0;
            s.push_str(&format!(
                " · ⏸ every credential is parked: resuming in {}",
                human_duration(left)
            ));
        } else if let Some(why) = &self.waiting_reason {
            s.push_str(&format!(" · ⏸ waiting: {why}"));
        }
        s
    }

    /// One line per running agent, by task id: task, pool, elapsed, and its
    /// last tool call (or last line of output).
    pub(crate) fn agent_lines(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        self.agents
            .iter()
            .map(|a| {
                let elapsed = (now - a.started).num_milliseconds() as f64 / 1000.0;
                let doing = if a.stalled {
                    "⚠ stalled: no output; stopping it".to_string()
                } else {
                    a.activity
                        .as_deref()
                        .map(|s| one_line(s, 200))
                        .unwrap_or_else(|| "starting".into())
                };
                let line = format!(
                    "  ▶ {:<24} {:<10} {:>6}  {doing}",
                    a.task,
                    a.pool,
                    human_duration(elapsed)
                );
                (a.task.clone(), line)
            })
            .collect()
    }

    /// Everything the bars show, as text (for tests).
    #[cfg(test)]
    pub(crate) fn render(&self, now: DateTime<Utc>) -> String {
        let mut s = self.overall(now);
        for (_, line) in self.agent_lines(now) {
            s.push('\n');
            s.push_str(&line);
        }
        s
    }

    /// Read what agents with no activity event yet do, from their logs, as
    /// `status` reads it (never their session line).
    fn refresh_output(&mut self) {
        let Some(root) = &self.log_root else { return };
        for a in self.agents.iter_mut().filter(|a| a.activity.is_none()) {
            let path = root.join(&a.task).join(format!("{}.log", a.attempt));
            a.activity = crate::logview::last_activity(&path);
        }
    }
}

/// The indicatif reporter: the view's lines on bars that redraw in place.
pub(crate) struct ProgressReporter {
    view: ProgressView,
    multi: MultiProgress,
    overall: ProgressBar,
    bars: HashMap<String, ProgressBar>,
}

impl ProgressReporter {
    /// Draws on stdout (the caller checked that it is a terminal).
    pub(crate) fn stdout(log_root: PathBuf) -> ProgressReporter {
        ProgressReporter::with_target(ProgressDrawTarget::stdout(), Some(log_root))
    }

    pub(crate) fn with_target(
        target: ProgressDrawTarget,
        log_root: Option<PathBuf>,
    ) -> ProgressReporter {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0).with_style(line_style()));
        ProgressReporter {
            view: ProgressView::new(log_root),
            multi,
            overall,
            bars: HashMap::new(),
        }
    }

    /// Bring the bars in line with the view.
    fn redraw(&mut self) {
        let now = Utc::now();
        self.overall.set_message(self.view.overall(now));
        let lines = self.view.agent_lines(now);
        self.bars.retain(|task, bar| {
            let keep = lines.iter().any(|(t, _)| t == task);
            if !keep {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            keep
        });
        for (task, line) in lines {
            let bar = self.bars.entry(task).or_insert_with(|| {
                self.multi
                    .add(ProgressBar::new_spinner().with_style(line_style()))
            });
            bar.set_message(line);
        }
    }
}

fn line_style() -> ProgressStyle {
    ProgressStyle::with_template("{wide_msg}").unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Reporter for ProgressReporter {
    fn event(&mut self, event: &Event) {
        let line = self.view.apply(event, Utc::now());
        if let Some(line) = line {
            let _ = self.multi.println(crate::output::paint_text(&line));
        }
        if !matches!(event, Event::Activity { .. }) {
            self.redraw();
        } else if let Event::Activity { task, .. } = event
            && let Some((_, line)) = self
                .view
                .agent_lines(Utc::now())
                .into_iter()
                .find(|(t, _)| t == task)
            && let Some(bar) = self.bars.get(task)
        {
            bar.set_message(line);
        }
    }

    fn tick(&mut self) {
        self.view.refresh_output();
        self.redraw();
    }

    fn finish(&mut self) {
        for bar in self.bars.values() {
            bar.finish_and_clear();
        }
        self.bars.clear();
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use chrono::TimeZone;
    use indicatif::TermLike;

    use super::*;
    use crate::report::PoolInfo;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::seconds(secs)
    }

    fn started(task: &str, pool: &str) -> Event {
        Event::Started {
            task: task.into(),
            attempt: 1,
            pool: pool.into(),
            worktree: format!("/r/.worktrees/{task}"),
            credential: None,
            resumed: false,
        }
    }

    fn finished(task: &str, outcome: Outcome, cost: f64) -> Event {
        Event::Finished {
            task: task.into(),
            attempt: 1,
            outcome,
            duration_secs: 61.0,
            cost_usd: cost,
            turns: 4,
            commits: 1,
            phases: None,
        }
    }

    /// A run of five: two done or failing, one stalled, one running, one queued.
    fn sequence() -> Vec<(i64, Event)> {
        let mut evs = vec![(
            0,
            Event::RunStarted {
                run_id: "r1".into(),
                tasks: 5,
                pending: 5,
                pools: vec![PoolInfo {
                    name: "local".into(),
                    backend: "local".into(),
                    slots: 3,
                    isolation: "none".into(),
                }],
                best_of: 0,
                variants: 0,
            },
        )];
        for id in ["a", "b", "c", "d", "e"] {
            evs.push((0, Event::Queued { task: id.into() }));
        }
        evs.extend([
            (1, started("a", "local")),
            (1, started("b", "local")),
            (2, started("c", "dev")),
            (
                5,
                Event::Activity {
                    task: "a".into(),
                    attempt: 1,
                    activity: "Bash: cargo test".into(),
                },
            ),
            (60, finished("a", Outcome::Success, 0.25)),
            (61, started("d", "local")),
            (
                70,
                Event::Stalled {
                    task: "b".into(),
                    attempt: 1,
                    quiet_secs: 60.0,
                },
            ),
            (
                80,
                finished(
                    "c",
                    Outcome::Failed {
                        reason: "boom".into(),
                    },
                    0.5,
                ),
            ),
            (
                81,
                Event::Requeued {
                    task: "c".into(),
                    reason: "failed: boom; retry 1 of 3".into(),
                },
            ),
            (
                82,
                Event::Notice {
                    message: "something to read".into(),
                },
            ),
        ]);
        evs
    }

    #[test]
    fn renders_counts_agents_and_lines_above() {
        let mut view = ProgressView::new(None);
        let mut printed = Vec::new();
        for (at, ev) in sequence() {
            printed.extend(view.apply(&ev, t(at)));
        }
        let text = view.render(t(90));
        insta::assert_snapshot!("progress_mid_run", text);
        insta::assert_snapshot!("progress_printed_lines", printed.join("\n"));
    }

    #[test]
    fn a_best_of_task_counts_once() {
        let mut view = ProgressView::new(None);
        view.apply(
            &Event::RunStarted {
                run_id: "r".into(),
                tasks: 2,
                pending: 2,
                pools: vec![],
                best_of: 1,
                variants: 3,
            },
            t(0),
        );
        for id in ["one", "t@v1", "t@v2", "t@v3"] {
            view.apply(&Event::Queued { task: id.into() }, t(0));
        }
        assert!(
            view.overall(t(0)).contains("0/2 · "),
            "{}",
            view.overall(t(0))
        );
        assert!(
            view.overall(t(0)).contains("2 queued"),
            "{}",
            view.overall(t(0))
        );
        let finished = |task: &str| Event::Finished {
            task: task.into(),
            attempt: 1,
            outcome: Outcome::Success,
            duration_secs: 1.0,
            cost_usd: 0.0,
            turns: 1,
            commits: 1,
            phases: None,
        };
        for id in ["one", "t@v1", "t@v2", "t@v3"] {
            view.apply(&finished(id), t(5));
        }
        // The variants ended; the task is being judged.
        assert!(
            view.overall(t(5)).contains("1/2 · ✔ 1 done"),
            "{}",
            view.overall(t(5))
        );
        view.apply(
            &Event::VariantJudged {
                task: "t".into(),
                winner: Some(2),
                by: crate::state::JudgedBy::Ranking,
                reason: "x".into(),
                ranking: vec![],
                notice: None,
            },
            t(6),
        );
        assert!(
            view.overall(t(6)).contains("2/2 · ✔ 2 done"),
            "{}",
            view.overall(t(6))
        );
    }

    #[test]
    fn waiting_shows_a_countdown_until_an_agent_starts() {
        let mut view = ProgressView::new(None);
        view.apply(
            &Event::RunStarted {
                run_id: "r".into(),
                tasks: 1,
                pending: 1,
                pools: vec![],
                best_of: 0,
                variants: 0,
            },
            t(0),
        );
        view.apply(&Event::Queued { task: "a".into() }, t(0));
        view.apply(
            &Event::Waiting {
                until: Some(t(252)),
                reason: None,
            },
            t(0),
        );
        let line = view.overall(t(0));
        assert!(
            line.ends_with("⏸ every credential is parked: resuming in 4m12s"),
            "{line}"
        );
        view.apply(&started("a", "local"), t(253));
        assert!(!view.overall(t(253)).contains("parked"));
    }

    #[test]
    fn the_overall_line_says_why_dispatch_waits_for_disk() {
        let mut view = ProgressView::new(None);
        view.apply(&Event::Queued { task: "a".into() }, t(0));
        view.apply(
            &Event::Waiting {
                until: None,
                reason: Some("free disk space is 1.00 GB under /r/.worktrees, below min_free_disk_gb = 5.00 GB".into()),
            },
            t(0),
        );
        let line = view.overall(t(1));
        assert!(
            line.ends_with("⏸ waiting: free disk space is 1.00 GB under /r/.worktrees, below min_free_disk_gb = 5.00 GB"),
            "{line}"
        );
        view.apply(&started("a", "local"), t(5));
        assert!(!view.overall(t(5)).contains("waiting"));
    }

    #[test]
    fn agent_line_reads_the_log_as_status_does_never_the_session_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        let log = dir.path().join("a/1.log");
        std::fs::write(
            &log,
            "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"s-8474\",\"model\":\"m\"}\nsome stderr\n",
        )
        .unwrap();
        let mut view = ProgressView::new(Some(dir.path().to_path_buf()));
        view.apply(&started("a", "local"), t(0));
        view.refresh_output();
        let lines = view.agent_lines(t(3));
        assert!(lines[0].1.ends_with("3s  starting"), "{lines:?}");
        assert_eq!(crate::view::last_activity(&log), None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        use std::io::Write;
        writeln!(f, "{{\"type\":\"assistant\",\"message\":{{\"content\":[{{\"type\":\"text\",\"text\":\"Let me look.\\nstep 3\"}}]}}}}").unwrap();
        view.refresh_output();
        let lines = view.agent_lines(t(3));
        assert!(lines[0].1.ends_with("3s  step 3"), "{lines:?}");
        assert_eq!(crate::view::last_activity(&log).as_deref(), Some("step 3"));
    }

    #[test]
    fn agent_line_falls_back_to_the_last_output_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(
            dir.path().join("a/1.log"),
            "{\"type\":\"assistant\",\"message\":{\"content\":[{\"type\":\"text\",\"text\":\"Reading the code\"}]}}\n",
        )
        .unwrap();
        let mut view = ProgressView::new(Some(dir.path().to_path_buf()));
        view.apply(&started("a", "local"), t(0));
        view.refresh_output();
        let lines = view.agent_lines(t(3));
        assert!(lines[0].1.ends_with("3s  Reading the code"), "{lines:?}");
    }

    /// A terminal that records what indicatif writes.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl TermLike for Recorder {
        fn width(&self) -> u16 {
            160
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push(s.to_string());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reporter_prints_notices_above_the_bars() {
        let term = Recorder::default();
        let mut r = ProgressReporter::with_target(
            ProgressDrawTarget::term_like(Box::new(term.clone())),
            None,
        );
        for (_, ev) in sequence() {
            r.event(&ev);
        }
        r.tick();
        r.finish();
        let written = term.0.lock().unwrap().join("\n");
        assert!(written.contains("note: something to read"), "{written}");
        assert!(written.contains("✔ a: succeeded after 1m01s"), "{written}");
        assert!(written.contains("↻ c: back in the queue"), "{written}");
    }
}
