//! Notifications: each `[[notify]]` table is sent the events it asks for, as
//! a command's stdin or a webhook's body, without ever slowing the run.
//!
//! ```text
//!  dispatcher / land ── send(&Event) ──▶ one channel per notifier (never blocks)
//!                                              │
//!  thread "flocks-notify" (its own tokio runtime, so `land` can use it too):
//!    one task per notifier: batch what arrives → deliver (timeout) → wait
//!    `coalesce_secs` → deliver what arrived meanwhile as one message → ...
//! ```
//!
//! A notifier's first failure becomes one notice (`take_notices`); later ones are
//! counted, not reported. `finish` closes the channels and waits at most the
//! longest `timeout_secs` (plus a little) for what is pending.

mod deliver;
mod message;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Config, NotifyConfig, NotifyTarget};
use crate::error::{Context, Error, Result};
use crate::report::{Event, Reporter};

use deliver::{Delivery, DeliveryError};
use message::{Batch, Item};

/// Headroom over the longest timeout when waiting for the notifiers at the end.
const FINISH_MARGIN: Duration = Duration::from_millis(500);

/// The running notifiers of a run or a `land` (none when flocks.toml has no
/// `[[notify]]`: then every call is a no-op).
pub(crate) struct Notifiers {
    senders: Vec<(Vec<String>, mpsc::UnboundedSender<Item>)>,
    notices: Arc<Mutex<Vec<String>>>,
    done: Option<std::sync::mpsc::Receiver<()>>,
    /// How long `finish` waits.
    wait: Duration,
    project: message::Project,
}

impl Notifiers {
    /// Notifiers that send nothing.
    pub(crate) fn none() -> Notifiers {
        Notifiers {
            senders: Vec::new(),
            notices: Arc::default(),
            done: None,
            wait: Duration::ZERO,
            project: message::Project::default(),
        }
    }

    /// Check what `[[notify]]` reads from the environment (its header
    /// values), without starting anything: what `run --dry-run` checks.
    pub(crate) fn check(config: &Config) -> Result<()> {
        for n in &config.notify {
            headers(config, n)?;
        }
        Ok(())
    }

    /// Read the header values from the environment (a missing one is a
    /// config error naming its line) and start a thread that delivers.
    pub(crate) fn start(config: &Config) -> Result<Notifiers> {
        if config.notify.is_empty() {
            return Ok(Notifiers::none());
        }
        let project = message::Project::of(config);
        let notices: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        for n in &config.notify {
            let delivery = Delivery::new(n, headers(config, n)?)?;
            let (tx, rx) = mpsc::unbounded_channel();
            senders.push((n.on.clone(), tx));
            tasks.push(Worker {
                name: format!("notify #{} ({})", n.number, n.target.describe()),
                delivery,
                coalesce: n.coalesce,
                timeout: n.timeout,
                project: project.clone(),
                notices: notices.clone(),
                rx,
            });
        }
        let wait = config
            .notify
            .iter()
            .map(|n| n.timeout)
            .max()
            .unwrap_or_default()
            + FINISH_MARGIN;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ctx(|| "start the notifiers' runtime".into())?;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("flocks-notify".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let handles: Vec<_> =
                        tasks.into_iter().map(|w| tokio::spawn(w.run())).collect();
                    for h in handles {
                        // A worker that panicked (a bug) has nothing more to deliver.
                        let _ = h.await;
                    }
                });
                // The receiver is gone when `finish` stopped waiting.
                let _ = done_tx.send(());
            })
            .ctx(|| "start the notifiers' thread".into())?;
        Ok(Notifiers {
            senders,
            notices,
            done: Some(done_rx),
            wait,
            project,
        })
    }

    /// Hand an event to the notifiers that asked for its kind. Never blocks.
    pub(crate) fn send(&self, event: &Event) {
        let kind = event.kind();
        if !self
            .senders
            .iter()
            .any(|(on, _)| on.iter().any(|k| k == kind))
        {
            return;
        }
        let Some(item) = Item::new(event, &self.project) else {
            return;
        };
        for (on, tx) in &self.senders {
            if on.iter().any(|k| k == kind) {
                // Fails only once the worker has ended (after `finish`).
                let _ = tx.send(item.clone());
            }
        }
    }

    /// Failures to tell people about (each notifier's first one).
    pub(crate) fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Deliver what is pending and stop: waits at most the longest
    /// `timeout_secs` (and a little more); what is not delivered by then is
    /// given up. Then `take_notices` says what failed.
    pub(crate) fn finish(&mut self) {
        self.senders.clear();
        if let Some(done) = self.done.take() {
            // Timing out leaves the thread to end on its own (or with the process).
            let _ = done.recv_timeout(self.wait);
        }
    }
}

/// A reporter of a run: every event goes to the notifiers.
pub(crate) struct NotifyReporter(pub(crate) Notifiers);

impl Reporter for NotifyReporter {
    fn event(&mut self, event: &Event) {
        self.0.send(event);
    }

    fn notices(&mut self) -> Vec<String> {
        self.0.take_notices()
    }

    fn drain(&mut self) {
        self.0.finish();
    }
}

/// The headers of a webhook, their values read from the environment.
fn headers(config: &Config, n: &NotifyConfig) -> Result<Vec<(String, String)>> {
    let NotifyTarget::Webhook { headers, .. } = &n.target else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for h in headers {
        let problem = match std::env::var(&h.env) {
            Ok(v) if v.is_empty() => "is empty",
            Ok(v) if reqwest::header::HeaderValue::from_str(&v).is_err() => {
                "holds characters an HTTP header cannot carry (a line break?)"
            }
            Ok(v) => {
                out.push((h.name.clone(), v));
                continue;
            }
            Err(_) => "is not set",
        };
        return Err(Error::input(
            &config.path,
            Some(h.line),
            Some("notify.headers_env"),
            format!(
                "${} {problem}: notify #{} sends it as its {} header; export it, or remove the header",
                h.env, n.number, h.name
            ),
        ));
    }
    Ok(out)
}

/// One notifier's task: batches, coalesces, delivers, reports its first failure.
struct Worker {
    name: String,
    delivery: Delivery,
    coalesce: Duration,
    timeout: Duration,
    project: message::Project,
    notices: Arc<Mutex<Vec<String>>>,
    rx: mpsc::UnboundedReceiver<Item>,
}

type Flight =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DeliveryError>> + Send>>;

impl Worker {
    async fn run(mut self) {
        let mut batch = Batch::default();
        let mut open = true;
        let mut last_sent: Option<Instant> = None;
        let mut inflight: Option<(Flight, usize)> = None;
        // Once closed: the time by which everything must be delivered.
        let mut deadline: Option<Instant> = None;
        let mut failures = 0usize;
        loop {
            let now = Instant::now();
            let ready_at = last_sent.map_or(now, |t| t + self.coalesce);
            if inflight.is_none() && !batch.is_empty() && (!open || ready_at <= now) {
                let (message, count) = batch.take(&self.project);
                let delivery = self.delivery.clone();
                let timeout = self.timeout;
                let flight: Flight = Box::pin(async move {
                    match tokio::time::timeout(timeout, delivery.deliver(message)).await {
                        Ok(r) => r,
                        Err(_) => Err(DeliveryError::TimedOut(timeout)),
                    }
                });
                inflight = Some((flight, count));
                last_sent = Some(now);
            }
            if !open && inflight.is_none() && batch.is_empty() {
                break;
            }
            let window = (inflight.is_none() && !batch.is_empty()).then_some(ready_at);
            tokio::select! {
                item = self.rx.recv(), if open => match item {
                    Some(item) => batch.push(item),
                    None => {
                        open = false;
                        deadline = Some(Instant::now() + self.timeout);
                    }
                },
                result = async { inflight.as_mut().map(|(f, _)| f).expect("guarded").await }, if inflight.is_some() => {
                    let (_, count) = inflight.take().expect("guarded");
                    if let Err(why) = result {
                        failures += 1;
                        if failures == 1 {
                            self.notice(format!(
                                "{}: could not deliver {}: {why}; flocks goes on without it, and does not report its further failures",
                                self.name,
                                events(count),
                            ));
                        }
                    }
                }
                _ = sleep_until(window), if window.is_some() => {}
                _ = sleep_until(deadline), if deadline.is_some() => {
                    let pending = batch.len() + inflight.as_ref().map_or(0, |(_, n)| *n);
                    if pending > 0 && failures == 0 {
                        self.notice(format!(
                            "{}: gave up delivering {} at the end: it took longer than timeout_secs = {}",
                            self.name,
                            events(pending),
                            self.timeout.as_secs_f64()
                        ));
                    }
                    break;
                }
            }
        }
    }

    fn notice(&self, message: String) {
        let message = self.delivery.scrub(&message);
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }
}

fn events(n: usize) -> String {
    crate::output::units::count(n, "event")
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
