//! `flocks status`: running (with elapsed time and activity), done, failed and
//! timed out (with the last lines of their log), blocked; pools, credentials,
//! totals. Reads state.json and logs; never blocks a run.

use std::fmt::Write;

use crate::cli::StatusArgs;
use crate::error::{Exit, Result};
use crate::output::units::duration as human_duration;
use crate::output::units::{Count, Duration, Money, count};
use crate::project::Project;
use crate::view::{LANDED, NOT_QUEUED, REMOVED, RESULT_LINES, StatusView, TaskView, build};

pub(super) fn run(project: &Project, args: &StatusArgs) -> Result<Exit> {
    project.repo()?;
    if args.watch {
        return crate::tui::run(project);
    }
    // The disk count does not need the state: counted while it is read.
    let budget = (!args.disk).then_some(crate::view::DISK_BUDGET);
    let (state, disk) = std::thread::scope(|s| {
        let disk = s.spawn(|| crate::view::disk(project, budget));
        let state = project.store.load();
        (state, disk.join())
    });
    let state = state?;
    let mut view = build(project, &state);
    view.disk = Some(disk.unwrap_or_else(|p| std::panic::resume_unwind(p)));
    if args.json {
        crate::output::print_json(&view);
    } else {
        crate::output::report(&render(
            &view,
            project.config.stall_timeout.map(|d| d.as_secs_f64()),
        ));
    }
    crate::state::leave((state, view));
    Ok(Exit::Ok)
}

pub(super) fn render(v: &StatusView, stall_secs: Option<f64>) -> String {
    // About a line of 90 bytes per task: grown once, not by doubling.
    let mut s = String::with_capacity(1024 + v.tasks.len() * 96);
    run_lines(&mut s, v);
    let g = Groups::of(v);
    if !v.tasks.is_empty() {
        counts_line(&mut s, &g);
    }
    let live = v.run.as_ref().is_some_and(|r| r.live);
    running_section(&mut s, &g.running, live, stall_secs);
    done_section(&mut s, &g.done);
    failed_section(&mut s, &g.failed);
    blocked_section(&mut s, &g.blocked);
    queued_section(&mut s, &g.waiting);
    not_queued_section(&mut s, &g.not_queued);
    removed_section(&mut s, &g.removed);
    pools_section(&mut s, v);
    totals_lines(&mut s, v, !g.failed.is_empty());
    s
}

/// The run (live, ended, none) and a wait for disk space.
fn run_lines(s: &mut String, v: &StatusView) {
    match &v.run {
        Some(r) if r.live => {
            let _ = writeln!(
                s,
                "run {} · live (pid {}) · started {}",
                r.id,
                r.pid,
                r.started_at
                    .with_timezone(&chrono::Local)
                    .format("%H:%M:%S")
            );
        }
        Some(r) => {
            let ended = r
                .ended_at
                .map(|e| {
                    format!(
                        "ended {}",
                        e.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S")
                    )
                })
                .unwrap_or_else(|| "did not end cleanly; `flocks run` resumes it".into());
            let _ = writeln!(s, "last run {} · {ended}", r.id);
        }
        None => {
            let _ = writeln!(s, "no run yet: `flocks run --tasks tasks.jsonl` starts one");
        }
    }
    if let Some(why) = &v.waiting {
        let _ = writeln!(
            s,
            "⏸ waiting: {why}; no new agent starts until space comes back"
        );
    }
}

/// The tasks by the section that shows them.
struct Groups<'a> {
    running: Vec<&'a TaskView>,
    done: Vec<&'a TaskView>,
    failed: Vec<&'a TaskView>,
    not_queued: Vec<&'a TaskView>,
    removed: Vec<&'a TaskView>,
    blocked: Vec<&'a TaskView>,
    waiting: Vec<&'a TaskView>,
}

impl<'a> Groups<'a> {
    fn of(v: &'a StatusView) -> Groups<'a> {
        let by =
            |f: &dyn Fn(&TaskView) -> bool| v.tasks.iter().filter(|t| f(t)).collect::<Vec<_>>();
        let running = by(&|t| t.status == "running");
        let done = by(&|t| t.status == "succeeded" || t.status == LANDED);
        let failed = by(&|t| {
            !matches!(
                t.status.as_str(),
                "running"
                    | "succeeded"
                    | "landed"
                    | "pending"
                    | "blocked"
                    | "interrupted"
                    | "removed"
                    | "not queued"
            )
        });
        let not_queued = by(&|t| t.status == NOT_QUEUED);
        let removed = by(&|t| t.status == REMOVED);
        let blocked = by(&|t| t.status == "blocked");
        let waiting = by(&|t| t.status == "pending" || t.status == "interrupted");
        Groups {
            running,
            done,
            failed,
            not_queued,
            removed,
            blocked,
            waiting,
        }
    }
}

/// One line of counts.
fn counts_line(s: &mut String, g: &Groups) {
    let Groups {
        running,
        done,
        failed,
        not_queued,
        removed,
        blocked,
        waiting,
    } = g;
    let landed = done.iter().filter(|t| t.status == LANDED).count();
    let kind = |k: &str| failed.iter().filter(|t| t.status == k).count();
    let (timed_out, stalled) = (kind("timed out"), kind("stalled"));
    let _ = writeln!(
        s,
        "{} running · {} succeeded{} · {} failed · {timed_out} timed out · {stalled} stalled · {} blocked · {} queued",
        running.len(),
        done.len(),
        if landed > 0 {
            format!(" ({landed} landed)")
        } else {
            String::new()
        },
        failed.len() - timed_out - stalled,
        blocked.len(),
        waiting.len()
    );
    if !not_queued.is_empty() {
        // On the same line: the counts line ends where this begins.
        s.pop();
        let _ = writeln!(s, " · {} not queued", not_queued.len());
    }
    if !removed.is_empty() {
        s.pop();
        let _ = writeln!(s, " · {} removed", removed.len());
    }
}

fn running_section(s: &mut String, running: &[&TaskView], live: bool, stall_secs: Option<f64>) {
    if !running.is_empty() {
        let _ = writeln!(s, "\nrunning ({}):", running.len());
        for t in running {
            let mut line = format!(
                "  ▶ {:<24} {:<10} {:>7}  {}",
                t.id,
                t.pool.as_deref().unwrap_or("-"),
                t.elapsed_secs.map(human_duration).unwrap_or_default(),
                t.activity.as_deref().unwrap_or("starting")
            );
            if !live {
                line.push_str("  (its run is gone: `flocks run` re-queues it)");
            } else if let (Some(q), Some(limit)) = (t.quiet_secs, stall_secs)
                && q > limit / 2.0
            {
                line.push_str(&format!("  ⚠ no output for {}", human_duration(q)));
            } else if let Some(q) = t.quiet_secs
                && q > 600.0
            {
                line.push_str(&format!("  ⚠ no output for {}", human_duration(q)));
            }
            if let Some(u) = &t.usage {
                let _ = write!(line, "  · {}", usage_line(u));
            }
            let _ = writeln!(s, "{line}");
            denied_line(s, t);
            variant_lines(s, t);
        }
    }
}

fn done_section(s: &mut String, done: &[&TaskView]) {
    if !done.is_empty() {
        let _ = writeln!(s, "\ndone ({}):", done.len());
        for t in done {
            // Written in place, nothing formatted apart: one line per task.
            let _ = write!(
                s,
                "  ✔ {:<24} {:<28} {} · ",
                t.id,
                t.branch,
                Count(t.attempts, "attempt")
            );
            if let Some(e) = t.elapsed_secs {
                let _ = write!(s, "{}", Duration(e));
            }
            let _ = writeln!(
                s,
                " · {}{}",
                Money(t.cost_usd),
                if t.status == LANDED { " · landed" } else { "" }
            );
            if let Some(c) = &t.conflict {
                let _ = writeln!(s, "      ⚠ {}", c.describe());
            }
            if t.conflict_unknown {
                let _ = writeln!(
                    s,
                    "      ? conflicts not predicted (the run ended first): `flocks land --dry-run` says"
                );
            }
            if !t.outside_footprint.is_empty() {
                let _ = writeln!(
                    s,
                    "      ⚠ changed outside its footprint: {}",
                    t.outside_footprint.join(", ")
                );
            }
            denied_line(s, t);
            variant_lines(s, t);
            if let Some(text) = &t.result {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                for l in lines.iter().take(RESULT_LINES) {
                    let _ = writeln!(s, "      │ {}", crate::agent::stream::one_line(l, 110));
                }
                if lines.len() > RESULT_LINES {
                    let _ = writeln!(s, "      │ … (`flocks logs {}` has all of it)", t.id);
                }
            }
        }
    }
}

fn failed_section(s: &mut String, failed: &[&TaskView]) {
    if !failed.is_empty() {
        let _ = writeln!(s, "\nfailed, timed out or stalled ({}):", failed.len());
        for t in failed {
            let mut facts = vec![count(t.attempts, "attempt")];
            facts.extend(t.pool.as_ref().map(|p| format!("on {p}")));
            facts.extend(t.elapsed_secs.map(human_duration));
            if t.cost_usd > 0.0 {
                facts.push(crate::output::units::money(t.cost_usd));
            }
            let _ = writeln!(
                s,
                "  ✖ {:<24} {}  ({})",
                t.id,
                t.detail.as_deref().unwrap_or(&t.status),
                facts.join(" · ")
            );
            for l in &t.log_tail {
                let _ = writeln!(s, "      │ {}", crate::agent::stream::one_line(l, 110));
            }
            denied_line(s, t);
            variant_lines(s, t);
        }
    }
}

fn blocked_section(s: &mut String, blocked: &[&TaskView]) {
    if !blocked.is_empty() {
        let _ = writeln!(s, "\nblocked ({}):", blocked.len());
        for t in blocked {
            match &t.detail {
                Some(why) => {
                    let _ = writeln!(s, "  ⊘ {:<24} {why}", t.id);
                }
                None => {
                    let _ = writeln!(s, "  ⊘ {:<24} waits for {}", t.id, t.blocked_on.join(", "));
                }
            }
        }
    }
}

fn queued_section(s: &mut String, waiting: &[&TaskView]) {
    if !waiting.is_empty() {
        let _ = writeln!(s, "\nqueued ({}):", waiting.len());
        for t in waiting {
            let mut line = format!("  · {:<24} {}", t.id, t.status);
            if let Some(o) = &t.outcome {
                let _ = write!(
                    line,
                    " ({} so far; the last {})",
                    count(t.attempts, "attempt"),
                    o.label()
                );
            }
            let _ = writeln!(s, "{line}");
        }
    }
}

fn not_queued_section(s: &mut String, not_queued: &[&TaskView]) {
    if !not_queued.is_empty() {
        let ids: Vec<&str> = not_queued.iter().map(|t| t.id.as_str()).collect();
        let _ = writeln!(
            s,
            "\nnot queued ({}): {}\n  the live run (a retry of other tasks) does not start them; `flocks run` does",
            not_queued.len(),
            ids.join(", ")
        );
    }
}

fn removed_section(s: &mut String, removed: &[&TaskView]) {
    if !removed.is_empty() {
        let ids: Vec<&str> = removed.iter().map(|t| t.id.as_str()).collect();
        let _ = writeln!(s, "\nremoved from their task file ({}):", removed.len());
        for t in removed {
            let _ = writeln!(
                s,
                "  − {:<24} {}",
                t.id,
                t.detail.as_deref().unwrap_or("no longer in its task file")
            );
        }
        let _ = writeln!(
            s,
            "  `flocks land` leaves them out unless named; `{}` drops them from the state",
            crate::suggest::command(
                &["flocks", "forget"]
                    .into_iter()
                    .chain(ids.iter().copied())
                    .collect::<Vec<_>>()
            )
        );
    }
}

/// Pools with their slots, VMs, credentials parked or disabled.
fn pools_section(s: &mut String, v: &StatusView) {
    let _ = writeln!(s, "\npools:");
    for p in &v.pools {
        let filled = if p.slots == 0 {
            0
        } else {
            (p.running * 10).div_ceil(p.slots).min(10)
        };
        let _ = writeln!(
            s,
            "  {:<12} {:<7} [{}{}] {}/{}  isolation: {}",
            p.name,
            p.backend,
            "█".repeat(filled),
            "░".repeat(10 - filled),
            p.running,
            p.slots,
            p.isolation
        );
        let _ = writeln!(s, "      {}", pool_line(p));
    }
    if !v.vms.is_empty() {
        let _ = writeln!(s, "\nvms ({}, `flocks down` removes them):", v.vms.len());
        for m in &v.vms {
            let _ = writeln!(
                s,
                "  {:<12} {:<24} {}:{}",
                m.pool, m.name, m.ssh_dest, m.ssh_port
            );
        }
    }
    if !v.credentials.is_empty() {
        let _ = writeln!(s, "\ncredentials:");
        for c in &v.credentials {
            match (&c.disabled, c.parked_until) {
                (Some(why), _) => {
                    let _ = writeln!(s, "  ⛔ {:<12} disabled: {why}", c.name);
                }
                (None, Some(t)) => {
                    let _ = writeln!(
                        s,
                        "  ⏸ {:<12} parked until {}",
                        c.name,
                        t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S")
                    );
                }
                _ => {}
            }
        }
    }
}

/// Disk, totals, and what to do next after failures.
fn totals_lines(s: &mut String, v: &StatusView, any_failed: bool) {
    if let Some(d) = &v.disk {
        let _ = writeln!(s, "\n{}", render_disk(d));
    }
    let _ = writeln!(
        s,
        "\ntotals: {} · {} · {} · {}",
        count(v.totals.tasks, "task"),
        count(v.totals.attempts, "attempt"),
        count(v.totals.turns, "turn"),
        crate::output::units::money(v.totals.cost_usd)
    );
    if any_failed {
        let _ = writeln!(
            s,
            "next: `flocks logs <id>` to see why, `flocks retry --all-failed` to try again"
        );
    }
}

/// A running attempt's tokens and cost, as flocks' proxy read them.
fn usage_line(u: &crate::state::Usage) -> String {
    let tokens = |n: u64| match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    };
    let input = u.input_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens;
    let mut line = format!(
        "{} in / {} out · {}",
        tokens(input),
        tokens(u.output_tokens),
        crate::output::units::money(u.cost_usd)
    );
    if let Some(m) = &u.unpriced_model {
        let _ =
            std::fmt::Write::write_fmt(&mut line, format_args!(" (+ {m}, not in the price table)"));
    }
    line
}

/// Connections `[network] allow` refused, under a task's line.
fn denied_line(s: &mut String, t: &TaskView) {
    use std::fmt::Write;
    if t.egress_denied > 0 {
        let _ = writeln!(
            s,
            "      ⛔ {} connection{} refused by [network] allow (egress_denied events in .flocks/events.jsonl name each host)",
            t.egress_denied,
            if t.egress_denied == 1 { "" } else { "s" },
        );
    }
}

/// Who holds a pool's credential, and what `[network]` does for its agents.
fn pool_line(p: &crate::view::PoolView) -> String {
    let credential = match p.credential.as_str() {
        "default" => {
            "credential default: the agents' own login (flocks holds nothing to inject)".to_string()
        }
        "rotate" => {
            "credentials rotate; agents get a token for flocks' proxy, never the secret".to_string()
        }
        name => {
            format!("credential {name}: agents get a token for flocks' proxy, never the secret")
        }
    };
    let egress = match p.egress.as_str() {
        "advisory" => " · [network] allow is advisory here (agents may ignore the proxy)",
        "enforced" => " · [network] allow: the proxy is the only way out",
        _ => "",
    };
    format!("{credential}{egress}")
}

/// The disk line: what worktrees, spares and logs take, and what is free.
fn render_disk(d: &crate::view::DiskView) -> String {
    use crate::output::units::bytes;
    let at_least = if d.complete { "" } else { "≥ " };
    let size = |n: u64| format!("{at_least}{}", bytes(n));
    let mut s = format!(
        "disk: worktrees {} · spare worktrees {} ({}) · logs {} · land logs {}",
        size(d.worktrees_bytes),
        size(d.spare_worktrees_bytes),
        d.spare_worktrees,
        size(d.logs_bytes),
        size(d.land_logs_bytes)
    );
    if let (Some(free), Some(total)) = (d.free_bytes, d.total_bytes) {
        s.push_str(&format!(" · {} free of {}", bytes(free), bytes(total)));
    }
    if let Some(fs) = &d.logs_filesystem {
        s.push_str(&format!(
            " · {} free of {} under {}",
            bytes(fs.free_bytes),
            bytes(fs.total_bytes),
            fs.path.display()
        ));
    }
    if let Some(min) = d.min_free_bytes {
        let low = d.free_bytes.is_some_and(|f| f < min)
            || d.logs_filesystem
                .as_ref()
                .is_some_and(|f| f.free_bytes < min);
        s.push_str(&format!(
            " (min_free_disk_gb {}{})",
            bytes(min),
            if low {
                ": below it, no new agent starts"
            } else {
                ""
            }
        ));
    }
    if let Some(at) = d.counted_at {
        s.push_str(&format!(
            "\n      (sizes as counted at {}: too many files to count again now; `flocks status --disk` does)",
            at.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M")
        ));
    } else if !d.complete {
        s.push_str("\n      (counted for a moment only: `flocks status --disk` counts it all)");
    }
    s
}

/// A best-of task's judgement and variants, under its line.
fn variant_lines(s: &mut String, t: &TaskView) {
    use crate::state::VerdictOutcome;
    use std::fmt::Write;
    if let Some(j) = &t.judgement {
        let _ = writeln!(
            s,
            "      {} {}",
            if j.winner.is_some() { "★" } else { "✖" },
            crate::agent::stream::one_line(&crate::view::judgement_line(j), 150)
        );
        if let Some(n) = &j.notice {
            let _ = writeln!(s, "      note: {}", crate::agent::stream::one_line(n, 150));
        }
    }
    for v in &t.variants {
        let (mark, what) = match v.verdict {
            Some(VerdictOutcome::Winner) => ("★", "winner"),
            Some(o @ VerdictOutcome::Passed) => ("✔", o.label()),
            Some(o) => ("✖", o.label()),
            None => match v.status.as_str() {
                "running" => ("▶", "running"),
                "pending" => ("·", "pending"),
                "succeeded" => ("✔", "succeeded"),
                other => ("✖", other),
            },
        };
        let mut facts = vec![count(v.attempts, "attempt")];
        facts.extend(v.lines.map(|l| count(l, "line")));
        if v.cost_usd > 0.0 {
            facts.push(crate::output::units::money(v.cost_usd));
        }
        let why = v
            .verdict_reason
            .as_deref()
            .filter(|_| v.verdict != Some(VerdictOutcome::Winner))
            .or(v.detail.as_deref())
            .or(v.activity.as_deref())
            .map(|w| format!(" · {}", crate::agent::stream::one_line(w, 100)))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "      {mark} v{:<3} {:<28} {what} · {}{why}",
            v.variant,
            v.branch,
            facts.join(" · ")
        );
    }
}
