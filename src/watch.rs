//! The one stop-escalation loop: watch a started process (an agent, a setup
//! command) until it exits, its deadline passes, it stalls, a stop is
//! requested or its watcher asks it to stop; stop it with TERM (the backend's
//! graceful policy), then KILL once `grace` (and a margin) has passed, and
//! give up when even KILL is not confirmed. Used by the runner (agents,
//! setup commands) and by land's validation (host or docker pool).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::backend::{Chunk, ExitInfo, Running};

/// How hard to stop running agents (and validation commands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum StopLevel {
    Run,
    /// SIGTERM, grace, SIGKILL.
    Graceful,
    /// SIGKILL now.
    Kill,
}

/// How long after a kill flocks waits for the backend to confirm the end.
const AFTER_KILL: Duration = Duration::from_secs(10);

/// How long after a terminate, beyond the kill grace, before flocks kills.
const MARGIN: Duration = Duration::from_secs(5);

/// Why the watch stopped the process (the first reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    TimedOut,
    Stalled,
    /// A stop was requested (Ctrl-C, `flocks stop`).
    Stop,
    /// The watcher asked (`Watcher::asks_to_stop`).
    Asked,
}

/// How the watched process ended.
pub(crate) struct Watched {
    pub exit: ExitInfo,
    /// None: it exited on its own.
    pub why: Option<Why>,
    /// A stop was requested while it ran (whatever came first).
    pub stop_requested: bool,
}

/// The limits a watch enforces.
pub(crate) struct Limits {
    pub deadline: Option<Instant>,
    /// Stop after this long without output.
    pub stall: Option<Duration>,
    /// `kill_grace_secs`: TERM, then KILL after this long.
    pub grace: Duration,
}

/// What the watch tells about the process, and what it hears from outside.
pub(crate) trait Watcher {
    /// What is watched, for the log: "the agent", "the setup command".
    const WHAT: &'static str;
    /// A line in the attempt's log.
    fn note(&mut self, line: &str);
    /// A chunk of its output (stdout or stderr).
    async fn output(&mut self, chunk: Chunk);
    /// Its deadline passed (say so in the log).
    fn timed_out(&mut self);
    /// It said nothing for the stall limit (say so).
    async fn stalled(&mut self, _quiet_secs: f64) {}
    /// A reason from outside to stop it (never, by default).
    async fn asks_to_stop(&mut self) -> String {
        std::future::pending().await
    }
}

/// Watch `running` to its end, stopping it when a limit or a stop says so.
pub(crate) async fn watch<W: Watcher>(
    running: &mut Running,
    limits: &Limits,
    stop: &mut watch::Receiver<StopLevel>,
    watcher: &mut W,
) -> Watched {
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    let deadline = limits.deadline.unwrap_or(far);
    let mut last_output = Instant::now();
    let mut why: Option<Why> = None;
    let mut stop_requested = false;
    let mut watching_stop = true;
    // After a terminate: when to escalate to kill; after a kill: when to give up.
    let mut escalate_at = far;
    let mut give_up_at = far;
    let exit = loop {
        let stall_deadline = limits.stall.map(|s| last_output + s).unwrap_or(far);
        tokio::select! {
            chunk = running.output.recv() => match chunk {
                Some(Chunk::Exited(info)) => break info,
                Some(chunk) => {
                    last_output = Instant::now();
                    watcher.output(chunk).await;
                }
                None => break ExitInfo {
                    lost: Some(format!("{}'s output ended without an exit status", W::WHAT)),
                    ..ExitInfo::default()
                },
            },
            _ = sleep_until(deadline), if why.is_none() => {
                why = Some(Why::TimedOut);
                watcher.timed_out();
                running.control.terminate().await;
                escalate_at = Instant::now() + limits.grace + MARGIN;
            }
            _ = sleep_until(stall_deadline), if why.is_none() => {
                why = Some(Why::Stalled);
                watcher.stalled(last_output.elapsed().as_secs_f64()).await;
                running.control.terminate().await;
                escalate_at = Instant::now() + limits.grace + MARGIN;
            }
            changed = stop.changed(), if watching_stop => {
                if changed.is_err() {
                    watching_stop = false;
                    continue;
                }
                let level = *stop.borrow();
                if level == StopLevel::Run {
                    continue;
                }
                stop_requested = true;
                why.get_or_insert(Why::Stop);
                if level == StopLevel::Kill {
                    watcher.note(&format!("flocks is stopping: killing {}", W::WHAT));
                    running.control.kill().await;
                    give_up_at = Instant::now() + AFTER_KILL;
                } else {
                    watcher.note(&format!("flocks is stopping: stopping {}", W::WHAT));
                    running.control.terminate().await;
                    escalate_at = Instant::now() + limits.grace + MARGIN;
                }
            }
            _ = sleep_until(escalate_at) => {
                running.control.kill().await;
                escalate_at = far;
                give_up_at = Instant::now() + AFTER_KILL;
            }
            _ = sleep_until(give_up_at) => {
                break ExitInfo {
                    lost: Some(format!("{} did not end after SIGKILL", W::WHAT)),
                    ..ExitInfo::default()
                };
            }
            reason = watcher.asks_to_stop() => {
                watcher.note(&format!("{reason}: stopping {}", W::WHAT));
                why.get_or_insert(Why::Asked);
                running.control.terminate().await;
                escalate_at = Instant::now() + limits.grace + MARGIN;
            }
        }
    };
    Watched {
        exit,
        why,
        stop_requested,
    }
}
