//! What flocks' proxy saw, as the dispatcher hands it in: an attempt's
//! usage (its tokens and cost, live), a 429's reset (the credential is
//! parked until then, through the same rules as an attempt's own rate
//! limit), a connection the allowlist refused (counted per attempt, an
//! event, and with `[network] notify_denied` a `needs_attention` once per
//! host and port in an attempt).

use super::{Effect, Fleet, Now};
use crate::proxy::{ProxyEvent, UsageDelta};
use crate::report::{AttentionCause, Event};

impl Fleet {
    /// The proxy said something about a running attempt.
    pub(super) fn on_proxy(&mut self, ev: ProxyEvent, now: Now) -> Vec<Effect> {
        let mut out = Vec::new();
        match ev {
            ProxyEvent::Usage {
                task,
                attempt,
                usage,
            } => self.add_usage(&task, attempt, usage, &mut out),
            ProxyEvent::RateLimited {
                credential, until, ..
            } => {
                let parked = self
                    .state
                    .credentials
                    .get(&credential)
                    .and_then(|c| c.parked_until)
                    .filter(|t| *t > now.wall);
                // Already parked as long (another agent's 429 on the same limit).
                let known = match (parked, until) {
                    (Some(p), Some(u)) => p >= u,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                if !known {
                    let why = "rate limited: the API answered 429 (read by flocks' proxy)";
                    self.park(&credential, until, why, now.wall, &mut out);
                }
            }
            ProxyEvent::Notice(message) => out.push(Effect::Emit(Event::Notice { message })),
            ProxyEvent::EgressDenied {
                task,
                attempt,
                host,
                port,
            } => {
                if let Some(a) = self.record_mut(&task).and_then(|r| r.attempt_mut(attempt)) {
                    a.egress_denied = a.egress_denied.saturating_add(1);
                    self.dirty = true;
                }
                out.push(Effect::Emit(Event::EgressDenied {
                    task: task.clone(),
                    attempt,
                    host: host.clone(),
                    port,
                }));
                let notify = self
                    .config
                    .network
                    .as_ref()
                    .is_some_and(|n| n.notify_denied);
                if notify
                    && self
                        .denied_seen
                        .insert((task.clone(), attempt, host.clone(), port))
                {
                    out.push(Effect::Emit(Event::NeedsAttention {
                        cause: AttentionCause::EgressDenied,
                        message: format!(
                            "task {task} (attempt {attempt}) tried to reach {host}:{port}, which [network] allow does not list: refused; if the task needs it, add it to [network] allow in flocks.toml"
                        ),
                        task: Some(task),
                        credential: None,
                    }));
                }
            }
        }
        out
    }

    /// Add one answer's tokens to the attempt's and say the new totals.
    fn add_usage(&mut self, task: &str, attempt: u32, d: UsageDelta, out: &mut Vec<Effect>) {
        let Some(a) = self.record_mut(task).and_then(|r| r.attempt_mut(attempt)) else {
            return;
        };
        let u = a.usage.get_or_insert_with(Default::default);
        u.requests += d.requests;
        u.input_tokens += d.input_tokens;
        u.output_tokens += d.output_tokens;
        u.cache_creation_input_tokens += d.cache_creation_input_tokens;
        u.cache_read_input_tokens += d.cache_read_input_tokens;
        u.cost_usd = crate::output::units::sum_costs([u.cost_usd, d.cost_usd]);
        if d.unpriced {
            u.unpriced_model = d.model;
        }
        let usage = (**u).clone();
        self.dirty = true;
        out.push(Effect::Emit(Event::Usage {
            task: task.to_string(),
            attempt,
            usage,
        }));
    }
}
